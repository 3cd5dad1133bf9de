"""Polars: ``polars.DataFrame`` and ``polars.LazyFrame`` (lazy both ways).

Example:
    >>> import polars as pl
    >>> PolarsDataFrameHandler().to_arrow(pl.DataFrame({"n": [1]}), "demo.numbers").num_rows
    1
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import polars as pl
import pyarrow as pa

from floe_dagster_iceberg.errors import InvalidInputError
from floe_dagster_iceberg.type_handlers.base import LoadRequest, TypeHandler, read_arrow

__all__ = ["PolarsDataFrameHandler", "PolarsLazyFrameHandler"]


class PolarsDataFrameHandler(TypeHandler):
    output_types = (pl.DataFrame,)
    input_type = pl.DataFrame

    def to_arrow(self, obj: pl.DataFrame, table_name: str) -> pa.Table:
        return _from_polars(obj.to_arrow, table_name)

    def load(self, request: LoadRequest) -> pl.DataFrame:
        return pl.from_arrow(read_arrow(request))  # type: ignore[return-value]


class PolarsLazyFrameHandler(TypeHandler):
    """Lazy both ways: outputs stream their batches, inputs are Polars' own Iceberg scan."""

    output_types = (pl.LazyFrame,)
    input_type = pl.LazyFrame

    def to_arrow(self, obj: pl.LazyFrame, table_name: str) -> pa.RecordBatchReader:
        return _from_polars(lambda: _lazy_to_reader(obj), table_name)

    def load(self, request: LoadRequest) -> pl.LazyFrame:
        read = request.read
        if read.incremental:
            # Polars' own increments skip overwrites; ours count those that removed nothing.
            return pl.from_arrow(read_arrow(request)).lazy()  # type: ignore[union-attr]
        snapshot_id = read.snapshot_id
        if read.as_of is not None or read.ref is not None:
            snapshot_id = request.manager.snapshot_id_for(
                request.table, as_of=read.as_of, ref=read.ref
            )
        if snapshot_id is None and _reads_a_branch_view(request.table):
            snapshot_id = request.table.metadata.current_snapshot_id
        frame = pl.scan_iceberg(
            request.table,
            snapshot_id=snapshot_id,
            reader_override=request.polars_reader.value,
        )
        if request.partition_slice is not None:
            frame = request.partition_slice.keep_lazy(frame)
        if request.columns:
            frame = frame.select(request.columns)
        return frame


def _reads_a_branch_view(table: Any) -> bool:
    """Whether ``table`` shows another branch than ``main`` (Polars would read ``main``)."""
    main = table.metadata.refs.get("main")
    current = table.metadata.current_snapshot_id
    return current is not None and (main is None or main.snapshot_id != current)


def _from_polars(convert: Callable[[], Any], table_name: str) -> Any:
    try:
        return convert()
    except BaseException as error:
        # Polars reports some frames it cannot export (e.g. a NUL in a column name) with a
        # Rust panic, which is a BaseException.
        if not isinstance(error, Exception) and type(error).__name__ != "PanicException":
            raise
        raise InvalidInputError(
            f"Asset {table_name}: the Polars frame cannot be converted to Arrow "
            f"({type(error).__name__}: {error}); check its column names and types."
        ) from None


def _lazy_to_reader(frame: pl.LazyFrame) -> pa.RecordBatchReader:
    """Stream a LazyFrame's batches instead of collecting the whole result."""
    schema = frame.head(0).collect().to_arrow().schema

    def batches() -> Iterator[pa.RecordBatch]:
        for chunk in frame.collect_batches():
            yield from chunk.to_arrow().cast(schema).to_batches()

    return pa.RecordBatchReader.from_batches(schema, batches())
