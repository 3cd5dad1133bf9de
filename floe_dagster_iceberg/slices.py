"""Partition slices: the rows a Dagster run owns, as a PyIceberg and a Polars expression.

A slice is built from the asset's partitions definition, the run's partition keys and the
``partition_expr`` metadata naming the column of each dimension. Values are typed literals in
expressions: a partition key is never pasted into a string that something parses.

Reading or counting a slice of many static or dynamic keys (a single-run backfill over
thousands of them) must not hand PyIceberg an ``In`` of thousands of literals: it binds the
expression again for every data file it plans, so the cost grows with keys x files. Scans get
:attr:`PartitionSlice.scan_filter` instead (a key range: a few literals), and the exact key set
is applied to the rows read (:meth:`PartitionSlice.keep`), or answered from the data files'
partition values (:func:`count_rows`).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import reduce
from typing import TYPE_CHECKING, Any

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
from dagster import (
    MultiPartitionKey,
    MultiPartitionsDefinition,
    PartitionsDefinition,
    TimeWindowPartitionsDefinition,
)
from pyiceberg.expressions import (
    And,
    BooleanExpression,
    EqualTo,
    GreaterThanOrEqual,
    In,
    LessThan,
    LessThanOrEqual,
    Or,
)
from pyiceberg.manifest import DataFileContent, ManifestContent
from pyiceberg.transforms import IdentityTransform
from pyiceberg.types import (
    DateType,
    IcebergType,
    IntegerType,
    LongType,
    StringType,
    TimestampType,
    TimestamptzType,
)

from floe_dagster_iceberg.engine.config import PartitionField, PartitionTransform
from floe_dagster_iceberg.engine.outages import connection_error
from floe_dagster_iceberg.errors import InvalidInputError

if TYPE_CHECKING:
    from pyiceberg.table import Table

    from floe_dagster_iceberg.engine.manager import IcebergTableManager

__all__ = [
    "PartitionSlice",
    "build_partition_slice",
    "check_partition_expr",
    "count_rows",
    "parse_partition_spec_metadata",
]

_TEMPORAL = (TimestampType, TimestamptzType, DateType)

FEW_KEYS = 32
"""Up to this many keys of a dimension go to scans as an ``In``; more become a key range."""
_KEYS_IN_TEXT = 10
"""Descriptions (log lines, run metadata) name at most this many keys or conditions."""


@dataclass(frozen=True)
class _KeySet:
    """Rows whose ``column`` holds one of ``values`` (typed Python values, sorted)."""

    column: str
    column_type: IcebergType
    values: tuple[Any, ...]


@dataclass(frozen=True)
class _KeyCombinations:
    """Rows whose ``columns`` hold one of the ``rows`` tuples (a multi-partition key set that
    is not the product of its dimensions' keys)."""

    key_sets: tuple[_KeySet, ...]  # the columns, their types and all values of each
    rows: tuple[tuple[Any, ...], ...]


@dataclass(frozen=True)
class PartitionSlice:
    """The rows of a run's partitions: one expression per engine, a description and a spec.

    ``iceberg`` and ``polars`` are exact (writes use them). ``scan_filter`` is what scans are
    given: the exact expression when it is small, else a superset made of key ranges, and
    then :meth:`keep` (or :meth:`keep_lazy`) selects exactly the slice's rows among those read.
    """

    iceberg: BooleanExpression
    polars: pl.Expr
    description: str
    spec: tuple[PartitionField, ...]
    key_count: int = 1
    scan_filter: BooleanExpression | None = None
    _key_sets: tuple[_KeySet, ...] = field(default=(), repr=False)
    _combinations: _KeyCombinations | None = field(default=None, repr=False)
    _exact_by_expression: bool = field(default=False, repr=False)
    _keys_only: bool = field(default=False, repr=False)  # no time-window dimension
    _every_key_set: tuple[_KeySet, ...] = field(default=(), repr=False)  # for counting
    _scan_polars: pl.Expr | None = field(default=None, repr=False)  # scan_filter for Polars

    @property
    def scan_is_exact(self) -> bool:
        """Whether :attr:`scan_filter` selects exactly the slice's rows (no :meth:`keep` needed)."""
        return not (self._key_sets or self._combinations or self._exact_by_expression)

    @property
    def filter_columns(self) -> tuple[str, ...]:
        """The columns :meth:`keep` needs in the rows it filters."""
        if self._exact_by_expression:
            return tuple(dict.fromkeys(self.polars.meta.root_names()))
        key_sets = self._combinations.key_sets if self._combinations else self._key_sets
        return tuple(dict.fromkeys(k.column for k in key_sets))

    def keep(self, data: pa.Table) -> pa.Table:
        """The rows of ``data`` inside the slice (``data`` was read with :attr:`scan_filter`).

        Example:
            >>> from dagster import StaticPartitionsDefinition
            >>> from pyiceberg.types import StringType
            >>> keys = [f"k{i:03d}" for i in range(100)]
            >>> s = build_partition_slice(
            ...     asset="events", partitions_def=StaticPartitionsDefinition(keys),
            ...     partition_keys=keys[:50], partition_expr="key", column_types={"key": StringType()},
            ... )
            >>> s.scan_filter
            And(left=GreaterThanOrEqual(term=Reference(name='key'), literal=literal('k000')), right=LessThanOrEqual(term=Reference(name='key'), literal=literal('k049')))
            >>> s.keep(pa.table({"key": ["k001", "k0015", "k049"]})).column("key").to_pylist()
            ['k001', 'k049']
        """
        if self.scan_is_exact or data.num_rows == 0:
            return data
        if self._exact_by_expression:
            names = list(self.filter_columns)
            mask = pl.from_arrow(data.select(names)).select(self.polars).to_series()
            return data.filter(mask.fill_null(False).to_arrow())
        if self._combinations is not None:
            return _semi_join(data, self._combinations)
        mask = None
        for key_set in self._key_sets:
            column = data.column(key_set.column)
            inside = pc.is_in(column, value_set=_value_array(key_set, column.type))
            mask = inside if mask is None else pc.and_(mask, inside)
        return data.filter(mask)

    def keep_batches(self, reader: pa.RecordBatchReader) -> pa.RecordBatchReader:
        """:meth:`keep` applied to each batch of a stream."""
        if self.scan_is_exact:
            return reader

        def batches() -> Iterator[pa.RecordBatch]:
            for batch in reader:
                yield from self.keep(pa.Table.from_batches([batch], reader.schema)).to_batches()

        return pa.RecordBatchReader.from_batches(reader.schema, batches())

    def keep_lazy(self, frame: pl.LazyFrame) -> pl.LazyFrame:
        """``frame`` (a lazy Iceberg scan) restricted to the slice's rows.

        The key range is a filter the scan can push down; the exact key set is a semi-join on
        the keys, which stays out of the scan's filter (no ``In`` of every key per file).
        """
        frame = frame.filter(self._scan_polars if self._scan_polars is not None else self.polars)
        if self._exact_by_expression:
            return frame.filter(self.polars)
        if self._combinations is not None:
            key_sets, rows = self._combinations.key_sets, self._combinations.rows
            keys = pl.LazyFrame(
                {k.column: [row[i] for row in rows] for i, k in enumerate(key_sets)}
            )
            return frame.join(_cast_keys(keys, frame), on=[k.column for k in key_sets], how="semi")
        for key_set in self._key_sets:
            keys = pl.LazyFrame({key_set.column: list(key_set.values)})
            frame = frame.join(_cast_keys(keys, frame), on=key_set.column, how="semi")
        return frame


@dataclass(frozen=True)
class _Condition:
    iceberg: BooleanExpression
    polars: pl.Expr
    text: str
    scan: BooleanExpression | None = None  # a cheaper superset for scans; None: ``iceberg``
    key_sets: tuple[_KeySet, ...] = ()  # what ``scan`` lets through that must be filtered out
    scan_polars: pl.Expr | None = None  # ``scan`` for Polars
    every_key_set: tuple[_KeySet, ...] = ()  # all key conditions ANDed here, small ones too

    @property
    def scan_filter(self) -> BooleanExpression:
        return self.scan if self.scan is not None else self.iceberg

    @property
    def scan_frame_filter(self) -> pl.Expr:
        return self.scan_polars if self.scan_polars is not None else self.polars


def _summary(parts: Sequence[str], separator: str) -> str:
    if len(parts) <= _KEYS_IN_TEXT:
        return separator.join(parts)
    shown = separator.join(parts[: _KEYS_IN_TEXT // 2])
    last = separator.join(parts[-(_KEYS_IN_TEXT // 2) :])
    return f"{shown}{separator}... ({len(parts)} in all) ...{separator}{last}"


def _all(conditions: Sequence[_Condition]) -> _Condition:
    if len(conditions) == 1:
        return conditions[0]
    exact = all(c.scan is None for c in conditions)
    return _Condition(
        reduce(And, (c.iceberg for c in conditions)),
        pl.all_horizontal([c.polars for c in conditions]),
        " and ".join(f"({c.text})" for c in conditions),
        None if exact else reduce(And, (c.scan_filter for c in conditions)),
        tuple(k for c in conditions for k in c.key_sets),
        None if exact else pl.all_horizontal([c.scan_frame_filter for c in conditions]),
        tuple(k for c in conditions for k in c.every_key_set),
    )


def _any(conditions: Sequence[_Condition]) -> _Condition:
    if len(conditions) == 1:
        return conditions[0]
    return _Condition(
        reduce(Or, (c.iceberg for c in conditions)),
        pl.any_horizontal([c.polars for c in conditions]),
        _summary([f"({c.text})" for c in conditions], " or "),
    )


def _bound(column: str, column_type: IcebergType, instant: dt.datetime) -> tuple[str, object]:
    """An iceberg literal string and a Python value for a window bound, in the column's type."""
    if isinstance(column_type, TimestamptzType):
        utc = instant.astimezone(dt.UTC)
        return utc.isoformat(), utc
    if isinstance(column_type, TimestampType):
        wall_clock = instant.replace(tzinfo=None)  # naive columns hold the partitions' wall clock
        return wall_clock.isoformat(), wall_clock
    if instant.time() != dt.time(0):
        raise InvalidInputError(
            f"Column {column!r} is a date, but the partition window starts at {instant.isoformat()}; "
            "use a timestamp column for hourly partitions."
        )
    return instant.date().isoformat(), instant.date()


def _window_condition(
    column: str, column_type: IcebergType, start: dt.datetime, end: dt.datetime
) -> _Condition:
    lower_literal, lower = _bound(column, column_type, start)
    upper_literal, upper = _bound(column, column_type, end)
    return _Condition(
        And(GreaterThanOrEqual(column, lower_literal), LessThan(column, upper_literal)),
        (pl.col(column) >= pl.lit(lower)) & (pl.col(column) < pl.lit(upper)),
        f"{column} >= {lower_literal} and {column} < {upper_literal}",
    )


def _time_condition(
    column: str,
    column_type: IcebergType,
    partitions_def: TimeWindowPartitionsDefinition,
    keys: Sequence[str],
) -> _Condition:
    if not isinstance(column_type, _TEMPORAL):
        raise InvalidInputError(
            f"partition_expr column {column!r} has type {column_type}; time-window partitions need "
            f"a timestamp, timestamptz or date column: return {column!r} as a date or timestamp "
            f"(e.g. Polars pl.col({column!r}).str.to_date(), PyArrow "
            f"pyarrow.compute.strptime(..., format='%Y-%m-%d', unit='us'))."
        )
    windows = sorted(partitions_def.time_window_for_partition_key(key) for key in keys)
    merged: list[list[dt.datetime]] = []
    for window in windows:
        if merged and merged[-1][1] >= window.start:
            merged[-1][1] = max(merged[-1][1], window.end)
        else:
            merged.append([window.start, window.end])
    return _any([_window_condition(column, column_type, start, end) for start, end in merged])


def _typed_keys(column: str, column_type: IcebergType, keys: Sequence[str]) -> list[object]:
    if isinstance(column_type, IntegerType | LongType):
        try:
            return [int(key) for key in keys]
        except ValueError:
            bad = [k for k in keys if not k.lstrip("-").isdigit()]
            raise InvalidInputError(
                f"Partition key(s) {bad[:5]} are not integers, but partition column {column!r} is "
                f"{column_type}; use integer keys or a string column."
            ) from None
    if isinstance(column_type, DateType):
        return [dt.date.fromisoformat(key) for key in keys]
    if isinstance(column_type, StringType):
        return list(keys)
    raise InvalidInputError(
        f"partition_expr column {column!r} has type {column_type}; static and dynamic partitions "
        "need a string, int, long or date column."
    )


def _literal(value: object) -> object:
    return value.isoformat() if isinstance(value, dt.date) else value


def _key_condition(column: str, column_type: IcebergType, keys: Sequence[str]) -> _Condition:
    values = sorted(set(_typed_keys(column, column_type, keys)), key=str)
    literals = [_literal(v) for v in values]
    ordered = sorted(values)  # natural order (ints numerically) for the range
    key_set = (_KeySet(column, column_type, tuple(ordered)),)
    if len(values) == 1:
        return _Condition(
            EqualTo(column, literals[0]),
            pl.col(column) == pl.lit(values[0]),
            f"{column} == {values[0]!r}",
            every_key_set=key_set,
        )
    text = f"{column} in {values!r}"
    if len(values) <= FEW_KEYS:
        return _Condition(
            In(column, literals), pl.col(column).is_in(values), text, every_key_set=key_set
        )
    return _Condition(
        In(column, literals),
        pl.col(column).is_in(values),
        f"{column} in {len(values)} values ({ordered[0]!r} ... {ordered[-1]!r})",
        And(
            GreaterThanOrEqual(column, _literal(ordered[0])),
            LessThanOrEqual(column, _literal(ordered[-1])),
        ),
        key_set,
        (pl.col(column) >= pl.lit(ordered[0])) & (pl.col(column) <= pl.lit(ordered[-1])),
        key_set,
    )


def _dimension_condition(
    asset: str,
    column: str,
    column_type: IcebergType,
    partitions_def: PartitionsDefinition,
    keys: Sequence[str],
) -> _Condition:
    """The rows of ``keys`` of one dimension; an error names the asset."""
    try:
        if isinstance(partitions_def, TimeWindowPartitionsDefinition):
            return _time_condition(column, column_type, partitions_def, keys)
        return _key_condition(column, column_type, keys)
    except InvalidInputError as error:
        raise InvalidInputError(f"Asset {asset}: {error}") from None


def _granularity(
    partitions_def: TimeWindowPartitionsDefinition, column_type: IcebergType
) -> PartitionTransform:
    first = partitions_def.get_first_partition_window()
    length = (first.end - first.start) if first else dt.timedelta(days=1)
    if length < dt.timedelta(days=1) and not isinstance(column_type, DateType):
        return PartitionTransform.HOUR
    if length < dt.timedelta(days=28):
        return PartitionTransform.DAY
    if length < dt.timedelta(days=365):
        return PartitionTransform.MONTH
    return PartitionTransform.YEAR


def _derived_field(
    column: str, column_type: IcebergType, partitions_def: PartitionsDefinition
) -> PartitionField:
    if isinstance(partitions_def, TimeWindowPartitionsDefinition):
        return PartitionField(
            source_column=column, transform=_granularity(partitions_def, column_type)
        )
    return PartitionField(source_column=column, transform=PartitionTransform.IDENTITY)


def _column_type(column: str, column_types: Mapping[str, IcebergType], asset: str) -> IcebergType:
    if column not in column_types:
        raise InvalidInputError(
            f"Asset {asset}: partition_expr names column {column!r}, which is not in the data or "
            f"table (columns: {sorted(column_types)}); fix partition_expr."
        )
    return column_types[column]


def parse_partition_spec_metadata(value: object, asset: str) -> tuple[PartitionField, ...]:
    """Read ``partition_spec`` metadata: ``{"ts": "day", "user_id": "bucket[16]"}``.

    Example:
        >>> parse_partition_spec_metadata({"ts": "day"}, "events")[0].transform
        <PartitionTransform.DAY: 'day'>
    """
    if not isinstance(value, Mapping):
        raise InvalidInputError(
            f"Asset {asset}: partition_spec metadata must be a mapping of column to transform, "
            'e.g. {"ts": "day", "user_id": "bucket[16]"}.'
        )
    try:
        return tuple(
            PartitionField(source_column=str(c), transform=str(t)) for c, t in value.items()
        )
    except ValueError as error:
        raise InvalidInputError(
            f"Asset {asset}: invalid partition_spec metadata: {error}"
        ) from None


def check_partition_expr(
    asset: str, partitions_def: PartitionsDefinition, partition_expr: object
) -> None:
    """Refuse a ``partition_expr`` that cannot name the column of every partition dimension:
    a column name for one dimension, a mapping of each dimension to its column for
    multi-partitions. Columns themselves are checked against the data when it is written.

    Example:
        >>> from dagster import DailyPartitionsDefinition
        >>> check_partition_expr("events", DailyPartitionsDefinition("2024-01-01"), None)
        Traceback (most recent call last):
        ...
        floe_dagster_iceberg.errors.InvalidInputError: Asset events is partitioned but has no partition_expr metadata naming the column that holds the partition; add metadata={"partition_expr": "<column>"}.
    """
    if isinstance(partitions_def, MultiPartitionsDefinition):
        dimensions = [d.name for d in partitions_def.partitions_defs]
        if not isinstance(partition_expr, Mapping) or set(partition_expr) != set(dimensions):
            example = ", ".join(f'"{d}": "<column>"' for d in dimensions)
            raise InvalidInputError(
                f"Asset {asset} is multi-partitioned over {sorted(dimensions)}, but partition_expr "
                f"is {partition_expr!r}; map each dimension to its column: "
                f'metadata={{"partition_expr": {{{example}}}}}.'
            )
        return
    if not isinstance(partition_expr, str) or not partition_expr:
        got = "" if partition_expr is None else f" (got {partition_expr!r})"
        raise InvalidInputError(
            f"Asset {asset} is partitioned but has no partition_expr metadata naming the column "
            f'that holds the partition{got}; add metadata={{"partition_expr": "<column>"}}.'
        )


def build_partition_slice(
    *,
    asset: str,
    partitions_def: PartitionsDefinition,
    partition_keys: Sequence[str],
    partition_expr: str | Mapping[str, str] | None,
    column_types: Mapping[str, IcebergType],
) -> PartitionSlice:
    """The slice of the table that the given partition keys own.

    Example:
        >>> from dagster import StaticPartitionsDefinition
        >>> from pyiceberg.types import StringType
        >>> s = build_partition_slice(
        ...     asset="customers", partitions_def=StaticPartitionsDefinition(["eu", "us"]),
        ...     partition_keys=["eu"], partition_expr="region", column_types={"region": StringType()},
        ... )
        >>> s.description
        "region == 'eu'"
    """
    if not partition_keys:
        raise InvalidInputError(f"Asset {asset}: the run has no partition keys to write.")
    check_partition_expr(asset, partitions_def, partition_expr)
    if isinstance(partitions_def, MultiPartitionsDefinition):
        return _multi_slice(asset, partitions_def, partition_keys, partition_expr, column_types)
    assert isinstance(partition_expr, str)
    column_type = _column_type(partition_expr, column_types, asset)
    condition = _dimension_condition(
        asset, partition_expr, column_type, partitions_def, partition_keys
    )
    spec = (_derived_field(partition_expr, column_type, partitions_def),)
    keys_only = not isinstance(partitions_def, TimeWindowPartitionsDefinition)
    return _slice(condition, spec, len(partition_keys), keys_only=keys_only)


def _slice(
    condition: _Condition, spec: tuple[PartitionField, ...], key_count: int, *, keys_only: bool
) -> PartitionSlice:
    return PartitionSlice(
        condition.iceberg,
        condition.polars,
        condition.text,
        spec,
        key_count,
        scan_filter=condition.scan_filter,
        _key_sets=condition.key_sets,
        _keys_only=keys_only,
        _scan_polars=condition.scan_frame_filter,
        _every_key_set=condition.every_key_set,
    )


def _multi_slice(
    asset: str,
    partitions_def: MultiPartitionsDefinition,
    partition_keys: Sequence[str],
    partition_expr: str | Mapping[str, str] | None,
    column_types: Mapping[str, IcebergType],
) -> PartitionSlice:
    dimensions = {d.name: d.partitions_def for d in partitions_def.partitions_defs}
    assert isinstance(partition_expr, Mapping)
    keys_by_dimension = [
        key.keys_by_dimension
        if isinstance(key, MultiPartitionKey)
        else partitions_def.get_partition_key_from_str(key).keys_by_dimension
        for key in partition_keys
    ]
    types = {dim: _column_type(col, column_types, asset) for dim, col in partition_expr.items()}
    values = {dim: sorted({k[dim] for k in keys_by_dimension}) for dim in dimensions}
    distinct = set(map(lambda k: tuple(sorted(k.items())), keys_by_dimension))
    is_product = len(distinct) == math.prod(len(v) for v in values.values())
    spec = tuple(_derived_field(partition_expr[d], types[d], dimensions[d]) for d in dimensions)
    keys_only = not any(isinstance(d, TimeWindowPartitionsDefinition) for d in dimensions.values())
    each_dimension = _all(
        [
            _dimension_condition(asset, partition_expr[d], types[d], dimensions[d], values[d])
            for d in dimensions
        ]
    )
    if is_product:
        return _slice(each_dimension, spec, len(partition_keys), keys_only=keys_only)
    condition = _any(
        [
            _all(
                [
                    _dimension_condition(asset, partition_expr[d], types[d], dimensions[d], [k[d]])
                    for d in dimensions
                ]
            )
            for k in keys_by_dimension
        ]
    )
    if len(distinct) <= FEW_KEYS:
        return _slice(condition, spec, len(partition_keys), keys_only=keys_only)
    # Many key combinations: scans get every dimension's own keys (a superset), and the rows
    # read are matched against the combinations.
    combinations = None
    if keys_only:
        key_sets = tuple(
            _KeySet(
                partition_expr[d],
                types[d],
                tuple(sorted(set(_typed_keys(partition_expr[d], types[d], values[d])))),
            )
            for d in dimensions
        )
        rows = tuple(
            tuple(_typed_keys(partition_expr[d], types[d], [k[d]])[0] for d in dimensions)
            for k in keys_by_dimension
        )
        combinations = _KeyCombinations(key_sets, rows)
    return PartitionSlice(
        condition.iceberg,
        condition.polars,
        condition.text,
        spec,
        len(partition_keys),
        scan_filter=each_dimension.scan_filter,
        _combinations=combinations,
        _exact_by_expression=combinations is None,
        _keys_only=keys_only,
        _scan_polars=each_dimension.scan_frame_filter,
    )


# ---------------------------------------------------------------------- rows of a slice


def _value_array(key_set: _KeySet, arrow_type: pa.DataType) -> pa.Array:
    """The key set's values as an Arrow array of ``arrow_type`` (the column's type)."""
    if pa.types.is_dictionary(arrow_type):
        arrow_type = arrow_type.value_type
    return pa.array(list(key_set.values)).cast(arrow_type)


def _semi_join(data: pa.Table, combinations: _KeyCombinations) -> pa.Table:
    """The rows of ``data`` whose key columns hold one of the combinations."""
    columns = [k.column for k in combinations.key_sets]
    keys = pa.table(
        {
            k.column: _value_array(
                _KeySet(k.column, k.column_type, tuple(row[i] for row in combinations.rows)),
                data.schema.field(k.column).type,
            )
            for i, k in enumerate(combinations.key_sets)
        }
    )
    position = "__floe_row__"
    numbered = data.select(columns).append_column(position, pa.array(range(data.num_rows)))
    matched = numbered.join(keys, keys=columns, join_type="left semi").column(position)
    return data.take(pc.take(matched, pc.sort_indices(matched)))  # in their original order


def _cast_keys(keys: pl.LazyFrame, frame: pl.LazyFrame) -> pl.LazyFrame:
    """``keys`` with the dtypes the scanned ``frame`` has for the same columns."""
    schema = frame.collect_schema()
    return keys.with_columns(pl.col(name).cast(schema[name]) for name in keys.collect_schema())


def _partition_values(key_set: _KeySet) -> frozenset[Any]:
    """The key set's values as identity partition values (dates are also days since epoch)."""
    values: set[Any] = set(key_set.values)
    if isinstance(key_set.column_type, DateType):
        values |= {(v - dt.date(1970, 1, 1)).days for v in key_set.values}
    return frozenset(values)


def _count_from_partition_values(table: Table, partition_slice: PartitionSlice) -> int | None:
    """The slice's rows summed from its data files' record counts, or ``None`` when the
    partition values cannot tell (no identity field on a key column, delete files)."""
    if not partition_slice._keys_only or partition_slice._exact_by_expression:
        return None
    combinations = partition_slice._combinations
    key_sets = combinations.key_sets if combinations else partition_slice._every_key_set
    if not key_sets:
        return None
    snapshot = table.current_snapshot()
    if snapshot is None:
        return 0
    summary = snapshot.summary.additional_properties if snapshot.summary else {}
    if int(summary.get("total-delete-files", "0") or 0):
        return None
    schema = table.schema()
    source_ids = {k.column: schema.find_field(k.column).field_id for k in key_sets}
    positions: dict[int, list[int] | None] = {}
    for spec_id, spec in table.specs().items():
        identity = {
            f.source_id: i
            for i, f in enumerate(spec.fields)
            if isinstance(f.transform, IdentityTransform)
        }
        found = [identity.get(source_ids[k.column]) for k in key_sets]
        positions[spec_id] = None if None in found else found
    if combinations:
        wanted = {
            tuple(
                (row[i] - dt.date(1970, 1, 1)).days if isinstance(row[i], dt.date) else row[i]
                for i in range(len(key_sets))
            )
            for row in combinations.rows
        } | set(combinations.rows)

        def inside(values: tuple[Any, ...]) -> bool:
            return values in wanted
    else:
        allowed = [_partition_values(k) for k in key_sets]

        def inside(values: tuple[Any, ...]) -> bool:
            return all(v in a for v, a in zip(values, allowed, strict=True))

    total = 0
    for manifest in snapshot.manifests(table.io):
        where = positions.get(manifest.partition_spec_id)
        if manifest.content != ManifestContent.DATA or where is None:
            return None
        for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=True):
            data_file = entry.data_file
            if data_file.content != DataFileContent.DATA:
                return None
            if inside(tuple(data_file.partition[i] for i in where)):
                total += data_file.record_count
    return total


def count_rows(manager: IcebergTableManager, table: Table, partition_slice: PartitionSlice) -> int:
    """Rows of the slice in the table's current snapshot.

    A slice whose scan filter is exact is counted by the manager (from file metadata when the
    slice is aligned with the partitioning). A slice of many keys is answered from the data
    files' identity partition values (summing their record counts: cost grows with the
    files, not with keys x files); when the partitioning cannot tell (no identity field on a
    key column, delete files), the key columns are read within the key range and the rows in
    the key set counted.
    """
    if partition_slice.scan_is_exact:
        return manager.count(table, partition_slice.scan_filter)
    try:
        counted = _count_from_partition_values(table, partition_slice)
    except Exception as error:
        properties = dict(getattr(manager.catalog, "properties", {}) or {})
        translated = connection_error(
            error, properties, f"counting rows of table '{'.'.join(table.name())}'"
        )
        if translated is not None:
            raise translated from None
        raise
    if counted is not None:
        return counted
    rows = manager.scan(table, partition_slice.scan_filter, list(partition_slice.filter_columns))
    return partition_slice.keep(rows).num_rows
