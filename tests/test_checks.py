"""Iceberg health asset checks evaluated on real tables."""

import datetime as dt

import dagster as dg
import pyarrow as pa
import pytest

from floe_dagster_iceberg import (
    create_iceberg_resources,
)
from floe_dagster_iceberg.checks import (
    SMALL_FILES_CHECK,
    SNAPSHOT_COUNT_CHECK,
    STALENESS_CHECK,
    build_iceberg_health_checks,
)
from floe_dagster_iceberg.engine.config import PartitionField, WriteConfig


@dg.asset(key_prefix=["lake"], io_manager_key="iceberg", metadata={"write_mode": "append"})
def events() -> pa.Table:
    return pa.table({"id": pa.array([1, 2, 3], pa.int64())})


@dg.asset(key_prefix=["sales"], io_manager_key="iceberg", metadata={"namespace": "raw"})
def orders() -> pa.Table:
    return pa.table({"id": pa.array([1], pa.int64())})


@dg.asset(key_prefix=["lake"], io_manager_key="iceberg")
def daily() -> pa.Table:
    return pa.table({"day": pa.array(["d0"]), "id": pa.array([0], pa.int64())})


def _results(result: dg.ExecuteInProcessResult) -> dict[tuple[str, str], dg.AssetCheckEvaluation]:
    return {
        (evaluation.asset_key.to_user_string(), evaluation.check_name): evaluation
        for evaluation in result.get_asset_check_evaluations()
    }


def test_checks_fail_on_small_files_and_snapshots_then_pass_after_maintenance(
    catalog_resource, instance
):
    resources = create_iceberg_resources(catalog_resource)
    manager = catalog_resource.get_manager()
    for n in range(5):
        manager.write(
            "lake.events", pa.table({"id": pa.array([n], pa.int64())}), WriteConfig(mode="append")
        )
    checks = build_iceberg_health_checks(
        [events], min_small_files=3, max_snapshots=3, max_staleness=dt.timedelta(hours=1)
    )

    result = dg.materialize([events, *checks], resources=resources, instance=instance)

    evaluations = _results(result)
    small = evaluations[("lake/events", SMALL_FILES_CHECK)]
    snapshots = evaluations[("lake/events", SNAPSHOT_COUNT_CHECK)]
    fresh = evaluations[("lake/events", STALENESS_CHECK)]
    assert not small.passed
    assert small.severity == dg.AssetCheckSeverity.WARN
    assert "6 of 6 data files are small" in small.description
    assert small.metadata["iceberg/small_file_ratio"].value == pytest.approx(1.0)
    assert small.metadata["iceberg/table"].value == "lake.events"
    assert not snapshots.passed
    assert snapshots.metadata["iceberg/snapshots"].value == 6
    assert fresh.passed  # just written

    manager.compact("lake.events", target_file_size_bytes=10**7)
    manager.expire_snapshots("lake.events", older_than=dt.timedelta(0), retain_last=2)
    after = _results(
        dg.materialize(
            [events, *checks],
            resources=resources,
            instance=instance,
            selection=dg.AssetSelection.all_asset_checks(),
        )
    )
    assert after[("lake/events", SMALL_FILES_CHECK)].passed
    assert after[("lake/events", SNAPSHOT_COUNT_CHECK)].passed


def test_staleness_ignores_compaction_and_missing_tables_fail(catalog_resource, instance):
    manager = catalog_resource.get_manager()
    manager.write(
        "raw.orders", pa.table({"id": pa.array([1], pa.int64())}), WriteConfig(mode="append")
    )
    manager.write(
        "raw.orders", pa.table({"id": pa.array([2], pa.int64())}), WriteConfig(mode="append")
    )
    manager.compact("raw.orders", target_file_size_bytes=10**7)
    checks = build_iceberg_health_checks(
        [orders, "lake/never_written"],
        max_staleness=dt.timedelta(0),  # any age is too old: compaction must not count as fresh
        severity=dg.AssetCheckSeverity.ERROR,
    )

    result = dg.materialize(
        [dg.AssetSpec(["sales", "orders"]), dg.AssetSpec(["lake", "never_written"]), *checks],
        resources={"iceberg_catalog": catalog_resource},
        instance=instance,
        selection=dg.AssetSelection.all_asset_checks(),
        raise_on_error=False,
    )

    evaluations = _results(result)
    stale = evaluations[("sales/orders", STALENESS_CHECK)]
    assert not stale.passed
    assert stale.severity == dg.AssetCheckSeverity.ERROR
    assert stale.metadata["iceberg/table"].value == "raw.orders"
    assert "data last changed" in stale.description
    missing = evaluations[("lake/never_written", SMALL_FILES_CHECK)]
    assert not missing.passed
    assert "does not exist" in missing.description


def test_check_selection_runs_only_what_is_asked(catalog_resource, instance):
    resources = create_iceberg_resources(catalog_resource)
    assert dg.materialize([events], resources=resources, instance=instance).success
    checks = build_iceberg_health_checks([events], max_staleness=None)
    assert {key.name for key in checks[0].check_keys} == {SMALL_FILES_CHECK, SNAPSHOT_COUNT_CHECK}

    result = dg.materialize(
        [events, *checks],
        resources=resources,
        instance=instance,
        selection=dg.AssetSelection.checks(dg.AssetCheckKey(events.key, SNAPSHOT_COUNT_CHECK)),
    )

    assert list(_results(result)) == [("lake/events", SNAPSHOT_COUNT_CHECK)]
    assert build_iceberg_health_checks([]) == []


def test_only_assets_of_the_iceberg_io_manager_get_checks():
    @dg.asset(key_prefix=["sales"], io_manager_key="iceberg")
    def orders() -> pa.Table:
        return pa.table({"id": pa.array([1], pa.int64())})

    @dg.asset(key_prefix=["sales"], deps=[orders])
    def report() -> None: ...

    @dg.asset(key_prefix=["sales"], io_manager_key="lake")
    def refunds() -> pa.Table:
        return pa.table({"id": pa.array([1], pa.int64())})

    spec = dg.AssetSpec(["sales", "returns"]).with_io_manager_key("iceberg")
    plain_spec = dg.AssetSpec(["sales", "external"])

    def checked(checks: list[dg.AssetChecksDefinition]) -> set[str]:
        return {key.asset_key.to_user_string() for c in checks for key in c.check_keys}

    assets = [orders, report, refunds, spec, plain_spec]
    assert checked(build_iceberg_health_checks(assets)) == {"sales/orders", "sales/returns"}
    assert checked(build_iceberg_health_checks(assets, io_manager_key="lake")) == {"sales/refunds"}
    assert checked(build_iceberg_health_checks(assets, io_manager_key=None)) == {
        "sales/orders",
        "sales/report",
        "sales/refunds",
        "sales/returns",
        "sales/external",
    }
    # Keys say nothing about storage: they are checked as given.
    assert checked(build_iceberg_health_checks([report, "sales/report"])) == {"sales/report"}
    assert build_iceberg_health_checks([report]) == []


def test_lone_small_files_per_partition_do_not_fail_the_small_file_check(
    catalog_resource, instance
):
    manager = catalog_resource.get_manager()
    partitioned = WriteConfig(mode="append", partition_spec=(PartitionField(source_column="day"),))
    days = [f"d{n:02d}" for n in range(21)]  # a backfill: one small file in each of 21 partitions
    manager.write(
        "lake.daily",
        pa.table({"day": pa.array(days), "id": pa.array(range(21), pa.int64())}),
        partitioned,
    )
    checks = build_iceberg_health_checks([daily], min_small_files=3, max_staleness=None)

    def small_file_check() -> dg.AssetCheckEvaluation:
        result = dg.materialize(
            [daily, *checks],
            resources=create_iceberg_resources(catalog_resource),
            instance=instance,
            selection=dg.AssetSelection.checks(dg.AssetCheckKey(daily.key, SMALL_FILES_CHECK)),
        )
        return _results(result)[("lake/daily", SMALL_FILES_CHECK)]

    health = manager.table_health("lake.daily")
    assert (health.small_files, health.partitions, health.compactable_small_files) == (21, 21, 0)
    assert not health.needs_compaction(0.5, 20)
    lone = small_file_check()
    assert lone.passed
    assert "21 of 21 data files are small" in lone.description
    assert lone.metadata["iceberg/small_files"].value == 21
    assert lone.metadata["iceberg/compactable_small_files"].value == 0
    assert not manager.compact("lake.daily", target_file_size_bytes=10**7).committed

    for n in range(25):  # many small files in one partition: compaction can merge them
        manager.write(
            "lake.daily",
            pa.table({"day": pa.array(["d00"]), "id": pa.array([100 + n], pa.int64())}),
            partitioned,
        )
    piled_up = small_file_check()
    assert not piled_up.passed
    assert piled_up.metadata["iceberg/compactable_small_files"].value == 26
    assert piled_up.metadata["iceberg/compactable_small_file_ratio"].value == pytest.approx(
        26 / 46, abs=1e-4
    )

    compacted = manager.compact("lake.daily", target_file_size_bytes=10**7)
    assert compacted.committed
    assert compacted.files_rewritten == 26
    after = small_file_check()
    assert after.passed
    assert after.metadata["iceberg/small_files"].value == 21
    assert after.metadata["iceberg/compactable_small_files"].value == 0


# ---------------------------------------------------------------------- Dagster's built-in checks

DAYS = dg.DailyPartitionsDefinition(start_date="2024-01-01", end_date="2024-02-01")


def _daily_orders(extra_column: bool = False):
    @dg.asset(
        name="orders",
        key_prefix=["shop"],
        io_manager_key="iceberg",
        partitions_def=DAYS,
        metadata={"partition_expr": "day"},
    )
    def orders(context: dg.AssetExecutionContext) -> pa.Table:
        day = context.partition_time_window.start.date()
        columns = {"day": pa.array([day] * 3, pa.date32()), "id": pa.array([1, 2, 3], pa.int64())}
        if extra_column:
            columns["amount"] = pa.array([1.5, 2.5, 3.5])
        return pa.table(columns)

    return orders


def test_row_count_bounds_check_reads_the_whole_table(catalog_resource, instance):
    orders = _daily_orders()
    (bounds,) = dg.build_metadata_bounds_checks(
        assets=[orders], metadata_key="dagster/row_count", max_value=5
    )
    resources = create_iceberg_resources(catalog_resource)
    manager = catalog_resource.get_manager()

    first = dg.materialize(
        [orders, bounds], partition_key="2024-01-01", resources=resources, instance=instance
    )
    second = dg.materialize(
        [orders, bounds], partition_key="2024-01-02", resources=resources, instance=instance
    )

    assert manager.count("shop.orders") == 6
    (check,) = first.get_asset_check_evaluations()
    assert check.passed  # 3 rows in the table
    (check,) = second.get_asset_check_evaluations()
    assert not check.passed  # 6 rows in the table, 3 in the partition: the table counts
    assert f"Value `{manager.count('shop.orders')}`" in (check.description or "")


def test_column_schema_change_check_sees_an_added_column(catalog_resource, instance):
    resources = create_iceberg_resources(catalog_resource)
    for extra_column in (False, True):
        orders = _daily_orders(extra_column)
        (schema_change,) = dg.build_column_schema_change_checks(assets=[orders])
        result = dg.materialize(
            [orders, schema_change],
            partition_key="2024-01-01",
            resources=resources,
            instance=instance,
        )
    (check,) = result.get_asset_check_evaluations()
    assert not check.passed
    assert "Added columns: amount" in (check.description or ""), check.description
    (materialization,) = result.asset_materializations_for_node("shop__orders")
    columns = materialization.metadata["dagster/column_schema"].value.columns
    assert [(c.name, c.type) for c in columns] == [
        ("day", "date"),
        ("id", "bigint"),
        ("amount", "double"),
    ]


def test_last_update_freshness_check_reads_the_commit_time(catalog_resource, instance):
    @dg.asset(key_prefix=["shop"], io_manager_key="iceberg")
    def prices() -> pa.Table:
        return pa.table({"id": pa.array([1], pa.int64())})

    (freshness,) = dg.build_last_update_freshness_checks(
        assets=[prices], lower_bound_delta=dt.timedelta(hours=1)
    )
    result = dg.materialize(
        [prices, freshness], resources=create_iceberg_resources(catalog_resource), instance=instance
    )

    (check,) = result.get_asset_check_evaluations()
    assert check.passed
    committed = catalog_resource.get_manager().snapshots("shop.prices")[-1].timestamp_ms / 1000
    assert check.metadata["dagster/last_updated_timestamp"].value == committed
