"""How the IO manager loads an input: which table, slice, columns, point in time and frame type.

Input metadata (``AssetIn(metadata=...)``): ``columns``; one point in time among
``snapshot_id``, ``as_of`` (datetime or ISO string) and ``ref`` (tag or branch); ``incremental``
(only the rows appended since the snapshot this asset read last time), or explicit
``from_snapshot_id`` (exclusive) / ``to_snapshot_id`` (inclusive); ``string_type``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import polars as pl
import pyarrow as pa
from dagster import AssetKey, AssetRecordsFilter, InputContext, MetadataValue
from pyiceberg.table import Table

from floe_dagster_iceberg.asset_tables import asset_table_identifier
from floe_dagster_iceberg.audit import PendingAudit, audit_branch_name
from floe_dagster_iceberg.engine.branches import on_branch
from floe_dagster_iceberg.engine.config import ArrowStringType
from floe_dagster_iceberg.engine.manager import IcebergTableManager
from floe_dagster_iceberg.engine.scan import ReadRequest, snapshot_read
from floe_dagster_iceberg.errors import InvalidInputError, TableNotFoundError
from floe_dagster_iceberg.resource import IcebergCatalogResource
from floe_dagster_iceberg.slices import PartitionSlice, build_partition_slice
from floe_dagster_iceberg.type_handlers import InputShape, LoadRequest, PolarsReader, input_shape

__all__ = ["INCREMENTAL_METADATA_PREFIX", "InputSettings", "load_asset_input"]

INCREMENTAL_METADATA_PREFIX = "floe/incremental/"
"""Materialization metadata of a consumer: ``floe/incremental/<table>`` = the snapshots read."""


@dataclass(frozen=True)
class InputSettings:
    """The IO manager's defaults for inputs."""

    default_namespace: str
    string_type: ArrowStringType = ArrowStringType.LARGE_STRING
    polars_reader: PolarsReader = PolarsReader.NATIVE


def load_asset_input(
    context: InputContext, catalog: IcebergCatalogResource, settings: InputSettings
) -> Any:
    """The input ``context`` asks for, read from the upstream asset's table."""
    upstream = context.upstream_output
    upstream_metadata = dict(upstream.definition_metadata or {}) if upstream else {}
    input_metadata = dict(context.definition_metadata or {})
    identifier = asset_table_identifier(
        context.asset_key.path, upstream_metadata, settings.default_namespace
    )
    table_name = ".".join(identifier)
    shape = input_shape(_annotation(context), _input_name(context))
    manager = catalog.get_manager(logger=context.log)
    try:
        table = manager.load_table(identifier)
    except TableNotFoundError:
        if shape.optional:
            context.log.info(f"Table {table_name} does not exist: the input is None.")
            return None
        raise
    read = _read_request(input_metadata, settings, table_name)
    if read.snapshot_id is None and read.as_of is None and read.ref is None:
        table = _branch_to_read(context, catalog, manager, table)
    if input_metadata.get("incremental"):
        read = _incremental_read(context, table, read, table_name)
    emitter = catalog.lineage()
    snapshot = snapshot_read(table, read) if emitter.enabled else None
    lineage = emitter.start_load(context, table, snapshot.snapshot_id if snapshot else None)
    try:
        partition_expr = input_metadata.get(
            "partition_expr", upstream_metadata.get("partition_expr")
        )
        loader = _Loader(manager, table, read, shape, settings.polars_reader)
        if shape.per_partition:
            loaded = loader.per_partition(context, table_name, partition_expr)
        else:
            loaded = loader.load(_slice(context, table, table_name, partition_expr))
        rows = _row_count(loaded)
    except Exception as error:
        lineage.fail(error)
        raise
    lineage.complete_load(table, snapshot.snapshot_id if snapshot else None, rows)
    return loaded


def _branch_to_read(
    context: InputContext,
    catalog: IcebergCatalogResource,
    manager: IcebergTableManager,
    table: Table,
) -> Table:
    """The table as this load sees it: the run's audit branch for the asset's checks, else
    the code location's branch (``main`` by default; tables never written there from ``main``).

    A downstream asset of the run runs only once the blocking checks passed: it publishes the
    audited write before reading.
    """
    target = catalog.branch
    run_id = _run_id(context)
    branch = audit_branch_name(run_id) if run_id is not None else None
    staged = table.metadata.snapshot_by_name(branch) if branch is not None else None
    if staged is not None:
        if context.step_context.is_asset_check_step:
            return on_branch(table, branch)
        audit = PendingAudit.of_run(
            run_id, context.asset_key, table.name(), target, staged.snapshot_id
        )
        audit.publish(manager)
        table = manager.load_table(audit.identifier)
    return on_branch(table, target) if target else table


def _run_id(context: InputContext) -> str | None:
    """The run of the load; None for a context built outside a run."""
    try:
        return context.step_context.run_id
    except Exception:
        return None


class _Loader:
    """Loads the shape an annotation asks for: one frame, ``None``, or one frame per key."""

    def __init__(
        self,
        manager: IcebergTableManager,
        table: Table,
        read: ReadRequest,
        shape: InputShape,
        polars_reader: PolarsReader,
    ) -> None:
        self.manager = manager
        self.table = table
        self.read = read
        self.shape = shape
        self.polars_reader = polars_reader

    def load(self, partition_slice: PartitionSlice | None, optional: bool | None = None) -> Any:
        request = LoadRequest(
            self.manager, self.table, partition_slice, self.read, self.polars_reader
        )
        optional = self.shape.optional if optional is None else optional
        if optional and self._holds_nothing(request):
            return None
        return self.shape.handler.load(request)

    def per_partition(
        self, context: InputContext, table_name: str, partition_expr: Any
    ) -> dict[str, Any]:
        if not context.has_asset_partitions:
            raise InvalidInputError(
                f"Input '{_input_name(context)}' is annotated dict[str, ...], one frame per "
                f"partition key, but asset {table_name} is not partitioned; annotate it with "
                "the frame type alone."
            )
        column_types = _column_types(self.table)
        return {
            key: self.load(
                build_partition_slice(
                    asset=table_name,
                    partitions_def=context.asset_partitions_def,
                    partition_keys=[key],
                    partition_expr=partition_expr,
                    column_types=column_types,
                ),
                optional=self.shape.values_optional,
            )
            for key in context.asset_partition_keys
        }

    def _holds_nothing(self, request: LoadRequest) -> bool:
        slice_ = request.partition_slice
        exact = slice_ is None or slice_.scan_is_exact
        rows = self.manager.read(self.table, replace(request.scan, limit=1 if exact else None))
        if not exact:
            rows = slice_.keep(rows)  # type: ignore[union-attr]
        return rows.num_rows == 0


def _slice(
    context: InputContext, table: Table, table_name: str, partition_expr: Any
) -> PartitionSlice | None:
    if not context.has_asset_partitions:
        return None
    return build_partition_slice(
        asset=table_name,
        partitions_def=context.asset_partitions_def,
        partition_keys=list(context.asset_partition_keys),
        partition_expr=partition_expr,
        column_types=_column_types(table),
    )


def _read_request(
    metadata: Mapping[str, Any], settings: InputSettings, table_name: str
) -> ReadRequest:
    as_of = metadata.get("as_of")
    if isinstance(as_of, str):
        as_of = dt.datetime.fromisoformat(as_of)
    snapshot_id = metadata.get("snapshot_id")
    to_snapshot_id = metadata.get("to_snapshot_id")
    if snapshot_id is not None and to_snapshot_id is not None:
        raise InvalidInputError(
            f"Input of {table_name}: give snapshot_id or to_snapshot_id, not both."
        )
    from_snapshot_id = metadata.get("from_snapshot_id")
    try:
        string_type = ArrowStringType(metadata.get("string_type", settings.string_type))
    except ValueError:
        allowed = ", ".join(repr(m.value) for m in ArrowStringType)
        raise InvalidInputError(
            f"Input of {table_name}: string_type={metadata['string_type']!r} is not valid; "
            f"use one of {allowed}."
        ) from None
    return ReadRequest(
        columns=metadata.get("columns"),
        snapshot_id=snapshot_id if snapshot_id is not None else to_snapshot_id,
        as_of=as_of,
        ref=metadata.get("ref"),
        string_type=string_type,
        incremental=from_snapshot_id is not None or to_snapshot_id is not None,
        from_snapshot_id=from_snapshot_id,
    )


def _incremental_read(
    context: InputContext, table: Table, read: ReadRequest, table_name: str
) -> ReadRequest:
    """The rows appended since this consumer's last read, and the read recorded on the
    consumer's materialization so the next run starts where this one ends.

    A re-run of a consumer partition that already recorded a read repeats that read.
    """
    consumers = _consumer_asset_keys(context)
    if not consumers:
        raise InvalidInputError(
            f"Input '{_input_name(context)}' of {table_name} is incremental, but the step that "
            "loads it materializes no asset to remember the snapshots it read in; load it "
            "from an asset, or give from_snapshot_id/to_snapshot_id instead."
        )
    key = f"{INCREMENTAL_METADATA_PREFIX}{table_name}"
    partition = context.partition_key if context.has_partition_key else None
    previous = _recorded_read(context, consumers, key, partition)
    if previous is not None and partition is not None and previous["partition"] == partition:
        read = replace(
            read,
            incremental=True,
            from_snapshot_id=previous["from_snapshot_id"],
            snapshot_id=previous["to_snapshot_id"],
            as_of=None,
            ref=None,
        )
    else:
        start = read.from_snapshot_id
        if start is None and previous is not None:
            start = previous["to_snapshot_id"]
        read = replace(read, incremental=True, from_snapshot_id=start)
    snapshot = snapshot_read(table, read)
    record = {
        "from_snapshot_id": read.from_snapshot_id,
        "to_snapshot_id": snapshot.snapshot_id if snapshot else None,
        "partition": partition,
    }
    for consumer in consumers:
        context.step_context.add_asset_metadata({key: MetadataValue.json(record)}, consumer)
    return read if snapshot is None else replace(read, snapshot_id=snapshot.snapshot_id)


def _recorded_read(
    context: InputContext, consumers: list[AssetKey], key: str, partition: str | None
) -> dict[str, Any] | None:
    """The read this input recorded on the consumer's materialization of ``partition`` (when
    there is one), else on its latest materialization."""
    instance = context.instance
    consumer = consumers[0]
    if partition is not None:
        records = instance.fetch_materializations(
            AssetRecordsFilter(asset_key=consumer, asset_partitions=[partition]), limit=1
        ).records
        found = _record_in(records[0].asset_materialization if records else None, key)
        if found is not None:
            return found
    latest = instance.get_latest_materialization_event(consumer)
    return _record_in(latest.asset_materialization if latest else None, key)


def _record_in(materialization: Any, key: str) -> dict[str, Any] | None:
    if materialization is None or key not in materialization.metadata:
        return None
    value = materialization.metadata[key]
    return dict(value.value if isinstance(value, MetadataValue) else value)


def _consumer_asset_keys(context: InputContext) -> list[AssetKey]:
    """The assets the step that loads this input materializes."""
    # InputContext has no public accessor for the consuming asset; the step context does.
    return sorted(context.step_context.get_output_asset_keys(), key=lambda k: k.path)


def _column_types(table: Table) -> dict[str, Any]:
    return {f.name: f.field_type for f in table.schema().fields}


def _input_name(context: InputContext) -> str:
    return context.name if context.has_input_name else "input"


def _annotation(context: InputContext) -> Any:
    return context.dagster_type.typing_type if context.dagster_type else None


def _row_count(loaded: Any) -> int | None:
    """Rows of an input that is already in memory (lazy inputs are not counted)."""
    if isinstance(loaded, pa.Table):
        return loaded.num_rows
    if isinstance(loaded, pl.DataFrame):
        return loaded.height
    if isinstance(loaded, dict):
        counts = [_row_count(value) for value in loaded.values() if value is not None]
        return sum(counts) if counts and None not in counts else None
    return None
