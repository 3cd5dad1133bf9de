"""Work that test processes do: partition writes, upserts, appends and maintenance loops.

Every function opens its own catalog from plain properties (as a separate Dagster run would),
calls ``start()`` right before the work that must overlap with the other processes and returns
plain data the parent can check.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pyarrow as pa
from infra.catalogs import dispose_catalog, load_test_catalog
from pyiceberg.expressions import EqualTo

from floe_dagster_iceberg.manager import IcebergTableManager
from floe_dagster_iceberg.models import PartitionField, RetryPolicy, WriteConfig

PART_SPEC = (PartitionField(source_column="part"),)
# Sixteen writers on two cores: enough attempts that the last writer in line still gets through.
RETRY = RetryPolicy(max_attempts=30, initial_backoff_seconds=0.05, max_backoff_seconds=2.0)


def partition_rows(part: str, count: int, writer: str) -> pa.Table:
    """``count`` rows of partition ``part``; ids are unique per (part, writer) and carry both."""
    return pa.table(
        {
            "part": pa.array([part] * count, pa.string()),
            "id": pa.array(range(count), pa.int64()),
            "writer": pa.array([writer] * count, pa.string()),
            "payload": pa.array([f"{part}/{writer}/{i}" for i in range(count)], pa.string()),
        }
    )


def _manager(properties: dict[str, str]) -> IcebergTableManager:
    return IcebergTableManager(load_test_catalog(properties), retry=RETRY)


def _close(manager: IcebergTableManager) -> None:
    dispose_catalog(manager.catalog)


def write_partition(
    properties: dict[str, str],
    table: str,
    part: str,
    count: int,
    writer: str,
    *,
    start: Callable[[], Any],
) -> dict[str, Any]:
    """Overwrite partition ``part`` with ``count`` rows of ``writer`` (creating the table if needed)."""
    manager = _manager(properties)
    data = partition_rows(part, count, writer)
    config = WriteConfig(
        mode="overwrite", row_filter=EqualTo("part", part), partition_spec=PART_SPEC, retry=RETRY
    )
    start()
    began = time.monotonic()
    result = manager.write(table, data, config)
    seconds = time.monotonic() - began
    _close(manager)
    return {
        "pid": os.getpid(),
        "attempts": result.commit_attempts,
        "snapshot_id": result.snapshot_id,
        "rows_added": result.rows_added,
        "created_table": result.created_table,
        "seconds": seconds,
    }


def upsert_rows(
    properties: dict[str, str],
    table: str,
    rows: dict[str, list[Any]],
    *,
    start: Callable[[], Any],
) -> dict[str, Any]:
    """Upsert ``rows`` (columns ``id``, ``value``, ``writer``) on key ``id``."""
    manager = _manager(properties)
    data = pa.table(
        {
            "id": pa.array(rows["id"], pa.int64()),
            "value": pa.array(rows["value"], pa.string()),
            "writer": pa.array(rows["writer"], pa.string()),
        }
    )
    start()
    result = manager.upsert(table, data, join_cols=["id"], config=WriteConfig(retry=RETRY))
    _close(manager)
    return {
        "attempts": result.commit_attempts,
        "rows_updated": result.rows_updated,
        "rows_inserted": result.rows_inserted,
    }


def append_batches(
    properties: dict[str, str],
    table: str,
    writer: str,
    commits: int,
    rows_per_commit: int,
    *,
    start: Callable[[], Any],
) -> dict[str, Any]:
    """Append ``commits`` small batches, each its own commit, to partition ``writer``."""
    manager = _manager(properties)
    start()
    attempts = []
    for batch in range(commits):
        ids = range(batch * rows_per_commit, (batch + 1) * rows_per_commit)
        data = pa.table(
            {
                "part": pa.array([writer] * len(ids), pa.string()),
                "id": pa.array(ids, pa.int64()),
                "writer": pa.array([writer] * len(ids), pa.string()),
                "payload": pa.array([f"{writer}/{i}" for i in ids], pa.string()),
            }
        )
        result = manager.write(table, data, WriteConfig(mode="append", retry=RETRY))
        attempts.append(result.commit_attempts)
    _close(manager)
    return {"attempts": attempts}


def maintain(
    properties: dict[str, str],
    table: str,
    done_marker: str,
    *,
    start: Callable[[], Any],
) -> dict[str, Any]:
    """Compact and expire snapshots in a loop until ``done_marker`` exists, then once more."""
    manager = _manager(properties)
    start()
    rounds = compactions = expired = files_deleted = 0
    while True:
        finished = os.path.exists(done_marker)
        compacted = manager.compact(table, target_file_size_bytes=64 * 1024 * 1024)
        compactions += int(compacted.committed)
        expiry = manager.expire_snapshots(table, older_than=timedelta(0), retain_last=1)
        expired += expiry.snapshots_expired
        files_deleted += expiry.files_deleted
        rounds += 1
        if finished:
            break
    _close(manager)
    return {
        "rounds": rounds,
        "compactions": compactions,
        "snapshots_expired": expired,
        "files_deleted": files_deleted,
    }
