"""Maintenance of the lakehouse tables in Python: a full maintenance job, its weekly schedule
and storage health checks on every Iceberg asset.

The nightly expiry, orphan cleanup and compaction-after-backfill sensor are declared in
``defs/maintenance/defs.yaml`` with the ``IcebergMaintenanceComponent``; this module shows the
same building blocks used directly. Everything scheduled starts STOPPED.
"""

import datetime as dt

import dagster as dg

from example_project.assets import all_assets
from floe_dagster_iceberg.checks import build_iceberg_health_checks
from floe_dagster_iceberg.jobs import (
    build_iceberg_maintenance_job,
    build_iceberg_maintenance_schedule,
)

full_maintenance_job = build_iceberg_maintenance_job(
    "lakehouse_full_maintenance",
    # No selection: every Iceberg asset of the code location, looked up when the run starts.
    steps=["compact", "rewrite_manifests", "expire_snapshots", "remove_orphan_files"],
    target_file_size_bytes=128 * 1024 * 1024,
    retain_last=5,
    description="Compaction, manifest rewrite, snapshot expiry and orphan cleanup of every "
    "lakehouse table; run it by hand after a large backfill, or weekly.",
)

weekly_full_maintenance = build_iceberg_maintenance_schedule(
    full_maintenance_job, "0 4 * * 0", name="lakehouse_weekly_full_maintenance"
)

health_checks = build_iceberg_health_checks(
    # Only the assets stored by the "iceberg" IO manager get checks (customers_baseline none).
    all_assets,
    max_small_file_ratio=0.5,
    min_small_files=20,
    max_snapshots=200,
    max_staleness=dt.timedelta(days=2),
)

maintenance_defs = dg.Definitions(
    jobs=[full_maintenance_job],
    schedules=[weekly_full_maintenance],
    asset_checks=health_checks,
)
"""Merge into the code location: ``dg.Definitions.merge(lakehouse, maintenance_defs)``."""
