"""The maintenance op: failures stay per table, and the op composes into a user's job."""

import os

import dagster as dg
import pytest

from floe_dagster_iceberg.jobs import (
    MaintenanceOptions,
    build_iceberg_maintenance_job,
    build_iceberg_maintenance_op,
    maintain_op_name,
)

from .support import append_times, appending_asset, data_files_on_disk, observations


def test_one_failing_table_does_not_stop_the_others(resources, catalog_resource, instance):
    good, broken = appending_asset("good"), appending_asset("broken")
    append_times(catalog_resource, [good, broken], 3)
    manager = catalog_resource.get_manager()
    # Storage lost a data file of one table: reading it for compaction fails.
    os.remove(data_files_on_disk(manager.load_table("lake.broken"))[0])
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
    assert failure.description.startswith(
        "Iceberg maintenance failed on 2 of 3 tables (lake.broken, lake.missing); "
        "1 maintained (lake.good). lake.broken: compact: "
    ), failure.description
    assert "; lake.missing: compact: TableNotFoundError" in failure.description
    assert failure.metadata["failed_tables"].value == ["lake.broken", "lake.missing"]
    # The healthy table was compacted and observed all the same.
    assert len(manager.load_table("lake.good").inspect.data_files()) == 1
    observed = {
        (o.asset_key, o.metadata["iceberg/maintenance_step"].value) for o in observations(result)
    }
    good_key = dg.AssetKey(["lake", "good"])
    assert {(good_key, "compact"), (good_key, "table_health")} <= observed
    assert (dg.AssetKey(["lake", "broken"]), "table_health") in observed


def test_a_run_whose_only_table_fails_says_so(resources, catalog_resource, instance):
    broken = appending_asset("broken")
    append_times(catalog_resource, [broken], 2)
    manager = catalog_resource.get_manager()
    os.remove(data_files_on_disk(manager.load_table("lake.broken"))[0])
    job = build_iceberg_maintenance_job("maintenance", assets=[broken], steps=["compact"])

    result = (
        dg.Definitions(assets=[broken], jobs=[job], resources=resources)
        .get_job_def("maintenance")
        .execute_in_process(instance=instance, raise_on_error=False)
    )

    failure = result.failure_data_for_node(maintain_op_name("maintenance")).user_failure_data
    assert failure.description.startswith(
        "Iceberg maintenance failed on its only table, lake.broken: compact: "
    ), failure.description
    assert "the others" not in failure.description


def test_op_composes_into_a_user_job(resources, catalog_resource, instance):
    events = appending_asset("events")
    append_times(catalog_resource, [events], 3)
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


def test_op_config_holds_the_options_its_steps_read():
    op = build_iceberg_maintenance_op(
        ["compact", "expire_snapshots"],
        tables=["lake.events"],
        options=MaintenanceOptions(retain_last=4, min_input_files=5),
        retain_last=3,
    )
    fields = op.config_schema.config_type.fields
    assert set(fields) == {
        "tables",
        "namespaces",
        "asset_keys",
        "target_file_size_bytes",
        "min_input_files",
        "expire_older_than_hours",
        "retain_last",
        "audit_branch_max_age_hours",
        "engine",
    }
    assert fields["retain_last"].default_value == 3  # keywords win over options
    assert fields["min_input_files"].default_value == 5
    assert fields["expire_older_than_hours"].default_value is None
    with pytest.raises(ValueError, match="retain_lst"):
        build_iceberg_maintenance_op(["expire_snapshots"], tables=["lake.events"], retain_lst=3)


def test_invalid_run_config_options_fail_the_run(resources, instance):
    job = build_iceberg_maintenance_job(
        "checked", tables=["lake.events"], steps=["expire_snapshots"]
    )
    result = job.execute_in_process(
        run_config={"ops": {maintain_op_name("checked"): {"config": {"retain_last": 0}}}},
        resources=resources,
        instance=instance,
        raise_on_error=False,
    )
    assert not result.success
    assert "retain_last must be at least 1" in str(
        result.failure_data_for_node(maintain_op_name("checked")).error
    )
