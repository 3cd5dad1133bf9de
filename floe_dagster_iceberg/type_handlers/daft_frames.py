"""Daft: ``daft.DataFrame`` out and in (``[daft]`` extra).

An output frame is lazy: its batches are streamed into the table as Daft computes them. An
input is a Daft frame over the loaded rows (the run's slice, read with our planner).

Example:
    >>> import daft
    >>> frame = daft.from_pydict({"n": [1, 2]})
    >>> DaftDataFrameHandler().to_arrow(frame, "demo.numbers").read_all().num_rows
    2
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from floe_dagster_iceberg.type_handlers.base import (
    LibraryTypeHandler,
    LoadRequest,
    read_arrow,
    require,
)

__all__ = ["DaftDataFrameHandler"]


class DaftDataFrameHandler(LibraryTypeHandler):
    library = "daft"
    extra = "daft"
    output_type_names = ("DataFrame",)
    input_type_name = "DataFrame"

    def to_arrow(self, obj: Any, table_name: str) -> pa.RecordBatchReader:
        schema = obj.schema().to_pyarrow_schema()
        batches = (batch.cast(schema) for batch in obj.to_arrow_iter())
        return pa.RecordBatchReader.from_batches(schema, batches)

    def load(self, request: LoadRequest) -> Any:
        daft = require("daft", "daft")
        return daft.from_arrow(read_arrow(request))
