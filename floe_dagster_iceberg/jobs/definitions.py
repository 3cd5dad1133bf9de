"""Ready-made maintenance: two jobs, their schedules and the compaction sensor."""

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import dagster as dg

from floe_dagster_iceberg.asset_tables import DEFAULT_NAMESPACE
from floe_dagster_iceberg.jobs.job import build_iceberg_maintenance_job
from floe_dagster_iceberg.jobs.op import DEFAULT_RESOURCE_KEY
from floe_dagster_iceberg.jobs.options import MaintenanceOptions, maintenance_options
from floe_dagster_iceberg.jobs.schedule import build_iceberg_maintenance_schedule
from floe_dagster_iceberg.jobs.selection import DEFAULT_IO_MANAGER_KEY, AssetLike, asset_keys
from floe_dagster_iceberg.jobs.sensor import build_iceberg_compaction_sensor
from floe_dagster_iceberg.jobs.steps import COMPACTION_STEPS, NIGHTLY_STEPS

__all__ = ["DEFAULT_NAME_PREFIX", "build_iceberg_maintenance_definitions"]

DEFAULT_NAME_PREFIX = "iceberg"


def build_iceberg_maintenance_definitions(
    *,
    tables: Sequence[str | Sequence[str]] = (),
    namespaces: Sequence[str] = (),
    assets: Sequence[AssetLike] | None = None,
    name_prefix: str = DEFAULT_NAME_PREFIX,
    resource_key: str = DEFAULT_RESOURCE_KEY,
    io_manager_key: str = DEFAULT_IO_MANAGER_KEY,
    default_namespace: str = DEFAULT_NAMESPACE,
    nightly_cron: str | None = "0 3 * * *",
    compaction_cron: str | None = None,
    compaction_after_backfills: bool = True,
    min_materializations: int = 10,
    quiet_period: timedelta = timedelta(minutes=15),
    execution_timezone: str = "UTC",
    options: MaintenanceOptions | None = None,
    **option_values: Any,
) -> dg.Definitions:
    """Ready-made maintenance: two jobs, their schedules and the compaction sensor, all STOPPED.

    - ``<prefix>_nightly_maintenance``: snapshot expiry + orphan cleanup, scheduled
      ``nightly_cron`` (03:00 UTC);
    - ``<prefix>_compaction``: compaction + manifest rewrite, run by the sensor
      ``<prefix>_compaction_after_backfills`` after backfills, and on ``compaction_cron`` if
      given.

    Options: ``options``, or
    :class:`~floe_dagster_iceberg.jobs.options.MaintenanceOptions` fields as keywords.

    Example:
        >>> defs = build_iceberg_maintenance_definitions(namespaces=["sales"], retain_last=5)
        >>> sorted(s.name for s in defs.schedules)
        ['iceberg_nightly_maintenance_schedule']
    """
    common: dict[str, Any] = {
        "tables": tables,
        "namespaces": namespaces,
        "assets": assets,
        "resource_key": resource_key,
        "io_manager_key": io_manager_key,
        "default_namespace": default_namespace,
        "options": maintenance_options(options, option_values),
    }
    nightly = build_iceberg_maintenance_job(
        f"{name_prefix}_nightly_maintenance", steps=NIGHTLY_STEPS, **common
    )
    compaction = build_iceberg_maintenance_job(
        f"{name_prefix}_compaction", steps=COMPACTION_STEPS, **common
    )
    schedules = [
        build_iceberg_maintenance_schedule(job, cron, execution_timezone=execution_timezone)
        for job, cron in ((nightly, nightly_cron), (compaction, compaction_cron))
        if cron
    ]
    sensors = []
    if compaction_after_backfills:
        sensors.append(
            build_iceberg_compaction_sensor(
                compaction,
                assets=asset_keys(assets) or None,
                io_manager_key=io_manager_key,
                min_materializations=min_materializations,
                quiet_period=quiet_period,
            )
        )
    return dg.Definitions(jobs=[nightly, compaction], schedules=schedules, sensors=sensors)
