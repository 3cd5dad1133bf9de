"""Nested columns follow the same schema rules as top-level ones, at every depth.

A struct member, list element or map value that is new is added (optional) when the mode allows
it; a narrower type is widened (int -> long, float -> double, decimal precision up); anything
else is refused with the column's full path. No value is ever changed on the way into the
table: what is written reads back exactly, NULL structs, lists and maps included. Every test
writes to a real SQLite catalog and reads the files back.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from decimal import Decimal

import pyarrow as pa
import pytest
from infra.catalogs import dispose_catalog, load_test_catalog
from pyiceberg.schema import Schema
from pyiceberg.types import ListType, LongType, NestedField, StringType, StructType

from floe_dagster_iceberg.engine.config import SchemaUpdateMode, WriteConfig
from floe_dagster_iceberg.engine.manager import IcebergTableManager
from floe_dagster_iceberg.engine.schema_evolution import conform_to_schema, plan_schema_update
from floe_dagster_iceberg.engine.types import arrow_to_iceberg_schema, type_to_string
from floe_dagster_iceberg.errors import InvalidInputError, SchemaEvolutionError

MODES = ["additive", "error"]


def _payload_type(item_members: list[tuple[str, pa.DataType]]) -> pa.DataType:
    """``struct<items: list<struct<...item_members>>, note: string>``: three levels deep."""
    return pa.struct(
        [("items", pa.list_(pa.struct(item_members))), ("note", pa.string())],
    )


V1_ITEM = [("price", pa.int32()), ("name", pa.string())]


def _orders(ids: list[int], items: list, item_members=V1_ITEM, notes=None) -> pa.Table:
    notes = notes or [f"n{i}" for i in ids]
    return pa.table(
        {
            "id": pa.array(ids, pa.int64()),
            "payload": pa.array(
                [{"items": i, "note": n} for i, n in zip(items, notes, strict=True)],
                _payload_type(item_members),
            ),
        }
    )


@pytest.fixture
def manager(sqlite_catalog_properties) -> Iterator[IcebergTableManager]:
    catalog = load_test_catalog(sqlite_catalog_properties)
    try:
        yield IcebergTableManager(catalog)
    finally:
        dispose_catalog(catalog)


@pytest.fixture
def orders(manager, namespace) -> str:
    """A table whose ``payload`` is ``struct<items: list<struct<price: int, name: string>>>``."""
    name = f"{namespace}.orders"
    manager.write(
        name, _orders([1, 2], [[{"price": 10, "name": "a"}], [{"price": 20, "name": "b"}, None]])
    )
    return name


def _rows(manager: IcebergTableManager, table: str) -> list[dict]:
    return sorted(manager.scan(table).to_pylist(), key=lambda row: row["id"])


@contextlib.contextmanager
def untouched(manager: IcebergTableManager, table: str) -> Iterator[None]:
    """The block must leave the table's metadata file, schema and rows as they were."""
    before = manager.load_table(table)
    rows = _rows(manager, table)
    yield
    after = manager.load_table(table)
    assert after.metadata_location == before.metadata_location
    assert after.schema() == before.schema()
    assert _rows(manager, table) == rows


def _item_type(manager: IcebergTableManager, table: str) -> str:
    schema = manager.load_table(table).schema()
    return type_to_string(schema.find_type("payload.items.element"))


# ---------------------------------------------------------------------- new nested members


def test_new_member_three_levels_deep_is_added_in_additive_mode(manager, orders):
    wider_item = [*V1_ITEM, ("currency", pa.string())]
    data = _orders([3], [[{"price": 30, "name": "c", "currency": "EUR"}, None]], wider_item)

    result = manager.write(orders, data, WriteConfig(mode="append"))

    assert result.schema_changes == ("add column payload.items.element.currency string",)
    assert _item_type(manager, orders) == "struct<price: int, name: string, currency: string>"
    added = manager.load_table(orders).schema().find_field("payload.items.element.currency")
    assert not added.required
    assert _rows(manager, orders) == [
        {"id": 1, "payload": {"items": [{"price": 10, "name": "a", "currency": None}], "note": "n1"}},
        {
            "id": 2,
            "payload": {"items": [{"price": 20, "name": "b", "currency": None}, None], "note": "n2"},
        },
        {
            "id": 3,
            "payload": {"items": [{"price": 30, "name": "c", "currency": "EUR"}, None], "note": "n3"},
        },
    ]  # fmt: skip


def test_new_member_three_levels_deep_is_refused_in_error_mode(manager, orders):
    wider_item = [*V1_ITEM, ("currency", pa.string())]
    data = _orders([3], [[{"price": 30, "name": "c", "currency": "EUR"}]], wider_item)

    with (
        untouched(manager, orders),
        pytest.raises(SchemaEvolutionError, match=r"add column payload\.items\.element\.currency"),
    ):
        manager.write(orders, data, WriteConfig(mode="append", schema_update_mode="error"))


def test_new_member_of_a_map_value_struct_is_added(manager, namespace):
    name = f"{namespace}.prices"
    v1 = pa.map_(pa.string(), pa.struct([("amount", pa.int64())]))
    manager.write(name, pa.table({"id": [1], "m": pa.array([[("eu", {"amount": 1})]], v1)}))
    v2 = pa.map_(pa.string(), pa.struct([("amount", pa.int64()), ("tax", pa.float64())]))
    rows = [[("us", {"amount": 2, "tax": 0.25})], [("ca", None)]]
    data = pa.table({"id": [2, 3], "m": pa.array(rows, v2)})

    result = manager.write(name, data, WriteConfig(mode="append"))

    assert result.schema_changes == ("add column m.value.tax double",)
    assert _rows(manager, name) == [
        {"id": 1, "m": [("eu", {"amount": 1, "tax": None})]},
        {"id": 2, "m": [("us", {"amount": 2, "tax": 0.25})]},
        {"id": 3, "m": [("ca", None)]},
    ]


# ---------------------------------------------------------------------- widening at depth


def test_nested_types_widen_like_top_level_ones_in_additive_mode(manager, namespace):
    name = f"{namespace}.measures"
    item = [("count", pa.int32()), ("ratio", pa.float32()), ("amount", pa.decimal128(9, 2))]
    first = pa.table(
        {
            "id": [1],
            "payload": pa.array(
                [{"items": [{"count": 1, "ratio": 0.5, "amount": Decimal("1.25")}], "note": "a"}],
                _payload_type(item),
            ),
        }
    )
    manager.write(name, first)
    wide = [("count", pa.int64()), ("ratio", pa.float64()), ("amount", pa.decimal128(12, 2))]
    big = 2**40
    second = pa.table(
        {
            "id": [2],
            "payload": pa.array(
                [{"items": [{"count": big, "ratio": 0.1, "amount": Decimal("1234567890.12")}]}],
                _payload_type(wide),
            ),
        }
    )

    result = manager.write(name, second, WriteConfig(mode="append"))

    assert sorted(result.schema_changes) == [
        "widen column payload.items.element.amount to decimal(12,2)",
        "widen column payload.items.element.count to long",
        "widen column payload.items.element.ratio to double",
    ]
    assert _item_type(manager, name) == "struct<count: long, ratio: double, amount: decimal(12,2)>"
    rows = _rows(manager, name)
    assert rows[0]["payload"]["items"] == [
        {"count": 1, "ratio": 0.5, "amount": Decimal("1.25")}
    ]  # 0.5 is exact in float32 and float64
    assert rows[1]["payload"] == {
        "items": [{"count": big, "ratio": 0.1, "amount": Decimal("1234567890.12")}],
        "note": None,
    }


def test_nested_widening_is_refused_in_error_mode_with_its_path(manager, orders):
    data = _orders([3], [[{"price": 2**40, "name": "c"}]], [("price", pa.int64()), V1_ITEM[1]])

    with (
        untouched(manager, orders),
        pytest.raises(
            SchemaEvolutionError, match=r"widen column payload\.items\.element\.price to long"
        ),
    ):
        manager.write(orders, data, WriteConfig(mode="append", schema_update_mode="error"))


@pytest.mark.parametrize("mode", MODES)
def test_narrower_nested_data_is_stored_in_wider_columns(manager, namespace, mode):
    name = f"{namespace}.wide"
    wide_item = [("price", pa.int64()), ("name", pa.string())]
    manager.write(name, _orders([1], [[{"price": 2**40, "name": "a"}]], wide_item))
    narrow = _orders([2], [[{"price": -7, "name": "b"}]], V1_ITEM)

    result = manager.write(name, narrow, WriteConfig(mode="append", schema_update_mode=mode))

    assert result.schema_changes == ()
    assert [r["payload"]["items"] for r in _rows(manager, name)] == [
        [{"price": 2**40, "name": "a"}],
        [{"price": -7, "name": "b"}],
    ]


def test_map_values_and_list_elements_widen(manager, namespace):
    name = f"{namespace}.collections"
    manager.write(
        name,
        pa.table(
            {
                "m": pa.array([[("a", 1)]], pa.map_(pa.string(), pa.int32())),
                "l": pa.array([[1.5]], pa.list_(pa.float32())),
            }
        ),
    )
    data = pa.table(
        {
            "m": pa.array([[("b", 2**40)], None], pa.map_(pa.string(), pa.int64())),
            "l": pa.array([[0.1, None], None], pa.list_(pa.float64())),
        }
    )

    result = manager.write(name, data, WriteConfig(mode="append"))

    assert sorted(result.schema_changes) == [
        "widen column l.element to double",
        "widen column m.value to long",
    ]
    rows = sorted(manager.scan(name).to_pylist(), key=repr)
    assert sorted(rows, key=repr) == sorted(
        [
            {"m": [("a", 1)], "l": [1.5]},
            {"m": [("b", 2**40)], "l": [0.1, None]},
            {"m": None, "l": None},
        ],
        key=repr,
    )


# ---------------------------------------------------------------------- incompatible changes


INCOMPATIBLE = {
    # A long struct member written into a string member used to be stored as '7'.
    "long-into-string-member": (
        [("price", pa.int32()), ("name", pa.int64())],
        [{"price": 1, "name": 7}],
        "payload.items.element.name",
    ),
    "string-into-int-member": (
        [("price", pa.string()), ("name", pa.string())],
        [{"price": "7", "name": "x"}],
        "payload.items.element.price",
    ),
    "double-into-int-member": (
        [("price", pa.float64()), ("name", pa.string())],
        [{"price": 7.5, "name": "x"}],
        "payload.items.element.price",
    ),
    "struct-into-int-member": (
        [("price", pa.struct([("v", pa.int32())])), ("name", pa.string())],
        [{"price": {"v": 1}, "name": "x"}],
        "payload.items.element.price",
    ),
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", sorted(INCOMPATIBLE))
def test_incompatible_change_three_levels_deep_is_refused_with_its_path(
    manager, orders, mode, case
):
    item, items, path = INCOMPATIBLE[case]
    data = _orders([3], [items], item)

    with untouched(manager, orders), pytest.raises(SchemaEvolutionError) as refused:
        manager.write(orders, data, WriteConfig(mode="append", schema_update_mode=mode))

    message = str(refused.value)
    assert f"column {path!r}: table has " in message
    assert "Cast the data to the table's types" in message


@pytest.mark.parametrize("mode", MODES)
def test_list_of_doubles_into_list_of_strings_is_refused(manager, namespace, mode):
    """``list<double>`` into ``list<string>`` used to store ``'1.5'``."""
    name = f"{namespace}.labels"
    manager.write(name, pa.table({"labels": pa.array([["x"]], pa.list_(pa.string()))}))
    data = pa.table({"labels": pa.array([[1.5]], pa.list_(pa.float64()))})

    with (
        untouched_rows(manager, name),
        pytest.raises(
            SchemaEvolutionError,
            match=r"column 'labels\.element': table has string, data has double",
        ),
    ):
        manager.write(name, data, WriteConfig(mode="append", schema_update_mode=mode))


@pytest.mark.parametrize("mode", MODES)
def test_map_key_and_decimal_scale_changes_are_refused(manager, namespace, mode):
    name = f"{namespace}.maps"
    manager.write(
        name,
        pa.table(
            {
                "m": pa.array([[(1, "a")]], pa.map_(pa.int32(), pa.string())),
                "s": pa.array([{"d": Decimal("1.25")}], pa.struct([("d", pa.decimal128(9, 2))])),
            }
        ),
    )
    wider_key = pa.table({"m": pa.array([[(2**40, "b")]], pa.map_(pa.int64(), pa.string()))})
    other_scale = pa.table(
        {"s": pa.array([{"d": Decimal("1.250")}], pa.struct([("d", pa.decimal128(12, 3))]))}
    )
    config = WriteConfig(mode="append", schema_update_mode=mode)

    with untouched_rows(manager, name):
        with pytest.raises(SchemaEvolutionError, match=r"'m\.key'.*map keys cannot change type"):
            manager.write(name, wider_key, config)
        with pytest.raises(
            SchemaEvolutionError,
            match=r"'s\.d': table has decimal\(9,2\), data has decimal\(12,3\)",
        ):
            manager.write(name, other_scale, config)


@contextlib.contextmanager
def untouched_rows(manager: IcebergTableManager, table: str) -> Iterator[None]:
    before = manager.load_table(table)
    rows = sorted(manager.scan(table).to_pylist(), key=repr)
    yield
    after = manager.load_table(table)
    assert after.metadata_location == before.metadata_location
    assert sorted(manager.scan(table).to_pylist(), key=repr) == rows


# ---------------------------------------------------------------------- missing members


def test_nested_member_missing_from_the_data_per_mode(manager, orders):
    only_price = [("price", pa.int32())]
    data = _orders([3], [[{"price": 30}]], only_price)

    with (
        untouched(manager, orders),
        pytest.raises(
            SchemaEvolutionError,
            match=r"column payload\.items\.element\.name missing from the data",
        ),
    ):
        manager.write(orders, data, WriteConfig(mode="append", schema_update_mode="error"))

    manager.write(orders, data, WriteConfig(mode="append"))  # additive: filled with nulls
    assert _rows(manager, orders)[-1]["payload"] == {
        "items": [{"price": 30, "name": None}],
        "note": "n3",
    }

    result = manager.write(orders, data, WriteConfig(mode="append", schema_update_mode="update"))
    assert result.schema_changes == ("drop column payload.items.element.name",)
    assert _item_type(manager, orders) == "struct<price: int>"


def test_required_nested_member_is_enforced(manager, namespace):
    name = f"{namespace}.strict"
    schema = Schema(
        NestedField(1, "id", LongType(), required=False),
        NestedField(
            2,
            "s",
            StructType(
                NestedField(3, "key", StringType(), required=True),
                NestedField(
                    4, "tags", ListType(5, StringType(), element_required=True), required=False
                ),
            ),
            required=False,
        ),
    )
    manager.catalog.create_namespace_if_not_exists(namespace)
    manager.catalog.create_table(name, schema)
    struct = pa.struct([("key", pa.string()), ("tags", pa.list_(pa.string()))])
    fine = pa.table(
        {"id": [1, 2], "s": pa.array([{"key": "a", "tags": ["x"]}, None], struct)}
    )  # a NULL struct holds no key: allowed
    manager.write(name, fine, WriteConfig(mode="append"))
    assert _rows(manager, name) == [
        {"id": 1, "s": {"key": "a", "tags": ["x"]}},
        {"id": 2, "s": None},
    ]

    null_key = pa.table({"id": [3], "s": pa.array([{"key": None, "tags": []}], struct)})
    null_tag = pa.table({"id": [4], "s": pa.array([{"key": "b", "tags": ["y", None]}], struct)})
    missing_key = pa.table(
        {"id": [5], "s": pa.array([{"tags": []}], pa.struct([("tags", pa.list_(pa.string()))]))}
    )
    with untouched(manager, name):
        with pytest.raises(InvalidInputError, match=r"required column 's\.key' has 1 null"):
            manager.write(name, null_key, WriteConfig(mode="append"))
        with pytest.raises(InvalidInputError, match=r"required column 's\.tags\.element' has 1"):
            manager.write(name, null_tag, WriteConfig(mode="append"))
        with pytest.raises(SchemaEvolutionError, match=r"required column\(s\) \['s\.key'\]"):
            manager.write(name, missing_key, WriteConfig(mode="append"))


# ---------------------------------------------------------------------- exact values, NULLs


NESTED_NULLS_TYPE = pa.struct(
    [
        ("items", pa.list_(pa.struct([("price", pa.float64()), ("tags", pa.list_(pa.string()))]))),
        ("attributes", pa.map_(pa.string(), pa.struct([("v", pa.int64())]))),
        ("note", pa.string()),
    ]
)
NESTED_NULLS = pa.table(
    {
        "id": pa.array([1, 2, 3, 4, 5], pa.int64()),
        "payload": pa.array(
            [
                None,  # a NULL struct
                {"items": None, "attributes": None, "note": None},  # NULL list and map inside
                {"items": [None, {"price": None, "tags": None}], "attributes": [("k", None)]},
                {"items": [], "attributes": [], "note": ""},  # empty is not NULL
                {"items": [{"price": -0.0, "tags": [None, "t"]}], "attributes": [("a", {"v": 1})]},
            ],
            NESTED_NULLS_TYPE,
        ),
    }
)


def test_null_nested_values_conform_exactly():
    """The conversion to the table's Arrow types keeps every NULL and value, also on slices."""
    schema = arrow_to_iceberg_schema(NESTED_NULLS.schema)
    chunked = pa.concat_tables([NESTED_NULLS.slice(0, 2), NESTED_NULLS.slice(2)])
    for data in (NESTED_NULLS, NESTED_NULLS.slice(1, 3), NESTED_NULLS.slice(3), chunked):
        conformed = conform_to_schema("t", data, schema)
        conformed.validate(full=True)
        assert conformed.to_pylist() == data.to_pylist()


def test_null_nested_values_round_trip_exactly(manager, namespace):
    name = f"{namespace}.nulls"
    manager.write(name, NESTED_NULLS)
    assert _rows(manager, name) == NESTED_NULLS.to_pylist()


def test_conform_never_casts_what_the_plan_did_not_allow():
    """Handed data the table's schema cannot hold, the conversion refuses instead of casting."""
    schema = arrow_to_iceberg_schema(_orders([1], [[]]).schema)
    wider_item = [*V1_ITEM, ("currency", pa.string())]
    cases = {
        "payload.items.element.currency": _orders(
            [1], [[{"price": 1, "name": "a", "currency": "EUR"}]], wider_item
        ),
        "payload.items.element.name": _orders(
            [1], [[{"price": 1, "name": 7}]], [("price", pa.int32()), ("name", pa.int64())]
        ),
    }
    for path, data in cases.items():
        with pytest.raises(SchemaEvolutionError, match=repr(path)):
            conform_to_schema("t", data, schema)


def test_plan_names_every_nested_difference():
    table = arrow_to_iceberg_schema(_orders([1], [[]]).schema)
    data = _orders([1], [[]], [("price", pa.int64()), ("currency", pa.string())]).schema

    plan = plan_schema_update("t", table, data, SchemaUpdateMode.UPDATE)

    assert plan.describe() == [
        "add column payload.items.element.currency string",
        "widen column payload.items.element.price to long",
        "drop column payload.items.element.name",
    ]
