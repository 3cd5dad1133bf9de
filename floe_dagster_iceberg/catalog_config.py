"""Typed catalog and storage configs: embedded (the default), SQL, REST, AWS Glue, Amazon S3
Tables and any other catalog.

Each config turns into PyIceberg catalog properties; secrets come through ``dagster.EnvVar`` and
are hidden in ``repr``. The class docstrings are what the Dagster UI shows for the resource's
config: plain markdown, no doctest.

Example:
    >>> EmbeddedCatalogConfig().type
    'embedded'
    >>> GlueCatalogConfig(
    ...     region="eu-west-1", warehouse="s3://lake/warehouse", catalog_id="123456789012"
    ... ).to_properties()["glue.id"]
    '123456789012'
    >>> S3TablesCatalogConfig(
    ...     table_bucket_arn="arn:aws:s3tables:eu-west-1:123456789012:bucket/lake"
    ... ).to_properties()["uri"]
    'https://s3tables.eu-west-1.amazonaws.com/iceberg'
    >>> SqlCatalogConfig(
    ...     uri="postgresql+psycopg2://user:pw@db:5432/iceberg",
    ...     warehouse="s3://lake/warehouse",
    ... ).type
    'sql'
    >>> RestCatalogConfig(uri="https://polaris.example.com/api/catalog", warehouse="lake").type
    'rest'
    >>> CustomCatalogConfig(properties={"type": "glue", "glue.region": "eu-west-1"}).type
    'custom'
    >>> S3StorageConfig(endpoint="http://127.0.0.1:8333", region="us-east-1").to_properties()[
    ...     "s3.endpoint"
    ... ]
    'http://127.0.0.1:8333'
"""

from __future__ import annotations

import importlib.util
import os
import re
from enum import Enum
from pathlib import Path
from typing import Literal

from dagster import Config, EnvVar
from pydantic import Field

from floe_dagster_iceberg.errors import IcebergError
from floe_dagster_iceberg.redaction import RedactedRepr

__all__ = [
    "HOME_ENV_VAR",
    "CustomCatalogConfig",
    "EmbeddedCatalogConfig",
    "FileIOImplementation",
    "GlueCatalogConfig",
    "RestCatalogConfig",
    "S3StorageConfig",
    "S3TablesCatalogConfig",
    "SqlCatalogConfig",
    "default_home",
]

HOME_ENV_VAR = "FLOE_ICEBERG_HOME"
"""Environment variable that moves the embedded catalog and warehouse (default ``./.floe``)."""


def default_home() -> Path:
    """Directory of the embedded catalog and warehouse: ``$FLOE_ICEBERG_HOME`` or ``./.floe``."""
    return Path(os.environ.get(HOME_ENV_VAR) or Path.cwd() / ".floe").resolve()


class SqlCatalogConfig(RedactedRepr, Config):
    """A PyIceberg SQL catalog (SQLite or PostgreSQL) and its warehouse."""

    type: Literal["sql"] = "sql"
    uri: str = Field(
        description="SQLAlchemy URI, e.g. sqlite:////data/catalog.db or postgresql+psycopg2://..."
    )
    warehouse: str = Field(
        description="Root of new tables, e.g. file:///data/warehouse or s3://bucket/path"
    )

    def to_properties(self) -> dict[str, str]:
        return {"type": "sql", "uri": self.uri, "warehouse": self.warehouse}


class RestCatalogConfig(RedactedRepr, Config):
    """An Iceberg REST catalog (Polaris, Lakekeeper, Nessie, Gravitino, SeaweedFS, ...): give
    `credential` (`client_id:client_secret` for OAuth2) or `token`, best through
    `dagster.EnvVar` so the secret never lands in code or config files."""

    type: Literal["rest"] = "rest"
    uri: str = Field(description="Base URI of the REST catalog")
    warehouse: str | None = Field(default=None, description="Warehouse name or location")
    credential: str | None = Field(
        default=None, description="OAuth2 client credential 'id:secret'", repr=False
    )
    token: str | None = Field(default=None, description="Bearer token", repr=False)
    scope: str | None = Field(default=None, description="OAuth2 scope, e.g. PRINCIPAL_ROLE:ALL")
    oauth2_server_uri: str | None = Field(
        default=None, description="OAuth2 token endpoint if not the catalog's"
    )
    prefix: str | None = Field(default=None, description="Path prefix some catalogs need")

    def to_properties(self) -> dict[str, str]:
        properties = {
            "type": "rest",
            "uri": self.uri,
            "warehouse": self.warehouse,
            "credential": self.credential,
            "token": self.token,
            "scope": self.scope,
            "oauth2-server-uri": self.oauth2_server_uri,
            "prefix": self.prefix,
        }
        return {key: value for key, value in properties.items() if value is not None}


def _aws_client_properties(
    region: str | None,
    profile_name: str | None,
    access_key_id: str | None,
    secret_access_key: str | None,
    session_token: str | None,
) -> dict[str, str | None]:
    """PyIceberg's ``client.*`` properties: one AWS identity for the catalog and the FileIO."""
    return {
        "client.region": region,
        "client.profile-name": profile_name,
        "client.access-key-id": access_key_id,
        "client.secret-access-key": secret_access_key,
        "client.session-token": session_token,
    }


def _require_boto3(config: str, extra: str) -> None:
    """Fail early, naming the extra to install, when boto3 (the AWS SDK) is missing."""
    if importlib.util.find_spec("boto3") is None:
        raise IcebergError(
            f"{config} needs boto3, the AWS SDK for Python, which is not installed: "
            f"pip install 'floe-dagster-iceberg[{extra}]'"
        )


def _without_none(properties: dict[str, str | None]) -> dict[str, str]:
    return {key: value for key, value in properties.items() if value is not None}


class GlueCatalogConfig(RedactedRepr, Config):
    """The AWS Glue Data Catalog (needs `pip install 'floe-dagster-iceberg[glue]'`): region
    and credentials become PyIceberg's `client.*` properties, which both the Glue client and the
    S3 FileIO use, so one AWS identity reads the catalog and the data (an `S3StorageConfig`
    given to the resource still wins for S3); with no credentials, boto3's default chain
    applies (environment, `~/.aws`, instance or pod role). Pass secrets as `dagster.EnvVar`."""

    type: Literal["glue"] = "glue"
    region: str | None = Field(default=None, description="AWS region, e.g. eu-west-1")
    warehouse: str | None = Field(
        default=None,
        description="Root of new tables (s3://bucket/path) for databases without a location",
    )
    catalog_id: str | None = Field(
        default=None, description="AWS account id of the Glue catalog (default: the caller's)"
    )
    profile_name: str | None = Field(default=None, description="Profile in ~/.aws/config")
    access_key_id: str | None = Field(default=None, repr=False)
    secret_access_key: str | None = Field(default=None, repr=False)
    session_token: str | None = Field(default=None, repr=False)
    endpoint: str | None = Field(
        default=None, description="Glue endpoint override (VPC endpoint, local test server)"
    )

    def to_properties(self) -> dict[str, str]:
        _require_boto3("GlueCatalogConfig", "glue")
        return _without_none(
            {
                "type": "glue",
                "warehouse": self.warehouse,
                "glue.id": self.catalog_id,
                "glue.endpoint": self.endpoint,
                **_aws_client_properties(
                    self.region,
                    self.profile_name,
                    self.access_key_id,
                    self.secret_access_key,
                    self.session_token,
                ),
            }
        )


_S3_TABLES_ARN = re.compile(r"^arn:aws[a-z-]*:s3tables:(?P<region>[a-z0-9-]+):\d{12}:bucket/[^/]+$")


def _env_value(value: str) -> str:
    """The value of an ``EnvVar`` field outside a run (inside one Dagster has resolved it)."""
    return (value.get_value() or "") if isinstance(value, EnvVar) else value


class S3TablesCatalogConfig(RedactedRepr, Config):
    """An Amazon S3 Tables table bucket through its Iceberg REST endpoint, signed with SigV4
    (needs `pip install 'floe-dagster-iceberg[s3tables]'`): the region defaults to the one in
    the bucket ARN; credentials work as for `GlueCatalogConfig` (`client.*` properties, else
    boto3's default chain)."""

    type: Literal["s3tables"] = "s3tables"
    table_bucket_arn: str = Field(
        description="ARN of the table bucket, arn:aws:s3tables:<region>:<account>:bucket/<name>"
    )
    region: str | None = Field(default=None, description="AWS region (default: the ARN's)")
    profile_name: str | None = Field(default=None, description="Profile in ~/.aws/config")
    access_key_id: str | None = Field(default=None, repr=False)
    secret_access_key: str | None = Field(default=None, repr=False)
    session_token: str | None = Field(default=None, repr=False)
    endpoint: str | None = Field(
        default=None,
        description="Iceberg REST endpoint override (default https://s3tables.<region>.amazonaws.com/iceberg)",
    )

    def signing_region(self) -> str:
        """``region``, else the region of the table bucket ARN."""
        if self.region:
            return _env_value(self.region)
        arn = _env_value(self.table_bucket_arn)
        match = _S3_TABLES_ARN.match(arn)
        if match is None:
            raise IcebergError(
                f"S3TablesCatalogConfig: {arn!r} is not a table bucket ARN "
                "(arn:aws:s3tables:<region>:<account>:bucket/<name>); fix it or set 'region'."
            )
        return match.group("region")

    def to_properties(self) -> dict[str, str]:
        _require_boto3("S3TablesCatalogConfig", "s3tables")
        region = self.signing_region()
        return _without_none(
            {
                "type": "rest",
                "uri": self.endpoint or f"https://s3tables.{region}.amazonaws.com/iceberg",
                "warehouse": self.table_bucket_arn,
                "rest.sigv4-enabled": "true",
                "rest.signing-name": "s3tables",
                "rest.signing-region": region,
                **_aws_client_properties(
                    region,
                    self.profile_name,
                    self.access_key_id,
                    self.secret_access_key,
                    self.session_token,
                ),
            }
        )


class CustomCatalogConfig(RedactedRepr, Config):
    """Any other PyIceberg catalog (glue, hive, dynamodb, ...) given by its own properties."""

    type: Literal["custom"] = "custom"
    properties: dict[str, str] = Field(
        description="PyIceberg catalog properties, including 'type' (secrets hidden in repr)"
    )

    def to_properties(self) -> dict[str, str]:
        return dict(self.properties)


class FileIOImplementation(str, Enum):
    """Which library moves the bytes of metadata and data files.

    ``pyarrow`` (PyIceberg's default) is the fastest. ``fsspec`` (s3fs, gcsfs, adlfs) is the
    choice where PyArrow's S3 client leaves threads hanging at interpreter exit, as reported in
    Kubernetes pods.

    Example:
        >>> FileIOImplementation("fsspec").py_io_impl
        'pyiceberg.io.fsspec.FsspecFileIO'
    """

    PYARROW = "pyarrow"
    FSSPEC = "fsspec"

    @property
    def py_io_impl(self) -> str:
        return {
            FileIOImplementation.PYARROW: "pyiceberg.io.pyarrow.PyArrowFileIO",
            FileIOImplementation.FSSPEC: "pyiceberg.io.fsspec.FsspecFileIO",
        }[self]


class S3StorageConfig(RedactedRepr, Config):
    """S3-compatible object storage for the FileIO (AWS S3, SeaweedFS, MinIO, Ceph, R2, ...)."""

    endpoint: str | None = Field(default=None, description="Endpoint URL; omit for AWS S3")
    region: str | None = Field(default=None, description="Region, e.g. us-east-1")
    access_key_id: str | None = Field(default=None, repr=False)
    secret_access_key: str | None = Field(default=None, repr=False)
    session_token: str | None = Field(default=None, repr=False)
    path_style_access: bool | None = Field(default=None, description="Force path-style URLs")

    def to_properties(self) -> dict[str, str]:
        properties = {
            "s3.endpoint": self.endpoint,
            "s3.region": self.region,
            "s3.access-key-id": self.access_key_id,
            "s3.secret-access-key": self.secret_access_key,
            "s3.session-token": self.session_token,
            "s3.force-virtual-addressing": None
            if self.path_style_access is None
            else str(not self.path_style_access).lower(),
        }
        return {key: value for key, value in properties.items() if value is not None}


class EmbeddedCatalogConfig(RedactedRepr, Config):
    """The zero-config default: SQLite catalog and local warehouse under `$FLOE_ICEBERG_HOME`."""

    type: Literal["embedded"] = "embedded"
    home: str | None = Field(
        default=None,
        description="Directory for catalog.db and warehouse/ (default: $FLOE_ICEBERG_HOME or ./.floe)",
    )

    def home_path(self) -> Path:
        return Path(self.home).resolve() if self.home else default_home()

    def to_properties(self) -> dict[str, str]:
        home = self.home_path()
        return {
            "type": "sql",
            "uri": f"sqlite:///{home / 'catalog.db'}",
            "warehouse": (home / "warehouse").as_uri(),
        }
