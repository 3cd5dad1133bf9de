"""Inputs as users annotate them: Optional, dict per partition, unsupported types, increments."""

import datetime as dt

import dagster as dg
import polars as pl
import pyarrow as pa
import pytest

from floe_dagster_iceberg import (
    CustomCatalogConfig,
    IcebergCatalogResource,
    IcebergIOManager,
    InvalidInputError,
    WriteConfig,
    create_iceberg_resources,
)

DAILY = dg.DailyPartitionsDefinition(start_date="2024-01-01", end_date="2024-01-10")
RECEIVED: dict[str, object] = {}


@pytest.fixture(autouse=True)
def _clear_received():
    RECEIVED.clear()


def _day_rows(day: str, n: int = 3) -> pa.Table:
    return pa.table(
        {
            "day": pa.array([dt.date.fromisoformat(day)] * n),
            "n": list(range(n)),
            "label": [f"{day}/{i}" for i in range(n)],
        }
    )


@dg.asset(io_manager_key="iceberg", partitions_def=DAILY, metadata={"partition_expr": "day"})
def daily(context: dg.AssetExecutionContext) -> pa.Table:
    return _day_rows(context.partition_key)


def _run(assets, resources, instance, selection=None, **kwargs):
    return dg.materialize(
        assets, resources=resources, instance=instance, selection=selection, **kwargs
    )


def test_optional_polars_input_gets_a_polars_frame(resources, instance):
    @dg.asset(partitions_def=DAILY)
    def consumer(daily: pl.DataFrame | None) -> None:
        RECEIVED["frame"] = daily

    result = _run([daily, consumer], resources, instance, partition_key="2024-01-02")

    assert result.success
    frame = RECEIVED["frame"]
    assert isinstance(frame, pl.DataFrame)
    assert frame.sort("n").to_dicts() == _day_rows("2024-01-02").to_pylist()


def test_optional_input_is_none_for_a_partition_never_written(resources, instance):
    from typing import Optional

    @dg.asset(partitions_def=DAILY)
    def consumer(daily: Optional[pa.Table]) -> None:  # noqa: UP045
        RECEIVED["frame"] = daily

    _run([daily, consumer], resources, instance, partition_key="2024-01-02")
    result = _run(
        [daily, consumer], resources, instance, partition_key="2024-01-05", selection=[consumer]
    )

    assert result.success
    assert RECEIVED["frame"] is None


def test_optional_input_is_none_when_the_table_does_not_exist(resources, instance):
    @dg.asset(partitions_def=DAILY)
    def consumer(daily: pl.LazyFrame | None) -> None:
        RECEIVED["frame"] = daily

    result = _run(
        [daily, consumer], resources, instance, partition_key="2024-01-05", selection=[consumer]
    )

    assert result.success
    assert RECEIVED["frame"] is None


def test_dict_input_has_one_frame_per_partition_key(resources, instance):
    days = ["2024-01-01", "2024-01-02", "2024-01-03"]
    for day in days[:2]:
        _run([daily], resources, instance, partition_key=day)

    @dg.asset(deps=[], ins={"daily": dg.AssetIn(partition_mapping=dg.AllPartitionMapping())})
    def everything(daily: dict[str, pl.DataFrame | None]) -> None:
        RECEIVED["frames"] = daily

    result = _run([daily, everything], resources, instance, selection=[everything])

    assert result.success
    frames = RECEIVED["frames"]
    assert set(frames) == set(DAILY.get_partition_keys())
    for day in days[:2]:
        assert frames[day].sort("n").to_dicts() == _day_rows(day).to_pylist()
    assert frames["2024-01-03"] is None


def test_dict_input_of_frames_gives_empty_frames_for_missing_keys(resources, instance):
    _run([daily], resources, instance, partition_key="2024-01-01")

    @dg.asset(ins={"daily": dg.AssetIn(partition_mapping=dg.AllPartitionMapping())})
    def everything(daily: dict[str, pa.Table]) -> None:
        RECEIVED["frames"] = daily

    _run([daily, everything], resources, instance, selection=[everything])

    frames = RECEIVED["frames"]
    assert frames["2024-01-01"].num_rows == 3
    assert frames["2024-01-04"].num_rows == 0
    assert frames["2024-01-04"].schema.names == ["day", "n", "label"]


def test_unsupported_annotation_names_the_loadable_types(resources, instance):
    _run([daily], resources, instance, partition_key="2024-01-01")

    @dg.asset(partitions_def=DAILY)
    def consumer(daily: list[int]) -> None:
        RECEIVED["frame"] = daily

    with pytest.raises(InvalidInputError) as error:
        _run(
            [daily, consumer], resources, instance, partition_key="2024-01-01", selection=[consumer]
        )

    message = str(error.value)
    assert "Input 'daily'" in message
    assert "polars.DataFrame" in message
    assert "pyarrow.Table" in message
    assert "dict[str, ...]" in message


def test_string_type_setting_decides_the_input_schema(catalog_resource, instance):
    resources = create_iceberg_resources(catalog_resource)
    _run([daily], resources, instance, partition_key="2024-01-01")
    regular = {
        **resources,
        "iceberg": IcebergIOManager(catalog=catalog_resource, string_type="string"),
    }

    @dg.asset(partitions_def=DAILY)
    def consumer(daily: pa.Table) -> None:
        RECEIVED["frame"] = daily

    _run([daily, consumer], resources, instance, partition_key="2024-01-01", selection=[consumer])
    large = RECEIVED["frame"].schema.field("label").type
    _run([daily, consumer], regular, instance, partition_key="2024-01-01", selection=[consumer])
    small = RECEIVED["frame"].schema.field("label").type

    assert (large, small) == (pa.large_string(), pa.string())


# ---------------------------------------------------------------------- incremental inputs


@dg.asset(io_manager_key="iceberg", metadata={"write_mode": "append"})
def log(context: dg.AssetExecutionContext) -> pa.Table:
    batch = int(context.run.tags.get("batch", "0"))
    return pa.table({"batch": [batch] * 2, "i": [0, 1]})


@dg.asset(ins={"log": dg.AssetIn(metadata={"incremental": True})})
def new_rows(log: pa.Table) -> None:
    RECEIVED.setdefault("increments", []).append(sorted(log["batch"].to_pylist()))


def _append_batch(resources, instance, batch: int) -> None:
    assert _run([log], resources, instance, tags={"batch": str(batch)}).success


def test_incremental_input_reads_only_rows_appended_since_its_last_run(resources, instance):
    _append_batch(resources, instance, 1)
    _append_batch(resources, instance, 2)
    _run([log, new_rows], resources, instance, selection=[new_rows])
    _append_batch(resources, instance, 3)
    _run([log, new_rows], resources, instance, selection=[new_rows])
    _run([log, new_rows], resources, instance, selection=[new_rows])

    assert RECEIVED["increments"] == [[1, 1, 2, 2], [3, 3], []]
    recorded = instance.get_latest_materialization_event(new_rows.key).asset_materialization
    assert "floe/incremental/public.log" in recorded.metadata


def test_incremental_input_refuses_a_range_with_an_overwrite(resources, instance, manager):
    _append_batch(resources, instance, 1)
    _run([log, new_rows], resources, instance, selection=[new_rows])
    replace_all = WriteConfig(mode="overwrite")
    manager.write("public.log", pa.table({"batch": [9], "i": [0]}), replace_all)

    with pytest.raises(InvalidInputError) as error:
        _run([log, new_rows], resources, instance, selection=[new_rows])

    message = str(error.value)
    assert "public.log" in message
    assert "overwrite" in message
    assert "from_snapshot_id=" in message
    assert RECEIVED["increments"] == [[1, 1]]


DAYS = dg.DailyPartitionsDefinition(start_date="2024-01-01", end_date="2024-01-05")


@dg.asset(partitions_def=DAYS, ins={"log": dg.AssetIn(metadata={"incremental": True})})
def daily_increment(context: dg.AssetExecutionContext, log: pa.Table) -> None:
    RECEIVED.setdefault(context.partition_key, []).append(sorted(log["batch"].to_pylist()))


def test_rerun_of_a_consumer_partition_repeats_its_increment(resources, instance):
    def consume(day: str) -> None:
        _run([log, daily_increment], resources, instance, selection=[daily_increment],
             partition_key=day)  # fmt: skip

    _append_batch(resources, instance, 1)
    consume("2024-01-01")
    _append_batch(resources, instance, 2)
    consume("2024-01-02")
    _append_batch(resources, instance, 3)
    consume("2024-01-01")

    assert RECEIVED["2024-01-01"] == [[1, 1], [1, 1]]
    assert RECEIVED["2024-01-02"] == [[2, 2]]


def test_explicit_snapshot_range_input(resources, instance, manager):
    _append_batch(resources, instance, 1)
    first = manager.load_table("public.log").current_snapshot().snapshot_id
    _append_batch(resources, instance, 2)
    second = manager.load_table("public.log").current_snapshot().snapshot_id
    _append_batch(resources, instance, 3)

    @dg.asset(
        ins={"log": dg.AssetIn(metadata={"from_snapshot_id": first, "to_snapshot_id": second})}
    )
    def between(log: pa.Table) -> None:
        RECEIVED["between"] = sorted(log["batch"].to_pylist())

    _run([log, between], resources, instance, selection=[between])

    assert RECEIVED["between"] == [2, 2]


# ---------------------------------------------------------------------- reader choices


@dg.asset(io_manager_key="iceberg")
def numbers() -> pa.Table:
    return pa.table({"n": [3, 1, 2], "name": ["c", "a", "b"]})


@dg.asset
def lazy_numbers(numbers: pl.LazyFrame) -> None:
    RECEIVED["lazy"] = numbers.sort("n").collect()


def test_polars_reader_pyiceberg_loads_lazy_frames(catalog_resource, instance):
    resources = {
        **create_iceberg_resources(catalog_resource),
        "iceberg": IcebergIOManager(catalog=catalog_resource, polars_reader="pyiceberg"),
    }

    assert _run([numbers, lazy_numbers], resources, instance).success
    assert RECEIVED["lazy"].to_dicts() == numbers().sort_by("n").to_pylist()


def test_fsspec_file_io_writes_and_reads_s3(s3_sql_catalog_properties, instance):
    catalog_resource = IcebergCatalogResource(
        catalog=CustomCatalogConfig(properties=s3_sql_catalog_properties), file_io="fsspec"
    )
    resources = create_iceberg_resources(catalog_resource)

    assert _run([numbers, lazy_numbers], resources, instance).success
    assert RECEIVED["lazy"].to_dicts() == numbers().sort_by("n").to_pylist()
    table = catalog_resource.get_manager().load_table("public.numbers")
    assert type(table.io).__name__ == "FsspecFileIO"
    assert table.location().startswith("s3://")
