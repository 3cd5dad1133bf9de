"""The Iceberg catalog of the example, chosen by environment variables (no code change).

Nothing set: the embedded default, a SQLite catalog and a local warehouse in
``$FLOE_ICEBERG_HOME`` (default: ``.floe`` next to this project's ``pyproject.toml``).

``FLOE_CATALOG_URI`` set: that catalog. An ``http(s)://`` URI is an Iceberg REST catalog
(Polaris, Lakekeeper, Nessie, Gravitino, SeaweedFS, ...), anything else a SQLAlchemy URI of a
SQL catalog (``postgresql+psycopg2://...``). ``FLOE_CATALOG_TYPE`` (``rest`` | ``sql``)
overrides the guess. Other variables:

==============================  ==========================================================
``FLOE_CATALOG_NAME``           catalog name (default ``floe``)
``FLOE_CATALOG_WAREHOUSE``      REST: warehouse name or location; SQL: root of new tables
                                (required for SQL, e.g. ``s3://lake/warehouse``)
``FLOE_CATALOG_CREDENTIAL``     REST OAuth2 client credential ``client_id:client_secret``
``FLOE_CATALOG_TOKEN``          REST bearer token (instead of a credential)
``FLOE_CATALOG_SCOPE``          REST OAuth2 scope, e.g. ``PRINCIPAL_ROLE:ALL``
``FLOE_S3_ENDPOINT``            S3-compatible endpoint; omit for AWS S3
``FLOE_S3_REGION``              S3 region, e.g. ``us-east-1``
``FLOE_S3_ACCESS_KEY_ID``       S3 access key (else the default AWS credential chain)
``FLOE_S3_SECRET_ACCESS_KEY``   S3 secret key
``FLOE_S3_PATH_STYLE``          ``true`` for path-style URLs (SeaweedFS, MinIO, Ceph)
==============================  ==========================================================

Secrets are passed as ``dagster.EnvVar``: the Dagster UI shows the variable's name, never
its value, and the value is read when a run starts.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import dagster as dg

from floe_dagster_iceberg import (
    HOME_ENV_VAR,
    EmbeddedCatalogConfig,
    IcebergCatalogResource,
    RestCatalogConfig,
    S3StorageConfig,
    SqlCatalogConfig,
)

PROJECT_DIR = Path(__file__).resolve().parents[1]
"""The folder holding this project's ``pyproject.toml`` (``example_project/``)."""

DEFAULT_HOME = PROJECT_DIR / ".floe"
"""Where the embedded catalog and warehouse live unless ``FLOE_ICEBERG_HOME`` says otherwise."""

CATALOG_ENV_VARS = (
    "FLOE_CATALOG_URI",
    "FLOE_CATALOG_TYPE",
    "FLOE_CATALOG_NAME",
    "FLOE_CATALOG_WAREHOUSE",
    "FLOE_CATALOG_CREDENTIAL",
    "FLOE_CATALOG_TOKEN",
    "FLOE_CATALOG_SCOPE",
    "FLOE_S3_ENDPOINT",
    "FLOE_S3_REGION",
    "FLOE_S3_ACCESS_KEY_ID",
    "FLOE_S3_SECRET_ACCESS_KEY",
    "FLOE_S3_PATH_STYLE",
)


def _set(name: str) -> bool:
    return bool(os.environ.get(name))


def _env(name: str) -> Any:
    """``EnvVar(name)`` when the variable is set, else ``None`` (the field's default)."""
    return dg.EnvVar(name) if _set(name) else None


def embedded_home() -> Path:
    """Directory of the embedded catalog: ``$FLOE_ICEBERG_HOME`` or ``example_project/.floe``."""
    return Path(os.environ.get(HOME_ENV_VAR) or DEFAULT_HOME).resolve()


def _storage() -> S3StorageConfig | None:
    if not any(_set(n) for n in CATALOG_ENV_VARS if n.startswith("FLOE_S3_")):
        return None
    path_style = os.environ.get("FLOE_S3_PATH_STYLE", "").strip().lower()
    return S3StorageConfig(
        endpoint=_env("FLOE_S3_ENDPOINT"),
        region=_env("FLOE_S3_REGION"),
        access_key_id=_env("FLOE_S3_ACCESS_KEY_ID"),
        secret_access_key=_env("FLOE_S3_SECRET_ACCESS_KEY"),
        path_style_access={"true": True, "1": True, "false": False, "0": False}.get(path_style),
    )


def catalog_from_env() -> IcebergCatalogResource:
    """The catalog resource the environment describes (see the module docstring).

    Example:
        >>> # FLOE_CATALOG_URI=https://catalog.example.com FLOE_CATALOG_WAREHOUSE=lake
        >>> # -> IcebergCatalogResource(catalog=RestCatalogConfig(uri=..., warehouse=EnvVar(...)))
        >>> # nothing set -> the embedded catalog in $FLOE_ICEBERG_HOME or example_project/.floe
    """
    name = os.environ.get("FLOE_CATALOG_NAME") or "floe"
    uri = os.environ.get("FLOE_CATALOG_URI", "").strip()
    if not uri:
        return IcebergCatalogResource(
            name=name,
            catalog=EmbeddedCatalogConfig(home=str(embedded_home())),
            storage=_storage(),
        )
    kind = (os.environ.get("FLOE_CATALOG_TYPE") or "").strip().lower() or (
        "rest" if uri.startswith(("http://", "https://")) else "sql"
    )
    if kind == "rest":
        catalog: RestCatalogConfig | SqlCatalogConfig = RestCatalogConfig(
            uri=uri,
            warehouse=_env("FLOE_CATALOG_WAREHOUSE"),
            credential=_env("FLOE_CATALOG_CREDENTIAL"),
            token=_env("FLOE_CATALOG_TOKEN"),
            scope=_env("FLOE_CATALOG_SCOPE"),
        )
    elif kind == "sql":
        if not _set("FLOE_CATALOG_WAREHOUSE"):
            raise ValueError(
                "FLOE_CATALOG_URI names a SQL catalog; set FLOE_CATALOG_WAREHOUSE to the root of "
                "its tables too, e.g. s3://lake/warehouse or file:///data/warehouse."
            )
        # The URI of a SQL catalog may hold a password: pass it as an EnvVar as well.
        catalog = SqlCatalogConfig(
            uri=dg.EnvVar("FLOE_CATALOG_URI"), warehouse=dg.EnvVar("FLOE_CATALOG_WAREHOUSE")
        )
    else:
        raise ValueError(f"FLOE_CATALOG_TYPE={kind!r} is not supported; use 'rest' or 'sql'.")
    return IcebergCatalogResource(name=name, catalog=catalog, storage=_storage())
