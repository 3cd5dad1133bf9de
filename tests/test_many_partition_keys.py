"""Runs over many static keys: single-run backfills write, count and load exactly their keys.

A slice of many keys is read with a key range and the exact keys applied to the rows read, and
counted from the data files' partition values (or the rows written): the cost grows with the
keys and the files, never with keys x files. Rows of values inside the key range that are not
keys of the run (written by someone else) must never leak into a load or a count.
"""

import datetime as dt

import dagster as dg
import polars as pl
import pyarrow as pa
import pytest

from floe_dagster_iceberg import (
    EmbeddedCatalogConfig,
    IcebergCatalogResource,
    PartitionField,
    WriteConfig,
)
from floe_dagster_iceberg import create_iceberg_resources as iceberg_resources
from floe_dagster_iceberg.slices import FEW_KEYS, build_partition_slice, count_rows

RANGE_START = "dagster/asset_partition_range_start"
RANGE_END = "dagster/asset_partition_range_end"


@pytest.fixture
def catalog_resource(tmp_path) -> IcebergCatalogResource:
    return IcebergCatalogResource(catalog=EmbeddedCatalogConfig(home=str(tmp_path)))


@pytest.fixture
def resources(catalog_resource):
    return iceberg_resources(catalog_resource)


@pytest.fixture
def manager(catalog_resource):
    return catalog_resource.get_manager()


@pytest.fixture
def instance():
    # In-memory event log: Dagster itself stores two events per partition key of a run.
    return dg.DagsterInstance.ephemeral()


def _range(keys: list[str]) -> dict[str, str]:
    return {RANGE_START: keys[0], RANGE_END: keys[-1]}


def _materializations(result: dg.ExecuteInProcessResult, node: str) -> list[dict]:
    return [
        {key: value.value for key, value in m.metadata.items()}
        for m in result.asset_materializations_for_node(node)
    ]


def _loaders(partitions: dg.PartitionsDefinition, seen: dict) -> list:
    """Downstream assets loading the run's slice of ``events`` as every input type."""
    single_run = dg.BackfillPolicy.single_run()

    @dg.asset(partitions_def=partitions, backfill_policy=single_run)
    def as_arrow(events: pa.Table) -> None:
        seen["arrow"] = sorted(events.column("key").to_pylist())

    @dg.asset(
        partitions_def=partitions,
        backfill_policy=single_run,
        ins={"events": dg.AssetIn(metadata={"columns": ["n"]})},
    )
    def only_n(events: pa.Table) -> None:
        seen["only_n"] = (events.column_names, events.num_rows)

    @dg.asset(partitions_def=partitions, backfill_policy=single_run)
    def as_polars(events: pl.DataFrame) -> None:
        seen["polars"] = sorted(events["key"].to_list())

    @dg.asset(partitions_def=partitions, backfill_policy=single_run)
    def as_lazy(events: pl.LazyFrame) -> None:
        seen["lazy"] = sorted(events.collect()["key"].to_list())

    @dg.asset(partitions_def=partitions, backfill_policy=single_run)
    def as_stream(events: pa.RecordBatchReader) -> None:
        seen["stream"] = sorted(events.read_all().column("key").to_pylist())

    return [as_arrow, only_n, as_polars, as_lazy, as_stream]


def _keyed_asset(partitions: dg.PartitionsDefinition, column_type: str, **metadata):
    """Two rows per partition key of the run, in a column of ``column_type``."""

    def convert(key: str):
        convert = {"string": str, "long": int, "date": dt.date.fromisoformat}[column_type]
        return convert(key)

    arrow_type = {"string": pa.string(), "long": pa.int64(), "date": pa.date32()}[column_type]

    @dg.asset(
        name="events",
        partitions_def=partitions,
        io_manager_key="iceberg",
        backfill_policy=dg.BackfillPolicy.single_run(),
        metadata={"partition_expr": "key", **metadata},
    )
    def events(context: dg.AssetExecutionContext) -> pa.Table:
        keys = [convert(k) for k in context.partition_keys for _ in range(2)]
        return pa.table({"key": pa.array(keys, arrow_type), "n": list(range(len(keys)))})

    return events


def _expected(keys, copies: int) -> list:
    return sorted(k for k in keys for _ in range(copies))


@pytest.mark.parametrize(
    "partition_spec", [None, {"key": "truncate[3]"}], ids=["identity", "truncated"]
)
def test_many_keys_load_and_count_exactly_their_keys(resources, instance, manager, partition_spec):
    """Appends over 40 of 80 keys: the slice's row count and every kind of load see exactly
    the run's keys, not the values in between that someone else wrote."""
    keys = [f"k{i:03d}" for i in range(80)]
    partitions = dg.StaticPartitionsDefinition(keys)
    extra = {"partition_spec": partition_spec} if partition_spec else {}
    events = _keyed_asset(partitions, "string", write_mode="append", **extra)
    seen: dict = {}
    loaders = _loaders(partitions, seen)

    first = dg.materialize([events], resources=resources, instance=instance, tags=_range(keys))
    strays = pa.table({"key": ["k0105", "k0405", "k0499"], "n": [-1, -2, -3]})
    manager.write("public.events", strays, WriteConfig(mode="append"))
    run = keys[10:50]
    assert len(run) > FEW_KEYS
    second = dg.materialize([events], resources=resources, instance=instance, tags=_range(run))
    dg.materialize(
        [events, *loaders], resources=resources, instance=instance, tags=_range(run),
        selection=loaders,
    )  # fmt: skip

    assert {m["dagster/row_count"] for m in _materializations(first, "events")} == {160}
    metadata = _materializations(second, "events")
    assert len(metadata) == len(run)
    # 40 keys x 2 rows x 2 runs in the run's slice; the strays k0105 and k0405 lie in the key range, not in the keys
    assert {m["iceberg/slice_row_count"] for m in metadata} == {160}
    assert {m["iceberg/rows_added"] for m in metadata} == {80}
    assert metadata[0]["iceberg/partition_filter"] == "key in 40 values ('k010' ... 'k049')"
    expected = _expected(run, 4)
    assert seen == {
        "arrow": expected,
        "only_n": (["n"], 160),
        "polars": expected,
        "lazy": expected,
        "stream": expected,
    }


@pytest.mark.parametrize("column_type", ["long", "date"])
def test_many_integer_and_date_keys_with_values_between_them(
    resources, instance, manager, column_type
):
    """Keys every other value: the values between them (written by someone else) are inside
    the key range, so only the exact keys may select rows."""
    if column_type == "long":
        keys = [str(i) for i in range(0, 200, 2)]
        strays = pa.array([3, 51, 97], pa.int64())
    else:
        day0 = dt.date(2024, 1, 1)
        keys = [(day0 + dt.timedelta(days=2 * i)).isoformat() for i in range(100)]
        strays = pa.array([day0 + dt.timedelta(days=d) for d in (3, 51, 97)], pa.date32())
    partitions = dg.StaticPartitionsDefinition(keys)
    events = _keyed_asset(partitions, column_type, write_mode="append")
    seen: dict = {}
    loaders = _loaders(partitions, seen)

    dg.materialize([events], resources=resources, instance=instance, tags=_range(keys))
    manager.write("public.events", pa.table({"key": strays, "n": [-1, -2, -3]}))
    run = keys[5:60]  # 10..118, or the 6th to the 60th date
    result = dg.materialize([events], resources=resources, instance=instance, tags=_range(run))
    dg.materialize(
        [events, *loaders], resources=resources, instance=instance, tags=_range(run),
        selection=loaders,
    )  # fmt: skip

    assert {m["iceberg/slice_row_count"] for m in _materializations(result, "events")} == {4 * 55}
    convert = int if column_type == "long" else dt.date.fromisoformat
    expected = _expected([convert(k) for k in run], 4)
    assert seen["arrow"] == seen["polars"] == seen["lazy"] == seen["stream"] == expected
    assert seen["only_n"] == (["n"], 4 * 55)


def test_many_multi_partition_keys(resources, instance, manager):
    """A range of multi-partition keys over 36 of 40 keys of one dimension and 2 of 3 of the
    other: loads and counts see exactly the run's keys."""
    multi = dg.MultiPartitionsDefinition(
        {
            "a": dg.StaticPartitionsDefinition([f"a{i:02d}" for i in range(40)]),
            "b": dg.StaticPartitionsDefinition(["b0", "b1", "b2"]),
        }
    )
    all_keys = multi.get_partition_keys()
    run_range = {RANGE_START: "a02|b0", RANGE_END: "a37|b1"}
    seen: dict = {}

    @dg.asset(
        partitions_def=multi,
        io_manager_key="iceberg",
        backfill_policy=dg.BackfillPolicy.single_run(),
        metadata={"partition_expr": {"a": "a", "b": "b"}, "write_mode": "append"},
    )
    def events(context: dg.AssetExecutionContext) -> pa.Table:
        pairs = [k.keys_by_dimension for k in context.partition_keys]
        return pa.table({"a": [p["a"] for p in pairs], "b": [p["b"] for p in pairs]})

    @dg.asset(partitions_def=multi, backfill_policy=dg.BackfillPolicy.single_run())
    def pairs(events: pa.Table) -> None:
        seen["arrow"] = sorted(zip(events["a"].to_pylist(), events["b"].to_pylist(), strict=True))

    @dg.asset(partitions_def=multi, backfill_policy=dg.BackfillPolicy.single_run())
    def lazy_pairs(events: pl.LazyFrame) -> None:
        frame = events.collect()
        seen["lazy"] = sorted(zip(frame["a"].to_list(), frame["b"].to_list(), strict=True))

    dg.materialize([events], resources=resources, instance=instance, tags=_range(all_keys))
    manager.write("public.events", pa.table({"a": ["a10x", "a20"], "b": ["b0", "b2"]}))
    result = dg.materialize([events], resources=resources, instance=instance, tags=run_range)
    dg.materialize(
        [events, pairs, lazy_pairs], resources=resources, instance=instance, tags=run_range,
        selection=[pairs, lazy_pairs],
    )  # fmt: skip

    run = [(f"a{i:02d}", b) for i in range(2, 38) for b in ("b0", "b1")]
    assert len(run) == len(_materializations(result, "events")) == 72
    assert {m["iceberg/slice_row_count"] for m in _materializations(result, "events")} == {144}
    assert seen == {"arrow": sorted(run * 2), "lazy": sorted(run * 2)}


def test_slice_of_key_combinations_that_are_not_a_product(manager):
    """Multi-partition keys that are not every combination of their dimensions' keys (a
    backfill of hand-picked partitions): scans get each dimension's keys, the rows read are
    matched against the combinations, and counts come from the partition values."""
    multi = dg.MultiPartitionsDefinition(
        {
            "a": dg.StaticPartitionsDefinition([f"a{i:02d}" for i in range(40)]),
            "b": dg.StaticPartitionsDefinition(["b0", "b1", "b2"]),
        }
    )
    every = [(f"a{i:02d}", b) for i in range(40) for b in ("b0", "b1", "b2")]
    chosen = [pair for n, pair in enumerate(every) if n % 4 != 1]  # not a product
    spec = (PartitionField(source_column="a"), PartitionField(source_column="b"))
    data = pa.table({"a": [a for a, _ in every], "b": [b for _, b in every], "n": range(120)})
    manager.write("public.pairs", data, WriteConfig(partition_spec=spec))
    manager.write("public.pairs", pa.table({"a": ["a05x"], "b": ["b0"], "n": [-1]}))
    table = manager.load_table("public.pairs")
    keys = [dg.MultiPartitionKey({"a": a, "b": b}) for a, b in chosen]

    partition_slice = build_partition_slice(
        asset="pairs",
        partitions_def=multi,
        partition_keys=keys,
        partition_expr={"a": "a", "b": "b"},
        column_types={f.name: f.field_type for f in table.schema().fields},
    )

    assert len(str(partition_slice.scan_filter)) < 1000  # each dimension's keys, not 80 pairs
    read = partition_slice.keep(manager.scan(table, partition_slice.scan_filter))
    assert sorted(zip(read["a"].to_pylist(), read["b"].to_pylist(), strict=True)) == chosen
    lazy = partition_slice.keep_lazy(pl.scan_iceberg(table)).collect()
    assert sorted(zip(lazy["a"].to_list(), lazy["b"].to_list(), strict=True)) == chosen
    assert count_rows(manager, table, partition_slice) == len(chosen)


@pytest.mark.slow
@pytest.mark.timeout(2400)  # a guard against a hang, not a performance target
def test_single_run_backfill_over_10000_static_keys(resources, instance, manager):
    """One run writes all 10,000 keys in one commit, reports exact row counts, and a
    downstream asset loads the whole slice (every key of the run)."""
    keys = [f"key-{i:05d}" for i in range(10_000)]
    partitions = dg.StaticPartitionsDefinition(keys)
    events = _keyed_asset(partitions, "string")
    seen: dict = {}

    @dg.asset(ins={"events": dg.AssetIn()})
    def everything(events: pa.Table) -> None:  # depends on every partition of events
        seen["rows"] = events.num_rows
        seen["keys"] = sorted(set(events.column("key").to_pylist()))

    result = dg.materialize([events], resources=resources, instance=instance, tags=_range(keys))
    dg.materialize([events, everything], resources=resources, instance=instance,
                   selection=[everything])  # fmt: skip

    metadata = _materializations(result, "events")
    assert len(metadata) == 10_000
    assert {m["dagster/row_count"] for m in metadata} == {20_000}
    assert {m["iceberg/rows_added"] for m in metadata} == {20_000}
    assert len(manager.snapshots("public.events")) == 1
    assert seen["rows"] == 20_000
    assert seen["keys"] == keys
