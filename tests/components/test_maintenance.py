"""The dg component: declared in defs.yaml, registered for `dg`, and running real maintenance."""

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pytest
import yaml
from dagster.components.testing import create_defs_folder_sandbox

import floe_dagster_iceberg
from floe_dagster_iceberg import (
    EmbeddedCatalogConfig,
    IcebergCatalogResource,
    build_iceberg_health_checks,
    build_iceberg_maintenance_definitions,
    create_iceberg_resources,
)
from floe_dagster_iceberg.components import IcebergMaintenanceComponent
from floe_dagster_iceberg.engine.config import WriteConfig
from floe_dagster_iceberg.jobs import MaintenanceOptions, maintain_op_name

EXAMPLE_DEFS_YAML = (
    Path(__file__).resolve().parents[2]
    / "example_project"
    / "example_project"
    / "defs"
    / "maintenance"
    / "defs.yaml"
)


@dg.asset(key_prefix=["lake"], io_manager_key="iceberg", metadata={"write_mode": "append"})
def events() -> pa.Table:
    return pa.table({"id": pa.array([1, 2], pa.int64())})


def _op_config_fields(job: dg.JobDefinition) -> dict:
    node = job.graph.node_named(maintain_op_name(job.name))
    return node.definition.config_schema.config_type.fields


def _load(attributes: dict):
    """Load the component from a defs.yaml the way a project does; yield (component, defs)."""
    sandbox_context = create_defs_folder_sandbox()
    sandbox = sandbox_context.__enter__()
    path = sandbox.scaffold_component(
        component_cls=IcebergMaintenanceComponent,
        defs_yaml_contents={
            "type": "floe_dagster_iceberg.components.IcebergMaintenanceComponent",
            "attributes": attributes,
        },
    )
    loaded = sandbox.load_component_and_build_defs(defs_path=path)
    component, defs = loaded.__enter__()

    def close() -> None:
        loaded.__exit__(None, None, None)
        sandbox_context.__exit__(None, None, None)

    return component, defs, close


def test_defs_yaml_declares_jobs_schedules_sensor_and_checks(tmp_path):
    component, defs, close = _load(
        {
            "assets": ["lake/events"],
            "name_prefix": "lake",
            "nightly_cron": "30 2 * * *",
            "compaction_cron": "0 5 * * 0",
            "retain_last": 3,
            "expire_older_than_hours": 48,
            "target_file_size_bytes": "64MiB",
            "health_checks": {"max_snapshots": 50, "max_staleness_hours": None},
        }
    )
    try:
        assert isinstance(component, IcebergMaintenanceComponent)
        assert component.options == MaintenanceOptions(
            retain_last=3, expire_older_than_hours=48, target_file_size_bytes=64 * 1024 * 1024
        )
        assert {job.name for job in defs.jobs} == {"lake_nightly_maintenance", "lake_compaction"}
        schedules = {s.name: s for s in defs.schedules}
        assert schedules["lake_nightly_maintenance_schedule"].cron_schedule == "30 2 * * *"
        assert schedules["lake_compaction_schedule"].cron_schedule == "0 5 * * 0"
        assert all(s.default_status == dg.DefaultScheduleStatus.STOPPED for s in schedules.values())
        (sensor,) = defs.sensors
        assert sensor.name == "lake_compaction_after_backfills"
        assert sensor.default_status == dg.DefaultSensorStatus.STOPPED
        (checks,) = defs.asset_checks
        assert {key.name for key in checks.check_keys} == {
            "lake_small_files",
            "lake_snapshot_count",
        }
        nightly = next(job for job in defs.jobs if job.name == "lake_nightly_maintenance")
        fields = _op_config_fields(nightly)
        assert fields["retain_last"].default_value == 3
        assert fields["expire_older_than_hours"].default_value == pytest.approx(48.0)
        compaction = next(job for job in defs.jobs if job.name == "lake_compaction")
        fields = _op_config_fields(compaction)
        assert fields["target_file_size_bytes"].default_value == 64 * 1024 * 1024
    finally:
        close()


def test_component_maintenance_runs_on_real_tables(tmp_path):
    catalog_resource = IcebergCatalogResource(catalog=EmbeddedCatalogConfig(home=str(tmp_path)))
    resources = create_iceberg_resources(catalog_resource)
    with dg.instance_for_test() as instance:
        manager = catalog_resource.get_manager()
        for n in range(4):  # four small appends, as four materializations leave them
            rows = pa.table({"id": pa.array([2 * n, 2 * n + 1], pa.int64())})
            manager.write("lake.events", rows, WriteConfig(mode="append"))
        _, component_defs, close = _load(
            {"tables": ["lake.events"], "health_checks": None, "retain_last": 1}
        )
        try:
            defs = dg.Definitions.merge(
                component_defs, dg.Definitions(assets=[events], resources=resources)
            )
            compaction = defs.get_job_def("iceberg_component_compaction")
            assert compaction.execute_in_process(
                instance=instance,
                run_config={
                    "ops": {
                        maintain_op_name("iceberg_component_compaction"): {
                            "config": {"target_file_size_bytes": 10**7}
                        }
                    }
                },
            ).success
            nightly = defs.get_job_def("iceberg_component_nightly_maintenance")
            run_config = {
                "ops": {
                    maintain_op_name("iceberg_component_nightly_maintenance"): {
                        "config": {"expire_older_than_hours": 0.0}
                    }
                }
            }
            assert nightly.execute_in_process(instance=instance, run_config=run_config).success
        finally:
            close()
    table = catalog_resource.get_manager().load_table("lake.events")
    assert len(table.inspect.data_files()) == 1
    assert len(table.snapshots()) == 1
    assert table.scan().to_arrow().num_rows == 8


def test_default_names_do_not_collide_with_the_python_builders(tmp_path):
    """The component at its defaults and every Python builder at its defaults, on one asset,
    in one code location."""
    catalog_resource = IcebergCatalogResource(catalog=EmbeddedCatalogConfig(home=str(tmp_path)))
    _, component_defs, close = _load({"assets": ["lake/events"]})
    try:
        defs = dg.Definitions.merge(
            component_defs,
            build_iceberg_maintenance_definitions(),
            dg.Definitions(
                assets=[events],
                asset_checks=build_iceberg_health_checks([events]),
                resources=create_iceberg_resources(catalog_resource),
            ),
        )
        dg.Definitions.validate_loadable(defs)
        assert {job.name for job in defs.jobs} == {
            "iceberg_component_nightly_maintenance",
            "iceberg_component_compaction",
            "iceberg_nightly_maintenance",
            "iceberg_compaction",
        }
        assert {s.name for s in defs.schedules} == {
            "iceberg_component_nightly_maintenance_schedule",
            "iceberg_nightly_maintenance_schedule",
        }
        assert {s.name for s in defs.sensors} == {
            "iceberg_component_compaction_after_backfills",
            "iceberg_compaction_after_backfills",
        }
        check_names = {key.name for checks in defs.asset_checks for key in checks.check_keys}
        assert check_names == {
            f"{prefix}_{kind}"
            for prefix in ("iceberg", "iceberg_component")
            for kind in ("small_files", "snapshot_count", "staleness")
        }
    finally:
        close()


def _messages(error: BaseException) -> str:
    texts = []
    while error is not None:
        texts.append(str(error))
        error = error.__cause__ or error.__context__
    return "\n".join(texts)


def test_wrong_attributes_are_refused_with_their_name():
    with pytest.raises(Exception) as unknown:  # noqa: PT011 - dg wraps the validation error
        _load({"retain_lst": 3})
    assert "retain_lst" in _messages(unknown.value)
    with pytest.raises(Exception) as invalid:  # noqa: PT011
        _load({"retain_last": 0})
    assert "retain_last must be at least 1" in _messages(invalid.value)


def test_example_project_defs_yaml_loads():
    document = yaml.safe_load(EXAMPLE_DEFS_YAML.read_text())
    assert document["type"].endswith("IcebergMaintenanceComponent")
    component, defs, close = _load(document["attributes"])
    try:
        assert component.name_prefix == "lakehouse"
        assert {job.name for job in defs.jobs} == {
            "lakehouse_nightly_maintenance",
            "lakehouse_compaction",
        }
        assert [s.default_status for s in defs.schedules] == [dg.DefaultScheduleStatus.STOPPED]
    finally:
        close()


def test_component_is_registered_for_dg(tmp_path):
    assert floe_dagster_iceberg.IcebergMaintenanceComponent is IcebergMaintenanceComponent
    dg_cli = Path(sys.executable).with_name("dg")
    process = subprocess.run(
        [str(dg_cli), "list", "components", "--json"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "DAGSTER_HOME": str(tmp_path)},
        timeout=120,
    )
    assert process.returncode == 0, process.stderr
    listed = json.loads(process.stdout[process.stdout.index("{") :])
    keys = {item["key"] for item in listed["items"]}
    assert "floe_dagster_iceberg.IcebergMaintenanceComponent" in keys
