"""Run test workers in real, separate processes that start their work at the same instant.

Processes come from a ``forkserver`` that has imported PyIceberg, PyArrow and the package once,
so sixteen writers start in well under a second on two cores instead of importing everything
sixteen times. Every worker waits on a shared barrier before its first catalog call, so the
writes really overlap. Results (or the worker's exception, with its traceback) come back over a
queue; a worker that does not answer before the deadline fails the test and is killed.
"""

from __future__ import annotations

import logging
import multiprocessing
import queue
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

PRELOAD = [
    "pyarrow",
    "pyarrow.parquet",
    "pyiceberg.catalog.sql",
    "pyiceberg.catalog.rest",
    "pyiceberg.io.pyarrow",
    "sqlalchemy",
    "psycopg2",
    "floe_dagster_iceberg.engine.manager",
    "floe_dagster_iceberg.engine.upsert",
    "floe_dagster_iceberg.engine.maintenance",
    "reliability.workers",
    "dagster",
    "reliability.backfill",
]

CONTEXT = multiprocessing.get_context("forkserver")
CONTEXT.set_forkserver_preload(PRELOAD)

BARRIER_TIMEOUT = 120.0


class WorkerFailed(AssertionError):
    """A worker process raised, died or did not answer in time."""


@dataclass(frozen=True)
class _Outcome:
    index: int
    ok: bool
    value: Any = None
    error_type: str = ""
    error: str = ""
    trace: str = ""


def _run(
    index: int,
    target: Callable[..., Any],
    args: tuple[Any, ...],
    barrier: Any,
    results: Any,
) -> None:
    # Commit conflicts are expected here; PyIceberg would print a warning for each retry.
    logging.getLogger("pyiceberg.table").setLevel(logging.ERROR)
    passed = False

    def start() -> None:
        nonlocal passed
        barrier.wait(BARRIER_TIMEOUT)
        passed = True

    try:
        value = target(*args, start=start)
    except BaseException as error:  # reported to the parent, which fails the test
        if not passed:
            barrier.abort()  # the others stop waiting for a worker that will never arrive
        results.put(
            _Outcome(
                index,
                ok=False,
                error_type=f"{type(error).__module__}.{type(error).__qualname__}",
                error=str(error),
                trace=traceback.format_exc(),
            )
        )
    else:
        results.put(_Outcome(index, ok=True, value=value))


@dataclass(frozen=True)
class Outcomes:
    """What every worker returned or raised, by worker index."""

    outcomes: tuple[_Outcome, ...]
    seconds: float

    @property
    def values(self) -> list[Any]:
        failures = [o for o in self.outcomes if not o.ok]
        if failures:
            details = "\n\n".join(
                f"worker {o.index}: {o.error_type}: {o.error}\n{o.trace}" for o in failures
            )
            raise WorkerFailed(
                f"{len(failures)} of {len(self.outcomes)} workers failed:\n{details}"
            )
        return [o.value for o in self.outcomes]

    @property
    def errors(self) -> list[_Outcome]:
        return [o for o in self.outcomes if not o.ok]


def run_concurrently(
    target: Callable[..., Any],
    arguments: Sequence[tuple[Any, ...]],
    *,
    timeout: float = 120.0,
) -> Outcomes:
    """Run ``target(*args, start=...)`` once per argument tuple, each in its own process.

    ``target`` must be a module-level function of an importable module; it calls ``start()``
    right before the work that must overlap (all workers return from it together).
    """
    return run_together([(target, tuple(args)) for args in arguments], timeout=timeout)


def run_together(
    calls: Sequence[tuple[Callable[..., Any], tuple[Any, ...]]], *, timeout: float = 120.0
) -> Outcomes:
    """Like :func:`run_concurrently` with a different function per process."""
    barrier = CONTEXT.Barrier(len(calls))
    results = CONTEXT.Queue()
    processes = [
        CONTEXT.Process(target=_run, args=(index, target, args, barrier, results))
        for index, (target, args) in enumerate(calls)
    ]
    started = time.monotonic()
    for process in processes:
        process.start()
    collected: dict[int, _Outcome] = {}
    deadline = started + timeout
    try:
        while len(collected) < len(processes):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                missing = sorted(set(range(len(processes))) - set(collected))
                errors = "".join(
                    f"\nworker {o.index}: {o.error_type}: {o.error}\n{o.trace}"
                    for o in collected.values()
                    if not o.ok
                )
                raise WorkerFailed(
                    f"workers {missing} did not finish within {timeout:.0f} s{errors}"
                )
            try:
                outcome = results.get(timeout=min(remaining, 1.0))
            except queue.Empty:
                dead = [
                    i
                    for i, p in enumerate(processes)
                    if i not in collected and p.exitcode is not None
                ]
                if dead and results.empty():
                    # A worker may exit right after putting its result: give the queue one
                    # more look before calling the worker dead.
                    try:
                        outcome = results.get(timeout=1.0)
                    except queue.Empty:
                        codes = {i: processes[i].exitcode for i in dead}
                        raise WorkerFailed(f"workers died without a result: {codes}") from None
                else:
                    continue
            collected[outcome.index] = outcome
        seconds = time.monotonic() - started
    finally:
        for process in processes:
            if process.is_alive():
                process.join(timeout=10)
            if process.is_alive():
                process.kill()
                process.join()
    return Outcomes(tuple(collected[i] for i in range(len(processes))), seconds)
