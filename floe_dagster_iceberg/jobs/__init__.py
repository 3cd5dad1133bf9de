"""Table maintenance as Dagster ops, jobs, schedules and a sensor.

A maintenance op resolves which tables to maintain (:mod:`.selection`: a list, whole
namespaces, given assets, or every asset of the code location stored by the Iceberg IO
manager), then runs its steps in order (:mod:`.steps`: ``compact``,
``remove_dangling_deletes``, ``rewrite_manifests``, ``expire_snapshots``,
``remove_orphan_files``, ``table_health``) on every table, with the options of :mod:`.options`. A failure on one table never stops the others; at the end the op
(and so the run) fails, listing every failed table.

After each step, an :class:`dagster.AssetObservation` is logged on the table's asset with its
storage health and what the step did; the op's output metadata summarises every step (run
metadata).

Example:
    >>> from floe_dagster_iceberg.jobs import build_iceberg_maintenance_definitions
    >>> maintenance = build_iceberg_maintenance_definitions(namespaces=["sales"])
    >>> sorted(job.name for job in maintenance.jobs)
    ['iceberg_compaction', 'iceberg_nightly_maintenance']
"""

from floe_dagster_iceberg.jobs.definitions import build_iceberg_maintenance_definitions
from floe_dagster_iceberg.jobs.job import build_iceberg_maintenance_job, maintain_op_name
from floe_dagster_iceberg.jobs.observation_sensor import (
    ObservationSensorCursor,
    build_iceberg_observation_sensor,
)
from floe_dagster_iceberg.jobs.op import build_iceberg_maintenance_op
from floe_dagster_iceberg.jobs.options import MaintenanceOptions
from floe_dagster_iceberg.jobs.schedule import build_iceberg_maintenance_schedule
from floe_dagster_iceberg.jobs.selection import AssetLike, iceberg_asset_tables
from floe_dagster_iceberg.jobs.sensor import CompactionSensorCursor, build_iceberg_compaction_sensor
from floe_dagster_iceberg.jobs.steps import (
    COMPACTION_STEPS,
    DEFAULT_MAINTENANCE_STEPS,
    NIGHTLY_STEPS,
    STEPS,
    MaintenanceStep,
)

__all__ = [
    "COMPACTION_STEPS",
    "DEFAULT_MAINTENANCE_STEPS",
    "NIGHTLY_STEPS",
    "STEPS",
    "AssetLike",
    "CompactionSensorCursor",
    "MaintenanceOptions",
    "MaintenanceStep",
    "ObservationSensorCursor",
    "build_iceberg_compaction_sensor",
    "build_iceberg_maintenance_definitions",
    "build_iceberg_maintenance_job",
    "build_iceberg_maintenance_op",
    "build_iceberg_maintenance_schedule",
    "build_iceberg_observation_sensor",
    "iceberg_asset_tables",
    "maintain_op_name",
]
