"""Dagster metadata of a materialization, built from the engine's typed results.

Keys are Dagster's documented table keys (``TableMetadataSet``: ``dagster/row_count`` = rows of
the whole table, ``dagster/partition_row_count`` = rows of the run's partition,
``dagster/column_schema``, ``dagster/table_name``, ``dagster/storage_kind``), plus
``dagster/uri``, ``dagster/last_updated_timestamp`` (what freshness checks read) and
``iceberg/*``. Dagster 1.13 keeps ``TableMetadataSet`` in a private module, so the keys are
written directly.

Column types use the names the Dagster UI draws a type icon for (``long`` is ``bigint``, a
``list`` is an ``array``), so the column table shows numbers, strings, dates and arrays at a
glance.

Example:
    >>> from pyiceberg.schema import Schema
    >>> from pyiceberg.types import LongType, NestedField
    >>> column_schema(Schema(NestedField(1, "id", LongType()))).columns[0].type
    'bigint'
    >>> readable_size(123_456_789)
    '117.7 MiB'
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dagster import MetadataValue, TableColumn, TableColumnConstraints, TableSchema
from pyiceberg.schema import Schema
from pyiceberg.table import Table
from pyiceberg.types import (
    IcebergType,
    LongType,
)

from floe_dagster_iceberg.engine.config import WriteMode, WriteResult
from floe_dagster_iceberg.engine.manager import IcebergTableManager
from floe_dagster_iceberg.engine.types import type_to_string
from floe_dagster_iceberg.slices import PartitionSlice, count_rows

__all__ = [
    "STORAGE_KIND",
    "column_schema",
    "dagster_type_name",
    "last_updated",
    "output_metadata",
    "readable_size",
    "rows_after_write",
    "with_readable_sizes",
]

STORAGE_KIND = "iceberg"
"""The value of ``dagster/storage_kind`` and of the asset kind the UI shows with its icon."""

_SIZE_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def output_metadata(
    *,
    catalog_name: str,
    table: Table,
    result: WriteResult,
    table_rows: int,
    slice_rows: int | None,
    partition_slice: PartitionSlice | None,
    mode: WriteMode,
) -> dict[str, Any]:
    """The metadata of one write: rows, schema, table identity, time and what the commit did.

    ``table_rows`` are the rows of the whole table after the write, ``slice_rows`` the rows of
    the run's partition slice (``None`` when the asset is not partitioned). Byte counts come
    with a readable size (``iceberg/bytes_added`` and ``iceberg/size_added``).
    """
    metadata: dict[str, Any] = {
        "dagster/row_count": MetadataValue.int(table_rows),
        "dagster/column_schema": column_schema(table.schema()),
        "dagster/table_name": MetadataValue.text(f"{catalog_name}.{'.'.join(table.name())}"),
        "dagster/storage_kind": MetadataValue.text(STORAGE_KIND),
        "dagster/uri": MetadataValue.path(table.location()),
        **last_updated(table),
        "iceberg/snapshot_id": MetadataValue.int(result.snapshot_id or 0),
        "iceberg/operation": MetadataValue.text(result.operation or "none"),
        "iceberg/rows_added": MetadataValue.int(result.rows_added),
        "iceberg/rows_deleted": MetadataValue.int(result.rows_deleted),
        "iceberg/files_added": MetadataValue.int(result.files_added),
        "iceberg/files_deleted": MetadataValue.int(result.files_deleted),
        "iceberg/bytes_added": MetadataValue.int(result.bytes_added),
        "iceberg/size_added": MetadataValue.text(readable_size(result.bytes_added)),
        "iceberg/bytes_deleted": MetadataValue.int(result.bytes_deleted),
        "iceberg/size_deleted": MetadataValue.text(readable_size(result.bytes_deleted)),
        "iceberg/commit_attempts": MetadataValue.int(result.commit_attempts),
    }
    if partition_slice is not None and slice_rows is not None:
        metadata.update(_slice_metadata(partition_slice, slice_rows))
    if result.schema_changes:
        metadata["iceberg/schema_changes"] = MetadataValue.text("; ".join(result.schema_changes))
    if mode is WriteMode.UPSERT:
        metadata.update(
            {
                "iceberg/rows_updated": MetadataValue.int(result.rows_updated),
                "iceberg/rows_inserted": MetadataValue.int(result.rows_inserted),
                "iceberg/rows_unchanged": MetadataValue.int(result.rows_unchanged),
                "iceberg/rows_removed": MetadataValue.int(result.rows_removed),
                "iceberg/files_rewritten": MetadataValue.int(result.files_rewritten),
            }
        )
    return metadata


def _slice_metadata(partition_slice: PartitionSlice, slice_rows: int) -> dict[str, Any]:
    """Rows of the run's partition: ``dagster/partition_row_count`` for a one-key run.

    A ranged run (many keys, one write) records one materialization per key, each with this
    same metadata, so its rows are ``iceberg/slice_row_count`` (every key together) and no key
    claims them as its own partition count.
    """
    metadata: dict[str, Any] = {
        "iceberg/partition_filter": MetadataValue.text(partition_slice.description),
        "iceberg/slice_row_count": MetadataValue.int(slice_rows),
    }
    if partition_slice.key_count == 1:
        metadata["dagster/partition_row_count"] = MetadataValue.int(slice_rows)
    return metadata


def last_updated(table: Table) -> dict[str, Any]:
    """``dagster/last_updated_timestamp``: the commit time of the table's current snapshot.

    Empty for a table without snapshots (nothing was ever committed to it).
    """
    snapshot = table.current_snapshot()
    if snapshot is None:
        return {}
    return {"dagster/last_updated_timestamp": MetadataValue.timestamp(snapshot.timestamp_ms / 1000)}


def rows_after_write(
    manager: IcebergTableManager,
    table: Table,
    partition_slice: PartitionSlice | None,
    mode: WriteMode,
    written: int | None,
) -> int | None:
    """Rows of the run's slice after the write (``None`` when the asset is not partitioned).

    Never a scan of the rows: an overwrite left exactly the rows it wrote in its slice; appends
    and upserts into a slice are counted from file metadata
    (:func:`~floe_dagster_iceberg.slices.count_rows`).
    """
    if partition_slice is None:
        return None
    if mode is WriteMode.OVERWRITE and written is not None:
        return written
    return count_rows(manager, table, partition_slice)


def column_schema(schema: Schema) -> TableSchema:
    """The table's columns as Dagster's column schema, with type names the UI has icons for.

    Required columns carry the ``non-nullable`` constraint; the column's Iceberg doc is its
    description.
    """
    return TableSchema(
        columns=[
            TableColumn(
                name=f.name,
                type=dagster_type_name(f.field_type),
                description=f.doc,
                constraints=TableColumnConstraints(nullable=not f.required),
            )
            for f in schema.fields
        ]
    )


def dagster_type_name(iceberg_type: IcebergType) -> str:
    """An Iceberg type in the SQL spelling Spark, Trino and the Dagster UI share.

    The UI picks a column's icon from its type name: ``bool``, ``char``/``str``/``text``/``uuid``,
    ``arr``, ``int``/``float``/``double``/``decimal``, ``time``/``date``. Iceberg's ``long``
    matches none of them and becomes ``bigint``, a ``list`` becomes an ``array``. There is no
    icon for ``binary`` and ``fixed``; a ``struct`` (and an array or map of strings) gets the
    string icon, as the UI reads every name containing ``str``.

    Example:
        >>> from pyiceberg.types import ListType, LongType, StringType
        >>> dagster_type_name(ListType(1, LongType()))
        'array<bigint>'
        >>> dagster_type_name(StringType())
        'string'
    """
    return type_to_string(iceberg_type, list_word="array", primitive_names={LongType: "bigint"})


def readable_size(size_bytes: float) -> str:
    """A byte count in binary units, as people read sizes.

    Example:
        >>> readable_size(512), readable_size(128 << 20), readable_size(3 << 40)
        ('512 B', '128.0 MiB', '3.0 TiB')
    """
    size = float(size_bytes)
    for unit in _SIZE_UNITS:
        if abs(size) < 1024 or unit == _SIZE_UNITS[-1]:
            return f"{int(size)} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def with_readable_sizes(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """``metrics`` with a readable text beside every byte count: ``*_bytes`` gets ``*_size``,
    ``bytes_*`` gets ``size_*``.

    The integers stay (plots and checks read them); the text is what people read.

    Example:
        >>> with_readable_sizes({"iceberg/total_bytes": 2048, "expiry/bytes_freed": 0})
        {'iceberg/total_bytes': 2048, 'iceberg/total_size': '2.0 KiB', 'expiry/bytes_freed': 0, 'expiry/size_freed': '0 B'}
    """
    readable: dict[str, Any] = {}
    for key, value in metrics.items():
        readable[key] = value
        size_key = _size_key(key)
        if size_key and isinstance(value, int | float) and not isinstance(value, bool):
            readable[size_key] = readable_size(value)
    return readable


def _size_key(key: str) -> str | None:
    """The key of the readable text of byte count ``key``; ``None`` if it is no byte count."""
    prefix, _, name = key.rpartition("/")
    if name.endswith("_bytes"):
        name = name.removesuffix("_bytes") + "_size"
    elif name.startswith("bytes_"):
        name = "size_" + name.removeprefix("bytes_")
    else:
        return None
    return f"{prefix}/{name}" if prefix else name
