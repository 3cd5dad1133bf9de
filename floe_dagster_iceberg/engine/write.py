"""What one attempt of a write stages: schema, spec and property changes, the data files
(written once), and the file change of its snapshot.

Example:
    >>> import pyarrow as pa, tempfile
    >>> from pyiceberg.catalog.sql import SqlCatalog
    >>> tmp = tempfile.mkdtemp()
    >>> catalog = SqlCatalog("doc", uri=f"sqlite:///{tmp}/c.db", warehouse=f"file://{tmp}")
    >>> catalog.create_namespace("sales")
    >>> rows = pa.table({"id": [1, 2]})
    >>> table = catalog.create_table("sales.orders", rows.schema)
    >>> staged = stage_write(
    ...     "sales.orders", table, MetadataChanges(table), WriteData(rows, "sales.orders"),
    ...     WriteConfig(), {}, WrittenFiles(),
    ... )
    >>> staged.changed, staged.added_paths != frozenset()
    (True, True)
    >>> staged.commit.metadata_files != []  # its manifests, deleted if the commit is refused
    True
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
from pyiceberg.expressions import AlwaysFalse, AlwaysTrue, And, BooleanExpression, Not, Or
from pyiceberg.expressions.visitors import bind
from pyiceberg.io.pyarrow import expression_to_pyarrow
from pyiceberg.manifest import DataFile
from pyiceberg.schema import Schema
from pyiceberg.table import Table
from pyiceberg.table.metadata import TableMetadata
from pyiceberg.table.refs import MAIN_BRANCH
from pyiceberg.table.snapshots import Operation, Snapshot
from pyiceberg.types import DoubleType, FloatType

from floe_dagster_iceberg.engine.attempt import MetadataChanges, PendingCommit, WrittenFiles
from floe_dagster_iceberg.engine.config import UpsertScope, WriteConfig, WriteMode
from floe_dagster_iceberg.engine.data_files import write_batches, write_data_files
from floe_dagster_iceberg.engine.partitioning import plan_spec_update
from floe_dagster_iceberg.engine.properties import (
    FORMAT_VERSION,
    IDEMPOTENCY_PROPERTY,
    RESERVED_PROPERTIES,
    WRITABLE_FORMAT_VERSIONS,
)
from floe_dagster_iceberg.engine.schema_evolution import conform_to_schema, plan_schema_update
from floe_dagster_iceberg.engine.slice_files import files_in_slice, rows_outside
from floe_dagster_iceberg.engine.snapshot import FileChange, produce_snapshot
from floe_dagster_iceberg.errors import (
    CommitConflictError,
    InvalidInputError,
    PartitionMismatchError,
)

__all__ = [
    "Stage",
    "StagedWrite",
    "WriteData",
    "check_format_version",
    "check_requested_format_version",
    "snapshot_with",
    "stage_upsert",
    "stage_write",
]

log = logging.getLogger("floe_dagster_iceberg")


@dataclass
@dataclass
class StagedWrite:
    """What one attempt of a write staged: its outcome counts and the commit request."""

    changed: bool
    schema_changes: tuple[str, ...] = ()
    rows_updated: int = 0
    rows_inserted: int = 0
    rows_unchanged: int = 0
    rows_removed: int = 0
    files_rewritten: int = 0
    already_committed: Snapshot | None = None
    commit: PendingCommit | None = None
    added_paths: frozenset[str] = frozenset()


Stage = Callable[[Table, MetadataChanges, dict[str, str], WrittenFiles], StagedWrite]
"""Stages one attempt on the table as loaded for it."""


def stage_write(
    name: str,
    table: Table,
    changes: MetadataChanges,
    stream: WriteData,
    config: WriteConfig,
    snapshot_properties: dict[str, str],
    files: WrittenFiles,
) -> StagedWrite:
    metadata = table.metadata
    if config.mode is WriteMode.APPEND and config.idempotency_key:
        previous = snapshot_with(metadata, IDEMPOTENCY_PROPERTY, config.idempotency_key)
        if previous is not None:
            return StagedWrite(changed=False, already_committed=previous)
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
    if schema_plan.drop and config.branch not in (None, MAIN_BRANCH):
        dropped = ", ".join(".".join(path) for path in schema_plan.drop)
        raise InvalidInputError(
            f"Table '{name}': this write to branch {config.branch!r} would drop column(s) "
            f"{dropped}. Iceberg schemas are table-wide, so main would lose them before the "
            "branch is published (or even if it never is). Nothing was written; drop them in a "
            "write to main, or keep schema_update_mode='additive' for branch writes."
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
    staged = StagedWrite(changed=changes.changed, schema_changes=tuple(schema_plan.describe()))
    if config.mode is WriteMode.UPSERT:
        return stage_upsert(
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
            check_rows_in_slice(name, data, row_filter, schema, config.row_filter_description)
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
    if not added and not removed and config.mode is not WriteMode.OVERWRITE:
        return staged
    # An overwrite always commits, even with nothing to add or remove: the slice was written
    # (and is empty), which readers of the history and freshness checks rely on.
    change = FileChange(
        operation=Operation.OVERWRITE if removed else Operation.APPEND,
        added=added,
        removed=removed,
        scope=scope,
    )
    staged.added_paths = frozenset(f.file_path for f in added)
    staged.commit = changes.with_snapshot(
        produce_snapshot(
            planned, table.io, change, snapshot_properties, config.branch or MAIN_BRANCH
        )
    )
    staged.changed = True
    return staged


def stage_upsert(
    name: str,
    table: Table,
    changes: MetadataChanges,
    data: pa.Table,
    config: WriteConfig,
    staged: StagedWrite,
    snapshot_properties: dict[str, str],
    files: WrittenFiles,
) -> StagedWrite:
    from floe_dagster_iceberg.engine.upsert import plan_upsert, validate_upsert_input

    planned = changes.metadata
    schema = planned.schema()
    validate_upsert_input(name, schema, data, config.join_cols)
    conformed = conform_to_schema(name, data, schema)
    check_partition_values(name, conformed, planned)
    scope_filter: BooleanExpression = AlwaysTrue()
    if config.row_filter is not None:
        check_rows_in_slice(
            name, conformed, config.row_filter, schema, config.row_filter_description
        )
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
            change_capture=config.change_capture,
        )
        files.upsert = plan
        files.track(plan.added)
    outcome = plan.outcome
    staged.rows_updated = outcome.rows_updated
    staged.rows_inserted = outcome.rows_inserted
    staged.rows_unchanged = outcome.rows_unchanged
    staged.rows_removed = outcome.rows_removed
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
            produce_snapshot(
                planned, table.io, change, snapshot_properties, config.branch or MAIN_BRANCH
            )
        )
    staged.changed = staged.changed or outcome.changed
    return staged


def snapshot_with(metadata: Any, summary_property: str, value: str) -> Snapshot | None:
    """The snapshot whose summary carries ``summary_property == value``, if any."""
    return next(
        (s for s in metadata.snapshots if s.summary and s.summary.get(summary_property) == value),
        None,
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
    name: str,
    data: pa.Table,
    row_filter: BooleanExpression,
    schema: Schema,
    description: str | None = None,
) -> None:
    """Refuse rows that fall outside ``row_filter`` (nulls included), naming how many and which
    values; ``description`` is the slice as people read it (default: the expression)."""
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
        f"run owns ({description or row_filter}); for example {samples}.{hint} Filter the output to the run's "
        "partition (context.partition_key / partition_time_window) before returning it."
    )


class WriteData:
    """The data of a write; a stream can be read once (its files are then reused)."""

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
