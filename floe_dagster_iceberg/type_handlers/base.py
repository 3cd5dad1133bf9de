"""The contract of a frame type: to Arrow on output, from the table on input.

Example:
    >>> import pyarrow as pa
    >>> class NumbersHandler(TypeHandler):
    ...     output_types = (list,)
    ...     def to_arrow(self, obj, table_name):
    ...         return pa.table({"n": obj})
    >>> NumbersHandler().handles_output([1, 2])
    True
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import pyarrow as pa
from pyiceberg.table import Table

from floe_dagster_iceberg.engine.manager import IcebergTableManager
from floe_dagster_iceberg.engine.scan import ReadRequest
from floe_dagster_iceberg.errors import InvalidInputError
from floe_dagster_iceberg.slices import PartitionSlice
from floe_dagster_iceberg.type_handlers.polars_reader import PolarsReader

__all__ = ["LibraryTypeHandler", "LoadRequest", "TypeHandler", "read_arrow", "require"]


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
    """Converts one frame type to Arrow on output and builds it from the table on input.

    Set ``output_types`` (the types this handler stores) and ``input_type`` (the annotation it
    loads), override :meth:`to_arrow` and :meth:`load`, and register an instance with
    :func:`~floe_dagster_iceberg.register_type_handler`. The default :meth:`load` gives a
    ``pyarrow.Table``.
    """

    output_types: ClassVar[tuple[type, ...]] = ()
    input_type: ClassVar[type | None] = None

    def handles_output(self, obj: Any) -> bool:
        return isinstance(obj, self.output_types)

    def handles_annotation(self, annotation: Any) -> bool:
        return self.input_type is not None and annotation is self.input_type

    def type_names(self) -> list[str]:
        """The types this handler stores and loads, for error messages."""
        types = [*self.output_types, *([self.input_type] if self.input_type else [])]
        return list(dict.fromkeys(f"{t.__module__.split('.')[0]}.{t.__name__}" for t in types))

    def to_arrow(self, obj: Any, table_name: str) -> pa.Table | pa.RecordBatchReader:
        """``obj`` as Arrow: a table, or a stream of batches when the type is lazy."""
        return obj

    def load(self, request: LoadRequest) -> Any:
        """The input ``request`` asks for."""
        return read_arrow(request)


class LibraryTypeHandler(TypeHandler):
    """A handler for types of an optional library, named rather than imported, so the library
    is imported only when one of its objects or annotations shows up."""

    library: ClassVar[str]
    extra: ClassVar[str]
    output_type_names: ClassVar[tuple[str, ...]] = ()
    input_type_name: ClassVar[str | None] = None

    def handles_output(self, obj: Any) -> bool:
        return any(isinstance(obj, t) for t in self._loaded_types(self.output_type_names))

    def handles_annotation(self, annotation: Any) -> bool:
        names = (self.input_type_name,) if self.input_type_name else ()
        return any(annotation is t for t in self._loaded_types(names))

    def type_names(self) -> list[str]:
        names = [*self.output_type_names, *([self.input_type_name] if self.input_type_name else [])]
        return list(dict.fromkeys(f"{self.library}.{name}" for name in names))

    def _loaded_types(self, names: tuple[str, ...]) -> list[type]:
        module = sys.modules.get(self.library)  # not imported: no object of it can exist
        return [getattr(module, name) for name in names] if module is not None else []


def require(library: str, extra: str) -> Any:
    """Import ``library``, or fail naming the extra that installs it.

    Example:
        >>> require("pyarrow", "pyarrow").__name__
        'pyarrow'
    """
    try:
        return importlib.import_module(library)
    except ImportError:
        raise InvalidInputError(
            f"This needs {library}: pip install 'floe-dagster-iceberg[{extra}]'."
        ) from None


def read_arrow(request: LoadRequest) -> pa.Table:
    """The input's rows as one Arrow table: the slice read, its exact rows, its columns."""
    scan = request.scan
    arrow = request.manager.read(request.table, scan)
    if request.partition_slice is not None:
        arrow = request.partition_slice.keep(arrow)
    if request.columns and scan.columns != request.read.columns:
        arrow = arrow.select(request.columns)
    return arrow
