"""IcebergIOManager through dagster.materialize: partitions, write modes, schema modes, reads."""

import datetime as dt
import re
from zoneinfo import ZoneInfo

import dagster as dg
import polars as pl
import pyarrow as pa
import pytest
from pyiceberg.transforms import BucketTransform

from floe_dagster_iceberg import (
    IcebergCatalogResource,
    IcebergError,
    IcebergIOManager,
    InvalidInputError,
    PartitionMismatchError,
    SchemaEvolutionError,
)
from floe_dagster_iceberg.metadata import readable_size

UTC = dt.UTC


def _run(assets, resources, instance, **kwargs) -> dg.ExecuteInProcessResult:
    return dg.materialize(assets, resources=resources, instance=instance, **kwargs)


def _metadata(result: dg.ExecuteInProcessResult, node: str) -> dict:
    materialization = result.asset_materializations_for_node(node)[-1]
    return {key: value.value for key, value in materialization.metadata.items()}


def _rows_for_window(
    start: dt.datetime, end: dt.datetime, step: dt.timedelta, tag: str
) -> pa.Table:
    times, current = [], start
    while current < end:
        times.append(current)
        current += step
    return pa.table(
        {
            "ts": pa.array(times, pa.timestamp("us", "UTC")),
            "tag": pa.array([tag] * len(times)),
        }
    )


DAILY = dg.DailyPartitionsDefinition(start_date="2024-01-01", end_date="2024-02-01")


def _daily_events_asset(tag: str = "v1", **asset_kwargs):
    @dg.asset(
        name="events",
        key_prefix=["lake"],
        io_manager_key="iceberg",
        partitions_def=DAILY,
        metadata={"partition_expr": "ts", **asset_kwargs.pop("metadata", {})},
        **asset_kwargs,
    )
    def events(context: dg.AssetExecutionContext) -> pa.Table:
        window = context.partition_time_window
        return _rows_for_window(window.start, window.end, dt.timedelta(hours=6), tag)

    return events


# ---------------------------------------------------------------------- partitions


def test_daily_partitions_overwrite_exactly_their_slice(resources, instance, manager):
    events = _daily_events_asset()
    for key in ["2024-01-01", "2024-01-02", "2024-01-01"]:
        result = _run([events], resources, instance, partition_key=key)

    stored = manager.scan("lake.events").to_pylist()
    assert len(stored) == 8
    metadata = _metadata(result, "lake__events")
    # Dagster's meanings: rows of the whole table after the write, rows of the run's partition.
    assert metadata["dagster/row_count"] == len(stored)
    in_partition = [r for r in stored if r["ts"].date() == dt.date(2024, 1, 1)]
    assert metadata["dagster/partition_row_count"] == len(in_partition) == 4
    assert metadata["dagster/storage_kind"] == "iceberg"
    current = manager.snapshots("lake.events")[-1]
    assert metadata["dagster/last_updated_timestamp"] == current.timestamp_ms / 1000
    assert metadata["dagster/table_name"] == "floe.lake.events"
    assert metadata["dagster/uri"].endswith("lake/events")
    assert metadata["iceberg/rows_deleted"] == 4
    assert metadata["iceberg/size_added"] == readable_size(metadata["iceberg/bytes_added"])
    assert metadata["iceberg/operation"] == "overwrite"
    assert [c.name for c in metadata["dagster/column_schema"].columns] == ["ts", "tag"]
    assert [f.notation for f in manager.partition_fields("lake.events")] == ["day"]
    summary = manager.snapshots("lake.events")[-1].summary
    assert summary["dagster.run-id"] == result.run_id
    assert summary["dagster.asset-key"] == "lake/events"
    assert summary["dagster.partition-keys"] == "2024-01-01"


@pytest.mark.parametrize(
    ("partitions_def", "key", "step", "transform"),
    [
        (
            dg.HourlyPartitionsDefinition(start_date="2024-01-01-00:00"),
            "2024-01-01-05:00",
            dt.timedelta(minutes=20),
            "hour",
        ),
        (
            dg.WeeklyPartitionsDefinition(start_date="2024-01-07"),
            "2024-01-07",
            dt.timedelta(hours=12),
            "day",
        ),
        (
            dg.MonthlyPartitionsDefinition(start_date="2024-01-01"),
            "2024-02-01",
            dt.timedelta(days=1),
            "month",
        ),
        (
            dg.TimeWindowPartitionsDefinition(
                start="2024-01-01-00:00", cron_schedule="0 */6 * * *", fmt="%Y-%m-%d-%H:%M"
            ),
            "2024-01-01-06:00",
            dt.timedelta(minutes=30),
            "hour",
        ),
    ],
    ids=["hourly", "weekly", "monthly", "cron-6h"],
)
def test_time_window_partitions(resources, instance, manager, partitions_def, key, step, transform):
    @dg.asset(
        io_manager_key="iceberg", partitions_def=partitions_def, metadata={"partition_expr": "ts"}
    )
    def windows(context: dg.AssetExecutionContext) -> pa.Table:
        window = context.partition_time_window
        return _rows_for_window(window.start, window.end, step, "x")

    window = partitions_def.time_window_for_partition_key(key)
    expected = _rows_for_window(window.start, window.end, step, "x").num_rows
    _run([windows], resources, instance, partition_key=key)
    _run([windows], resources, instance, partition_key=key)

    assert manager.scan("public.windows").num_rows == expected
    assert [f.notation for f in manager.partition_fields("public.windows")] == [transform]


def test_timezone_windows_on_timestamptz_naive_timestamp_and_date(resources, instance, manager):
    tz = "America/New_York"
    daily_ny = dg.DailyPartitionsDefinition(start_date="2024-01-01", timezone=tz)
    local = ZoneInfo(tz)

    @dg.asset(io_manager_key="iceberg", partitions_def=daily_ny, metadata={"partition_expr": "ts"})
    def aware(context: dg.AssetExecutionContext) -> pa.Table:
        window = context.partition_time_window  # midnight to midnight in New York
        return _rows_for_window(
            window.start, window.end, dt.timedelta(hours=1), context.partition_key
        )

    @dg.asset(io_manager_key="iceberg", partitions_def=daily_ny, metadata={"partition_expr": "ts"})
    def naive(context: dg.AssetExecutionContext) -> pa.Table:
        day = dt.datetime.fromisoformat(context.partition_key)  # wall clock of the partition
        times = [day + dt.timedelta(hours=h) for h in range(24)]
        return pa.table({"ts": pa.array(times, pa.timestamp("us"))})

    @dg.asset(io_manager_key="iceberg", partitions_def=daily_ny, metadata={"partition_expr": "day"})
    def dates(context: dg.AssetExecutionContext) -> pa.Table:
        return pa.table({"day": pa.array([dt.date.fromisoformat(context.partition_key)] * 3)})

    for key in ["2024-01-01", "2024-01-02"]:
        assert _run([aware, naive, dates], resources, instance, partition_key=key).success

    aware_rows = manager.scan("public.aware").to_pylist()
    assert len(aware_rows) == 48
    first_day = [r for r in aware_rows if r["tag"] == "2024-01-01"]
    assert min(r["ts"] for r in first_day) == dt.datetime(2024, 1, 1, tzinfo=local)
    assert manager.scan("public.naive").num_rows == 48
    assert manager.scan("public.dates").num_rows == 6


def test_static_partitions_on_string_and_integer_columns(resources, instance, manager):
    regions = dg.StaticPartitionsDefinition(["eu", "us", "it's; DROP TABLE x; --"])
    shards = dg.StaticPartitionsDefinition(["1", "2", "10"])

    @dg.asset(
        io_manager_key="iceberg", partitions_def=regions, metadata={"partition_expr": "region"}
    )
    def by_region(context: dg.AssetExecutionContext) -> pa.Table:
        return pa.table({"region": [context.partition_key] * 2, "n": [1, 2]})

    @dg.asset(io_manager_key="iceberg", partitions_def=shards, metadata={"partition_expr": "shard"})
    def by_shard(context: dg.AssetExecutionContext) -> pa.Table:
        return pa.table(
            {"shard": pa.array([int(context.partition_key)] * 3, pa.int32()), "v": [1, 2, 3]}
        )

    for key in regions.get_partition_keys():
        _run([by_region], resources, instance, partition_key=key)
    for key in ["1", "10", "10"]:
        _run([by_shard], resources, instance, partition_key=key)

    regions_back = manager.scan("public.by_region").column("region").to_pylist()
    assert sorted(regions_back) == sorted(regions.get_partition_keys() * 2)
    assert sorted(manager.scan("public.by_shard").column("shard").to_pylist()) == [
        1,
        1,
        1,
        10,
        10,
        10,
    ]
    assert [f.notation for f in manager.partition_fields("public.by_shard")] == ["identity"]


def test_dynamic_partitions(resources, instance, manager):
    customers = dg.DynamicPartitionsDefinition(name="customers")
    instance.add_dynamic_partitions("customers", ["acme", "globex"])

    @dg.asset(
        io_manager_key="iceberg", partitions_def=customers, metadata={"partition_expr": "customer"}
    )
    def orders(context: dg.AssetExecutionContext) -> pl.DataFrame:
        return pl.DataFrame({"customer": [context.partition_key] * 4, "amount": [1, 2, 3, 4]})

    _run([orders], resources, instance, partition_key="acme")
    _run([orders], resources, instance, partition_key="globex")
    _run([orders], resources, instance, partition_key="acme")

    assert manager.scan("public.orders").num_rows == 8


def test_multi_partitions_and_polars_downstream(resources, instance, manager):
    multi = dg.MultiPartitionsDefinition(
        {
            "date": dg.DailyPartitionsDefinition(start_date="2024-01-01"),
            "region": dg.StaticPartitionsDefinition(["eu", "us"]),
        }
    )

    @dg.asset(
        io_manager_key="iceberg",
        partitions_def=multi,
        metadata={"partition_expr": {"date": "ts", "region": "region"}},
    )
    def sales(context: dg.AssetExecutionContext) -> pa.Table:
        keys = context.partition_key.keys_by_dimension
        start = dt.datetime.fromisoformat(keys["date"]).replace(tzinfo=UTC)
        table = _rows_for_window(
            start, start + dt.timedelta(days=1), dt.timedelta(hours=8), keys["region"]
        )
        return table.append_column("region", pa.array([keys["region"]] * table.num_rows))

    @dg.asset(io_manager_key="iceberg")
    def sales_by_region(sales: pl.LazyFrame) -> pl.DataFrame:
        return sales.group_by("region").agg(pl.len().alias("rows")).sort("region").collect()

    for date in ["2024-01-01", "2024-01-02"]:
        for region in ["eu", "us"]:
            key = dg.MultiPartitionKey({"date": date, "region": region})
            _run([sales], resources, instance, partition_key=key)
    _run(
        [sales],
        resources,
        instance,
        partition_key=dg.MultiPartitionKey({"date": "2024-01-01", "region": "eu"}),
    )
    _run([sales, sales_by_region], resources, instance, selection=[sales_by_region])

    assert manager.scan("public.sales").num_rows == 12
    assert manager.scan("public.sales_by_region").to_pylist() == [
        {"region": "eu", "rows": 6},
        {"region": "us", "rows": 6},
    ]
    assert sorted(f.notation for f in manager.partition_fields("public.sales")) == [
        "day",
        "identity",
    ]


def test_single_run_range_backfill_writes_exactly_its_range(resources, instance, manager):
    def backfill(start: str, end: str, tag: str) -> dg.ExecuteInProcessResult:
        events = _daily_events_asset(tag=tag, backfill_policy=dg.BackfillPolicy.single_run())
        range_tags = {
            "dagster/asset_partition_range_start": start,
            "dagster/asset_partition_range_end": end,
        }
        return _run([events], resources, instance, tags=range_tags)

    backfill("2024-01-01", "2024-01-07", "first")
    result = backfill("2024-01-03", "2024-01-04", "second")

    rows = manager.scan("lake.events").to_pylist()
    assert len(rows) == 28
    assert sum(r["tag"] == "second" for r in rows) == 8
    metadata = _metadata(result, "lake__events")
    assert metadata["dagster/row_count"] == len(rows)
    # Each key of the range records this metadata: none claims the range's rows as its own.
    assert "dagster/partition_row_count" not in metadata
    assert metadata["iceberg/slice_row_count"] == sum(r["tag"] == "second" for r in rows)
    summary = manager.snapshots("lake.events")[-1].summary
    assert summary["dagster.partition-keys"] == "2024-01-03,2024-01-04"


# ---------------------------------------------------------------------- write modes


def test_append_mode_adds_rows(resources, instance, manager):
    events = _daily_events_asset(metadata={"write_mode": "append"})
    _run([events], resources, instance, partition_key="2024-01-05")
    _run([events], resources, instance, partition_key="2024-01-05")
    assert manager.scan("lake.events").num_rows == 8


def test_upsert_is_scoped_to_the_partition(resources, instance, manager):
    shards = dg.StaticPartitionsDefinition(["1", "2"])
    payloads = {
        "1": {"shard": ["1", "1"], "id": [1, 2], "value": ["a", "b"]},
        "2": {"shard": ["2", "2"], "id": [2, 3], "value": ["B", "c"]},
    }

    @dg.asset(
        io_manager_key="iceberg",
        partitions_def=shards,
        metadata={
            "partition_expr": "shard",
            "write_mode": "upsert",
            "upsert_options": {"join_cols": ["id"]},
        },
    )
    def accounts(context: dg.AssetExecutionContext) -> pa.Table:
        return pa.table(payloads[context.partition_key])

    _run([accounts], resources, instance, partition_key="1")
    result = _run([accounts], resources, instance, partition_key="2")
    payloads["2"] = {"shard": ["2", "2"], "id": [2, 3], "value": ["B2", "c"]}
    again = _run([accounts], resources, instance, partition_key="2")

    rows = sorted(manager.scan("public.accounts").to_pylist(), key=lambda r: (r["shard"], r["id"]))
    assert rows == [
        {"shard": "1", "id": 1, "value": "a"},
        {"shard": "1", "id": 2, "value": "b"},
        {"shard": "2", "id": 2, "value": "B2"},
        {"shard": "2", "id": 3, "value": "c"},
    ]
    assert _metadata(result, "accounts")["iceberg/rows_inserted"] == 2
    metadata = _metadata(again, "accounts")
    assert (metadata["iceberg/rows_updated"], metadata["iceberg/rows_unchanged"]) == (1, 1)


def test_runtime_metadata_sets_write_mode_and_table_properties_merge(resources, instance, manager):
    @dg.asset(io_manager_key="iceberg", metadata={"table_properties": {"owner": "analytics"}})
    def totals(context: dg.AssetExecutionContext) -> pa.Table:
        context.add_output_metadata({"write_mode": "append"})
        return pa.table({"n": [1]})

    _run([totals], resources, instance)
    table = manager.load_table("public.totals")
    with table.transaction() as tx:
        tx.set_properties({"set.elsewhere": "keep"})
    _run([totals], resources, instance)

    properties = manager.load_table("public.totals").properties
    assert manager.scan("public.totals").num_rows == 2
    assert properties["owner"] == "analytics"
    assert properties["set.elsewhere"] == "keep"


def test_none_output_writes_nothing_and_empty_overwrite_clears_the_slice(
    resources, instance, manager
):
    state = {"rows": 3}

    @dg.asset(io_manager_key="iceberg", partitions_def=DAILY, metadata={"partition_expr": "ts"})
    def maybe(context: dg.AssetExecutionContext) -> pa.Table | None:
        if state["rows"] is None:
            return None
        start = context.partition_time_window.start
        return pa.table({"ts": pa.array([start] * state["rows"], pa.timestamp("us", "UTC"))})

    _run([maybe], resources, instance, partition_key="2024-01-01")
    state["rows"] = None
    _run([maybe], resources, instance, partition_key="2024-01-01")
    assert manager.scan("public.maybe").num_rows == 3
    state["rows"] = 0
    _run([maybe], resources, instance, partition_key="2024-01-01")
    assert manager.scan("public.maybe").num_rows == 0


# ---------------------------------------------------------------------- schema modes


def _versioned_asset(columns: dict, mode: str | None = None):
    metadata = {"schema_update_mode": mode} if mode else {}

    @dg.asset(name="profile", io_manager_key="iceberg", metadata=metadata)
    def profile() -> pa.Table:
        return pa.table(columns)

    return profile


def test_additive_schema_mode_adds_and_widens_and_fills_nulls(resources, instance, manager):
    _run([_versioned_asset({"id": pa.array([1], pa.int32()), "name": ["a"]})], resources, instance)
    wider = {"id": pa.array([2], pa.int64()), "email": ["b@x"]}
    _run([_versioned_asset(wider, "additive")], resources, instance)

    table = manager.load_table("public.profile")
    assert str(table.schema().find_field("id").field_type) == "long"
    assert table.scan().to_arrow().to_pylist() == [{"id": 2, "name": None, "email": "b@x"}]


def test_error_schema_mode_refuses_any_difference(resources, instance, manager):
    _run([_versioned_asset({"id": [1], "name": ["a"]})], resources, instance)

    with pytest.raises(SchemaEvolutionError, match="email"):
        _run(
            [_versioned_asset({"id": [2], "name": ["b"], "email": ["x"]}, "error")],
            resources,
            instance,
        )
    assert manager.scan("public.profile").to_pylist() == [{"id": 1, "name": "a"}]


def test_update_schema_mode_drops_missing_columns(resources, instance, manager):
    _run([_versioned_asset({"id": [1], "name": ["a"]})], resources, instance)
    _run([_versioned_asset({"id": [2]}, "update")], resources, instance)
    assert manager.load_table("public.profile").schema().column_names == ["id"]


def test_spec_follows_asset_partitioning_and_keeps_foreign_fields(resources, instance, manager):
    events = _daily_events_asset()
    _run([events], resources, instance, partition_key="2024-01-01")
    table = manager.load_table("lake.events")
    with table.update_spec() as update:
        update.add_field("tag", BucketTransform(4), "tag_bucket")

    hourly = dg.HourlyPartitionsDefinition(start_date="2024-01-01-00:00")

    @dg.asset(
        name="events",
        key_prefix=["lake"],
        io_manager_key="iceberg",
        partitions_def=hourly,
        metadata={"partition_expr": "ts"},
    )
    def events_hourly(context: dg.AssetExecutionContext) -> pa.Table:
        window = context.partition_time_window
        return _rows_for_window(window.start, window.end, dt.timedelta(minutes=15), "h")

    _run([events_hourly], resources, instance, partition_key="2024-01-02-03:00")

    fields = sorted(f.notation for f in manager.partition_fields("lake.events"))
    assert fields == ["bucket[4]", "hour"]
    assert manager.scan("lake.events").num_rows == 8


def test_spec_update_mode_error_refuses_a_changed_partitioning(resources, instance):
    _run([_daily_events_asset()], resources, instance, partition_key="2024-01-01")
    monthly = dg.MonthlyPartitionsDefinition(start_date="2024-01-01")

    @dg.asset(
        name="events",
        key_prefix=["lake"],
        io_manager_key="iceberg",
        partitions_def=monthly,
        metadata={"partition_expr": "ts", "partition_spec_update_mode": "error"},
    )
    def events_monthly(context: dg.AssetExecutionContext) -> pa.Table:
        window = context.partition_time_window
        return _rows_for_window(window.start, window.end, dt.timedelta(days=1), "m")

    with pytest.raises(IcebergError, match="partition_spec_update_mode"):
        _run([events_monthly], resources, instance, partition_key="2024-01-01")


def test_partition_spec_metadata_overrides_the_derived_spec(resources, instance, manager):
    _run(
        [_daily_events_asset(metadata={"partition_spec": {"ts": "day", "tag": "bucket[16]"}})],
        resources,
        instance,
        partition_key="2024-01-01",
    )
    assert sorted(f.notation for f in manager.partition_fields("lake.events")) == [
        "bucket[16]",
        "day",
    ]


# ---------------------------------------------------------------------- reads


def test_inputs_select_columns_and_time_travel(resources, instance, manager):
    counter = {"n": 1}

    @dg.asset(io_manager_key="iceberg")
    def source() -> pa.Table:
        return pa.table({"id": list(range(counter["n"])), "payload": ["x"] * counter["n"]})

    _run([source], resources, instance)
    first_snapshot = manager.load_table("public.source").current_snapshot().snapshot_id
    manager.tag("public.source", "v1")
    counter["n"] = 5
    _run([source], resources, instance)
    seen = {}

    @dg.asset(ins={"source": dg.AssetIn(metadata={"columns": ["id"]})})
    def latest(source: pa.Table) -> None:
        seen["latest"] = (source.num_rows, source.column_names)

    @dg.asset(ins={"source": dg.AssetIn(metadata={"snapshot_id": first_snapshot})})
    def pinned(source: pl.DataFrame) -> None:
        seen["pinned"] = source.height

    @dg.asset(ins={"source": dg.AssetIn(metadata={"ref": "v1"})})
    def tagged(source: pa.Table) -> None:
        seen["tagged"] = source.num_rows

    @dg.asset(ins={"source": dg.AssetIn(metadata={"ref": "v1", "columns": ["id"]})})
    def lazy(source: pl.LazyFrame) -> None:
        seen["lazy"] = source.collect().columns

    @dg.asset
    def stream(source: pa.RecordBatchReader) -> None:
        seen["stream"] = source.read_all().num_rows

    readers = [latest, pinned, tagged, lazy, stream]
    _run([source, *readers], resources, instance, selection=readers)
    assert seen == {"latest": (5, ["id"]), "pinned": 1, "tagged": 1, "lazy": ["id"], "stream": 5}


def test_partition_mapped_loads(resources, instance):
    events = _daily_events_asset()
    weekly = dg.WeeklyPartitionsDefinition(start_date="2024-01-07")
    seen = {}

    @dg.asset(partitions_def=weekly, io_manager_key="iceberg", metadata={"partition_expr": "week"})
    def weekly_counts(context: dg.AssetExecutionContext, events: pl.LazyFrame) -> pl.DataFrame:
        seen["rows"] = events.collect().height
        return pl.DataFrame(
            {"week": [dt.date.fromisoformat(context.partition_key)], "rows": [seen["rows"]]}
        )

    for day in range(7, 15):
        _run([events], resources, instance, partition_key=f"2024-01-{day:02d}")
    _run(
        [events, weekly_counts],
        resources,
        instance,
        partition_key="2024-01-07",
        selection=[weekly_counts],
    )

    assert seen["rows"] == 28


# ---------------------------------------------------------------------- bad input


def test_rows_outside_the_partition_are_refused(resources, instance, manager):
    @dg.asset(
        name="events",
        key_prefix=["lake"],
        io_manager_key="iceberg",
        partitions_def=DAILY,
        metadata={"partition_expr": "ts"},
    )
    def sloppy(context: dg.AssetExecutionContext) -> pa.Table:
        start = context.partition_time_window.start
        return pa.table(
            {"ts": pa.array([start, start + dt.timedelta(days=1), None], pa.timestamp("us", "UTC"))}
        )

    with pytest.raises(PartitionMismatchError, match=r"2 of 3 row.*hold nulls"):
        _run([sloppy], resources, instance, partition_key="2024-01-01")
    assert not manager.table_exists("lake.events")


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ({}, "no partition_expr"),
        ({"partition_expr": "missing"}, "not in the data"),
        ({"partition_expr": "ts", "write_mode": "merge"}, "write_mode='merge' is not valid"),
        ({"partition_expr": "ts", "write_mode": "upsert"}, "join_cols"),
        (
            {"partition_expr": "ts", "partition_spec": {"ts": "fortnight"}},
            "not an Iceberg transform",
        ),
    ],
)
def test_bad_metadata_has_clear_errors(resources, instance, metadata, message):
    @dg.asset(io_manager_key="iceberg", partitions_def=DAILY, metadata=metadata)
    def bad(context: dg.AssetExecutionContext) -> pa.Table:
        return pa.table(
            {"ts": pa.array([context.partition_time_window.start], pa.timestamp("us", "UTC"))}
        )

    with pytest.raises(InvalidInputError, match=message):
        _run([bad], resources, instance, partition_key="2024-01-01")


def test_unsupported_output_type_and_non_integer_key(resources, instance):
    @dg.asset(io_manager_key="iceberg")
    def wrong_type() -> dict:
        return {"a": 1}

    with pytest.raises(InvalidInputError, match=r"stores pyarrow\.Table"):
        _run([wrong_type], resources, instance)

    @dg.asset(
        io_manager_key="iceberg",
        partitions_def=dg.StaticPartitionsDefinition(["x"]),
        metadata={"partition_expr": "n"},
    )
    def int_column(context: dg.AssetExecutionContext) -> pa.Table:
        return pa.table({"n": [1]})

    with pytest.raises(InvalidInputError, match="not integers"):
        _run([int_column], resources, instance, partition_key="x")


def test_rows_outside_the_slice_are_described_as_people_read_the_slice(resources, instance):
    @dg.asset(
        name="events",
        io_manager_key="iceberg",
        partitions_def=DAILY,
        metadata={"partition_expr": "ts"},
    )
    def late(context: dg.AssetExecutionContext) -> pa.Table:
        end = context.partition_time_window.end
        return pa.table({"ts": pa.array([end], pa.timestamp("us", "UTC"))})

    with pytest.raises(PartitionMismatchError) as refused:
        _run([late], resources, instance, partition_key="2024-01-01")
    message = str(refused.value)
    assert "(ts >= 2024-01-01T00:00:00+00:00 and ts < 2024-01-02T00:00:00+00:00)" in message, (
        message
    )
    assert "Reference(" not in message
    assert "literal(" not in message


def test_a_string_column_under_daily_partitions_names_the_asset_and_the_fix(resources, instance):
    @dg.asset(
        key_prefix=["lake"],
        io_manager_key="iceberg",
        partitions_def=DAILY,
        metadata={"partition_expr": "day"},
    )
    def daily_text(context: dg.AssetExecutionContext) -> pa.Table:
        return pa.table({"day": [context.partition_key]})

    with pytest.raises(InvalidInputError) as refused:
        _run([daily_text], resources, instance, partition_key="2024-01-01")
    message = str(refused.value)
    assert message.startswith("Asset lake.daily_text: partition_expr column 'day' has type string")
    assert "str.to_date()" in message


def test_an_upsert_without_join_cols_says_what_to_add_in_one_line(resources, instance, manager):
    @dg.asset(key_prefix=["lake"], io_manager_key="iceberg", metadata={"write_mode": "upsert"})
    def customers() -> pa.Table:
        return pa.table({"id": [1]})

    with pytest.raises(InvalidInputError) as refused:
        _run([customers], resources, instance)
    message = str(refused.value)
    assert message == (
        "Asset lake.customers: write_mode 'upsert' needs the key columns that identify a row; "
        'add them, e.g. metadata={"write_mode": "upsert", "upsert_options": {"join_cols": ["id"]}}.'
    )
    assert not manager.table_exists("lake.customers")


@pytest.mark.parametrize(
    ("upsert_options", "message"),
    [
        ({"join_col": ["id"]}, "unknown upsert_options key(s) 'join_col'; the keys are join_cols"),
        ({"join_cols": ["id"], "scope": "global"}, "upsert_options.scope='global' is not valid"),
        ({"join_cols": [1]}, "upsert_options.join_cols=[1] is not a list of column names"),
    ],
)
def test_bad_upsert_options_are_named(resources, instance, upsert_options, message):
    @dg.asset(
        io_manager_key="iceberg",
        metadata={"write_mode": "upsert", "upsert_options": upsert_options},
    )
    def customers() -> pa.Table:
        return pa.table({"id": [1]})

    with pytest.raises(InvalidInputError, match=re.escape(message)):
        _run([customers], resources, instance)


# ---------------------------------------------------------------------- community compatibility


def test_an_asset_written_for_the_community_package_works_unchanged(
    catalog_resource, instance, manager
):
    @dg.asset(
        key_prefix=["analytics"],
        partitions_def=DAILY,
        metadata={
            "partition_expr": "ts",
            "write_mode": "overwrite",
            "schema_update_mode": "additive",
            "partition_spec_update_mode": "update",
            "table_properties": {"write.parquet.compression-codec": "zstd"},
        },
    )
    def page_views(context: dg.AssetExecutionContext) -> pa.Table:
        window = context.partition_time_window
        return _rows_for_window(window.start, window.end, dt.timedelta(hours=1), "pv")

    @dg.asset(
        key_prefix=["analytics"],
        ins={"page_views": dg.AssetIn(key_prefix=["analytics"], metadata={"columns": ["ts"]})},
        partitions_def=DAILY,
        metadata={"partition_expr": "ts"},
    )
    def page_view_count(context: dg.AssetExecutionContext, page_views: pa.Table) -> pa.Table:
        start = context.partition_time_window.start
        return pa.table(
            {"ts": pa.array([start], pa.timestamp("us", "UTC")), "views": [page_views.num_rows]}
        )

    resources = {"io_manager": IcebergIOManager(catalog=catalog_resource, namespace="analytics")}
    result = dg.materialize(
        [page_views, page_view_count],
        resources=resources,
        instance=instance,
        partition_key="2024-01-03",
    )

    assert result.success
    assert manager.scan("analytics.page_views").num_rows == 24
    assert manager.scan("analytics.page_view_count").column("views").to_pylist() == [24]


def test_streamed_outputs_lazy_frame_and_record_batch_reader(resources, instance, manager):
    @dg.asset(io_manager_key="iceberg")
    def lazy_numbers() -> pl.LazyFrame:
        return pl.LazyFrame({"n": list(range(50_000))}).with_columns(
            (pl.col("n") * 2).alias("double")
        )

    @dg.asset(io_manager_key="iceberg", metadata={"write_mode": "append"})
    def batches() -> pa.RecordBatchReader:
        schema = pa.schema([("n", pa.int64())])
        chunks = (
            pa.record_batch([pa.array(range(i, i + 100), pa.int64())], schema=schema)
            for i in range(0, 1000, 100)
        )
        return pa.RecordBatchReader.from_batches(schema, chunks)

    _run([lazy_numbers, batches], resources, instance)
    _run([lazy_numbers, batches], resources, instance)

    numbers = manager.scan("public.lazy_numbers")
    assert numbers.num_rows == 50_000
    assert numbers.column("double").to_pylist()[:3] == [0, 2, 4]
    assert manager.scan("public.batches").num_rows == 2000


def test_retried_append_of_the_same_run_is_not_applied_twice(resources, instance, manager):
    metadata = {"partition_expr": "ts", "write_mode": "append"}

    @dg.asset(io_manager_key="iceberg", partitions_def=DAILY, metadata=metadata)
    def appended(context: dg.AssetExecutionContext) -> pa.Table:
        start = context.partition_time_window.start
        return pa.table({"ts": pa.array([start] * 3, pa.timestamp("us", "UTC"))})

    first = _run([appended], resources, instance, partition_key="2024-01-01")
    # A step retry of the same run (e.g. after an outage hid that the commit landed) hands the
    # same output to the IO manager again.
    retry_context = dg.build_output_context(
        asset_key=dg.AssetKey("appended"),
        partition_key="2024-01-01",
        run_id=first.run_id,
        definition_metadata=metadata,
        asset_partitions_def=DAILY,
    )
    start = dt.datetime(2024, 1, 1, tzinfo=UTC)
    resources["iceberg"].handle_output(
        retry_context, pa.table({"ts": pa.array([start] * 3, pa.timestamp("us", "UTC"))})
    )
    assert manager.scan("public.appended").num_rows == 3

    assert _run([appended], resources, instance, partition_key="2024-01-01").success
    assert manager.scan("public.appended").num_rows == 6


def test_default_io_manager_and_a_single_join_column_given_as_a_string(
    tmp_path, monkeypatch, instance
):
    monkeypatch.setenv("FLOE_ICEBERG_HOME", str(tmp_path))
    values = {"v": "x"}

    @dg.asset(
        io_manager_key="iceberg",
        metadata={"write_mode": "upsert", "upsert_options": {"join_cols": "id"}},
    )
    def keyed() -> pa.Table:
        return pa.table({"id": [1, 2], "v": [values["v"], "y"]})

    resources = {"iceberg": IcebergIOManager()}
    _run([keyed], resources, instance)
    values["v"] = "changed"
    result = _run([keyed], resources, instance)

    rows = IcebergCatalogResource().get_manager().scan("public.keyed").sort_by("id").to_pylist()
    assert rows == [{"id": 1, "v": "changed"}, {"id": 2, "v": "y"}]
    assert _metadata(result, "keyed")["iceberg/rows_updated"] == 1


def test_change_batches_through_the_io_manager(resources, instance, manager):
    batches = [
        {"id": [1, 2, 3], "v": [1, 1, 1], "op": ["I", "I", "I"], "x": [10, 20, 30]},
        {"id": [2, 3, 2], "v": [3, 2, 4], "op": ["U", "D", "U"], "x": [21, 0, 22]},
        {"id": [1], "v": [0], "op": ["U"], "x": [-1]},  # late: older than the row
    ]

    @dg.asset(
        key_prefix=["lake"],
        io_manager_key="iceberg",
        metadata={
            "write_mode": "upsert",
            "upsert_options": {
                "join_cols": ["id"],
                "delete_column": "op",
                "delete_values": ["D"],
                "version_column": "v",
            },
        },
    )
    def customers(context: dg.AssetExecutionContext) -> pa.Table:
        return pa.table(batches[int(context.run.tags["batch"])])

    results = [_run([customers], resources, instance, tags={"batch": str(i)}) for i in range(3)]

    stored = sorted(manager.scan("lake.customers").to_pylist(), key=lambda r: r["id"])
    assert [(r["id"], r["v"], r["x"]) for r in stored] == [(1, 1, 10), (2, 4, 22)]
    second = _metadata(results[1], "lake__customers")
    assert (second["iceberg/rows_removed"], second["iceberg/rows_updated"]) == (1, 1)
    assert _metadata(results[2], "lake__customers")["iceberg/rows_unchanged"] == 1
