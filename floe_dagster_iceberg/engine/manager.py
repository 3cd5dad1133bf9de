"""IcebergTableManager: the engine that turns intents into PyIceberg transactions.

It knows nothing of Dagster. Every write is ONE catalog commit (schema evolution, spec
evolution, properties and data together), retried on conflicts against the refreshed table.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import (
    NoSuchTableError,
    TableAlreadyExistsError,
)
from pyiceberg.expressions import AlwaysTrue, BooleanExpression
from pyiceberg.table import Table
from pyiceberg.table.refs import MAIN_BRANCH

from floe_dagster_iceberg.engine import maintenance
from floe_dagster_iceberg.engine.attempt import MetadataChanges, WrittenFiles
from floe_dagster_iceberg.engine.branches import (
    PublishResult,
    on_branch,
    publish_branch,
    remove_branches,
    stale_branches,
)
from floe_dagster_iceberg.engine.change_capture import latest_changes
from floe_dagster_iceberg.engine.commit import CommitLoop, annotate_write_span
from floe_dagster_iceberg.engine.config import (
    ArrowStringType,
    ChangeCapture,
    PartitionField,
    RetryPolicy,
    SchemaChange,
    SchemaVersion,
    SnapshotInfo,
    TableConfig,
    UpsertScope,
    WriteConfig,
    WriteMode,
    WriteResult,
)
from floe_dagster_iceberg.engine.identifiers import table_identifier
from floe_dagster_iceberg.engine.maintenance import spark as spark_maintenance
from floe_dagster_iceberg.engine.maintenance.engines import (
    MaintenanceEngineConfig,
    SparkEngineConfig,
)
from floe_dagster_iceberg.engine.outages import connection_error
from floe_dagster_iceberg.engine.partitioning import (
    build_partition_spec,
    build_sort_order,
    partition_fields_of,
)
from floe_dagster_iceberg.engine.properties import WRITE_MODE_PROPERTY
from floe_dagster_iceberg.engine.scan import (
    ReadRequest,
    current_snapshot_id,
    read_batches,
    read_table,
    snapshot_id_for,
    snapshot_read,
)
from floe_dagster_iceberg.engine.schema_evolution import apply_schema_changes
from floe_dagster_iceberg.engine.tables import config_differences, ensure_namespace, schema_history
from floe_dagster_iceberg.engine.telemetry import Telemetry
from floe_dagster_iceberg.engine.types import iceberg_schema_from_columns, spark_unreadable_columns
from floe_dagster_iceberg.engine.write import StagedWrite, WriteData, stage_write
from floe_dagster_iceberg.errors import (
    IcebergError,
    InvalidInputError,
    TableNotFoundError,
)

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider

    from floe_dagster_iceberg.engine.maintenance import (
        CompactionResult,
        DanglingDeletesResult,
        ExpireSnapshotsResult,
        OrphanFilesResult,
        RewriteManifestsResult,
        TableHealth,
    )

__all__ = ["CreateTableResult", "IcebergTableManager", "TableRef"]

log = logging.getLogger("floe_dagster_iceberg")

TableRef = Table | str | tuple[str, ...]
"""A table given as a loaded PyIceberg table, ``"namespace.table"`` or ``("namespace", "table")``."""
_Result = TypeVar("_Result")


@dataclass(frozen=True)
class CreateTableResult:
    """The table, whether this call created it, and how an existing table differs from the config."""

    table: Table
    created: bool
    differences: tuple[str, ...] = ()


class IcebergTableManager:
    """Creates, evolves, writes, scans and maintains Iceberg tables of one catalog.

    Example:
        >>> from pyiceberg.catalog.sql import SqlCatalog
        >>> import pyarrow as pa, tempfile
        >>> tmp = tempfile.mkdtemp()
        >>> catalog = SqlCatalog("floe", uri=f"sqlite:///{tmp}/c.db", warehouse=f"file://{tmp}")
        >>> manager = IcebergTableManager(catalog)
        >>> result = manager.write("demo.numbers", pa.table({"n": [1, 2, 3]}))
        >>> manager.scan("demo.numbers").num_rows
        3
    """

    def __init__(
        self,
        catalog: Catalog,
        *,
        retry: RetryPolicy | None = None,
        tracer_provider: TracerProvider | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        self.catalog = catalog
        self.retry = retry or RetryPolicy()
        self.telemetry = Telemetry(tracer_provider)
        self.log = logger or log
        self._commits = CommitLoop(catalog, self.telemetry, self.log)

    # ------------------------------------------------------------------ tables

    @staticmethod
    def identifier(table: TableRef) -> tuple[str, str]:
        """The validated ``(namespace, table)`` of a table reference."""
        if isinstance(table, Table):
            *namespace, name = table.name()
            return (".".join(namespace), name)
        parts = tuple(table.rsplit(".", 1)) if isinstance(table, str) else tuple(table)
        if len(parts) < 2:
            raise InvalidInputError(
                f"Table {table!r} has no namespace; write it as 'namespace.table'."
            )
        *namespace, name = parts
        return table_identifier(".".join(namespace), name)

    def load_table(self, table: TableRef) -> Table:
        """Load the table's current metadata from the catalog."""
        identifier = self.identifier(table)
        try:
            with self._reaching(f"loading table '{'.'.join(identifier)}'"):
                return self.catalog.load_table(identifier)
        except NoSuchTableError:
            raise TableNotFoundError(
                f"Table '{'.'.join(identifier)}' does not exist in catalog "
                f"'{self.catalog.name}'; materialize its asset or create it first."
            ) from None

    def committed_table(self, table: TableRef) -> Table | None:
        """The table as this manager's last commit to it left it (no catalog request), if any.

        Example:
            >>> import pyarrow as pa, tempfile
            >>> from pyiceberg.catalog.sql import SqlCatalog
            >>> tmp = tempfile.mkdtemp()
            >>> catalog = SqlCatalog("doc", uri=f"sqlite:///{tmp}/c.db", warehouse=f"file://{tmp}")
            >>> manager = IcebergTableManager(catalog)
            >>> result = manager.write("sales.orders", pa.table({"id": [1, 2]}))
            >>> manager.committed_table("sales.orders").current_snapshot().snapshot_id == result.snapshot_id
            True
        """
        return self._commits.committed.get(self.identifier(table))

    def table_exists(self, table: TableRef) -> bool:
        identifier = self.identifier(table)
        with self._reaching(f"looking up table '{'.'.join(identifier)}'"):
            return self.catalog.table_exists(identifier)

    @contextmanager
    def _reaching(self, action: str, writing: bool = False) -> Iterator[None]:
        """Turn an outage or a refused login of the catalog or storage into a clear error."""
        try:
            yield
        except Exception as error:
            translated = connection_error(error, self.catalog.properties, action, writing=writing)
            if translated is None:
                raise
            raise translated from None

    def ensure_namespace(self, namespace: str) -> None:
        """Create the namespace (and its parents) if missing."""
        ensure_namespace(self.catalog, namespace)

    def create_table(self, config: TableConfig, if_not_exists: bool = True) -> CreateTableResult:
        """Create a table (and its namespace); return the existing one, with its differences, if any.

        An existing table is never changed: compare ``result.differences`` and evolve explicitly.

        Example:
            >>> import pyarrow as pa, tempfile
            >>> from pyiceberg.catalog.sql import SqlCatalog
            >>> tmp = tempfile.mkdtemp()
            >>> catalog = SqlCatalog("doc", uri=f"sqlite:///{tmp}/c.db", warehouse=f"file://{tmp}")
            >>> manager = IcebergTableManager(catalog)
            >>> from floe_dagster_iceberg.engine.config import ColumnSpec, TableSchema
            >>> config = TableConfig(
            ...     namespace="sales",
            ...     name="orders",
            ...     schema=TableSchema(columns=[ColumnSpec(name="id", type="long")]),
            ... )
            >>> manager.create_table(config).created, manager.create_table(config).created
            (True, False)
        """
        identifier = config.identifier
        with self.telemetry.span("create", identifier) as span:
            schema = iceberg_schema_from_columns(config.table_schema)
            spec = build_partition_spec(schema, config.partition_spec)
            sort_order = build_sort_order(schema, config.sort_order)
            self.ensure_namespace(config.namespace)
            try:
                # Some REST catalogs answer a second create with the existing table, so look first.
                if self.catalog.table_exists(identifier):
                    raise TableAlreadyExistsError(".".join(identifier))
                table = self.catalog.create_table(
                    identifier,
                    schema=schema,
                    location=config.location,
                    partition_spec=spec,
                    sort_order=sort_order,
                    properties=config.properties,
                )
            except TableAlreadyExistsError:
                if not if_not_exists:
                    raise IcebergError(
                        f"Table '{'.'.join(identifier)}' already exists; pass "
                        "if_not_exists=True to reuse it."
                    ) from None
                table = self.load_table(identifier)
                differences = config_differences(config, table)
                span.set_attribute("iceberg.created", False)
                return CreateTableResult(table, created=False, differences=differences)
            span.set_attribute("iceberg.created", True)
            log.info("Created Iceberg table %s at %s", ".".join(identifier), table.location())
            return CreateTableResult(table, created=True)

    # ------------------------------------------------------------------ schema

    def evolve_schema(self, table: TableRef, changes: Sequence[SchemaChange]) -> SchemaVersion:
        """Apply safe schema changes in one commit and return the new schema version.

        Allowed: add optional column, widen int->long / float->double / decimal precision up,
        rename, make optional, set doc. Anything else raises ``SchemaEvolutionError``.

        Example:
            >>> import pyarrow as pa, tempfile
            >>> from pyiceberg.catalog.sql import SqlCatalog
            >>> tmp = tempfile.mkdtemp()
            >>> catalog = SqlCatalog("doc", uri=f"sqlite:///{tmp}/c.db", warehouse=f"file://{tmp}")
            >>> manager = IcebergTableManager(catalog)
            >>> _ = manager.write("sales.orders", pa.table({"id": [1]}))
            >>> manager.evolve_schema("sales.orders", [SchemaChange.add_column("email", "string")]).columns
            ('id long', 'email string')
        """
        identifier = self.identifier(table)
        name = ".".join(identifier)

        def stage(
            table: Table, staged: MetadataChanges, _: dict[str, str], __: WrittenFiles
        ) -> StagedWrite:
            with staged.transaction.update_schema() as update:
                applied = apply_schema_changes(name, table.metadata.schema(), changes, update)
            return StagedWrite(changed=bool(applied), schema_changes=tuple(applied))

        with self.telemetry.span("evolve", identifier) as span:
            self._commits.run(identifier, stage, self.retry, create_with=None)
            current = self.schema_history(identifier)[-1]
            span.set_attribute("iceberg.schema_id", current.schema_id)
            return current

    def schema_history(self, table: TableRef) -> list[SchemaVersion]:
        """Every schema of the table, oldest first, with the first snapshot written with it."""
        return schema_history(self.load_table(table))

    # ------------------------------------------------------------------ writes

    def write(
        self,
        table: TableRef,
        data: pa.Table | pa.RecordBatchReader,
        config: WriteConfig | None = None,
    ) -> WriteResult:
        """Write ``data`` in ONE commit: append, overwrite the ``row_filter`` slice, or upsert.

        Creates the table (partitioned by ``config.partition_spec``) when missing, evolves the
        schema per ``config.schema_update_mode`` and merges ``config.table_properties``, all in
        the same commit. Conflicts with concurrent writers are retried against the refreshed
        table; rows are never lost or duplicated.

        Example:
            >>> import pyarrow as pa, tempfile
            >>> from pyiceberg.catalog.sql import SqlCatalog
            >>> tmp = tempfile.mkdtemp()
            >>> catalog = SqlCatalog("doc", uri=f"sqlite:///{tmp}/c.db", warehouse=f"file://{tmp}")
            >>> manager = IcebergTableManager(catalog)
            >>> from pyiceberg.expressions import EqualTo
            >>> day = PartitionField(source_column="day")
            >>> rows = pa.table({"day": ["a", "a", "b"], "n": [1, 2, 3]})
            >>> _ = manager.write("sales.orders", rows, WriteConfig(partition_spec=[day]))
            >>> result = manager.write(
            ...     "sales.orders",
            ...     pa.table({"day": ["a"], "n": [9]}),
            ...     WriteConfig(mode="overwrite", row_filter=EqualTo("day", "a")),
            ... )
            >>> result.operation, result.rows_deleted, result.rows_added
            ('overwrite', 2, 1)
        """
        config = config or WriteConfig()
        identifier = self.identifier(table)
        name = ".".join(identifier)
        if not isinstance(data, pa.Table | pa.RecordBatchReader):
            raise InvalidInputError(
                f"Table '{name}': write() takes a pyarrow.Table or pyarrow.RecordBatchReader, not "
                f"a {type(data).__module__}.{type(data).__qualname__}; convert it first (a Polars "
                "frame with .to_arrow())."
            )
        if config.mode is WriteMode.UPSERT:
            data = data.read_all() if isinstance(data, pa.RecordBatchReader) else data
            # A change batch becomes one row per key once, not once per commit attempt.
            data = latest_changes(name, data, config.join_cols, config.change_capture)
        stream = WriteData(data, name)

        def stage(
            table: Table, changes: MetadataChanges, properties: dict[str, str], files: WrittenFiles
        ) -> StagedWrite:
            return stage_write(name, table, changes, stream, config, properties, files)

        attributes = {"iceberg.write_mode": config.mode.value}
        with (
            self.telemetry.span(_operation_name(config.mode), identifier, attributes) as span,
            self._reaching(f"writing table '{name}'", writing=True),
        ):
            result = self._commits.run(
                identifier,
                stage,
                _with_defaults(config.retry, self.retry),
                create_with=(stream.schema, config),
                snapshot_properties={
                    **config.snapshot_properties,
                    WRITE_MODE_PROPERTY: config.mode.value,
                },
                loaded=table if isinstance(table, Table) else None,
                view=_branch_view(config),
            )
            annotate_write_span(span, result)
        if result.created_table or result.schema_changes:
            self._warn_about_types_other_engines_cannot_read(identifier)
        return result

    def _warn_about_types_other_engines_cannot_read(self, identifier: tuple[str, str]) -> None:
        committed = self._commits.committed.get(identifier)
        columns = spark_unreadable_columns(committed.schema()) if committed else []
        if columns:
            self.log.warning(
                "Table %s has time column(s) %s: Spark refuses the whole table ('Spark does "
                "not support time fields'); PyIceberg, Trino and Flink read it. If Spark must "
                "read this table, store times as strings or as microseconds in a long column.",
                ".".join(identifier),
                columns,
            )

    def upsert(
        self,
        table: TableRef,
        data: pa.Table,
        join_cols: Sequence[str],
        when_matched_update_all: bool = True,
        when_not_matched_insert_all: bool = True,
        scope: UpsertScope | BooleanExpression = UpsertScope.TABLE,
        config: WriteConfig | None = None,
        change_capture: ChangeCapture | None = None,
    ) -> WriteResult:
        """Merge ``data`` into the table on ``join_cols`` in one commit.

        ``scope`` is ``UpsertScope.TABLE`` (match across the table) or an expression for the
        partition slice to match in (rows of other partitions are never touched).
        ``change_capture`` applies ``data`` as a batch of changes: delete markers, versions,
        full sync (see :class:`~floe_dagster_iceberg.engine.config.ChangeCapture`).

        Example:
            >>> import pyarrow as pa, tempfile
            >>> from pyiceberg.catalog.sql import SqlCatalog
            >>> tmp = tempfile.mkdtemp()
            >>> catalog = SqlCatalog("doc", uri=f"sqlite:///{tmp}/c.db", warehouse=f"file://{tmp}")
            >>> manager = IcebergTableManager(catalog)
            >>> _ = manager.write("crm.customers", pa.table({"id": [1, 2], "tier": ["a", "b"]}))
            >>> result = manager.upsert(
            ...     "crm.customers", pa.table({"id": [2, 3], "tier": ["B", "c"]}), join_cols=["id"]
            ... )
            >>> result.rows_updated, result.rows_inserted
            (1, 1)
            >>> changes = pa.table({"id": [1, 3], "tier": ["a", "c"], "op": ["D", "U"]})
            >>> cdc = ChangeCapture(delete_column="op")
            >>> manager.upsert("crm.customers", changes, ["id"], change_capture=cdc).rows_removed
            1
        """
        row_filter = None if isinstance(scope, UpsertScope) else scope
        config = config or WriteConfig()
        base = config.model_dump(exclude={"retry"})
        base.update(
            mode=WriteMode.UPSERT,
            join_cols=tuple(join_cols),
            when_matched_update_all=when_matched_update_all,
            when_not_matched_insert_all=when_not_matched_insert_all,
            row_filter=row_filter if row_filter is not None else base.get("row_filter"),
            upsert_scope=UpsertScope.TABLE
            if isinstance(scope, UpsertScope)
            else UpsertScope.PARTITION,
        )
        if change_capture is not None:
            base["change_capture"] = change_capture
        # write() fills the policy's unset fields from the manager's.
        return self.write(table, data, WriteConfig(**base, retry=config.retry))

    # ------------------------------------------------------------------ reads

    def read(self, table: TableRef, request: ReadRequest) -> pa.Table:
        """The rows ``request`` asks for (see :meth:`scan` and :meth:`scan_appended`).

        Example:
            >>> import pyarrow as pa, tempfile
            >>> from pyiceberg.catalog.sql import SqlCatalog
            >>> tmp = tempfile.mkdtemp()
            >>> catalog = SqlCatalog("doc", uri=f"sqlite:///{tmp}/c.db", warehouse=f"file://{tmp}")
            >>> manager = IcebergTableManager(catalog)
            >>> _ = manager.write("sales.orders", pa.table({"id": [1, 2]}))
            >>> manager.read("sales.orders", ReadRequest(limit=1)).num_rows
            1
        """
        with self._reading(table, request) as (span, loaded):
            result = read_table(loaded, request)
            span.set_attribute("iceberg.rows", result.num_rows)
            return result

    def read_batches(self, table: TableRef, request: ReadRequest) -> pa.RecordBatchReader:
        """Like :meth:`read`, streaming record batches instead of one table."""
        with self._reading(table, request) as (span, loaded):
            span.set_attribute("iceberg.streamed", True)
            return read_batches(loaded, request)

    @contextmanager
    def _reading(self, table: TableRef, request: ReadRequest) -> Iterator[tuple[Any, Table]]:
        """A read's span and catalog errors, and the table it reads."""
        identifier = self.identifier(table)
        with (
            self.telemetry.span("scan", identifier) as span,
            self._reaching(f"reading table '{'.'.join(identifier)}'"),
        ):
            loaded = self._loaded(table)
            _annotate_read(span, loaded, request)
            yield span, loaded

    def scan(
        self,
        table: TableRef,
        row_filter: BooleanExpression | None = None,
        columns: Sequence[str] | None = None,
        snapshot_id: int | None = None,
        as_of: datetime | None = None,
        ref: str | None = None,
        limit: int | None = None,
        string_type: ArrowStringType = ArrowStringType.LARGE_STRING,
    ) -> pa.Table:
        """Read rows as Arrow, optionally filtered, projected and at a past snapshot, time or tag.

        The Arrow schema follows the table's Iceberg schema, whoever wrote the files; strings
        are ``large_string`` unless ``string_type`` says ``string``.

        Example:
            >>> import pyarrow as pa, tempfile
            >>> from pyiceberg.catalog.sql import SqlCatalog
            >>> tmp = tempfile.mkdtemp()
            >>> catalog = SqlCatalog("doc", uri=f"sqlite:///{tmp}/c.db", warehouse=f"file://{tmp}")
            >>> manager = IcebergTableManager(catalog)
            >>> from pyiceberg.expressions import EqualTo
            >>> _ = manager.write("sales.orders", pa.table({"id": [1, 2], "region": ["eu", "us"]}))
            >>> snapshot_id = manager.tag("sales.orders", "v1")
            >>> _ = manager.write("sales.orders", pa.table({"id": [3], "region": ["eu"]}))
            >>> manager.scan("sales.orders", EqualTo("region", "eu"), columns=["id"], ref="v1").to_pylist()
            [{'id': 1}]
        """
        request = ReadRequest(row_filter, columns, snapshot_id, as_of, ref, limit, string_type)
        return self.read(table, request)

    def scan_appended(
        self,
        table: TableRef,
        from_snapshot_id: int | None = None,
        to_snapshot_id: int | None = None,
        row_filter: BooleanExpression | None = None,
        columns: Sequence[str] | None = None,
        string_type: ArrowStringType = ArrowStringType.LARGE_STRING,
    ) -> pa.Table:
        """The rows appended after ``from_snapshot_id`` (exclusive; ``None``: since the first
        snapshot) up to ``to_snapshot_id`` (inclusive; default: the current snapshot).

        Overwrites that removed nothing count as appends; compaction is passed over; a
        snapshot in the range that removed rows is refused with an error naming it.

        Example:
            >>> import pyarrow as pa, tempfile
            >>> from pyiceberg.catalog.sql import SqlCatalog
            >>> tmp = tempfile.mkdtemp()
            >>> catalog = SqlCatalog("doc", uri=f"sqlite:///{tmp}/c.db", warehouse=f"file://{tmp}")
            >>> manager = IcebergTableManager(catalog)
            >>> first = manager.write("sales.orders", pa.table({"id": [1, 2]})).snapshot_id
            >>> _ = manager.write("sales.orders", pa.table({"id": [3]}), WriteConfig(mode="append"))
            >>> manager.scan_appended("sales.orders", from_snapshot_id=first).to_pylist()
            [{'id': 3}]
        """
        request = ReadRequest(
            row_filter,
            columns,
            snapshot_id=to_snapshot_id,
            string_type=string_type,
            incremental=True,
            from_snapshot_id=from_snapshot_id,
        )
        return self.read(table, request)

    def scan_batches(
        self,
        table: TableRef,
        row_filter: BooleanExpression | None = None,
        columns: Sequence[str] | None = None,
        snapshot_id: int | None = None,
        as_of: datetime | None = None,
        ref: str | None = None,
        string_type: ArrowStringType = ArrowStringType.LARGE_STRING,
    ) -> pa.RecordBatchReader:
        """Like :meth:`scan`, streaming record batches instead of one table."""
        request = ReadRequest(row_filter, columns, snapshot_id, as_of, ref, None, string_type)
        return self.read_batches(table, request)

    def snapshot_id_for(
        self, table: TableRef, as_of: datetime | None = None, ref: str | None = None
    ) -> int:
        """The snapshot current at ``as_of``, or the head of tag/branch ``ref``."""
        return snapshot_id_for(self._loaded(table), as_of=as_of, ref=ref)

    def _loaded(self, table: TableRef) -> Table:
        return table if isinstance(table, Table) else self.load_table(table)

    def count(self, table: TableRef, row_filter: BooleanExpression | None = None) -> int:
        """Number of rows in the table, or in the slice ``row_filter`` selects.

        The whole table's rows come from the snapshot summary's ``total-records`` (no scan)
        unless merge-on-read delete files are live: that total counts the rows of data files,
        deleted ones included, so the table is then counted by a scan that applies the deletes.
        """
        loaded = table if isinstance(table, Table) else self.load_table(table)
        snapshot = loaded.current_snapshot()
        if snapshot is None:
            return 0
        summary = snapshot.summary
        total = summary.get("total-records") if summary else None
        deletes = summary.get("total-delete-files") if summary else None
        if row_filter is None and total is not None and deletes in (None, "0"):
            return int(total)
        with self._reaching(f"counting rows of table '{'.'.join(loaded.name())}'"):
            return loaded.scan(
                row_filter=row_filter if row_filter is not None else AlwaysTrue()
            ).count()

    # ------------------------------------------------------------------ history

    def snapshots(self, table: TableRef) -> list[SnapshotInfo]:
        """The table's snapshots, oldest first."""
        loaded = self.load_table(table)
        return [
            SnapshotInfo(
                snapshot_id=s.snapshot_id,
                parent_id=s.parent_snapshot_id,
                timestamp_ms=s.timestamp_ms,
                operation=s.summary.operation.value if s.summary else None,
                summary={
                    k: str(v)
                    for k, v in (s.summary.additional_properties if s.summary else {}).items()
                },
                schema_id=s.schema_id,
            )
            for s in sorted(
                loaded.metadata.snapshots, key=lambda s: (s.timestamp_ms, s.sequence_number or 0)
            )
        ]

    def rollback(self, table: TableRef, snapshot_id: int) -> SnapshotInfo:
        """Make an earlier snapshot (an ancestor of the current one) current again."""
        loaded = self.load_table(table)
        name = ".".join(self.identifier(loaded))
        if loaded.snapshot_by_id(snapshot_id) is None:
            raise TableNotFoundError(f"Table '{name}' has no snapshot {snapshot_id}.")
        with (
            self.telemetry.span("rollback", self.identifier(loaded)),
            loaded.manage_snapshots() as manage,
        ):
            manage.rollback_to_snapshot(snapshot_id)
        return next(s for s in self.snapshots(loaded) if s.snapshot_id == snapshot_id)

    def tag(self, table: TableRef, name: str, snapshot_id: int | None = None) -> int:
        """Tag a snapshot (the current one by default) so it can be read by name and survives expiry."""
        loaded = self.load_table(table)
        target = snapshot_id if snapshot_id is not None else current_snapshot_id(loaded)
        with (
            self.telemetry.span("tag", self.identifier(loaded)),
            loaded.manage_snapshots() as manage,
        ):
            manage.create_tag(target, name)
        return target

    # ------------------------------------------------------------------ branches

    def publish_branch(
        self,
        table: TableRef,
        branch: str,
        into: str = MAIN_BRANCH,
        fork_from: Sequence[str] = (),
        staged_snapshot_id: int | None = None,
    ) -> PublishResult:
        """Publish ``branch`` into ``into`` (``main``) and remove it, in one commit.

        A fast-forward when ``into`` has not moved since the branch forked, else the branch's
        data files re-applied on ``into``'s head (see :mod:`~floe_dagster_iceberg.engine.branches`).
        ``staged_snapshot_id``: the branch head the caller staged; when the branch is gone, the
        publish succeeds only if that snapshot is already on ``into``.

        Example:
            >>> import pyarrow as pa, tempfile
            >>> from pyiceberg.catalog.sql import SqlCatalog
            >>> tmp = tempfile.mkdtemp()
            >>> catalog = SqlCatalog("doc", uri=f"sqlite:///{tmp}/c.db", warehouse=f"file://{tmp}")
            >>> manager = IcebergTableManager(catalog)
            >>> _ = manager.write("sales.orders", pa.table({"id": [1]}), WriteConfig(branch="audit"))
            >>> manager.scan("sales.orders").num_rows
            0
            >>> manager.publish_branch("sales.orders", "audit").snapshots_published
            1
            >>> manager.scan("sales.orders").num_rows, "audit" in manager.load_table("sales.orders").refs()
            (1, False)
        """
        identifier = self.identifier(table)
        attributes = {"iceberg.branch": branch, "iceberg.into": into}
        with (
            self.telemetry.span("publish", identifier, attributes) as span,
            self._reaching(f"publishing branch {branch!r} of table '{'.'.join(identifier)}'"),
        ):
            result = publish_branch(
                self.catalog, identifier, branch, into, fork_from, self.retry, staged_snapshot_id
            )
            if result.snapshot_id is not None:
                span.set_attribute("iceberg.snapshot_id", result.snapshot_id)
        self.log.info(
            "iceberg.publish table=%s branch=%s into=%s snapshot_id=%s fast_forward=%s "
            "already_published=%s",
            result.table,
            branch,
            into,
            result.snapshot_id,
            str(result.fast_forward).lower(),
            str(result.already_published).lower(),
        )
        return result

    def remove_stale_branches(
        self, table: TableRef, prefix: str, older_than: timedelta
    ) -> list[str]:
        """Remove the branches named ``prefix...`` whose head is older than ``older_than``.

        Example:
            >>> import pyarrow as pa, tempfile
            >>> from pyiceberg.catalog.sql import SqlCatalog
            >>> tmp = tempfile.mkdtemp()
            >>> catalog = SqlCatalog("doc", uri=f"sqlite:///{tmp}/c.db", warehouse=f"file://{tmp}")
            >>> manager = IcebergTableManager(catalog)
            >>> _ = manager.write("sales.orders", pa.table({"id": [1]}), WriteConfig(branch="audit-1"))
            >>> manager.remove_stale_branches("sales.orders", "audit-", timedelta(0))
            ['audit-1']
        """
        identifier = self.identifier(table)
        loaded = self.load_table(table)
        cutoff = int((datetime.now().timestamp() - older_than.total_seconds()) * 1000)
        stale = stale_branches(loaded.metadata, prefix, cutoff + 1)
        if not stale:
            return []
        with self.telemetry.span("remove_branches", identifier):
            return remove_branches(self.catalog, identifier, stale)

    # ------------------------------------------------------------------ maintenance

    def compact(
        self,
        table: TableRef,
        target_file_size_bytes: int | None = None,
        min_input_files: int = 2,
        partition_filter: BooleanExpression | None = None,
        engine: MaintenanceEngineConfig | None = None,
    ) -> CompactionResult:
        """Bin-pack small files per partition in one commit, up to ``target_file_size_bytes``
        (default: the table's ``write.target-file-size-bytes``); see
        :mod:`floe_dagster_iceberg.engine.maintenance.compaction`. ``engine``: where it runs
        (default: here; :class:`SparkEngineConfig`: Spark's ``rewrite_data_files``)."""
        if isinstance(engine, SparkEngineConfig):
            return self._maintain(
                "compact",
                "compacting",
                table,
                lambda loaded: spark_maintenance.compact(
                    self.catalog,
                    loaded,
                    engine,
                    target_file_size_bytes=target_file_size_bytes,
                    min_input_files=min_input_files,
                    partition_filter=partition_filter,
                ),
            )
        return self._maintain(
            "compact",
            "compacting",
            table,
            lambda loaded: maintenance.compact(
                self.catalog,
                loaded,
                retry=self.retry,
                target_file_size_bytes=target_file_size_bytes,
                min_input_files=min_input_files,
                partition_filter=partition_filter,
            ),
        )

    def expire_snapshots(
        self,
        table: TableRef,
        older_than: datetime | timedelta | None = None,
        retain_last: int | None = None,
        engine: MaintenanceEngineConfig | None = None,
    ) -> ExpireSnapshotsResult:
        """Expire old snapshots and delete the files only they referenced; defaults: the table's
        ``history.expire.*`` properties (Iceberg's: 5 days, 1 snapshot). ``engine``: where it
        runs (default: here; :class:`SparkEngineConfig`: Spark's ``expire_snapshots``)."""
        if isinstance(engine, SparkEngineConfig):
            return self._maintain(
                "expire",
                "expiring snapshots of",
                table,
                lambda loaded: spark_maintenance.expire_snapshots(
                    self.catalog, loaded, engine, older_than=older_than, retain_last=retain_last
                ),
            )
        return self._maintain(
            "expire",
            "expiring snapshots of",
            table,
            lambda loaded: maintenance.expire_snapshots(
                self.catalog,
                loaded,
                retry=self.retry,
                older_than=older_than,
                retain_last=retain_last,
            ),
        )

    def remove_orphan_files(
        self,
        table: TableRef,
        older_than: timedelta = maintenance.DEFAULT_ORPHAN_AGE,
        dry_run: bool = False,
        engine: MaintenanceEngineConfig | None = None,
    ) -> OrphanFilesResult:
        """Delete files under the table location that no metadata references. ``engine``: where
        it runs (default: here; :class:`SparkEngineConfig`: Spark's ``remove_orphan_files``)."""
        if isinstance(engine, SparkEngineConfig):
            return self._maintain(
                "remove_orphans",
                "removing orphan files of",
                table,
                lambda loaded: spark_maintenance.remove_orphan_files(
                    self.catalog, loaded, engine, older_than=older_than, dry_run=dry_run
                ),
            )
        return self._maintain(
            "remove_orphans",
            "removing orphan files of",
            table,
            lambda loaded: maintenance.remove_orphan_files(
                self.catalog, loaded, older_than=older_than, dry_run=dry_run
            ),
        )

    def remove_dangling_deletes(self, table: TableRef) -> DanglingDeletesResult:
        """Remove the merge-on-read delete files that apply to no live data file, in one
        ``replace`` snapshot; see :mod:`floe_dagster_iceberg.engine.maintenance.dangling`."""
        return self._maintain(
            "remove_dangling_deletes",
            "removing dangling delete files of",
            table,
            lambda loaded: maintenance.remove_dangling_deletes(
                self.catalog, loaded, retry=self.retry
            ),
        )

    def rewrite_manifests(
        self, table: TableRef, engine: MaintenanceEngineConfig | None = None
    ) -> RewriteManifestsResult:
        """Rewrite the current snapshot's manifests into few, well-clustered ones. ``engine``:
        where it runs (default: here; :class:`SparkEngineConfig`: Spark's ``rewrite_manifests``)."""
        if isinstance(engine, SparkEngineConfig):
            return self._maintain(
                "rewrite_manifests",
                "rewriting manifests of",
                table,
                lambda loaded: spark_maintenance.rewrite_manifests(self.catalog, loaded, engine),
            )
        return self._maintain(
            "rewrite_manifests",
            "rewriting manifests of",
            table,
            lambda loaded: maintenance.rewrite_manifests(self.catalog, loaded, retry=self.retry),
        )

    def table_health(
        self, table: TableRef, small_file_threshold_bytes: int | None = None
    ) -> TableHealth:
        """Storage metrics: files, bytes, small files, partitions, rows net of deletes, delete
        files, snapshots, manifests."""
        return self._maintain(
            "health",
            "measuring the health of",
            table,
            lambda loaded: maintenance.table_health(
                self.catalog, loaded, small_file_threshold_bytes=small_file_threshold_bytes
            ),
        )

    def _maintain(
        self, operation: str, action: str, table: TableRef, run: Callable[[Table], _Result]
    ) -> _Result:
        """Run one maintenance action on the freshly loaded table, in its span."""
        identifier = self.identifier(table)
        with (
            self.telemetry.span(operation, identifier) as span,
            self._reaching(f"{action} table '{'.'.join(identifier)}'"),
        ):
            result = run(self.load_table(table))
            _annotate_maintenance(span, result)
            return result

    def partition_fields(self, table: TableRef) -> list[PartitionField]:
        """The table's current (live) partition fields."""
        loaded = self.load_table(table)
        return partition_fields_of(loaded.schema(), loaded.spec())


# ---------------------------------------------------------------------- helpers


def _operation_name(mode: WriteMode) -> str:
    return "upsert" if mode is WriteMode.UPSERT else "write"


def _branch_view(config: WriteConfig) -> Callable[[Table], Table] | None:
    """How a write sees the table: from its branch (None: from ``main``)."""
    branch = config.branch
    if branch is None or branch == MAIN_BRANCH:
        return None
    return lambda table: on_branch(table, branch, config.fork_from)


def _with_defaults(policy: RetryPolicy, defaults: RetryPolicy) -> RetryPolicy:
    """``policy`` with its unset fields taken from ``defaults`` (the manager's policy)."""
    return RetryPolicy(
        **{
            name: value if value is not None else getattr(defaults, name)
            for name, value in policy.model_dump().items()
        }
    )


def _annotate_read(span: Any, table: Table, request: ReadRequest) -> None:
    snapshot = snapshot_read(table, request)
    if snapshot is not None:
        span.set_attribute("iceberg.snapshot_id", snapshot.snapshot_id)


def _annotate_maintenance(span: Any, result: Any) -> None:
    """``iceberg.<metric>`` attributes from a maintenance result's ``as_metrics()``."""
    for key, value in result.as_metrics().items():
        if isinstance(value, bool | int | float | str):
            span.set_attribute(f"iceberg.{key}", value)
