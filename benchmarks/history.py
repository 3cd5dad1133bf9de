"""The prior commits of the history-growth workload (untimed setup), the same for every system.

The history is a list of small commits, each touching one daily partition: mostly appends of a
new day, and every tenth commit an overwrite of a day written five commits earlier with corrected
rows (a re-run of a partition). The Iceberg systems get it as real commits through
``floe_dagster_iceberg.engine.manager.IcebergTableManager(catalog).write(...)`` on the catalog and
warehouse the system under test uses (after the system itself created the table, so the table is
exactly what the system makes); raw Parquet gets the same partitions as plain files, without
commits.

It runs as its own process with the interpreter of the main environment (the dagster-iceberg
adapter runs in an environment without floe-dagster-iceberg)::

    python -m benchmarks.history '{"ctx": {...}, "format": "iceberg", "commits": 1000, ...}'
"""

from __future__ import annotations

import json
import shutil
import sys
import time
import uuid
from dataclasses import dataclass
from typing import Any

from benchmarks import data
from benchmarks.systems.base import RESULT_MARKER, Context

#: the day of the history's first commit, the one that creates the table through the system
#: itself (2024-02-29: the Dagster systems write a partition of their assets)
CREATE_DAY = 59
#: the first day of the other commits' partitions (2024-04-10 on): the manager writes them
#: directly, so they need not be partitions of the benchmark's Dagster assets
FIRST_DAY = 100
#: every OVERWRITE_EVERY-th commit overwrites the day of the commit OVERWRITE_LAG before it
OVERWRITE_EVERY = 10
OVERWRITE_LAG = 5


@dataclass(frozen=True)
class Commit:
    day: int
    overwrite: bool  # False: append a new day; True: replace an existing day's rows
    version: int  # data.partition_table version (1 = the corrected rows of an overwrite)


def plan(commits: int) -> list[Commit]:
    """The history's commits, oldest first."""
    out: list[Commit] = []
    next_day = FIRST_DAY
    for i in range(commits):
        if i == 0:
            out.append(Commit(CREATE_DAY, overwrite=False, version=0))
        elif i % OVERWRITE_EVERY == OVERWRITE_EVERY - 1:
            out.append(Commit(out[i - OVERWRITE_LAG].day, overwrite=True, version=1))
        else:
            out.append(Commit(next_day, overwrite=False, version=0))
            next_day += 1
    return out


def rows_in(commits: list[Commit], rows: int) -> int:
    return len({c.day for c in commits}) * rows


def build_iceberg(ctx: Context, commits: int, rows: int) -> dict[str, Any]:
    """Add commits to the (existing) table until it has ``commits`` snapshots."""
    from benchmarks.systems import _iceberg
    from floe_dagster_iceberg.engine.config import WriteConfig, WriteMode
    from floe_dagster_iceberg.engine.manager import IcebergTableManager

    catalog = _iceberg.open_catalog(ctx)
    manager = IcebergTableManager(catalog)
    existing = len(catalog.load_table(ctx.identifier).snapshots())
    history = plan(commits - existing + 1)
    # history[0] is the write that created the table (the system's own); the rest are added here
    for commit in history[1:]:
        config = (
            WriteConfig(mode=WriteMode.OVERWRITE, row_filter=_iceberg.day_range_filter(commit.day))
            if commit.overwrite
            else WriteConfig(mode=WriteMode.APPEND)
        )
        manager.write(
            ctx.identifier,
            data.partition_table(commit.day, rows, version=commit.version),
            config,
        )
    table = catalog.load_table(ctx.identifier)
    return {
        "snapshots": len(table.snapshots()),
        "rows_in_table": rows_in(history, rows),
        "partitions": len({c.day for c in history}),
        "metadata_json_bytes": len(table.io.new_input(table.metadata_location)),
        "manifests": len(table.current_snapshot().manifests(table.io)),
    }


def build_parquet(ctx: Context, commits: int, rows: int) -> dict[str, Any]:
    """The same partitions as hive-style day directories (what raw Parquet keeps: no commits)."""
    import pyarrow.parquet as pq

    history = plan(commits)
    root = ctx.warehouse / "events"
    for commit in history:
        target = root / f"day={data.day_key(commit.day)}"
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        pq.write_table(
            data.partition_table(commit.day, rows, version=commit.version),
            target / f"{uuid.uuid4().hex}.parquet",
            compression="zstd",
        )
    return {
        "snapshots": None,
        "rows_in_table": rows_in(history, rows),
        "partitions": len({c.day for c in history}),
    }


def main(argv: list[str]) -> int:
    spec = json.loads(argv[0])
    ctx = Context.from_json(spec["ctx"])
    started = time.perf_counter()
    build = build_iceberg if spec["format"] == "iceberg" else build_parquet
    result = build(ctx, spec["commits"], spec["rows"])
    result["seconds"] = time.perf_counter() - started
    sys.stdout.write(f"\n{RESULT_MARKER}{json.dumps(result)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
