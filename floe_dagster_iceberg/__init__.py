"""floe-dagster-iceberg: Apache Iceberg as the storage layer of Dagster projects.

Example:
    >>> import dagster as dg
    >>> from floe_dagster_iceberg import create_iceberg_resources
    >>> defs = dg.Definitions(assets=[], resources=create_iceberg_resources())
"""

from floe_dagster_iceberg.catalog_resource import (
    HOME_ENV_VAR,
    CustomCatalogConfig,
    EmbeddedCatalogConfig,
    IcebergCatalogResource,
    RestCatalogConfig,
    S3StorageConfig,
    SqlCatalogConfig,
)
from floe_dagster_iceberg.errors import (
    CatalogConnectionError,
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
from floe_dagster_iceberg.manager import CreateTableResult, IcebergTableManager
from floe_dagster_iceberg.models import (
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
from floe_dagster_iceberg.version import __version__

__all__ = [
    "HOME_ENV_VAR",
    "CatalogConnectionError",
    "ColumnSpec",
    "CommitConflictError",
    "CreateTableResult",
    "CustomCatalogConfig",
    "EmbeddedCatalogConfig",
    "IcebergCatalogResource",
    "IcebergError",
    "IcebergIOManager",
    "IcebergTableManager",
    "InvalidIdentifierError",
    "InvalidInputError",
    "NullOrder",
    "PartitionField",
    "PartitionMismatchError",
    "PartitionSpecUpdateMode",
    "PartitionTransform",
    "RestCatalogConfig",
    "RetryPolicy",
    "S3StorageConfig",
    "SchemaChange",
    "SchemaChangeKind",
    "SchemaEvolutionError",
    "SchemaUpdateMode",
    "SchemaVersion",
    "SnapshotInfo",
    "SortDirection",
    "SortField",
    "SqlCatalogConfig",
    "TableConfig",
    "TableNotFoundError",
    "TableSchema",
    "UpsertKeyError",
    "UpsertScope",
    "WriteConfig",
    "WriteMode",
    "WriteResult",
    "__version__",
    "create_iceberg_resources",
]
