"""DuckDB: ``duckdb.DuckDBPyRelation`` out and in, through Arrow (``[duckdb]`` extra).

An output relation is streamed into the table; an input is a relation over the loaded rows on
DuckDB's default connection, ready for SQL.

Example:
    >>> import duckdb
    >>> relation = duckdb.sql("select 1 as n")
    >>> DuckDBRelationHandler().to_arrow(relation, "demo.numbers").read_all().num_rows
    1
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

__all__ = ["DuckDBRelationHandler"]


class DuckDBRelationHandler(LibraryTypeHandler):
    library = "duckdb"
    extra = "duckdb"
    output_type_names = ("DuckDBPyRelation",)
    input_type_name = "DuckDBPyRelation"

    def to_arrow(self, obj: Any, table_name: str) -> pa.RecordBatchReader:
        return obj.to_arrow_reader()

    def load(self, request: LoadRequest) -> Any:
        duckdb = require("duckdb", "duckdb")
        return duckdb.from_arrow(read_arrow(request))
