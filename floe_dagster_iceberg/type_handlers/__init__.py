"""Frame types the IO manager stores and loads: one small handler per library, all through Arrow.

A handler turns an asset's output into Arrow (a table, or a stream of batches when the type is
lazy) and builds the input an asset asks for from the table. The IO manager picks the handler
by the output's type, and by the input's annotation (``pyarrow.Table`` when there is none).
Optional libraries (pandas, Daft, DuckDB) are imported only when one of their objects shows up.

Example:
    >>> import polars as pl
    >>> type(handler_for_output(pl.DataFrame({"n": [1]}), "demo.numbers")).__name__
    'PolarsDataFrameHandler'
"""

from floe_dagster_iceberg.type_handlers.arrow import ArrowTableHandler, RecordBatchReaderHandler
from floe_dagster_iceberg.type_handlers.base import LoadRequest, TypeHandler, read_arrow
from floe_dagster_iceberg.type_handlers.daft_frames import DaftDataFrameHandler
from floe_dagster_iceberg.type_handlers.duckdb_relations import DuckDBRelationHandler
from floe_dagster_iceberg.type_handlers.pandas_frames import PandasDataFrameHandler
from floe_dagster_iceberg.type_handlers.polars_frames import (
    PolarsDataFrameHandler,
    PolarsLazyFrameHandler,
)
from floe_dagster_iceberg.type_handlers.polars_reader import PolarsReader
from floe_dagster_iceberg.type_handlers.registry import (
    InputShape,
    handler_for_output,
    input_shape,
    register_type_handler,
    registered_handlers,
    unregister_type_handler,
)

__all__ = [
    "ArrowTableHandler",
    "DaftDataFrameHandler",
    "DuckDBRelationHandler",
    "InputShape",
    "LoadRequest",
    "PandasDataFrameHandler",
    "PolarsDataFrameHandler",
    "PolarsLazyFrameHandler",
    "PolarsReader",
    "RecordBatchReaderHandler",
    "TypeHandler",
    "handler_for_output",
    "input_shape",
    "read_arrow",
    "register_type_handler",
    "registered_handlers",
    "unregister_type_handler",
]
