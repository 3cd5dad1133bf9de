"""Incremental reads: the data files appended between two snapshots of a table.

A snapshot in the range adds rows when it appends, or when it overwrites without removing
anything (our slice writes are overwrites, even the first write of a slice). Compaction
(``replace``) rewrites rows without changing them, so it is passed over. A snapshot that
removed rows (a ``delete``, or an ``overwrite`` that deleted files) cannot be expressed as
"rows added": the read is refused, naming that snapshot, never silently skipped.

Example:
    >>> import pyarrow as pa, tempfile
    >>> from pyiceberg.catalog.sql import SqlCatalog
    >>> tmp = tempfile.mkdtemp()
    >>> catalog = SqlCatalog("doc", uri=f"sqlite:///{tmp}/c.db", warehouse=f"file://{tmp}")
    >>> catalog.create_namespace("sales")
    >>> table = catalog.create_table("sales.orders", pa.schema([("id", pa.int64())]))
    >>> table.append(pa.table({"id": [1, 2]}))
    >>> first = table.current_snapshot().snapshot_id
    >>> table.append(pa.table({"id": [3]}))
    >>> [f.record_count for f in appended_files(table, first, table.current_snapshot().snapshot_id)]
    [1]
"""

from __future__ import annotations

from pyiceberg.manifest import DataFile, ManifestContent, ManifestEntryStatus
from pyiceberg.table import Table
from pyiceberg.table.snapshots import Operation, Snapshot

from floe_dagster_iceberg.engine.file_cache import live_entries, snapshot_manifests
from floe_dagster_iceberg.errors import InvalidInputError, TableNotFoundError

__all__ = ["appended_files", "snapshots_between"]


def appended_files(
    table: Table, from_snapshot_id: int | None, to_snapshot_id: int
) -> list[DataFile]:
    """The data files added after ``from_snapshot_id`` (exclusive; ``None``: from the first
    snapshot) up to ``to_snapshot_id`` (inclusive), oldest first."""
    files: list[DataFile] = []
    for snapshot in snapshots_between(table, from_snapshot_id, to_snapshot_id):
        _refuse_removals(table, snapshot, from_snapshot_id, to_snapshot_id)
        if _operation(snapshot) != Operation.REPLACE:
            files.extend(_added_by(table, snapshot))
    return files


def snapshots_between(
    table: Table, from_snapshot_id: int | None, to_snapshot_id: int
) -> list[Snapshot]:
    """The snapshots after ``from_snapshot_id`` up to ``to_snapshot_id``, oldest first.

    ``from_snapshot_id`` must be an ancestor of ``to_snapshot_id`` (still in the history).
    """
    name = ".".join(table.name())
    if from_snapshot_id is not None and table.snapshot_by_id(from_snapshot_id) is None:
        raise TableNotFoundError(
            f"Table '{name}': snapshot {from_snapshot_id}, where this incremental read starts, "
            "has been expired; read the table whole once (without 'incremental'), or start "
            "from a snapshot still in its history (manager.snapshots())."
        )
    chain: list[Snapshot] = []
    snapshot = table.snapshot_by_id(to_snapshot_id)
    while snapshot is not None and snapshot.snapshot_id != from_snapshot_id:
        chain.append(snapshot)
        parent = snapshot.parent_snapshot_id
        snapshot = table.snapshot_by_id(parent) if parent is not None else None
    if from_snapshot_id is not None and snapshot is None:
        raise InvalidInputError(
            f"Table '{name}': snapshot {from_snapshot_id} is not an ancestor of snapshot "
            f"{to_snapshot_id} (the table was rolled back or its history expired); an "
            "incremental read needs one line of history. Read the table whole once."
        )
    return list(reversed(chain))


def _operation(snapshot: Snapshot) -> Operation:
    return snapshot.summary.operation if snapshot.summary else Operation.APPEND


def _refuse_removals(
    table: Table, snapshot: Snapshot, from_snapshot_id: int | None, to_snapshot_id: int
) -> None:
    operation = _operation(snapshot)
    summary = snapshot.summary
    removed = operation == Operation.DELETE or (
        operation == Operation.OVERWRITE
        and summary is not None
        and any(
            int(summary.get(key) or 0) > 0
            for key in ("deleted-data-files", "deleted-records", "added-delete-files")
        )
    )
    if not removed:
        return
    run = summary.get("dagster.run-id") if summary else None
    raise InvalidInputError(
        f"Table '{'.'.join(table.name())}': snapshot {snapshot.snapshot_id} "
        f"({operation.value}{f', run {run}' if run else ''}) removed or replaced rows between "
        f"snapshot {from_snapshot_id} and {to_snapshot_id}; an incremental input reads "
        "appended rows only. Read the table whole (drop 'incremental'), or continue after it "
        f"with from_snapshot_id={snapshot.snapshot_id}."
    )


def _added_by(table: Table, snapshot: Snapshot) -> list[DataFile]:
    files: list[DataFile] = []
    for manifest in snapshot_manifests(snapshot, table.io):
        if (
            manifest.content != ManifestContent.DATA
            or manifest.added_snapshot_id != snapshot.snapshot_id
        ):
            continue
        for entry in live_entries(manifest, table.io):
            if (
                entry.status == ManifestEntryStatus.ADDED
                and entry.snapshot_id == snapshot.snapshot_id
            ):
                files.append(entry.data_file)
    return files
