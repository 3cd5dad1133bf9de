"""Compaction: bin-pack small data files per partition into ONE ``replace`` snapshot.

A file is small below 75% of the target file size, which is the table's
``write.target-file-size-bytes`` unless the caller gives one (as Iceberg's
``rewrite_data_files`` does). A concurrent write to a partition being compacted fails
validation; that partition is re-planned (its new rows are then compacted too) and, if writers
keep landing there, skipped and reported.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.exceptions import (
    CommitFailedException,
    CommitStateUnknownException,
    ValidationException,
)
from pyiceberg.expressions import AlwaysTrue, BooleanExpression
from pyiceberg.manifest import DataFile
from pyiceberg.table import Table
from pyiceberg.table.snapshots import Operation
from pyiceberg.table.sorting import NullOrder, SortDirection
from pyiceberg.table.update import AssertTableUUID
from pyiceberg.transforms import IdentityTransform
from pyiceberg.typedef import Record

from floe_dagster_iceberg.engine import properties as props
from floe_dagster_iceberg.engine.attempt import PendingCommit, delete_quietly, send
from floe_dagster_iceberg.engine.config import RetryPolicy
from floe_dagster_iceberg.engine.data_files import write_data_files
from floe_dagster_iceberg.engine.maintenance.files import reload
from floe_dagster_iceberg.engine.maintenance.results import (
    MAINTENANCE_ID_PROPERTY,
    MAINTENANCE_PROPERTY,
    CompactionResult,
    PartitionCompaction,
    SkippedPartition,
    find_maintenance_snapshot,
    partition_label,
    table_name,
)
from floe_dagster_iceberg.engine.retry import resolve_retry
from floe_dagster_iceberg.engine.snapshot import FileChange, FilesGoneError, produce_snapshot
from floe_dagster_iceberg.errors import CommitConflictError, InvalidInputError

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog

    from floe_dagster_iceberg.engine.retry import RetrySchedule

__all__ = ["SMALL_FILE_FRACTION", "compact", "pack"]

log = logging.getLogger("floe_dagster_iceberg.engine.maintenance")

SMALL_FILE_FRACTION = 0.75
"""A data file is *small* below this fraction of the target file size (as Iceberg's own
``rewrite_data_files`` does): such files are compaction candidates and count as small in health."""


class _PartitionConflict(ValidationException):
    """A concurrent commit added or removed data files in partitions being compacted."""

    def __init__(self, message: str, partitions: set[tuple[int, Record]]) -> None:
        super().__init__(message)
        self.partitions = partitions


@dataclass
class _Bin:
    spec_id: int
    partition: Record
    files: list[DataFile]

    @property
    def bytes(self) -> int:
        return sum(f.file_size_in_bytes for f in self.files)


@dataclass
class _CompactionPlan:
    bins: list[_Bin] = field(default_factory=list)
    skipped: dict[tuple[int, Record], str] = field(default_factory=dict)


def pack(files: Iterable[DataFile], target_file_size_bytes: int) -> list[list[DataFile]]:
    """Bin-pack one partition's small files up to the target size (first fit, largest first)."""
    bins: list[list[DataFile]] = []
    free: list[int] = []
    for data_file in sorted(files, key=lambda f: (-f.file_size_in_bytes, f.file_path)):
        size = data_file.file_size_in_bytes
        for index, room in enumerate(free):
            if size <= room:
                bins[index].append(data_file)
                free[index] -= size
                break
        else:
            bins.append([data_file])
            free.append(target_file_size_bytes - size)
    return bins


def _plan_compaction(
    table: Table,
    target_file_size_bytes: int,
    min_input_files: int,
    partition_filter: BooleanExpression | None,
    excluded: dict[tuple[int, Record], str],
) -> _CompactionPlan:
    """Group small files per partition and bin-pack them (first fit, largest first)."""
    plan = _CompactionPlan()
    if table.current_snapshot() is None:
        return plan
    small_below = int(target_file_size_bytes * SMALL_FILE_FRACTION)
    candidates: dict[tuple[int, Record], list[DataFile]] = defaultdict(list)
    with_deletes: Counter[tuple[int, Record]] = Counter()
    for task in table.scan(row_filter=partition_filter or AlwaysTrue()).plan_files():
        data_file = task.file
        key = (data_file.spec_id, data_file.partition)
        if key in excluded:
            continue
        if task.delete_files:
            # Merge-on-read deletes apply to this file: leave it (and its deletes) as it is.
            with_deletes[key] += 1
            continue
        if data_file.file_size_in_bytes < small_below:
            candidates[key].append(data_file)
    for key, files in candidates.items():
        chosen = [b for b in pack(files, target_file_size_bytes) if len(b) >= min_input_files]
        plan.bins.extend(_Bin(key[0], key[1], sorted(b, key=lambda f: f.file_path)) for b in chosen)
        if with_deletes[key] and not chosen:
            plan.skipped[key] = (
                f"{with_deletes[key]} file(s) have merge-on-read delete files; they are left as they are"
            )
    return plan


def _read_data_files(table: Table, files: Sequence[DataFile]) -> pa.Table:
    """Every row of the given data files, projected onto the table's current schema."""
    from pyiceberg.io.pyarrow import ArrowScan
    from pyiceberg.table import FileScanTask

    scan = ArrowScan(table.metadata, table.io, table.schema(), AlwaysTrue())
    return scan.to_table([FileScanTask(f) for f in files])


def _sort_rows(table: Table, rows: pa.Table) -> pa.Table:
    """Order rows by the table's sort order (transforms, directions and null order honoured)."""
    sort_order = table.sort_order()
    if sort_order.is_unsorted or rows.num_rows < 2:
        return rows
    schema = table.schema()
    columns: dict[str, pa.ChunkedArray | pa.Array] = {}
    keys: list[tuple[str, str]] = []
    for position, sort_field in enumerate(sort_order.fields):
        name = schema.find_column_name(sort_field.source_id)
        if name is None or name not in rows.column_names:
            continue  # nested or dropped source column: not sortable here
        values: pa.ChunkedArray | pa.Array = rows.column(name)
        if not isinstance(sort_field.transform, IdentityTransform):
            transform = sort_field.transform.pyarrow_transform(
                schema.find_type(sort_field.source_id)
            )
            values = transform(values.combine_chunks())
        columns[f"n{position}"] = pc.is_null(values)
        columns[f"v{position}"] = values
        nulls_first = sort_field.null_order == NullOrder.NULLS_FIRST
        keys.append((f"n{position}", "descending" if nulls_first else "ascending"))
        ascending = sort_field.direction == SortDirection.ASC
        keys.append((f"v{position}", "ascending" if ascending else "descending"))
    if not keys:
        return rows
    return rows.take(pc.sort_indices(pa.table(columns), sort_keys=keys))


def _write_data_files(table: Table, rows: pa.Table) -> list[DataFile]:
    """Write ``rows`` as data files of ``table`` (one file per partition), not yet committed."""
    properties = {**table.metadata.properties, props.TARGET_FILE_SIZE: str(2**62)}
    metadata = table.metadata.model_copy(update={"properties": properties})
    return write_data_files(metadata, table.io, rows)


def compact(
    catalog: Catalog,
    table: Table,
    *,
    retry: RetryPolicy | None = None,
    target_file_size_bytes: int | None = None,
    min_input_files: int = 2,
    partition_filter: BooleanExpression | None = None,
) -> CompactionResult:
    """Bin-pack small data files per partition into files of about ``target_file_size_bytes``.

    The target defaults to the table's ``write.target-file-size-bytes`` (Iceberg's default:
    512 MiB), as Iceberg's ``rewrite_data_files`` does. A file is a candidate below 75% of the
    target size. Per partition, candidates are packed
    (largest first) into bins of at most the target size; a bin of at least
    ``min_input_files`` files is read (current schema), sorted by the table's sort order if it
    has one, and written as one new file. All bins of the table are committed as ONE
    ``replace`` snapshot: readers see the same rows and values before and after, and
    incremental readers see no new data. Files with merge-on-read delete files are left alone.

    ``partition_filter`` limits compaction to the files a scan with that row filter would read
    (whole files are rewritten, so rows outside the filter are carried along unchanged).

    A concurrent commit that adds or removes files in a partition being compacted fails
    validation: compaction is re-planned against the fresh table (so the new rows get
    compacted too); a partition that conflicts twice is skipped and reported in
    ``result.skipped``. Files written by a failed attempt are deleted. Conflicting commits are
    retried as ``retry`` says, else as the table's ``commit.retry.*`` properties say.

    Example:
        >>> import tempfile, pyarrow as pa
        >>> from pyiceberg.catalog.sql import SqlCatalog
        >>> tmp = tempfile.mkdtemp()
        >>> catalog = SqlCatalog("demo", uri=f"sqlite:///{tmp}/c.db", warehouse=f"file://{tmp}")
        >>> catalog.create_namespace("sales")
        >>> table = catalog.create_table("sales.orders", pa.schema([("id", pa.int64())]))
        >>> for start in (0, 10, 20):
        ...     table.append(pa.table({"id": list(range(start, start + 10))}))
        >>> result = compact(catalog, table)
        >>> result.files_rewritten, result.files_added, result.rows_rewritten
        (3, 1, 30)
        >>> result.target_file_size_bytes == 512 * 1024 * 1024  # the table's target
        True
    """
    if target_file_size_bytes is None:
        target_file_size_bytes = props.target_file_size(table.properties)
    if target_file_size_bytes <= 0:
        raise InvalidInputError(
            f"target_file_size_bytes must be positive, got {target_file_size_bytes}."
        )
    if min_input_files < 1:
        raise InvalidInputError(f"min_input_files must be at least 1, got {min_input_files}.")
    started = time.monotonic()
    name = table_name(table)
    schedule = resolve_retry(retry or RetryPolicy(), table.metadata.properties)
    max_attempts = schedule.max_attempts
    maintenance_id = uuid.uuid4().hex
    excluded: dict[tuple[int, Record], str] = {}
    conflicts_by_partition: Counter[tuple[int, Record]] = Counter()
    conflicts = 0
    last_error: Exception | None = None

    for attempt in range(1, max_attempts + 1):
        if attempt > 1:
            table = reload(catalog, table)
        plan = _plan_compaction(
            table, target_file_size_bytes, min_input_files, partition_filter, excluded
        )
        skipped = _skipped(table, {**plan.skipped, **excluded})
        if not plan.bins:
            return CompactionResult(
                table=name,
                snapshot_id=None,
                skipped=skipped,
                target_file_size_bytes=target_file_size_bytes,
                commit_attempts=attempt - 1,
                conflicts=conflicts,
                duration_seconds=time.monotonic() - started,
            )
        written: list[DataFile] = []
        added_by_bin: list[list[DataFile]] = []
        try:
            _rewrite_bins(table, plan.bins, written, added_by_bin)
        except FileNotFoundError as error:
            delete_quietly(table.io, [f.file_path for f in written])
            if not _moved_on(catalog, table):
                raise
            # A concurrent commit replaced files being read and an expiry deleted them: the
            # plan is stale, not the table broken. Re-plan against the fresh table.
            conflicts += 1
            last_error = error
            log.info("Compaction of %s read a file removed meanwhile; re-planning.", name)
            continue
        except BaseException:
            delete_quietly(table.io, [f.file_path for f in written])
            raise
        try:
            snapshot_id, commits = _commit_replace(
                catalog, table, schedule, plan.bins, added_by_bin, maintenance_id
            )
        except _PartitionConflict as error:
            delete_quietly(table.io, [f.file_path for f in written])
            conflicts += 1
            last_error = error
            for key in error.partitions:
                conflicts_by_partition[key] += 1
                if conflicts_by_partition[key] >= 2:
                    excluded[key] = (
                        f"concurrent writes landed in this partition during "
                        f"{conflicts_by_partition[key]} compaction attempts; left for the next run"
                    )
            log.info(
                "Compaction of %s met concurrent writes (attempt %d); re-planning.", name, attempt
            )
        except (CommitFailedException, ValidationException) as error:
            # Both guarantee the commit did not land: its files can go.
            delete_quietly(table.io, [f.file_path for f in written])
            conflicts += 1
            last_error = error
            log.info("Compaction of %s conflicted (attempt %d): %s", name, attempt, error)
        except CommitStateUnknownException as error:
            # The commit may have landed: never delete its files; look for it instead. Any
            # other error while committing propagates, files kept (orphan removal reclaims
            # them if the commit did not land).
            last_error = error
            found = find_maintenance_snapshot(reload(catalog, table), maintenance_id)
            if found is not None:
                return CompactionResult(
                    table=name,
                    snapshot_id=found.snapshot_id,
                    partitions=_partition_stats(table, plan.bins, added_by_bin),
                    skipped=skipped,
                    target_file_size_bytes=target_file_size_bytes,
                    commit_attempts=attempt,
                    conflicts=conflicts,
                    duration_seconds=time.monotonic() - started,
                )
        else:
            return CompactionResult(
                table=name,
                snapshot_id=snapshot_id,
                partitions=_partition_stats(table, plan.bins, added_by_bin),
                skipped=skipped,
                target_file_size_bytes=target_file_size_bytes,
                commit_attempts=attempt - 1 + commits,
                conflicts=conflicts + commits - 1,
                duration_seconds=time.monotonic() - started,
            )
        if attempt < max_attempts:
            time.sleep(schedule.backoff_seconds(attempt))
    raise CommitConflictError(
        f"Table '{name}': compaction still conflicted with concurrent writers after "
        f"{max_attempts} attempts ({type(last_error).__name__}: {last_error}). Nothing was "
        "committed and its files were removed; run it again when writers are quieter."
    ) from last_error


def _moved_on(catalog: Catalog, table: Table) -> bool:
    """Whether the table's current snapshot changed since ``table`` was loaded."""
    try:
        fresh = reload(catalog, table)
    except Exception:
        return False
    return fresh.metadata.current_snapshot_id != table.metadata.current_snapshot_id


def _skipped(table: Table, reasons: dict[tuple[int, Record], str]) -> tuple[SkippedPartition, ...]:
    return tuple(
        sorted(
            (
                SkippedPartition(
                    partition=partition_label(table.metadata, spec_id, partition),
                    spec_id=spec_id,
                    reason=reason,
                )
                for (spec_id, partition), reason in reasons.items()
            ),
            key=lambda s: (s.spec_id, s.partition),
        )
    )


def _rewrite_bins(
    table: Table, bins: list[_Bin], written: list[DataFile], added_by_bin: list[list[DataFile]]
) -> None:
    """Read, sort and rewrite every bin; ``written`` collects each new file as soon as it
    exists, ``added_by_bin`` the files of each bin."""
    for rewrite_bin in bins:
        rows = _sort_rows(table, _read_data_files(table, rewrite_bin.files))
        expected = sum(f.record_count for f in rewrite_bin.files)
        if rows.num_rows != expected:
            raise ValidationException(
                f"read {rows.num_rows} rows from files whose metadata says {expected}"
            )
        new_files = _write_data_files(table, rows)
        written.extend(new_files)
        added_by_bin.append(new_files)


def _commit_replace(
    catalog: Catalog,
    table: Table,
    schedule: RetrySchedule,
    bins: list[_Bin],
    added_by_bin: list[list[DataFile]],
    maintenance_id: str,
) -> tuple[int, int]:
    """Commit the rewritten bins as one ``replace`` snapshot; return its id and the attempts.

    A refused commit is re-planned (metadata only) against the fresh table while every input
    file is still live and no delete file arrived; otherwise the partitions concerned raise
    :class:`_PartitionConflict`.
    """
    change = FileChange(
        Operation.REPLACE,
        added=[f for files in added_by_bin for f in files],
        removed=[f for b in bins for f in b.files],
        scope=AlwaysTrue(),
    )
    properties = {MAINTENANCE_PROPERTY: "compaction", MAINTENANCE_ID_PROPERTY: maintenance_id}
    max_attempts = schedule.max_attempts
    current = table
    for attempt in range(1, max_attempts + 1):
        try:
            produced = produce_snapshot(current.metadata, current.io, change, properties)
        except FilesGoneError as error:
            gone = set(error.paths)
            raise _PartitionConflict(
                f"{len(gone)} file(s) being compacted were replaced concurrently",
                {
                    (b.spec_id, b.partition)
                    for b in bins
                    if any(f.file_path in gone for f in b.files)
                },
            ) from None
        pending = PendingCommit(
            current,
            produced.updates,
            (AssertTableUUID(uuid=current.metadata.table_uuid), *produced.requirements),
            produced.written,
        )
        try:
            committed = send(catalog, pending).metadata.current_snapshot_id
            assert committed is not None
            return committed, attempt
        except CommitFailedException:
            if attempt == max_attempts:
                raise
        fresh = reload(catalog, current)
        if _delete_files_count(fresh) != _delete_files_count(table):
            raise _PartitionConflict(
                "delete files were added while compacting",
                {(b.spec_id, b.partition) for b in bins},
            )
        current = fresh
        time.sleep(schedule.backoff_seconds(attempt))
    raise AssertionError("unreachable")  # pragma: no cover


def _delete_files_count(table: Table) -> int:
    snapshot = table.current_snapshot()
    summary = snapshot.summary if snapshot is not None and snapshot.summary else None
    return int(summary.get("total-delete-files") or 0) if summary is not None else 0


def _partition_stats(
    table: Table, bins: list[_Bin], added_by_bin: list[list[DataFile]]
) -> tuple[PartitionCompaction, ...]:
    totals: dict[tuple[int, Record], list[int]] = {}
    for rewrite_bin, added in zip(bins, added_by_bin, strict=True):
        key = (rewrite_bin.spec_id, rewrite_bin.partition)
        row = totals.setdefault(key, [0, 0, 0, 0, 0])
        row[0] += len(rewrite_bin.files)
        row[1] += rewrite_bin.bytes
        row[2] += len(added)
        row[3] += sum(f.file_size_in_bytes for f in added)
        row[4] += sum(f.record_count for f in rewrite_bin.files)
    return tuple(
        sorted(
            (
                PartitionCompaction(
                    partition=partition_label(table.metadata, spec_id, partition),
                    spec_id=spec_id,
                    files_rewritten=row[0],
                    bytes_rewritten=row[1],
                    files_added=row[2],
                    bytes_added=row[3],
                    rows=row[4],
                )
                for (spec_id, partition), row in totals.items()
            ),
            key=lambda p: (p.spec_id, p.partition),
        )
    )
