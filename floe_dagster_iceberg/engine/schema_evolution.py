"""Safe schema evolution: one comparison of the data with the table at every depth, a plan of
the changes the write's mode allows, and the data conformed to the table without changing a
value.

Everything here is pure: it reads schemas and returns plans or converted data; the engine
applies plans inside the write's single commit.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.io.pyarrow import schema_to_pyarrow
from pyiceberg.schema import Schema
from pyiceberg.table.update.schema import UpdateSchema
from pyiceberg.types import (
    DecimalType,
    DoubleType,
    FloatType,
    IcebergType,
    IntegerType,
    ListType,
    LongType,
    MapType,
    NestedField,
    PrimitiveType,
    StructType,
)

from floe_dagster_iceberg.engine.config import (
    SchemaChange,
    SchemaChangeKind,
    SchemaUpdateMode,
)
from floe_dagster_iceberg.engine.types import (
    arrow_to_iceberg_schema,
    parse_iceberg_type,
    type_to_string,
)
from floe_dagster_iceberg.errors import InvalidInputError, SchemaEvolutionError

__all__ = [
    "ColumnPath",
    "SchemaPlan",
    "apply_schema_changes",
    "conform_to_schema",
    "plan_schema_update",
]


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


# ---------------------------------------------------------------------- nested comparison

ColumnPath = tuple[str, ...]
"""A column's path from the table root: struct member names, ``element`` for a list's
elements, ``key`` and ``value`` for a map's (``("payload", "items", "element", "price")``)."""


def _dotted(path: ColumnPath) -> str:
    return ".".join(path)


@dataclass
class _Differences:
    """How the data's schema differs from the table's, found at every depth."""

    add: list[tuple[ColumnPath, IcebergType]] = field(default_factory=list)
    widen: list[tuple[ColumnPath, IcebergType]] = field(default_factory=list)
    missing: list[tuple[ColumnPath, bool]] = field(default_factory=list)  # (path, required)
    incompatible: list[str] = field(default_factory=list)


def _compare_fields(
    path: ColumnPath,
    table_fields: Iterable[NestedField],
    data_fields: Iterable[NestedField],
    found: _Differences,
    in_key: bool = False,
) -> None:
    """Compare the columns (or struct members) of the table with the data's, by name."""
    table_by_name = {f.name: f for f in table_fields}
    data_by_name = {f.name: f for f in data_fields}
    for name, data_field in data_by_name.items():
        member = (*path, name)
        current = table_by_name.get(name)
        if current is not None:
            _compare_types(member, current.field_type, data_field.field_type, found, in_key)
        elif in_key:
            found.incompatible.append(
                f"column {_dotted(member)!r} is new in a map key, and map keys cannot change"
            )
        else:
            found.add.append((member, data_field.field_type))
    for name, table_field in table_by_name.items():
        if name in data_by_name:
            continue
        if in_key:
            found.incompatible.append(
                f"column {_dotted((*path, name))!r} of a map key is missing from the data, and "
                "map keys cannot change"
            )
        else:
            found.missing.append(((*path, name), table_field.required))


def _compare_types(
    path: ColumnPath,
    current: IcebergType,
    data: IcebergType,
    found: _Differences,
    in_key: bool = False,
) -> None:
    """Apply the same rules to a column and to every member, element, key and value inside it."""
    if isinstance(current, StructType) and isinstance(data, StructType):
        _compare_fields(path, current.fields, data.fields, found, in_key)
    elif isinstance(current, ListType) and isinstance(data, ListType):
        _compare_types((*path, "element"), current.element_type, data.element_type, found, in_key)
    elif isinstance(current, MapType) and isinstance(data, MapType):
        _compare_types((*path, "key"), current.key_type, data.key_type, found, in_key=True)
        _compare_types((*path, "value"), current.value_type, data.value_type, found, in_key)
    elif isinstance(current, PrimitiveType) and isinstance(data, PrimitiveType):
        if _widening_allowed(data, current):
            return  # the column's type holds every value of the data's (equal, or wider)
        if not in_key and _widening_allowed(current, data):
            found.widen.append((path, data))
            return
        found.incompatible.append(
            f"column {_dotted(path)!r}: table has {type_to_string(current)}, data has "
            f"{type_to_string(data)}" + (" (map keys cannot change type)" if in_key else "")
        )
    else:
        found.incompatible.append(
            f"column {_dotted(path)!r}: table has {type_to_string(current)}, data has "
            f"{type_to_string(data)}"
        )


def _differences(table_schema: Schema, data_schema: pa.Schema) -> _Differences:
    found = _Differences()
    _compare_fields((), table_schema.fields, arrow_to_iceberg_schema(data_schema).fields, found)
    return found


_INCOMPATIBLE_HELP = (
    "Cast the data to the table's types (a column may only widen: int -> long, "
    "float -> double, decimal(P,S) -> decimal(P2,S) with P2 >= P), or write to a new table"
)


@dataclass
class SchemaPlan:
    """The schema changes a write needs, in the order they are applied.

    Paths name nested columns from the root (see :data:`ColumnPath`); a new struct member is
    added where it belongs, as an optional column.
    """

    add: list[tuple[ColumnPath, IcebergType]] = field(default_factory=list)
    widen: list[tuple[ColumnPath, IcebergType]] = field(default_factory=list)
    drop: list[ColumnPath] = field(default_factory=list)

    @property
    def is_empty(self) -> bool:
        return not (self.add or self.widen or self.drop)

    def describe(self) -> list[str]:
        return [
            *(f"add column {_dotted(path)} {type_to_string(t)}" for path, t in self.add),
            *(f"widen column {_dotted(path)} to {type_to_string(t)}" for path, t in self.widen),
            *(f"drop column {_dotted(path)}" for path in self.drop),
        ]

    def apply(self, update: UpdateSchema) -> None:
        # Tuple paths: PyIceberg reads a dotted string as one (ambiguous) name.
        for path, iceberg_type in self.add:
            update.add_column(path, iceberg_type)
        for path, iceberg_type in self.widen:
            update.update_column(path, field_type=iceberg_type)
        for path in self.drop:
            update.delete_column(path)


def plan_schema_update(
    table_name: str, table_schema: Schema, data_schema: pa.Schema, mode: SchemaUpdateMode
) -> SchemaPlan:
    """Compare the data's schema with the table's, at every depth, and plan the allowed changes.

    The rules are the same for a top-level column and for a struct member, list element or map
    value inside one: a new member is added (optional), a column of a narrower type is widened
    (int -> long, float -> double, decimal precision up), a member missing from the data is
    filled with nulls (dropped in ``update`` mode); any other type change is refused.

    Raises :class:`SchemaEvolutionError` naming each column by its full path
    (``payload.items.element.price``) when a change would lose values or the mode forbids it.

    Example:
        >>> import pyarrow as pa
        >>> table = arrow_to_iceberg_schema(pa.schema([("s", pa.struct([("a", pa.int32())]))]))
        >>> data = pa.schema([("s", pa.struct([("a", pa.int64()), ("b", pa.string())]))])
        >>> plan_schema_update("t", table, data, SchemaUpdateMode.ADDITIVE).describe()
        ['add column s.b string', 'widen column s.a to long']
    """
    found = _differences(table_schema, data_schema)
    if found.incompatible:
        raise SchemaEvolutionError(
            f"Table '{table_name}': the data's types cannot be stored without losing values: "
            + "; ".join(found.incompatible)
            + f". {_INCOMPATIBLE_HELP}."
        )
    missing = [path for path, _ in found.missing]
    missing_required = [_dotted(path) for path, required in found.missing if required]
    if missing_required and mode is not SchemaUpdateMode.UPDATE:
        raise SchemaEvolutionError(
            f"Table '{table_name}': required column(s) {missing_required} are missing from the "
            "data; add them to the output."
        )
    plan = SchemaPlan(add=found.add, widen=found.widen)
    if mode is SchemaUpdateMode.UPDATE:
        plan.drop.extend(missing)
    if mode is SchemaUpdateMode.ERROR and (not plan.is_empty or missing):
        diff = plan.describe() + [
            f"column {_dotted(path)} missing from the data" for path in missing
        ]
        raise SchemaEvolutionError(
            f"Table '{table_name}': schema_update_mode='error' and the data's schema differs from "
            f"the table's: {'; '.join(diff)}. Align the output, or set schema_update_mode to "
            "'additive' (or 'update' to drop columns)."
        )
    return plan


# ---------------------------------------------------------------------- conforming data


def conform_to_schema(table_name: str, data: pa.Table, schema: Schema) -> pa.Table:
    """Reorder, cast and complete ``data`` so it matches ``schema`` exactly, at every depth.

    Only lossless conversions happen: the data's schema must already fit the table's (after
    :func:`plan_schema_update`'s changes), else :class:`SchemaEvolutionError` is raised and no
    value is touched. Columns and struct members are reordered by name, missing optional ones
    are filled with nulls, narrower types are cast up; a NULL struct, list or map stays NULL.
    Nulls in required columns (nested ones included) are refused.

    Example:
        >>> import pyarrow as pa
        >>> schema = arrow_to_iceberg_schema(
        ...     pa.schema([("s", pa.struct([("a", pa.int64()), ("b", pa.string())]))])
        ... )
        >>> data = pa.table({"s": pa.array([{"a": 1}, None], pa.struct([("a", pa.int32())]))})
        >>> conform_to_schema("t", data, schema).column("s").to_pylist()
        [{'a': 1, 'b': None}, None]
    """
    found = _differences(schema, data.schema)
    unfit = [
        *found.incompatible,
        *(f"column {_dotted(path)!r} is not in the table" for path, _ in found.add),
        *(
            f"column {_dotted(path)!r} needs widening to {type_to_string(t)}"
            for path, t in found.widen
        ),
    ]
    if unfit:
        raise SchemaEvolutionError(
            f"Table '{table_name}': the data does not fit the table's schema: {'; '.join(unfit)}. "
            f"{_INCOMPATIBLE_HELP}; new columns and widenings are applied by the write's schema "
            "update (schema_update_mode 'additive')."
        )
    missing_required = [_dotted(path) for path, required in found.missing if required]
    if missing_required:
        raise InvalidInputError(
            f"Table '{table_name}': required column {missing_required[0]!r} is missing from the "
            "data; add it to the output."
        )
    target = schema_to_pyarrow(schema, include_field_ids=False)
    columns = []
    for target_field, iceberg_field in zip(target, schema.fields, strict=True):
        if iceberg_field.name not in data.column_names:
            columns.append(pa.nulls(len(data), target_field.type))
            continue
        column = data.column(iceberg_field.name)
        if iceberg_field.required and column.null_count:
            raise InvalidInputError(
                f"Table '{table_name}': required column {iceberg_field.name!r} has "
                f"{column.null_count} null value(s); fill them or make the column optional "
                "(SchemaChange.make_optional)."
            )
        columns.append(_conform_column(table_name, iceberg_field, column, target_field.type))
    return pa.Table.from_arrays(columns, schema=target)


def _has_required(iceberg_type: IcebergType) -> bool:
    """Whether a nested type holds a required member, element or value somewhere inside."""
    if isinstance(iceberg_type, StructType):
        return any(f.required or _has_required(f.field_type) for f in iceberg_type.fields)
    if isinstance(iceberg_type, ListType):
        return iceberg_type.element_required or _has_required(iceberg_type.element_type)
    if isinstance(iceberg_type, MapType):
        return (
            iceberg_type.value_required
            or _has_required(iceberg_type.key_type)
            or _has_required(iceberg_type.value_type)
        )
    return False


def _conform_column(
    table_name: str, iceberg_field: NestedField, column: pa.ChunkedArray, target_type: pa.DataType
) -> pa.ChunkedArray:
    if column.type == target_type and not _has_required(iceberg_field.field_type):
        return column
    path = (iceberg_field.name,)
    chunks = [
        _conform_array(table_name, path, chunk, iceberg_field.field_type, target_type, None)
        for chunk in column.chunks
    ]
    return pa.chunked_array(chunks, type=target_type)


def _valid_within(parent: np.ndarray | None, array: pa.Array) -> np.ndarray | None:
    """Positions where ``array`` and all its parents are valid (``None``: everywhere)."""
    if array.null_count == 0:
        return parent
    own = array.is_valid().to_numpy(zero_copy_only=False)
    return own if parent is None else parent & own


def _check_required(
    table_name: str, path: ColumnPath, array: pa.Array, valid: np.ndarray | None
) -> None:
    """Refuse nulls in a required nested column where its parents hold a value."""
    if array.null_count == 0:
        return
    nulls = array.is_null().to_numpy(zero_copy_only=False)
    count = int((nulls & valid).sum() if valid is not None else nulls.sum())
    if count:
        raise InvalidInputError(
            f"Table '{table_name}': required column {_dotted(path)!r} has {count} null value(s); "
            "fill them or make the column optional (SchemaChange.make_optional)."
        )


def _conform_array(
    table_name: str,
    path: ColumnPath,
    array: pa.Array,
    iceberg_type: IcebergType,
    target_type: pa.DataType,
    valid: np.ndarray | None,
) -> pa.Array:
    """``array`` converted to ``target_type``; ``valid`` marks where its parents hold a value."""
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    if array.type == target_type and not _has_required(iceberg_type):
        return array
    if isinstance(iceberg_type, StructType):
        return _conform_struct(table_name, path, array, iceberg_type, target_type, valid)
    if isinstance(iceberg_type, ListType):
        return _conform_list(table_name, path, array, iceberg_type, target_type, valid)
    if isinstance(iceberg_type, MapType):
        return _conform_map(table_name, path, array, iceberg_type, target_type, valid)
    return _cast_primitive(table_name, path, array, target_type)


def _null_mask(array: pa.Array) -> pa.BooleanArray | None:
    return array.is_null() if array.null_count else None


def _conform_struct(
    table_name: str,
    path: ColumnPath,
    array: pa.StructArray,
    iceberg_type: StructType,
    target_type: pa.StructType,
    valid: np.ndarray | None,
) -> pa.Array:
    inner_valid = _valid_within(valid, array)
    children = []
    for member, target_member in zip(iceberg_type.fields, target_type, strict=True):
        index = array.type.get_field_index(member.name)
        if index < 0:  # an optional member the data lacks (required ones were refused)
            children.append(pa.nulls(len(array), target_member.type))
            continue
        member_path = (*path, member.name)
        child = _conform_array(
            table_name, member_path, array.field(index), member.field_type, target_member.type,
            inner_valid,
        )  # fmt: skip
        if member.required:
            _check_required(table_name, member_path, child, inner_valid)
        children.append(child)
    return pa.StructArray.from_arrays(children, fields=list(target_type), mask=_null_mask(array))


def _offsets_and_range(array: pa.Array) -> tuple[np.ndarray, int, int]:
    """A list's or map's offsets, and the range of child values its (sliced) entries use."""
    offsets = array.offsets.to_numpy(zero_copy_only=False).astype(np.int64)
    return offsets, int(offsets[0]), int(offsets[-1])


def _child_valid(
    valid: np.ndarray | None, array: pa.Array, offsets: np.ndarray
) -> np.ndarray | None:
    """Expand the validity of lists (or maps) and their parents to their values."""
    parent_valid = _valid_within(valid, array)
    return None if parent_valid is None else np.repeat(parent_valid, np.diff(offsets))


def _conform_list(
    table_name: str,
    path: ColumnPath,
    array: pa.Array,
    iceberg_type: ListType,
    target_type: pa.DataType,
    valid: np.ndarray | None,
) -> pa.Array:
    if pa.types.is_fixed_size_list(array.type):
        array = array.cast(pa.list_(array.type.value_field))
    offsets, start, end = _offsets_and_range(array)
    element_path = (*path, "element")
    element_valid = _child_valid(valid, array, offsets)
    elements = _conform_array(
        table_name,
        element_path,
        array.values.slice(start, end - start),
        iceberg_type.element_type,
        target_type.value_type,
        element_valid,
    )
    if iceberg_type.element_required:
        _check_required(table_name, element_path, elements, element_valid)
    large = pa.types.is_large_list(target_type)
    list_class = pa.LargeListArray if large else pa.ListArray
    return list_class.from_arrays(
        pa.array(offsets - start, pa.int64() if large else pa.int32()),
        elements,
        type=target_type,
        mask=_null_mask(array),
    )


def _conform_map(
    table_name: str,
    path: ColumnPath,
    array: pa.MapArray,
    iceberg_type: MapType,
    target_type: pa.MapType,
    valid: np.ndarray | None,
) -> pa.Array:
    offsets, start, end = _offsets_and_range(array)
    value_valid = _child_valid(valid, array, offsets)
    keys = _conform_array(
        table_name, (*path, "key"), array.keys.slice(start, end - start), iceberg_type.key_type,
        target_type.key_type, value_valid,
    )  # fmt: skip
    value_path = (*path, "value")
    values = _conform_array(
        table_name, value_path, array.items.slice(start, end - start), iceberg_type.value_type,
        target_type.item_type, value_valid,
    )  # fmt: skip
    if iceberg_type.value_required:
        _check_required(table_name, value_path, values, value_valid)
    return pa.MapArray.from_arrays(
        pa.array(offsets - start, pa.int32()),
        keys,
        values,
        type=target_type,
        mask=_null_mask(array),
    )


def _cast_primitive(
    table_name: str, path: ColumnPath, array: pa.Array, target_type: pa.DataType
) -> pa.Array:
    """A lossless cast (the schema comparison proved the types fit); overflow is refused."""
    if array.type == target_type:
        return array
    try:
        ns_timestamp = pa.types.is_timestamp(array.type) and array.type.unit == "ns"
        if ns_timestamp and pa.types.is_timestamp(target_type):
            # Documented: nanoseconds are stored with microsecond precision.
            array = pc.cast(array, pa.timestamp("us", array.type.tz), safe=False)
        return array.cast(target_type)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
        raise InvalidInputError(
            f"Table '{table_name}': column {_dotted(path)!r} of type {array.type} cannot be "
            f"converted to the table's type {target_type}: {error}. Cast the data before "
            "returning it."
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
