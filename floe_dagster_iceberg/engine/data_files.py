"""Rows to Parquet data files of a table, written once per write.

Rows are split by the table's partition spec in one pass, cut at the table's target file size,
and the files are written in parallel. Statistics come from the Parquet footer, so the files are
never read back.
"""

from __future__ import annotations

import os
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pyiceberg.io import FileIO
from pyiceberg.io.pyarrow import (
    compute_statistics_plan,
    data_file_statistics_from_parquet_metadata,
    parquet_path_to_id_mapping,
)
from pyiceberg.manifest import DataFile, DataFileContent, FileFormat
from pyiceberg.partitioning import PartitionFieldValue, PartitionKey, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.table.locations import load_location_provider
from pyiceberg.table.metadata import TableMetadata
from pyiceberg.typedef import Record
from pyiceberg.types import IcebergType, ListType, MapType, NestedField, StructType

from floe_dagster_iceberg.engine import properties as props
from floe_dagster_iceberg.engine._pyiceberg import parquet_writer_options

_ROW = "__floe_row"
_FIELD_ID = b"PARQUET:field_id"


@dataclass(frozen=True)
class _Chunk:
    partition: PartitionKey | None
    rows: pa.Table


def write_data_files(
    metadata: TableMetadata, io: FileIO, rows: pa.Table, write_id: uuid.UUID | None = None
) -> list[DataFile]:
    """Write ``rows`` (already conformed to the table's current schema) as data files.

    The files belong to the table's default partition spec; nothing is committed.

    Example:
        >>> import pyarrow as pa, tempfile
        >>> from pyiceberg.catalog.sql import SqlCatalog
        >>> tmp = tempfile.mkdtemp()
        >>> catalog = SqlCatalog("doc", uri=f"sqlite:///{tmp}/c.db", warehouse=f"file://{tmp}")
        >>> catalog.create_namespace("sales")
        >>> rows = pa.table({"id": [1, 2, 3]})
        >>> table = catalog.create_table("sales.orders", rows.schema)
        >>> [f.record_count for f in write_data_files(table.metadata, table.io, rows)]
        [3]
    """
    if rows.num_rows == 0:
        return []
    schema = metadata.schema()
    spec = metadata.spec()
    rows = _with_field_ids(rows, schema)
    chunks = [
        _Chunk(partition, piece)
        for partition, part_rows in _split_by_partition(rows, schema, spec)
        for piece in _cut(part_rows, props.target_file_size(metadata.properties))
    ]
    writer = _ParquetWriter(metadata, io, write_id or uuid.uuid4())
    workers = min(len(chunks), os.cpu_count() or 1)
    if workers <= 1:
        return [writer.write(index, chunk) for index, chunk in enumerate(chunks)]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(writer.write, range(len(chunks)), chunks))


def _with_field_ids(rows: pa.Table, schema: Schema) -> pa.Table:
    """The rows with each field (nested ones too) tagged with its Iceberg field id.

    Types are kept as they are (no cast): the rows are already conformed to the schema.
    """
    fields = [_field_with_id(rows.schema.field(f.name), f) for f in schema.fields]
    return pa.Table.from_arrays(
        [rows.column(f.name) for f in schema.fields], schema=pa.schema(fields)
    )


def _field_with_id(arrow_field: pa.Field, iceberg_field: NestedField) -> pa.Field:
    return pa.field(
        arrow_field.name,
        _type_with_ids(arrow_field.type, iceberg_field.field_type),
        nullable=arrow_field.nullable,
        metadata={_FIELD_ID: str(iceberg_field.field_id)},
    )


def _type_with_ids(arrow_type: pa.DataType, iceberg_type: IcebergType) -> pa.DataType:
    if isinstance(iceberg_type, StructType) and pa.types.is_struct(arrow_type):
        members = {
            arrow_type.field(i).name: arrow_type.field(i) for i in range(arrow_type.num_fields)
        }
        return pa.struct(
            [_field_with_id(members[f.name], f) for f in iceberg_type.fields if f.name in members]
        )
    if isinstance(iceberg_type, ListType) and (
        pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type)
    ):
        element = _field_with_id(arrow_type.value_field, iceberg_type.element_field)
        return pa.large_list(element) if pa.types.is_large_list(arrow_type) else pa.list_(element)
    if isinstance(iceberg_type, MapType) and pa.types.is_map(arrow_type):
        return pa.map_(
            _field_with_id(arrow_type.key_field, iceberg_type.key_field),
            _field_with_id(arrow_type.item_field, iceberg_type.value_field),
        )
    return arrow_type


def _split_by_partition(
    rows: pa.Table, schema: Schema, spec: PartitionSpec
) -> list[tuple[PartitionKey | None, pa.Table]]:
    """One ``(partition, rows)`` pair per distinct partition, in a single grouping pass."""
    if spec.is_unpartitioned():
        return [(None, rows)]
    names = [f"__floe_part_{position}" for position in range(len(spec.fields))]
    keys = {}
    for name, spec_field in zip(names, spec.fields, strict=True):
        source = schema.find_field(spec_field.source_id)
        column = _column(rows, schema.find_column_name(spec_field.source_id) or source.name)
        keys[name] = spec_field.transform.pyarrow_transform(source.field_type)(column)
    key_table = pa.table(keys)
    groups = (
        key_table.append_column(_ROW, pa.array(np.arange(rows.num_rows, dtype=np.int64)))
        .group_by(names, use_threads=False)
        .aggregate([(_ROW, "list")])
    )
    positions = groups.column(f"{_ROW}_list").to_pylist()
    values = groups.select(names).to_pylist()
    pieces = []
    for value, rows_of_group in zip(values, positions, strict=True):
        key = PartitionKey(
            field_values=[
                PartitionFieldValue(field=spec_field, value=value[name])
                for spec_field, name in zip(spec.fields, names, strict=True)
            ],
            partition_spec=spec,
            schema=schema,
        )
        piece = rows if len(positions) == 1 else rows.take(pa.array(rows_of_group))
        pieces.append((key, piece))
    return pieces


def _column(rows: pa.Table, path: str) -> pa.Array:
    """A top-level or nested (``a.b``) column as one array."""
    if path in rows.column_names:
        return rows.column(path).combine_chunks()
    head, *rest = path.split(".")
    array: Any = rows.column(head).combine_chunks()
    for part in rest:
        array = array.field(part)
    return array


def _cut(rows: pa.Table, target_bytes: int) -> list[pa.Table]:
    """Slices of about ``target_bytes`` of in-memory Arrow data each."""
    if rows.num_rows == 0:
        return []
    per_row = max(1, rows.nbytes // rows.num_rows)
    rows_per_file = max(1, target_bytes // per_row)
    return [rows.slice(start, rows_per_file) for start in range(0, rows.num_rows, rows_per_file)]


class _ParquetWriter:
    """Writes one chunk of rows to one Parquet data file of the table."""

    def __init__(self, metadata: TableMetadata, io: FileIO, write_id: uuid.UUID) -> None:
        self._metadata = metadata
        self._io = io
        self._write_id = write_id
        self._schema = metadata.schema()
        self._options = parquet_writer_options(metadata.properties)
        self._row_group_size = props.int_property(
            metadata.properties, props.ROW_GROUP_LIMIT, props.ROW_GROUP_LIMIT_DEFAULT
        )
        self._locations = load_location_provider(metadata.location, metadata.properties)
        self._statistics_plan = compute_statistics_plan(self._schema, metadata.properties)
        self._column_ids = parquet_path_to_id_mapping(self._schema)

    def write(self, index: int, chunk: _Chunk) -> DataFile:
        path = self._locations.new_data_location(
            data_file_name=f"00000-{index}-{self._write_id}.parquet",
            partition_key=chunk.partition,
        )
        stream = self._io.new_output(path).create(overwrite=True)
        with stream:
            writer = pq.ParquetWriter(
                stream, schema=chunk.rows.schema, store_decimal_as_integer=True, **self._options
            )
            writer.write_table(chunk.rows, row_group_size=self._row_group_size)
            writer.close()
            size = stream.tell()
        statistics = data_file_statistics_from_parquet_metadata(
            parquet_metadata=writer.writer.metadata,
            stats_columns=self._statistics_plan,
            parquet_column_mapping=self._column_ids,
        )
        data_file = DataFile.from_args(
            content=DataFileContent.DATA,
            file_path=path,
            file_format=FileFormat.PARQUET,
            partition=chunk.partition.partition if chunk.partition else Record(),
            file_size_in_bytes=size,
            sort_order_id=None,
            equality_ids=None,
            key_metadata=None,
            **statistics.to_serialized_dict(),
        )
        data_file.spec_id = self._metadata.default_spec_id
        return data_file


def write_batches(
    metadata: TableMetadata, io: FileIO, batches: pa.RecordBatchReader
) -> list[DataFile]:
    """Stream record batches of an unpartitioned table into files cut at the target size."""
    target = props.target_file_size(metadata.properties)
    schema = metadata.schema()
    writer = _ParquetWriter(metadata, io, uuid.uuid4())
    files: list[DataFile] = []
    pending: list[pa.RecordBatch] = []
    pending_bytes = 0
    for batch in batches:
        if batch.num_rows == 0:
            continue
        pending.append(batch)
        pending_bytes += batch.nbytes
        if pending_bytes >= target:
            rows = _with_field_ids(pa.Table.from_batches(pending), schema)
            files.append(writer.write(len(files), _Chunk(None, rows)))
            pending, pending_bytes = [], 0
    if pending:
        rows = _with_field_ids(pa.Table.from_batches(pending), schema)
        files.append(writer.write(len(files), _Chunk(None, rows)))
    return files
