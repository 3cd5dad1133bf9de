"""OpenLineage datasets of Iceberg tables: names, symlinks and facets.

Datasets are named the way the OpenLineage Spark integration names Iceberg tables, so lineage
from Dagster joins the lineage of Spark, Trino or dbt jobs on the same table:

- namespace and name come from the physical table location: ``s3://bucket`` +
  ``warehouse/db/tbl``, ``file`` + ``/data/warehouse/db/tbl``, ``gs://bucket`` + ``path``, or
  ``scheme://authority`` + ``/path`` for other file systems (``s3a``/``s3n`` become ``s3``);
- a ``symlinks`` identifier of type ``TABLE`` carries the catalog identity (REST: the catalog
  URI + ``ns.table``; Hive: ``hive://host:port`` + ``ns.table``; Glue:
  ``arn:aws:glue:region:account`` + ``table/ns/table``; SQL: the database URI without driver or
  credentials + ``ns.table``);
- ``version`` is the snapshot id written or read; ``catalog``, ``storage`` and ``schema``
  facets describe the table; outputs carry ``lifecycleStateChange`` (``CREATE`` on the first
  write, ``ALTER`` when the write evolved the schema, ``OVERWRITE`` for an overwrite) and
  ``outputStatistics`` (rows, bytes, files added, from the snapshot summary).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from floe_dagster_iceberg.redaction import redact_uri
from floe_dagster_iceberg.version import __version__

if TYPE_CHECKING:
    from openlineage.client.event_v2 import InputDataset, OutputDataset
    from pyiceberg.schema import Schema
    from pyiceberg.table import Table
    from pyiceberg.types import NestedField

    from floe_dagster_iceberg.engine.config import WriteMode, WriteResult

__all__ = [
    "LINEAGE_PRODUCER",
    "CatalogIdentity",
    "dataset_identity",
    "input_dataset",
    "output_dataset",
    "write_lifecycle",
]

LINEAGE_PRODUCER = f"urn:floe-dagster-iceberg:{__version__}"
"""The ``producer`` of every event and facet this package emits."""


def dataset_identity(location: str) -> tuple[str, str]:
    """OpenLineage ``(namespace, name)`` of a table location, as the Spark integration names it.

    Example:
        >>> dataset_identity("s3a://lake/warehouse/sales/orders/")
        ('s3://lake', 'warehouse/sales/orders')
        >>> dataset_identity("file:///data/warehouse/sales.db/orders")
        ('file', '/data/warehouse/sales.db/orders')
        >>> dataset_identity("hdfs://namenode:8020/warehouse/orders")
        ('hdfs://namenode:8020', '/warehouse/orders')
    """
    parts = urlsplit(location)
    scheme = parts.scheme.lower()
    path = unquote(parts.path).rstrip("/")
    if scheme in ("", "file"):
        if parts.netloc and parts.netloc != "localhost":
            return f"file://{parts.netloc}", path or "/"
        return "file", path or "/"
    canonical = {"s3a": "s3", "s3n": "s3", "gcs": "gs", "abfs": "abfss", "wasb": "wasbs"}
    if scheme in ("s3", "s3a", "s3n", "gs", "gcs", "abfs", "abfss", "wasb", "wasbs"):
        return f"{canonical.get(scheme, scheme)}://{parts.netloc}", path.lstrip("/") or "/"
    return f"{scheme}://{parts.netloc}", path or "/"


@dataclass(frozen=True)
class CatalogIdentity:
    """What lineage says about the catalog: its name, type, address and warehouse.

    ``uri`` loses its user info and credential-like query parameters; secrets in
    ``warehouse`` are masked.

    Example:
        >>> rest = CatalogIdentity(name="lake", type="rest", uri="https://catalog.example.com/api")
        >>> rest.symlink(("sales", "orders"))
        ('https://catalog.example.com/api', 'sales.orders')
    """

    name: str
    type: str
    uri: str | None = None
    warehouse: str | None = None
    glue_region: str | None = None
    glue_catalog_id: str | None = None

    def __post_init__(self) -> None:
        if self.uri:  # an identity: without user info and credential parameters
            object.__setattr__(self, "uri", redact_uri(self.uri, drop=True))
        if self.warehouse:  # a location: a container in its user info is kept
            object.__setattr__(self, "warehouse", redact_uri(self.warehouse))

    @classmethod
    def from_properties(
        cls, name: str, catalog_type: str, uri: str | None, properties: Mapping[str, str]
    ) -> CatalogIdentity:
        """Build it from PyIceberg catalog properties; credentials are dropped from ``uri``.

        Example:
            >>> CatalogIdentity.from_properties(
            ...     "lake", "sql", "postgresql://user:secret@db:5432/iceberg", {"warehouse": "s3://w"}
            ... ).symlink(("sales", "orders"))
            ('postgresql://db:5432/iceberg', 'sales.orders')
        """
        return cls(
            name=name,
            type=catalog_type,
            uri=uri,
            warehouse=properties.get("warehouse"),
            glue_region=properties.get("glue.region") or properties.get("client.region"),
            glue_catalog_id=properties.get("glue.id"),
        )

    def symlink(self, identifier: Sequence[str]) -> tuple[str, str]:
        """``(namespace, name)`` of the table's catalog identity (the ``TABLE`` symlink)."""
        *namespace, table = identifier
        dotted = ".".join(identifier)
        kind = self.type.lower()
        if kind == "glue" and self.glue_region and self.glue_catalog_id:
            return (
                f"arn:aws:glue:{self.glue_region}:{self.glue_catalog_id}",
                f"table/{'/'.join(namespace)}/{table}",
            )
        if kind == "hive" and self.uri:
            return f"hive://{urlsplit(self.uri).netloc}", dotted
        if kind == "sql" and self.uri:
            scheme, sep, rest = self.uri.partition("://")
            return (f"{scheme.split('+', 1)[0]}://{rest}" if sep else self.uri), dotted
        if self.uri:
            return self.uri, dotted
        return f"iceberg://{self.name}", dotted


def _schema_fields(fields: Sequence[NestedField]) -> list[Any]:
    from openlineage.client.facet_v2 import schema_dataset
    from pyiceberg.types import StructType

    from floe_dagster_iceberg.engine.types import type_to_string

    result = []
    for position, nested in enumerate(fields, start=1):
        is_struct = isinstance(nested.field_type, StructType)
        result.append(
            schema_dataset.SchemaDatasetFacetFields(
                name=nested.name,
                type="struct" if is_struct else type_to_string(nested.field_type),
                description=nested.doc,
                ordinal_position=position,
                fields=_schema_fields(nested.field_type.fields) if is_struct else [],
            )
        )
    return result


def _dataset_facets(
    table: Table, catalog: CatalogIdentity, snapshot_id: int | None, schema: Schema | None = None
) -> tuple[str, str, dict[str, Any]]:
    from openlineage.client.facet_v2 import (
        catalog_dataset,
        dataset_version_dataset,
        schema_dataset,
        storage_dataset,
        symlinks_dataset,
    )

    identifier = tuple(table.name())
    namespace, name = dataset_identity(table.location())
    link_namespace, link_name = catalog.symlink(identifier)
    facets: dict[str, Any] = {
        "symlinks": symlinks_dataset.SymlinksDatasetFacet(
            identifiers=[
                symlinks_dataset.Identifier(namespace=link_namespace, name=link_name, type="TABLE")
            ],
            producer=LINEAGE_PRODUCER,
        ),
        "catalog": catalog_dataset.CatalogDatasetFacet(
            framework="iceberg",
            type=catalog.type,
            name=catalog.name,
            metadataUri=catalog.uri,
            warehouseUri=catalog.warehouse,
            source="dagster",
            producer=LINEAGE_PRODUCER,
        ),
        "storage": storage_dataset.StorageDatasetFacet(
            storageLayer="iceberg",
            fileFormat=table.properties.get("write.format.default", "parquet"),
            producer=LINEAGE_PRODUCER,
        ),
        "schema": schema_dataset.SchemaDatasetFacet(
            fields=_schema_fields((schema or table.schema()).fields), producer=LINEAGE_PRODUCER
        ),
    }
    if snapshot_id is not None:
        facets["version"] = dataset_version_dataset.DatasetVersionDatasetFacet(
            datasetVersion=str(snapshot_id), producer=LINEAGE_PRODUCER
        )
    return namespace, name, facets


def _current_snapshot_id(table: Table) -> int | None:
    snapshot = table.current_snapshot()
    return snapshot.snapshot_id if snapshot else None


def input_dataset(
    table: Table,
    catalog: CatalogIdentity,
    snapshot_id: int | None = None,
    rows: int | None = None,
) -> InputDataset:
    """The table as an input: identity, ``version`` (the snapshot read) and table facets.

    Example:
        >>> import pyarrow as pa, tempfile
        >>> from pyiceberg.catalog.sql import SqlCatalog
        >>> tmp = tempfile.mkdtemp()
        >>> catalog = SqlCatalog("floe", uri=f"sqlite:///{tmp}/c.db", warehouse=f"file://{tmp}")
        >>> catalog.create_namespace("sales")
        >>> table = catalog.create_table("sales.orders", pa.schema([("id", pa.int64())]))
        >>> table.append(pa.table({"id": [1, 2]}))
        >>> read = input_dataset(table, CatalogIdentity("floe", "sql"), rows=2)
        >>> read.namespace, read.name == f"{tmp}/sales/orders"
        ('file', True)
        >>> read.facets["version"].datasetVersion == str(table.current_snapshot().snapshot_id)
        True
        >>> read.inputFacets["inputStatistics"].rowCount
        2
    """
    from openlineage.client.event_v2 import InputDataset
    from openlineage.client.facet_v2 import input_statistics_input_dataset

    if snapshot_id is None:
        snapshot_id = _current_snapshot_id(table)
    schema = None
    snapshot = table.snapshot_by_id(snapshot_id) if snapshot_id is not None else None
    if snapshot is not None and snapshot.schema_id is not None:
        schema = table.schemas().get(snapshot.schema_id)
    namespace, name, facets = _dataset_facets(table, catalog, snapshot_id, schema)
    input_facets = {}
    if rows is not None:
        input_facets["inputStatistics"] = (
            input_statistics_input_dataset.InputStatisticsInputDatasetFacet(
                rowCount=rows, producer=LINEAGE_PRODUCER
            )
        )
    return InputDataset(namespace=namespace, name=name, facets=facets, inputFacets=input_facets)


def output_dataset(
    table: Table,
    catalog: CatalogIdentity,
    snapshot_id: int | None = None,
    lifecycle: str | None = None,
    rows: int | None = None,
    size: int | None = None,
    files: int | None = None,
) -> OutputDataset:
    """The table as an output: identity, ``version`` (the snapshot written), lifecycle, statistics.

    Example:
        >>> import pyarrow as pa, tempfile
        >>> from pyiceberg.catalog.sql import SqlCatalog
        >>> tmp = tempfile.mkdtemp()
        >>> catalog = SqlCatalog("floe", uri=f"sqlite:///{tmp}/c.db", warehouse=f"file://{tmp}")
        >>> catalog.create_namespace("sales")
        >>> table = catalog.create_table("sales.orders", pa.schema([("id", pa.int64())]))
        >>> written = output_dataset(table, CatalogIdentity("floe", "sql"), lifecycle="CREATE")
        >>> written.facets["lifecycleStateChange"].lifecycleStateChange.value
        'CREATE'
        >>> [field.name for field in written.facets["schema"].fields]
        ['id']
    """
    from openlineage.client.event_v2 import OutputDataset
    from openlineage.client.facet_v2 import (
        lifecycle_state_change_dataset,
        output_statistics_output_dataset,
    )

    if snapshot_id is None:
        snapshot_id = _current_snapshot_id(table)
    namespace, name, facets = _dataset_facets(table, catalog, snapshot_id)
    if lifecycle is not None:
        facets["lifecycleStateChange"] = (
            lifecycle_state_change_dataset.LifecycleStateChangeDatasetFacet(
                lifecycleStateChange=lifecycle_state_change_dataset.LifecycleStateChange(lifecycle),
                producer=LINEAGE_PRODUCER,
            )
        )
    output_facets = {}
    if rows is not None or size is not None or files is not None:
        output_facets["outputStatistics"] = (
            output_statistics_output_dataset.OutputStatisticsOutputDatasetFacet(
                rowCount=rows, size=size, fileCount=files, producer=LINEAGE_PRODUCER
            )
        )
    return OutputDataset(namespace=namespace, name=name, facets=facets, outputFacets=output_facets)


def write_lifecycle(result: WriteResult, mode: WriteMode | str) -> str | None:
    """``CREATE`` for the first write, ``ALTER`` when the schema evolved, ``OVERWRITE`` for an
    overwrite, nothing for appends and upserts.

    Example:
        >>> from floe_dagster_iceberg.engine.config import WriteResult
        >>> write_lifecycle(WriteResult(table="a.b", snapshot_id=1, operation="append",
        ...                             created_table=True), "append")
        'CREATE'
    """
    if result.created_table:
        return "CREATE"
    if result.schema_changes:
        return "ALTER"
    if str(getattr(mode, "value", mode)) == "overwrite" and result.committed:
        return "OVERWRITE"
    return None
