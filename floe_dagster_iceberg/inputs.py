"""How the IO manager loads an input: which table, slice, columns, point in time and frame type."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

import polars as pl
import pyarrow as pa
from dagster import InputContext
from pyiceberg.table import Table

from floe_dagster_iceberg.asset_tables import asset_table_identifier
from floe_dagster_iceberg.engine.manager import IcebergTableManager
from floe_dagster_iceberg.resource import IcebergCatalogResource
from floe_dagster_iceberg.slices import build_partition_slice
from floe_dagster_iceberg.type_handlers import LoadRequest, handler_for_input

__all__ = ["load_asset_input"]


def load_asset_input(
    context: InputContext, catalog: IcebergCatalogResource, default_namespace: str
) -> Any:
    """The input ``context`` asks for, read from the upstream asset's table."""
    upstream = context.upstream_output
    upstream_metadata = dict(upstream.definition_metadata or {}) if upstream else {}
    input_metadata = dict(context.definition_metadata or {})
    identifier = asset_table_identifier(
        context.asset_key.path, upstream_metadata, default_namespace
    )
    table_name = ".".join(identifier)
    manager = catalog.get_manager(logger=context.log)
    table = manager.load_table(identifier)
    read = _point_in_time(input_metadata)
    emitter = catalog.lineage()
    snapshot_id = _snapshot_read(manager, table, read) if emitter.enabled else None
    lineage = emitter.start_load(context, table, snapshot_id)
    try:
        partition_slice = None
        if context.has_asset_partitions:
            partition_slice = build_partition_slice(
                asset=table_name,
                partitions_def=context.asset_partitions_def,
                partition_keys=list(context.asset_partition_keys),
                partition_expr=input_metadata.get(
                    "partition_expr", upstream_metadata.get("partition_expr")
                ),
                column_types={f.name: f.field_type for f in table.schema().fields},
            )
        request = LoadRequest(manager, table, partition_slice, input_metadata.get("columns"), read)
        loaded = handler_for_input(_annotation(context)).load(request)
        rows = _row_count(loaded)
    except Exception as error:
        lineage.fail(error)
        raise
    lineage.complete_load(table, snapshot_id, rows)
    return loaded


def _point_in_time(input_metadata: Mapping[str, Any]) -> dict[str, Any]:
    as_of = input_metadata.get("as_of")
    if isinstance(as_of, str):
        as_of = dt.datetime.fromisoformat(as_of)
    return {
        "snapshot_id": input_metadata.get("snapshot_id"),
        "as_of": as_of,
        "ref": input_metadata.get("ref"),
    }


def _snapshot_read(
    manager: IcebergTableManager, table: Table, read: Mapping[str, Any]
) -> int | None:
    """The snapshot a load reads (for lineage): pinned id, time/tag resolved, else current."""
    if read.get("snapshot_id") is not None:
        return int(read["snapshot_id"])
    if read.get("as_of") is not None or read.get("ref") is not None:
        try:
            return manager.snapshot_id_for(table, as_of=read.get("as_of"), ref=read.get("ref"))
        except Exception:  # the scan itself reports a bad as_of / ref
            return None
    snapshot = table.current_snapshot()
    return snapshot.snapshot_id if snapshot else None


def _annotation(context: InputContext) -> Any:
    return context.dagster_type.typing_type if context.dagster_type else None


def _row_count(loaded: Any) -> int | None:
    """Rows of an input that is already in memory (lazy inputs are not counted)."""
    if isinstance(loaded, pa.Table):
        return loaded.num_rows
    if isinstance(loaded, pl.DataFrame):
        return loaded.height
    return None
