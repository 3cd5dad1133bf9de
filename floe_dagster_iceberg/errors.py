"""One small exception hierarchy; every message names the table, column or partition and the fix."""

from __future__ import annotations

__all__ = [
    "CatalogConnectionError",
    "CatalogSetupError",
    "CommitConflictError",
    "IcebergError",
    "InvalidIdentifierError",
    "InvalidInputError",
    "PartitionMismatchError",
    "SchemaEvolutionError",
    "TableNotFoundError",
    "UpsertKeyError",
]


class IcebergError(Exception):
    """Base class of every error raised by floe-dagster-iceberg.

    Example:
        >>> try:
        ...     raise TableNotFoundError("Table 'sales.orders' does not exist.")
        ... except IcebergError as error:
        ...     print(error)
        Table 'sales.orders' does not exist.
    """


class InvalidIdentifierError(IcebergError, ValueError):
    """A namespace or table name is empty, contains path separators, '..' or control characters."""


class TableNotFoundError(IcebergError, LookupError):
    """The table (or the snapshot, tag or branch asked for) does not exist."""


class SchemaEvolutionError(IcebergError):
    """A schema change is narrowing, incompatible, or not allowed by the schema update mode."""


class InvalidInputError(IcebergError, ValueError):
    """Data handed to a write cannot be stored as is (types, nulls in required columns, ...)."""


class PartitionMismatchError(InvalidInputError):
    """Rows fall outside the partition slice the run owns, or a partition column holds nulls."""


class UpsertKeyError(InvalidInputError):
    """Join columns of an upsert are missing, null, of another type, or not unique."""


class CommitConflictError(IcebergError):
    """A commit kept conflicting with concurrent writers after every allowed retry."""


class CatalogConnectionError(IcebergError, ConnectionError):
    """The catalog or the object store could not be reached or refused the credentials."""


class CatalogSetupError(IcebergError):
    """A SQL catalog's own tables are missing and could not be created in its database."""
