"""Compaction: bin-pack small data files per partition into ONE ``replace`` snapshot.

A file is small below 75% of the target file size, which is the table's
``write.target-file-size-bytes`` unless the caller gives one (as Iceberg's
``rewrite_data_files`` does). A concurrent write to a partition being compacted fails
validation; that partition is re-planned (its new rows are then compacted too) and, if writers
keep landing there, skipped and reported.

Merge-on-read deletes other engines wrote (:mod:`.deletes`): a small file with position deletes
is rewritten without its deleted rows, and the position-delete files that only deleted rows of
rewritten files are removed in the same snapshot (the new files have a newer sequence number, so
they would not apply anyway); position-delete files that also delete rows of files not rewritten
are kept. Files that equality deletes apply to are left as they are: PyIceberg cannot apply
equality deletes, and a rewritten file, being newer than them, would bring their rows back.
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
from pyiceberg.table import FileScanTask, ManifestGroupPlanner, Table
from pyiceberg.table.snapshots import Operation, ancestors_of
from pyiceberg.table.sorting import NullOrder, SortDirection
from pyiceberg.table.update import AssertTableUUID
from pyiceberg.transforms import IdentityTransform
from pyiceberg.typedef import Record

from floe_dagster_iceberg.engine import properties as props
from floe_dagster_iceberg.engine.attempt import PendingCommit, delete_quietly, send
from floe_dagster_iceberg.engine.config import RetryPolicy
from floe_dagster_iceberg.engine.data_files import write_data_files
from floe_dagster_iceberg.engine.maintenance.deletes import DeleteIndex, LiveFile
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
    deletes: dict[str, list[LiveFile]] = field(default_factory=dict)
    """Position-delete files of each rewritten file, applied when it is read."""
    deleted_rows: int = 0
    """Rows of the files that those position deletes remove."""

    @property
    def bytes(self) -> int:
        return sum(f.file_size_in_bytes for f in self.files)

    @property
    def key(self) -> tuple[int, Record]:
        return (self.spec_id, self.partition)


@dataclass
class _CompactionPlan:
    bins: list[_Bin] = field(default_factory=list)
    skipped: dict[tuple[int, Record], str] = field(default_factory=dict)
    obsolete: dict[tuple[int, Record], list[DataFile]] = field(default_factory=dict)
    """Per partition, the position-delete files that only delete rows of rewritten files."""
    planned_snapshot_id: int | None = None

    @property
    def removed(self) -> list[DataFile]:
        """Every file the compaction snapshot removes: rewritten data files, obsolete deletes."""
        return [f for b in self.bins for f in b.files] + [
            f for files in self.obsolete.values() for f in files
        ]


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


def _selected_data_files(table: Table, partition_filter: BooleanExpression) -> set[str]:
    """The data files a scan with ``partition_filter`` would read (partition and column
    statistics), planned without applying deletes (PyIceberg's scan refuses equality deletes)."""
    snapshot = table.current_snapshot()
    if snapshot is None:
        return set()
    planner = ManifestGroupPlanner(table.metadata, table.io, row_filter=partition_filter)
    return {
        entry.data_file.file_path
        for entries in planner.plan_manifest_entries(snapshot.manifests(table.io))
        for entry in entries
    }


def _plan_compaction(
    table: Table,
    target_file_size_bytes: int,
    min_input_files: int,
    partition_filter: BooleanExpression | None,
    excluded: dict[tuple[int, Record], str],
) -> _CompactionPlan:
    """Group small files per partition and bin-pack them (first fit, largest first)."""
    plan = _CompactionPlan(planned_snapshot_id=table.metadata.current_snapshot_id)
    if table.current_snapshot() is None:
        return plan
    index = DeleteIndex.of(table)
    selected = _selected_data_files(table, partition_filter) if partition_filter else None
    small_below = int(target_file_size_bytes * SMALL_FILE_FRACTION)
    candidates: dict[tuple[int, Record], list[DataFile]] = defaultdict(list)
    with_equality_deletes: Counter[tuple[int, Record]] = Counter()
    for live in index.data.values():
        key = live.partition
        if key in excluded or (selected is not None and live.path not in selected):
            continue
        if index.equality_deletes_for(live):
            with_equality_deletes[key] += 1
            continue
        if live.file.file_size_in_bytes < small_below:
            candidates[key].append(live.file)
    for key, files in candidates.items():
        chosen = [b for b in pack(files, target_file_size_bytes) if len(b) >= min_input_files]
        plan.bins.extend(_bin(index, key, b) for b in chosen)
    compacted = {b.key for b in plan.bins}
    for key, count in with_equality_deletes.items():
        if key not in compacted:
            plan.skipped[key] = (
                f"{count} file(s) have equality delete files, which compaction cannot apply; "
                "they are left as they are (Spark's rewrite_data_files applies them)"
            )
    plan.obsolete = _obsolete_deletes(index, plan.bins)
    return plan


def _bin(index: DeleteIndex, key: tuple[int, Record], files: list[DataFile]) -> _Bin:
    deletes = {f.file_path: index.position_deletes_for(f.file_path) for f in files}
    deletes = {path: found for path, found in deletes.items() if found}
    return _Bin(
        key[0],
        key[1],
        sorted(files, key=lambda f: f.file_path),
        deletes=deletes,
        deleted_rows=sum(index.deleted_positions(path) for path in deletes),
    )


def _obsolete_deletes(
    index: DeleteIndex, bins: list[_Bin]
) -> dict[tuple[int, Record], list[DataFile]]:
    """The position-delete files every live data file of which is being rewritten."""
    rewritten = {f.file_path for b in bins for f in b.files}
    seen: set[str] = set()
    obsolete: dict[tuple[int, Record], list[DataFile]] = defaultdict(list)
    for rewrite_bin in bins:
        for deletes in rewrite_bin.deletes.values():
            for delete in deletes:
                if delete.path not in seen and set(index.targets(delete)) <= rewritten:
                    obsolete[rewrite_bin.key].append(delete.file)
                seen.add(delete.path)
    return dict(obsolete)


def _read_data_files(
    table: Table, files: Sequence[DataFile], deletes: dict[str, list[LiveFile]]
) -> pa.Table:
    """Every row of the given data files that their position deletes leave, projected onto
    the table's current schema."""
    from pyiceberg.io.pyarrow import ArrowScan

    scan = ArrowScan(table.metadata, table.io, table.schema(), AlwaysTrue())
    return scan.to_table(
        [FileScanTask(f, {d.file for d in deletes.get(f.file_path, ())}) for f in files]
    )


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
    incremental readers see no new data. Position deletes (merge-on-read, e.g. from Spark) are
    applied while reading: the new files leave out the deleted rows, and position-delete files
    that only deleted rows of rewritten files are removed in the same snapshot (those that also
    delete rows of other files are kept). Files that equality deletes apply to are left alone.

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
                catalog, table, schedule, plan, added_by_bin, maintenance_id
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
                    partitions=_partition_stats(table, plan, added_by_bin),
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
                partitions=_partition_stats(table, plan, added_by_bin),
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
        rows = _read_data_files(table, rewrite_bin.files, rewrite_bin.deletes)
        expected = sum(f.record_count for f in rewrite_bin.files) - rewrite_bin.deleted_rows
        if rows.num_rows != expected:
            raise ValidationException(
                f"read {rows.num_rows} rows from files whose metadata and position deletes "
                f"say {expected}"
            )
        new_files = _write_data_files(table, _sort_rows(table, rows))
        written.extend(new_files)
        added_by_bin.append(new_files)


def _commit_replace(
    catalog: Catalog,
    table: Table,
    schedule: RetrySchedule,
    plan: _CompactionPlan,
    added_by_bin: list[list[DataFile]],
    maintenance_id: str,
) -> tuple[int, int]:
    """Commit the rewritten bins (and the position deletes they made obsolete) as one
    ``replace`` snapshot; return its id and the attempts.

    A refused commit is re-planned (metadata only) against the fresh table while every input
    file is still live and no delete file arrived; otherwise the partitions concerned raise
    :class:`_PartitionConflict`.
    """
    bins = plan.bins
    change = FileChange(
        Operation.REPLACE,
        added=[f for files in added_by_bin for f in files],
        removed=plan.removed,
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
                {b.key for b in bins if any(f.file_path in gone for f in b.files)}
                | {
                    key
                    for key, files in plan.obsolete.items()
                    if any(f.file_path in gone for f in files)
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
        if _deletes_added_since(fresh, plan.planned_snapshot_id):
            raise _PartitionConflict(
                "delete files were added while compacting", {b.key for b in bins}
            )
        current = fresh
        time.sleep(schedule.backoff_seconds(attempt))
    raise AssertionError("unreachable")  # pragma: no cover


def _deletes_added_since(table: Table, planned_snapshot_id: int | None) -> bool:
    """Whether a snapshot committed after the planned one added delete files (they may delete
    rows of files being rewritten); also when the planned snapshot is no longer an ancestor."""
    for snapshot in ancestors_of(table.current_snapshot(), table.metadata):
        if snapshot.snapshot_id == planned_snapshot_id:
            return False
        summary = snapshot.summary.additional_properties if snapshot.summary else {}
        if int(summary.get("added-delete-files") or 0):
            return True
    return planned_snapshot_id is not None


def _partition_stats(
    table: Table, plan: _CompactionPlan, added_by_bin: list[list[DataFile]]
) -> tuple[PartitionCompaction, ...]:
    totals: dict[tuple[int, Record], list[int]] = {}
    for rewrite_bin, added in zip(plan.bins, added_by_bin, strict=True):
        row = totals.setdefault(rewrite_bin.key, [0, 0, 0, 0, 0, 0, 0])
        row[0] += len(rewrite_bin.files)
        row[1] += rewrite_bin.bytes
        row[2] += len(added)
        row[3] += sum(f.file_size_in_bytes for f in added)
        row[4] += sum(f.record_count for f in added)
        row[5] += rewrite_bin.deleted_rows
    for key, obsolete in plan.obsolete.items():
        totals[key][6] += len(obsolete)
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
                    position_deletes_applied=row[5],
                    delete_files_removed=row[6],
                )
                for (spec_id, partition), row in totals.items()
            ),
            key=lambda p: (p.spec_id, p.partition),
        )
    )
