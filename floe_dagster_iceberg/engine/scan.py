"""Reads: plan the files of a filter at a point in time, read them in parallel, one Arrow schema.

Planning reads only the manifests whose partition summaries allow the filter, keeps only the
files whose partition and column statistics allow it, and reuses manifests this process has
already read (:mod:`~floe_dagster_iceberg.engine.file_cache`). Files are read in parallel,
with the projection and the filter pushed into the Parquet read. Whoever wrote the files, the
result has the Arrow schema the table's Iceberg schema decides (:func:`arrow_schema`).

Example:
    >>> import pyarrow as pa, tempfile
    >>> from pyiceberg.catalog.sql import SqlCatalog
    >>> tmp = tempfile.mkdtemp()
    >>> catalog = SqlCatalog("doc", uri=f"sqlite:///{tmp}/c.db", warehouse=f"file://{tmp}")
    >>> catalog.create_namespace("sales")
    >>> from pyiceberg.expressions import EqualTo
    >>> table = catalog.create_table("sales.orders", pa.schema([("id", pa.int64()), ("day", pa.string())]))
    >>> table.append(pa.table({"id": [1, 2], "day": ["a", "b"]}))
    >>> read = ReadRequest(row_filter=EqualTo("day", "a"), columns=("id", "day"))
    >>> result = read_table(table, read)
    >>> result.to_pylist(), result.schema.field("day").type
    ([{'id': 1, 'day': 'a'}], DataType(large_string))
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime

import pyarrow as pa
from pyiceberg.expressions import AlwaysTrue, BooleanExpression
from pyiceberg.io.pyarrow import ArrowScan, schema_to_pyarrow
from pyiceberg.schema import Schema
from pyiceberg.table import DataScan, FileScanTask, Table
from pyiceberg.table.snapshots import Snapshot

from floe_dagster_iceberg.engine.config import ArrowStringType
from floe_dagster_iceberg.engine.incremental import appended_files
from floe_dagster_iceberg.engine.slice_files import candidate_files, may_hold_rows
from floe_dagster_iceberg.errors import InvalidInputError, TableNotFoundError

__all__ = [
    "ReadRequest",
    "arrow_schema",
    "current_snapshot_id",
    "plan_files",
    "read_batches",
    "read_table",
    "snapshot_id_for",
    "snapshot_read",
]


@dataclass(frozen=True)
class ReadRequest:
    """What a read asks for: rows, columns, point in time (at most one of snapshot id, time,
    ref), a row limit and the Arrow type of strings.

    ``incremental`` reads only the rows appended after ``from_snapshot_id`` (``None``: since
    the first snapshot) up to the point in time.
    """

    row_filter: BooleanExpression | None = None
    columns: Sequence[str] | None = None
    snapshot_id: int | None = None
    as_of: datetime | None = None
    ref: str | None = None
    limit: int | None = None
    string_type: ArrowStringType = ArrowStringType.LARGE_STRING
    incremental: bool = False
    from_snapshot_id: int | None = None

    @property
    def filter(self) -> BooleanExpression:
        return self.row_filter if self.row_filter is not None else AlwaysTrue()


def read_table(table: Table, request: ReadRequest) -> pa.Table:
    """The rows ``request`` asks for, as one Arrow table with the table's schema."""
    snapshot = snapshot_read(table, request)
    projected = _projection(table, request, snapshot)
    target = arrow_schema(projected, request.string_type)
    if snapshot is None:
        return target.empty_table()
    tasks = _read_tasks(table, request, snapshot)
    scan = _arrow_scan(table, projected, request)
    batches = [_conform_batch(b, target) for b in scan.to_record_batches(tasks)]
    return pa.Table.from_batches(batches, schema=target)


def read_batches(table: Table, request: ReadRequest) -> pa.RecordBatchReader:
    """Like :func:`read_table`, streaming record batches: the table is never held whole."""
    snapshot = snapshot_read(table, request)
    projected = _projection(table, request, snapshot)
    target = arrow_schema(projected, request.string_type)
    if snapshot is None:
        return pa.RecordBatchReader.from_batches(target, iter(()))
    tasks = _read_tasks(table, request, snapshot)
    scan = _arrow_scan(table, projected, request)

    def batches() -> Iterator[pa.RecordBatch]:
        for batch in scan.to_record_batches(tasks):
            yield _conform_batch(batch, target)

    return pa.RecordBatchReader.from_batches(target, batches())


def plan_files(
    table: Table, row_filter: BooleanExpression, snapshot: Snapshot
) -> list[FileScanTask]:
    """The read tasks of ``snapshot``'s files that may hold rows of ``row_filter``."""
    summary = snapshot.summary
    if summary is not None and int(summary.get("total-delete-files") or 0) > 0:
        # Delete files must be matched to the data files they apply to: PyIceberg's planner
        # does that by sequence number and partition.
        scan = DataScan(
            table_metadata=table.metadata,
            io=table.io,
            row_filter=row_filter,
            snapshot_id=snapshot.snapshot_id,
        )
        return list(scan.plan_files())
    files = candidate_files(table.metadata, table.io, row_filter, snapshot, cached=True)
    return [FileScanTask(data_file) for data_file in files]


def _read_tasks(table: Table, request: ReadRequest, snapshot: Snapshot) -> list[FileScanTask]:
    if not request.incremental:
        return plan_files(table, request.filter, snapshot)
    added = appended_files(table, request.from_snapshot_id, snapshot.snapshot_id)
    may_hold = may_hold_rows(table.metadata, request.filter)
    return [FileScanTask(data_file) for data_file in added if may_hold(data_file)]


def arrow_schema(schema: Schema, string_type: ArrowStringType) -> pa.Schema:
    """The Arrow schema reads of ``schema`` return, whoever wrote the files.

    Example:
        >>> from pyiceberg.types import NestedField, StringType, ListType
        >>> schema = Schema(NestedField(1, "tags", ListType(2, StringType(), element_required=False)))
        >>> arrow_schema(schema, ArrowStringType.STRING).field("tags").type
        LargeListType(large_list<element: string>)
    """
    target = schema_to_pyarrow(schema, include_field_ids=False)
    if string_type is ArrowStringType.LARGE_STRING:
        return target
    return pa.schema([_with_small_strings(f) for f in target], metadata=target.metadata)


def _conform_batch(batch: pa.RecordBatch, target: pa.Schema) -> pa.RecordBatch:
    if batch.schema.equals(target):
        return batch
    return batch.cast(target)


def _with_small_strings(field: pa.Field) -> pa.Field:
    return field.with_type(_small_strings(field.type))


def _small_strings(data_type: pa.DataType) -> pa.DataType:
    if pa.types.is_large_string(data_type):
        return pa.string()
    if pa.types.is_large_binary(data_type):
        return pa.binary()
    if pa.types.is_struct(data_type):
        return pa.struct([_with_small_strings(f) for f in data_type])
    if pa.types.is_large_list(data_type):
        return pa.large_list(_with_small_strings(data_type.value_field))
    if pa.types.is_map(data_type):
        return pa.map_(
            _with_small_strings(data_type.key_field), _with_small_strings(data_type.item_field)
        )
    return data_type


def _arrow_scan(table: Table, projected: Schema, request: ReadRequest) -> ArrowScan:
    return ArrowScan(
        table_metadata=table.metadata,
        io=table.io,
        projected_schema=projected,
        row_filter=request.filter,
        limit=request.limit,
    )


def snapshot_read(table: Table, request: ReadRequest) -> Snapshot | None:
    """The snapshot read: the one asked for, else the current one (None: an empty table)."""
    name = ".".join(table.name())
    given = [x for x in (request.snapshot_id, request.as_of, request.ref) if x is not None]
    if len(given) > 1:
        raise InvalidInputError(f"Table '{name}': give at most one of snapshot_id, as_of and ref.")
    if not given:
        return table.current_snapshot()
    snapshot_id = request.snapshot_id
    if snapshot_id is None:
        snapshot_id = snapshot_id_for(table, as_of=request.as_of, ref=request.ref)
    snapshot = table.snapshot_by_id(snapshot_id)
    if snapshot is None:
        raise TableNotFoundError(
            f"Table '{name}' has no snapshot {snapshot_id} (it may have been expired)."
        )
    return snapshot


def _projection(table: Table, request: ReadRequest, snapshot: Snapshot | None) -> Schema:
    """The schema of the read: the snapshot's schema for time travel, narrowed to the columns."""
    schema = table.schema()
    time_travel = any(x is not None for x in (request.snapshot_id, request.as_of, request.ref))
    if time_travel and snapshot is not None and snapshot.schema_id is not None:
        schema = table.schemas().get(snapshot.schema_id, schema)
    if not request.columns:
        return schema
    known = set(schema.column_names)
    unknown = [c for c in request.columns if c not in known]
    if unknown:
        raise InvalidInputError(
            f"Table '{'.'.join(table.name())}' has no column(s) {unknown}; "
            f"columns are {sorted(known)}."
        )
    return schema.select(*request.columns)


def snapshot_id_for(loaded: Table, as_of: datetime | None = None, ref: str | None = None) -> int:
    """The snapshot current at ``as_of``, or the head of tag/branch ``ref``."""
    name = ".".join(loaded.name())
    if ref is not None:
        snapshot = loaded.snapshot_by_name(ref)
        if snapshot is None:
            raise TableNotFoundError(
                f"Table '{name}' has no tag or branch {ref!r}; existing refs: "
                f"{sorted(loaded.refs())}."
            )
        return snapshot.snapshot_id
    if as_of is None:
        return current_snapshot_id(loaded)
    snapshot = loaded.snapshot_as_of_timestamp(int(as_of.timestamp() * 1000))
    if snapshot is None:
        raise TableNotFoundError(
            f"Table '{name}' has no snapshot at or before {as_of.isoformat()}; "
            "its history starts later (see manager.snapshots())."
        )
    return snapshot.snapshot_id


def current_snapshot_id(table: Table) -> int:
    snapshot = table.current_snapshot()
    if snapshot is None:
        raise TableNotFoundError(f"Table '{'.'.join(table.name())}' has no snapshot yet.")
    return snapshot.snapshot_id
