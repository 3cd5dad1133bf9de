"""Runs one workload of one system in this (fresh) process and prints the result as JSON.

Invoked by ``benchmarks/run.py``; the last stdout line starting with the result marker is the
result. ``--child`` runs one concurrent writer of the concurrent-writes workload.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
import traceback
from collections.abc import Iterator
from typing import Any

from benchmarks.systems import load_system
from benchmarks.systems.base import RESULT_MARKER, Context, NotSupported, _root_message, peak_rss_mb


def _emit(payload: dict[str, Any]) -> None:
    sys.stdout.write(f"\n{RESULT_MARKER}{json.dumps(payload, default=str)}\n")
    sys.stdout.flush()


@contextlib.contextmanager
def _profiled(label: str) -> Iterator[None]:
    """With ``BENCH_PROFILE=<path prefix>`` set, write a pyinstrument call tree of the block."""
    prefix = os.environ.get("BENCH_PROFILE")
    if not prefix:
        yield
        return
    from pyinstrument import Profiler

    profiler = Profiler(interval=0.002)
    profiler.start()
    try:
        yield
    finally:
        profiler.stop()
        with open(f"{prefix}-{label}.txt", "w") as out:
            out.write(profiler.output_text(unicode=True, show_all=False))


def main(argv: list[str]) -> int:
    if argv[:1] == ["--child"]:
        spec = json.loads(argv[1])
        system = load_system(spec["child_of"])(Context.from_json(spec["ctx"]))
        with _profiled(f"{spec['task']}-{spec['day']}"):
            outcome = system.run_child(spec)
        _emit(outcome)
        return 0
    spec = json.loads(argv[argv.index("--spec") + 1])
    started = time.perf_counter()
    payload: dict[str, Any] = {"system": spec["system"], "workload": spec["workload"]}
    try:
        system = load_system(spec["system"])(Context.from_json(spec["ctx"]))
        payload["versions"] = system.versions()
        with _profiled("workload"):
            payload.update(system.run_workload(spec["workload"], spec["ctx"]["params"]))
        payload["status"] = "ok"
    except NotSupported as reason:
        payload.update(status="n/a", reason=str(reason))
    except Exception as error:  # reported, never hidden: a failed run is a result too
        payload.update(
            status="failed",
            error=f"{type(error).__name__}: {_root_message(error)}"[:2000],
            traceback=traceback.format_exc()[-6000:],
        )
    payload["process_seconds"] = time.perf_counter() - started
    payload["worker_peak_rss_mb"] = peak_rss_mb()
    _emit(payload)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
