"""Schedules of maintenance jobs."""

import dagster as dg

from floe_dagster_iceberg.jobs import (
    build_iceberg_maintenance_job,
    build_iceberg_maintenance_schedule,
)


def test_schedule_builder_defaults_to_stopped():
    job = build_iceberg_maintenance_job("weekly", tables=["lake.events"], steps=["compact"])
    schedule = build_iceberg_maintenance_schedule(job, "0 5 * * 1", run_config={"ops": {}})
    assert schedule.name == "weekly_schedule"
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED
    assert schedule.job_name == "weekly"
