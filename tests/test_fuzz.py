"""Generated schemas and frames: a write then a read gives back exactly the data, or the write
fails with the package's own error (and creates nothing), never with a dependency's exception.

Schemas mix every Arrow type a frame may hold (nested ones too, and a few Iceberg cannot
store), nulls everywhere, NaN and signed zeros, and column names drawn from all of Unicode,
empty, dotted or repeated. Floats are compared bit for bit; ``timestamp[ns]`` values are
expected back truncated to microseconds, as documented. Rows may come back in any order.
Run with ``--hypothesis-show-statistics`` to see how many examples round-tripped or were refused.
"""

from __future__ import annotations

import datetime as dt
import decimal
import math
import os
import struct
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import HealthCheck, assume, event, example, given, settings
from hypothesis import strategies as st
from infra.catalogs import dispose_catalog, load_test_catalog, unique_name

from floe_dagster_iceberg.engine.config import PartitionField, WriteConfig
from floe_dagster_iceberg.engine.manager import IcebergTableManager
from floe_dagster_iceberg.errors import IcebergError
from floe_dagster_iceberg.type_handlers import handler_for_output

MAX_ROWS = 6

# -- values of each type -----------------------------------------------------------------------

_INT_BOUNDS = {
    "int8": (-(2**7), 2**7 - 1),
    "int16": (-(2**15), 2**15 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "uint8": (0, 2**8 - 1),
    "uint16": (0, 2**16 - 1),
    "uint32": (0, 2**32 - 1),
    "uint64": (0, 2**64 - 1),
}
_UTC_RANGE = (dt.datetime(1, 1, 2), dt.datetime(9999, 12, 30))


def _primitive(name: str) -> tuple[pa.DataType, st.SearchStrategy[Any]]:
    if name in _INT_BOUNDS:
        low, high = _INT_BOUNDS[name]
        return getattr(pa, name)(), st.integers(low, high)
    if name == "bool":
        return pa.bool_(), st.booleans()
    if name == "float32":
        return pa.float32(), st.floats(width=32)
    if name == "float64":
        return pa.float64(), st.floats()
    if name == "string":
        return pa.string(), st.text(max_size=8)
    if name == "large_string":
        return pa.large_string(), st.text(max_size=8)
    if name == "binary":
        return pa.binary(), st.binary(max_size=8)
    if name == "fixed4":
        return pa.binary(4), st.binary(min_size=4, max_size=4)
    if name == "date":
        return pa.date32(), st.dates()
    if name == "time":
        return pa.time64("us"), st.times()
    if name == "timestamp":
        return pa.timestamp("us"), st.datetimes(*_UTC_RANGE)
    if name == "timestamptz":
        return pa.timestamp("us", tz="UTC"), st.datetimes(*_UTC_RANGE, timezones=st.just(dt.UTC))
    if name == "timestamp_ns":
        # Nanosecond Arrow timestamps cover 1677..2262.
        return pa.timestamp("ns"), st.integers(-(2**62), 2**62)
    if name == "decimal":
        return pa.decimal128(12, 3), st.decimals(
            min_value=-(10**8), max_value=10**8, places=3, allow_nan=False, allow_infinity=False
        )
    if name == "null":
        return pa.null(), st.none()
    raise AssertionError(name)


PRIMITIVES = [
    "bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "float32", "float64", "string", "large_string", "binary", "fixed4", "date", "time",
    "timestamp", "timestamptz", "timestamp_ns", "decimal", "null",
]  # fmt: skip
_STORABLE_KEYS = ["string", "int32", "int64", "date"]

column_names = st.one_of(
    st.text(min_size=1, max_size=10),
    st.sampled_from(["id", "a.b", "with space", "ünïcödé", "日本語", "x" * 60, "Ω", "_"]),
)


@st.composite
def column_types(draw: st.DrawFn, depth: int = 0) -> tuple[pa.DataType, st.SearchStrategy[Any]]:
    # Up to three levels of nesting (struct<list<struct<...>>>, map<k, list<...>>, ...); every
    # nested value, element and member may be NULL.
    kind = draw(
        st.sampled_from(["primitive"] * 6 + (["list", "struct", "map"] if depth < 3 else []))
    )
    if kind == "primitive":
        return _primitive(draw(st.sampled_from(PRIMITIVES)))
    if kind == "list":
        item_type, items = draw(column_types(depth + 1))
        return pa.list_(item_type), st.lists(st.one_of(st.none(), items), max_size=3)
    if kind == "map":
        key_type, keys = _primitive(draw(st.sampled_from(_STORABLE_KEYS)))
        value_type, values = draw(column_types(depth + 1))
        return pa.map_(key_type, value_type), st.dictionaries(
            keys, st.one_of(st.none(), values), max_size=3
        ).map(lambda d: list(d.items()))
    names = draw(st.lists(column_names, min_size=1, max_size=3, unique=True))
    members = [draw(column_types(depth + 1)) for _ in names]
    struct_type = pa.struct([pa.field(n, t) for n, (t, _) in zip(names, members, strict=True)])
    return struct_type, st.tuples(*(st.one_of(st.none(), s) for _, s in members)).map(
        lambda values, names=names: dict(zip(names, values, strict=True))
    )


@st.composite
def frames(draw: st.DrawFn) -> pa.Table:
    names = draw(st.lists(column_names, min_size=1, max_size=5, unique=True))
    mishap = draw(st.sampled_from(["none"] * 8 + ["repeated name", "empty name"]))
    if mishap == "repeated name":
        names.append(names[0])
    elif mishap == "empty name":
        names.insert(draw(st.integers(0, len(names))), "")
    rows = draw(st.integers(0, MAX_ROWS))
    arrays = []
    fields = []
    for name in names:
        arrow_type, values = draw(column_types())
        nullable = draw(st.booleans())
        cells = draw(
            st.lists(
                st.one_of(st.none(), values) if nullable else values, min_size=rows, max_size=rows
            )
        )
        if pa.types.is_timestamp(arrow_type) and arrow_type.unit == "ns":
            arrays.append(pa.array(cells, pa.int64()).cast(arrow_type))
        else:
            arrays.append(pa.array(cells, arrow_type))
        fields.append(pa.field(name, arrow_type, nullable=nullable or rows == 0 or None in cells))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


# NULL at every level of a struct<list<struct<...>>> and a map of structs, next to empty values
# that are not NULL: always tried, whatever the generated examples.
_ITEM = pa.struct([("price", pa.float64()), ("tags", pa.list_(pa.string()))])
_PAYLOAD = pa.struct(
    [("items", pa.list_(_ITEM)), ("attributes", pa.map_(pa.string(), _ITEM)), ("note", pa.string())]
)
NESTED_NULLS = pa.table(
    {
        "id": pa.array([1, 2, 3, 4, 5], pa.int64()),
        "payload": pa.array(
            [
                None,
                {"items": None, "attributes": None, "note": None},
                {"items": [None, {"price": None, "tags": None}], "attributes": [("k", None)]},
                {"items": [], "attributes": [], "note": ""},
                {"items": [{"price": 1.5, "tags": [None, "t"]}], "attributes": [("a", None)]},
            ],
            _PAYLOAD,
        ),
        "events": pa.array(
            [[None], None, [], [{"price": None, "tags": []}], None], pa.list_(_ITEM)
        ),
    }
)


# -- comparing -----------------------------------------------------------------------------------


def _microseconds(arrow_type: pa.DataType) -> pa.DataType:
    """``arrow_type`` with every ``timestamp[ns]`` in it, at any depth, as ``timestamp[us]``."""
    if pa.types.is_timestamp(arrow_type) and arrow_type.unit == "ns":
        return pa.timestamp("us", arrow_type.tz)
    if pa.types.is_struct(arrow_type):
        return pa.struct([f.with_type(_microseconds(f.type)) for f in arrow_type])
    if pa.types.is_map(arrow_type):
        item = arrow_type.item_field.with_type(_microseconds(arrow_type.item_type))
        return pa.map_(arrow_type.key_field, item)
    if pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type):
        element = arrow_type.value_field.with_type(_microseconds(arrow_type.value_type))
        return pa.large_list(element) if pa.types.is_large_list(arrow_type) else pa.list_(element)
    return arrow_type


def _expected(column: pa.ChunkedArray) -> list[Any]:
    """The values a column must read back as (``timestamp[ns]`` truncated to microseconds)."""
    column = pc.cast(column, _microseconds(column.type), safe=False)
    return column.to_pylist()


def _canonical(value: Any) -> Any:
    """A hashable, orderable stand-in that is equal exactly when :func:`_same` holds."""
    if isinstance(value, float):
        return ("float", "nan" if math.isnan(value) else struct.pack("<d", value).hex())
    if isinstance(value, dict):
        return ("dict", tuple((k, _canonical(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return ("list", tuple(_canonical(v) for v in value))
    if isinstance(value, decimal.Decimal):
        return ("decimal", str(value))
    return (type(value).__name__, repr(value))


def _assert_round_trip(written: pa.Table, read: pa.Table) -> None:
    """Same columns and the same rows (in any order: partitioned writes group rows)."""
    assert read.column_names == written.column_names
    assert read.num_rows == written.num_rows
    expected = (
        zip(*(_expected(c) for c in written.columns), strict=True) if written.num_rows else []
    )
    actual = zip(*(c.to_pylist() for c in read.columns), strict=True) if read.num_rows else []
    want = sorted(_canonical(list(row)) for row in expected)
    got = sorted(_canonical(list(row)) for row in actual)
    assert want == got, f"wrote {written.to_pylist()!r}, read {read.to_pylist()!r}"


# -- the properties -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fuzz_manager(tmp_path_factory):
    from infra.catalogs import initialise_sql_catalog, sqlite_catalog_properties_for

    properties = sqlite_catalog_properties_for(tmp_path_factory.mktemp("fuzz"))
    initialise_sql_catalog(properties)
    catalog = load_test_catalog(properties)
    try:
        yield IcebergTableManager(catalog)
    finally:
        dispose_catalog(catalog)


def _write_or_refuse(manager: IcebergTableManager, table: str, data: Any, config: WriteConfig):
    """Write; a refusal must be our error and must leave no table behind."""
    try:
        manager.write(table, data, config)
    except IcebergError as error:
        assert not manager.table_exists(table), "a refused write created the table"
        event(f"refused: {type(error).__name__}")
        return False
    event("round trip")
    return True


# Deterministic by default; FLOE_FUZZ_EXAMPLES=2000 FLOE_FUZZ_RANDOM=1 explores further.
FUZZ = settings(
    max_examples=int(os.environ.get("FLOE_FUZZ_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize="FLOE_FUZZ_RANDOM" not in os.environ,
)


@FUZZ
@given(data=frames(), partitioned=st.booleans())
@example(data=NESTED_NULLS, partitioned=False)
@example(data=NESTED_NULLS, partitioned=True)
def test_arrow_frames_round_trip_or_fail_with_our_error(fuzz_manager, data, partitioned):
    table = f"fuzz.{unique_name('t')}"
    spec = None
    if partitioned and data.column_names[0]:
        spec = (PartitionField(source_column=data.column_names[0]),)
    if not _write_or_refuse(fuzz_manager, table, data, WriteConfig(partition_spec=spec)):
        return
    _assert_round_trip(data, fuzz_manager.scan(table))


@FUZZ
@given(data=frames())
@example(data=NESTED_NULLS)
def test_polars_frames_round_trip_or_fail_with_our_error(fuzz_manager, data):
    """The same through Polars, as the IO manager receives a ``polars.DataFrame``."""
    assume(len(set(data.column_names)) == data.num_columns)  # Polars needs distinct names
    try:
        frame = pl.from_arrow(data)
    except Exception:  # a frame Polars itself cannot hold is no input to us
        return
    table = f"fuzz.{unique_name('p')}"
    try:
        converted = handler_for_output(frame, table).to_arrow(
            frame, table
        )  # as the IO manager does
    except IcebergError:
        return
    if not _write_or_refuse(fuzz_manager, table, converted, WriteConfig()):
        return
    read = pl.from_arrow(fuzz_manager.scan(table))
    _assert_round_trip(converted, read.to_arrow())
