"""IcebergCatalogResource: the Dagster resource that owns the catalog connection.

The catalog is configured by a typed, discriminated config (see
:mod:`floe_dagster_iceberg.catalog_config`), storage (FileIO) settings and secrets through
``dagster.EnvVar``. With no configuration at all it is an embedded SQLite catalog with a local
warehouse.

Example:
    >>> from dagster import EnvVar
    >>> embedded = IcebergCatalogResource()
    >>> rest = IcebergCatalogResource(
    ...     name="lake",
    ...     catalog=RestCatalogConfig(
    ...         uri="https://catalog.example.com", warehouse="lake",
    ...         credential=EnvVar("ICEBERG_CREDENTIAL"),
    ...     ),
    ...     storage=S3StorageConfig(endpoint="https://s3.example.com", region="eu-west-1"),
    ... )
"""

from __future__ import annotations

import inspect
import logging
import os
import threading
from typing import Any

from dagster import ConfigurableResource, EnvVar
from pydantic import Field
from pyiceberg.catalog import Catalog, load_catalog

from floe_dagster_iceberg.catalog_config import (
    CustomCatalogConfig,
    EmbeddedCatalogConfig,
    FileIOImplementation,
    GlueCatalogConfig,
    RestCatalogConfig,
    S3StorageConfig,
    S3TablesCatalogConfig,
    SqlCatalogConfig,
)
from floe_dagster_iceberg.engine.catalog_tables import ensure_catalog_tables
from floe_dagster_iceberg.engine.config import RetryPolicy
from floe_dagster_iceberg.engine.manager import IcebergTableManager
from floe_dagster_iceberg.engine.outages import connection_error
from floe_dagster_iceberg.engine.telemetry import resolve_tracer_provider
from floe_dagster_iceberg.errors import (
    CatalogConnectionError,
    CatalogSetupError,
    IcebergError,
)
from floe_dagster_iceberg.lineage import (
    CatalogIdentity,
    LineageConfig,
    LineageEmitter,
    lineage_emitter,
)
from floe_dagster_iceberg.redaction import RedactedRepr, redact, redact_uri

__all__ = ["IcebergCatalogResource"]

_CATALOGS: dict[tuple[Any, ...], Catalog] = {}
_CATALOGS_LOCK = threading.Lock()


class IcebergCatalogResource(RedactedRepr, ConfigurableResource):
    """The Iceberg catalog of a Dagster project; loads it once per process and hands out managers.

    With no arguments it is the embedded default: a SQLite catalog and a local warehouse under
    `$FLOE_ICEBERG_HOME` (default `./.floe`), so a project runs with no server.

    Example:

    ```python
    IcebergCatalogResource(
        catalog=RestCatalogConfig(
            uri="https://catalog.example.com",
            warehouse="lake",
            credential=EnvVar("ICEBERG_CREDENTIAL"),
        ),
    )
    ```
    """

    name: str = Field(
        default="floe", description="Catalog name (SQL catalogs key their tables by it)"
    )
    catalog: (
        EmbeddedCatalogConfig
        | SqlCatalogConfig
        | RestCatalogConfig
        | GlueCatalogConfig
        | S3TablesCatalogConfig
        | CustomCatalogConfig
    ) = Field(
        default_factory=EmbeddedCatalogConfig,
        discriminator="type",
        description="Catalog config; the default is the embedded SQLite catalog",
    )
    storage: S3StorageConfig | None = Field(default=None, description="Object storage settings")
    file_io: FileIOImplementation | None = Field(
        default=None,
        description="FileIO library: 'pyarrow' or 'fsspec' (for Kubernetes pods where PyArrow's "
        "S3 client hangs at exit); by default PyIceberg picks by the warehouse's scheme",
    )
    properties: dict[str, str] = Field(
        default_factory=dict,
        description="Extra PyIceberg catalog / FileIO properties (secrets hidden in repr)",
    )
    max_commit_attempts: int | None = Field(
        default=None,
        ge=1,
        description="Attempts per commit under conflicts; by default the table's "
        "commit.retry.num-retries + 1, else 8",
    )
    openlineage: LineageConfig | None = Field(
        default=None,
        description="OpenLineage override (transport, job namespace, on/off); by default events "
        "follow openlineage.yml / OPENLINEAGE_URL / OPENLINEAGE__TRANSPORT__* and are off when "
        "none is set",
    )
    branch: str | None = Field(
        default=None,
        description="Branch every read and write of this code location uses instead of main, "
        "e.g. from an environment variable in branch deployments: created from main on a "
        "table's first write, tables never written on it are read from main",
    )
    tracer_provider: str | None = Field(
        default=None,
        description="Import path of an OpenTelemetry TracerProvider (or a function returning "
        "one), e.g. 'my_project.telemetry:tracer_provider'; default: the global provider",
    )

    def catalog_properties(self) -> dict[str, str]:
        """All PyIceberg properties of the catalog, secrets included: never log this."""
        properties = self.catalog.to_properties()
        if self.storage:
            properties.update(self.storage.to_properties())
        if self.file_io:
            properties["py-io-impl"] = self.file_io.py_io_impl
        properties.update(self.properties)
        return {key: _resolve_env_var(key, value) for key, value in properties.items()}

    @property
    def catalog_type(self) -> str:
        """The PyIceberg catalog type: ``sql`` for the embedded default, ``rest`` for S3 Tables,
        a custom config's own 'type', else the config's type (``glue``, ``rest``, ...)."""
        if isinstance(self.catalog, CustomCatalogConfig):
            return self.catalog.properties.get("type", "custom")
        if isinstance(self.catalog, EmbeddedCatalogConfig):
            return "sql"
        return "rest" if isinstance(self.catalog, S3TablesCatalogConfig) else self.catalog.type

    @property
    def catalog_uri(self) -> str | None:
        """The catalog's address without credentials, safe to show (lineage, errors)."""
        uri = self.catalog_properties().get("uri")
        return redact_uri(uri) if uri else None

    def load_catalog(self) -> Catalog:
        """The PyIceberg catalog, loaded once per process and configuration."""
        properties = self.catalog_properties()
        key = (os.getpid(), self.name, tuple(sorted(properties.items())))
        with _CATALOGS_LOCK:
            if key not in _CATALOGS:
                _CATALOGS[key] = self._connect(properties)
            return _CATALOGS[key]

    def get_manager(
        self, tracer_provider: Any = None, logger: logging.Logger | None = None
    ) -> IcebergTableManager:
        """An :class:`IcebergTableManager` on this catalog.

        Spans go to ``tracer_provider``, else to the one the ``tracer_provider`` setting names;
        commit and retry log lines go to ``logger`` (e.g. a Dagster ``context.log``).
        """
        if tracer_provider is None and self.tracer_provider:
            tracer_provider = resolve_tracer_provider(self.tracer_provider)
        return IcebergTableManager(
            self.load_catalog(),
            retry=RetryPolicy(max_attempts=self.max_commit_attempts),
            tracer_provider=tracer_provider,
            logger=logger,
        )

    def lineage(self) -> LineageEmitter:
        """The OpenLineage emitter of this catalog (disabled when OpenLineage is not configured)."""
        identity = CatalogIdentity.from_properties(
            self.name, self.catalog_type, self.catalog_uri, self.catalog_properties()
        )
        return lineage_emitter(self.openlineage, identity)

    def _connect(self, properties: dict[str, str]) -> Catalog:
        if isinstance(self.catalog, EmbeddedCatalogConfig):
            (self.catalog.home_path() / "warehouse").mkdir(parents=True, exist_ok=True)
        try:
            if _creates_sql_catalog_tables(properties):
                # Created here, safely for concurrent first openers, instead of by PyIceberg.
                ensure_catalog_tables(properties["uri"], self.name)
                properties = {**properties, "init_catalog_tables": "false"}
            return load_catalog(self.name, **properties)
        except CatalogSetupError:
            raise
        except (ValueError, IcebergError, ImportError) as error:
            raise IcebergError(
                f"Could not load the Iceberg catalog {self.name!r} of type "
                f"{properties.get('type')!r} at {self.catalog_uri}: {redact(str(error), properties)}. "
                "Check the catalog 'type' (sql, rest, glue, hive, ...) and its properties."
            ) from None
        except Exception as error:
            translated = connection_error(error, properties, f"opening the catalog {self.name!r}")
            if translated is not None:
                raise translated from None
            raise CatalogConnectionError(
                f"Could not open the Iceberg catalog {self.name!r} at {self.catalog_uri}: "
                f"{redact(f'{type(error).__name__}: {error}', properties)}."
            ) from None


# Dagster shows the class docstring as the resource's description, in markdown: unindented.
IcebergCatalogResource.__doc__ = inspect.cleandoc(IcebergCatalogResource.__doc__ or "")


def _creates_sql_catalog_tables(properties: dict[str, str]) -> bool:
    """A SQL catalog whose tables we create if missing (unless ``init_catalog_tables=false``)."""
    return (
        properties.get("type") == "sql"
        and bool(properties.get("uri"))
        and str(properties.get("init_catalog_tables", "true")).strip().lower()
        in ("true", "1", "yes", "on", "t", "y")
    )


def _resolve_env_var(key: str, value: str) -> str:
    """Inside a run Dagster has already resolved ``EnvVar`` fields; outside one, do it here."""
    if not isinstance(value, EnvVar):
        return value
    resolved = value.get_value()
    if resolved is None:
        raise IcebergError(
            f"Catalog property {key!r} comes from the environment variable "
            f"{value.env_var_name!r}, which is not set; set it or configure the value directly."
        )
    return resolved
