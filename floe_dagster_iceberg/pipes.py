"""Writes by external engines launched through Dagster Pipes, recorded like IO manager writes.

A Spark, Daft or plain PyIceberg job launched with a Pipes client (``PipesSubprocessClient``,
``PipesK8sClient``, Databricks, EMR, ...) commits to an Iceberg table itself and reports the
snapshot with :func:`floe_dagster_iceberg_pipes.report_iceberg_snapshot`. The asset that
launched it returns :func:`iceberg_pipes_results`: each reported snapshot is read from the
catalog and becomes a materialization with the metadata of an ``IcebergIOManager`` write
(rows, schema, table name, snapshot id, what the commit added and deleted, the partition's
rows), and an OpenLineage run of the asset with the table as output at that snapshot.

Example:
    >>> import dagster as dg
    >>> from floe_dagster_iceberg import IcebergCatalogResource
    >>> @dg.asset(key_prefix="sales", kinds={"iceberg", "spark"})
    ... def orders(
    ...     context: dg.AssetExecutionContext,
    ...     pipes_subprocess_client: dg.PipesSubprocessClient,
    ...     iceberg_catalog: IcebergCatalogResource,
    ... ):
    ...     invocation = pipes_subprocess_client.run(
    ...         context=context, command=["python", "load_orders.py"]
    ...     )
    ...     return iceberg_pipes_result(context, invocation, iceberg_catalog)
"""

from collections.abc import Iterable, Mapping
from typing import Any

import dagster as dg
from pyiceberg.table import Table

from floe_dagster_iceberg.engine.config import WriteResult
from floe_dagster_iceberg.engine.history import write_result
from floe_dagster_iceberg.engine.manager import IcebergTableManager
from floe_dagster_iceberg.errors import InvalidInputError
from floe_dagster_iceberg.jobs.selection import iceberg_asset_tables
from floe_dagster_iceberg.lineage.dagster_context import parent_run
from floe_dagster_iceberg.metadata import rows_after_write
from floe_dagster_iceberg.resource import IcebergCatalogResource
from floe_dagster_iceberg.slices import PartitionSlice, build_partition_slice
from floe_dagster_iceberg.snapshot_metadata import snapshot_metadata, write_mode_of
from floe_dagster_iceberg_pipes import (
    PREVIOUS_SNAPSHOT_ID_KEY,
    REPORT_KEYS,
    SNAPSHOT_ID_KEY,
    TABLE_KEY,
)

__all__ = ["PipesResult", "iceberg_pipes_result", "iceberg_pipes_results"]

PipesResult = dg.MaterializeResult | dg.AssetCheckResult
"""What a Pipes invocation reports: materializations and asset check results."""

ExecutionContext = dg.AssetExecutionContext | dg.OpExecutionContext


def iceberg_pipes_result(
    context: ExecutionContext,
    invocation: dg.PipesClientCompletedInvocation | Iterable[PipesResult],
    catalog: IcebergCatalogResource,
) -> dg.MaterializeResult:
    """The materialization of a Pipes invocation of one asset, its reported Iceberg snapshot
    recorded the way an ``IcebergIOManager`` write is; return it from the asset.

    The asset check results the job reported come with it, as with the Pipes client's
    ``get_materialize_result()``. For a step that materializes several assets use
    :func:`iceberg_pipes_results`.

    Example:

    ```python
    invocation = pipes_subprocess_client.run(context=context, command=["python", "job.py"])
    return iceberg_pipes_result(context, invocation, iceberg_catalog)
    ```
    """
    results = iceberg_pipes_results(context, invocation, catalog)
    materializations = [r for r in results if isinstance(r, dg.MaterializeResult)]
    if len(materializations) != 1:
        raise InvalidInputError(
            f"Asset {_asset_names(context)}: the external job reported {len(materializations)} "
            "materializations, so there is no single result; yield from "
            "iceberg_pipes_results(...) instead."
        )
    (materialization,) = materializations
    checks = [r for r in results if isinstance(r, dg.AssetCheckResult)]
    return dg.MaterializeResult(
        asset_key=materialization.asset_key,
        metadata=materialization.metadata,
        check_results=[*materialization.check_results, *checks],
        data_version=materialization.data_version,
        tags=materialization.tags,
    )


def iceberg_pipes_results(
    context: ExecutionContext,
    invocation: dg.PipesClientCompletedInvocation | Iterable[PipesResult],
    catalog: IcebergCatalogResource,
) -> list[PipesResult]:
    """The results of a Pipes invocation, with every reported Iceberg snapshot recorded the way
    an ``IcebergIOManager`` write is: its metadata, and OpenLineage START and COMPLETE events.

    ``invocation`` is what the Pipes client's ``run`` returned (or its ``get_results()``). A
    materialization reported with ``report_iceberg_snapshot`` gets the metadata of its snapshot,
    read from ``catalog`` (which must be the catalog the job committed to), plus the metadata
    the job reported itself; other results are returned unchanged. For a partitioned asset
    with a ``partition_expr`` the partition's rows are counted as for an IO manager write.
    Yield from the list in a multi-asset (or an asset); :func:`iceberg_pipes_result` gives the
    one result of a single asset.

    Example:

    ```python
    invocation = pipes_subprocess_client.run(context=context, command=["python", "job.py"])
    yield from iceberg_pipes_results(context, invocation, iceberg_catalog)
    ```
    """
    results = (
        invocation.get_results()
        if isinstance(invocation, dg.PipesClientCompletedInvocation)
        else list(invocation)
    )
    manager = catalog.get_manager(logger=context.log)
    return [
        _recorded(context, result, catalog, manager)
        if isinstance(result, dg.MaterializeResult) and _is_report(result.metadata)
        else result
        for result in results
    ]


def _asset_names(context: ExecutionContext) -> str:
    try:
        return ", ".join(key.to_user_string() for key in context.selected_asset_keys)
    except Exception:
        return context.op_def.name


def _is_report(metadata: Mapping[str, Any] | None) -> bool:
    return bool(metadata) and SNAPSHOT_ID_KEY in metadata and TABLE_KEY in metadata


def _value(value: Any) -> Any:
    return value.value if isinstance(value, dg.MetadataValue) else value


def _recorded(
    context: ExecutionContext,
    reported: dg.MaterializeResult,
    catalog: IcebergCatalogResource,
    manager: IcebergTableManager,
) -> dg.MaterializeResult:
    """The reported materialization with the metadata of its snapshot; lineage sent."""
    raw = {key: _value(value) for key, value in (reported.metadata or {}).items()}
    table_name = str(raw[TABLE_KEY])
    asset_key = reported.asset_key or context.asset_key
    lineage = catalog.lineage().run(asset_key.to_user_string(), "ASSET", parent_run(context))
    lineage.start()
    try:
        table = manager.load_table(table_name)
        result = write_result(
            table, int(raw[SNAPSHOT_ID_KEY]), _optional_int(raw.get(PREVIOUS_SNAPSHOT_ID_KEY))
        )
        _warn_if_elsewhere(context, asset_key, table_name)
        partition_slice = _partition_slice(context, asset_key, table)
        mode = write_mode_of(result.operation)
        metadata = snapshot_metadata(
            catalog_name=catalog.name,
            table=table,
            result=result,
            partition_slice=partition_slice,
            slice_rows=rows_after_write(manager, table, partition_slice, mode, None),
        )
    except Exception as error:
        lineage.fail(error)
        raise
    lineage.complete_write(table, result, mode)
    _log(context, asset_key, table, result, partition_slice)
    extra = {
        key: value for key, value in (reported.metadata or {}).items() if key not in REPORT_KEYS
    }
    return dg.MaterializeResult(
        asset_key=reported.asset_key,
        metadata={**extra, **metadata},
        check_results=reported.check_results,
        data_version=reported.data_version,
        tags=reported.tags,
    )


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _asset_spec(context: ExecutionContext, asset_key: dg.AssetKey) -> dg.AssetSpec | None:
    try:
        return context.assets_def.get_asset_spec(asset_key)
    except Exception:
        return None


def _warn_if_elsewhere(context: ExecutionContext, asset_key: dg.AssetKey, table_name: str) -> None:
    """A report on a table other than the asset's: checks and the sensor would read the other."""
    spec = _asset_spec(context, asset_key)
    if spec is None:
        return
    mapped = iceberg_asset_tables([spec], io_manager_key=None).get(asset_key)
    if mapped is not None and mapped != table_name:
        context.log.warning(
            f"Asset {asset_key.to_user_string()} reported a snapshot of table '{table_name}', but "
            f"its Iceberg health checks and observation sensor read table '{mapped}'. Give the "
            f"asset the table's namespace as key prefix or metadata={{'namespace': "
            f"'{table_name.rpartition('.')[0]}'}}."
        )


def _partition_slice(
    context: ExecutionContext, asset_key: dg.AssetKey, table: Table
) -> PartitionSlice | None:
    """The run's partition slice, when the asset is partitioned and has a ``partition_expr``."""
    spec = _asset_spec(context, asset_key)
    partitions_def = context.assets_def.partitions_def if spec is not None else None
    if spec is None or partitions_def is None:
        return None
    partition_expr = _value((spec.metadata or {}).get("partition_expr"))
    if partition_expr is None:
        return None
    try:
        return build_partition_slice(
            asset=".".join(table.name()),
            partitions_def=partitions_def,
            partition_keys=list(context.partition_keys),
            partition_expr=partition_expr,
            column_types={f.name: f.field_type for f in table.schema().fields},
        )
    except InvalidInputError as error:
        context.log.warning(f"{error} The partition's rows are not recorded.")
        return None


def _log(
    context: ExecutionContext,
    asset_key: dg.AssetKey,
    table: Table,
    result: WriteResult,
    partition_slice: PartitionSlice | None,
) -> None:
    context.log.info(
        f"Iceberg {result.operation} of {'.'.join(table.name())} reported by the external job of "
        f"{asset_key.to_user_string()}"
        + (f" [{partition_slice.description}]" if partition_slice else "")
        + f": snapshot {result.snapshot_id}, +{result.rows_added} / -{result.rows_deleted} rows"
    )
