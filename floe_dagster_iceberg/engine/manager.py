"""IcebergTableManager: the engine that turns intents into PyIceberg transactions.

It knows nothing of Dagster. Every write is ONE catalog commit (schema evolution, spec
evolution, properties and data together), retried on conflicts against the refreshed table.
"""

from __future__ import annotations

import itertools
import logging
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import (
    CommitFailedException,
    CommitStateUnknownException,
    NoSuchTableError,
    TableAlreadyExistsError,
    ValidationException,
)
from pyiceberg.expressions import AlwaysFalse, AlwaysTrue, And, BooleanExpression, Not, Or
from pyiceberg.expressions.visitors import bind
from pyiceberg.io.pyarrow import expression_to_pyarrow
from pyiceberg.manifest import DataFile
from pyiceberg.schema import Schema
from pyiceberg.table import Table, Transaction
from pyiceberg.table.metadata import TableMetadata
from pyiceberg.table.snapshots import Operation, Snapshot
from pyiceberg.types import DoubleType, FloatType

from floe_dagster_iceberg.engine import maintenance
from floe_dagster_iceberg.engine._pyiceberg import transaction_table
from floe_dagster_iceberg.engine.commit import (
    MetadataChanges as _MetadataChanges,
)
from floe_dagster_iceberg.engine.commit import (
    PendingCommit,
    RetrySchedule,
    resolve_retry,
    send,
)
from floe_dagster_iceberg.engine.commit import (
    WrittenFiles as _WrittenFiles,
)
from floe_dagster_iceberg.engine.config import (
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
from floe_dagster_iceberg.engine.data_files import write_batches, write_data_files
from floe_dagster_iceberg.engine.identifiers import table_identifier
from floe_dagster_iceberg.engine.outages import connection_error
from floe_dagster_iceberg.engine.partitioning import (
    build_partition_spec,
    build_sort_order,
    partition_fields_of,
    plan_spec_update,
)
from floe_dagster_iceberg.engine.properties import (
    FORMAT_VERSION,
    RESERVED_PROPERTIES,
    WRITABLE_FORMAT_VERSIONS,
)
from floe_dagster_iceberg.engine.schema_evolution import (
    apply_schema_changes,
    conform_to_schema,
    plan_schema_update,
)
from floe_dagster_iceberg.engine.slice_files import files_in_slice, rows_outside
from floe_dagster_iceberg.engine.snapshot import FileChange, FilesGoneError, produce_snapshot
from floe_dagster_iceberg.engine.telemetry import Telemetry, record_error
from floe_dagster_iceberg.engine.types import (
    arrow_to_iceberg_schema,
    iceberg_schema_from_columns,
    type_to_string,
)
from floe_dagster_iceberg.errors import (
    CommitConflictError,
    IcebergError,
    InvalidInputError,
    PartitionMismatchError,
    TableNotFoundError,
)
from floe_dagster_iceberg.version import __version__

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider

    from floe_dagster_iceberg.engine.maintenance import (
        CompactionResult,
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

WRITE_ID_PROPERTY = "floe.write-id"
WRITER_PROPERTY = "floe.writer"
IDEMPOTENCY_PROPERTY = "floe.idempotency-key"
_SUMMARY_TOTALS = {
    "rows_added": "added-records",
    "rows_deleted": "deleted-records",
    "files_added": "added-data-files",
    "files_deleted": "deleted-data-files",
    "bytes_added": "added-files-size",
    "bytes_deleted": "removed-files-size",
}


def _is_retryable(error: Exception) -> bool:
    if isinstance(
        error,
        CommitFailedException | ValidationException | TableAlreadyExistsError | FilesGoneError,
    ):
        return True
    # SQLite refuses a commit while another process holds its write lock: nothing was committed.
    return type(error).__name__ == "OperationalError" and "locked" in str(error)


@dataclass(frozen=True)
class CreateTableResult:
    """The table, whether this call created it, and how an existing table differs from the config."""

    table: Table
    created: bool
    differences: tuple[str, ...] = ()


@dataclass
class _Staged:
    """What one attempt staged on its transaction."""

    changed: bool
    schema_changes: tuple[str, ...] = ()
    rows_updated: int = 0
    rows_inserted: int = 0
    rows_unchanged: int = 0
    files_rewritten: int = 0
    already_committed: Snapshot | None = None
    commit: PendingCommit | None = None
    added_paths: frozenset[str] = frozenset()


_Stage = Callable[[Table, "_MetadataChanges", dict[str, str], "_WrittenFiles"], _Staged]


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
        levels = namespace.split(".")
        for depth in range(1, len(levels) + 1):
            level = tuple(levels[:depth])
            try:
                self.catalog.create_namespace_if_not_exists(level)
            except Exception:
                # Concurrent writers race to create it; a SQL catalog then raises its database's
                # IntegrityError instead of NamespaceAlreadyExistsError. Losing that race is fine.
                if not self.catalog.namespace_exists(level):
                    raise

    def create_table(self, config: TableConfig, if_not_exists: bool = True) -> CreateTableResult:
        """Create a table (and its namespace); return the existing one, with its differences, if any.

        An existing table is never changed: compare ``result.differences`` and evolve explicitly.

        Example:
            >>> # manager.create_table(TableConfig(namespace="sales", name="orders", schema=...))
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
                differences = _config_differences(config, table)
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
            >>> # manager.evolve_schema("sales.orders", [SchemaChange.add_column("email", "string")])
        """
        identifier = self.identifier(table)
        name = ".".join(identifier)

        def stage(
            table: Table, staged: _MetadataChanges, _: dict[str, str], __: _WrittenFiles
        ) -> _Staged:
            with staged.transaction.update_schema() as update:
                applied = apply_schema_changes(name, table.metadata.schema(), changes, update)
            return _Staged(changed=bool(applied), schema_changes=tuple(applied))

        with self.telemetry.span("evolve", identifier) as span:
            self._commit_with_retries(identifier, stage, self.retry, create_with=None)
            current = self.schema_history(identifier)[-1]
            span.set_attribute("iceberg.schema_id", current.schema_id)
            return current

    def schema_history(self, table: TableRef) -> list[SchemaVersion]:
        """Every schema of the table, oldest first, with the first snapshot written with it."""
        loaded = self.load_table(table)
        first_snapshot: dict[int, int] = {}
        for snapshot in sorted(loaded.metadata.snapshots, key=lambda s: s.timestamp_ms):
            if snapshot.schema_id is not None:
                first_snapshot.setdefault(snapshot.schema_id, snapshot.snapshot_id)
        current_id = loaded.metadata.current_schema_id
        return [
            SchemaVersion(
                schema_id=schema.schema_id,
                columns=tuple(
                    f"{f.name} {type_to_string(f.field_type)}{' required' if f.required else ''}"
                    for f in schema.fields
                ),
                first_snapshot_id=first_snapshot.get(schema.schema_id),
                is_current=schema.schema_id == current_id,
            )
            for schema in sorted(loaded.metadata.schemas, key=lambda s: s.schema_id)
        ]

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
            >>> # manager.write("sales.orders", arrow_table, WriteConfig(mode="overwrite",
            >>> #               row_filter=EqualTo("day", "2024-01-01")))
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
        if isinstance(data, pa.RecordBatchReader) and config.mode is WriteMode.UPSERT:
            data = data.read_all()
        stream = _ReplayGuard(data, name)

        def stage(
            table: Table,
            changes: _MetadataChanges,
            properties: dict[str, str],
            files: _WrittenFiles,
        ) -> _Staged:
            return self._stage_write(name, table, changes, stream, config, properties, files)

        attributes = {"iceberg.write_mode": config.mode.value}
        with (
            self.telemetry.span(_operation_name(config.mode), identifier, attributes) as span,
            self._reaching(f"writing table '{name}'", writing=True),
        ):
            result = self._commit_with_retries(
                identifier,
                stage,
                _with_defaults(config.retry, self.retry),
                create_with=(stream.schema, config),
                snapshot_properties=config.snapshot_properties,
                loaded=table if isinstance(table, Table) else None,
            )
            _annotate_span(span, result)
            return result

    def upsert(
        self,
        table: TableRef,
        data: pa.Table,
        join_cols: Sequence[str],
        when_matched_update_all: bool = True,
        when_not_matched_insert_all: bool = True,
        scope: UpsertScope | BooleanExpression = UpsertScope.TABLE,
        config: WriteConfig | None = None,
    ) -> WriteResult:
        """Merge ``data`` into the table on ``join_cols`` in one commit.

        ``scope`` is ``UpsertScope.TABLE`` (match across the table) or an expression for the
        partition slice to match in (rows of other partitions are never touched).

        Example:
            >>> # manager.upsert("crm.customers", arrow_table, join_cols=["customer_id"])
        """
        row_filter = None if isinstance(scope, UpsertScope) else scope
        base = (config or WriteConfig()).model_dump(exclude={"retry"})
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
        retry = config.retry if config else self.retry
        return self.write(table, data, WriteConfig(**base, retry=retry))

    def _stage_write(
        self,
        name: str,
        table: Table,
        changes: _MetadataChanges,
        stream: _ReplayGuard,
        config: WriteConfig,
        snapshot_properties: dict[str, str],
        files: _WrittenFiles,
    ) -> _Staged:
        metadata = table.metadata
        if config.mode is WriteMode.APPEND and config.idempotency_key:
            previous = _snapshot_with(metadata, IDEMPOTENCY_PROPERTY, config.idempotency_key)
            if previous is not None:
                return _Staged(changed=False, already_committed=previous)
            snapshot_properties = {
                **snapshot_properties,
                IDEMPOTENCY_PROPERTY: config.idempotency_key,
            }
        if config.mode is WriteMode.UPSERT:
            from floe_dagster_iceberg.engine.upsert import validate_upsert_input

            # Key problems get the upsert's own message before any schema planning.
            validate_upsert_input(name, metadata.schema(), stream.table(), config.join_cols)
        schema_plan = plan_schema_update(
            name, metadata.schema(), stream.schema, config.schema_update_mode
        )
        if not schema_plan.is_empty:
            with changes.transaction.update_schema() as update:
                schema_plan.apply(update)
        if config.partition_spec is not None:
            spec_plan = plan_spec_update(
                name,
                changes.metadata.schema(),
                changes.metadata.spec(),
                config.partition_spec,
                config.partition_spec_update_mode,
            )
            if not spec_plan.is_empty:
                with changes.transaction.update_spec() as update_spec:
                    spec_plan.apply(update_spec)
                log.info("Table %s: %s", name, "; ".join(spec_plan.describe()))
        new_properties = {
            key: value
            for key, value in config.table_properties.items()
            if key not in RESERVED_PROPERTIES and metadata.properties.get(key) != value
        }
        if new_properties:
            changes.transaction.set_properties(new_properties)

        planned = changes.metadata
        check_format_version(name, planned)
        staged = _Staged(changed=changes.changed, schema_changes=tuple(schema_plan.describe()))
        if config.mode is WriteMode.UPSERT:
            return self._stage_upsert(
                name, table, changes, stream.table(), config, staged, snapshot_properties, files
            )

        schema = planned.schema()
        row_filter = config.row_filter
        if stream.is_stream and planned.spec().is_unpartitioned() and row_filter is None:
            added = files.once(
                planned, lambda: write_batches(planned, table.io, stream.conformed_reader(schema))
            )
        else:
            data = conform_to_schema(name, stream.table(), schema)
            check_partition_values(name, data, planned)
            if row_filter is not None:
                check_rows_in_slice(name, data, row_filter, schema)
            added = files.once(planned, lambda: write_data_files(planned, table.io, data))

        removed: list[DataFile] = []
        if config.mode is WriteMode.OVERWRITE:
            slice_filter = row_filter if row_filter is not None else AlwaysTrue()
            in_slice = files_in_slice(planned, table.io, slice_filter)
            removed = list(in_slice.whole)
            for data_file, kept in rows_outside(planned, table.io, in_slice.partial, slice_filter):
                if kept is None:
                    continue
                removed.append(data_file)
                added = [
                    *added,
                    *files.once(
                        planned,
                        lambda rows=kept: write_data_files(planned, table.io, rows),
                        key=data_file.file_path,
                    ),
                ]
            scope = slice_filter
        else:
            scope = AlwaysFalse()
        if not added and not removed:
            return staged
        change = FileChange(
            operation=Operation.OVERWRITE if removed else Operation.APPEND,
            added=added,
            removed=removed,
            scope=scope,
        )
        staged.added_paths = frozenset(f.file_path for f in added)
        staged.commit = changes.with_snapshot(
            produce_snapshot(planned, table.io, change, snapshot_properties)
        )
        staged.changed = True
        return staged

    def _stage_upsert(
        self,
        name: str,
        table: Table,
        changes: _MetadataChanges,
        data: pa.Table,
        config: WriteConfig,
        staged: _Staged,
        snapshot_properties: dict[str, str],
        files: _WrittenFiles,
    ) -> _Staged:
        from floe_dagster_iceberg.engine.upsert import plan_upsert, validate_upsert_input

        planned = changes.metadata
        schema = planned.schema()
        validate_upsert_input(name, schema, data, config.join_cols)
        conformed = conform_to_schema(name, data, schema)
        check_partition_values(name, conformed, planned)
        scope_filter: BooleanExpression = AlwaysTrue()
        if config.row_filter is not None:
            check_rows_in_slice(name, conformed, config.row_filter, schema)
            if config.upsert_scope is UpsertScope.PARTITION:
                scope_filter = config.row_filter
        plan = files.upsert
        if plan is None or not plan.still_applies(planned, table.io):
            if plan is not None:
                files.forget(plan.added)
            plan = plan_upsert(
                planned,
                table.metadata,
                table.io,
                conformed,
                table_name=name,
                join_cols=config.join_cols,
                when_matched_update_all=config.when_matched_update_all,
                when_not_matched_insert_all=config.when_not_matched_insert_all,
                scope_filter=scope_filter,
            )
            files.upsert = plan
            files.track(plan.added)
        outcome = plan.outcome
        staged.rows_updated = outcome.rows_updated
        staged.rows_inserted = outcome.rows_inserted
        staged.rows_unchanged = outcome.rows_unchanged
        staged.files_rewritten = outcome.files_rewritten
        if outcome.changed:
            change = FileChange(
                operation=Operation.OVERWRITE if plan.removed else Operation.APPEND,
                added=plan.added,
                removed=plan.removed,
                scope=plan.conflict_filter,
            )
            staged.added_paths = frozenset(f.file_path for f in plan.added)
            staged.commit = changes.with_snapshot(
                produce_snapshot(planned, table.io, change, snapshot_properties)
            )
        staged.changed = staged.changed or outcome.changed
        return staged

    # ------------------------------------------------------------------ commit loop

    def _commit_with_retries(
        self,
        identifier: tuple[str, str],
        stage: _Stage,
        policy: RetryPolicy,
        create_with: tuple[pa.Schema, WriteConfig] | None,
        snapshot_properties: dict[str, str] | None = None,
        loaded: Table | None = None,
    ) -> WriteResult:
        """Stage and commit, re-planning metadata against the refreshed table on conflicts.

        Data files are written once (``_WrittenFiles``); an attempt that did not land has its
        manifests deleted at once, and the data files go when the write fails for good.
        ``loaded``: a table the caller just loaded, used by the first attempt only.
        """
        write_id = uuid.uuid4().hex
        properties = {
            **(snapshot_properties or {}),
            WRITE_ID_PROPERTY: write_id,
            WRITER_PROPERTY: f"floe-dagster-iceberg {__version__}",
        }
        name = ".".join(identifier)
        files = _WrittenFiles()
        retry: RetrySchedule | None = None
        last_error: Exception | None = None
        expired_bases = 0
        staged_location: str | None = None
        started = time.monotonic()
        try:
            for attempt in itertools.count(1):
                attempt_attributes = {"iceberg.commit.attempt": attempt}
                with self.telemetry.span("commit", identifier, attempt_attributes) as attempt_span:
                    base_snapshot_id: int | None = None
                    pending: PendingCommit | None = None
                    created = False
                    try:
                        if attempt == 1 and loaded is not None:
                            table, create = loaded, None
                        else:
                            table, create = self._load_or_create(
                                identifier, create_with, staged_location
                            )
                        if create is not None:
                            staged_location = table.metadata.location
                        created = create is not None
                        retry = retry or resolve_retry(policy, table.metadata.properties)
                        base_snapshot_id = table.metadata.current_snapshot_id
                        files.io = table.io
                        changes = _MetadataChanges(table, create)
                        staged = stage(table, changes, properties, files)
                        if staged.already_committed is not None:
                            return _already_committed(name, staged.already_committed, attempt)
                        if staged.commit is None:
                            if not changes.changed:
                                attempt_span.set_attribute("iceberg.commit.skipped", True)
                                return _skipped(name, staged, attempt)
                            staged.commit = changes.without_snapshot()
                        pending = staged.commit
                        committed = send(self.catalog, pending)
                        files.landed(staged.added_paths)
                        result = _result(name, committed, write_id, attempt, staged, created)
                        self._log_commit(result, retry.max_attempts)
                        _annotate_span(attempt_span, result)
                        return result
                    except CommitStateUnknownException as error:
                        record_error(attempt_span, error)
                        last_error = error
                        files.outcome_unknown()
                        found = self._resolve_unknown(identifier, name, write_id)
                        outcome = "landed" if found is not None else "retry"
                        self.log.warning(
                            "iceberg.commit_state_unknown table=%s attempt=%d outcome=%s",
                            name,
                            attempt,
                            outcome,
                        )
                        if found is not None:
                            files.landed(staged.added_paths)
                            result = _result(name, found, write_id, attempt, staged, created)
                            self._log_commit(result, retry.max_attempts if retry else attempt)
                            return result
                    except Exception as error:
                        expired = self._base_expired(identifier, base_snapshot_id, error)
                        if not (_is_retryable(error) or expired):
                            raise
                        if pending is not None:
                            pending.discard()
                        expired_bases += int(expired)
                        record_error(attempt_span, error)
                        last_error = error
                assert retry is not None  # an attempt that got this far resolved the policy
                elapsed = time.monotonic() - started
                if attempt >= retry.max_attempts or elapsed >= retry.total_timeout_seconds:
                    break
                backoff = retry.backoff_seconds(attempt)
                self.log.info(
                    "iceberg.commit_retry table=%s attempt=%d/%d error=%s backoff_ms=%d",
                    name,
                    attempt,
                    retry.max_attempts,
                    type(last_error).__name__,
                    round(backoff * 1000),
                )
                time.sleep(backoff)
            raise _gave_up(name, attempt, last_error, expired_bases)
        except BaseException:
            files.discard()
            raise

    def _resolve_unknown(
        self, identifier: tuple[str, str], name: str, write_id: str
    ) -> Table | None:
        """The table if the commit carrying ``write_id`` landed, else ``None``."""
        try:
            return self._find_committed_write(identifier, write_id)
        except Exception as check_error:
            unknown = connection_error(
                check_error,
                self.catalog.properties,
                f"checking whether a commit to table '{name}' landed",
                unknown_write_id=write_id,
            )
            if unknown is None:
                raise
            raise unknown from None

    def _base_expired(
        self, identifier: tuple[str, str], base_snapshot_id: int | None, error: Exception
    ) -> bool:
        """Whether a file of the snapshot the attempt started from is gone because the table
        moved on (snapshot expiry deleted it meanwhile): then a fresh attempt can succeed."""
        if not isinstance(error, FileNotFoundError):
            return False
        try:
            current = self.catalog.load_table(identifier).metadata.current_snapshot_id
        except Exception:
            return False
        return current != base_snapshot_id

    def _log_commit(self, result: WriteResult, max_attempts: int) -> None:
        self.log.info(
            "iceberg.commit table=%s snapshot_id=%s operation=%s attempt=%d/%d rows_added=%d "
            "rows_deleted=%d files_added=%d files_deleted=%d bytes_added=%d created=%s",
            result.table,
            result.snapshot_id,
            result.operation,
            result.commit_attempts,
            max_attempts,
            result.rows_added,
            result.rows_deleted,
            result.files_added,
            result.files_deleted,
            result.bytes_added,
            str(result.created_table).lower(),
        )

    def _load_or_create(
        self,
        identifier: tuple[str, str],
        create_with: tuple[pa.Schema, WriteConfig] | None,
        location: str | None = None,
    ) -> tuple[Table, Transaction | None]:
        """The current table, or a staged new one (with its create transaction) if missing.

        ``location``: where an earlier attempt staged the table, so its data files stay usable.
        """
        try:
            return self.catalog.load_table(identifier), None
        except NoSuchTableError:
            if create_with is None:
                raise TableNotFoundError(
                    f"Table '{'.'.join(identifier)}' does not exist; create it first."
                ) from None
        arrow_schema, config = create_with
        check_requested_format_version(".".join(identifier), config.table_properties)
        schema = arrow_to_iceberg_schema(arrow_schema, respect_nullability=True)
        self.ensure_namespace(identifier[0])
        create = self.catalog.create_table_transaction(
            identifier,
            schema=schema,
            location=location,
            partition_spec=build_partition_spec(schema, config.partition_spec or ()),
            sort_order=build_sort_order(schema, config.sort_order),
            properties=dict(config.table_properties),
        )
        return transaction_table(create), create

    def _find_committed_write(self, identifier: tuple[str, str], write_id: str) -> Table | None:
        try:
            table = self.catalog.load_table(identifier)
        except NoSuchTableError:
            return None
        found = _snapshot_with(table.metadata, WRITE_ID_PROPERTY, write_id)
        return table if found is not None else None

    # ------------------------------------------------------------------ reads

    def scan(
        self,
        table: TableRef,
        row_filter: BooleanExpression | None = None,
        columns: Sequence[str] | None = None,
        snapshot_id: int | None = None,
        as_of: datetime | None = None,
        ref: str | None = None,
        limit: int | None = None,
    ) -> pa.Table:
        """Read rows as Arrow, optionally filtered, projected and at a past snapshot, time or tag.

        Example:
            >>> # manager.scan("sales.orders", EqualTo("region", "eu"), columns=["id"], ref="v1")
        """
        identifier = self.identifier(table)
        with (
            self.telemetry.span("scan", identifier) as span,
            self._reaching(f"reading table '{'.'.join(identifier)}'"),
        ):
            plan = self._plan_scan(table, row_filter, columns, snapshot_id, as_of, ref, limit)
            _annotate_scan(span, plan)
            result = plan.to_arrow()
            span.set_attribute("iceberg.rows", result.num_rows)
            return result

    def scan_batches(
        self,
        table: TableRef,
        row_filter: BooleanExpression | None = None,
        columns: Sequence[str] | None = None,
        snapshot_id: int | None = None,
        as_of: datetime | None = None,
        ref: str | None = None,
    ) -> pa.RecordBatchReader:
        """Like :meth:`scan`, streaming record batches instead of one table."""
        with self.telemetry.span("scan", self.identifier(table)) as span:
            scan = self._plan_scan(table, row_filter, columns, snapshot_id, as_of, ref, None)
            _annotate_scan(span, scan)
            span.set_attribute("iceberg.streamed", True)
            return scan.to_arrow_batch_reader()

    def _plan_scan(
        self,
        table: TableRef,
        row_filter: BooleanExpression | None,
        columns: Sequence[str] | None,
        snapshot_id: int | None,
        as_of: datetime | None,
        ref: str | None,
        limit: int | None,
    ) -> Any:
        loaded = table if isinstance(table, Table) else self.load_table(table)
        name = ".".join(self.identifier(loaded))
        if sum(x is not None for x in (snapshot_id, as_of, ref)) > 1:
            raise InvalidInputError(
                f"Table '{name}': give at most one of snapshot_id, as_of and ref."
            )
        if as_of is not None or ref is not None:
            snapshot_id = self.snapshot_id_for(loaded, as_of=as_of, ref=ref)
        if snapshot_id is not None and loaded.snapshot_by_id(snapshot_id) is None:
            raise TableNotFoundError(
                f"Table '{name}' has no snapshot {snapshot_id} (it may have been expired)."
            )
        selected = ("*",)
        if columns:
            known = set(loaded.schema().column_names)
            unknown = [c for c in columns if c not in known]
            if unknown:
                raise InvalidInputError(
                    f"Table '{name}' has no column(s) {unknown}; columns are {sorted(known)}."
                )
            selected = tuple(columns)
        return loaded.scan(
            row_filter=row_filter if row_filter is not None else AlwaysTrue(),
            selected_fields=selected,
            snapshot_id=snapshot_id,
            limit=limit,
        )

    def snapshot_id_for(
        self, table: TableRef, as_of: datetime | None = None, ref: str | None = None
    ) -> int:
        """The snapshot current at ``as_of``, or the head of tag/branch ``ref``."""
        loaded = table if isinstance(table, Table) else self.load_table(table)
        name = ".".join(self.identifier(loaded))
        if ref is not None:
            snapshot = loaded.snapshot_by_name(ref)
            if snapshot is None:
                raise TableNotFoundError(
                    f"Table '{name}' has no tag or branch {ref!r}; existing refs: "
                    f"{sorted(loaded.refs())}."
                )
            return snapshot.snapshot_id
        if as_of is None:
            return _current_snapshot_id(loaded)
        snapshot = loaded.snapshot_as_of_timestamp(int(as_of.timestamp() * 1000))
        if snapshot is None:
            raise TableNotFoundError(
                f"Table '{name}' has no snapshot at or before {as_of.isoformat()}; "
                "its history starts later (see manager.snapshots())."
            )
        return snapshot.snapshot_id

    def count(self, table: TableRef, row_filter: BooleanExpression | None = None) -> int:
        """Number of rows in the table, or in the slice ``row_filter`` selects."""
        loaded = table if isinstance(table, Table) else self.load_table(table)
        snapshot = loaded.current_snapshot()
        if snapshot is None:
            return 0
        total = snapshot.summary.get("total-records") if snapshot.summary else None
        if row_filter is None and total is not None:
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
        target = snapshot_id if snapshot_id is not None else _current_snapshot_id(loaded)
        with (
            self.telemetry.span("tag", self.identifier(loaded)),
            loaded.manage_snapshots() as manage,
        ):
            manage.create_tag(target, name)
        return target

    # ------------------------------------------------------------------ maintenance

    def compact(
        self,
        table: TableRef,
        target_file_size_bytes: int | None = None,
        min_input_files: int = 2,
        partition_filter: BooleanExpression | None = None,
    ) -> CompactionResult:
        """Bin-pack small files per partition in one commit, up to ``target_file_size_bytes``
        (default: the table's ``write.target-file-size-bytes``); see
        :mod:`floe_dagster_iceberg.engine.maintenance.compaction`."""
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
    ) -> ExpireSnapshotsResult:
        """Expire old snapshots and delete the files only they referenced; defaults: the table's
        ``history.expire.*`` properties (Iceberg's: 5 days, 1 snapshot)."""
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
    ) -> OrphanFilesResult:
        """Delete files under the table location that no metadata references."""
        return self._maintain(
            "remove_orphans",
            "removing orphan files of",
            table,
            lambda loaded: maintenance.remove_orphan_files(
                self.catalog, loaded, older_than=older_than, dry_run=dry_run
            ),
        )

    def rewrite_manifests(self, table: TableRef) -> RewriteManifestsResult:
        """Rewrite the current snapshot's manifests into few, well-clustered ones."""
        return self._maintain(
            "rewrite_manifests",
            "rewriting manifests of",
            table,
            lambda loaded: maintenance.rewrite_manifests(self.catalog, loaded, retry=self.retry),
        )

    def table_health(
        self, table: TableRef, small_file_threshold_bytes: int | None = None
    ) -> TableHealth:
        """Storage metrics: files, bytes, small files, partitions, rows, snapshots, manifests."""
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


def _snapshot_with(metadata: Any, summary_property: str, value: str) -> Snapshot | None:
    """The snapshot whose summary carries ``summary_property == value``, if any."""
    return next(
        (s for s in metadata.snapshots if s.summary and s.summary.get(summary_property) == value),
        None,
    )


def _already_committed(name: str, snapshot: Snapshot, attempts: int) -> WriteResult:
    log.info(
        "Table %s: this append already landed in snapshot %s (same idempotency key); "
        "not applying it again.",
        name,
        snapshot.snapshot_id,
    )
    return WriteResult(
        table=name,
        snapshot_id=snapshot.snapshot_id,
        operation="append",
        rows_added=int(snapshot.summary.get("added-records") or 0),
        files_added=int(snapshot.summary.get("added-data-files") or 0),
        bytes_added=int(snapshot.summary.get("added-files-size") or 0),
        commit_attempts=attempts,
    )


def _with_defaults(policy: RetryPolicy, defaults: RetryPolicy) -> RetryPolicy:
    """``policy`` with its unset fields taken from ``defaults`` (the manager's policy)."""
    return RetryPolicy(
        **{
            name: value if value is not None else getattr(defaults, name)
            for name, value in policy.model_dump().items()
        }
    )


def _skipped(name: str, staged: _Staged, attempts: int) -> WriteResult:
    """The result of a write that had nothing to commit."""
    return WriteResult(
        table=name,
        snapshot_id=None,
        operation=None,
        commit_attempts=attempts,
        rows_updated=staged.rows_updated,
        rows_inserted=staged.rows_inserted,
        rows_unchanged=staged.rows_unchanged,
        files_rewritten=staged.files_rewritten,
    )


def _gave_up(
    name: str, attempts: int, last_error: Exception | None, expired_bases: int
) -> CommitConflictError:
    """The error of a write whose every attempt was refused, naming the real cause."""
    cause = f"{type(last_error).__name__}: {last_error}"
    if expired_bases:
        return CommitConflictError(
            f"Table '{name}': snapshot expiry removed files of the snapshot this write started "
            f"from while it ran ({expired_bases} of {attempts} attempts; last: {cause}). Nothing "
            "was committed; re-run it, and keep snapshot expiry (history.expire.*, "
            "expire_snapshots older_than) from running while large writes are in flight."
        )
    return CommitConflictError(
        f"Table '{name}': the commit still conflicted with concurrent writers after "
        f"{attempts} attempts ({cause}). Nothing was committed; re-run, or raise the retry "
        "limit (RetryPolicy.max_attempts or the table's commit.retry.num-retries)."
    )


def check_requested_format_version(name: str, properties: dict[str, str]) -> None:
    """Refuse, before the table is created, a ``format-version`` property this package cannot write."""
    requested = properties.get(FORMAT_VERSION)
    if requested is not None and requested.strip() not in map(str, WRITABLE_FORMAT_VERSIONS):
        raise InvalidInputError(
            f"Table '{name}': table_properties ask for Iceberg format version {requested.strip()}; "
            f"this package writes versions {', '.join(map(str, WRITABLE_FORMAT_VERSIONS))} "
            "only. Nothing was created; ask for 1 or 2 (2 is the default)."
        )


def check_format_version(name: str, metadata: TableMetadata) -> None:
    """Refuse, before any file is written, a table whose format version cannot be written."""
    if metadata.format_version not in WRITABLE_FORMAT_VERSIONS:
        raise InvalidInputError(
            f"Table '{name}' is Iceberg format version {metadata.format_version}; this package "
            f"writes versions {', '.join(map(str, WRITABLE_FORMAT_VERSIONS))} only (PyIceberg "
            "0.12 cannot write its manifests). Nothing was written; write it with an engine that "
            "supports it (e.g. Spark), or use a version-2 table."
        )


def _current_snapshot_id(table: Table) -> int:
    snapshot = table.current_snapshot()
    if snapshot is None:
        raise TableNotFoundError(f"Table '{'.'.join(table.name())}' has no snapshot yet.")
    return snapshot.snapshot_id


def _result(
    name: str, table: Table, write_id: str, attempts: int, staged: _Staged, created: bool
) -> WriteResult:
    ours = [
        s
        for s in table.metadata.snapshots
        if s.summary and s.summary.get(WRITE_ID_PROPERTY) == write_id
    ]
    totals = dict.fromkeys(_SUMMARY_TOTALS, 0)
    for snapshot in ours:
        for field_name, summary_key in _SUMMARY_TOTALS.items():
            totals[field_name] += int(snapshot.summary.get(summary_key) or 0)
    last = max(ours, key=lambda s: s.sequence_number or 0) if ours else None
    operation = None
    if last is not None:
        operation = "overwrite" if len(ours) > 1 else last.summary.operation.value
    return WriteResult(
        table=name,
        snapshot_id=last.snapshot_id if last else _snapshot_id_or_none(table),
        operation=operation,
        commit_attempts=attempts,
        schema_changes=staged.schema_changes,
        rows_updated=staged.rows_updated,
        rows_inserted=staged.rows_inserted,
        rows_unchanged=staged.rows_unchanged,
        files_rewritten=staged.files_rewritten,
        created_table=created,
        **totals,
    )


def _snapshot_id_or_none(table: Table) -> int | None:
    snapshot = table.current_snapshot()
    return snapshot.snapshot_id if snapshot else None


def _annotate_span(span: Any, result: WriteResult) -> None:
    span.set_attribute("iceberg.commit_attempts", result.commit_attempts)
    if result.snapshot_id is not None:
        span.set_attribute("iceberg.snapshot_id", result.snapshot_id)
    if result.operation is not None:
        span.set_attribute("iceberg.operation", result.operation)
    span.set_attribute("iceberg.rows_added", result.rows_added)
    span.set_attribute("iceberg.rows_deleted", result.rows_deleted)
    span.set_attribute("iceberg.files_added", result.files_added)
    span.set_attribute("iceberg.files_deleted", result.files_deleted)
    span.set_attribute("iceberg.bytes_added", result.bytes_added)
    span.set_attribute("iceberg.bytes_deleted", result.bytes_deleted)
    if result.created_table:
        span.set_attribute("iceberg.created", True)
    if result.schema_changes:
        span.set_attribute("iceberg.schema_changes", list(result.schema_changes))


def _annotate_scan(span: Any, scan: Any) -> None:
    snapshot = scan.snapshot()
    if snapshot is not None:
        span.set_attribute("iceberg.snapshot_id", snapshot.snapshot_id)


def _annotate_maintenance(span: Any, result: Any) -> None:
    """``iceberg.<metric>`` attributes from a maintenance result's ``as_metrics()``."""
    for key, value in result.as_metrics().items():
        if isinstance(value, bool | int | float | str):
            span.set_attribute(f"iceberg.{key}", value)


def _config_differences(config: TableConfig, table: Table) -> tuple[str, ...]:
    differences = []
    existing = {f.name: f for f in table.schema().fields}
    wanted = iceberg_schema_from_columns(config.table_schema)
    for field in wanted.fields:
        current = existing.get(field.name)
        if current is None:
            differences.append(f"column {field.name} is not in the table")
        elif type_to_string(current.field_type) != type_to_string(field.field_type):
            differences.append(
                f"column {field.name}: table has {type_to_string(current.field_type)}, "
                f"config has {type_to_string(field.field_type)}"
            )
        elif current.required != field.required:
            differences.append(f"column {field.name}: required={current.required} in the table")
    differences += [
        f"column {n} is not in the config" for n in existing if n not in wanted.column_names
    ]
    have = {
        (f.source_column, f.notation) for f in partition_fields_of(table.schema(), table.spec())
    }
    want = {(f.source_column, f.notation) for f in config.partition_spec}
    if have != want:
        differences.append(f"partition spec: table has {sorted(have)}, config has {sorted(want)}")
    return tuple(differences)


def _referenced_columns(expression: BooleanExpression) -> list[str]:
    if isinstance(expression, And | Or):
        return _referenced_columns(expression.left) + _referenced_columns(expression.right)
    if isinstance(expression, Not):
        return _referenced_columns(expression.child)
    term = getattr(expression, "term", None)
    return [term.name] if term is not None and hasattr(term, "name") else []


def check_partition_values(name: str, data: pa.Table, metadata: TableMetadata) -> None:
    """Refuse NaN and -0.0 in float partition source columns.

    PyIceberg 0.12 splits rows into partitions by value equality: a NaN row lands in no data
    file (it would be lost) and a -0.0 row next to a 0.0 row in two (duplicated).
    """
    schema = metadata.schema()
    for spec_field in metadata.spec().fields:
        source = schema.find_field(spec_field.source_id)
        if not isinstance(source.field_type, FloatType | DoubleType):
            continue
        if source.name not in data.column_names:
            continue
        values = data.column(source.name).combine_chunks().fill_null(1.0).to_numpy()
        bad = int(np.isnan(values).sum() + ((values == 0) & np.signbit(values)).sum())
        if bad:
            raise PartitionMismatchError(
                f"Table '{name}': {bad} row(s) hold NaN or -0.0 in float partition column "
                f"{source.name!r}, which cannot be assigned to a partition reliably; replace them "
                "(e.g. NaN by null, -0.0 by 0.0) or partition by another column."
            )


def check_rows_in_slice(
    name: str, data: pa.Table, row_filter: BooleanExpression, schema: Schema
) -> None:
    """Refuse rows that fall outside ``row_filter`` (nulls included), naming how many and which values."""
    if data.num_rows == 0:
        return
    expression = expression_to_pyarrow(bind(schema, row_filter, case_sensitive=True))
    outside = data.filter(~expression | expression.is_null())
    if outside.num_rows == 0:
        return
    columns = list(
        dict.fromkeys(c for c in _referenced_columns(row_filter) if c in data.column_names)
    )
    samples = outside.select(columns).slice(0, 5).to_pylist() if columns else []
    nulls = [c for c in columns if outside.column(c).null_count]
    hint = f" Column(s) {nulls} hold nulls, which belong to no partition." if nulls else ""
    raise PartitionMismatchError(
        f"Table '{name}': {outside.num_rows} of {data.num_rows} row(s) fall outside the slice this "
        f"run owns ({row_filter}); for example {samples}.{hint} Filter the output to the run's "
        "partition (context.partition_key / partition_time_window) before returning it."
    )


class _ReplayGuard:
    """Holds the data of a write; a stream can be consumed by one attempt only."""

    def __init__(self, data: pa.Table | pa.RecordBatchReader, name: str) -> None:
        self._data = data
        self._name = name
        self._consumed = False
        self.schema: pa.Schema = data.schema

    @property
    def is_stream(self) -> bool:
        return isinstance(self._data, pa.RecordBatchReader)

    def table(self) -> pa.Table:
        if isinstance(self._data, pa.RecordBatchReader):
            self._guard()
            self._data = self._data.read_all()
        return self._data

    def conformed_reader(self, schema: Schema) -> pa.RecordBatchReader:
        self._guard()
        reader = self._data
        target_schema = conform_to_schema(self._name, reader.schema.empty_table(), schema).schema

        def batches() -> Iterator[pa.RecordBatch]:
            for batch in reader:
                yield from conform_to_schema(
                    self._name, pa.Table.from_batches([batch]), schema
                ).to_batches()

        return pa.RecordBatchReader.from_batches(target_schema, batches())

    def _guard(self) -> None:
        if self._consumed:
            raise CommitConflictError(
                f"Table '{self._name}': a streamed write conflicted with a concurrent commit after "
                "its batches were consumed; re-run it (the stream cannot be replayed)."
            )
        self._consumed = True
