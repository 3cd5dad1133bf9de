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

import collections.abc
import inspect
import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from enum import Enum
from typing import Any, ClassVar

import polars as pl
import pyarrow as pa
from pyiceberg.table import Table

from floe_dagster_iceberg.engine.manager import IcebergTableManager
from floe_dagster_iceberg.engine.scan import ReadRequest
from floe_dagster_iceberg.errors import InvalidInputError
from floe_dagster_iceberg.slices import PartitionSlice

__all__ = [
    "ArrowTableHandler",
    "InputShape",
    "LoadRequest",
    "PolarsDataFrameHandler",
    "PolarsLazyFrameHandler",
    "PolarsReader",
    "RecordBatchReaderHandler",
    "TypeHandler",
    "handler_for_output",
    "input_shape",
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
    """What an input reads: the table, the run's slice, and the read (columns, point in time,
    increment, string type) before the slice is applied."""

    manager: IcebergTableManager
    table: Table
    partition_slice: PartitionSlice | None
    read: ReadRequest
    polars_reader: PolarsReader = PolarsReader.NATIVE

    @property
    def columns(self) -> list[str] | None:
        return list(self.read.columns) if self.read.columns else None

    @property
    def scan(self) -> ReadRequest:
        """The read with the slice's filter, and with the slice's key columns when a slice of
        many keys needs them to keep its exact rows after a range scan."""
        slice_ = self.partition_slice
        if slice_ is None:
            return self.read
        columns = self.columns
        if columns and not slice_.scan_is_exact:
            columns = list(dict.fromkeys([*columns, *slice_.filter_columns]))
        return replace(self.read, row_filter=slice_.scan_filter, columns=columns)


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
        scan = request.scan
        reader = request.manager.read_batches(request.table, scan)
        if request.partition_slice is not None:
            reader = request.partition_slice.keep_batches(reader)
        if request.columns and scan.columns != request.read.columns:
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
        if read.incremental:
            # Polars' own increments skip overwrites; ours count those that removed nothing.
            return pl.from_arrow(_scan_table(request)).lazy()  # type: ignore[union-attr]
        snapshot_id = read.snapshot_id
        if read.as_of is not None or read.ref is not None:
            snapshot_id = request.manager.snapshot_id_for(
                request.table, as_of=read.as_of, ref=read.ref
            )
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
    stored = ", ".join(_type_name(t) for t in _output_types())
    raise InvalidInputError(
        f"Asset {table_name} returned a {type(obj).__module__}.{type(obj).__qualname__}; the "
        f"Iceberg IO manager stores {stored} (or None to write nothing)."
    )


@dataclass(frozen=True)
class InputShape:
    """How an input's annotation asks for the table: which frame type, ``None`` allowed when
    nothing is there (``Optional``), and one frame per partition key (``dict[str, ...]``)."""

    handler: TypeHandler
    optional: bool = False
    per_partition: bool = False
    values_optional: bool = False


def input_shape(annotation: Any, input_name: str = "input") -> InputShape:
    """The shape of an input annotated ``annotation`` (``pyarrow.Table`` when unannotated).

    Example:
        >>> import polars as pl
        >>> shape = input_shape(dict[str, pl.DataFrame | None])
        >>> shape.per_partition, shape.values_optional, shape.handler.input_type.__name__
        (True, True, 'DataFrame')
    """
    inner, optional = _strip_optional(annotation)
    if typing.get_origin(inner) in (dict, Mapping, collections.abc.Mapping):
        key_type, value_type = (*typing.get_args(inner), Any, Any)[:2]
        value, values_optional = _strip_optional(value_type)
        if key_type in (str, Any):
            return InputShape(
                _handler(value, annotation, input_name), optional, True, values_optional
            )
    return InputShape(_handler(inner, annotation, input_name), optional)


def _strip_optional(annotation: Any) -> tuple[Any, bool]:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(members) == 1:
            return members[0], len(members) < len(typing.get_args(annotation))
    return annotation, False


def _handler(annotation: Any, whole: Any, input_name: str) -> TypeHandler:
    if annotation in (None, Any, object, inspect.Parameter.empty):
        return HANDLERS[0]
    for handler in HANDLERS:
        if annotation is handler.input_type:
            return handler
    loadable = ", ".join(_type_name(h.input_type) for h in HANDLERS)
    raise InvalidInputError(
        f"Input '{input_name}' is annotated {_annotation_name(whole)}, which the Iceberg IO "
        f"manager cannot load. Annotate it as one of {loadable}; Optional[...] of these "
        "(None when the table or partition holds nothing); or dict[str, ...] of these for a "
        "partitioned upstream read partition by partition. Unannotated inputs are "
        "pyarrow.Table."
    )


def _type_name(t: type) -> str:
    return f"{t.__module__.split('.')[0]}.{t.__name__}"


def _annotation_name(annotation: Any) -> str:
    return _type_name(annotation) if isinstance(annotation, type) else repr(annotation)


def _output_types() -> list[type]:
    return [t for handler in HANDLERS for t in handler.output_types]


def _scan_table(request: LoadRequest) -> pa.Table:
    scan = request.scan
    arrow = request.manager.read(request.table, scan)
    if request.partition_slice is not None:
        arrow = request.partition_slice.keep(arrow)
    if request.columns and scan.columns != request.read.columns:
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
