"""Maintenance jobs, schedules and the compaction sensor, run the way Dagster runs them."""

import datetime as dt
import itertools
import os
import subprocess
import sys

import dagster as dg
import pyarrow as pa
import pytest

from floe_dagster_iceberg import (
    EmbeddedCatalogConfig,
    IcebergCatalogResource,
    create_iceberg_resources,
)
from floe_dagster_iceberg.maintenance_jobs import (
    build_iceberg_compaction_sensor,
    build_iceberg_maintenance_definitions,
    build_iceberg_maintenance_job,
    build_iceberg_maintenance_op,
    build_iceberg_maintenance_schedule,
    iceberg_asset_tables,
    maintain_op_name,
)
from floe_dagster_iceberg.models import WriteConfig

_ids = itertools.count()


def _appending_asset(name: str, prefix: str = "lake"):
    @dg.asset(
        name=name, key_prefix=[prefix], io_manager_key="iceberg", metadata={"write_mode": "append"}
    )
    def appended() -> pa.Table:
        start = next(_ids) * 3
        return pa.table({"id": pa.array(range(start, start + 3), pa.int64()), "name": [name] * 3})

    return appended


@dg.asset(key_prefix=["lake"])
def not_iceberg() -> int:
    return 1


@pytest.fixture
def catalog_resource(tmp_path) -> IcebergCatalogResource:
    return IcebergCatalogResource(catalog=EmbeddedCatalogConfig(home=str(tmp_path)))


@pytest.fixture
def resources(catalog_resource):
    return create_iceberg_resources(catalog_resource)


@pytest.fixture
def instance():
    with dg.instance_for_test() as test_instance:
        yield test_instance


def _materialize_times(assets, times: int, resources, instance) -> None:
    for _ in range(times):
        assert dg.materialize(assets, resources=resources, instance=instance).success


def _append_times(catalog_resource, assets, times: int) -> None:
    """Fill the assets' tables with ``times`` small appends straight through the engine."""
    manager = catalog_resource.get_manager()
    for table in iceberg_asset_tables(assets).values():
        for _ in range(times):
            start = next(_ids) * 3
            rows = pa.table(
                {"id": pa.array(range(start, start + 3), pa.int64()), "name": [table] * 3}
            )
            manager.write(table, rows, WriteConfig(mode="append"))


def _data_files_on_disk(table) -> list[str]:
    root = table.location().removeprefix("file://")
    return [
        os.path.join(directory, name)
        for directory, _, names in os.walk(root)
        for name in names
        if name.endswith(".parquet")
    ]


def _observations(result: dg.ExecuteInProcessResult) -> list[dg.AssetObservation]:
    return [
        event.asset_observation_data.asset_observation
        for event in result.all_events
        if event.event_type_value == "ASSET_OBSERVATION"
    ]


def _output_metadata(result: dg.ExecuteInProcessResult, node: str) -> dict:
    for event in result.all_node_events:
        if event.event_type_value == "STEP_OUTPUT" and event.node_name == node:
            return {k: v.value for k, v in event.step_output_data.metadata.items()}
    raise AssertionError(f"no output of {node}")


def test_job_maintains_listed_assets_with_observations_and_run_metadata(
    resources, catalog_resource, instance
):
    orders, customers = _appending_asset("orders"), _appending_asset("customers")
    _append_times(catalog_resource, [orders, customers], 6)
    manager = catalog_resource.get_manager()
    rows_before = {t: manager.scan(t).sort_by("id") for t in ("lake.orders", "lake.customers")}
    assert len(_data_files_on_disk(manager.load_table("lake.orders"))) == 6
    job = build_iceberg_maintenance_job(
        "lake_maintenance",
        assets=[orders, customers],
        target_file_size_bytes=10**7,
        expire_older_than=dt.timedelta(0),
        retain_last=1,
        orphan_older_than=dt.timedelta(0),
    )
    defs = dg.Definitions(assets=[orders, customers, not_iceberg], jobs=[job], resources=resources)

    result = defs.get_job_def("lake_maintenance").execute_in_process(instance=instance)

    assert result.success
    node = maintain_op_name("lake_maintenance")
    observations = result.asset_observations_for_node(node)
    keys = {o.asset_key for o in observations}
    assert keys == {dg.AssetKey(["lake", "orders"]), dg.AssetKey(["lake", "customers"])}
    assert len(observations) == 8  # 4 steps x 2 tables
    last = {o.asset_key: o.metadata for o in observations}
    orders_health = last[dg.AssetKey(["lake", "orders"])]
    assert orders_health["iceberg/data_files"].value == 1
    assert orders_health["iceberg/snapshots"].value == 1
    assert orders_health["dagster/row_count"].value == 18
    compaction = next(
        o.metadata
        for o in observations
        if o.metadata["iceberg/maintenance_step"].value == "compact"
    )
    assert compaction["iceberg/compact/files_rewritten"].value == 6
    metadata = _output_metadata(result, node)
    assert metadata["tables"] == ["lake.customers", "lake.orders"]
    assert metadata["compact/files_rewritten"] == 12
    assert (
        metadata["expire_snapshots/snapshots_expired"] == 14
    )  # 6 appends + compaction + rewrite, 1 kept
    assert metadata["expire_snapshots/files_deleted"] > 12
    assert "lake.orders" in metadata["compact/summary"]
    assert metadata["failed_tables"] == []
    for table, rows in rows_before.items():
        loaded = manager.load_table(table)
        assert len(_data_files_on_disk(loaded)) == 1
        assert manager.scan(table).sort_by("id").equals(rows)


_CODE_LOCATION = """
import dagster as dg
import pyarrow as pa
from floe_dagster_iceberg import create_iceberg_resources
from floe_dagster_iceberg.maintenance_jobs import build_iceberg_maintenance_job

@dg.asset(key_prefix=["lake"], io_manager_key="iceberg", metadata={"write_mode": "append"})
def orders() -> pa.Table:
    return pa.table({"id": [1]})

@dg.asset(key_prefix=["sales"], io_manager_key="iceberg", metadata={"namespace": "raw"})
def customers() -> pa.Table:
    return pa.table({"id": [1]})

@dg.asset(key_prefix=["lake"])
def not_iceberg() -> int:
    return 1

defs = dg.Definitions(
    assets=[orders, customers, not_iceberg],
    jobs=[build_iceberg_maintenance_job("maintain_everything", steps=["compact", "table_health"],
                                        target_file_size_bytes=10**7)],
    resources=create_iceberg_resources(),
)
"""


def test_job_launched_from_the_code_location_maintains_every_iceberg_asset(tmp_path):
    home, dagster_home = tmp_path / "lake", tmp_path / "dagster_home"
    dagster_home.mkdir()
    resource = IcebergCatalogResource(catalog=EmbeddedCatalogConfig(home=str(home)))
    manager = resource.get_manager()
    for _ in range(4):
        manager.write(
            "lake.orders",
            pa.table({"id": pa.array([1, 2], pa.int64())}),
            WriteConfig(mode="append"),
        )
        manager.write(
            "raw.customers",
            pa.table({"id": pa.array([1, 2], pa.int64())}),
            WriteConfig(mode="append"),
        )
    manager.write(
        "lake.unrelated", pa.table({"id": pa.array([1], pa.int64())}), WriteConfig(mode="append")
    )
    manager.write(
        "lake.unrelated", pa.table({"id": pa.array([2], pa.int64())}), WriteConfig(mode="append")
    )
    (tmp_path / "location.py").write_text(_CODE_LOCATION)
    env = {**os.environ, "FLOE_ICEBERG_HOME": str(home), "DAGSTER_HOME": str(dagster_home)}

    process = subprocess.run(
        [
            sys.executable,
            "-m",
            "dagster",
            "job",
            "execute",
            "-f",
            str(tmp_path / "location.py"),
            "-a",
            "defs",
            "-j",
            "maintain_everything",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )

    assert process.returncode == 0, process.stdout[-3000:] + process.stderr[-3000:]
    assert "Maintaining 2 Iceberg table(s)" in process.stdout + process.stderr
    assert len(manager.load_table("lake.orders").inspect.data_files()) == 1
    assert len(manager.load_table("raw.customers").inspect.data_files()) == 1
    assert len(manager.load_table("lake.unrelated").inspect.data_files()) == 2  # not an asset


def test_everything_needs_a_code_location(resources, instance):
    job = build_iceberg_maintenance_job("everything", steps=["table_health"])
    result = job.execute_in_process(resources=resources, instance=instance, raise_on_error=False)
    assert not result.success
    failure = result.failure_data_for_node(maintain_op_name("everything")).user_failure_data
    assert "tables=, namespaces= or assets=" in failure.description


def test_one_failing_table_does_not_stop_the_others(resources, catalog_resource, instance):
    good, broken = _appending_asset("good"), _appending_asset("broken")
    _append_times(catalog_resource, [good, broken], 3)
    manager = catalog_resource.get_manager()
    # Storage lost a data file of one table: reading it for compaction fails.
    os.remove(_data_files_on_disk(manager.load_table("lake.broken"))[0])
    job = build_iceberg_maintenance_job(
        "maintenance",
        assets=[good, broken],
        tables=["lake.missing"],
        steps=["compact", "table_health"],
        target_file_size_bytes=10**7,
    )
    defs = dg.Definitions(assets=[good, broken], jobs=[job], resources=resources)

    result = defs.get_job_def("maintenance").execute_in_process(
        instance=instance, raise_on_error=False
    )

    assert not result.success
    failure = result.failure_data_for_node(maintain_op_name("maintenance")).user_failure_data
    assert "2 table(s)" in failure.description
    assert "lake.broken (compact:" in failure.description
    assert "lake.missing (compact:" in failure.description
    assert failure.metadata["failed_tables"].value == ["lake.broken", "lake.missing"]
    # The healthy table was compacted and observed all the same.
    assert len(manager.load_table("lake.good").inspect.data_files()) == 1
    observed = {
        (o.asset_key, o.metadata["iceberg/maintenance_step"].value) for o in _observations(result)
    }
    good_key = dg.AssetKey(["lake", "good"])
    assert {(good_key, "compact"), (good_key, "table_health")} <= observed
    assert (dg.AssetKey(["lake", "broken"]), "table_health") in observed


def test_namespace_selection_and_run_config_override(resources, catalog_resource, instance):
    first, second = _appending_asset("first", "ns_a"), _appending_asset("second", "ns_b")
    _append_times(catalog_resource, [first, second], 3)
    job = build_iceberg_maintenance_job(
        "by_namespace", namespaces=["ns_a"], steps=["compact"], target_file_size_bytes=10**7
    )
    manager = catalog_resource.get_manager()

    assert job.execute_in_process(resources=resources, instance=instance).success
    assert len(manager.load_table("ns_a.first").inspect.data_files()) == 1
    assert len(manager.load_table("ns_b.second").inspect.data_files()) == 3

    override = {
        "ops": {
            maintain_op_name("by_namespace"): {
                "config": {"tables": ["ns_b.second"], "min_input_files": 4}
            }
        }
    }
    assert job.execute_in_process(
        run_config=override, resources=resources, instance=instance
    ).success
    assert len(manager.load_table("ns_b.second").inspect.data_files()) == 3  # 3 < min_input_files
    override["ops"][maintain_op_name("by_namespace")]["config"]["min_input_files"] = 2
    assert job.execute_in_process(
        run_config=override, resources=resources, instance=instance
    ).success
    assert len(manager.load_table("ns_b.second").inspect.data_files()) == 1


def test_op_composes_into_a_user_job(resources, catalog_resource, instance):
    events = _appending_asset("events")
    _append_times(catalog_resource, [events], 3)
    maintain = build_iceberg_maintenance_op(["table_health"], name="observe_lake", assets=[events])

    @dg.op
    def before() -> None: ...

    @dg.job
    def observe():
        maintain(start=before())

    result = (
        dg.Definitions(assets=[events], jobs=[observe], resources=resources)
        .get_job_def("observe")
        .execute_in_process(instance=instance)
    )
    assert result.success
    (observation,) = result.asset_observations_for_node("observe_lake")
    assert observation.metadata["iceberg/data_files"].value == 3
    assert observation.metadata["iceberg/small_file_ratio"].value == pytest.approx(1.0)


def test_schedules_are_stopped_and_evaluate(resources, catalog_resource, instance):
    events = _appending_asset("events")
    _append_times(catalog_resource, [events], 2)
    maintenance = build_iceberg_maintenance_definitions(
        assets=[events], compaction_cron="0 4 * * 0", execution_timezone="Europe/Paris"
    )
    defs = dg.Definitions.merge(maintenance, dg.Definitions(assets=[events], resources=resources))
    dg.Definitions.validate_loadable(defs)
    nightly = defs.get_schedule_def("iceberg_nightly_maintenance_schedule")
    compaction = defs.get_schedule_def("iceberg_compaction_schedule")
    sensor = defs.get_sensor_def("iceberg_compaction_after_backfills")
    assert nightly.cron_schedule == "0 3 * * *"
    assert compaction.cron_schedule == "0 4 * * 0"
    assert nightly.execution_timezone == "Europe/Paris"
    for definition in (nightly, compaction):
        assert definition.default_status == dg.DefaultScheduleStatus.STOPPED
    assert sensor.default_status == dg.DefaultSensorStatus.STOPPED

    context = dg.build_schedule_context(
        instance=instance, scheduled_execution_time=dt.datetime(2025, 1, 2, 3, tzinfo=dt.UTC)
    )
    (request,) = nightly.evaluate_tick(context).run_requests
    job = defs.get_job_def(nightly.job_name)
    assert job.name == "iceberg_nightly_maintenance"
    result = job.execute_in_process(
        run_config=request.run_config, instance=instance, tags=request.tags
    )
    assert result.success
    metadata = _output_metadata(result, maintain_op_name(job.name))
    assert metadata["tables"] == ["lake.events"]
    assert metadata["remove_orphan_files/orphan_files"] == 0


def test_schedule_builder_defaults_to_stopped():
    job = build_iceberg_maintenance_job("weekly", tables=["lake.events"], steps=["compact"])
    schedule = build_iceberg_maintenance_schedule(job, "0 5 * * 1", run_config={"ops": {}})
    assert schedule.name == "weekly_schedule"
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED
    assert schedule.job_name == "weekly"


def test_compaction_sensor_runs_compaction_after_a_backfill(resources, catalog_resource, instance):
    events, quiet = _appending_asset("events"), _appending_asset("quiet")
    _materialize_times([quiet], 1, resources, instance)
    _materialize_times([events], 3, resources, instance)  # a burst: the backfill
    maintenance = build_iceberg_maintenance_definitions(
        min_materializations=3, quiet_period=dt.timedelta(0)
    )
    defs = dg.Definitions.merge(
        maintenance, dg.Definitions(assets=[events, quiet], resources=resources)
    )
    sensor = defs.get_sensor_def("iceberg_compaction_after_backfills")
    repository = defs.get_repository_def()

    tick = sensor.evaluate_tick(
        dg.build_sensor_context(instance=instance, repository_def=repository)
    )
    (request,) = tick.run_requests
    op_config = request.run_config["ops"][maintain_op_name("iceberg_compaction")]["config"]
    assert op_config == {"asset_keys": ["lake/events"]}
    result = defs.get_job_def("iceberg_compaction").execute_in_process(
        run_config=request.run_config, instance=instance
    )
    assert result.success
    manager = catalog_resource.get_manager()
    assert len(manager.load_table("lake.events").inspect.data_files()) == 1
    assert len(manager.load_table("lake.quiet").inspect.data_files()) == 1

    # Nothing new: the next tick skips; a later burst still waiting for quiet does too.
    again = sensor.evaluate_tick(
        dg.build_sensor_context(instance=instance, repository_def=repository, cursor=tick.cursor)
    )
    assert again.run_requests == []
    _materialize_times([events], 3, resources, instance)
    patient = build_iceberg_compaction_sensor(
        defs.get_job_def("iceberg_compaction"),
        name="patient",
        min_materializations=3,
        quiet_period=dt.timedelta(hours=1),
    )
    waiting = patient.evaluate_tick(
        dg.build_sensor_context(instance=instance, repository_def=repository)
    )
    assert waiting.run_requests == []
    assert "pending" in waiting.skip_message


def test_iceberg_asset_tables_follows_the_io_manager_mapping():
    @dg.asset(key_prefix=["sales"], io_manager_key="iceberg", metadata={"namespace": "raw"})
    def orders(): ...

    @dg.asset(io_manager_key="iceberg")
    def plain(): ...

    assert iceberg_asset_tables([orders, plain, not_iceberg]) == {
        dg.AssetKey(["sales", "orders"]): "raw.orders",
        dg.AssetKey(["plain"]): "public.plain",
    }
    with pytest.raises(ValueError, match="unknown maintenance step"):
        build_iceberg_maintenance_job("bad", steps=["vacuum"])
