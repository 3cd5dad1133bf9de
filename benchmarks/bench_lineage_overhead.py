"""Lineage overhead: the same partitioned materializations with OpenLineage off and on.

Modes, side by side on identical data (each mode on its own fresh embedded catalog):

- ``off``: nothing configured, no event is built;
- ``http``: the ``http`` transport to an OpenLineage receiver on 127.0.0.1 (a separate process,
  so it does not compete with the writer for the interpreter);
- ``unreachable``: the ``http`` transport to a 127.0.0.1 port nothing listens on, with the
  client's default retries (about 9 s of backoff per event), i.e. a receiver that is down.

Each partition write is one ``dagster.materialize`` of a daily-partitioned asset through the
IO manager (overwrite of the partition's slice); the wall time of every materialization is
recorded. Modes are interleaved within each repetition so drift hits them alike. After the
writes of a mode, the time ``flush_lineage`` needs to drain the queue is reported separately
(events are sent in the background, so this is not part of any write). Also reported: the
cost of building and queueing the START and COMPLETE events of one write, timed directly.

Usage::

    python benchmarks/bench_lineage_overhead.py             # 12 partitions x 200k rows, 3 reps
    python benchmarks/bench_lineage_overhead.py --smoke     # seconds
    python benchmarks/bench_lineage_overhead.py --partitions 20 --rows 500000 --repeat 5

Results are written to ``benchmarks/results/lineage-overhead-<date>.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
MODES = ("off", "http", "unreachable")

RECEIVER = r"""
import json, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

count = 0

class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        global count
        json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        count += 1
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self):
        body = str(count).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ReceiverProcess:
    """The OpenLineage receiver in its own process; counts the events it accepted."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen([sys.executable, "-c", RECEIVER, str(self.port)])
        deadline = time.monotonic() + 20
        while True:
            try:
                self.count()
                return
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    self.close()
                    raise RuntimeError("the OpenLineage receiver did not start") from None
                time.sleep(0.05)

    def count(self) -> int:
        with urllib.request.urlopen(f"{self.url}/count", timeout=5) as response:
            return int(response.read())

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def _orders(day: dt.date, rows: int, seed: int) -> Any:
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    return pa.table(
        {
            "day": pa.array([day] * rows, pa.date32()),
            "order_id": pa.array(np.arange(rows, dtype=np.int64) + seed * rows),
            "customer_id": pa.array(rng.integers(0, 100_000, rows)),
            "amount": pa.array(rng.random(rows) * 100),
            "channel": pa.array(rng.choice(["web", "shop", "phone"], rows)),
        }
    )


def _definitions(rows: int, partitions: int) -> tuple[Any, Any]:
    import dagster as dg

    start = dt.date(2024, 1, 1)
    days = dg.DailyPartitionsDefinition(
        start_date=start.isoformat(), end_date=(start + dt.timedelta(days=partitions)).isoformat()
    )

    @dg.asset(
        key_prefix=["bench"],
        partitions_def=days,
        metadata={"partition_expr": "day"},
        io_manager_key="iceberg",
    )
    def orders(context) -> Any:
        day = dt.date.fromisoformat(context.partition_key)
        return _orders(day, rows, seed=(day - start).days)

    return orders, days


def _resources(home: Path, mode: str, receiver: ReceiverProcess | None, dead_port: int) -> Any:
    from floe_dagster_iceberg import (
        EmbeddedCatalogConfig,
        IcebergCatalogResource,
        create_iceberg_resources,
    )
    from floe_dagster_iceberg.lineage import LineageConfig

    lineage = None
    if mode == "http":
        lineage = LineageConfig(transport={"type": "http", "url": receiver.url})
    elif mode == "unreachable":
        lineage = LineageConfig(transport={"type": "http", "url": f"http://127.0.0.1:{dead_port}"})
    catalog = IcebergCatalogResource(
        catalog=EmbeddedCatalogConfig(home=str(home)), openlineage=lineage
    )
    return create_iceberg_resources(catalog)


EVENT_COST_REPEAT = 200


def _event_cost(resources: Any, repeat: int = EVENT_COST_REPEAT) -> float:
    """Microseconds to build and queue START + COMPLETE of one write (the table exists)."""
    import dagster as dg

    from floe_dagster_iceberg.engine.config import WriteMode, WriteResult

    catalog = resources["iceberg_catalog"]
    emitter = catalog.lineage()
    if not emitter.enabled:
        return 0.0
    manager = catalog.get_manager()
    table = manager.load_table("bench.orders")
    snapshot = table.current_snapshot()
    result = WriteResult(
        table="bench.orders",
        snapshot_id=snapshot.snapshot_id,
        operation="overwrite",
        rows_added=1,
        files_added=1,
        bytes_added=1,
        commit_attempts=1,
    )
    context = dg.build_output_context(asset_key=dg.AssetKey(["bench", "orders"]))
    started = time.perf_counter()
    for _ in range(repeat):
        run = emitter.start_write(context, table)
        run.complete_write(table, result, WriteMode.OVERWRITE)
    return (time.perf_counter() - started) / repeat * 1e6


def run(partitions: int, rows: int, repeat: int) -> dict[str, Any]:
    import dagster as dg

    from floe_dagster_iceberg.lineage import flush_lineage

    for key in [k for k in os.environ if k.startswith("OPENLINEAGE")]:
        del os.environ[key]
    logging.getLogger("floe_dagster_iceberg.lineage").setLevel(logging.ERROR)
    orders, days = _definitions(rows, partitions)
    keys = days.get_partition_keys()
    receiver = ReceiverProcess()
    dead_port = _free_port()
    work = Path(tempfile.mkdtemp(prefix="floe-lineage-bench-"))
    writes: dict[str, list[float]] = {mode: [] for mode in MODES}
    flushes: dict[str, list[float]] = {mode: [] for mode in MODES}
    event_cost: dict[str, float] = {}
    instance = dg.DagsterInstance.ephemeral()
    try:
        for rep in range(repeat):
            for mode in MODES:
                resources = _resources(work / f"{mode}-{rep}", mode, receiver, dead_port)
                for key in keys:
                    started = time.perf_counter()
                    result = dg.materialize(
                        [orders], partition_key=key, resources=resources, instance=instance
                    )
                    writes[mode].append(time.perf_counter() - started)
                    assert result.success
                started = time.perf_counter()
                flush_lineage(timeout=60)
                flushes[mode].append(time.perf_counter() - started)
                if rep == 0:
                    event_cost[mode] = _event_cost(resources)
                    flush_lineage(timeout=60)
        received = receiver.count()
    finally:
        receiver.close()
        shutil.rmtree(work, ignore_errors=True)

    base = statistics.median(writes["off"])
    summary = {}
    for mode in MODES:
        times = sorted(writes[mode])
        summary[mode] = {
            "writes": len(times),
            "median_s": statistics.median(times),
            "p90_s": times[int(0.9 * (len(times) - 1))],
            "mean_s": statistics.fmean(times),
            "ratio_vs_off": statistics.median(times) / base,
            "flush_after_writes_s": statistics.median(flushes[mode]),
            "event_build_and_queue_us": event_cost.get(mode, 0.0),
        }
    return {
        "benchmark": "lineage-overhead",
        "date": dt.date.today().isoformat(),
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
        },
        "params": {"partitions": partitions, "rows_per_partition": rows, "repeat": repeat},
        "events_received_by_http_receiver": received,
        "expected_http_events": 2 * partitions * repeat + 2 * EVENT_COST_REPEAT,
        "modes": summary,
        "raw_write_seconds": writes,
    }


def markdown(report: dict[str, Any]) -> str:
    labels = {
        "off": "lineage off",
        "http": "http to 127.0.0.1 receiver",
        "unreachable": "http to unreachable port",
    }
    params = report["params"]
    lines = [
        f"Partitioned write through the IO manager: {params['partitions']} partitions x "
        f"{params['rows_per_partition']:,} rows, {params['repeat']} repetitions "
        f"(one `materialize` per partition).",
        "",
        "| mode | writes | median write (s) | p90 (s) | ratio vs off | build+queue START+COMPLETE "
        "(us) | flush after writes (s) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for mode, stats in report["modes"].items():
        lines.append(
            f"| {labels[mode]} | {stats['writes']} | {stats['median_s']:.3f} | "
            f"{stats['p90_s']:.3f} | {stats['ratio_vs_off']:.3f} | "
            f"{stats['event_build_and_queue_us']:.0f} | {stats['flush_after_writes_s']:.3f} |"
        )
    lines += [
        "",
        f"HTTP receiver got {report['events_received_by_http_receiver']} events "
        f"(expected {report['expected_http_events']} from the timed writes plus the event-cost "
        "probe).",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--partitions", type=int, default=12)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, seconds")
    parser.add_argument("--no-save", action="store_true", help="do not write the JSON result")
    args = parser.parse_args()
    if args.smoke:
        args.partitions, args.rows, args.repeat = 3, 1_000, 1
    report = run(args.partitions, args.rows, args.repeat)
    print(markdown(report))
    if not args.no_save and not args.smoke:
        RESULTS.mkdir(parents=True, exist_ok=True)
        path = RESULTS / f"lineage-overhead-{report['date']}.json"
        path.write_text(json.dumps(report, indent=2) + "\n")
        print(f"\nwritten to {path.relative_to(HERE.parent)}")


if __name__ == "__main__":
    main()
