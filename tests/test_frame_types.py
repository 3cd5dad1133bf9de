"""Every frame library through dagster.materialize: out and in, partitioned or not, every write
mode, time travel, one library's output read by another, and a user's own type."""

import datetime as dt

import daft
import dagster as dg
import duckdb
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest

from floe_dagster_iceberg import (
    InvalidInputError,
    TypeHandler,
    register_type_handler,
    unregister_type_handler,
)
from floe_dagster_iceberg.type_handlers import read_arrow
from floe_dagster_iceberg.type_handlers.base import require

DAYS = dg.DailyPartitionsDefinition(start_date="2024-01-01", end_date="2024-01-05")
RECEIVED: dict[str, object] = {}


def _rows(day: str, ids: list[int], version: str = "v1") -> pa.Table:
    return pa.table(
        {
            "day": pa.array([dt.date.fromisoformat(day)] * len(ids)),
            "id": pa.array(ids, pa.int64()),
            "label": pa.array([f"{version}-{i}" for i in ids], pa.large_string()),
        }
    )


# How each library builds its output from Arrow rows, and turns its input back into Arrow.
LIBRARIES = {
    "pandas": (lambda rows: rows.to_pandas(), lambda frame: pa.Table.from_pandas(frame)),
    "daft": (daft.from_arrow, lambda frame: frame.to_arrow()),
    "duckdb": (lambda rows: duckdb.from_arrow(rows), lambda rel: rel.to_arrow_table()),
    "polars": (pl.from_arrow, lambda frame: frame.to_arrow()),
    "pyarrow": (lambda rows: rows, lambda table: table),
}
ANNOTATIONS = {
    "pandas": pd.DataFrame,
    "daft": daft.DataFrame,
    "duckdb": duckdb.DuckDBPyRelation,
    "polars": pl.DataFrame,
    "pyarrow": pa.Table,
}


@pytest.fixture(autouse=True)
def _clear_received():
    RECEIVED.clear()


def _as_arrow(library: str, value) -> pa.Table:
    table = LIBRARIES[library][1](value)
    return table.select(["day", "id", "label"]).sort_by("id")


def _assets(writer: str, reader: str, mode: str = "overwrite"):
    make = LIBRARIES[writer][0]
    metadata = {"partition_expr": "day", "write_mode": mode}
    if mode == "upsert":
        metadata["upsert_options"] = {"join_cols": ["id"]}

    @dg.asset(io_manager_key="iceberg", partitions_def=DAYS, metadata=metadata)
    def events(context: dg.AssetExecutionContext):
        version = context.run.tags.get("version", "v1")
        ids = [int(i) for i in context.run.tags.get("ids", "1,2,3").split(",")]
        return make(_rows(context.partition_key, ids, version))

    def read(context: dg.AssetExecutionContext, events) -> None:
        RECEIVED[context.partition_key] = _as_arrow(reader, events)

    read.__annotations__["events"] = ANNOTATIONS[reader]
    consumer = dg.asset(partitions_def=DAYS, name="consumer")(read)
    return events, consumer


def _materialize(assets, resources, instance, day: str, **tags):
    result = dg.materialize(
        assets,
        resources=resources,
        instance=instance,
        partition_key=day,
        tags={k: str(v) for k, v in tags.items()},
    )
    assert result.success
    return result


@pytest.mark.parametrize("library", ["pandas", "daft", "duckdb"])
def test_round_trip_partitioned_in_every_write_mode(library, resources, instance, manager):
    for mode, ids, expected_ids in (
        ("overwrite", "1,2,3", [1, 2, 3]),
        ("append", "4", [1, 2, 3, 4]),
        ("upsert", "2,5", [1, 2, 3, 4, 5]),
    ):
        assets = _assets(library, library, mode)
        _materialize(assets, resources, instance, "2024-01-02", ids=ids, version=mode)
        received = RECEIVED["2024-01-02"]
        stored = manager.scan("public.events").sort_by("id")
        assert received.column("id").to_pylist() == expected_ids
        assert received.column("label").to_pylist() == stored.column("label").to_pylist()
    assert received.column("label").to_pylist()[1] == "upsert-2"


@pytest.mark.parametrize("library", ["pandas", "daft", "duckdb"])
def test_round_trip_unpartitioned_and_time_travel(library, resources, instance, manager):
    make, _ = LIBRARIES[library]

    @dg.asset(io_manager_key="iceberg", name="numbers")
    def numbers(context: dg.AssetExecutionContext):
        return make(_rows("2024-01-01", [int(context.run.tags["n"])]))

    first = None

    def run(n: int):
        dg.materialize([numbers], resources=resources, instance=instance, tags={"n": str(n)})
        return manager.load_table("public.numbers").current_snapshot().snapshot_id

    first = run(1)
    run(2)

    def read_old(numbers) -> None:
        RECEIVED["old"] = _as_arrow(library, numbers)

    read_old.__annotations__["numbers"] = ANNOTATIONS[library]
    old = dg.asset(ins={"numbers": dg.AssetIn(metadata={"snapshot_id": first})})(read_old)
    dg.materialize([numbers, old], resources=resources, instance=instance, selection=[old])

    assert RECEIVED["old"].column("id").to_pylist() == [1]
    assert manager.scan("public.numbers").column("id").to_pylist() == [2]


@pytest.mark.parametrize(
    ("writer", "reader"),
    [("pandas", "duckdb"), ("duckdb", "daft"), ("daft", "pandas"), ("polars", "pandas")],
)
def test_one_library_writes_another_reads(writer, reader, resources, instance):
    _materialize(_assets(writer, reader), resources, instance, "2024-01-03")

    assert RECEIVED["2024-01-03"].to_pylist() == _rows("2024-01-03", [1, 2, 3]).to_pylist()


def test_pandas_index_and_categoricals(resources, instance, manager):
    @dg.asset(io_manager_key="iceberg")
    def shops() -> pd.DataFrame:
        frame = pd.DataFrame(
            {"city": pd.Categorical(["Lyon", "Oslo", "Lyon"]), "sales": [3, 4, 5]},
            index=pd.Index([10, 20, 30], name="shop_id"),
        )
        return frame[frame["sales"] > 0]

    dg.materialize([shops], resources=resources, instance=instance)

    stored = manager.scan("public.shops")
    assert stored.column_names == ["shop_id", "city", "sales"]
    assert stored.schema.field("city").type == pa.large_string()
    assert stored.column("city").to_pylist() == ["Lyon", "Oslo", "Lyon"]


class Rows(list):
    """A user's own frame type: a list of dicts."""


class RowsHandler(TypeHandler):
    output_types = (Rows,)
    input_type = Rows

    def to_arrow(self, obj, table_name):
        return pa.Table.from_pylist(list(obj))

    def load(self, request):
        return Rows(read_arrow(request).to_pylist())


def test_a_registered_handler_stores_and_loads_its_type(request, resources, instance):
    handler = RowsHandler()
    register_type_handler(handler)
    request.addfinalizer(lambda: unregister_type_handler(handler))

    @dg.asset(io_manager_key="iceberg")
    def people() -> Rows:
        return Rows([{"name": "ada", "age": 36}])

    @dg.asset
    def greeting(people: Rows) -> None:
        RECEIVED["people"] = people

    assert dg.materialize([people, greeting], resources=resources, instance=instance).success
    assert isinstance(RECEIVED["people"], Rows)
    assert RECEIVED["people"] == [{"name": "ada", "age": 36}]


def test_a_missing_library_names_the_extra_to_install():
    with pytest.raises(InvalidInputError) as error:
        require("not_an_installed_library", "pandas")

    assert "pip install 'floe-dagster-iceberg[pandas]'" in str(error.value)
