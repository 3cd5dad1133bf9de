"""The Spark catalog that reaches the same tables as a PyIceberg catalog, from its properties.

A PyIceberg SQL catalog and Iceberg's Java ``JdbcCatalog`` share one schema (``iceberg_tables``,
``iceberg_namespace_properties``, rows keyed by catalog name), so Spark sees the same tables
when its catalog has the same name, database and warehouse. A REST catalog is the same service
for both. Storage properties are carried over for S3.
"""

from __future__ import annotations

from collections.abc import Mapping

from floe_dagster_iceberg.errors import InvalidInputError
from floe_dagster_iceberg.redaction import redact_uri

__all__ = ["SPARK_CATALOG_CLASS", "spark_catalog_conf", "spark_catalog_properties"]

SPARK_CATALOG_CLASS = "org.apache.iceberg.spark.SparkCatalog"
_JDBC_CATALOG = "org.apache.iceberg.jdbc.JdbcCatalog"
_S3_FILE_IO = "org.apache.iceberg.aws.s3.S3FileIO"
_JDBC_SCHEMES = {"postgresql": "postgresql", "mysql": "mysql", "mariadb": "mariadb"}
_DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306, "mariadb": 3306}
_REST_KEYS = ("uri", "warehouse", "credential", "token", "scope", "oauth2-server-uri", "prefix")
_S3_KEYS = {
    "s3.endpoint": "s3.endpoint",
    "s3.access-key-id": "s3.access-key-id",
    "s3.secret-access-key": "s3.secret-access-key",
    "s3.session-token": "s3.session-token",
    "s3.region": "client.region",
}


def spark_catalog_properties(catalog_name: str, properties: Mapping[str, str]) -> dict[str, str]:
    """Spark catalog properties (no ``spark.sql.catalog.<name>.`` prefix) for the PyIceberg
    catalog ``properties``: a SQL catalog as a ``JdbcCatalog``, a REST catalog as itself.

    Example:
        >>> spark_catalog_properties("floe", {
        ...     "type": "sql", "uri": "postgresql+psycopg2://app:pw@db:5433/lake",
        ...     "warehouse": "s3://lake/warehouse", "s3.endpoint": "http://minio:9000"})
        ... # doctest: +NORMALIZE_WHITESPACE
        {'catalog-impl': 'org.apache.iceberg.jdbc.JdbcCatalog',
         'uri': 'jdbc:postgresql://db:5433/lake', 'jdbc.user': 'app', 'jdbc.password': 'pw',
         'warehouse': 's3://lake/warehouse', 'io-impl': 'org.apache.iceberg.aws.s3.S3FileIO',
         's3.endpoint': 'http://minio:9000', 's3.path-style-access': 'true'}
        >>> spark_catalog_properties("lake", {"type": "rest", "uri": "http://polaris:8181",
        ...                                   "warehouse": "lake", "credential": "id:secret"})
        {'type': 'rest', 'uri': 'http://polaris:8181', 'warehouse': 'lake', 'credential': 'id:secret'}
    """
    kind = properties.get("type", "")
    if kind == "sql":
        mapped = _jdbc_catalog(catalog_name, properties)
    elif kind == "rest":
        mapped = {"type": "rest"}
        mapped.update({key: properties[key] for key in _REST_KEYS if properties.get(key)})
        mapped.update(
            {key: value for key, value in properties.items() if key.startswith("header.")}
        )
    else:
        raise InvalidInputError(
            f"The Spark maintenance engine maps SQL and REST catalogs, not catalog "
            f"{catalog_name!r} of type {kind!r}; give the Spark catalog properties in "
            "SparkEngineConfig(catalog_properties={...}) (e.g. type=glue, warehouse=...)."
        )
    mapped.update(_storage(properties))
    return mapped


def spark_catalog_conf(name: str, catalog_properties: Mapping[str, str]) -> dict[str, str]:
    """Spark settings that define catalog ``name`` with ``catalog_properties``.

    Example:
        >>> spark_catalog_conf("floe", {"type": "rest", "uri": "http://polaris:8181"})
        ... # doctest: +NORMALIZE_WHITESPACE
        {'spark.sql.catalog.floe': 'org.apache.iceberg.spark.SparkCatalog',
         'spark.sql.catalog.floe.cache-enabled': 'false',
         'spark.sql.catalog.floe.type': 'rest',
         'spark.sql.catalog.floe.uri': 'http://polaris:8181'}
    """
    prefix = f"spark.sql.catalog.{name}"
    # Other engines (this package) commit to the same tables: a cached table would make
    # Spark plan on stale metadata, and orphan removal would take new files for orphans.
    settings = {"cache-enabled": "false", **catalog_properties}
    return {
        prefix: SPARK_CATALOG_CLASS,
        **{f"{prefix}.{key}": value for key, value in settings.items()},
    }


def _jdbc_catalog(catalog_name: str, properties: Mapping[str, str]) -> dict[str, str]:
    from sqlalchemy.engine import make_url

    uri = properties.get("uri", "")
    url = make_url(uri)
    backend = url.get_backend_name()
    mapped = {"catalog-impl": _JDBC_CATALOG}
    if backend == "sqlite":
        if not url.database or url.database == ":memory:":
            raise InvalidInputError(
                f"Catalog {catalog_name!r}: Spark cannot share an in-memory SQLite catalog; "
                "use a SQLite file or PostgreSQL."
            )
        mapped["uri"] = f"jdbc:sqlite:{url.database}"
    elif backend in _JDBC_SCHEMES:
        if not url.host or "host" in url.query:
            raise InvalidInputError(
                f"Catalog {catalog_name!r} reaches its database through a Unix socket "
                f"({redact_uri(uri)}); Spark's JDBC catalog connects over TCP: give the "
                "catalog URI a host and port, or SparkEngineConfig(catalog_properties={...})."
            )
        port = url.port or _DEFAULT_PORTS[backend]
        mapped["uri"] = f"jdbc:{_JDBC_SCHEMES[backend]}://{url.host}:{port}/{url.database or ''}"
        if url.username:
            mapped["jdbc.user"] = url.username
        if url.password:
            mapped["jdbc.password"] = str(url.password)
        for key, value in url.query.items():
            mapped[f"jdbc.{key}"] = value if isinstance(value, str) else value[-1]
    else:
        raise InvalidInputError(
            f"Catalog {catalog_name!r}: Spark's JDBC catalog is not mapped for {backend!r} "
            "databases; use PostgreSQL, MySQL or SQLite, or SparkEngineConfig(catalog_properties={...})."
        )
    if properties.get("warehouse"):
        mapped["warehouse"] = properties["warehouse"]
    return mapped


def _storage(properties: Mapping[str, str]) -> dict[str, str]:
    """S3 FileIO settings; nothing for local warehouses (Hadoop's file system reads them)."""
    s3 = {target: properties[key] for key, target in _S3_KEYS.items() if properties.get(key)}
    if not s3 and not str(properties.get("warehouse", "")).startswith(("s3://", "s3a://")):
        return {}
    virtual = str(properties.get("s3.force-virtual-addressing", "")).lower() == "true"
    if "s3.endpoint" in s3:
        s3["s3.path-style-access"] = str(not virtual).lower()
    return {"io-impl": _S3_FILE_IO, **s3}
