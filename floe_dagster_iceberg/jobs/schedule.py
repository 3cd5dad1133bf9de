"""Schedules of maintenance jobs, created STOPPED."""

from collections.abc import Mapping
from typing import Any

import dagster as dg

__all__ = ["build_iceberg_maintenance_schedule"]


def build_iceberg_maintenance_schedule(
    job: dg.JobDefinition,
    cron_schedule: str = "0 3 * * *",
    *,
    name: str | None = None,
    execution_timezone: str = "UTC",
    default_status: dg.DefaultScheduleStatus = dg.DefaultScheduleStatus.STOPPED,
    run_config: Mapping[str, Any] | None = None,
    tags: Mapping[str, str] | None = None,
    description: str | None = None,
) -> dg.ScheduleDefinition:
    """A schedule for a maintenance job, created STOPPED: switch it on in the UI.

    Example:
        >>> from floe_dagster_iceberg.jobs import build_iceberg_maintenance_job
        >>> job = build_iceberg_maintenance_job("nightly", namespaces=["sales"])
        >>> build_iceberg_maintenance_schedule(job, "0 3 * * *").name
        'nightly_schedule'
    """
    return dg.ScheduleDefinition(
        name=name or f"{job.name}_schedule",
        job=job,
        cron_schedule=cron_schedule,
        execution_timezone=execution_timezone,
        default_status=default_status,
        run_config=dict(run_config) if run_config else None,
        tags=dict(tags) if tags else None,
        description=description or f"Runs {job.name} ({cron_schedule}, {execution_timezone}).",
    )
