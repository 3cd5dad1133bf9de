"""Dagster metadata of a materialization, built from the engine's typed results.

Keys are Dagster's documented ones (``dagster/row_count``, ``dagster/partition_row_count``,
``dagster/column_schema``, ``dagster/table_name``, ``dagster/uri``) plus ``iceberg/*``.
Dagster 1.13 keeps ``TableMetadataSet`` in a private module, so the keys are written directly.

Example:
    >>> from pyiceberg.schema import Schema
    >>> from pyiceberg.types import LongType, NestedField
    >>> column_schema(Schema(NestedField(1, "id", LongType()))).columns[0].type
    'long'
"""

from __future__ import annotations

from typing import Any

from dagster import MetadataValue, TableColumn, TableSchema
from pyiceberg.schema import Schema
from pyiceberg.table import Table

from floe_dagster_iceberg.engine.config import WriteMode, WriteResult
from floe_dagster_iceberg.engine.manager import IcebergTableManager
from floe_dagster_iceberg.engine.types import type_to_string
from floe_dagster_iceberg.slices import PartitionSlice, count_rows

__all__ = ["column_schema", "output_metadata", "rows_after_write"]


def output_metadata(
    *,
    catalog_name: str,
    table: Table,
    result: WriteResult,
    rows: int,
    partition_slice: PartitionSlice | None,
    mode: WriteMode,
) -> dict[str, Any]:
    """The metadata of one write: rows, schema, table identity and what the commit did."""
    metadata: dict[str, Any] = {
        "dagster/row_count": MetadataValue.int(rows),
        "dagster/column_schema": column_schema(table.schema()),
        "dagster/table_name": MetadataValue.text(f"{catalog_name}.{'.'.join(table.name())}"),
        "dagster/uri": MetadataValue.path(table.location()),
        "iceberg/snapshot_id": MetadataValue.int(result.snapshot_id or 0),
        "iceberg/operation": MetadataValue.text(result.operation or "none"),
        "iceberg/rows_added": MetadataValue.int(result.rows_added),
        "iceberg/rows_deleted": MetadataValue.int(result.rows_deleted),
        "iceberg/files_added": MetadataValue.int(result.files_added),
        "iceberg/files_deleted": MetadataValue.int(result.files_deleted),
        "iceberg/bytes_added": MetadataValue.int(result.bytes_added),
        "iceberg/bytes_deleted": MetadataValue.int(result.bytes_deleted),
        "iceberg/commit_attempts": MetadataValue.int(result.commit_attempts),
    }
    if partition_slice is not None:
        if partition_slice.key_count == 1:  # a ranged run's metadata covers every key in it
            metadata["dagster/partition_row_count"] = MetadataValue.int(rows)
        metadata["iceberg/partition_filter"] = MetadataValue.text(partition_slice.description)
    if result.schema_changes:
        metadata["iceberg/schema_changes"] = MetadataValue.text("; ".join(result.schema_changes))
    if mode is WriteMode.UPSERT:
        metadata.update(
            {
                "iceberg/rows_updated": MetadataValue.int(result.rows_updated),
                "iceberg/rows_inserted": MetadataValue.int(result.rows_inserted),
                "iceberg/rows_unchanged": MetadataValue.int(result.rows_unchanged),
                "iceberg/files_rewritten": MetadataValue.int(result.files_rewritten),
            }
        )
    return metadata


def rows_after_write(
    manager: IcebergTableManager,
    table: Table,
    partition_slice: PartitionSlice | None,
    mode: WriteMode,
    written: int | None,
) -> int:
    """Rows of the run's slice (of the whole table when unpartitioned) after the write.

    Never a scan of the rows: an overwrite left exactly the rows it wrote in its slice; the
    whole table's count is in the snapshot summary; appends and upserts into a slice are
    counted from file metadata (:func:`~floe_dagster_iceberg.slices.count_rows`).
    """
    if partition_slice is None:
        return manager.count(table, None)
    if mode is WriteMode.OVERWRITE and written is not None:
        return written
    return count_rows(manager, table, partition_slice)


def column_schema(schema: Schema) -> TableSchema:
    """The table's columns as Dagster's column schema, with Iceberg type names."""
    return TableSchema(
        columns=[
            TableColumn(name=f.name, type=type_to_string(f.field_type), description=f.doc)
            for f in schema.fields
        ]
    )
