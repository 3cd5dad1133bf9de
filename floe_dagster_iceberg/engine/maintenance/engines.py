"""Which engine runs maintenance: this process (``local``, the default) or Spark (``spark``).

The choice is configuration only: every maintenance operation returns the same result models
with either engine. :class:`SparkEngineConfig` runs compaction, position-delete rewrite,
snapshot expiry, orphan removal and manifest rewrite as Spark's Iceberg procedures
(:mod:`.spark`), either on a Spark Connect server or in a Spark session started in this
process, with the Iceberg catalog mapped from the catalog this package uses.

Example:
    >>> from pydantic import TypeAdapter
    >>> engine = TypeAdapter(MaintenanceEngineConfig).validate_python(
    ...     {"type": "spark", "connect_url": "sc://spark.example.com:15002"}
    ... )
    >>> engine.type.value, engine.connect_url
    ('spark', 'sc://spark.example.com:15002')
    >>> LocalEngineConfig().type is MaintenanceEngine.LOCAL
    True
"""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from floe_dagster_iceberg.redaction import RedactedRepr

__all__ = [
    "ICEBERG_SPARK_EXTENSIONS",
    "LocalEngineConfig",
    "MaintenanceEngine",
    "MaintenanceEngineConfig",
    "SparkEngineConfig",
]

ICEBERG_SPARK_EXTENSIONS = "org.apache.iceberg.spark.extensions.IcebergSparkSessionExtensions"
"""The Spark SQL extensions that parse ``CALL <catalog>.system.<procedure>(...)``."""


class MaintenanceEngine(str, Enum):
    """Where maintenance runs: ``local`` (this process, PyIceberg) or ``spark``.

    Example:
        >>> MaintenanceEngine("spark") is MaintenanceEngine.SPARK
        True
    """

    LOCAL = "local"
    SPARK = "spark"


class LocalEngineConfig(BaseModel):
    """Maintenance in this process with PyIceberg (the default): no cluster, no JVM.

    Example:
        >>> LocalEngineConfig().model_dump(mode="json")
        {'type': 'local'}
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal[MaintenanceEngine.LOCAL] = MaintenanceEngine.LOCAL


class SparkEngineConfig(RedactedRepr, BaseModel):
    """Maintenance as Spark's Iceberg procedures (``CALL <catalog>.system.<procedure>``).

    With ``connect_url`` the procedures run on that Spark Connect server, which must have the
    Iceberg Spark runtime and ``spark.sql.extensions`` set to Iceberg's extensions; the catalog
    is set on the session from the catalog resource unless the server already defines a
    catalog of that name. Without it, a Spark session is started in this process (once per
    process) on ``master``: give it the Iceberg runtime for your Spark and Scala versions, and
    the JDBC driver of a SQL catalog, either as Maven coordinates in ``packages``
    (``spark.jars.packages``, downloaded by Spark) or as files in ``jars`` (``spark.jars``).

    The Spark catalog is named after the Iceberg catalog (``catalog_name`` overrides it; a SQL
    catalog must keep its name, as its tables are keyed by it) and mapped from its properties:
    a SQL catalog becomes Iceberg's ``JdbcCatalog`` on the same database and warehouse
    (PostgreSQL and MySQL over TCP, SQLite on its file), a REST catalog Iceberg's REST catalog
    with the same URI, warehouse and credentials; S3 storage properties become ``S3FileIO``
    ones (which needs the ``iceberg-aws-bundle`` jar). For any other catalog give the Spark
    catalog properties yourself in ``catalog_properties``.

    Example:
        >>> engine = SparkEngineConfig(
        ...     packages=["org.apache.iceberg:iceberg-spark-runtime-3.5_2.12:1.10.0",
        ...               "org.postgresql:postgresql:42.7.4"],
        ...     conf={"spark.driver.memory": "4g"},
        ... )
        >>> engine.master, engine.connect_url
        ('local[*]', None)
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal[MaintenanceEngine.SPARK] = MaintenanceEngine.SPARK
    connect_url: str | None = Field(
        default=None,
        description="Spark Connect URL (sc://host:15002); null: a Spark session in this process",
    )
    master: str = Field(
        default="local[*]",
        description="Master of the session started in this process (local[4], spark://host:7077)",
    )
    packages: list[str] = Field(
        default_factory=list,
        description="Maven coordinates for spark.jars.packages, e.g. "
        "org.apache.iceberg:iceberg-spark-runtime-3.5_2.12:1.10.0",
    )
    jars: list[str] = Field(
        default_factory=list,
        description="Jar files for spark.jars: the Iceberg Spark runtime, a JDBC driver",
    )
    conf: dict[str, str] = Field(
        default_factory=dict,
        description="More Spark settings of the session, e.g. spark.driver.memory",
    )
    catalog_name: str | None = Field(
        default=None,
        description="Spark catalog name; null: the Iceberg catalog's name (SQL catalogs need it)",
    )
    catalog_properties: dict[str, str] | None = Field(
        default=None,
        description="Spark catalog properties (without the spark.sql.catalog.<name>. prefix) "
        "instead of those mapped from the catalog resource",
    )


MaintenanceEngineConfig = Annotated[
    LocalEngineConfig | SparkEngineConfig, Field(discriminator="type")
]
"""A maintenance engine: :class:`LocalEngineConfig` or :class:`SparkEngineConfig`, told apart
by ``type``."""
