"""Iceberg types: parsing and printing their notation, and converting Arrow schemas.

Example:
    >>> type_to_string(parse_iceberg_type("map<string, list<decimal(9,2)>>"))
    'map<string, list<decimal(9,2)>>'
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import pyarrow as pa
from pyiceberg.schema import Schema
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
    StringType,
    StructType,
    TimestampType,
    TimestamptzType,
    TimeType,
    UUIDType,
)

from floe_dagster_iceberg.engine.config import (
    TableSchema,
)
from floe_dagster_iceberg.errors import InvalidInputError

__all__ = [
    "arrow_to_iceberg_schema",
    "iceberg_schema_from_columns",
    "parse_iceberg_type",
    "spark_unreadable_columns",
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


def type_to_string(
    iceberg_type: IcebergType,
    *,
    list_word: str = "list",
    primitive_names: Mapping[type, str] | None = None,
) -> str:
    """Render a type in the notation :func:`parse_iceberg_type` reads, or in another dialect:
    ``list_word`` names lists, ``primitive_names`` renames primitive types.

    Example:
        >>> type_to_string(parse_iceberg_type("map<string, list<long>>"))
        'map<string, list<long>>'
        >>> type_to_string(parse_iceberg_type("list<long>"), list_word="array",
        ...                primitive_names={LongType: "bigint"})
        'array<bigint>'
    """
    names = primitive_names or {}

    def render(t: IcebergType) -> str:
        return type_to_string(t, list_word=list_word, primitive_names=names)

    if type(iceberg_type) in names:
        return names[type(iceberg_type)]
    if isinstance(iceberg_type, DecimalType):
        return f"decimal({iceberg_type.precision},{iceberg_type.scale})"
    if isinstance(iceberg_type, FixedType):
        return f"fixed[{len(iceberg_type)}]"
    if isinstance(iceberg_type, ListType):
        return f"{list_word}<{render(iceberg_type.element_type)}>"
    if isinstance(iceberg_type, MapType):
        return f"map<{render(iceberg_type.key_type)}, {render(iceberg_type.value_type)}>"
    if isinstance(iceberg_type, StructType):
        members = ", ".join(f"{f.name}: {render(f.field_type)}" for f in iceberg_type.fields)
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


def spark_unreadable_columns(schema: Schema) -> list[str]:
    """Column paths of ``schema`` Spark cannot read (Spark has no ``time`` type and refuses the
    whole table: "Spark does not support time fields").

    Example:
        >>> from pyiceberg.types import NestedField, StructType
        >>> schema = Schema(NestedField(1, "at", TimeType()), NestedField(
        ...     2, "shift", StructType(NestedField(3, "start", TimeType()))))
        >>> spark_unreadable_columns(schema)
        ['at', 'shift.start']
    """
    return sorted(
        name for name in schema.column_names if isinstance(schema.find_type(name), TimeType)
    )
