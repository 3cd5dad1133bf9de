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
from pathlib import Path
from typing import Any

import pyarrow as pa
from infra.catalogs import dispose_catalog, load_test_catalog
from pyiceberg.expressions import EqualTo

from floe_dagster_iceberg.engine.config import PartitionField, RetryPolicy, WriteConfig
from floe_dagster_iceberg.engine.manager import IcebergTableManager

PART_SPEC = (PartitionField(source_column="part"),)
COMPACTED_MARKER = "compacted"
# Sixteen writers on two cores: enough attempts that the last writer in line still gets through.
RETRY = RetryPolicy(max_attempts=30, initial_backoff_seconds=0.05, max_backoff_seconds=2.0)


def wait_for(path: Path, timeout: float = 120.0) -> None:
    """Poll until ``path`` exists (a marker another process creates), failing after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear within {timeout:.0f} s")
        time.sleep(0.02)


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


def _count_catalog_commits(manager: IcebergTableManager) -> list[int]:
    """Count the catalog commit requests this process makes (each passes through unchanged)."""
    calls = [0]
    commit_table = manager.catalog.commit_table

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return commit_table(*args, **kwargs)

    manager.catalog.commit_table = counted  # type: ignore[method-assign]
    return calls


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
    catalog_commits = _count_catalog_commits(manager)
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
        "catalog_commits": catalog_commits[0],
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
    part: str,
    commits: int,
    rows_per_commit: int,
    done_dir: str,
    *,
    start: Callable[[], Any],
) -> dict[str, Any]:
    """Append ``commits`` small batches to partition ``part``, each its own commit.

    Row ids run from 0 to ``commits * rows_per_commit - 1``; ``done_dir/<part>`` marks the end.
    Half-way, the writer waits until maintenance has committed a compaction, so the rest of its
    commits certainly land on a compacted (and expired) table.
    """
    manager = _manager(properties)
    start()
    attempts = []
    try:
        for batch in range(commits):
            if batch == commits // 2:
                wait_for(Path(done_dir).parent / COMPACTED_MARKER)
            data = partition_rows(part, rows_per_commit, f"batch{batch}")
            ids = range(batch * rows_per_commit, (batch + 1) * rows_per_commit)
            data = data.set_column(1, "id", pa.array(ids, pa.int64()))
            attempts.append(manager.write(table, data, WriteConfig(retry=RETRY)).commit_attempts)
    finally:
        _close(manager)
        Path(done_dir, part).touch()
    return {"attempts": attempts}


def overwrite_versions(
    properties: dict[str, str],
    table: str,
    part: str,
    versions: int,
    rows: int,
    done_dir: str,
    *,
    start: Callable[[], Any],
) -> dict[str, Any]:
    """Overwrite partition ``part`` ``versions`` times; version ``v`` is written by ``v<v>``."""
    manager = _manager(properties)
    config = WriteConfig(mode="overwrite", row_filter=EqualTo("part", part), retry=RETRY)
    start()
    try:
        attempts = [
            manager.write(table, partition_rows(part, rows, f"v{version}"), config).commit_attempts
            for version in range(versions)
        ]
    finally:
        _close(manager)
        Path(done_dir, part).touch()
    return {"attempts": attempts}


def maintain(
    properties: dict[str, str],
    table: str,
    done_dir: str,
    writers: int,
    *,
    start: Callable[[], Any],
) -> dict[str, Any]:
    """Compact and expire snapshots in a loop until ``writers`` writers are done, then once more.

    The first committed compaction is announced with a marker next to ``done_dir``.
    """
    manager = _manager(properties)
    start()
    rounds = compactions = expired = files_deleted = conflicts = 0
    while True:
        finished = len(os.listdir(done_dir)) >= writers
        compacted = manager.compact(table, target_file_size_bytes=64 * 1024 * 1024)
        compactions += int(compacted.committed)
        if compacted.committed:
            (Path(done_dir).parent / COMPACTED_MARKER).touch()
        conflicts += compacted.conflicts
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
        "compaction_conflicts": conflicts,
        "snapshots_expired": expired,
        "files_deleted": files_deleted,
    }


def first_writes_through_resource(
    catalogs: list[dict[str, str]],
    table: str,
    part: str,
    count: int,
    writer: str,
    *,
    start: Callable[[], Any],
) -> list[dict[str, Any]]:
    """For each fresh catalog in turn, open it through ``IcebergCatalogResource``, write ``part``.

    A catalog is ``{"home": <dir>}`` for the embedded default (given through
    ``$FLOE_ICEBERG_HOME``, as a deployment sets it) or ``{"uri": ..., "warehouse": ...}`` for a
    SQL catalog. ``start()`` is called before each catalog is first opened, so every process
    races the others to set up each catalog. A failed round is reported as ``{"error": ...}``.
    """
    from floe_dagster_iceberg import HOME_ENV_VAR, IcebergCatalogResource, SqlCatalogConfig

    data = partition_rows(part, count, writer)
    config = WriteConfig(
        mode="overwrite", row_filter=EqualTo("part", part), partition_spec=PART_SPEC, retry=RETRY
    )
    results = []
    for catalog in catalogs:
        if "home" in catalog:
            os.environ[HOME_ENV_VAR] = catalog["home"]
            resource = IcebergCatalogResource()
        else:
            resource = IcebergCatalogResource(
                catalog=SqlCatalogConfig(uri=catalog["uri"], warehouse=catalog["warehouse"])
            )
        start()
        try:
            manager = resource.get_manager()
            result = manager.write(table, data, config)
        except Exception as error:  # reported, so the other processes go on to the next round
            results.append({"error": f"{type(error).__name__}: {error}"})
            continue
        _close(manager)
        results.append({"rows_added": result.rows_added, "created_table": result.created_table})
    return results
