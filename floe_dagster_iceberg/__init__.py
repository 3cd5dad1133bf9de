"""floe-dagster-iceberg: Apache Iceberg as the storage layer of Dagster projects.

Example:
    >>> import dagster as dg
    >>> from floe_dagster_iceberg import create_iceberg_resources, validate_iceberg_definitions
    >>> defs = validate_iceberg_definitions(
    ...     dg.Definitions(assets=[], resources=create_iceberg_resources())
    ... )
"""

from floe_dagster_iceberg.audit import AUDIT_BRANCH_METADATA, audit_branch_name
from floe_dagster_iceberg.catalog_config import (
    HOME_ENV_VAR,
    CustomCatalogConfig,
    EmbeddedCatalogConfig,
    FileIOImplementation,
    GlueCatalogConfig,
    RestCatalogConfig,
    S3StorageConfig,
    S3TablesCatalogConfig,
    SqlCatalogConfig,
)
from floe_dagster_iceberg.checks import build_iceberg_health_checks
from floe_dagster_iceberg.components import IcebergHealthChecksModel, IcebergMaintenanceComponent
from floe_dagster_iceberg.engine.branches import PublishResult
from floe_dagster_iceberg.engine.config import (
    ArrowStringType,
    ChangeCapture,
    ColumnSpec,
    NullOrder,
    PartitionField,
    PartitionSpecUpdateMode,
    PartitionTransform,
    RetryPolicy,
    SchemaChange,
    SchemaChangeKind,
    SchemaUpdateMode,
    SchemaVersion,
    SnapshotInfo,
    SortDirection,
    SortField,
    TableConfig,
    TableSchema,
    UpsertScope,
    WriteConfig,
    WriteMode,
    WriteResult,
)
from floe_dagster_iceberg.engine.maintenance import (
    CompactionResult,
    DanglingDeletesResult,
    ExpireSnapshotsResult,
    OrphanFilesResult,
    PartitionCompaction,
    RewriteManifestsResult,
    SkippedPartition,
    TableHealth,
)
from floe_dagster_iceberg.engine.maintenance.engines import (
    LocalEngineConfig,
    MaintenanceEngine,
    SparkEngineConfig,
)
from floe_dagster_iceberg.engine.manager import CreateTableResult, IcebergTableManager
from floe_dagster_iceberg.engine.scan import ReadRequest
from floe_dagster_iceberg.engine.telemetry import set_tracer_provider
from floe_dagster_iceberg.errors import (
    CatalogConnectionError,
    CatalogSetupError,
    CommitConflictError,
    IcebergError,
    InvalidIdentifierError,
    InvalidInputError,
    PartitionMismatchError,
    SchemaEvolutionError,
    TableNotFoundError,
    UpsertKeyError,
)
from floe_dagster_iceberg.io_manager import IcebergIOManager, create_iceberg_resources
from floe_dagster_iceberg.jobs import (
    MaintenanceStep,
    build_iceberg_compaction_sensor,
    build_iceberg_maintenance_definitions,
    build_iceberg_maintenance_job,
    build_iceberg_maintenance_op,
    build_iceberg_maintenance_schedule,
    build_iceberg_observation_sensor,
    iceberg_asset_tables,
)
from floe_dagster_iceberg.lineage import LineageConfig, flush_lineage, track_maintenance
from floe_dagster_iceberg.pipes import iceberg_pipes_result, iceberg_pipes_results
from floe_dagster_iceberg.resource import IcebergCatalogResource
from floe_dagster_iceberg.type_handlers import (
    LoadRequest,
    PolarsReader,
    TypeHandler,
    register_type_handler,
    unregister_type_handler,
)
from floe_dagster_iceberg.validation import validate_iceberg_definitions
from floe_dagster_iceberg.version import __version__

__all__ = [
    "AUDIT_BRANCH_METADATA",
    "HOME_ENV_VAR",
    "ArrowStringType",
    "CatalogConnectionError",
    "CatalogSetupError",
    "ChangeCapture",
    "ColumnSpec",
    "CommitConflictError",
    "CompactionResult",
    "CreateTableResult",
    "CustomCatalogConfig",
    "DanglingDeletesResult",
    "EmbeddedCatalogConfig",
    "ExpireSnapshotsResult",
    "FileIOImplementation",
    "GlueCatalogConfig",
    "IcebergCatalogResource",
    "IcebergError",
    "IcebergHealthChecksModel",
    "IcebergIOManager",
    "IcebergMaintenanceComponent",
    "IcebergTableManager",
    "InvalidIdentifierError",
    "InvalidInputError",
    "LineageConfig",
    "LoadRequest",
    "LocalEngineConfig",
    "MaintenanceEngine",
    "MaintenanceStep",
    "NullOrder",
    "OrphanFilesResult",
    "PartitionCompaction",
    "PartitionField",
    "PartitionMismatchError",
    "PartitionSpecUpdateMode",
    "PartitionTransform",
    "PolarsReader",
    "PublishResult",
    "ReadRequest",
    "RestCatalogConfig",
    "RetryPolicy",
    "RewriteManifestsResult",
    "S3StorageConfig",
    "S3TablesCatalogConfig",
    "SchemaChange",
    "SchemaChangeKind",
    "SchemaEvolutionError",
    "SchemaUpdateMode",
    "SchemaVersion",
    "SkippedPartition",
    "SnapshotInfo",
    "SortDirection",
    "SortField",
    "SparkEngineConfig",
    "SqlCatalogConfig",
    "TableConfig",
    "TableHealth",
    "TableNotFoundError",
    "TableSchema",
    "TypeHandler",
    "UpsertKeyError",
    "UpsertScope",
    "WriteConfig",
    "WriteMode",
    "WriteResult",
    "__version__",
    "audit_branch_name",
    "build_iceberg_compaction_sensor",
    "build_iceberg_health_checks",
    "build_iceberg_maintenance_definitions",
    "build_iceberg_maintenance_job",
    "build_iceberg_maintenance_op",
    "build_iceberg_maintenance_schedule",
    "build_iceberg_observation_sensor",
    "create_iceberg_resources",
    "flush_lineage",
    "iceberg_asset_tables",
    "iceberg_pipes_result",
    "iceberg_pipes_results",
    "register_type_handler",
    "set_tracer_provider",
    "track_maintenance",
    "unregister_type_handler",
    "validate_iceberg_definitions",
]
