"""Dagster metadata of a snapshot another engine committed, read back from the table.

A write that Spark, Daft or plain PyIceberg committed gets the metadata an ``IcebergIOManager``
write gets (:func:`~floe_dagster_iceberg.metadata.output_metadata`), as of that snapshot: rows
of the table in it, its schema, its commit time, what it added and deleted. Two keys differ:
``iceberg/commit_attempts`` is left out (only the committing engine knew it) and
``iceberg/engine`` names the engine when the snapshot's summary says which.

Example:
    >>> import pyarrow as pa, tempfile
    >>> from pyiceberg.catalog.sql import SqlCatalog
    >>> from floe_dagster_iceberg.engine.history import write_result
    >>> tmp = tempfile.mkdtemp()
    >>> catalog = SqlCatalog("lake", uri=f"sqlite:///{tmp}/c.db", warehouse=f"file://{tmp}")
    >>> catalog.create_namespace("sales")
    >>> table = catalog.create_table("sales.orders", pa.schema([("id", pa.int64())]))
    >>> table.append(pa.table({"id": [1, 2]}))
    >>> result = write_result(table, table.current_snapshot().snapshot_id)
    >>> metadata = snapshot_metadata(catalog_name="lake", table=table, result=result)
    >>> metadata["dagster/row_count"].value, metadata["dagster/table_name"].value
    (2, 'lake.sales.orders')
"""

from __future__ import annotations

from typing import Any

from dagster import MetadataValue
from pyiceberg.table import Table
from pyiceberg.table.snapshots import Snapshot

from floe_dagster_iceberg.engine.config import WriteMode, WriteResult
from floe_dagster_iceberg.engine.history import committing_engine, snapshot_of
from floe_dagster_iceberg.metadata import column_schema, output_metadata
from floe_dagster_iceberg.slices import PartitionSlice

__all__ = ["DATA_OPERATIONS", "snapshot_metadata", "write_mode_of"]

DATA_OPERATIONS = frozenset({"append", "overwrite", "delete"})
"""Operations that change the table's data; a ``replace`` (compaction) rewrites it unchanged."""


def write_mode_of(operation: str | None) -> WriteMode:
    """The write mode a snapshot's operation stands for (lineage names an overwrite as such).

    Example:
        >>> write_mode_of("overwrite").value, write_mode_of("append").value
        ('overwrite', 'append')
    """
    return WriteMode.OVERWRITE if operation in ("overwrite", "delete") else WriteMode.APPEND


def snapshot_metadata(
    *,
    catalog_name: str,
    table: Table,
    result: WriteResult,
    partition_slice: PartitionSlice | None = None,
    slice_rows: int | None = None,
) -> dict[str, Any]:
    """The IO manager's metadata of the write ``result`` (snapshot ``result.snapshot_id``).

    ``dagster/row_count``, ``dagster/column_schema`` and ``dagster/last_updated_timestamp`` are
    those of the snapshot, not of the table now (another commit may have followed it); a
    ``replace`` (compaction) sets no ``dagster/last_updated_timestamp``, as it changes no data.
    """
    assert result.snapshot_id is not None
    snapshot = snapshot_of(table, result.snapshot_id)
    metadata = output_metadata(
        catalog_name=catalog_name,
        table=table,
        result=result,
        table_rows=_total_rows(table, snapshot),
        slice_rows=slice_rows,
        partition_slice=partition_slice,
        mode=write_mode_of(result.operation),
    )
    del metadata["iceberg/commit_attempts"]
    schema = table.schemas().get(snapshot.schema_id) if snapshot.schema_id is not None else None
    metadata["dagster/column_schema"] = column_schema(schema or table.schema())
    metadata.pop("dagster/last_updated_timestamp", None)
    if result.operation in DATA_OPERATIONS:
        metadata["dagster/last_updated_timestamp"] = MetadataValue.timestamp(
            snapshot.timestamp_ms / 1000
        )
    engine = committing_engine(snapshot.summary.additional_properties if snapshot.summary else {})
    if engine:
        metadata["iceberg/engine"] = MetadataValue.text(engine)
    return metadata


def _total_rows(table: Table, snapshot: Snapshot) -> int:
    """Rows of the table in ``snapshot``: its summary's ``total-records``, else counted."""
    total = snapshot.summary.get("total-records") if snapshot.summary else None
    if total is not None:
        return int(total)
    return table.scan(snapshot_id=snapshot.snapshot_id).count()
