"""IcebergIOManager: one partition-aware IO manager for PyArrow and Polars assets.

Outputs are written with ``append``, ``overwrite`` (of exactly the run's partition slice) or
``upsert``; inputs are read with partition pruning, column selection and time travel.

Example:
    >>> import dagster as dg, pyarrow as pa
    >>> @dg.asset(
    ...     io_manager_key="iceberg",
    ...     partitions_def=dg.DailyPartitionsDefinition(start_date="2024-01-01"),
    ...     metadata={"partition_expr": "ts"},
    ...     kinds={"iceberg"},
    ... )
    ... def events(context) -> pa.Table: ...
    >>> defs = dg.Definitions(assets=[events], resources=create_iceberg_resources())
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import pyarrow as pa
from dagster import (
    ConfigurableIOManager,
    InitResourceContext,
    InputContext,
    MetadataValue,
    OutputContext,
)
from pydantic import Field, ValidationError
from pyiceberg.table import Table

from floe_dagster_iceberg.asset_metadata import OutputDefaults, OutputSettings, output_settings
from floe_dagster_iceberg.asset_tables import DEFAULT_NAMESPACE, asset_table_identifier
from floe_dagster_iceberg.audit import (
    AUDIT_BRANCH_METADATA,
    AuditState,
    PendingAudit,
    audit_state,
    failed_checks_message,
    staged_audits,
    unpublished_message,
)
from floe_dagster_iceberg.engine.branches import on_branch
from floe_dagster_iceberg.engine.config import (
    ArrowStringType,
    PartitionSpecUpdateMode,
    RetryPolicy,
    SchemaUpdateMode,
    UpsertScope,
    WriteConfig,
    WriteMode,
)
from floe_dagster_iceberg.engine.manager import IcebergTableManager
from floe_dagster_iceberg.engine.types import arrow_to_iceberg_schema
from floe_dagster_iceberg.errors import IcebergError, InvalidInputError, TableNotFoundError
from floe_dagster_iceberg.inputs import InputSettings, load_asset_input
from floe_dagster_iceberg.metadata import output_metadata, rows_after_write
from floe_dagster_iceberg.resource import IcebergCatalogResource
from floe_dagster_iceberg.slices import PartitionSlice, build_partition_slice
from floe_dagster_iceberg.type_handlers import PolarsReader, handler_for_output
from floe_dagster_iceberg.version import __version__

__all__ = ["IcebergIOManager", "create_iceberg_resources"]

_MAX_KEYS_IN_SUMMARY = 20


class IcebergIOManager(ConfigurableIOManager):
    """Stores assets in Iceberg tables and loads them back, whatever the frame library.

    Outputs: `pyarrow.Table`, `pyarrow.RecordBatchReader`, `polars.DataFrame`,
    `polars.LazyFrame`, `pandas.DataFrame`, `daft.DataFrame`, `duckdb.DuckDBPyRelation`, and
    types registered with `register_type_handler` (`None` writes nothing). Inputs: the same
    types, chosen by the input's annotation (`pyarrow.Table` when there is none), also as
    `X | None` and `dict[str, X]` (one per partition key).

    Metadata (definition or runtime): `namespace` (or `schema`), `partition_expr` (column, or
    a dict per dimension of a multi-partitioned asset), `partition_spec`, `write_mode`,
    `upsert_options`, `schema_update_mode`, `partition_spec_update_mode`,
    `table_properties`, `write_audit_publish` (stage the write on an audit branch, published
    when the asset's blocking checks pass); on inputs `columns`, `snapshot_id`, `as_of`, `ref`, `incremental`,
    `from_snapshot_id`, `to_snapshot_id`, `string_type`.

    Example:

    ```python
    @dg.asset(
        io_manager_key="iceberg",
        partitions_def=dg.DailyPartitionsDefinition(start_date="2024-01-01"),
        metadata={"partition_expr": "ts"},
        kinds={"iceberg"},
    )
    def events(context) -> pa.Table: ...
    ```
    """

    catalog: IcebergCatalogResource = Field(
        default_factory=IcebergCatalogResource, description="The Iceberg catalog resource"
    )
    namespace: str = Field(
        default=DEFAULT_NAMESPACE, description="Namespace of assets whose key has no prefix"
    )
    write_mode: WriteMode = Field(default=WriteMode.OVERWRITE, description="Default write mode")
    schema_update_mode: SchemaUpdateMode = Field(default=SchemaUpdateMode.ADDITIVE)
    partition_spec_update_mode: PartitionSpecUpdateMode = Field(
        default=PartitionSpecUpdateMode.UPDATE
    )
    upsert_scope: UpsertScope = Field(
        default=UpsertScope.PARTITION,
        description="Match upsert keys in the run's partitions only, or across the table",
    )
    string_type: ArrowStringType = Field(
        default=ArrowStringType.LARGE_STRING,
        description="Arrow type of string/binary columns on input: 'large_string' (large_binary) "
        "or 'string' (binary), whichever engine wrote the files",
    )
    polars_reader: PolarsReader = Field(
        default=PolarsReader.NATIVE,
        description="Reader of polars.LazyFrame inputs: 'native' (Polars') or 'pyiceberg'",
    )
    write_audit_publish: bool = Field(
        default=False,
        description="Stage every asset's write on an audit branch, published when its blocking "
        "checks pass (per asset: metadata write_audit_publish)",
    )

    # ------------------------------------------------------------------ outputs

    def handle_output(self, context: OutputContext, obj: Any) -> None:
        if obj is None:
            context.log.info("Output is None: nothing written to Iceberg.")
            return
        metadata = _merged_metadata(context)
        identifier = self._identifier(context.asset_key.path, metadata)
        table_name = ".".join(identifier)
        data = handler_for_output(obj, table_name).to_arrow(obj, table_name)
        manager = self.catalog.get_manager(logger=context.log)
        existing = _load_if_exists(manager, identifier)
        lineage = self.catalog.lineage().start_write(context, existing)
        try:
            settings = output_settings(metadata, self.output_defaults(), table_name)
            audit = (
                self._pending_audit(context, identifier) if settings.write_audit_publish else None
            )
            column_types = _column_types(existing, data.schema)
            partition_slice = self._output_slice(context, metadata, column_types, table_name)
            config = self._write_config(context, settings, partition_slice, table_name, audit)
            if partition_slice is not None:
                data = _collect(data)
            result = manager.write(existing if existing is not None else identifier, data, config)
        except Exception as error:
            lineage.fail(error)
            raise
        table = manager.committed_table(identifier) or manager.load_table(identifier)
        if config.branch is not None:
            table = on_branch(table, config.branch, config.fork_from)
        lineage.complete_write(table, result, config.mode)
        context.log.info(
            f"Iceberg {config.mode.value} of {table_name}"
            + (f" [{partition_slice.description}]" if partition_slice else "")
            + (f" on branch {config.branch!r}" if config.branch else "")
            + f": snapshot {result.snapshot_id}, +{result.rows_added} / -{result.rows_deleted} rows, "
            f"{result.commit_attempts} commit attempt(s)"
        )
        written = data.num_rows if isinstance(data, pa.Table) else None
        context.add_output_metadata(
            output_metadata(
                catalog_name=self.catalog.name,
                table=table,
                result=result,
                table_rows=manager.count(table, None),
                slice_rows=rows_after_write(manager, table, partition_slice, config.mode, written),
                partition_slice=partition_slice,
                mode=config.mode,
            )
        )
        if audit is not None:
            context.add_output_metadata({AUDIT_BRANCH_METADATA: audit.branch})
            staged = replace(audit, staged_snapshot_id=result.snapshot_id)
            self._publish_unless_checked(context, manager, staged)

    def _pending_audit(self, context: OutputContext, identifier: tuple[str, str]) -> PendingAudit:
        return PendingAudit.of_run(
            context.run_id, context.asset_key, identifier, self.catalog.branch
        )

    def _publish_unless_checked(
        self, context: OutputContext, manager: IcebergTableManager, audit: PendingAudit
    ) -> None:
        instance = context.step_context.instance
        if audit_state(instance, audit.run_id, audit.asset_key) is AuditState.NO_CHECKS:
            audit.publish(manager)
            return
        context.log.info(
            f"Write of {'.'.join(audit.identifier)} staged on branch {audit.branch!r}: it is "
            f"published into {audit.into!r} when the asset's blocking checks pass."
        )

    def teardown_after_execution(self, context: InitResourceContext) -> None:
        """Publish the audited writes of the run whose checks all ran and none blocked."""
        run, instance = context.dagster_run, context.instance
        if run is None or instance is None:
            return
        manager = None
        for audit in staged_audits(instance, run.run_id, self.catalog.name, self.catalog.branch):
            state = audit_state(instance, run.run_id, audit.asset_key)
            if state is AuditState.RUNNING:
                continue
            manager = manager or self.catalog.get_manager(logger=context.log)
            if audit.branch not in manager.load_table(audit.identifier).refs():
                continue  # published (or reported failed) by an earlier step
            if state is AuditState.FAILED:
                context.log.error(failed_checks_message(audit))
                continue
            try:
                audit.publish(manager)
            except IcebergError as error:
                # Dagster reports a teardown error without failing the run: say what to do.
                context.log.error(unpublished_message(audit, error))

    def output_defaults(self) -> OutputDefaults:
        """What outputs use where their metadata says nothing: this IO manager's fields."""
        return OutputDefaults(
            write_mode=self.write_mode,
            schema_update_mode=self.schema_update_mode,
            partition_spec_update_mode=self.partition_spec_update_mode,
            upsert_scope=self.upsert_scope,
            write_audit_publish=self.write_audit_publish,
        )

    def _write_config(
        self,
        context: OutputContext,
        settings: OutputSettings,
        partition_slice: PartitionSlice | None,
        table_name: str,
        audit: PendingAudit | None,
    ) -> WriteConfig:
        spec = settings.partition_spec or (partition_slice.spec if partition_slice else None)
        try:
            return WriteConfig(
                mode=settings.mode,
                row_filter=partition_slice.iceberg if partition_slice else None,
                row_filter_description=partition_slice.description if partition_slice else None,
                schema_update_mode=settings.schema_update_mode,
                partition_spec=spec,
                partition_spec_update_mode=settings.partition_spec_update_mode,
                table_properties=settings.table_properties,
                snapshot_properties=_snapshot_properties(context),
                idempotency_key=_idempotency_key(context),
                join_cols=settings.upsert.join_cols,
                when_matched_update_all=settings.upsert.when_matched_update_all,
                when_not_matched_insert_all=settings.upsert.when_not_matched_insert_all,
                upsert_scope=settings.upsert.scope,
                change_capture=settings.upsert.change_capture,
                retry=RetryPolicy(max_attempts=self.catalog.max_commit_attempts),
                branch=audit.branch if audit else self.catalog.branch,
                fork_from=audit.fork_from if audit else (),
            )
        except ValidationError as error:
            problems = "; ".join(e["msg"] for e in error.errors())
            raise InvalidInputError(f"Asset {table_name}: {problems}") from None

    def _output_slice(
        self,
        context: OutputContext,
        metadata: Mapping[str, Any],
        column_types: Mapping[str, Any],
        table_name: str,
    ) -> PartitionSlice | None:
        if not context.has_asset_partitions:
            return None
        return build_partition_slice(
            asset=table_name,
            partitions_def=context.asset_partitions_def,
            partition_keys=list(context.asset_partition_keys),
            partition_expr=metadata.get("partition_expr"),
            column_types=column_types,
        )

    # ------------------------------------------------------------------ inputs

    def load_input(self, context: InputContext) -> Any:
        settings = InputSettings(self.namespace, self.string_type, self.polars_reader)
        return load_asset_input(context, self.catalog, settings)

    # ------------------------------------------------------------------ helpers

    def _identifier(
        self, asset_key_path: list[str], metadata: Mapping[str, Any]
    ) -> tuple[str, str]:
        return asset_table_identifier(asset_key_path, dict(metadata), self.namespace)


# Dagster shows the class docstring as the resource's description, in markdown: unindented.
IcebergIOManager.__doc__ = inspect.cleandoc(IcebergIOManager.__doc__ or "")


def create_iceberg_resources(
    catalog: IcebergCatalogResource | None = None,
    *,
    namespace: str = DEFAULT_NAMESPACE,
    write_mode: WriteMode | str = WriteMode.OVERWRITE,
    schema_update_mode: SchemaUpdateMode | str = SchemaUpdateMode.ADDITIVE,
) -> dict[str, Any]:
    """The resources a project needs: the IO manager under ``"iceberg"`` and the catalog.

    Wrap the project's definitions in
    :func:`~floe_dagster_iceberg.validation.validate_iceberg_definitions` so that a mistake in
    an asset's Iceberg metadata fails when the definitions load, not in a run.

    Example:
        >>> import dagster as dg
        >>> from floe_dagster_iceberg import validate_iceberg_definitions
        >>> resources = create_iceberg_resources()
        >>> sorted(resources)
        ['iceberg', 'iceberg_catalog']
        >>> defs = validate_iceberg_definitions(dg.Definitions(assets=[], resources=resources))
    """
    catalog = catalog or IcebergCatalogResource()
    io_manager = IcebergIOManager(
        catalog=catalog,
        namespace=namespace,
        write_mode=WriteMode(write_mode),
        schema_update_mode=SchemaUpdateMode(schema_update_mode),
    )
    return {"iceberg": io_manager, "iceberg_catalog": catalog}


# ---------------------------------------------------------------------- module helpers


def _merged_metadata(context: OutputContext) -> dict[str, Any]:
    metadata = dict(context.definition_metadata or {})
    for key, value in (context.output_metadata or {}).items():
        metadata[key] = value.value if isinstance(value, MetadataValue) else value
    return {k: (v.value if isinstance(v, MetadataValue) else v) for k, v in metadata.items()}


def _load_if_exists(manager: IcebergTableManager, identifier: tuple[str, str]) -> Table | None:
    try:
        return manager.load_table(identifier)
    except TableNotFoundError:
        return None


def _column_types(table: Table | None, data_schema: pa.Schema | None) -> dict[str, Any]:
    types: dict[str, Any] = {}
    if data_schema is not None:
        types.update({f.name: f.field_type for f in arrow_to_iceberg_schema(data_schema).fields})
    if table is not None:
        types.update({f.name: f.field_type for f in table.schema().fields})
    return types


def _collect(data: pa.Table | pa.RecordBatchReader) -> pa.Table:
    return data.read_all() if isinstance(data, pa.RecordBatchReader) else data


def _snapshot_properties(context: OutputContext) -> dict[str, str]:
    properties = {
        "dagster.run-id": context.run_id,
        "dagster.asset-key": context.asset_key.to_user_string(),
        "floe.library-version": __version__,
    }
    if context.has_asset_partitions:
        keys = list(context.asset_partition_keys)
        if len(keys) > _MAX_KEYS_IN_SUMMARY:
            properties["dagster.partition-key-range"] = f"{keys[0]}...{keys[-1]} ({len(keys)} keys)"
        else:
            properties["dagster.partition-keys"] = ",".join(str(k) for k in keys)
    version = context.version
    if version:
        properties["dagster.code-version"] = str(version)
    return properties


def _idempotency_key(context: OutputContext) -> str:
    """Same run, asset and partitions: a retried step of one run, never a new run."""
    keys = sorted(context.asset_partition_keys) if context.has_asset_partitions else []
    identity = "\n".join([context.run_id, context.asset_key.to_user_string(), *map(str, keys)])
    return hashlib.sha256(identity.encode()).hexdigest()[:32]
