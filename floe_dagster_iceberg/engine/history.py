"""Reading what commits did from a table's history: for snapshots another engine committed.

A Spark, Daft or Trino job commits its own snapshots; these functions read them back the way
the engine reports its own writes: the snapshots that are new since a known one (in commit
order), the :class:`~floe_dagster_iceberg.engine.config.WriteResult` of one write (one or
several snapshots), the engine that committed a snapshot, and the schema changes between two
snapshots.

Example:
    >>> import pyarrow as pa, tempfile
    >>> from pyiceberg.catalog.sql import SqlCatalog
    >>> tmp = tempfile.mkdtemp()
    >>> catalog = SqlCatalog("doc", uri=f"sqlite:///{tmp}/c.db", warehouse=f"file://{tmp}")
    >>> catalog.create_namespace("sales")
    >>> table = catalog.create_table("sales.orders", pa.schema([("id", pa.int64())]))
    >>> table.append(pa.table({"id": [1, 2]}))
    >>> seen = SnapshotMark.of(table.current_snapshot())
    >>> table.append(pa.table({"id": [3]}))
    >>> [s.summary["added-records"] for s in snapshots_since(table, seen)]
    ['1']
    >>> result = write_result(table, table.current_snapshot().snapshot_id)
    >>> result.operation, result.rows_added
    ('append', 1)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pyiceberg.schema import Schema, index_by_id, index_name_by_id
from pyiceberg.table import Table
from pyiceberg.table.snapshots import Snapshot

from floe_dagster_iceberg.engine.config import WriteResult
from floe_dagster_iceberg.engine.properties import WRITER_PROPERTY
from floe_dagster_iceberg.engine.types import type_to_string
from floe_dagster_iceberg.errors import TableNotFoundError

__all__ = [
    "SnapshotMark",
    "committing_engine",
    "schema_changes",
    "snapshot_of",
    "snapshots_since",
    "write_result",
]

_TOTALS = {
    "rows_added": "added-records",
    "rows_deleted": "deleted-records",
    "files_added": "added-data-files",
    "files_deleted": "deleted-data-files",
    "bytes_added": "added-files-size",
    "bytes_deleted": "removed-files-size",
}
"""WriteResult fields and the snapshot-summary keys Iceberg engines fill them from."""


@dataclass(frozen=True)
class SnapshotMark:
    """The last snapshot seen on a table: its id and commit time (``None``: no snapshot yet)."""

    snapshot_id: int | None
    timestamp_ms: int = 0

    @classmethod
    def of(cls, snapshot: Snapshot | None) -> SnapshotMark:
        """The mark of ``snapshot`` (``None``: the table has no snapshot)."""
        if snapshot is None:
            return cls(snapshot_id=None)
        return cls(snapshot_id=snapshot.snapshot_id, timestamp_ms=snapshot.timestamp_ms)


def snapshots_since(table: Table, seen: SnapshotMark) -> list[Snapshot]:
    """The snapshots of the main branch committed after ``seen``, oldest first.

    The branch's history is walked back from its head to ``seen``. When ``seen`` is no longer
    in that history (it was rolled back or expired), the snapshots newer than its commit time
    are new. ``SnapshotMark(None)`` (the table had no snapshot) makes all of them new.
    """
    head = table.current_snapshot()
    found: list[Snapshot] = []
    reached = False
    snapshot = head
    while snapshot is not None:
        if snapshot.snapshot_id == seen.snapshot_id:
            reached = True
            break
        found.append(snapshot)
        parent = snapshot.parent_snapshot_id
        snapshot = table.snapshot_by_id(parent) if parent is not None else None
    if not reached and seen.snapshot_id is not None:
        found = [s for s in found if s.timestamp_ms > seen.timestamp_ms]
    return list(reversed(found))


def snapshot_of(table: Table, snapshot_id: int) -> Snapshot:
    """The snapshot ``snapshot_id`` of ``table``, or an error naming the table and the fix."""
    snapshot = table.snapshot_by_id(snapshot_id)
    if snapshot is None:
        name = ".".join(table.name())
        raise TableNotFoundError(
            f"Table '{name}' has no snapshot {snapshot_id}: check that the job that committed "
            "it and this catalog are the same catalog (same name, URI and warehouse), and that "
            "the snapshot was not expired meanwhile."
        )
    return snapshot


def write_result(
    table: Table, snapshot_id: int, previous_snapshot_id: int | None = None
) -> WriteResult:
    """What the write that ended with snapshot ``snapshot_id`` did, from snapshot summaries.

    One write can commit several snapshots (PyIceberg's ``overwrite`` is a ``delete`` and an
    ``append``); give ``previous_snapshot_id``, the table's snapshot before the write, to add
    up every snapshot after it. Without it the write is the one snapshot. A write whose first
    snapshot has no parent created the table (``created_table``).

    Example:
        >>> import pyarrow as pa, tempfile
        >>> from pyiceberg.catalog.sql import SqlCatalog
        >>> tmp = tempfile.mkdtemp()
        >>> catalog = SqlCatalog("doc", uri=f"sqlite:///{tmp}/c.db", warehouse=f"file://{tmp}")
        >>> catalog.create_namespace("sales")
        >>> table = catalog.create_table("sales.orders", pa.schema([("id", pa.int64())]))
        >>> table.append(pa.table({"id": [1, 2]}))
        >>> before = table.current_snapshot().snapshot_id
        >>> table.overwrite(pa.table({"id": [3]}))  # a delete and an append snapshot
        >>> result = write_result(table, table.current_snapshot().snapshot_id, before)
        >>> result.operation, result.rows_added, result.rows_deleted
        ('overwrite', 1, 2)
    """
    last = snapshot_of(table, snapshot_id)
    snapshots = _write_snapshots(table, last, previous_snapshot_id)
    totals = dict.fromkeys(_TOTALS, 0)
    for snapshot in snapshots:
        summary = snapshot.summary
        for field_name, key in _TOTALS.items():
            totals[field_name] += int((summary.get(key) if summary else None) or 0)
    before = snapshots[0].parent_snapshot_id
    operation = last.summary.operation.value if last.summary else None
    if len(snapshots) > 1:  # as the engine reports its own multi-snapshot writes
        operation = "overwrite"
    before_schema = _schema_of(table, table.snapshot_by_id(before)) if before is not None else None
    return WriteResult(
        table=".".join(table.name()),
        snapshot_id=last.snapshot_id,
        operation=operation,
        schema_changes=tuple(schema_changes(before_schema, _schema_of(table, last))),
        created_table=before is None,
        **totals,
    )


def _write_snapshots(
    table: Table, last: Snapshot, previous_snapshot_id: int | None
) -> list[Snapshot]:
    """The snapshots of one write, oldest first: ``last`` and its ancestors after the previous."""
    if previous_snapshot_id is None or previous_snapshot_id == last.snapshot_id:
        return [last]
    snapshots = [last]
    parent = last.parent_snapshot_id
    while parent is not None and parent != previous_snapshot_id:
        snapshot = table.snapshot_by_id(parent)
        if snapshot is None:
            break
        snapshots.append(snapshot)
        parent = snapshot.parent_snapshot_id
    if parent != previous_snapshot_id:
        name = ".".join(table.name())
        raise TableNotFoundError(
            f"Table '{name}': snapshot {previous_snapshot_id} is not an ancestor of snapshot "
            f"{last.snapshot_id}; report the snapshot the table had before the write as "
            "previous_snapshot_id, or leave it out to report the last snapshot alone."
        )
    return list(reversed(snapshots))


def _schema_of(table: Table, snapshot: Snapshot | None) -> Schema | None:
    if snapshot is None:
        return None
    if snapshot.schema_id is None:
        return table.schema()
    return table.schemas().get(snapshot.schema_id, table.schema())


def schema_changes(before: Schema | None, after: Schema | None) -> list[str]:
    """The column changes from ``before`` to ``after``, matched by field id, at every depth.

    Example:
        >>> from pyiceberg.types import IntegerType, LongType, NestedField, StringType
        >>> before = Schema(NestedField(1, "id", IntegerType()), NestedField(2, "n", StringType()))
        >>> after = Schema(
        ...     NestedField(1, "id", LongType()), NestedField(3, "name", StringType()), schema_id=1
        ... )
        >>> schema_changes(before, after)
        ['add column name string', 'widen column id to long', 'drop column n']
    """
    if before is None or after is None or before.schema_id == after.schema_id:
        return []
    old, new = index_by_id(before), index_by_id(after)
    old_names, new_names = index_name_by_id(before), index_name_by_id(after)
    added = [
        f"add column {new_names[i]} {type_to_string(new[i].field_type)}"
        for i in sorted(new.keys() - old.keys())
    ]
    changed: list[str] = []
    for field_id in sorted(new.keys() & old.keys()):
        if old_names[field_id] != new_names[field_id]:
            changed.append(f"rename column {old_names[field_id]} to {new_names[field_id]}")
        old_type, new_type = old[field_id].field_type, new[field_id].field_type
        if old_type.is_primitive and old_type != new_type:
            changed.append(f"widen column {new_names[field_id]} to {type_to_string(new_type)}")
    dropped = [f"drop column {old_names[i]}" for i in sorted(old.keys() - new.keys())]
    return [*added, *changed, *dropped]


def committing_engine(summary: Mapping[str, str]) -> str | None:
    """The engine that committed a snapshot, from the keys engines put in its summary.

    Iceberg's Java library writes ``engine-name`` and ``engine-version`` (Spark, Flink), Trino
    ``trino_query_id``, this package ``floe.writer``; PyIceberg and Daft write none (``None``).

    Example:
        >>> committing_engine({"engine-name": "spark", "engine-version": "3.5.9"})
        'spark 3.5.9'
        >>> committing_engine({"added-records": "3"}) is None
        True
    """
    if engine := summary.get("engine-name"):
        return f"{engine} {summary.get('engine-version', '')}".strip()
    if writer := summary.get(WRITER_PROPERTY):
        return writer
    markers = {"spark.app.id": "spark", "trino_query_id": "trino", "flink.job-id": "flink"}
    for key, engine in markers.items():
        if key in summary:
            return engine
    if version := summary.get("iceberg-version"):
        return version
    return None
