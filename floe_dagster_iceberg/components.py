"""A ``dg`` component that declares Iceberg table maintenance in a ``defs.yaml``.

Example ``defs/maintenance/defs.yaml``:

.. code-block:: yaml

    type: floe_dagster_iceberg.IcebergMaintenanceComponent
    attributes:
      namespaces: [sales]          # or tables: [sales.orders], or assets: [sales/orders];
                                   # none of them: every Iceberg asset of the code location
      nightly_cron: "0 3 * * *"    # snapshot expiry + orphan cleanup
      compaction_after_backfills: true
      retain_last: 5
      health_checks:
        max_small_file_ratio: 0.5
        max_snapshots: 200

Every job, schedule and sensor it creates is STOPPED until switched on in the UI.
"""

from datetime import timedelta

import dagster as dg
from pydantic import Field, model_validator

from floe_dagster_iceberg.checks import build_iceberg_health_checks
from floe_dagster_iceberg.identifiers import DEFAULT_NAMESPACE
from floe_dagster_iceberg.maintenance import DEFAULT_ORPHAN_AGE
from floe_dagster_iceberg.maintenance_jobs import build_iceberg_maintenance_definitions

__all__ = ["IcebergHealthChecksModel", "IcebergMaintenanceComponent"]


class IcebergHealthChecksModel(dg.Model, dg.Resolvable):
    """Thresholds of the health checks added to the component's ``assets``.

    Example:
        >>> IcebergHealthChecksModel(max_snapshots=200).max_small_file_ratio
        0.5
    """

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


class IcebergMaintenanceComponent(dg.Component, dg.Model, dg.Resolvable):
    """Iceberg table maintenance for a project, declared in ``defs.yaml``.

    Creates the jobs ``<name_prefix>_nightly_maintenance`` (snapshot expiry + orphan cleanup)
    and ``<name_prefix>_compaction`` (compaction + manifest rewrite), a nightly schedule, an
    optional compaction schedule, the compaction-after-backfills sensor, and health checks for
    the listed ``assets``. All schedules and sensors start STOPPED.

    Tables: ``tables`` (``namespace.table``), ``namespaces``, ``assets`` (asset keys such as
    ``sales/orders``); with none of them, every asset of the code location whose IO manager is
    ``io_manager_key``. Options left out (null) come from each table's own properties
    (``history.expire.*``, ``write.target-file-size-bytes``).

    Example:
        >>> component = IcebergMaintenanceComponent(namespaces=["sales"], retain_last=5)
        >>> component.nightly_cron
        '0 3 * * *'
    """

    tables: list[str] = Field(default_factory=list, description="Tables as 'namespace.table'")
    namespaces: list[str] = Field(
        default_factory=list, description="Maintain every table of these namespaces"
    )
    assets: list[str] = Field(
        default_factory=list, description="Maintain the tables of these asset keys ('a/b')"
    )
    name_prefix: str = Field(default="iceberg", description="Prefix of job and schedule names")
    resource_key: str = Field(
        default="iceberg_catalog", description="Resource key of the IcebergCatalogResource"
    )
    io_manager_key: str = Field(
        default="iceberg", description="IO manager key that marks an asset as Iceberg-backed"
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
    target_file_size_mb: float | None = Field(
        default=None, description="Compacted file size; null: table property or 128 MiB"
    )
    min_input_files: int = Field(default=2, ge=1, description="Smallest bin worth rewriting")
    expire_older_than_days: float | None = Field(
        default=None, description="Snapshot age to expire; null: table property (7 days)"
    )
    retain_last: int | None = Field(
        default=None, description="Snapshots always kept; null: table property (1)"
    )
    orphan_older_than_hours: float = Field(
        default=DEFAULT_ORPHAN_AGE.total_seconds() / 3600,
        ge=0,
        description="Only unreferenced files older than this are removed",
    )
    orphan_dry_run: bool = Field(default=False, description="Report orphans, delete nothing")
    health_checks: IcebergHealthChecksModel | None = Field(
        default_factory=IcebergHealthChecksModel,
        description="Health checks on the listed assets; null: none",
    )

    @model_validator(mode="after")
    def _check_optional_numbers(self) -> "IcebergMaintenanceComponent":
        if self.target_file_size_mb is not None and self.target_file_size_mb <= 0:
            raise ValueError("target_file_size_mb must be positive (or null)")
        if self.expire_older_than_days is not None and self.expire_older_than_days < 0:
            raise ValueError("expire_older_than_days must not be negative (or null)")
        if self.retain_last is not None and self.retain_last < 1:
            raise ValueError("retain_last must be at least 1 (or null)")
        return self

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
            target_file_size_bytes=(
                None
                if self.target_file_size_mb is None
                else int(self.target_file_size_mb * 1024 * 1024)
            ),
            min_input_files=self.min_input_files,
            expire_older_than=(
                None
                if self.expire_older_than_days is None
                else timedelta(days=self.expire_older_than_days)
            ),
            retain_last=self.retain_last,
            orphan_older_than=timedelta(hours=self.orphan_older_than_hours),
            orphan_dry_run=self.orphan_dry_run,
        )
        if self.health_checks is None or not asset_keys:
            return definitions
        thresholds = self.health_checks
        checks = build_iceberg_health_checks(
            asset_keys,
            name=f"{self.name_prefix}_health_checks",
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
