"""A ``dg`` component that declares Iceberg table maintenance in a ``defs.yaml``.

Its attributes are the :class:`~floe_dagster_iceberg.jobs.options.MaintenanceOptions` fields
(the same names, units and checks as the Python builders and the op's run config) plus the
selection, names and triggers of :func:`~floe_dagster_iceberg.jobs.build_iceberg_maintenance_definitions`.

Example ``defs/maintenance/defs.yaml``:

.. code-block:: yaml

    type: floe_dagster_iceberg.IcebergMaintenanceComponent
    attributes:
      namespaces: [sales]          # or tables: [sales.orders], or assets: [sales/orders];
                                   # none of them: every Iceberg asset of the code location
      nightly_cron: "0 3 * * *"    # snapshot expiry + orphan cleanup
      compaction_after_backfills: true
      target_file_size_bytes: 128MiB
      retain_last: 5
      health_checks:
        max_small_file_ratio: 0.5
        max_snapshots: 200

Every job, schedule and sensor it creates is STOPPED until switched on in the UI. Its names
(and those of its health checks) start with ``name_prefix``, by default ``iceberg_component``,
so they never collide with those of ``build_iceberg_maintenance_definitions()`` and
``build_iceberg_health_checks()`` (prefix ``iceberg``) in the same code location.

The class docstrings are what ``dg`` and the Dagster UI show: plain markdown, no doctest.

Example:
    >>> component = IcebergMaintenanceComponent(namespaces=["sales"], retain_last=5)
    >>> component.nightly_cron, component.options.retain_last
    ('0 3 * * *', 5)
    >>> IcebergHealthChecksModel(max_snapshots=200).max_small_file_ratio
    0.5
"""

from datetime import timedelta

import dagster as dg
from pydantic import Field, model_validator

from floe_dagster_iceberg.asset_tables import DEFAULT_NAMESPACE
from floe_dagster_iceberg.checks import build_iceberg_health_checks
from floe_dagster_iceberg.jobs.definitions import build_iceberg_maintenance_definitions
from floe_dagster_iceberg.jobs.op import DEFAULT_RESOURCE_KEY
from floe_dagster_iceberg.jobs.options import MaintenanceOptions
from floe_dagster_iceberg.jobs.selection import DEFAULT_IO_MANAGER_KEY

__all__ = [
    "DEFAULT_COMPONENT_NAME_PREFIX",
    "IcebergHealthChecksModel",
    "IcebergMaintenanceComponent",
]

DEFAULT_COMPONENT_NAME_PREFIX = "iceberg_component"


class IcebergHealthChecksModel(dg.Model, dg.Resolvable):
    """Thresholds of the health checks added to the component's `assets`."""

    max_small_file_ratio: float = Field(
        default=0.5, ge=0, le=1, description="Fail above this share of small data files"
    )
    min_small_files: int = Field(
        default=10, ge=1, description="Never fail with fewer small files than this"
    )
    max_snapshots: int = Field(default=500, ge=1, description="Fail above this many snapshots")
    max_staleness_hours: float | None = Field(
        default=36, description="Fail when data is older than this; null: no check"
    )

    @model_validator(mode="after")
    def _check_staleness(self) -> "IcebergHealthChecksModel":
        if self.max_staleness_hours is not None and self.max_staleness_hours <= 0:
            raise ValueError("max_staleness_hours must be positive (or null for no check)")
        return self


class IcebergMaintenanceComponent(dg.Component, MaintenanceOptions, dg.Resolvable):
    """Iceberg table maintenance for a project, declared in `defs.yaml`.

    Creates the jobs `<name_prefix>_nightly_maintenance` (snapshot expiry + orphan cleanup)
    and `<name_prefix>_compaction` (compaction + manifest rewrite), a nightly schedule, an
    optional compaction schedule, the compaction-after-backfills sensor, and health checks for
    the listed `assets`. All schedules and sensors start STOPPED.

    Tables: `tables` (`namespace.table`), `namespaces`, `assets` (asset keys such as
    `sales/orders`); with none of them, every asset of the code location whose IO manager is
    `io_manager_key`. Maintenance options left out (null) come from each table's own
    properties (`history.expire.*`, `write.target-file-size-bytes`). `engine` says where the
    steps run: `{type: local}` (the default) or `{type: spark, connect_url: sc://host:15002}`
    (Spark's Iceberg procedures; see `SparkEngineConfig`).

    Example:

    ```yaml
    type: floe_dagster_iceberg.IcebergMaintenanceComponent
    attributes:
      namespaces: [sales]
      nightly_cron: "0 3 * * *"
      target_file_size_bytes: 128MiB
      retain_last: 5
    ```
    """

    tables: list[str] = Field(default_factory=list, description="Tables as 'namespace.table'")
    namespaces: list[str] = Field(
        default_factory=list, description="Maintain every table of these namespaces"
    )
    assets: list[str] = Field(
        default_factory=list, description="Maintain the tables of these asset keys ('a/b')"
    )
    name_prefix: str = Field(
        default=DEFAULT_COMPONENT_NAME_PREFIX,
        description="Prefix of job, schedule, sensor and check names",
    )
    resource_key: str = Field(
        default=DEFAULT_RESOURCE_KEY, description="Resource key of the IcebergCatalogResource"
    )
    io_manager_key: str = Field(
        default=DEFAULT_IO_MANAGER_KEY,
        description="IO manager key that marks an asset as Iceberg-backed",
    )
    default_namespace: str = Field(
        default=DEFAULT_NAMESPACE, description="Namespace of assets whose key has no prefix"
    )
    nightly_cron: str | None = Field(
        default="0 3 * * *", description="Snapshot expiry + orphan cleanup; null: no schedule"
    )
    compaction_cron: str | None = Field(
        default=None, description="Scheduled compaction as well; null: only after backfills"
    )
    compaction_after_backfills: bool = Field(
        default=True, description="Sensor compacting tables after a burst of materializations"
    )
    min_materializations: int = Field(
        default=10, ge=1, description="Materializations that make a burst (a backfill)"
    )
    quiet_period_minutes: float = Field(
        default=15, ge=0, description="Minutes without materializations that end a burst"
    )
    execution_timezone: str = Field(default="UTC", description="Timezone of the cron schedules")
    health_checks: IcebergHealthChecksModel | None = Field(
        default_factory=IcebergHealthChecksModel,
        description="Health checks on the listed assets; null: none",
    )

    @property
    def options(self) -> MaintenanceOptions:
        """The maintenance options among the attributes."""
        return MaintenanceOptions.model_validate(
            self.model_dump(include=set(MaintenanceOptions.model_fields))
        )

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        """The maintenance jobs, schedules, sensor and checks this component declares."""
        asset_keys = [dg.AssetKey.from_user_string(key) for key in self.assets]
        definitions = build_iceberg_maintenance_definitions(
            tables=self.tables,
            namespaces=self.namespaces,
            assets=asset_keys or None,
            name_prefix=self.name_prefix,
            resource_key=self.resource_key,
            io_manager_key=self.io_manager_key,
            default_namespace=self.default_namespace,
            nightly_cron=self.nightly_cron,
            compaction_cron=self.compaction_cron,
            compaction_after_backfills=self.compaction_after_backfills,
            min_materializations=self.min_materializations,
            quiet_period=timedelta(minutes=self.quiet_period_minutes),
            execution_timezone=self.execution_timezone,
            options=self.options,
        )
        if self.health_checks is None or not asset_keys:
            return definitions
        thresholds = self.health_checks
        checks = build_iceberg_health_checks(
            asset_keys,
            name=f"{self.name_prefix}_health_checks",
            check_name_prefix=self.name_prefix,
            resource_key=self.resource_key,
            default_namespace=self.default_namespace,
            max_small_file_ratio=thresholds.max_small_file_ratio,
            min_small_files=thresholds.min_small_files,
            max_snapshots=thresholds.max_snapshots,
            max_staleness=(
                None
                if thresholds.max_staleness_hours is None
                else timedelta(hours=thresholds.max_staleness_hours)
            ),
        )
        return dg.Definitions.merge(definitions, dg.Definitions(asset_checks=checks))
