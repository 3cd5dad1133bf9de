"""Partition-scoped, vectorized upsert (merge on key columns), planned as one file change.

The merge works file by file and never reads the whole table:

1. The input is validated (join columns present and of the table's type, no null and no
   duplicate keys) before anything is read or written.
2. Files are planned with the run's scope (its partition slice) AND the key values of the input
   (``In`` for a few distinct values, else the min/max range of each join column), so partition
   pruning and column statistics leave out files that cannot hold any of the keys.
3. Each planned file is read on its own, its in-scope rows are hash-joined with the input on the
   join columns and the non-key columns of matched rows are compared null-safely and column by
   column (Arrow compute; Polars for nested types). Memory stays bounded by the planned files.
4. Only files holding a matched key whose values changed are rewritten (copy-on-write) without
   those rows; the changed and new rows are written with them. The plan is one file change (the
   rewritten files out, the new ones in) that the engine commits as one overwrite snapshot.

The plan remembers the live files under its scan filter: when a commit attempt is refused and
those files changed meanwhile (a concurrent commit added, deleted or rewrote files that could
hold one of the keys), the plan is made again against the fresh table, so two concurrent
upserts of overlapping keys end in one of their serial orders. Otherwise the written files are
reused and only the metadata is re-planned.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.expressions import (
    AlwaysTrue,
    And,
    BooleanExpression,
    GreaterThanOrEqual,
    In,
    LessThanOrEqual,
)
from pyiceberg.expressions.literals import DateLiteral, TimestampLiteral
from pyiceberg.io.pyarrow import ArrowScan, expression_to_pyarrow, schema_to_pyarrow
from pyiceberg.table import DataScan
from pyiceberg.types import (
    DateType,
    DecimalType,
    DoubleType,
    FixedType,
    FloatType,
    IntegerType,
    LongType,
    NestedField,
    PrimitiveType,
    StringType,
    TimestampType,
    TimestamptzType,
    TimeType,
    UUIDType,
)

from floe_dagster_iceberg.engine.change_capture import delete_mask, newer_versions
from floe_dagster_iceberg.engine.config import ChangeCapture
from floe_dagster_iceberg.engine.data_files import write_data_files
from floe_dagster_iceberg.engine.properties import target_file_size
from floe_dagster_iceberg.engine.schema_evolution import conform_to_schema
from floe_dagster_iceberg.engine.slice_files import live_paths
from floe_dagster_iceberg.engine.types import arrow_to_iceberg_schema
from floe_dagster_iceberg.errors import PartitionMismatchError, UpsertKeyError

if TYPE_CHECKING:
    from pyiceberg.io import FileIO
    from pyiceberg.manifest import DataFile
    from pyiceberg.schema import Schema
    from pyiceberg.table import FileScanTask
    from pyiceberg.table.metadata import TableMetadata
    from pyiceberg.types import IcebergType

__all__ = ["UpsertOutcome", "UpsertPlan", "plan_upsert", "validate_upsert_input"]

# Above this many distinct key values the scan uses min/max ranges instead of ``In``; PyIceberg's
# metrics evaluators stop looking at the values of larger ``In`` predicates anyway.
_IN_LIMIT = 200
# Tables of files to rewrite are kept from the first pass while they fit in this budget; beyond
# it they are read again when rewritten, so memory stays bounded by a few files.
_CACHE_BUDGET_BYTES = 256 * 1024 * 1024
_EXAMPLES = 5
_ROW = "__floe_row"
_SRC = "__floe_src"


@dataclass(frozen=True)
class UpsertOutcome:
    """What an upsert did (or, when staged but not yet committed, will do).

    ``rows_unchanged`` counts input rows whose key matched a row of the target that already held
    the same values (or every matched row when ``when_matched_update_all`` is off);
    ``files_rewritten`` counts existing data files replaced, ``files_scanned`` the data files read
    to find the keys, ``rows_removed`` the rows a change batch deleted (delete markers, and rows
    missing from a full sync).

    Example:
        >>> outcome = UpsertOutcome(rows_updated=2, rows_inserted=1, rows_unchanged=7, files_rewritten=1)
        >>> outcome.changed
        True
    """

    rows_updated: int
    rows_inserted: int
    rows_unchanged: int
    files_rewritten: int
    files_scanned: int = 0
    rows_removed: int = 0

    @property
    def changed(self) -> bool:
        """Whether the upsert writes anything."""
        return self.rows_updated > 0 or self.rows_inserted > 0 or self.rows_removed > 0


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


def validate_upsert_input(
    table_name: str, schema: Schema, data: pa.Table, join_cols: Sequence[str]
) -> None:
    """Refuse input that cannot be merged, before anything is read or written.

    Raises :class:`~floe_dagster_iceberg.errors.UpsertKeyError` when a join column is missing
    from the data or the table, has another type than in the table (a lossless widening such as
    int -> long is accepted), holds nulls, or when a key appears more than once in the data.

    Example:
        >>> import pyarrow as pa
        >>> from pyiceberg.schema import Schema
        >>> from pyiceberg.types import LongType, NestedField, StringType
        >>> schema = Schema(
        ...     NestedField(1, "id", LongType(), required=True),
        ...     NestedField(2, "name", StringType()),
        ... )
        >>> validate_upsert_input("crm.users", schema, pa.table({"id": [1, 2], "name": ["a", "b"]}), ["id"])
        >>> validate_upsert_input("crm.users", schema, pa.table({"id": [1, 1], "name": ["a", "b"]}), ["id"])
        Traceback (most recent call last):
        ...
        floe_dagster_iceberg.errors.UpsertKeyError: Table 'crm.users': the upsert input holds 1 duplicated key(s) on ['id'] (2 rows in all), e.g. (id=1) x2. Keep one row per key, e.g. deduplicate by the latest timestamp before returning the data.
    """
    keys = list(join_cols)
    if not keys:
        raise UpsertKeyError(
            f"Table '{table_name}': an upsert needs join columns, e.g. join_cols=['id']."
        )
    repeated = sorted({name for name in keys if keys.count(name) > 1})
    if repeated:
        raise UpsertKeyError(
            f"Table '{table_name}': join column(s) {repeated} are listed more than once; "
            "name each key column once."
        )
    missing_in_data = [name for name in keys if name not in data.column_names]
    if missing_in_data:
        raise UpsertKeyError(
            f"Table '{table_name}': join column(s) {missing_in_data} are missing from the data, "
            f"which has columns {data.column_names}; add them to the output or fix join_cols."
        )
    table_columns = [f.name for f in schema.fields]
    missing_in_table = [name for name in keys if name not in table_columns]
    if missing_in_table:
        raise UpsertKeyError(
            f"Table '{table_name}': join column(s) {missing_in_table} are not columns of the "
            f"table (it has {table_columns}); use existing columns as keys."
        )
    for name in keys:
        _check_key_type(table_name, name, schema.find_field(name), data.schema.field(name).type)

    null_counts = {name: data.column(name).null_count for name in keys}
    nulls = {name: count for name, count in null_counts.items() if count}
    if nulls:
        detail = ", ".join(f"{name!r}: {count}" for name, count in nulls.items())
        raise UpsertKeyError(
            f"Table '{table_name}': join columns hold null values ({detail} row(s)); a null key "
            "never matches. Drop or fill those rows before the upsert."
        )
    if data.num_rows < 2:
        return
    counts = (
        data.select(keys)
        .group_by(keys, use_threads=True)
        .aggregate([([], "count_all")])
        .filter(pc.field("count_all") > 1)
    )
    if counts.num_rows:
        total = pc.sum(counts.column("count_all")).as_py()
        examples = _describe_keys(
            counts.slice(0, _EXAMPLES), keys, counts.column("count_all").to_pylist()
        )
        raise UpsertKeyError(
            f"Table '{table_name}': the upsert input holds {counts.num_rows} duplicated key(s) on "
            f"{keys} ({total} rows in all), e.g. {examples}. Keep one row per key, e.g. "
            "deduplicate by the latest timestamp before returning the data."
        )


def _check_key_type(
    table_name: str, name: str, field_: NestedField, arrow_type: pa.DataType
) -> None:
    table_type = field_.field_type
    if not isinstance(table_type, PrimitiveType):
        raise UpsertKeyError(
            f"Table '{table_name}': join column {name!r} is of nested type {table_type}; keys must "
            "be primitive columns (numbers, strings, dates, timestamps, ...)."
        )
    try:
        data_type = (
            arrow_to_iceberg_schema(pa.schema([pa.field(name, arrow_type)])).fields[0].field_type
        )
    except Exception:  # an Arrow type Iceberg cannot store at all
        data_type = None
    if data_type is None or not _key_type_fits(data_type, table_type):
        shown = data_type if data_type is not None else arrow_type
        raise UpsertKeyError(
            f"Table '{table_name}': join column {name!r} is {shown} in the data but {table_type} "
            f"in the table; cast the column to {table_type} before the upsert."
        )


def _key_type_fits(data_type: IcebergType, table_type: IcebergType) -> bool:
    if data_type == table_type:
        return True
    if isinstance(table_type, LongType) and isinstance(data_type, IntegerType):
        return True
    if isinstance(table_type, DoubleType) and isinstance(data_type, FloatType):
        return True
    if isinstance(table_type, DecimalType) and isinstance(data_type, DecimalType):
        return data_type.scale == table_type.scale and data_type.precision <= table_type.precision
    return (
        isinstance(table_type, UUIDType)
        and isinstance(data_type, FixedType)
        and len(data_type) == 16
    )


def _describe_keys(keys_table: pa.Table, keys: Sequence[str], counts: Sequence[int] | None) -> str:
    rows = keys_table.select(list(keys)).to_pylist()
    parts = []
    for position, row in enumerate(rows):
        text = "(" + ", ".join(f"{k}={row[k]!r}" for k in keys) + ")"
        if counts is not None:
            text += f" x{counts[position]}"
        parts.append(text)
    return ", ".join(parts)


# --------------------------------------------------------------------------------------------
# Staging
# --------------------------------------------------------------------------------------------


@dataclass
class _FileMatch:
    task: FileScanTask
    target_rows: pa.Array  # int64 row positions in the file
    source_rows: pa.Array  # int64 row positions in the input
    changed: pa.Array  # bool, one per matched pair: the target row is replaced or deleted
    missing_rows: pa.Array | None = None  # int64 rows of the file missing from a full sync
    table: pa.Table | None = None  # kept from the first pass when the budget allows
    n_changed: int = 0

    def removed_rows(self) -> np.ndarray:
        rows = pc.filter(self.target_rows, self.changed).to_numpy(zero_copy_only=False)
        if self.missing_rows is not None and len(self.missing_rows):
            rows = np.concatenate([rows, self.missing_rows.to_numpy(zero_copy_only=False)])
        return rows


@dataclass
class _Plan:
    matches: list[_FileMatch] = field(default_factory=list)
    files_scanned: int = 0


@dataclass
class UpsertPlan:
    """An upsert's file change: files to remove, files already written, and what it read."""

    outcome: UpsertOutcome
    removed: list[DataFile] = field(default_factory=list)
    added: list[DataFile] = field(default_factory=list)
    conflict_filter: BooleanExpression = field(default_factory=AlwaysTrue)
    read_files: frozenset[str] = frozenset()

    def still_applies(self, metadata: TableMetadata, io: FileIO) -> bool:
        """Whether the files the plan read are still exactly the live ones under its filter."""
        return live_paths(metadata, io, self.conflict_filter) == self.read_files


def plan_upsert(
    metadata: TableMetadata,
    committed: TableMetadata,
    io: FileIO,
    data: pa.Table,
    *,
    table_name: str,
    join_cols: Sequence[str],
    when_matched_update_all: bool = True,
    when_not_matched_insert_all: bool = True,
    scope_filter: BooleanExpression = AlwaysTrue(),
    change_capture: ChangeCapture | None = None,
) -> UpsertPlan:
    """Plan a merge of ``data`` into the table on ``join_cols`` and write its new data files.

    ``metadata`` is the table as the write will commit it (after its schema evolution),
    ``committed`` the table as it is. Rows whose key matches an existing row inside
    ``scope_filter`` replace it when a non-key value differs (``when_matched_update_all``);
    other rows are inserted (``when_not_matched_insert_all``). ``change_capture`` adds deletes,
    versions and full syncs (:class:`~floe_dagster_iceberg.engine.config.ChangeCapture`).
    Unchanged rows are not rewritten, and when nothing changes nothing is written. Errors (bad keys, keys duplicated
    in the target, rows outside the scope) are raised before any file is written.

    Example:
        >>> import pyarrow as pa
        >>> from pyiceberg.catalog import load_catalog
        >>> import tempfile
        >>> warehouse = tempfile.mkdtemp()
        >>> catalog = load_catalog(
        ...     "doc", type="sql", uri=f"sqlite:///{warehouse}/catalog.db", warehouse=f"file://{warehouse}"
        ... )
        >>> catalog.create_namespace("crm")
        >>> table = catalog.create_table("crm.users", schema=pa.schema([("id", pa.int64()), ("name", pa.string())]))
        >>> table.append(pa.table({"id": [1, 2], "name": ["a", "b"]}))
        >>> plan = plan_upsert(
        ...     table.metadata, table.metadata, table.io, pa.table({"id": [2, 3], "name": ["B", "c"]}),
        ...     table_name="crm.users", join_cols=["id"],
        ... )
        >>> (plan.outcome.rows_updated, plan.outcome.rows_inserted, len(plan.removed))
        (1, 1, 1)
    """
    schema = metadata.schema()
    keys = list(join_cols)
    validate_upsert_input(table_name, schema, data, keys)
    _check_keys_predate_write(table_name, committed, keys)
    arrow_schema = schema_to_pyarrow(schema, include_field_ids=False)
    if not data.schema.equals(arrow_schema, check_metadata=False):
        data = conform_to_schema(table_name, data, schema)
    if data.num_rows == 0:
        return UpsertPlan(UpsertOutcome(0, 0, 0, 0))

    scope = scope_filter if scope_filter is not None else AlwaysTrue()
    scope_expr = None if isinstance(scope, AlwaysTrue) else _arrow_filter(schema, scope)
    if scope_expr is not None:
        _check_rows_in_scope(table_name, data, scope_expr, scope)

    cdc = change_capture or ChangeCapture()
    deletes = delete_mask(data, cdc)
    # A full sync must see every row of the scope, not only the files holding input keys.
    scan_filter = scope if cdc.delete_missing else _and(scope, _key_predicate(data, keys, schema))
    merge = _Merge(data, keys, deletes, cdc, compare=when_matched_update_all)
    plan = _match_files(metadata, io, merge, scan_filter, scope_expr)

    n = data.num_rows
    source_rows = (
        pa.concat_arrays([m.source_rows for m in plan.matches])
        if plan.matches
        else pa.array([], pa.int64())
    )
    _check_target_duplicates(table_name, data, keys, source_rows)

    matched = np.zeros(n, dtype=bool)
    matched[source_rows.to_numpy(zero_copy_only=False)] = True
    changed = np.zeros(n, dtype=bool)
    for m in plan.matches:
        if m.n_changed:
            rows = pc.filter(m.source_rows, m.changed).to_numpy(zero_copy_only=False)
            changed[rows] = True
    updated = changed & ~deletes
    n_matched = int(matched.sum())
    n_deleted = int((changed & deletes).sum())
    n_missing = sum(len(m.missing_rows) for m in plan.matches if m.missing_rows is not None)
    inserts = ~matched & ~deletes if when_not_matched_insert_all else np.zeros(n, dtype=bool)
    rewrite = [m for m in plan.matches if m.n_changed]
    outcome = UpsertOutcome(
        rows_updated=int(updated.sum()),
        rows_inserted=int(inserts.sum()),
        rows_unchanged=n_matched - int(updated.sum()) - n_deleted,
        files_rewritten=len(rewrite),
        files_scanned=plan.files_scanned,
        rows_removed=n_deleted + n_missing,
    )
    result = UpsertPlan(
        outcome, conflict_filter=scan_filter, read_files=live_paths(metadata, io, scan_filter)
    )
    if not outcome.changed:
        return result

    new_rows = data.filter(pa.array(updated | inserts))
    result.removed, result.added = _rewrite(metadata, io, arrow_schema, rewrite, new_rows)
    return result


def _check_keys_predate_write(
    table_name: str, committed: TableMetadata, keys: Sequence[str]
) -> None:
    """Refuse join columns that only the schema evolution of this very write adds.

    Existing rows would all hold null there, so nothing could match and every input row would
    be inserted next to the row it was meant to replace.
    """
    if committed.current_snapshot() is None:
        return
    known = {f.name for f in committed.schema().fields}
    added = [name for name in keys if name not in known]
    if added:
        raise UpsertKeyError(
            f"Table '{table_name}': join column(s) {added} are not columns of the table yet (the "
            f"data would add them), so no existing row could match; the table has "
            f"{sorted(known)}. Fix join_cols, or add the column and backfill it first."
        )


def _and(left: BooleanExpression, right: BooleanExpression) -> BooleanExpression:
    if isinstance(left, AlwaysTrue):
        return right
    if isinstance(right, AlwaysTrue):
        return left
    return And(left, right)


def _arrow_filter(schema: Schema, expression: BooleanExpression) -> pc.Expression:
    from pyiceberg.expressions.visitors import bind

    return expression_to_pyarrow(bind(schema, expression, case_sensitive=True), schema)


def _check_rows_in_scope(
    table_name: str, data: pa.Table, scope_expr: pc.Expression, scope: BooleanExpression
) -> None:
    inside = data.filter(scope_expr).num_rows
    if inside == data.num_rows:
        return
    indexed = data.append_column(_ROW, pa.array(np.arange(data.num_rows, dtype=np.int64)))
    inside_rows = indexed.filter(scope_expr).column(_ROW).to_numpy()
    outside = np.setdiff1d(np.arange(data.num_rows), inside_rows)
    examples = [int(i) for i in outside[:_EXAMPLES]]
    raise PartitionMismatchError(
        f"Table '{table_name}': {len(outside)} upsert row(s) fall outside the slice this run "
        f"owns ({scope}), e.g. rows at positions {examples}. Emit only rows of the run's "
        "partition(s), or upsert with scope='table'."
    )


def _key_predicate(data: pa.Table, keys: Sequence[str], schema: Schema) -> BooleanExpression:
    """A predicate true for every input key: few values as ``In``, else a min/max range.

    Types whose statistics do not prune well or cannot be compared safely (floats, booleans,
    binary) add no predicate; the join still decides which rows match.
    """
    predicate: BooleanExpression = AlwaysTrue()
    for name in keys:
        field_type = schema.find_field(name).field_type
        if not isinstance(
            field_type,
            IntegerType
            | LongType
            | StringType
            | DateType
            | TimestampType
            | TimestamptzType
            | DecimalType
            | TimeType,
        ):
            continue
        column = data.column(name)
        distinct = pc.unique(column)
        if len(distinct) <= _IN_LIMIT:
            values = [_literal_value(v, field_type) for v in distinct]
            predicate = _and(predicate, In(name, values))
        else:
            bounds = pc.min_max(column)
            low = _literal_value(bounds["min"], field_type)
            high = _literal_value(bounds["max"], field_type)
            predicate = _and(
                predicate, And(GreaterThanOrEqual(name, low), LessThanOrEqual(name, high))
            )
    return predicate


def _literal_value(scalar: pa.Scalar, field_type: IcebergType) -> Any:
    if isinstance(field_type, TimestampType | TimestamptzType):
        return TimestampLiteral(scalar.cast(pa.int64()).as_py())
    if isinstance(field_type, DateType):
        return DateLiteral(scalar.cast(pa.int32()).as_py())
    value = scalar.as_py()
    if isinstance(field_type, DecimalType) and not isinstance(value, Decimal):
        value = Decimal(value)
    return value


@dataclass
class _Merge:
    """The input side of a merge: its rows, keys, which rows delete, and how rows compare."""

    data: pa.Table
    keys: list[str]
    deletes: np.ndarray
    cdc: ChangeCapture
    compare: bool

    def replaced(self, table: pa.Table, target_rows: pa.Array, source_rows: pa.Array) -> np.ndarray:
        """Per matched pair, whether the change replaces or deletes the target row."""
        source = source_rows.to_numpy(zero_copy_only=False)
        newer = np.ones(len(source), dtype=bool)
        version = self.cdc.version_column
        if version is not None:
            newer = newer_versions(
                table.column(version).take(target_rows),
                self.data.column(version).take(source_rows),
            )
        deleting = self.deletes[source]
        value_cols = [c for c in self.data.column_names if c not in self.keys]
        if self.compare and value_cols:
            differs = _changed(table, self.data, value_cols, target_rows, source_rows)
            differs = differs.to_numpy(zero_copy_only=False).astype(bool)
        else:
            differs = np.zeros(len(source), dtype=bool)
        return newer & (deleting | differs)


def _match_files(
    metadata: TableMetadata,
    io: FileIO,
    merge: _Merge,
    scan_filter: BooleanExpression,
    scope_expr: pc.Expression | None,
) -> _Plan:
    """Read each planned file once and join its in-scope rows with the input on the keys."""
    plan = _Plan()
    if metadata.current_snapshot() is None:
        return plan
    schema = metadata.schema()
    data, keys = merge.data, merge.keys
    tasks = list(
        DataScan(
            table_metadata=metadata, io=io, row_filter=scan_filter, case_sensitive=True
        ).plan_files()
    )
    source_keys = _join_keys(data.select(keys)).append_column(
        _SRC, pa.array(np.arange(data.num_rows, dtype=np.int64))
    )
    cached_bytes = 0
    for task, table in _read_files(metadata, io, schema, tasks):
        plan.files_scanned += 1
        table = _align(table, data.schema)
        target = table.select(keys).append_column(
            _ROW, pa.array(np.arange(table.num_rows, dtype=np.int64))
        )
        if scope_expr is not None:
            in_scope = table.append_column(_ROW, target.column(_ROW)).filter(scope_expr)
            target = in_scope.select([*keys, _ROW])
        joined = _join_keys(target).join(
            source_keys, keys=keys, join_type="inner", use_threads=True
        )
        missing = _missing_rows(target, joined) if merge.cdc.delete_missing else None
        if joined.num_rows == 0 and (missing is None or len(missing) == 0):
            continue
        target_rows = joined.column(_ROW).combine_chunks()
        source_rows = joined.column(_SRC).combine_chunks()
        changed = pa.array(merge.replaced(table, target_rows, source_rows))
        n_changed = (pc.sum(changed).as_py() or 0) + (len(missing) if missing is not None else 0)
        match = _FileMatch(task, target_rows, source_rows, changed, missing, n_changed=n_changed)
        if n_changed and cached_bytes + table.nbytes <= _CACHE_BUDGET_BYTES:
            match.table = table
            cached_bytes += table.nbytes
        plan.matches.append(match)
    return plan


def _missing_rows(target: pa.Table, joined: pa.Table) -> pa.Array:
    """Rows of the file in scope whose key the input does not hold (a full sync deletes them)."""
    present = np.zeros(target.num_rows and int(pc.max(target.column(_ROW)).as_py()) + 1, bool)
    present[joined.column(_ROW).to_numpy()] = True
    in_scope = target.column(_ROW).to_numpy()
    return pa.array(in_scope[~present[in_scope]], pa.int64())


def _read_files(
    metadata: TableMetadata, io: FileIO, schema: Schema, tasks: Iterable[FileScanTask]
) -> Iterator[tuple[FileScanTask, pa.Table]]:
    scan = ArrowScan(
        table_metadata=metadata, io=io, projected_schema=schema, row_filter=AlwaysTrue()
    )
    for task in tasks:
        yield task, scan.to_table(tasks=[task])


def _align(table: pa.Table, arrow_schema: pa.Schema) -> pa.Table:
    if table.schema.equals(arrow_schema, check_metadata=False):
        return table
    return table.cast(arrow_schema)


def _join_keys(table: pa.Table) -> pa.Table:
    """Arrow's hash join cannot use extension types (uuid) as keys; join on their storage."""
    columns = []
    for column in table.columns:
        if isinstance(column.type, pa.ExtensionType):
            column = pa.chunked_array([c.storage for c in column.chunks], column.type.storage_type)
        columns.append(column)
    return pa.Table.from_arrays(columns, names=table.column_names)


def _changed(
    target: pa.Table,
    source: pa.Table,
    value_cols: Sequence[str],
    target_rows: pa.Array,
    source_rows: pa.Array,
) -> pa.Array:
    """Per matched pair, whether any non-key value differs (null equals null, NaN equals NaN)."""
    differs = None
    for name in value_cols:
        old = target.column(name).take(target_rows)
        new = source.column(name).take(source_rows)
        column_differs = pc.invert(_same(old, new))
        differs = column_differs if differs is None else pc.or_(differs, column_differs)
    assert differs is not None
    return differs.combine_chunks() if isinstance(differs, pa.ChunkedArray) else differs


def _same(old: pa.ChunkedArray, new: pa.ChunkedArray) -> pa.ChunkedArray | pa.Array:
    data_type = old.type
    if isinstance(data_type, pa.ExtensionType):
        old = pa.chunked_array([c.storage for c in old.chunks], data_type.storage_type)
        new = pa.chunked_array([c.storage for c in new.chunks], data_type.storage_type)
        data_type = data_type.storage_type
    if pa.types.is_nested(data_type):
        import polars as pl

        return pl.from_arrow(old).eq_missing(pl.from_arrow(new)).to_arrow()
    equal = pc.fill_null(pc.equal(old, new), False)
    both_null = pc.and_(pc.is_null(old), pc.is_null(new))
    same = pc.or_(equal, both_null)
    if pa.types.is_floating(data_type):
        both_nan = pc.fill_null(pc.and_(pc.is_nan(old), pc.is_nan(new)), False)
        same = pc.or_(same, both_nan)
    return same


def _check_target_duplicates(
    table_name: str, data: pa.Table, keys: Sequence[str], source_rows: pa.Array
) -> None:
    if len(source_rows) == 0:
        return
    counts = np.bincount(source_rows.to_numpy(zero_copy_only=False), minlength=data.num_rows)
    duplicated = np.flatnonzero(counts > 1)
    if len(duplicated) == 0:
        return
    examples = _describe_keys(
        data.take(pa.array(duplicated[:_EXAMPLES])), keys, counts[duplicated[:_EXAMPLES]].tolist()
    )
    raise UpsertKeyError(
        f"Table '{table_name}': the table already holds more than one row for "
        f"{len(duplicated)} key(s) of the upsert input on {list(keys)} "
        f"({int(counts[duplicated].sum())} rows in all), e.g. {examples}; an upsert cannot "
        "tell which to replace. Remove the duplicates from the table first (e.g. overwrite "
        "the partition with deduplicated data)."
    )


def _rewrite(
    metadata: TableMetadata,
    io: FileIO,
    arrow_schema: pa.Schema,
    rewrite: list[_FileMatch],
    new_rows: pa.Table,
) -> tuple[list[DataFile], list[DataFile]]:
    """Write the rewritten files' kept rows and the changed and new rows; return the files
    removed and the files added."""
    removed: list[DataFile] = []
    added: list[DataFile] = []
    pending: list[pa.Table] = []
    pending_bytes = 0
    target_size = target_file_size(metadata.properties)
    for match in rewrite:
        table = match.table
        if table is None:
            table = _align(
                next(_read_files(metadata, io, metadata.schema(), [match.task]))[1], arrow_schema
            )
        remove = np.zeros(table.num_rows, dtype=bool)
        remove[match.removed_rows()] = True
        kept = table.filter(pa.array(~remove))
        match.table = None
        removed.append(match.task.file)
        if kept.num_rows:
            pending.append(kept)
            pending_bytes += kept.nbytes
        if pending_bytes >= target_size:
            added += write_data_files(metadata, io, pa.concat_tables(pending))
            pending, pending_bytes = [], 0
    pending.append(new_rows)
    added += write_data_files(metadata, io, pa.concat_tables(pending))
    return removed, added
