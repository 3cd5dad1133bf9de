"""Helpers of the commit-engine tests: rows, concurrent writers, and what a table references.

Writer functions open their own catalog from plain properties (as a separate Dagster run
would), call ``start()`` right before the write that must overlap with the others, and return
plain data. :func:`run_writers` runs them in threads of this process or, through
:mod:`reliability.processes`, in separate processes.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from threading import Barrier
from typing import Any

import pyarrow as pa
from infra.catalogs import dispose_catalog, load_test_catalog
from infra.warehouse import list_warehouse_files
from pyiceberg.table import Table
from pyiceberg.table.snapshots import Snapshot
from pyiceberg.table.update import AddSnapshotUpdate
from reliability.processes import CONTEXT, run_together
from reliability.workers import PART_SPEC, RETRY

from floe_dagster_iceberg import IcebergTableManager, WriteConfig

Key = tuple[str, int]
Rows = dict[Key, tuple[str, str]]

DATA_FILE_SUFFIX = ".parquet"
METADATA_FILE_SUFFIX = ".avro"


# -- rows ---------------------------------------------------------------------------------------


def id_rows(part: str, ids: Iterable[int], writer: str) -> pa.Table:
    """Rows of partition ``part`` with the given ids, written by ``writer``."""
    ids = list(ids)
    return pa.table(
        {
            "part": pa.array([part] * len(ids), pa.string()),
            "id": pa.array(ids, pa.int64()),
            "writer": pa.array([writer] * len(ids), pa.string()),
            "payload": pa.array([f"{part}/{writer}/{i}" for i in ids], pa.string()),
        }
    )


def rows_of(table: pa.Table) -> Rows:
    """``{(part, id): (writer, payload)}``; fails on a duplicated key."""
    columns = [table.column(name).to_pylist() for name in ("part", "id", "writer", "payload")]
    rows = {(part, i): (writer, payload) for part, i, writer, payload in zip(*columns, strict=True)}
    assert len(rows) == table.num_rows, "a (part, id) key occurs twice"
    return rows


# -- concurrent writers -------------------------------------------------------------------------


def append_ids(
    properties: dict[str, str],
    table: str,
    part: str,
    ids: list[int],
    writer: str,
    *,
    start: Callable[[], Any],
) -> dict[str, Any]:
    """Append rows ``ids`` of ``writer`` to partition ``part`` in one write."""
    catalog = load_test_catalog(properties)
    try:
        manager = IcebergTableManager(catalog, retry=RETRY)
        data = id_rows(part, ids, writer)
        start()
        result = manager.write(table, data, WriteConfig(partition_spec=PART_SPEC, retry=RETRY))
    finally:
        dispose_catalog(catalog)
    return {"snapshot_id": result.snapshot_id, "attempts": result.commit_attempts}


def run_writers(
    in_threads: bool,
    calls: Sequence[tuple[Callable[..., Any], tuple[Any, ...]]],
    timeout: float = 240.0,
) -> list[Any]:
    """Run every ``target(*args, start=...)`` at once; raise naming every call that failed.

    ``in_threads``: threads of this process (SQLite: one database file, one process);
    otherwise one process per call.
    """
    if not in_threads:
        return run_together(calls, timeout=timeout).values
    barrier = Barrier(len(calls))

    def call(target: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        try:
            return target(*args, start=lambda: barrier.wait(timeout))
        except BaseException:
            barrier.abort()  # nobody waits for a writer that will never arrive
            raise

    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        futures = [pool.submit(call, target, args) for target, args in calls]
        errors = [f.exception(timeout) for f in futures]
    failed = [f"call {i}: {type(e).__name__}: {e}" for i, e in enumerate(errors) if e is not None]
    assert not failed, f"{len(failed)} of {len(calls)} writers failed:\n" + "\n".join(failed)
    return [f.result() for f in futures]


# -- a writer that dies at its commit --------------------------------------------------------------


def _write_then_die(
    properties: dict[str, str], table: str, data: pa.Table, config: WriteConfig
) -> None:
    """Run an ordinary write, but SIGKILL this process at the catalog request that would add
    its snapshot: its data files, manifests and manifest list are written, nothing committed."""
    manager = IcebergTableManager(load_test_catalog(properties))
    commit_table = manager.catalog.commit_table

    def die_at_data_commit(target: Table, requirements: Any, updates: Any) -> Any:
        if any(isinstance(update, AddSnapshotUpdate) for update in updates):
            os.kill(os.getpid(), signal.SIGKILL)
        return commit_table(target, requirements, updates)

    manager.catalog.commit_table = die_at_data_commit  # type: ignore[method-assign]
    manager.write(table, data, config)


def kill_writer_at_commit(
    properties: dict[str, str],
    table: str,
    data: pa.Table,
    config: WriteConfig,
    timeout: float = 120,
) -> None:
    """Run :func:`_write_then_die` in a process of its own; fail unless it died by SIGKILL."""
    process = CONTEXT.Process(target=_write_then_die, args=(properties, table, data, config))
    process.start()
    process.join(timeout)
    if process.is_alive():
        process.kill()
        process.join()
        raise AssertionError(f"the writer did not reach its commit within {timeout:.0f} s")
    assert process.exitcode == -signal.SIGKILL, (
        f"the writer exited with {process.exitcode} instead of dying at its commit"
    )


# -- what a table holds and references ------------------------------------------------------------


def storage_files(table: Table, properties: dict[str, str]) -> dict[str, int]:
    """``{uri: size}`` of every file under the table location (catalog ``properties`` give S3
    credentials)."""
    return list_warehouse_files(table.location(), {**properties, **table.io.properties})


def referenced_files(table: Table) -> set[str]:
    """Data files, manifests and manifest lists of every snapshot of ``table``."""
    referenced = set(table.inspect.all_files().column("file_path").to_pylist())
    referenced |= set(table.inspect.all_manifests().column("path").to_pylist())
    referenced |= {snapshot.manifest_list for snapshot in table.snapshots()}
    return referenced


def unreferenced_files(table: Table, properties: dict[str, str]) -> set[str]:
    """Parquet and Avro files under the table location that no snapshot references."""
    stored = {
        path
        for path in storage_files(table, properties)
        if path.endswith((DATA_FILE_SUFFIX, METADATA_FILE_SUFFIX))
    }
    return stored - referenced_files(table)


def live_data_files(table: Table, snapshot_id: int | None) -> dict[str, tuple[int, int, tuple]]:
    """``{path: (records, bytes, partition)}`` of the data files live in a snapshot."""
    if snapshot_id is None:
        return {}
    files = table.inspect.data_files(snapshot_id=snapshot_id).to_pylist()
    return {
        f["file_path"]: (
            f["record_count"],
            f["file_size_in_bytes"],
            tuple(sorted((f.get("partition") or {}).items())),
        )
        for f in files
    }


SUMMARY_FIELDS = (
    "added-records",
    "deleted-records",
    "added-data-files",
    "deleted-data-files",
    "added-files-size",
    "removed-files-size",
    "changed-partition-count",
    "total-records",
    "total-data-files",
    "total-files-size",
)
TOTAL_FIELDS = ("total-records", "total-data-files", "total-files-size")


def summary_of(snapshot: Snapshot) -> dict[str, int]:
    """The standard summary counters of a snapshot (absent ones, by Iceberg's rule, are 0)."""
    assert snapshot.summary is not None
    missing = [name for name in TOTAL_FIELDS if name not in snapshot.summary]
    assert not missing, f"snapshot {snapshot.snapshot_id} has no {missing} in its summary"
    return {name: int(snapshot.summary.get(name) or 0) for name in SUMMARY_FIELDS}


def summary_from_files(table: Table, snapshot: Snapshot) -> dict[str, int]:
    """The summary counters a snapshot must carry, derived from its and its parent's files."""
    now = live_data_files(table, snapshot.snapshot_id)
    before = live_data_files(table, snapshot.parent_snapshot_id)
    added = [now[path] for path in now.keys() - before.keys()]
    removed = [before[path] for path in before.keys() - now.keys()]
    return {
        "added-records": sum(records for records, _, _ in added),
        "deleted-records": sum(records for records, _, _ in removed),
        "added-data-files": len(added),
        "deleted-data-files": len(removed),
        "added-files-size": sum(size for _, size, _ in added),
        "removed-files-size": sum(size for _, size, _ in removed),
        "changed-partition-count": len({p for _, _, p in added + removed if p}),
        "total-records": sum(records for records, _, _ in now.values()),
        "total-data-files": len(now),
        "total-files-size": sum(size for _, size, _ in now.values()),
    }
