"""The public names: importable from ``floe_dagster_iceberg`` whatever module holds them."""

from __future__ import annotations

import floe_dagster_iceberg

PUBLIC_BEFORE_THE_ENGINE_LAYOUT = {
    "ArrowStringType", "ChangeCapture", "LoadRequest", "ReadRequest", "TypeHandler", "register_type_handler", "unregister_type_handler", "CatalogConnectionError", "FileIOImplementation", "PolarsReader", "ColumnSpec", "CommitConflictError", "CompactionResult",
    "CreateTableResult", "CustomCatalogConfig", "EmbeddedCatalogConfig", "ExpireSnapshotsResult",
    "HOME_ENV_VAR", "IcebergCatalogResource", "IcebergError", "IcebergHealthChecksModel",
    "IcebergIOManager", "IcebergMaintenanceComponent", "IcebergTableManager",
    "InvalidIdentifierError", "InvalidInputError", "LineageConfig", "MaintenanceStep",
    "NullOrder", "OrphanFilesResult", "PartitionCompaction", "PartitionField",
    "PartitionMismatchError", "PartitionSpecUpdateMode", "PartitionTransform", "PublishResult",
    "AUDIT_BRANCH_METADATA", "audit_branch_name",
    "RestCatalogConfig", "RetryPolicy", "RewriteManifestsResult", "S3StorageConfig",
    "SchemaChange", "SchemaChangeKind", "SchemaEvolutionError", "SchemaUpdateMode",
    "SchemaVersion", "SkippedPartition", "SnapshotInfo", "SortDirection", "SortField",
    "SqlCatalogConfig", "TableConfig", "TableHealth", "TableNotFoundError", "TableSchema",
    "UpsertKeyError", "UpsertScope", "WriteConfig", "WriteMode", "WriteResult", "__version__",
    "build_iceberg_compaction_sensor", "build_iceberg_health_checks",
    "build_iceberg_maintenance_definitions", "build_iceberg_maintenance_job",
    "build_iceberg_maintenance_op", "build_iceberg_maintenance_schedule",
    "create_iceberg_resources", "flush_lineage", "iceberg_asset_tables", "set_tracer_provider",
    "track_maintenance",
}  # fmt: skip
DELIBERATE_ADDITIONS = {
    "DanglingDeletesResult",
    "CatalogSetupError",
    "validate_iceberg_definitions",
    "GlueCatalogConfig",
    "S3TablesCatalogConfig",
    "build_iceberg_observation_sensor",
    "iceberg_pipes_result",
    "iceberg_pipes_results",
    "LocalEngineConfig",
    "MaintenanceEngine",
    "SparkEngineConfig",
}


def test_all_is_unchanged_except_deliberate_additions() -> None:
    assert (
        set(floe_dagster_iceberg.__all__) == PUBLIC_BEFORE_THE_ENGINE_LAYOUT | DELIBERATE_ADDITIONS
    )


def test_every_public_name_is_importable() -> None:
    missing = [
        name for name in floe_dagster_iceberg.__all__ if not hasattr(floe_dagster_iceberg, name)
    ]
    assert missing == []
