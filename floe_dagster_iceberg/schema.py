"""Iceberg types and schemas: parsing, conversion from Arrow, and safe evolution plans.

Everything here is pure: it reads schemas and returns plans or converted data; the manager
applies plans inside its single commit.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.io.pyarrow import schema_to_pyarrow
from pyiceberg.schema import Schema
from pyiceberg.table.update.schema import UpdateSchema
from pyiceberg.types import (
    BinaryType,
    BooleanType,
    DateType,
    DecimalType,
    DoubleType,
    FixedType,
    FloatType,
    IcebergType,
    IntegerType,
    ListType,
    LongType,
    MapType,
    NestedField,
    PrimitiveType,
    StringType,
    StructType,
    TimestampType,
    TimestamptzType,
    TimeType,
    UUIDType,
)

from floe_dagster_iceberg.errors import InvalidInputError, SchemaEvolutionError
from floe_dagster_iceberg.models import (
    SchemaChange,
    SchemaChangeKind,
    SchemaUpdateMode,
    TableSchema,
)

__all__ = [
    "SchemaPlan",
    "apply_schema_changes",
    "arrow_to_iceberg_schema",
    "conform_to_schema",
    "iceberg_schema_from_columns",
    "parse_iceberg_type",
    "plan_schema_update",
    "type_to_string",
]

_PRIMITIVES: dict[str, IcebergType] = {
    "boolean": BooleanType(),
    "int": IntegerType(),
    "integer": IntegerType(),
    "long": LongType(),
    "float": FloatType(),
    "double": DoubleType(),
    "date": DateType(),
    "time": TimeType(),
    "timestamp": TimestampType(),
    "timestamptz": TimestamptzType(),
    "string": StringType(),
    "uuid": UUIDType(),
    "binary": BinaryType(),
}
_DECIMAL = re.compile(r"^decimal\(\s*(\d+)\s*,\s*(\d+)\s*\)$")
_FIXED = re.compile(r"^fixed\[\s*(\d+)\s*\]$")


class _FieldIds:
    """Hands out increasing field ids while a schema is being built."""

    def __init__(self, start: int = 0) -> None:
        self.last = start

    def next(self) -> int:
        self.last += 1
        return self.last


def _split_top_level(text: str, separator: str = ",") -> list[str]:
    parts, depth, current = [], 0, []
    for char in text:
        if char in "<(":
            depth += 1
        elif char in ">)":
            depth -= 1
        if char == separator and depth == 0:
            parts.append("".join(current).strip())
            current = []
        else:
            current.append(char)
    parts.append("".join(current).strip())
    return [part for part in parts if part]


def parse_iceberg_type(text: str, ids: _FieldIds | None = None) -> IcebergType:
    """Parse Iceberg type notation (``long``, ``decimal(10,2)``, ``list<string>``, ...).

    Example:
        >>> parse_iceberg_type("decimal(10, 2)")
        DecimalType(precision=10, scale=2)
    """
    ids = ids or _FieldIds()
    normalized = text.strip()
    lowered = normalized.lower()
    if lowered in _PRIMITIVES:
        return _PRIMITIVES[lowered]
    if match := _DECIMAL.match(lowered):
        precision, scale = int(match[1]), int(match[2])
        if not 0 < precision <= 38 or scale > precision:
            raise ValueError(
                f"type {text!r}: decimal precision must be 1..38 and scale <= precision"
            )
        return DecimalType(precision, scale)
    if match := _FIXED.match(lowered):
        return FixedType(int(match[1]))
    if lowered.startswith("list<") and lowered.endswith(">"):
        element_id = ids.next()
        return ListType(
            element_id, parse_iceberg_type(normalized[5:-1], ids), element_required=False
        )
    if lowered.startswith("map<") and lowered.endswith(">"):
        key_text, value_text = _split_top_level(normalized[4:-1])
        key_id, value_id = ids.next(), ids.next()
        return MapType(
            key_id,
            parse_iceberg_type(key_text, ids),
            value_id,
            parse_iceberg_type(value_text, ids),
            value_required=False,
        )
    if lowered.startswith("struct<") and lowered.endswith(">"):
        fields = []
        for member in _split_top_level(normalized[7:-1]):
            name, _, member_type = member.partition(":")
            if not member_type:
                raise ValueError(f"struct member {member!r} in {text!r} needs 'name: type'")
            fields.append(
                NestedField(
                    ids.next(), name.strip(), parse_iceberg_type(member_type, ids), required=False
                )
            )
        return StructType(*fields)
    raise ValueError(
        f"type {text!r} is not an Iceberg type; use boolean, int, long, float, double, "
        "decimal(P,S), date, time, timestamp, timestamptz, string, uuid, binary, fixed[N], "
        "list<T>, map<K, V> or struct<name: T, ...>"
    )


def type_to_string(iceberg_type: IcebergType) -> str:
    """Render a type in the notation :func:`parse_iceberg_type` reads.

    Example:
        >>> type_to_string(parse_iceberg_type("map<string, list<long>>"))
        'map<string, list<long>>'
    """
    if isinstance(iceberg_type, DecimalType):
        return f"decimal({iceberg_type.precision},{iceberg_type.scale})"
    if isinstance(iceberg_type, FixedType):
        return f"fixed[{len(iceberg_type)}]"
    if isinstance(iceberg_type, ListType):
        return f"list<{type_to_string(iceberg_type.element_type)}>"
    if isinstance(iceberg_type, MapType):
        return f"map<{type_to_string(iceberg_type.key_type)}, {type_to_string(iceberg_type.value_type)}>"
    if isinstance(iceberg_type, StructType):
        members = ", ".join(
            f"{f.name}: {type_to_string(f.field_type)}" for f in iceberg_type.fields
        )
        return f"struct<{members}>"
    return str(iceberg_type)


def iceberg_schema_from_columns(table_schema: TableSchema) -> Schema:
    """Build a PyIceberg schema (with field ids) from column specs."""
    ids = _FieldIds(len(table_schema.columns))
    fields = [
        NestedField(
            position,
            column.name,
            parse_iceberg_type(column.type, ids),
            required=column.required,
            doc=column.doc,
        )
        for position, column in enumerate(table_schema.columns, start=1)
    ]
    return Schema(*fields)


def _arrow_to_iceberg_type(arrow_type: pa.DataType, column: str, ids: _FieldIds) -> IcebergType:
    t = pa.types
    if pa.types.is_dictionary(arrow_type):
        return _arrow_to_iceberg_type(arrow_type.value_type, column, ids)
    if t.is_boolean(arrow_type):
        return BooleanType()
    if t.is_int8(arrow_type) or t.is_int16(arrow_type) or t.is_int32(arrow_type):
        return IntegerType()
    if t.is_uint8(arrow_type) or t.is_uint16(arrow_type):
        return IntegerType()
    if t.is_int64(arrow_type) or t.is_uint32(arrow_type):
        return LongType()
    if t.is_float16(arrow_type) or t.is_float32(arrow_type):
        return FloatType()
    if t.is_float64(arrow_type):
        return DoubleType()
    if t.is_decimal(arrow_type) and arrow_type.precision <= 38:
        return DecimalType(arrow_type.precision, arrow_type.scale)
    if t.is_date(arrow_type):
        return DateType()
    if t.is_time(arrow_type):
        return TimeType()
    if t.is_timestamp(arrow_type):
        return TimestamptzType() if arrow_type.tz else TimestampType()
    if t.is_string(arrow_type) or t.is_large_string(arrow_type) or t.is_string_view(arrow_type):
        return StringType()
    if t.is_fixed_size_binary(arrow_type):
        return FixedType(arrow_type.byte_width)
    if t.is_binary(arrow_type) or t.is_large_binary(arrow_type) or t.is_binary_view(arrow_type):
        return BinaryType()
    if isinstance(arrow_type, pa.ExtensionType) and arrow_type.extension_name == "arrow.uuid":
        return UUIDType()
    if t.is_list(arrow_type) or t.is_large_list(arrow_type) or t.is_fixed_size_list(arrow_type):
        element_id = ids.next()
        element = _arrow_to_iceberg_type(arrow_type.value_type, f"{column}.element", ids)
        return ListType(element_id, element, element_required=False)
    if t.is_map(arrow_type):
        key_id, value_id = ids.next(), ids.next()
        key = _arrow_to_iceberg_type(arrow_type.key_type, f"{column}.key", ids)
        value = _arrow_to_iceberg_type(arrow_type.item_type, f"{column}.value", ids)
        return MapType(key_id, key, value_id, value, value_required=False)
    if t.is_struct(arrow_type):
        members = [
            NestedField(
                ids.next(),
                member.name,
                _arrow_to_iceberg_type(member.type, f"{column}.{member.name}", ids),
                required=False,
            )
            for member in arrow_type
        ]
        return StructType(*members)
    hint = {
        "null": "the column holds only nulls and has no type: cast it, e.g. pa.array(values, pa.string())",
        "uint64": "cast it to int64 (Iceberg has no unsigned types)",
    }.get(str(arrow_type), "cast it to a type Iceberg supports (see the README's type table)")
    raise InvalidInputError(
        f"Column {column!r} has Arrow type {arrow_type}, which Iceberg cannot store; {hint}."
    )


def arrow_to_iceberg_schema(arrow_schema: pa.Schema, respect_nullability: bool = False) -> Schema:
    """Convert an Arrow schema to an Iceberg schema with fresh field ids.

    Columns are optional unless ``respect_nullability`` is set and the Arrow field is not nullable.

    Example:
        >>> import pyarrow as pa
        >>> arrow_to_iceberg_schema(pa.schema([("id", pa.int64())])).find_field("id").field_type
        LongType()
    """
    _check_names(list(arrow_schema), "")
    ids = _FieldIds(len(arrow_schema))
    fields = [
        NestedField(
            position,
            f.name,
            _arrow_to_iceberg_type(f.type, f.name, ids),
            required=respect_nullability and not f.nullable,
        )
        for position, f in enumerate(arrow_schema, start=1)
    ]
    try:
        return Schema(*fields)
    except ValueError as error:  # e.g. column 'a.b' next to a struct 'a' with a member 'b'
        raise InvalidInputError(
            f"The data's columns cannot form an Iceberg schema: {error}. Give every column and "
            "struct member a distinct name."
        ) from None


def _check_names(fields: list[pa.Field], parent: str) -> None:
    """Refuse empty and repeated column (or struct member) names, naming them."""
    where = f" of struct column {parent!r}" if parent else ""
    names = [f.name for f in fields]
    if "" in names:
        raise InvalidInputError(
            f"A column{where} has an empty name (position {names.index('') + 1}); Iceberg needs "
            "a name for every column: rename it."
        )
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise InvalidInputError(
            f"The column name(s) {repeated}{where} appear more than once; give each column one "
            "distinct name."
        )
    for f in fields:
        nested = f.type
        while pa.types.is_list(nested) or pa.types.is_large_list(nested):
            nested = nested.value_type
        if pa.types.is_map(nested):
            _check_names([nested.key_field, nested.item_field], f"{parent}{f.name}")
            nested = nested.item_type
        if pa.types.is_struct(nested):
            _check_names(list(nested), f"{parent}{f.name}.")


def _widening_allowed(current: IcebergType, wanted: IcebergType) -> bool:
    if current == wanted:
        return True
    if isinstance(current, IntegerType) and isinstance(wanted, LongType):
        return True
    if isinstance(current, FloatType) and isinstance(wanted, DoubleType):
        return True
    return (
        isinstance(current, DecimalType)
        and isinstance(wanted, DecimalType)
        and wanted.scale == current.scale
        and wanted.precision >= current.precision
    )


def _data_fits_column(data_type: IcebergType, column_type: IcebergType) -> bool:
    """True when values of ``data_type`` can be stored in a column of ``column_type`` as is."""
    if _widening_allowed(data_type, column_type):
        return True
    if isinstance(data_type, TimestampType | TimestamptzType) and isinstance(
        column_type, TimestampType | TimestamptzType
    ):
        return False
    # nested types: PyIceberg checks member compatibility itself
    return not isinstance(data_type, PrimitiveType) and type(data_type) is type(column_type)


@dataclass
class SchemaPlan:
    """The schema changes a write needs, in the order they are applied."""

    add: list[tuple[str, IcebergType]] = field(default_factory=list)
    widen: list[tuple[str, IcebergType]] = field(default_factory=list)
    drop: list[str] = field(default_factory=list)

    @property
    def is_empty(self) -> bool:
        return not (self.add or self.widen or self.drop)

    def describe(self) -> list[str]:
        return [
            *(f"add column {name} {type_to_string(t)}" for name, t in self.add),
            *(f"widen column {name} to {type_to_string(t)}" for name, t in self.widen),
            *(f"drop column {name}" for name in self.drop),
        ]

    def apply(self, update: UpdateSchema) -> None:
        for name, iceberg_type in self.add:
            update.add_column(name, iceberg_type)
        for name, iceberg_type in self.widen:
            update.update_column(name, field_type=iceberg_type)
        for name in self.drop:
            update.delete_column(name)


def plan_schema_update(
    table_name: str, table_schema: Schema, data_schema: pa.Schema, mode: SchemaUpdateMode
) -> SchemaPlan:
    """Compare the data's schema with the table's and plan the allowed changes.

    Raises :class:`SchemaEvolutionError` with a readable diff when the mode forbids a difference.
    """
    data_fields = arrow_to_iceberg_schema(data_schema)
    table_fields = {f.name: f for f in table_schema.fields}
    plan = SchemaPlan()
    incompatible: list[str] = []
    for data_field in data_fields.fields:
        current = table_fields.get(data_field.name)
        if current is None:
            plan.add.append((data_field.name, data_field.field_type))
        elif _data_fits_column(data_field.field_type, current.field_type):
            continue
        elif _widening_allowed(current.field_type, data_field.field_type):
            plan.widen.append((data_field.name, data_field.field_type))
        else:
            incompatible.append(
                f"column {data_field.name!r}: table has {type_to_string(current.field_type)}, "
                f"data has {type_to_string(data_field.field_type)}"
            )
    data_names = set(data_schema.names)
    missing = [name for name in table_fields if name not in data_names]
    missing_required = [name for name in missing if table_fields[name].required]
    if incompatible:
        raise SchemaEvolutionError(
            f"Table '{table_name}': the data's types cannot be stored without losing values: "
            + "; ".join(incompatible)
            + ". Cast the data to the table's types, or write to a new table."
        )
    if missing_required and mode is not SchemaUpdateMode.UPDATE:
        raise SchemaEvolutionError(
            f"Table '{table_name}': required column(s) {missing_required} are missing from the "
            "data; add them to the output."
        )
    if mode is SchemaUpdateMode.UPDATE:
        plan.drop.extend(missing)
    if mode is SchemaUpdateMode.ERROR and (not plan.is_empty or missing):
        diff = plan.describe() + [f"column {name} missing from the data" for name in missing]
        raise SchemaEvolutionError(
            f"Table '{table_name}': schema_update_mode='error' and the data's schema differs from "
            f"the table's: {'; '.join(diff)}. Align the output, or set schema_update_mode to "
            "'additive' (or 'update' to drop columns)."
        )
    return plan


def conform_to_schema(table_name: str, data: pa.Table, schema: Schema) -> pa.Table:
    """Reorder, cast and complete ``data`` so it matches ``schema`` exactly.

    Missing optional columns are filled with nulls; nulls in required columns are refused.
    """
    target = schema_to_pyarrow(schema, include_field_ids=False)
    columns = []
    for target_field, iceberg_field in zip(target, schema.fields, strict=True):
        if iceberg_field.name not in data.column_names:
            if iceberg_field.required:
                raise InvalidInputError(
                    f"Table '{table_name}': required column {iceberg_field.name!r} is missing "
                    "from the data; add it to the output."
                )
            columns.append(pa.nulls(len(data), target_field.type))
            continue
        column = data.column(iceberg_field.name)
        if iceberg_field.required and column.null_count:
            raise InvalidInputError(
                f"Table '{table_name}': required column {iceberg_field.name!r} has "
                f"{column.null_count} null value(s); fill them or make the column optional "
                "(SchemaChange.make_optional)."
            )
        columns.append(_cast_column(table_name, iceberg_field.name, column, target_field.type))
    return pa.Table.from_arrays(columns, schema=target)


def _cast_column(
    table_name: str, name: str, column: pa.ChunkedArray, target_type: pa.DataType
) -> pa.ChunkedArray:
    if column.type == target_type:
        return column
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    try:
        if pa.types.is_timestamp(column.type) and pa.types.is_timestamp(target_type):
            if column.type.unit == "ns":
                column = pc.cast(column, pa.timestamp("us", column.type.tz), safe=False)
            return column.cast(target_type)
        return column.cast(target_type)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
        raise InvalidInputError(
            f"Table '{table_name}': column {name!r} of type {column.type} cannot be converted "
            f"to the table's type {target_type}: {error}. Cast the data before returning it."
        ) from error


def _find_field(schema: Schema, name: str) -> NestedField | None:
    try:
        return schema.find_field(name, case_sensitive=True)
    except ValueError:
        return None


_WIDENING_HELP = (
    "allowed widenings are int -> long, float -> double and decimal(P,S) -> decimal(P2,S) "
    "with P2 >= P and the same scale"
)


def apply_schema_changes(
    table_name: str, schema: Schema, changes: Iterable[SchemaChange], update: UpdateSchema
) -> list[str]:
    """Check each explicit change against ``schema`` and stage it on ``update``.

    Refuses narrowing, incompatible types, required new columns and decimal scale changes.
    """
    applied = []
    names = {f.name for f in schema.fields}
    for change in changes:
        field_ = _find_field(schema, change.column)
        if change.kind is not SchemaChangeKind.ADD_COLUMN and field_ is None:
            raise SchemaEvolutionError(
                f"Table '{table_name}': column {change.column!r} does not exist; "
                f"existing columns are {sorted(names)}."
            )
        if change.kind is SchemaChangeKind.ADD_COLUMN:
            if change.column in names:
                raise SchemaEvolutionError(
                    f"Table '{table_name}': column {change.column!r} already exists; "
                    "rename it or widen its type instead."
                )
            if change.required:
                raise SchemaEvolutionError(
                    f"Table '{table_name}': a new column {change.column!r} cannot be required, "
                    "because existing rows have no value for it; add it as optional."
                )
            update.add_column(
                change.column, parse_iceberg_type(change.new_type or ""), doc=change.doc
            )
            names.add(change.column)
        elif change.kind is SchemaChangeKind.WIDEN_TYPE:
            wanted = parse_iceberg_type(change.new_type or "")
            if not _widening_allowed(field_.field_type, wanted):
                raise SchemaEvolutionError(
                    f"Table '{table_name}': column {change.column!r} cannot change from "
                    f"{type_to_string(field_.field_type)} to {type_to_string(wanted)}; "
                    f"{_WIDENING_HELP}."
                )
            update.update_column(change.column, field_type=wanted)
        elif change.kind is SchemaChangeKind.RENAME:
            if change.new_name in names:
                raise SchemaEvolutionError(
                    f"Table '{table_name}': cannot rename {change.column!r} to "
                    f"{change.new_name!r}: that column already exists."
                )
            update.rename_column(change.column, change.new_name or "")
            names.add(change.new_name or "")
        elif change.kind is SchemaChangeKind.MAKE_OPTIONAL:
            update.make_column_optional(change.column)
        elif change.kind is SchemaChangeKind.SET_DOC:
            update.update_column(change.column, doc=change.doc)
        applied.append(f"{change.kind.value} {change.column}")
    return applied
