"""Partition slices: the rows a Dagster run owns, as a PyIceberg and a Polars expression.

A slice is built from the asset's partitions definition, the run's partition keys and the
``partition_expr`` metadata naming the column of each dimension. Values are typed literals in
expressions: a partition key is never pasted into a string that something parses.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import reduce

import polars as pl
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
    Or,
)
from pyiceberg.types import (
    DateType,
    IcebergType,
    IntegerType,
    LongType,
    StringType,
    TimestampType,
    TimestamptzType,
)

from floe_dagster_iceberg.errors import InvalidInputError
from floe_dagster_iceberg.models import PartitionField, PartitionTransform

__all__ = ["PartitionSlice", "build_partition_slice", "parse_partition_spec_metadata"]

_TEMPORAL = (TimestampType, TimestamptzType, DateType)


@dataclass(frozen=True)
class PartitionSlice:
    """The rows of a run's partitions: one expression per engine, a description and a spec."""

    iceberg: BooleanExpression
    polars: pl.Expr
    description: str
    spec: tuple[PartitionField, ...]
    key_count: int = 1


@dataclass(frozen=True)
class _Condition:
    iceberg: BooleanExpression
    polars: pl.Expr
    text: str


def _all(conditions: Sequence[_Condition]) -> _Condition:
    if len(conditions) == 1:
        return conditions[0]
    return _Condition(
        reduce(And, (c.iceberg for c in conditions)),
        pl.all_horizontal([c.polars for c in conditions]),
        " and ".join(f"({c.text})" for c in conditions),
    )


def _any(conditions: Sequence[_Condition]) -> _Condition:
    if len(conditions) == 1:
        return conditions[0]
    return _Condition(
        reduce(Or, (c.iceberg for c in conditions)),
        pl.any_horizontal([c.polars for c in conditions]),
        " or ".join(f"({c.text})" for c in conditions),
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
            "a timestamp, timestamptz or date column."
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


def _key_condition(column: str, column_type: IcebergType, keys: Sequence[str]) -> _Condition:
    values = sorted(set(_typed_keys(column, column_type, keys)), key=str)
    literals = [v.isoformat() if isinstance(v, dt.date) else v for v in values]
    if len(values) == 1:
        return _Condition(
            EqualTo(column, literals[0]),
            pl.col(column) == pl.lit(values[0]),
            f"{column} == {values[0]!r}",
        )
    return _Condition(In(column, literals), pl.col(column).is_in(values), f"{column} in {values!r}")


def _dimension_condition(
    column: str, column_type: IcebergType, partitions_def: PartitionsDefinition, keys: Sequence[str]
) -> _Condition:
    if isinstance(partitions_def, TimeWindowPartitionsDefinition):
        return _time_condition(column, column_type, partitions_def, keys)
    return _key_condition(column, column_type, keys)


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
    if isinstance(partitions_def, MultiPartitionsDefinition):
        return _multi_slice(asset, partitions_def, partition_keys, partition_expr, column_types)
    if not isinstance(partition_expr, str) or not partition_expr:
        raise InvalidInputError(
            f"Asset {asset} is partitioned but has no partition_expr metadata naming the column "
            'that holds the partition; add metadata={"partition_expr": "<column>"}.'
        )
    column_type = _column_type(partition_expr, column_types, asset)
    condition = _dimension_condition(partition_expr, column_type, partitions_def, partition_keys)
    spec = (_derived_field(partition_expr, column_type, partitions_def),)
    return PartitionSlice(
        condition.iceberg, condition.polars, condition.text, spec, len(partition_keys)
    )


def _multi_slice(
    asset: str,
    partitions_def: MultiPartitionsDefinition,
    partition_keys: Sequence[str],
    partition_expr: str | Mapping[str, str] | None,
    column_types: Mapping[str, IcebergType],
) -> PartitionSlice:
    dimensions = {d.name: d.partitions_def for d in partitions_def.partitions_defs}
    if not isinstance(partition_expr, Mapping) or set(partition_expr) != set(dimensions):
        raise InvalidInputError(
            f"Asset {asset} is multi-partitioned over {sorted(dimensions)}; partition_expr must map "
            f'each dimension to its column, e.g. {{"{next(iter(dimensions))}": "<column>", ...}}.'
        )
    keys_by_dimension = [
        key.keys_by_dimension
        if isinstance(key, MultiPartitionKey)
        else partitions_def.get_partition_key_from_str(key).keys_by_dimension
        for key in partition_keys
    ]
    types = {dim: _column_type(col, column_types, asset) for dim, col in partition_expr.items()}
    values = {dim: sorted({k[dim] for k in keys_by_dimension}) for dim in dimensions}
    is_product = len(set(map(lambda k: tuple(sorted(k.items())), keys_by_dimension))) == len(
        list(itertools.product(*values.values()))
    )
    if is_product:
        condition = _all(
            [
                _dimension_condition(partition_expr[d], types[d], dimensions[d], values[d])
                for d in dimensions
            ]
        )
    else:
        condition = _any(
            [
                _all(
                    [
                        _dimension_condition(partition_expr[d], types[d], dimensions[d], [k[d]])
                        for d in dimensions
                    ]
                )
                for k in keys_by_dimension
            ]
        )
    spec = tuple(_derived_field(partition_expr[d], types[d], dimensions[d]) for d in dimensions)
    return PartitionSlice(
        condition.iceberg, condition.polars, condition.text, spec, len(partition_keys)
    )
