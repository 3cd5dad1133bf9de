"""PyArrow: ``pyarrow.Table`` (the default input) and ``pyarrow.RecordBatchReader`` (streams).

Example:
    >>> import pyarrow as pa
    >>> ArrowTableHandler().handles_output(pa.table({"n": [1]}))
    True
"""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa

from floe_dagster_iceberg.type_handlers.base import LoadRequest, TypeHandler

__all__ = ["ArrowTableHandler", "RecordBatchReaderHandler"]


class ArrowTableHandler(TypeHandler):
    output_types = (pa.Table,)
    input_type = pa.Table


class RecordBatchReaderHandler(TypeHandler):
    """Streams: written batch by batch (unpartitioned), read without holding the table."""

    output_types = (pa.RecordBatchReader,)
    input_type = pa.RecordBatchReader

    def load(self, request: LoadRequest) -> pa.RecordBatchReader:
        scan = request.scan
        reader = request.manager.read_batches(request.table, scan)
        if request.partition_slice is not None:
            reader = request.partition_slice.keep_batches(reader)
        if request.columns and scan.columns != request.read.columns:
            reader = _select_batches(reader, request.columns)
        return reader


def _select_batches(reader: pa.RecordBatchReader, columns: list[str]) -> pa.RecordBatchReader:
    schema = pa.schema([reader.schema.field(name) for name in columns])

    def batches() -> Iterator[pa.RecordBatch]:
        for batch in reader:
            yield batch.select(columns)

    return pa.RecordBatchReader.from_batches(schema, batches())
