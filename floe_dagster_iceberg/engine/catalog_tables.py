"""Creation of a SQL catalog's own tables, safe when many processes open a fresh catalog at once.

PyIceberg's ``SqlCatalog`` checks whether ``iceberg_tables`` and
``iceberg_namespace_properties`` exist and creates them if not. Two processes doing that at once
(the first backfill of a new deployment starts many runs together) both see the tables
missing and the slower one fails with "table iceberg_tables already exists" (PostgreSQL:
``DuplicateTable`` or a ``UniqueViolation`` on ``pg_type``). :func:`ensure_catalog_tables`
creates them before PyIceberg looks:

- only when a table is missing, so a catalog whose user may not create tables still opens;
- on PostgreSQL under a transaction-level advisory lock, so creators take turns and each one
  checks again once it holds the lock;
- with ``CREATE TABLE IF NOT EXISTS`` where the database has it (atomic on SQLite);
- and, whatever the database, a failed creation after which both tables exist is a success:
  another process created them.
"""

from __future__ import annotations

from floe_dagster_iceberg.errors import CatalogSetupError
from floe_dagster_iceberg.redaction import redact, redact_uri

__all__ = ["CATALOG_TABLES", "ensure_catalog_tables"]

CATALOG_TABLES = ("iceberg_tables", "iceberg_namespace_properties")
"""The tables PyIceberg's SQL catalog keeps its namespaces and table pointers in."""

# Key of the PostgreSQL advisory lock that serialises catalog table creation (any bigint works;
# every process must use the same one).
_POSTGRES_LOCK_KEY = 0x666C6F655F696365  # "floe_ice"
_IF_NOT_EXISTS_DIALECTS = frozenset({"sqlite", "postgresql", "mysql", "mariadb"})
_ATTEMPTS = 3


def _missing(connection) -> list:
    from pyiceberg.catalog.sql import SqlCatalogBaseTable
    from sqlalchemy import inspect

    inspector = inspect(connection)
    return [
        table
        for table in SqlCatalogBaseTable.metadata.sorted_tables
        if not inspector.has_table(table.name)
    ]


def _create_missing(connection) -> None:
    from sqlalchemy import text
    from sqlalchemy.schema import CreateTable

    dialect = connection.dialect.name
    with connection.begin():
        if dialect == "postgresql":
            # Held until this transaction ends; PostgreSQL DDL is transactional, so the next
            # holder sees the tables committed by the previous one.
            connection.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": _POSTGRES_LOCK_KEY}
            )
        for table in _missing(connection):
            connection.execute(CreateTable(table, if_not_exists=dialect in _IF_NOT_EXISTS_DIALECTS))


def ensure_catalog_tables(uri: str, catalog_name: str) -> bool:
    """Create the SQL catalog tables in the database at ``uri`` if missing; True if created.

    Connection failures are raised as they come (the caller reports them as such). A creation
    that fails for another reason, and after which the tables still do not exist, raises
    :class:`CatalogSetupError` saying which tables could not be created and why.
    """
    from sqlalchemy import create_engine
    from sqlalchemy.exc import DBAPIError
    from sqlalchemy.pool import NullPool

    engine = create_engine(uri, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            if not _missing(connection):
                return False
        error: DBAPIError | None = None
        for _ in range(_ATTEMPTS):
            with engine.connect() as connection:
                try:
                    _create_missing(connection)
                    return True
                except DBAPIError as failed:
                    error = failed
                if not _missing(connection):
                    return False  # another process created them meanwhile
        assert error is not None
        first_line = (str(error.orig).strip().splitlines() or [""])[0]
        detail = redact(f"{type(error.orig).__name__}: {first_line}", {"uri": uri})
        raise CatalogSetupError(
            f"The SQL catalog {catalog_name!r} at {redact_uri(uri)} has no catalog tables "
            f"({', '.join(CATALOG_TABLES)}) and creating them failed: {detail}. The database "
            "was reached; check that the catalog's database user may create tables there, or "
            "open the catalog once as a user who may (that creates them), then re-run."
        ) from None
    finally:
        engine.dispose()
