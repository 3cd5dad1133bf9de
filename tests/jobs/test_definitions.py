"""Ready-made maintenance definitions: jobs, schedules and sensor, all STOPPED."""

import datetime as dt

import dagster as dg

from floe_dagster_iceberg.jobs import build_iceberg_maintenance_definitions, maintain_op_name

from .support import append_times, appending_asset, output_metadata


def test_schedules_are_stopped_and_evaluate(resources, catalog_resource, instance):
    events = appending_asset("events")
    append_times(catalog_resource, [events], 2)
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
    metadata = output_metadata(result, maintain_op_name(job.name))
    assert metadata["tables"] == ["lake.events"]
    assert metadata["remove_orphan_files/orphan_files"] == 0
