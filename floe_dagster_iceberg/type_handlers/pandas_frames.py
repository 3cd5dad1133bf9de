"""pandas: ``pandas.DataFrame`` out and in (install ``floe-dagster-iceberg[pandas]``).

On output, named index levels become columns and an unnamed index (the default RangeIndex, or
what is left of it after a filter) is not stored; categorical columns are stored as their
values. On input, columns get pandas' nullable dtypes (``Int64``, ``boolean``, ``Float64``,
``string``) because every Iceberg column may hold nulls, so nullable dtypes round-trip
exactly; timestamps with a time zone come back in UTC (Iceberg stores the instant, not the
zone), with the same instants.

Example:
    >>> import pandas as pd
    >>> frame = pd.DataFrame({"n": [1, None]}, dtype="Int64").rename_axis("row")
    >>> PandasDataFrameHandler().to_arrow(frame, "demo.numbers").column_names
    ['row', 'n']
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from floe_dagster_iceberg.errors import InvalidInputError
from floe_dagster_iceberg.type_handlers.base import (
    LibraryTypeHandler,
    LoadRequest,
    read_arrow,
    require,
)

__all__ = ["PandasDataFrameHandler", "to_pandas"]


class PandasDataFrameHandler(LibraryTypeHandler):
    library = "pandas"
    extra = "pandas"
    output_type_names = ("DataFrame",)
    input_type_name = "DataFrame"

    def to_arrow(self, obj: Any, table_name: str) -> pa.Table:
        named = [name for name in obj.index.names if name is not None]
        frame = obj.reset_index(level=named) if named else obj
        try:
            table = pa.Table.from_pandas(frame, preserve_index=False)
        except (pa.ArrowException, TypeError, ValueError) as error:
            raise InvalidInputError(
                f"Asset {table_name}: the pandas DataFrame cannot be converted to Arrow "
                f"({type(error).__name__}: {error}); check its column names and dtypes "
                "(object columns must hold one type)."
            ) from None
        return _decode_dictionaries(table).replace_schema_metadata(None)

    def load(self, request: LoadRequest) -> Any:
        return to_pandas(read_arrow(request))


def to_pandas(table: pa.Table) -> Any:
    """``table`` as a pandas DataFrame with nullable dtypes.

    Example:
        >>> to_pandas(pa.table({"n": [1, None]})).dtypes["n"]
        Int64Dtype()
    """
    pd = require("pandas", "pandas")
    nullable = {
        pa.int8(): pd.Int8Dtype(),
        pa.int16(): pd.Int16Dtype(),
        pa.int32(): pd.Int32Dtype(),
        pa.int64(): pd.Int64Dtype(),
        pa.bool_(): pd.BooleanDtype(),
        pa.float32(): pd.Float32Dtype(),
        pa.float64(): pd.Float64Dtype(),
        pa.string(): pd.StringDtype(),
        pa.large_string(): pd.StringDtype(),
    }
    return table.to_pandas(types_mapper=nullable.get)


def _decode_dictionaries(table: pa.Table) -> pa.Table:
    """Categorical (dictionary) columns as plain columns of their values."""
    for index, field in enumerate(table.schema):
        if pa.types.is_dictionary(field.type):
            values = table.column(index).cast(field.type.value_type)
            table = table.set_column(index, field.with_type(field.type.value_type), values)
    return table
