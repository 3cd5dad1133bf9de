"""Catalog properties and loading shared by the fixtures and by test subprocesses."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from pathlib import Path

# SqlCatalog keys its rows by catalog name: every process must load the catalog under this
# name to see the same namespaces and tables.
CATALOG_NAME = "floe"

CATALOG_KINDS = ("sqlite", "postgres", "rest")


def unique_name(prefix: str) -> str:
    """``<prefix>_<10 hex chars>``: a valid, unique Iceberg namespace or table name."""
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def sqlite_catalog_properties_for(directory: Path) -> dict[str, str]:
    """SQLite catalog at ``<directory>/catalog.db`` with warehouse ``<directory>/warehouse``."""
    directory = Path(directory).resolve()
    warehouse = directory / "warehouse"
    warehouse.mkdir(parents=True, exist_ok=True)
    return {
        "type": "sql",
        "uri": f"sqlite:///{directory / 'catalog.db'}",
        "warehouse": warehouse.as_uri(),
    }


def catalog_kind_of(properties: Mapping[str, str]) -> str:
    """``"sqlite"``, ``"postgres"``, ``"rest"`` (or the ``type`` property otherwise)."""
    kind = properties.get("type", "")
    if kind == "sql":
        uri = properties.get("uri", "")
        if uri.startswith("sqlite"):
            return "sqlite"
        if uri.startswith("postgresql"):
            return "postgres"
    return kind


def load_test_catalog(properties: Mapping[str, str], name: str = CATALOG_NAME):
    """``pyiceberg.catalog.load_catalog(name, **properties)``."""
    from pyiceberg.catalog import load_catalog

    return load_catalog(name, **dict(properties))


def dispose_catalog(catalog) -> None:
    """Close the database connections a ``SqlCatalog`` holds (no-op for other catalogs)."""
    engine = getattr(catalog, "engine", None)
    if engine is not None:
        engine.dispose()


def initialise_sql_catalog(properties: Mapping[str, str]) -> None:
    """Create the SQL catalog's tables now, so that concurrent first opens cannot race."""
    if properties.get("type") == "sql":
        dispose_catalog(load_test_catalog(properties))
