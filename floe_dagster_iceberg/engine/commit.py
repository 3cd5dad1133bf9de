"""THE commit loop: data written once, exactly one snapshot, retries re-plan metadata.

Each attempt loads the table (or stages its creation), lets the write stage its changes
(:mod:`floe_dagster_iceberg.engine.write`) and sends one request to the catalog. A refused
attempt deletes its manifests and, after a jittered backoff, plans again against the fresh
table with the data files already written; an attempt whose outcome is unknown is resolved by
the write id in the snapshot summaries, never blindly redone.
"""

from __future__ import annotations

import itertools
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import (
    CommitFailedException,
    CommitStateUnknownException,
    NoSuchTableError,
    TableAlreadyExistsError,
    ValidationException,
)
from pyiceberg.table import Table, Transaction
from pyiceberg.table.snapshots import Snapshot

from floe_dagster_iceberg.engine._pyiceberg import transaction_table
from floe_dagster_iceberg.engine.attempt import MetadataChanges, PendingCommit, WrittenFiles, send
from floe_dagster_iceberg.engine.config import RetryPolicy, WriteConfig, WriteResult
from floe_dagster_iceberg.engine.outages import connection_error
from floe_dagster_iceberg.engine.partitioning import build_partition_spec, build_sort_order
from floe_dagster_iceberg.engine.properties import WRITE_ID_PROPERTY, WRITER_PROPERTY
from floe_dagster_iceberg.engine.retry import RetrySchedule, resolve_retry
from floe_dagster_iceberg.engine.snapshot import FilesGoneError
from floe_dagster_iceberg.engine.tables import ensure_namespace
from floe_dagster_iceberg.engine.telemetry import Telemetry, record_error
from floe_dagster_iceberg.engine.types import arrow_to_iceberg_schema
from floe_dagster_iceberg.engine.write import (
    Stage,
    StagedWrite,
    check_requested_format_version,
    snapshot_with,
)
from floe_dagster_iceberg.errors import CommitConflictError, TableNotFoundError
from floe_dagster_iceberg.version import __version__

__all__ = ["CommitLoop", "annotate_write_span"]

log = logging.getLogger("floe_dagster_iceberg")

_SUMMARY_TOTALS = {
    "rows_added": "added-records",
    "rows_deleted": "deleted-records",
    "files_added": "added-data-files",
    "files_deleted": "deleted-data-files",
    "bytes_added": "added-files-size",
    "bytes_deleted": "removed-files-size",
}


class CommitLoop:
    """Commits the writes of one catalog: one snapshot each, retried against the fresh table.

    Example:
        >>> import pyarrow as pa, tempfile
        >>> from pyiceberg.catalog.sql import SqlCatalog
        >>> tmp = tempfile.mkdtemp()
        >>> catalog = SqlCatalog("doc", uri=f"sqlite:///{tmp}/c.db", warehouse=f"file://{tmp}")
        >>> catalog.create_namespace("sales")
        >>> from floe_dagster_iceberg.engine.config import WriteConfig
        >>> from floe_dagster_iceberg.engine.write import WriteData, stage_write
        >>> data = WriteData(pa.table({"id": [1, 2]}), "sales.orders")
        >>> def stage(table, changes, properties, files):
        ...     return stage_write("sales.orders", table, changes, data, WriteConfig(), properties, files)
        >>> loop = CommitLoop(catalog, Telemetry(None), log)
        >>> result = loop.run(("sales", "orders"), stage, RetryPolicy(), (data.schema, WriteConfig()))
        >>> result.operation, result.rows_added, result.created_table
        ('append', 2, True)
    """

    def __init__(self, catalog: Catalog, telemetry: Telemetry, log: logging.Logger) -> None:
        self.catalog = catalog
        self.telemetry = telemetry
        self.log = log
        self.committed: dict[tuple[str, str], Table] = {}
        """The table as the last commit of this loop left it, per identifier."""

    def run(
        self,
        identifier: tuple[str, str],
        stage: Stage,
        policy: RetryPolicy,
        create_with: tuple[pa.Schema, WriteConfig] | None,
        snapshot_properties: dict[str, str] | None = None,
        loaded: Table | None = None,
        view: Callable[[Table], Table] | None = None,
    ) -> WriteResult:
        """Stage and commit, re-planning metadata against the refreshed table on conflicts.

        Data files are written once (``_WrittenFiles``); an attempt that did not land has its
        manifests deleted at once, and the data files go when the write fails for good.
        ``loaded``: a table the caller just loaded, used by the first attempt only. ``view``:
        how the write sees an existing table (e.g. from a branch, :func:`on_branch`).
        """
        write_id = uuid.uuid4().hex
        properties = {
            **(snapshot_properties or {}),
            WRITE_ID_PROPERTY: write_id,
            WRITER_PROPERTY: f"floe-dagster-iceberg {__version__}",
        }
        name = ".".join(identifier)
        files = WrittenFiles()
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
                        elif view is not None:
                            table = view(table)
                        # On a catalog without atomic staged creates, the write that commits
                        # the table's first snapshot is the one that created it.
                        created = create is not None or (
                            create_with is not None
                            and not _creates_atomically(self.catalog)
                            and table.metadata.current_snapshot_id is None
                        )
                        retry = retry or resolve_retry(policy, table.metadata.properties)
                        base_snapshot_id = table.metadata.current_snapshot_id
                        files.io = table.io
                        changes = MetadataChanges(table, create)
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
                        self.committed[identifier] = committed
                        result = _result(name, committed, write_id, attempt, staged, created)
                        self._log_commit(result, retry.max_attempts)
                        annotate_write_span(attempt_span, result)
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
                            self.committed[identifier] = found
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
        ensure_namespace(self.catalog, identifier[0])
        table_args: dict[str, Any] = {
            "schema": schema,
            "partition_spec": build_partition_spec(schema, config.partition_spec or ()),
            "sort_order": build_sort_order(schema, config.sort_order),
            "properties": dict(config.table_properties),
        }
        if not _creates_atomically(self.catalog):
            # A REST catalog may not enforce a staged create's assert-create against a create
            # that lands meanwhile (SeaweedFS replaces the table). Create the empty table in
            # one request; the data then commits as on any table, asserting an empty branch.
            try:
                return self.catalog.create_table(identifier, **table_args), None
            except TableAlreadyExistsError:
                return self.catalog.load_table(identifier), None
        create = self.catalog.create_table_transaction(identifier, location=location, **table_args)
        return transaction_table(create), create

    def _find_committed_write(self, identifier: tuple[str, str], write_id: str) -> Table | None:
        try:
            table = self.catalog.load_table(identifier)
        except NoSuchTableError:
            return None
        found = snapshot_with(table.metadata, WRITE_ID_PROPERTY, write_id)
        return table if found is not None else None


def _creates_atomically(catalog: Catalog) -> bool:
    """SQL catalogs refuse a second create in their database; REST catalogs vary."""
    return catalog.properties.get("type") != "rest" and type(catalog).__name__ != "RestCatalog"


def _is_retryable(error: Exception) -> bool:
    if isinstance(
        error,
        CommitFailedException | ValidationException | TableAlreadyExistsError | FilesGoneError,
    ):
        return True
    # SQLite refuses a commit while another process holds its write lock: nothing was committed.
    return type(error).__name__ == "OperationalError" and "locked" in str(error)


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


def _skipped(name: str, staged: StagedWrite, attempts: int) -> WriteResult:
    """The result of a write that had nothing to commit."""
    return WriteResult(
        table=name,
        snapshot_id=None,
        operation=None,
        commit_attempts=attempts,
        rows_updated=staged.rows_updated,
        rows_inserted=staged.rows_inserted,
        rows_unchanged=staged.rows_unchanged,
        rows_removed=staged.rows_removed,
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


def _result(
    name: str, table: Table, write_id: str, attempts: int, staged: StagedWrite, created: bool
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
        rows_removed=staged.rows_removed,
        files_rewritten=staged.files_rewritten,
        created_table=created,
        **totals,
    )


def _snapshot_id_or_none(table: Table) -> int | None:
    snapshot = table.current_snapshot()
    return snapshot.snapshot_id if snapshot else None


def annotate_write_span(span: Any, result: WriteResult) -> None:
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
