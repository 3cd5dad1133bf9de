"""The interface every benchmarked system implements, and the workloads written once against it.

A system adapter implements a handful of primitive operations (write one partition, write a
range, upsert, read one partition, compact, ...). The workload methods of :class:`System` time
those primitives the same way for every system, so the only thing that differs between two
systems' numbers is the system.

Every workload method returns a plain dict::

    {"seconds": <the measured time>, "rows": <rows written or read>, "failures": <int>,
     "extra": {... workload-specific measurements ...}}

and raises :class:`NotSupported` when the system has no equivalent of the workload.
"""

from __future__ import annotations

import datetime as dt
import importlib
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa

from benchmarks import data

NAMESPACE = "bench"
TABLE = "events"
CATALOG_NAME = "bench"
RESULT_MARKER = "@@BENCH-RESULT@@"
#: the day the history-growth workload writes and reads (2024-01-31, a new partition)
HISTORY_TIMED_DAY = 30


class NotSupported(Exception):
    """The system has no equivalent of this workload; reported as "n/a" with the reason."""


@dataclass
class Context:
    """Where a run keeps its state: a fresh directory and a fresh catalog database."""

    workdir: Path
    catalog_uri: str
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def warehouse(self) -> Path:
        return self.workdir / "warehouse"

    @property
    def identifier(self) -> str:
        return f"{NAMESPACE}.{TABLE}"

    def to_json(self) -> dict[str, Any]:
        return {
            "workdir": str(self.workdir),
            "catalog_uri": self.catalog_uri,
            "params": self.params,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Context:
        return cls(Path(raw["workdir"]), raw["catalog_uri"], raw.get("params", {}))


def versions_of(*distributions: str) -> dict[str, str]:
    found = {"python": sys.version.split()[0]}
    for name in distributions:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def peak_rss_mb() -> float:
    """Peak resident memory of this process and of its largest waited-for child, in MiB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) / 1024


def own_peak_rss_mb() -> float:
    """Peak resident memory of this process alone (not of the setup processes it ran), MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class _Clock:
    def __init__(self) -> None:
        self.start = time.perf_counter()

    def __call__(self) -> float:
        return time.perf_counter() - self.start


class System(ABC):
    """One benchmarked way of keeping partitioned event data."""

    name: ClassVar[str]
    #: Distributions whose versions are recorded with every run of the system.
    distributions: ClassVar[tuple[str, ...]] = ("pyarrow",)
    #: Whether the system keeps an Iceberg table (with snapshots) rather than plain files.
    iceberg: ClassVar[bool] = True

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        ctx.workdir.mkdir(parents=True, exist_ok=True)
        ctx.warehouse.mkdir(parents=True, exist_ok=True)

    # ----------------------------------------------------------- primitives (per system)

    def prepare(self) -> None:  # noqa: B027  (optional hook)
        """Import and connect everything the timed operations use (not timed)."""

    @abstractmethod
    def write_partition(self, day: int, table: pa.Table) -> None:
        """Replace day ``day`` of the table with ``table`` (one run per partition)."""

    @abstractmethod
    def write_range(self, first_day: int, days: int, table: pa.Table) -> None:
        """Replace days ``first_day .. first_day + days - 1`` with ``table`` in one run."""

    def upsert(self, day: int, table: pa.Table) -> None:
        """Merge ``table`` into day ``day`` on the key ``id``."""
        raise NotSupported(f"{self.name} has no upsert")

    @abstractmethod
    def read_partition(self, day: int) -> pa.Table:
        """Read day ``day`` back (the way the system's users read one partition)."""

    @abstractmethod
    def read_all(self) -> pa.Table:
        """Read the whole table."""

    @abstractmethod
    def count_rows(self) -> int:
        """Rows currently in the table (verification, never timed)."""

    def compact(self) -> None:
        """Rewrite the table's small files into few large ones."""
        raise NotSupported(f"{self.name} has no compaction")

    @abstractmethod
    def data_file_count(self) -> int:
        """Live data files of the table (verification, never timed)."""

    @abstractmethod
    def build_small_files(self, days: int, batches: int, rows_per_file: int) -> None:
        """Set up a table of ``days * batches`` small files (not timed)."""

    def snapshot_count(self) -> int | None:
        """Snapshots of the table (verification, never timed); None without snapshots."""
        return None

    def versions(self) -> dict[str, str]:
        return versions_of(*self.distributions)

    def reset_inner(self) -> None:  # noqa: B027  (optional hook)
        """Start counting the time spent inside the storage layer (IO manager) from zero."""

    def inner_seconds(self) -> float | None:
        """Time spent inside the storage layer since :meth:`reset_inner`; None when the system
        has no layer around it (raw Parquet, PyIceberg)."""
        return None

    def overheads(self) -> dict[str, Any]:
        """Fixed costs of the system measured in :meth:`prepare` (e.g. Dagster's per-run cost)."""
        return {}

    def _inner_extra(self) -> dict[str, Any]:
        inner = self.inner_seconds()
        return {**({"io_manager_seconds": inner} if inner is not None else {}), **self.overheads()}

    # ----------------------------------------------------------- helpers

    def build_table(self, days: int, rows_per_day: int) -> None:
        """Set up ``days`` partitions of ``rows_per_day`` rows with the system's own writes."""
        for day in range(days):
            self.write_partition(day, data.partition_table(day, rows_per_day))

    def _expect_rows(self, expected: int) -> int:
        actual = self.count_rows()
        if actual != expected:
            raise AssertionError(f"{self.name}: table has {actual} rows, expected {expected}")
        return actual

    # ----------------------------------------------------------- workloads (shared)

    def sequential_writes(self, p: dict[str, Any]) -> dict[str, Any]:
        """Workload 1: one run per daily partition, then overwrite some of them."""
        days, rows, overwrites = p["partitions"], p["rows"], p["overwrites"]
        first = {d: data.partition_table(d, rows) for d in range(days)}
        again_days = _spread(days, overwrites)
        again = {d: data.partition_table(d, rows, version=1) for d in again_days}
        self.prepare()
        per_write = []
        self.reset_inner()
        clock = _Clock()
        for d in range(days):
            t0 = time.perf_counter()
            self.write_partition(d, first[d])
            per_write.append(time.perf_counter() - t0)
        first_seconds = clock()
        for d in again_days:
            t0 = time.perf_counter()
            self.write_partition(d, again[d])
            per_write.append(time.perf_counter() - t0)
        seconds = clock()
        self._expect_rows(days * rows)
        return {
            "seconds": seconds,
            "rows": rows * (days + len(again_days)),
            "failures": 0,
            "extra": {
                "initial_writes_seconds": first_seconds,
                "overwrites_seconds": seconds - first_seconds,
                "median_write_seconds": statistics.median(per_write),
                "first_write_seconds": per_write[0],
                "writes": len(per_write),
                **self._inner_extra(),
            },
        }

    def concurrent_writes(self, p: dict[str, Any]) -> dict[str, Any]:
        """Workload 2: N processes each write one partition of the same table at once."""
        writers, rows = p["writers"], p["concurrent_rows"]
        # The table exists (day 0 written by the system itself) before the writers start, as
        # when a backfill is launched against a table that an earlier run created.
        self.write_partition(0, data.partition_table(0, rows))
        children = [
            self._spawn_child({"task": "write", "day": i + 1, "rows": rows}, f"writer-{i + 1}")
            for i in range(writers)
        ]
        for child in children:  # every writer has imported, connected and built its data
            line = child.stdout.readline()
            if not line.startswith("READY"):
                raise RuntimeError(f"a writer did not start: {line!r}")
        clock = _Clock()
        for child in children:
            child.stdin.write("GO\n")
            child.stdin.flush()
        outcomes = []
        for child in children:
            out, _ = child.communicate()
            child_seconds = clock()
            outcomes.append(
                _parse_result(out) or {"ok": False, "error": f"exit {child.returncode}"}
            )
            outcomes[-1]["finished_at"] = child_seconds
        wall = clock()
        failures = [o for o in outcomes if not o.get("ok")]
        committed = self.count_rows()
        expected = (writers + 1) * rows
        return {
            "seconds": wall,
            "rows": committed - rows,
            "failures": len(failures),
            "extra": {
                "writers": writers,
                "expected_rows": expected,
                "rows_in_table": committed,
                "rows_lost": expected - committed - len(failures) * rows,
                "median_writer_seconds": statistics.median(
                    o.get("seconds", wall) for o in outcomes
                ),
                "errors": sorted({o.get("error", "")[:300] for o in failures}),
            },
        }

    def upsert_workload(self, p: dict[str, Any]) -> dict[str, Any]:
        """Workload 3: upsert a batch (half matched) into one partition of a larger table."""
        days, per_day, batch_rows = (
            p["table_partitions"],
            p["table_rows"] // p["table_partitions"],
            p["upsert_rows"],
        )
        day = days // 2
        batch = data.upsert_batch(day, per_day, batch_rows)
        if type(self).upsert is System.upsert:
            raise NotSupported(f"{self.name} has no upsert")
        self.build_table(days, per_day)
        self.prepare()
        self.reset_inner()
        clock = _Clock()
        self.upsert(day, batch)
        seconds = clock()
        inner = self._inner_extra()
        matched = int(batch_rows * 0.5)
        self._expect_rows(days * per_day + batch_rows - matched)
        got = self.read_partition(day)
        if got.num_rows != per_day + batch_rows - matched:
            raise AssertionError(f"{self.name}: partition has {got.num_rows} rows after the upsert")
        return {
            "seconds": seconds,
            "rows": batch_rows,
            "failures": 0,
            "extra": {
                "table_rows": days * per_day,
                "matched": matched,
                "inserted": batch_rows - matched,
                **inner,
            },
        }

    def partition_read(self, p: dict[str, Any]) -> dict[str, Any]:
        """Workload 4: read one partition in a fresh process (as a downstream run does), then
        repeat the read warm in the same process."""
        days, per_day = p["table_partitions"], p["table_rows"] // p["table_partitions"]
        day = days // 2
        self.build_table(days, per_day)
        reader = self._spawn_child(
            {"task": "read", "day": day, "reads": 1 + p["warm_reads"]}, "reader"
        )
        out, _ = reader.communicate(input="")
        outcome = _parse_result(out)
        if outcome is None or not outcome.get("ok"):
            raise RuntimeError(f"the reader failed: {(outcome or {}).get('error', out[-500:])}")
        for rows in outcome["rows"]:
            if rows != per_day:
                raise AssertionError(f"{self.name}: read {rows} rows, expected {per_day}")
        timings = outcome["timings"]
        extra = {
            "cold_seconds": timings[0],
            "warm_seconds": statistics.median(timings[1:]) if len(timings) > 1 else None,
            "reader_peak_rss_mb": outcome.get("peak_rss_mb"),
            **outcome.get("overheads", {}),
        }
        inner = outcome.get("inner")
        if inner and inner[0] is not None:
            extra["io_manager_cold_seconds"] = inner[0]
            extra["io_manager_warm_seconds"] = (
                statistics.median(inner[1:]) if len(inner) > 1 else None
            )
        return {"seconds": timings[0], "rows": per_day, "failures": 0, "extra": extra}

    def range_backfill(self, p: dict[str, Any]) -> dict[str, Any]:
        """Workload 5: one run writes a range of daily partitions."""
        days, rows = p["partitions"], p["rows"]
        table = data.range_table(0, days, rows)
        self.prepare()
        self.reset_inner()
        clock = _Clock()
        self.write_range(0, days, table)
        seconds = clock()
        inner = self._inner_extra()
        self._expect_rows(days * rows)
        return {
            "seconds": seconds,
            "rows": days * rows,
            "failures": 0,
            "extra": {"partitions": days, **inner},
        }

    def compaction(self, p: dict[str, Any]) -> dict[str, Any]:
        """Workload 6: compact a table of many small files; read it before and after."""
        days, files = p["compaction_partitions"], p["small_files"]
        batches = max(1, files // days)
        rows_per_file = p["compaction_rows"] // (days * batches)
        if type(self).compact is System.compact:
            raise NotSupported(f"{self.name} has no compaction")
        self.build_small_files(days, batches, rows_per_file)
        self.prepare()
        total = days * batches * rows_per_file
        files_before = self.data_file_count()
        read_before = _best_of(3, self.read_all)
        clock = _Clock()
        self.compact()
        seconds = clock()
        files_after = self.data_file_count()
        read_after = _best_of(3, self.read_all)
        self._expect_rows(total)
        return {
            "seconds": seconds,
            "rows": total,
            "failures": 0,
            "extra": {
                "files_before": files_before,
                "files_after": files_after,
                "read_before_seconds": read_before,
                "read_after_seconds": read_after,
                "read_speedup": read_before / read_after if read_after else None,
            },
        }

    def history_growth(self, p: dict[str, Any]) -> dict[str, Any]:
        """Workload 7: one partition write and one read of it, on a table that already has
        ``history_commits`` commits (built untimed, the same way for every system)."""
        commits, rows = p["history_commits"], p["history_rows"]
        day = HISTORY_TIMED_DAY
        table = data.partition_table(day, rows)
        built = self.build_history(commits, p["history_commit_rows"])
        self.prepare()
        if self.iceberg:
            # the SQL catalog module every Iceberg system's first write loads: imported here, as
            # each adapter's prepare() imports what its writes use, but not connected
            importlib.import_module("pyiceberg.catalog.sql")
        self.reset_inner()
        clock = _Clock()
        self.write_partition(day, table)
        write_seconds = clock()
        write_inner = self.inner_seconds()
        self.reset_inner()
        clock = _Clock()
        got = self.read_partition(day)
        read_seconds = clock()
        read_inner = self.inner_seconds()
        measured_peak = own_peak_rss_mb()
        if got.num_rows != rows:
            raise AssertionError(f"{self.name}: read {got.num_rows} rows, expected {rows}")
        del got
        self._expect_rows(built["rows_in_table"] + rows)
        snapshots_after = self.snapshot_count()
        extra: dict[str, Any] = {
            "history_commits": commits,
            "write_seconds": write_seconds,
            "read_seconds": read_seconds,
            "history_partitions": built["partitions"],
            "history_setup_seconds": built["setup_seconds"],
            **self.overheads(),
        }
        if write_inner is not None:
            extra["io_manager_write_seconds"] = write_inner
            extra["io_manager_read_seconds"] = read_inner
        for key in ("metadata_json_bytes", "manifests"):
            if key in built:
                extra[key] = built[key]
        if snapshots_after is not None:
            extra["snapshots_added_by_write"] = snapshots_after - commits
        return {
            "seconds": write_seconds,
            "rows": rows,
            "failures": 0,
            "extra": extra,
            # the setup processes are larger than some systems' own run: report the measured one
            "measured_peak_rss_mb": measured_peak,
        }

    def build_history(self, commits: int, rows: int) -> dict[str, Any]:
        """Set up a table with ``commits`` prior commits of ``rows`` rows each (not timed).

        An Iceberg system first creates the table its own way (its ``write_partition`` of the
        history's first day, in a child process), then ``benchmarks.history`` adds the other
        commits through the floe table manager, in a process of the main environment. Nothing
        of it runs in this process, so the timed operations start as cold as in any other
        workload."""
        started = time.perf_counter()
        if self.iceberg:
            from benchmarks import history

            first = history.plan(1)[0]
            child = self._spawn_child(
                {"task": "create", "day": first.day, "rows": rows}, "history-create"
            )
            out, _ = child.communicate(input="")
            outcome = _parse_result(out)
            if outcome is None or not outcome.get("ok"):
                raise RuntimeError(
                    f"creating the table failed: {(outcome or {}).get('error', out[-500:])}"
                )
        spec = {
            "ctx": self.ctx.to_json(),
            "format": "iceberg" if self.iceberg else "parquet",
            "commits": commits,
            "rows": rows,
        }
        python = os.environ.get("BENCH_HISTORY_PYTHON") or sys.executable
        with open(self.ctx.workdir / "history-build.log", "w") as log:
            proc = subprocess.run(
                [python, "-m", "benchmarks.history", json.dumps(spec)],
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )
        built = _parse_result(proc.stdout)
        if proc.returncode != 0 or built is None:
            tail = (self.ctx.workdir / "history-build.log").read_text(errors="replace")[-800:]
            raise RuntimeError(f"building the history failed: {tail}")
        if self.iceberg and built["snapshots"] != commits:
            raise AssertionError(
                f"{self.name}: the table has {built['snapshots']} snapshots, expected {commits}"
            )
        built["setup_seconds"] = time.perf_counter() - started
        return built

    WORKLOADS: ClassVar[dict[str, str]] = {
        "sequential_writes": "sequential_writes",
        "concurrent_writes": "concurrent_writes",
        "upsert": "upsert_workload",
        "partition_read": "partition_read",
        "range_backfill": "range_backfill",
        "compaction": "compaction",
        "history_growth": "history_growth",
    }

    def run_workload(self, workload: str, params: dict[str, Any]) -> dict[str, Any]:
        return getattr(self, self.WORKLOADS[workload])(params)

    # ----------------------------------------------------------- concurrent writer child

    def _spawn_child(self, task: dict[str, Any], log_name: str) -> subprocess.Popen:
        spec = {"child_of": self.name, "ctx": self.ctx.to_json(), **task}
        return subprocess.Popen(
            [sys.executable, "-m", "benchmarks.systems.worker", "--child", json.dumps(spec)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=open(self.ctx.workdir / f"{log_name}.log", "w"),
            text=True,
        )

    def run_child(self, task: dict[str, Any]) -> dict[str, Any]:
        """The body of a child process: one concurrent writer, the partition reader, or the
        write that creates the history-growth workload's table."""
        if task["task"] == "read":
            self.prepare()
            timings, rows, inner = [], [], []
            try:
                for _ in range(task["reads"]):
                    self.reset_inner()
                    clock = _Clock()
                    table = self.read_partition(task["day"])
                    timings.append(clock())
                    inner.append(self.inner_seconds())
                    rows.append(table.num_rows)
                    del table
            except Exception as error:
                return {"ok": False, "error": f"{type(error).__name__}: {_root_message(error)}"}
            return {
                "ok": True,
                "timings": timings,
                "rows": rows,
                "inner": inner,
                "overheads": self.overheads(),
                "peak_rss_mb": peak_rss_mb(),
            }
        table = data.partition_table(task["day"], task["rows"])
        if task["task"] == "create":  # the table, created by the system's own first write
            try:
                self.write_partition(task["day"], table)
            except Exception as error:
                return {"ok": False, "error": f"{type(error).__name__}: {_root_message(error)}"}
            return {"ok": True}
        self.prepare()
        print("READY", flush=True)
        sys.stdin.readline()
        clock = _Clock()
        try:
            self.write_partition(task["day"], table)
        except Exception as error:  # the failure is the measurement
            return {
                "ok": False,
                "seconds": clock(),
                "error": f"{type(error).__name__}: {_root_message(error)}",
            }
        return {"ok": True, "seconds": clock()}


def _spread(days: int, count: int) -> list[int]:
    """``count`` day numbers spread over ``range(days)`` (e.g. 10, 3 -> [2, 5, 8])."""
    count = min(count, days)
    step = days / (count + 1)
    return sorted({min(days - 1, round(step * (i + 1))) for i in range(count)})


def _best_of(n: int, fn: Any) -> float:
    best = float("inf")
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _root_message(error: BaseException) -> str:
    seen = error
    while seen.__cause__ is not None:
        seen = seen.__cause__
    text = str(seen).strip().splitlines()
    first = text[0] if text else ""
    if seen is not error:
        return f"{type(seen).__name__}: {first}"
    return first


def _parse_result(stdout: str) -> dict[str, Any] | None:
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_MARKER):
            return json.loads(line[len(RESULT_MARKER) :])
    return None


def day_filter_bounds(day: int) -> tuple[dt.datetime, dt.datetime]:
    return data.day_bounds(day)
