"""The handlers in the order they are asked, and the shape an input annotation asks for.

Example:
    >>> import polars as pl
    >>> type(handler_for_output(pl.DataFrame({"n": [1]}), "demo.numbers")).__name__
    'PolarsDataFrameHandler'
"""

from __future__ import annotations

import collections.abc
import inspect
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from floe_dagster_iceberg.errors import InvalidInputError
from floe_dagster_iceberg.type_handlers.arrow import ArrowTableHandler, RecordBatchReaderHandler
from floe_dagster_iceberg.type_handlers.base import TypeHandler
from floe_dagster_iceberg.type_handlers.daft_frames import DaftDataFrameHandler
from floe_dagster_iceberg.type_handlers.duckdb_relations import DuckDBRelationHandler
from floe_dagster_iceberg.type_handlers.pandas_frames import PandasDataFrameHandler
from floe_dagster_iceberg.type_handlers.polars_frames import (
    PolarsDataFrameHandler,
    PolarsLazyFrameHandler,
)

__all__ = [
    "InputShape",
    "handler_for_output",
    "input_shape",
    "register_type_handler",
    "registered_handlers",
    "unregister_type_handler",
]

_DEFAULT = ArrowTableHandler()
_BUILT_IN: tuple[TypeHandler, ...] = (
    _DEFAULT,
    RecordBatchReaderHandler(),
    PolarsDataFrameHandler(),
    PolarsLazyFrameHandler(),
    PandasDataFrameHandler(),
    DaftDataFrameHandler(),
    DuckDBRelationHandler(),
)
_HANDLERS: list[TypeHandler] = list(_BUILT_IN)


def register_type_handler(handler: TypeHandler) -> None:
    """Store and load your own frame type; a registered handler is asked before the built-in
    ones, so it can also replace one.

    Example:
        >>> import pyarrow as pa
        >>> class Rows(list): ...
        >>> class RowsHandler(TypeHandler):
        ...     output_types = (Rows,)
        ...     input_type = Rows
        ...     def to_arrow(self, obj, table_name):
        ...         return pa.Table.from_pylist(obj)
        ...     def load(self, request):
        ...         return Rows(super().load(request).to_pylist())
        >>> handler = RowsHandler()
        >>> register_type_handler(handler)
        >>> type(handler_for_output(Rows([{"n": 1}]), "demo.rows")).__name__
        'RowsHandler'
        >>> unregister_type_handler(handler)
    """
    _HANDLERS.insert(0, handler)


def unregister_type_handler(handler: TypeHandler) -> None:
    """Forget a handler :func:`register_type_handler` added (the built-in ones stay).

    Example:
        >>> class Nothing(TypeHandler): ...
        >>> handler = Nothing()
        >>> register_type_handler(handler)
        >>> unregister_type_handler(handler)
        >>> handler in registered_handlers()
        False
    """
    if handler in _BUILT_IN:
        raise InvalidInputError(f"{type(handler).__name__} is built in; register a replacement.")
    while handler in _HANDLERS:
        _HANDLERS.remove(handler)


def registered_handlers() -> tuple[TypeHandler, ...]:
    """Every handler, in the order outputs and annotations are matched."""
    return tuple(_HANDLERS)


def handler_for_output(obj: Any, table_name: str) -> TypeHandler:
    """The handler of an asset's output, or an error naming the types that can be stored."""
    for handler in _HANDLERS:
        if handler.handles_output(obj):
            return handler
    raise InvalidInputError(
        f"Asset {table_name} returned a {type(obj).__module__}.{type(obj).__qualname__}; the "
        f"Iceberg IO manager stores {_all_type_names()} (or None to write nothing)."
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
        >>> shape.per_partition, shape.values_optional, type(shape.handler).__name__
        (True, True, 'PolarsDataFrameHandler')
    """
    inner, optional = _strip_optional(annotation)
    if typing.get_origin(inner) in (dict, Mapping, collections.abc.Mapping):
        key_type, value_type = (*typing.get_args(inner), Any, Any)[:2]
        value, values_optional = _strip_optional(value_type)
        if key_type in (str, Any):
            handler = _handler(value, annotation, input_name)
            return InputShape(handler, optional, True, values_optional)
    return InputShape(_handler(inner, annotation, input_name), optional)


def _strip_optional(annotation: Any) -> tuple[Any, bool]:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(members) == 1:
            return members[0], len(members) < len(typing.get_args(annotation))
    return annotation, False


def _handler(annotation: Any, whole: Any, input_name: str) -> TypeHandler:
    if annotation in (None, Any, object, inspect.Parameter.empty):
        return _DEFAULT
    for handler in _HANDLERS:
        if handler.handles_annotation(annotation):
            return handler
    raise InvalidInputError(
        f"Input '{input_name}' is annotated {_annotation_name(whole)}, which the Iceberg IO "
        f"manager cannot load. Annotate it as one of {_all_type_names()}; Optional[...] of "
        "these (None when the table or partition holds nothing); or dict[str, ...] of these for "
        "a partitioned upstream read partition by partition. Unannotated inputs are "
        "pyarrow.Table."
    )


def _all_type_names() -> str:
    return ", ".join(dict.fromkeys(name for h in _HANDLERS for name in h.type_names()))


def _annotation_name(annotation: Any) -> str:
    if isinstance(annotation, type):
        return f"{annotation.__module__.split('.')[0]}.{annotation.__name__}"
    return repr(annotation)
