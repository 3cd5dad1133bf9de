"""Frame types the IO manager stores and loads: one small handler per type, all through Arrow.

A handler turns an asset's output into Arrow (a table, or a stream of batches when the type is
lazy) and builds the input an asset asks for from the table. The IO manager picks the handler
by the output's type, and by the input's annotation (``pyarrow.Table`` when there is none).

Example:
    >>> import polars as pl
    >>> handler_for_output(pl.DataFrame({"n": [1]}), "demo.numbers").output_types
    (<class 'polars.dataframe.frame.DataFrame'>,)
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from typing import Any, ClassVar

import polars as pl
import pyarrow as pa
from pyiceberg.expressions import BooleanExpression
from pyiceberg.table import Table

from floe_dagster_iceberg.engine.manager import IcebergTableManager
from floe_dagster_iceberg.errors import InvalidInputError
from floe_dagster_iceberg.slices import PartitionSlice

__all__ = [
    "ArrowTableHandler",
    "LoadRequest",
    "PolarsDataFrameHandler",
    "PolarsLazyFrameHandler",
    "PolarsReader",
    "RecordBatchReaderHandler",
    "TypeHandler",
    "handler_for_input",
    "handler_for_output",
]


class PolarsReader(str, Enum):
    """How ``polars.LazyFrame`` inputs read their files.

    ``native`` (the default) is Polars' own Iceberg reader; ``pyiceberg`` reads through
    PyIceberg, the choice where the native reader leaves threads hanging (reported in Kubernetes
    pods).
    """

    NATIVE = "native"
    PYICEBERG = "pyiceberg"


@dataclass(frozen=True)
class LoadRequest:
    """What an input reads: the table, the run's slice, the columns and the point in time."""

    manager: IcebergTableManager
    table: Table
    partition_slice: PartitionSlice | None
    columns: list[str] | None
    read: dict[str, Any]

    @property
    def row_filter(self) -> BooleanExpression | None:
        return self.partition_slice.scan_filter if self.partition_slice else None

    @property
    def scan_columns(self) -> list[str] | None:
        """The columns to read: a slice of many keys also needs its key columns to keep its
        exact rows after the range scan."""
        slice_ = self.partition_slice
        if not self.columns or slice_ is None or slice_.scan_is_exact:
            return self.columns
        return list(dict.fromkeys([*self.columns, *slice_.filter_columns]))


class TypeHandler:
    """Converts one frame library's type to Arrow on output and from the table on input."""

    output_types: ClassVar[tuple[type, ...]] = ()
    input_type: ClassVar[type]

    def to_arrow(self, obj: Any, table_name: str) -> pa.Table | pa.RecordBatchReader:
        return obj

    def load(self, request: LoadRequest) -> Any:
        return _scan_table(request)


class ArrowTableHandler(TypeHandler):
    output_types = (pa.Table,)
    input_type = pa.Table


class RecordBatchReaderHandler(TypeHandler):
    """Streams: written batch by batch (unpartitioned), read without holding the table."""

    output_types = (pa.RecordBatchReader,)
    input_type = pa.RecordBatchReader

    def load(self, request: LoadRequest) -> pa.RecordBatchReader:
        reader = request.manager.scan_batches(
            request.table, request.row_filter, request.scan_columns, **request.read
        )
        if request.partition_slice is not None:
            reader = request.partition_slice.keep_batches(reader)
        if request.scan_columns != request.columns and request.columns:
            reader = _select_batches(reader, request.columns)
        return reader


class PolarsDataFrameHandler(TypeHandler):
    output_types = (pl.DataFrame,)
    input_type = pl.DataFrame

    def to_arrow(self, obj: pl.DataFrame, table_name: str) -> pa.Table:
        return _from_polars(obj.to_arrow, table_name)

    def load(self, request: LoadRequest) -> pl.DataFrame:
        return pl.from_arrow(_scan_table(request))


class PolarsLazyFrameHandler(TypeHandler):
    """Lazy both ways: outputs stream their batches, inputs are Polars' own Iceberg scan."""

    output_types = (pl.LazyFrame,)
    input_type = pl.LazyFrame

    def to_arrow(self, obj: pl.LazyFrame, table_name: str) -> pa.RecordBatchReader:
        return _from_polars(lambda: _lazy_to_reader(obj), table_name)

    def load(self, request: LoadRequest) -> pl.LazyFrame:
        read = request.read
        snapshot_id = read.get("snapshot_id")
        if read.get("as_of") is not None or read.get("ref") is not None:
            snapshot_id = request.manager.snapshot_id_for(
                request.table, as_of=read.get("as_of"), ref=read.get("ref")
            )
        frame = pl.scan_iceberg(request.table, snapshot_id=snapshot_id)
        if request.partition_slice is not None:
            frame = request.partition_slice.keep_lazy(frame)
        if request.columns:
            frame = frame.select(request.columns)
        return frame


HANDLERS: tuple[TypeHandler, ...] = (
    ArrowTableHandler(),
    RecordBatchReaderHandler(),
    PolarsDataFrameHandler(),
    PolarsLazyFrameHandler(),
)
"""Every handler, in the order outputs are matched."""


def handler_for_output(obj: Any, table_name: str) -> TypeHandler:
    """The handler of an asset's output, or an error naming the types that can be stored."""
    for handler in HANDLERS:
        if isinstance(obj, handler.output_types):
            return handler
    stored = ", ".join(f"{t.__module__.split('.')[0]}.{t.__name__}" for t in _output_types())
    raise InvalidInputError(
        f"Asset {table_name} returned a {type(obj).__module__}.{type(obj).__qualname__}; the "
        f"Iceberg IO manager stores {stored} (or None to write nothing)."
    )


def handler_for_input(annotation: Any) -> TypeHandler:
    """The handler of an input annotated ``annotation`` (``pyarrow.Table`` when unannotated)."""
    for handler in HANDLERS:
        if annotation is handler.input_type:
            return handler
    return HANDLERS[0]


def _output_types() -> list[type]:
    return [t for handler in HANDLERS for t in handler.output_types]


def _scan_table(request: LoadRequest) -> pa.Table:
    arrow = request.manager.scan(
        request.table, request.row_filter, request.scan_columns, **request.read
    )
    if request.partition_slice is not None:
        arrow = request.partition_slice.keep(arrow)
    if request.scan_columns != request.columns and request.columns:
        arrow = arrow.select(request.columns)
    return arrow


def _from_polars(convert: Any, table_name: str) -> Any:
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


def _select_batches(reader: pa.RecordBatchReader, columns: list[str]) -> pa.RecordBatchReader:
    schema = pa.schema([reader.schema.field(name) for name in columns])

    def batches() -> Iterator[pa.RecordBatch]:
        for batch in reader:
            yield batch.select(columns)

    return pa.RecordBatchReader.from_batches(schema, batches())
