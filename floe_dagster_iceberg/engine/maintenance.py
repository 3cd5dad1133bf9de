"""Table maintenance: compaction, snapshot expiry that frees storage, orphan removal, manifest
rewrite and storage health.

PyIceberg 0.12 ships only ``expire_snapshots``, which edits metadata and deletes no file. This
module adds the rest on top of PyIceberg's own transaction machinery, so every change is one
atomic catalog commit and concurrent writers are detected instead of overwritten:

- :func:`compact` bin-packs small data files per partition and commits ONE ``replace`` snapshot
  per table that removes the small files and adds the rewritten ones. A concurrent write to a
  partition being compacted fails validation; that partition is re-planned (its new rows are
  then compacted too) and, if writers keep landing there, skipped and reported.
- :func:`expire_snapshots` expires snapshots with the table's standard ``history.expire.*``
  properties as defaults, then deletes the files that only expired snapshots referenced.
- :func:`remove_orphan_files` deletes files under the table location that no metadata
  references, guarded by an age threshold so in-flight writes are never touched.
- :func:`rewrite_manifests` rewrites the current snapshot's data manifests into few manifests
  clustered by partition.
- :func:`table_health` reports storage metrics.

The functions take the :class:`~floe_dagster_iceberg.engine.manager.IcebergTableManager` first; use
them through its methods (``manager.compact("sales.orders")``).
"""

from __future__ import annotations

import logging
import math
import os
import posixpath
import random
import re
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field
from pyiceberg.exceptions import (
    CommitFailedException,
    CommitStateUnknownException,
    ValidationException,
)
from pyiceberg.expressions import AlwaysTrue, BooleanExpression
from pyiceberg.manifest import (
    DataFile,
    DataFileContent,
    ManifestContent,
    ManifestEntry,
    ManifestEntryStatus,
    ManifestFile,
)
from pyiceberg.table import Table
from pyiceberg.table.refs import SnapshotRefType
from pyiceberg.table.snapshots import Operation, Snapshot, Summary, ancestors_of
from pyiceberg.table.sorting import NullOrder, SortDirection
from pyiceberg.table.update import AssertTableUUID
from pyiceberg.transforms import IdentityTransform
from pyiceberg.typedef import EMPTY_DICT, Record

from floe_dagster_iceberg.engine._pyiceberg import SnapshotProducer
from floe_dagster_iceberg.engine.commit import PendingCommit, resolve_retry, send
from floe_dagster_iceberg.engine.data_files import write_data_files
from floe_dagster_iceberg.engine.snapshot import FileChange, FilesGoneError, produce_snapshot
from floe_dagster_iceberg.errors import CommitConflictError, IcebergError, InvalidInputError

if TYPE_CHECKING:
    from pyiceberg.io import FileIO
    from pyiceberg.table.metadata import TableMetadata

    from floe_dagster_iceberg.engine.manager import IcebergTableManager

__all__ = [
    "DEFAULT_MAX_SNAPSHOT_AGE",
    "DEFAULT_ORPHAN_AGE",
    "DEFAULT_TARGET_FILE_SIZE_BYTES",
    "CompactionResult",
    "ExpireSnapshotsResult",
    "OrphanFilesResult",
    "PartitionCompaction",
    "RewriteManifestsResult",
    "SkippedPartition",
    "TableHealth",
    "compact",
    "expire_snapshots",
    "remove_orphan_files",
    "rewrite_manifests",
    "table_health",
]

log = logging.getLogger("floe_dagster_iceberg.engine.maintenance")

DEFAULT_TARGET_FILE_SIZE_BYTES = 128 * 1024 * 1024
"""Target size of a compacted data file when neither the caller nor the table says otherwise."""

SMALL_FILE_FRACTION = 0.75
"""A data file is *small* below this fraction of the target file size (as Iceberg's own
``rewrite_data_files`` does): such files are compaction candidates and count as small in health."""

DEFAULT_MAX_SNAPSHOT_AGE = timedelta(days=7)
"""Iceberg's default for ``history.expire.max-snapshot-age-ms``."""

DEFAULT_MIN_SNAPSHOTS_TO_KEEP = 1
"""Iceberg's default for ``history.expire.min-snapshots-to-keep``."""

DEFAULT_ORPHAN_AGE = timedelta(days=3)
"""Files younger than this are never treated as orphans: a writer may still be committing them."""

MAX_SNAPSHOT_AGE_PROPERTY = "history.expire.max-snapshot-age-ms"
MIN_SNAPSHOTS_TO_KEEP_PROPERTY = "history.expire.min-snapshots-to-keep"
TARGET_FILE_SIZE_PROPERTY = "write.target-file-size-bytes"
MANIFEST_TARGET_SIZE_PROPERTY = "commit.manifest.target-size-bytes"
MANIFEST_TARGET_SIZE_DEFAULT = 8 * 1024 * 1024

MAINTENANCE_PROPERTY = "floe.maintenance"
"""Snapshot summary property naming the maintenance action that produced a snapshot."""
MAINTENANCE_ID_PROPERTY = "floe.maintenance-id"
"""Snapshot summary property carrying the id of one maintenance call (finds a commit whose outcome
was unknown)."""

UNPARTITIONED = "unpartitioned"
"""Partition label used in results for the single partition of an unpartitioned table."""

_PROTECTED_FILE_NAMES = frozenset({"version-hint.text"})
_METADATA_VERSION = re.compile(r"^v?(?P<version>\d+)[-.]")
_DELETE_WORKERS = 8
_VANISHED_RELOADS = 5
"""Reloads allowed when files being read keep vanishing under concurrent snapshot expiries."""
_MISSING_MARKERS = ("not found", "no such file", "does not exist", "nosuchkey")


# ============================================================================ result models


class _Result(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PartitionCompaction(_Result):
    """What compaction did in one partition.

    Example:
        >>> p = PartitionCompaction(partition="region=eu", spec_id=0, files_rewritten=40,
        ...                         bytes_rewritten=80_000, files_added=1, bytes_added=9_000, rows=400)
        >>> p.files_rewritten - p.files_added
        39
    """

    partition: str
    spec_id: int
    files_rewritten: int
    bytes_rewritten: int
    files_added: int
    bytes_added: int
    rows: int


class SkippedPartition(_Result):
    """A partition compaction left alone, and why.

    Example:
        >>> SkippedPartition(partition="day=2024-01-01", spec_id=0, reason="concurrent writes").reason
        'concurrent writes'
    """

    partition: str
    spec_id: int
    reason: str


class CompactionResult(_Result):
    """The outcome of :func:`compact`: one ``replace`` snapshot, or nothing when no partition
    had enough small files.

    Example:
        >>> result = CompactionResult(table="sales.orders", snapshot_id=None)
        >>> result.committed, result.files_rewritten
        (False, 0)
    """

    table: str
    snapshot_id: int | None
    partitions: tuple[PartitionCompaction, ...] = ()
    skipped: tuple[SkippedPartition, ...] = ()
    target_file_size_bytes: int = DEFAULT_TARGET_FILE_SIZE_BYTES
    commit_attempts: int = 0
    conflicts: int = Field(default=0, description="attempts that met a concurrent commit")
    duration_seconds: float = 0.0

    @property
    def committed(self) -> bool:
        return self.snapshot_id is not None

    @property
    def files_rewritten(self) -> int:
        return sum(p.files_rewritten for p in self.partitions)

    @property
    def bytes_rewritten(self) -> int:
        return sum(p.bytes_rewritten for p in self.partitions)

    @property
    def files_added(self) -> int:
        return sum(p.files_added for p in self.partitions)

    @property
    def bytes_added(self) -> int:
        return sum(p.bytes_added for p in self.partitions)

    @property
    def rows_rewritten(self) -> int:
        return sum(p.rows for p in self.partitions)

    def as_metrics(self) -> dict[str, int | float | str | None]:
        """Flat metrics for run metadata and observations."""
        return {
            "snapshot_id": self.snapshot_id,
            "partitions_compacted": len(self.partitions),
            "partitions_skipped": len(self.skipped),
            "files_rewritten": self.files_rewritten,
            "bytes_rewritten": self.bytes_rewritten,
            "files_added": self.files_added,
            "bytes_added": self.bytes_added,
            "rows_rewritten": self.rows_rewritten,
            "commit_attempts": self.commit_attempts,
            "conflicts": self.conflicts,
            "duration_seconds": round(self.duration_seconds, 3),
        }


class ExpireSnapshotsResult(_Result):
    """The outcome of :func:`expire_snapshots`: which snapshots went and which files were freed.

    Example:
        >>> result = ExpireSnapshotsResult(table="sales.orders", older_than=datetime(2024, 1, 1),
        ...                                retain_last=1, data_files_deleted=3, manifests_deleted=2)
        >>> result.files_deleted
        5
    """

    table: str
    older_than: datetime
    retain_last: int
    expired_snapshot_ids: tuple[int, ...] = ()
    snapshots_kept: int = 0
    data_files_deleted: int = 0
    delete_files_deleted: int = 0
    manifests_deleted: int = 0
    manifest_lists_deleted: int = 0
    metadata_files_deleted: int = 0
    statistics_files_deleted: int = 0
    bytes_freed: int = 0
    files_missing: int = Field(default=0, description="files already gone when deleting them")
    failed_deletes: tuple[str, ...] = ()
    metadata_reloads: int = Field(
        default=0,
        description="times the table was reloaded because a concurrent expiry removed a "
        "metadata file being read",
    )
    cleanup_skipped: str | None = Field(
        default=None,
        description="why no file was deleted after the expiry committed (orphan removal "
        "reclaims them later)",
    )
    duration_seconds: float = 0.0

    @property
    def snapshots_expired(self) -> int:
        return len(self.expired_snapshot_ids)

    @property
    def files_deleted(self) -> int:
        return (
            self.data_files_deleted
            + self.delete_files_deleted
            + self.manifests_deleted
            + self.manifest_lists_deleted
            + self.metadata_files_deleted
            + self.statistics_files_deleted
        )

    def as_metrics(self) -> dict[str, int | float | str | None]:
        """Flat metrics for run metadata and observations."""
        return {
            "older_than": self.older_than.isoformat(),
            "retain_last": self.retain_last,
            "snapshots_expired": self.snapshots_expired,
            "snapshots_kept": self.snapshots_kept,
            "data_files_deleted": self.data_files_deleted,
            "delete_files_deleted": self.delete_files_deleted,
            "manifests_deleted": self.manifests_deleted,
            "manifest_lists_deleted": self.manifest_lists_deleted,
            "metadata_files_deleted": self.metadata_files_deleted,
            "statistics_files_deleted": self.statistics_files_deleted,
            "files_deleted": self.files_deleted,
            "bytes_freed": self.bytes_freed,
            "failed_deletes": len(self.failed_deletes),
            "metadata_reloads": self.metadata_reloads,
            "cleanup_skipped": self.cleanup_skipped,
            "duration_seconds": round(self.duration_seconds, 3),
        }


class OrphanFilesResult(_Result):
    """The outcome of :func:`remove_orphan_files`.

    ``orphan_files`` lists every unreferenced file old enough to remove (deleted unless
    ``dry_run``); ``too_recent`` counts unreferenced files spared by the age guard.

    Example:
        >>> result = OrphanFilesResult(table="sales.orders", location="file:///w/sales/orders",
        ...     older_than=datetime(2024, 1, 1), dry_run=True, orphan_files=("file:///w/x.parquet",))
        >>> result.files_deleted
        0
    """

    table: str
    location: str
    older_than: datetime
    dry_run: bool
    files_scanned: int = 0
    referenced_files: int = 0
    orphan_files: tuple[str, ...] = ()
    orphan_bytes: int = 0
    too_recent: int = 0
    files_deleted: int = 0
    bytes_freed: int = 0
    failed_deletes: tuple[str, ...] = ()
    metadata_reloads: int = Field(
        default=0,
        description="times the table was reloaded because a concurrent expiry removed a "
        "metadata file being read",
    )
    skipped: str | None = Field(
        default=None, description="why nothing was deleted, when the run had to give up"
    )
    duration_seconds: float = 0.0

    def as_metrics(self) -> dict[str, int | float | str | None]:
        """Flat metrics for run metadata and observations."""
        return {
            "older_than": self.older_than.isoformat(),
            "dry_run": str(self.dry_run).lower(),
            "files_scanned": self.files_scanned,
            "referenced_files": self.referenced_files,
            "orphan_files": len(self.orphan_files),
            "orphan_bytes": self.orphan_bytes,
            "too_recent": self.too_recent,
            "files_deleted": self.files_deleted,
            "bytes_freed": self.bytes_freed,
            "failed_deletes": len(self.failed_deletes),
            "metadata_reloads": self.metadata_reloads,
            "skipped": self.skipped,
            "duration_seconds": round(self.duration_seconds, 3),
        }


class RewriteManifestsResult(_Result):
    """The outcome of :func:`rewrite_manifests`.

    Example:
        >>> result = RewriteManifestsResult(table="sales.orders", snapshot_id=7,
        ...     manifests_before=120, manifests_after=2, manifests_replaced=120, manifests_created=2)
        >>> result.committed
        True
    """

    table: str
    snapshot_id: int | None
    manifests_before: int = 0
    manifests_after: int = 0
    manifests_replaced: int = 0
    manifests_created: int = 0
    entries_rewritten: int = 0
    commit_attempts: int = 0
    duration_seconds: float = 0.0

    @property
    def committed(self) -> bool:
        return self.snapshot_id is not None

    def as_metrics(self) -> dict[str, int | float | str | None]:
        """Flat metrics for run metadata and observations."""
        return {
            "snapshot_id": self.snapshot_id,
            "manifests_before": self.manifests_before,
            "manifests_after": self.manifests_after,
            "manifests_replaced": self.manifests_replaced,
            "manifests_created": self.manifests_created,
            "entries_rewritten": self.entries_rewritten,
            "duration_seconds": round(self.duration_seconds, 3),
        }


class TableHealth(_Result):
    """Storage metrics of a table's current snapshot.

    ``small_files`` counts every data file below ``small_file_threshold_bytes``;
    ``compactable_small_files`` only those that :func:`compact` can merge: small files that
    share their partition with enough other small files (``min_input_files``, packed up to the
    target file size) and carry no merge-on-read deletes. A lone small file in its partition,
    as a daily backfill leaves in every day, is small but not compactable.

    ``last_commit_at`` is the newest snapshot (any operation, compaction included);
    ``last_data_change_at`` the newest snapshot on the current branch that changed data (not a
    ``replace``), which is what staleness means to a reader.

    Example:
        >>> health = TableHealth(table="sales.orders", data_files=10, small_files=8,
        ...                      small_file_ratio=0.8, compactable_small_files=8,
        ...                      compactable_small_file_ratio=0.8)
        >>> health.needs_compaction(max_small_file_ratio=0.5)
        True
        >>> TableHealth(table="sales.orders", data_files=10, small_files=8,
        ...             small_file_ratio=0.8).needs_compaction()  # one small file per partition
        False
    """

    table: str
    snapshot_id: int | None = None
    data_files: int = 0
    total_bytes: int = 0
    small_files: int = 0
    small_file_ratio: float = 0.0
    small_file_threshold_bytes: int = 0
    compactable_small_files: int = 0
    compactable_small_file_ratio: float = 0.0
    average_file_size_bytes: float = 0.0
    partitions: int = 0
    rows: int = 0
    snapshots: int = 0
    manifests: int = 0
    delete_files: int = 0
    last_commit_at: datetime | None = None
    last_data_change_at: datetime | None = None
    seconds_since_last_commit: float | None = None
    seconds_since_last_data_change: float | None = None
    oldest_snapshot_at: datetime | None = None

    def needs_compaction(self, max_small_file_ratio: float = 0.5, min_small_files: int = 2) -> bool:
        """Whether enough small files that compaction can merge piled up to make it worth a run.

        Lone small files (one per partition) do not count: compaction cannot merge them.
        """
        return (
            self.compactable_small_files >= min_small_files
            and self.compactable_small_file_ratio > max_small_file_ratio
        )

    def as_metrics(self) -> dict[str, int | float | str | None]:
        """Flat metrics for run metadata and observations."""
        return {
            "snapshot_id": self.snapshot_id,
            "data_files": self.data_files,
            "total_bytes": self.total_bytes,
            "small_files": self.small_files,
            "small_file_ratio": round(self.small_file_ratio, 4),
            "small_file_threshold_bytes": self.small_file_threshold_bytes,
            "compactable_small_files": self.compactable_small_files,
            "compactable_small_file_ratio": round(self.compactable_small_file_ratio, 4),
            "average_file_size_bytes": round(self.average_file_size_bytes, 1),
            "partitions": self.partitions,
            "rows": self.rows,
            "snapshots": self.snapshots,
            "manifests": self.manifests,
            "delete_files": self.delete_files,
            "last_commit_at": self.last_commit_at.isoformat() if self.last_commit_at else None,
            "last_data_change_at": (
                self.last_data_change_at.isoformat() if self.last_data_change_at else None
            ),
            "seconds_since_last_commit": (
                None
                if self.seconds_since_last_commit is None
                else round(self.seconds_since_last_commit, 1)
            ),
            "seconds_since_last_data_change": (
                None
                if self.seconds_since_last_data_change is None
                else round(self.seconds_since_last_data_change, 1)
            ),
        }


# ============================================================================ shared helpers


def _name(table: Table) -> str:
    return ".".join(table.name())


def _reload(manager: IcebergTableManager, table: Table) -> Table:
    return manager.catalog.load_table(table.name())


_T = TypeVar("_T")


class _KeptVanishing(IcebergError):
    """Metadata files kept vanishing under concurrent expiries, reload after reload."""


def _vanished(error: BaseException) -> bool:
    """Whether ``error`` says a file is gone (a concurrent expiry or cleanup deleted it)."""
    if isinstance(error, FileNotFoundError):
        return True
    text = str(error).lower()
    return isinstance(error, OSError) and any(marker in text for marker in _MISSING_MARKERS)


def _read_fresh(
    manager: IcebergTableManager, table: Table, read: Callable[[Table], _T], what: str
) -> tuple[_T, Table, int]:
    """``read(table)``; when a file it reads has vanished, reload the table and read again.

    A snapshot expiry commits new metadata first and then deletes the manifest lists,
    manifests and data files only the expired snapshots used, so a reader still holding the
    older metadata finds them gone; the reloaded metadata no longer references them. Returns
    what ``read`` returned, the table it read and the number of reloads; gives up with
    :class:`_KeptVanishing` after ``_VANISHED_RELOADS`` reloads.
    """
    reloads = 0
    while True:
        try:
            return read(table), table, reloads
        except Exception as error:
            if not _vanished(error):
                raise
            if reloads >= _VANISHED_RELOADS:
                raise _KeptVanishing(
                    f"Table '{_name(table)}': files kept vanishing while {what} read the "
                    f"table's metadata ({reloads} reloads; last: {error}); concurrent snapshot "
                    "expiries are running. Run it again once they are done."
                ) from error
            reloads += 1
            log.info(
                "%s of %s: a file vanished under a concurrent expiry (%s); reloading the table.",
                what,
                _name(table),
                error,
            )
            table = _reload(manager, table)


def _policy(manager: IcebergTableManager, table: Table) -> tuple[int, float, float]:
    """Attempts and backoff for a maintenance commit: the manager's policy, else the table's."""
    retry = resolve_retry(manager.retry, table.metadata.properties)
    return retry.max_attempts, retry.initial_backoff_seconds, retry.max_backoff_seconds


def _backoff(attempt: int, initial: float, ceiling: float) -> None:
    upper = min(ceiling, initial * 2 ** (attempt - 1))
    time.sleep(random.uniform(upper / 2, upper))


def _now() -> datetime:
    return datetime.now(UTC)


def _ms_to_datetime(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def _live(entry: ManifestEntry) -> bool:
    return entry.status != ManifestEntryStatus.DELETED


def _partition_label(table_metadata: TableMetadata, spec_id: int, partition: Record) -> str:
    spec = table_metadata.specs()[spec_id]
    if spec.is_unpartitioned():
        return UNPARTITIONED
    partition_type = spec.partition_type(table_metadata.schema())
    parts = []
    for position, spec_field in enumerate(spec.fields):
        value = spec_field.transform.to_human_string(
            partition_type.fields[position].field_type, value=partition[position]
        )
        parts.append(f"{spec_field.name}={value}")
    return "/".join(parts)


def _current_entries(table: Table) -> Iterator[tuple[ManifestFile, ManifestEntry]]:
    snapshot = table.current_snapshot()
    if snapshot is None:
        return
    for manifest in snapshot.manifests(table.io):
        for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=True):
            yield manifest, entry


# ============================================================================ compaction


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


def _pack(files: Iterable[DataFile], target_file_size_bytes: int) -> list[list[DataFile]]:
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
        chosen = [b for b in _pack(files, target_file_size_bytes) if len(b) >= min_input_files]
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
    properties = {**table.metadata.properties, TARGET_FILE_SIZE_PROPERTY: str(2**62)}
    metadata = table.metadata.model_copy(update={"properties": properties})
    return write_data_files(metadata, table.io, rows)


def _delete_quietly(table: Table, paths: Iterable[str]) -> None:
    for path in paths:
        try:
            table.io.delete(path)
        except Exception:  # best effort: orphan removal catches anything left
            log.warning("Could not delete uncommitted file %s", path, exc_info=True)


def _find_maintenance_snapshot(table: Table, maintenance_id: str) -> Snapshot | None:
    for snapshot in table.snapshots():
        if (
            snapshot.summary is not None
            and snapshot.summary[MAINTENANCE_ID_PROPERTY] == maintenance_id
        ):
            return snapshot
    return None


def compact(
    manager: IcebergTableManager,
    table: Table,
    *,
    target_file_size_bytes: int = DEFAULT_TARGET_FILE_SIZE_BYTES,
    min_input_files: int = 2,
    partition_filter: BooleanExpression | None = None,
) -> CompactionResult:
    """Bin-pack small data files per partition into files of about ``target_file_size_bytes``.

    A file is a candidate below 75% of the target size. Per partition, candidates are packed
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
    ``result.skipped``. Files written by a failed attempt are deleted.

    Example:
        >>> # result = manager.compact("sales.orders", target_file_size_bytes=64 * 1024**2)
        >>> # result.files_rewritten, result.files_added
    """
    if target_file_size_bytes <= 0:
        raise InvalidInputError(
            f"target_file_size_bytes must be positive, got {target_file_size_bytes}."
        )
    if min_input_files < 1:
        raise InvalidInputError(f"min_input_files must be at least 1, got {min_input_files}.")
    started = time.monotonic()
    name = _name(table)
    max_attempts, initial, ceiling = _policy(manager, table)
    maintenance_id = uuid.uuid4().hex
    excluded: dict[tuple[int, Record], str] = {}
    conflicts_by_partition: Counter[tuple[int, Record]] = Counter()
    conflicts = 0
    last_error: Exception | None = None

    for attempt in range(1, max_attempts + 1):
        if attempt > 1:
            table = _reload(manager, table)
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
            _delete_quietly(table, (f.file_path for f in written))
            if not _moved_on(manager, table):
                raise
            # A concurrent commit replaced files being read and an expiry deleted them: the
            # plan is stale, not the table broken. Re-plan against the fresh table.
            conflicts += 1
            last_error = error
            log.info("Compaction of %s read a file removed meanwhile; re-planning.", name)
            continue
        except BaseException:
            _delete_quietly(table, (f.file_path for f in written))
            raise
        try:
            snapshot_id, commits = _commit_replace(
                manager, table, plan.bins, added_by_bin, maintenance_id
            )
        except _PartitionConflict as error:
            _delete_quietly(table, (f.file_path for f in written))
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
            _delete_quietly(table, (f.file_path for f in written))
            conflicts += 1
            last_error = error
            log.info("Compaction of %s conflicted (attempt %d): %s", name, attempt, error)
        except CommitStateUnknownException as error:
            # The commit may have landed: never delete its files; look for it instead. Any
            # other error while committing propagates, files kept (orphan removal reclaims
            # them if the commit did not land).
            last_error = error
            found = _find_maintenance_snapshot(_reload(manager, table), maintenance_id)
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
            _backoff(attempt, initial, ceiling)
    raise CommitConflictError(
        f"Table '{name}': compaction still conflicted with concurrent writers after "
        f"{max_attempts} attempts ({type(last_error).__name__}: {last_error}). Nothing was "
        "committed and its files were removed; run it again when writers are quieter."
    ) from last_error


def _moved_on(manager: IcebergTableManager, table: Table) -> bool:
    """Whether the table's current snapshot changed since ``table`` was loaded."""
    try:
        fresh = _reload(manager, table)
    except Exception:
        return False
    return fresh.metadata.current_snapshot_id != table.metadata.current_snapshot_id


def _skipped(table: Table, reasons: dict[tuple[int, Record], str]) -> tuple[SkippedPartition, ...]:
    return tuple(
        sorted(
            (
                SkippedPartition(
                    partition=_partition_label(table.metadata, spec_id, partition),
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
    manager: IcebergTableManager,
    table: Table,
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
    max_attempts, initial, ceiling = _policy(manager, table)
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
            committed = send(manager.catalog, pending).metadata.current_snapshot_id
            assert committed is not None
            return committed, attempt
        except CommitFailedException:
            if attempt == max_attempts:
                raise
        fresh = _reload(manager, current)
        if _delete_files_count(fresh) != _delete_files_count(table):
            raise _PartitionConflict(
                "delete files were added while compacting",
                {(b.spec_id, b.partition) for b in bins},
            )
        current = fresh
        _backoff(attempt, initial, ceiling)
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
                    partition=_partition_label(table.metadata, spec_id, partition),
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


# ============================================================================ file reachability


@dataclass
class _Reachable:
    """Files a set of snapshots references, by kind."""

    manifest_lists: set[str] = field(default_factory=set)
    manifests: dict[str, ManifestFile] = field(default_factory=dict)
    data_files: dict[str, int] = field(default_factory=dict)
    delete_files: dict[str, int] = field(default_factory=dict)
    metadata_files: set[str] = field(default_factory=set)  # metadata JSON, statistics

    def all_paths(self) -> set[str]:
        return (
            self.manifest_lists
            | set(self.manifests)
            | set(self.data_files)
            | set(self.delete_files)
            | self.metadata_files
        )

    def update(self, other: _Reachable) -> None:
        self.manifest_lists |= other.manifest_lists
        for path, manifest in other.manifests.items():
            self.manifests.setdefault(path, manifest)
        self.data_files.update(other.data_files)
        self.delete_files.update(other.delete_files)
        self.metadata_files |= other.metadata_files


def _manifests_of(
    io: FileIO, snapshots: Iterable[Snapshot], into: _Reachable, *, missing_ok: bool = False
) -> None:
    """Add the snapshots' manifest lists and manifests; ``missing_ok`` skips vanished lists."""
    for snapshot in snapshots:
        into.manifest_lists.add(snapshot.manifest_list)
        try:
            manifests = snapshot.manifests(io)
        except Exception as error:
            if not (missing_ok and _vanished(error)):
                raise
            continue
        for manifest in manifests:
            into.manifests.setdefault(manifest.manifest_path, manifest)


def _files_of(
    io: FileIO,
    manifests: Iterable[ManifestFile],
    into: _Reachable,
    *,
    live_only: bool,
    missing_ok: bool = False,
) -> None:
    """Add the data and delete files of the manifests; ``missing_ok`` skips vanished ones."""

    def read(manifest: ManifestFile) -> list[ManifestEntry]:
        try:
            return manifest.fetch_manifest_entry(io, discard_deleted=live_only)
        except Exception as error:
            if missing_ok and _vanished(error):
                return []
            raise

    with ThreadPoolExecutor(max_workers=_DELETE_WORKERS) as pool:
        for entries in pool.map(read, list(manifests)):
            for entry in entries:
                data_file = entry.data_file
                target = (
                    into.data_files
                    if data_file.content == DataFileContent.DATA
                    else into.delete_files
                )
                target[data_file.file_path] = data_file.file_size_in_bytes


def _statistics_paths(metadata: TableMetadata) -> dict[str, int]:
    paths: dict[str, int] = {}
    for statistics in (*metadata.statistics, *metadata.partition_statistics):
        paths[statistics.statistics_path] = statistics.file_size_in_bytes
    return paths


@dataclass
class _Deletion:
    deleted: int = 0
    bytes: int = 0
    missing: int = 0
    failed: list[str] = field(default_factory=list)


def _delete_files(table: Table, files: dict[str, int | None]) -> dict[str, _Deletion]:
    """Delete files (``path -> size``, ``None`` = unknown, looked up first); tally per path."""

    def delete(item: tuple[str, int | None]) -> tuple[str, str, int]:
        path, size = item
        try:
            if size is None:
                size = len(table.io.new_input(path))
            table.io.delete(path)
            return path, "deleted", size
        except FileNotFoundError:
            return path, "missing", 0
        except Exception as error:
            if "not found" in str(error).lower() or "no such" in str(error).lower():
                return path, "missing", 0
            log.warning("Could not delete %s: %s", path, error)
            return path, "failed", 0

    outcome: dict[str, _Deletion] = {}
    with ThreadPoolExecutor(max_workers=_DELETE_WORKERS) as pool:
        for path, status, size in pool.map(delete, files.items()):
            tally = outcome.setdefault(path, _Deletion())
            if status == "deleted":
                tally.deleted, tally.bytes = 1, size
            elif status == "missing":
                tally.missing = 1
            else:
                tally.failed.append(path)
    return outcome


# ============================================================================ snapshot expiry


def _resolve_cutoff(
    table: Table, older_than: datetime | timedelta | None, now: datetime
) -> datetime:
    if older_than is None:
        max_age_ms = int(
            table.properties.get(
                MAX_SNAPSHOT_AGE_PROPERTY, int(DEFAULT_MAX_SNAPSHOT_AGE.total_seconds() * 1000)
            )
        )
        return now - timedelta(milliseconds=max_age_ms)
    if isinstance(older_than, timedelta):
        if older_than < timedelta(0):
            raise InvalidInputError(f"older_than must not be negative, got {older_than}.")
        return now - older_than
    if older_than.tzinfo is None:
        return older_than.replace(tzinfo=UTC)
    return older_than


def _snapshots_to_expire(
    metadata: TableMetadata, cutoff_ms: int, retain_last: int, now_ms: int
) -> set[int]:
    """Snapshots older than the cutoff that no ref retains.

    Every branch and tag head is kept; each branch also keeps its ``retain_last`` newest
    ancestors (or the branch's own ``min-snapshots-to-keep``) and its ancestors younger than its
    own ``max-snapshot-age-ms`` when it sets one.
    """
    retained: set[int] = set()
    for ref in metadata.refs.values():
        retained.add(ref.snapshot_id)
        if ref.snapshot_ref_type != SnapshotRefType.BRANCH:
            continue
        keep = ref.min_snapshots_to_keep or retain_last
        branch_cutoff = now_ms - ref.max_snapshot_age_ms if ref.max_snapshot_age_ms else cutoff_ms
        head = metadata.snapshot_by_id(ref.snapshot_id)
        for index, snapshot in enumerate(ancestors_of(head, metadata)):
            if index < keep or snapshot.timestamp_ms >= branch_cutoff:
                retained.add(snapshot.snapshot_id)
    return {
        s.snapshot_id
        for s in metadata.snapshots
        if s.timestamp_ms < cutoff_ms and s.snapshot_id not in retained
    }


def expire_snapshots(
    manager: IcebergTableManager,
    table: Table,
    *,
    older_than: datetime | timedelta | None = None,
    retain_last: int | None = None,
) -> ExpireSnapshotsResult:
    """Expire old snapshots, then delete every file that only they referenced.

    Defaults come from the table's standard properties: ``history.expire.max-snapshot-age-ms``
    (7 days) for ``older_than`` and ``history.expire.min-snapshots-to-keep`` (1) for
    ``retain_last``. Branch and tag heads are always kept, so are each branch's newest
    ``retain_last`` ancestors. After the metadata commit succeeded (never before), the data
    files, delete files, manifests, manifest lists and statistics files reachable from an
    expired snapshot and from no kept one are deleted, and so are metadata JSON files older than
    the oldest entry of the metadata log (``write.metadata.previous-versions-max``).

    Example:
        >>> # result = manager.expire_snapshots("sales.orders", older_than=timedelta(days=1))
        >>> # result.snapshots_expired, result.bytes_freed
    """
    started = time.monotonic()
    name = _name(table)
    now = _now()
    cutoff = _resolve_cutoff(table, older_than, now)
    if retain_last is None:
        retain_last = int(
            table.properties.get(MIN_SNAPSHOTS_TO_KEEP_PROPERTY, DEFAULT_MIN_SNAPSHOTS_TO_KEEP)
        )
    if retain_last < 1:
        raise InvalidInputError(f"retain_last must be at least 1, got {retain_last}.")
    cutoff_ms = int(cutoff.timestamp() * 1000)
    now_ms = int(now.timestamp() * 1000)
    max_attempts, initial, ceiling = _policy(manager, table)

    before = table.metadata
    to_expire: set[int] = set()
    for attempt in range(1, max_attempts + 1):
        current = table if attempt == 1 else _reload(manager, table)
        # The commit updates ``current`` in place: keep the metadata it started from.
        before = current.metadata
        to_expire = _snapshots_to_expire(before, cutoff_ms, retain_last, now_ms)
        if not to_expire:
            break
        try:
            current.maintenance.expire_snapshots().by_ids(sorted(to_expire)).commit()
            break
        except (CommitFailedException, CommitStateUnknownException, ValueError) as error:
            # ValueError: a snapshot to expire vanished meanwhile (a concurrent expiry).
            refreshed = _reload(manager, table)
            remaining = {s.snapshot_id for s in refreshed.snapshots()}
            if isinstance(error, CommitStateUnknownException) and not to_expire & remaining:
                break
            if attempt == max_attempts:
                raise CommitConflictError(
                    f"Table '{name}': snapshot expiry kept conflicting with concurrent commits "
                    f"after {max_attempts} attempts ({error}). No file was deleted."
                ) from error
            log.info("Snapshot expiry of %s conflicted (attempt %d): %s", name, attempt, error)
            _backoff(attempt, initial, ceiling)

    after = _reload(manager, table)
    kept_ids = {s.snapshot_id for s in after.snapshots()}
    expired = [s for s in before.snapshots if s.snapshot_id not in kept_ids]
    cleanup_skipped = None
    try:
        tallies, after, reloads = _delete_unreachable(manager, before, after, expired)
    except _KeptVanishing as error:
        # The expiry itself committed; its files stay for orphan removal to reclaim.
        log.warning("%s", error)
        tallies, reloads, cleanup_skipped = {}, _VANISHED_RELOADS, str(error)
    old_metadata = _old_metadata_files(after)
    metadata_tally = _delete_files(after, dict.fromkeys(old_metadata))

    def total(kind: str) -> int:
        return sum(t.deleted for t in tallies.get(kind, {}).values())

    every = [t for kind in tallies.values() for t in kind.values()] + list(metadata_tally.values())
    return ExpireSnapshotsResult(
        table=name,
        older_than=cutoff,
        retain_last=retain_last,
        expired_snapshot_ids=tuple(sorted(s.snapshot_id for s in expired)),
        snapshots_kept=len(kept_ids),
        data_files_deleted=total("data"),
        delete_files_deleted=total("delete"),
        manifests_deleted=total("manifest"),
        manifest_lists_deleted=total("manifest_list"),
        statistics_files_deleted=total("statistics"),
        metadata_files_deleted=sum(t.deleted for t in metadata_tally.values()),
        bytes_freed=sum(t.bytes for t in every),
        files_missing=sum(t.missing for t in every),
        failed_deletes=tuple(sorted(p for t in every for p in t.failed)),
        metadata_reloads=reloads,
        cleanup_skipped=cleanup_skipped,
        duration_seconds=time.monotonic() - started,
    )


def _delete_unreachable(
    manager: IcebergTableManager, before: TableMetadata, after: Table, expired: Sequence[Snapshot]
) -> tuple[dict[str, dict[str, _Deletion]], Table, int]:
    """Delete what the expired snapshots reached and the kept ones (``after``) do not.

    What the kept snapshots reference must be read completely: when one of their files
    vanishes (a concurrent expiry removed more snapshots), the table is reloaded and read
    again. Files of the expired snapshots that are already gone (deleted by whoever removed
    them first) are skipped. Returns the tallies, the table last read and the reloads.
    """
    if not expired:
        return {}, after, 0
    gone = _Reachable()
    _manifests_of(after.io, expired, gone, missing_ok=True)
    statistics_before = _statistics_paths(before)

    def plan(current: Table) -> dict[str, dict[str, int | None]]:
        io = current.io
        kept = _Reachable()
        _manifests_of(io, current.snapshots(), kept)
        dropped_manifests = {p: m for p, m in gone.manifests.items() if p not in kept.manifests}
        # Files live in a dropped manifest are candidates; a kept manifest (or its live
        # entries) keeps them, whatever status the dropped manifest gave them.
        candidates = _Reachable()
        _files_of(io, dropped_manifests.values(), candidates, live_only=True, missing_ok=True)
        if candidates.data_files or candidates.delete_files:
            _files_of(io, kept.manifests.values(), kept, live_only=True)
        statistics_after = _statistics_paths(current.metadata)
        return {
            "data": {p: s for p, s in candidates.data_files.items() if p not in kept.data_files},
            "delete": {
                p: s for p, s in candidates.delete_files.items() if p not in kept.delete_files
            },
            "manifest": {p: m.manifest_length for p, m in dropped_manifests.items()},
            "manifest_list": dict.fromkeys(gone.manifest_lists - kept.manifest_lists),
            "statistics": {p: s for p, s in statistics_before.items() if p not in statistics_after},
        }

    groups, after, reloads = _read_fresh(manager, after, plan, "snapshot expiry")
    # Data before the metadata that points at it: a crash midway leaves only unreferenced files.
    tallies = {kind: _delete_files(after, paths) for kind, paths in groups.items()}
    return tallies, after, reloads


def _metadata_dir(table: Table) -> str:
    probe = table.location_provider().new_metadata_location("probe")
    return probe[: -len("probe")].rstrip("/")


def _metadata_version(path: str) -> int | None:
    match = _METADATA_VERSION.match(posixpath.basename(path))
    return int(match["version"]) if match else None


def _old_metadata_files(table: Table) -> list[str]:
    """Metadata JSON files older than the oldest one the metadata log still lists."""
    kept = {_normalize(e.metadata_file) for e in table.metadata.metadata_log}
    if table.metadata_location:
        kept.add(_normalize(table.metadata_location))
    versions = [v for v in (_metadata_version(p) for p in kept) if v is not None]
    if not versions:
        return []
    oldest_kept = min(versions)
    old = []
    for listed in _list_files(table, _metadata_dir(table)):
        if not listed.path.endswith(".metadata.json"):
            continue
        version = _metadata_version(listed.path)
        if version is not None and version < oldest_kept and _normalize(listed.path) not in kept:
            old.append(listed.path)
    return old


# ============================================================================ orphan files


@dataclass(frozen=True)
class _ListedFile:
    path: str
    size: int
    modified: datetime | None


def _filesystem(table: Table, location: str) -> tuple[Any, str, Callable[[str], str]]:
    """A pyarrow filesystem for ``location``, the path to list, and a path -> URI function."""
    from pyarrow.fs import FSSpecHandler, PyFileSystem
    from pyiceberg.io.pyarrow import PyArrowFileIO

    io = table.io
    scheme, netloc, path = PyArrowFileIO.parse_location(location, io.properties)
    if isinstance(io, PyArrowFileIO):
        fs = io.fs_by_scheme(scheme, netloc)
    elif hasattr(io, "get_fs"):
        fs = PyFileSystem(FSSpecHandler(io.get_fs(scheme)))
    else:
        raise InvalidInputError(
            f"Cannot list files of {location!r} with FileIO {type(io).__name__}; use PyArrowFileIO "
            "or FsspecFileIO."
        )
    if scheme == "file":
        if urlparse(location).scheme == "file":
            return fs, path, lambda listed: f"file://{listed}"
        return fs, path, lambda listed: listed
    return fs, path, lambda listed: f"{scheme}://{listed}"


def _list_files(table: Table, location: str) -> Iterator[_ListedFile]:
    from pyarrow.fs import FileSelector, FileType

    fs, path, to_uri = _filesystem(table, location)
    for info in fs.get_file_info(FileSelector(path, recursive=True, allow_not_found=True)):
        if info.type != FileType.File:
            continue
        modified = info.mtime
        if modified is not None and modified.tzinfo is None:
            modified = modified.replace(tzinfo=UTC)
        yield _ListedFile(to_uri(info.path), info.size or 0, modified)


def _normalize(location: str) -> str:
    """One spelling per file: ``s3a://`` = ``s3://``, ``file:///x`` = ``/x``."""
    parsed = urlparse(location)
    if parsed.scheme in ("", "file") or len(parsed.scheme) == 1:  # 1: a Windows drive letter
        local = parsed.path if parsed.scheme == "file" else location
        return "file:" + os.path.normpath(local)
    scheme = "s3" if parsed.scheme in ("s3a", "s3n") else parsed.scheme
    return f"{scheme}://{parsed.netloc}{posixpath.normpath(parsed.path or '/')}"


def _referenced_files(table: Table, seen: _Reachable) -> set[str]:
    """Every file the table's metadata references, in any snapshot, with any entry status.

    ``seen`` keeps what earlier calls read from older versions of the metadata, also when a
    call fails midway: a file any version referenced is never taken for an orphan by the
    same run (whoever expired its snapshot deletes it).
    """
    metadata = table.metadata
    reachable = _Reachable()
    reachable.metadata_files.update(entry.metadata_file for entry in metadata.metadata_log)
    if table.metadata_location:
        reachable.metadata_files.add(table.metadata_location)
    reachable.metadata_files.update(_statistics_paths(metadata))
    reachable.manifest_lists.update(s.manifest_list for s in metadata.snapshots)
    try:
        _manifests_of(table.io, metadata.snapshots, reachable)
        _files_of(table.io, reachable.manifests.values(), reachable, live_only=False)
    finally:
        seen.update(reachable)
    return {_normalize(p) for p in seen.all_paths()}


def _still_there(table: Table, files: Sequence[_ListedFile]) -> list[_ListedFile]:
    """The listed files that still exist."""

    def exists(listed: _ListedFile) -> bool:
        try:
            return table.io.new_input(listed.path).exists()
        except Exception as error:
            if _vanished(error):
                return False
            raise

    with ThreadPoolExecutor(max_workers=_DELETE_WORKERS) as pool:
        present = list(pool.map(exists, files))
    return [f for f, there in zip(files, present, strict=True) if there]


def remove_orphan_files(
    manager: IcebergTableManager,
    table: Table,
    *,
    older_than: timedelta = DEFAULT_ORPHAN_AGE,
    dry_run: bool = False,
) -> OrphanFilesResult:
    """Delete files under the table location that no metadata references.

    Such files are left by writers that crashed between writing files and committing, or by
    commits whose cleanup failed. Referenced means: the current metadata file and every one in
    the metadata log, and for every snapshot its manifest list, manifests, data and delete
    files, plus statistics files. Only files last modified more than ``older_than`` ago are
    deleted, so files of a write still in flight are safe; keep the guard longer than your
    longest write. The table location is listed first and the metadata loaded afterwards, so a
    commit landing during the scan still protects its files. When a concurrent snapshot
    expiry deletes a manifest list or manifest being read, the table is reloaded and read
    again (``result.metadata_reloads``); files any version of the metadata referenced are
    kept; if files keep vanishing, nothing is deleted and ``result.skipped`` says why.
    ``dry_run`` reports, deletes nothing.

    Example:
        >>> # result = manager.remove_orphan_files("sales.orders", older_than=timedelta(days=3))
        >>> # result.orphan_files
    """
    if older_than < timedelta(0):
        raise InvalidInputError(f"older_than must not be negative, got {older_than}.")
    started = time.monotonic()
    name = _name(table)
    cutoff = _now() - older_than
    location = table.location()
    listed = list(_list_files(table, location))
    seen = _Reachable()
    try:
        referenced, table, reloads = _read_fresh(
            manager,
            _reload(manager, table),
            lambda current: _referenced_files(current, seen),
            "orphan file removal",
        )
    except _KeptVanishing as error:
        log.warning("%s", error)
        return OrphanFilesResult(
            table=name,
            location=location,
            older_than=cutoff,
            dry_run=dry_run,
            files_scanned=len(listed),
            metadata_reloads=_VANISHED_RELOADS,
            skipped=f"nothing deleted: {error}",
            duration_seconds=time.monotonic() - started,
        )

    orphans: list[_ListedFile] = []
    too_recent = 0
    for candidate in listed:
        if posixpath.basename(candidate.path) in _PROTECTED_FILE_NAMES:
            continue
        if _normalize(candidate.path) in referenced:
            continue
        if candidate.modified is None or candidate.modified >= cutoff:
            too_recent += 1
            continue
        orphans.append(candidate)
    if reloads:
        # A concurrent expiry ran: the files it deleted since the listing are no orphans.
        orphans = _still_there(table, orphans)
    orphans.sort(key=lambda f: f.path)

    deleted = bytes_freed = 0
    failed: list[str] = []
    if not dry_run and orphans:
        tallies = _delete_files(table, {f.path: f.size for f in orphans})
        deleted = sum(t.deleted for t in tallies.values())
        bytes_freed = sum(t.bytes for t in tallies.values())
        failed = sorted(p for t in tallies.values() for p in t.failed)
    return OrphanFilesResult(
        table=name,
        location=location,
        older_than=cutoff,
        dry_run=dry_run,
        files_scanned=len(listed),
        referenced_files=len(referenced),
        orphan_files=tuple(f.path for f in orphans),
        orphan_bytes=sum(f.size for f in orphans),
        too_recent=too_recent,
        files_deleted=deleted,
        bytes_freed=bytes_freed,
        failed_deletes=tuple(failed),
        metadata_reloads=reloads,
        duration_seconds=time.monotonic() - started,
    )


# ============================================================================ manifest rewrite


def _partition_sort_key(partition: Record) -> tuple[Any, ...]:
    key: list[Any] = []
    for position in range(len(partition)):
        value = partition[position]
        key.append(
            (
                value is None,
                "" if value is None else type(value).__name__,
                value if value is not None else 0,
            )
        )
    return tuple(key)


class _RewriteManifests(SnapshotProducer["_RewriteManifests"]):
    """A ``replace`` snapshot whose data manifests are rewritten, clustered by partition.

    The rewrite is computed from the branch head each time the snapshot is built, so when a
    concurrent commit forces PyIceberg to retry, the retry re-clusters the fresh head: nothing
    another writer committed can be dropped.
    """

    def __init__(self, transaction: Any, io: Any, snapshot_properties: dict[str, str]) -> None:
        super().__init__(
            operation=Operation.OVERWRITE,
            transaction=transaction,
            io=io,
            snapshot_properties=snapshot_properties,
        )
        self.manifests_before = 0
        self.manifests_replaced = 0
        self.manifests_created = 0
        self.entries_rewritten = 0
        self.manifests_after = 0

    def _deleted_entries(self) -> list[ManifestEntry]:
        return []

    def _validate_concurrency(self) -> None:
        return None

    def _existing_manifests(self) -> list[ManifestFile]:
        metadata = self._transaction.table_metadata
        snapshot = metadata.snapshot_by_name(self._target_branch)
        if snapshot is None:
            return []
        manifests = snapshot.manifests(self._io)
        data = [m for m in manifests if m.content == ManifestContent.DATA]
        others = [m for m in manifests if m.content != ManifestContent.DATA]
        target_bytes = int(
            metadata.properties.get(MANIFEST_TARGET_SIZE_PROPERTY, MANIFEST_TARGET_SIZE_DEFAULT)
        )
        by_spec: dict[int, list[ManifestEntry]] = defaultdict(list)
        manifest_bytes = 0
        for manifest in data:
            manifest_bytes += manifest.manifest_length
            by_spec[manifest.partition_spec_id].extend(
                manifest.fetch_manifest_entry(self._io, discard_deleted=True)
            )
        entries_total = sum(len(entries) for entries in by_spec.values())
        bytes_per_entry = max(1.0, manifest_bytes / max(1, entries_total))
        per_manifest = max(1, int(target_bytes / bytes_per_entry))

        rewritten: list[ManifestFile] = []
        for spec_id in sorted(by_spec):
            entries = sorted(
                by_spec[spec_id],
                key=lambda e: (_partition_sort_key(e.data_file.partition), e.data_file.file_path),
            )
            for start in range(0, len(entries), per_manifest):
                with self.new_manifest_writer(self.spec(spec_id)) as writer:
                    for entry in entries[start : start + per_manifest]:
                        writer.existing(entry)
                rewritten.append(writer.to_manifest_file())
        self.manifests_before = len(manifests)
        self.manifests_replaced = len(data)
        self.manifests_created = len(rewritten)
        self.entries_rewritten = entries_total
        self.manifests_after = len(rewritten) + len(others)
        return rewritten + others

    def _summary(self, snapshot_properties: dict[str, str] = EMPTY_DICT) -> Summary:
        metadata = self._transaction.table_metadata
        previous = (
            metadata.snapshot_by_id(self._parent_snapshot_id)
            if self._parent_snapshot_id is not None
            else None
        )
        totals = {
            key: value
            for key, value in (
                previous.summary.additional_properties if previous and previous.summary else {}
            ).items()
            if key.startswith("total-")
        }
        return Summary(
            Operation.REPLACE,
            **totals,
            **{
                "manifests-created": str(self.manifests_created),
                "manifests-replaced": str(self.manifests_replaced),
                "manifests-kept": str(self.manifests_after - self.manifests_created),
                "entries-processed": str(self.entries_rewritten),
            },
            **snapshot_properties,
        )


def _data_manifest_plan(table: Table) -> tuple[int, int, int]:
    """(data manifests now, data manifests a rewrite would produce, all manifests now)."""
    snapshot = table.current_snapshot()
    if snapshot is None:
        return 0, 0, 0
    manifests = snapshot.manifests(table.io)
    data = [m for m in manifests if m.content == ManifestContent.DATA]
    target_bytes = int(
        table.properties.get(MANIFEST_TARGET_SIZE_PROPERTY, MANIFEST_TARGET_SIZE_DEFAULT)
    )
    by_spec: Counter[int] = Counter()
    total_bytes = 0
    for manifest in data:
        by_spec[manifest.partition_spec_id] += (manifest.added_files_count or 0) + (
            manifest.existing_files_count or 0
        )
        total_bytes += manifest.manifest_length
    entries = sum(by_spec.values())
    per_manifest = max(1, int(target_bytes / max(1.0, total_bytes / max(1, entries))))
    planned = sum(max(1, math.ceil(count / per_manifest)) for count in by_spec.values())
    return len(data), planned, len(manifests)


def rewrite_manifests(manager: IcebergTableManager, table: Table) -> RewriteManifestsResult:
    """Rewrite the current snapshot's data manifests into few manifests clustered by partition.

    Many appends leave one small manifest each, and planning a scan reads them all. The live
    entries are sorted by partition and written into manifests of about
    ``commit.manifest.target-size-bytes`` (8 MiB), so a scan with a partition filter skips
    most of them. Delete manifests are kept as they are. The commit is a ``replace`` snapshot:
    no data file is added or removed. Nothing happens when a rewrite would not reduce the
    number of data manifests. A manifest that vanishes under a concurrent snapshot expiry
    while being read makes it reload the table and start over.

    Example:
        >>> # result = manager.rewrite_manifests("sales.orders")
        >>> # result.manifests_before, result.manifests_after
    """
    started = time.monotonic()
    name = _name(table)
    (current, planned, total), table, _ = _read_fresh(
        manager, table, _data_manifest_plan, "manifest rewrite"
    )
    if current <= planned:
        return RewriteManifestsResult(
            table=name,
            snapshot_id=None,
            manifests_before=total,
            manifests_after=total,
            duration_seconds=time.monotonic() - started,
        )
    max_attempts, initial, ceiling = _policy(manager, table)
    maintenance_id = uuid.uuid4().hex
    last_error: Exception | None = None
    for attempt in range(1, max_attempts + 1):
        if attempt > 1:
            table = _reload(manager, table)
        tx = table.transaction()
        producer = _RewriteManifests(
            tx,
            table.io,
            {MAINTENANCE_PROPERTY: "rewrite-manifests", MAINTENANCE_ID_PROPERTY: maintenance_id},
        )
        try:
            producer.commit()
            tx.commit_transaction()
        except (CommitFailedException, ValidationException) as error:
            last_error = error
            if attempt < max_attempts:
                _backoff(attempt, initial, ceiling)
            continue
        except CommitStateUnknownException as error:
            last_error = error
            if _find_maintenance_snapshot(_reload(manager, table), maintenance_id) is None:
                continue
        except Exception as error:
            if not _vanished(error):
                raise
            # A manifest of the head it started from was expired and deleted meanwhile.
            last_error = error
            log.info("Manifest rewrite of %s read a file removed meanwhile; reloading.", name)
            continue
        return RewriteManifestsResult(
            table=name,
            snapshot_id=producer.snapshot_id,
            manifests_before=producer.manifests_before,
            manifests_after=producer.manifests_after,
            manifests_replaced=producer.manifests_replaced,
            manifests_created=producer.manifests_created,
            entries_rewritten=producer.entries_rewritten,
            commit_attempts=attempt,
            duration_seconds=time.monotonic() - started,
        )
    raise CommitConflictError(
        f"Table '{name}': manifest rewrite still conflicted after {max_attempts} attempts "
        f"({type(last_error).__name__}: {last_error}); run it again."
    ) from last_error


# ============================================================================ health


def small_file_threshold(table: Table) -> int:
    """Bytes below which a data file counts as small: 75% of the table's target file size.

    The target is ``write.target-file-size-bytes`` when the table sets it, else the compaction
    default (128 MiB).

    Example:
        >>> # small_file_threshold(table)  # 100663296 for a table without the property
    """
    target = int(table.properties.get(TARGET_FILE_SIZE_PROPERTY, DEFAULT_TARGET_FILE_SIZE_BYTES))
    return int(target * SMALL_FILE_FRACTION)


def _compactable_small_files(
    table: Table,
    small_by_partition: dict[tuple[int, Record], list[DataFile]],
    min_input_files: int,
    *,
    with_deletes: bool,
) -> int:
    """How many of the small files :func:`compact` would rewrite with the table's target size."""
    if with_deletes:
        # Compaction leaves data files that merge-on-read deletes apply to as they are.
        deleted = {task.file.file_path for task in table.scan().plan_files() if task.delete_files}
        small_by_partition = {
            key: [f for f in files if f.file_path not in deleted]
            for key, files in small_by_partition.items()
        }
    target = int(table.properties.get(TARGET_FILE_SIZE_PROPERTY, DEFAULT_TARGET_FILE_SIZE_BYTES))
    return sum(
        len(packed)
        for files in small_by_partition.values()
        if len(files) >= min_input_files
        for packed in _pack(files, target)
        if len(packed) >= min_input_files
    )


def table_health(
    manager: IcebergTableManager,
    table: Table,
    *,
    small_file_threshold_bytes: int | None = None,
    min_input_files: int = 2,
) -> TableHealth:
    """Storage metrics of the table's current snapshot.

    Data files, total bytes, small files (below ``small_file_threshold_bytes``, default
    :func:`small_file_threshold`) and their ratio, the small files :func:`compact` can merge
    (packed per partition up to the table's target file size, in bins of at least
    ``min_input_files`` files, as compaction plans them; files with merge-on-read deletes are
    left out) and their ratio, average file size, partitions, rows, snapshots, manifests,
    delete files, and the time since the last commit and since the last data change. A
    manifest that vanishes under a concurrent snapshot expiry while being read makes it
    reload the table and measure again.

    Example:
        >>> # health = manager.table_health("sales.orders")
        >>> # health.small_file_ratio, health.snapshots
    """
    threshold = (
        small_file_threshold(table)
        if small_file_threshold_bytes is None
        else small_file_threshold_bytes
    )
    health, _, _ = _read_fresh(
        manager,
        table,
        lambda current: _health(current, threshold, min_input_files),
        "table health",
    )
    return health


def _health(table: Table, threshold: int, min_input_files: int) -> TableHealth:
    name = _name(table)
    now = _now()
    snapshots = table.snapshots()
    current = table.current_snapshot()
    manifests: set[str] = set()
    data_files = total_bytes = small = rows = delete_files = 0
    partitions: set[tuple[int, Record]] = set()
    small_by_partition: dict[tuple[int, Record], list[DataFile]] = defaultdict(list)
    for manifest, entry in _current_entries(table):
        manifests.add(manifest.manifest_path)
        data_file = entry.data_file
        if data_file.content != DataFileContent.DATA:
            delete_files += 1
            continue
        data_files += 1
        total_bytes += data_file.file_size_in_bytes
        rows += data_file.record_count
        partitions.add((data_file.spec_id, data_file.partition))
        if data_file.file_size_in_bytes < threshold:
            small += 1
            small_by_partition[(data_file.spec_id, data_file.partition)].append(data_file)
    compactable = _compactable_small_files(
        table, small_by_partition, min_input_files, with_deletes=delete_files > 0
    )
    if current is not None:
        manifests.update(m.manifest_path for m in current.manifests(table.io))
    last_commit = _ms_to_datetime(max(s.timestamp_ms for s in snapshots)) if snapshots else None
    last_change = None
    for snapshot in ancestors_of(current, table.metadata):
        last_change = _ms_to_datetime(snapshot.timestamp_ms)
        operation = snapshot.summary.operation if snapshot.summary else None
        if operation != Operation.REPLACE:
            break
    # When only replace snapshots survive expiry, the oldest of them bounds the last change.
    oldest = _ms_to_datetime(min(s.timestamp_ms for s in snapshots)) if snapshots else None
    return TableHealth(
        table=name,
        snapshot_id=current.snapshot_id if current else None,
        data_files=data_files,
        total_bytes=total_bytes,
        small_files=small,
        small_file_ratio=small / data_files if data_files else 0.0,
        small_file_threshold_bytes=threshold,
        compactable_small_files=compactable,
        compactable_small_file_ratio=compactable / data_files if data_files else 0.0,
        average_file_size_bytes=total_bytes / data_files if data_files else 0.0,
        partitions=len(partitions),
        rows=rows,
        snapshots=len(snapshots),
        manifests=len(manifests),
        delete_files=delete_files,
        last_commit_at=last_commit,
        last_data_change_at=last_change,
        seconds_since_last_commit=(now - last_commit).total_seconds() if last_commit else None,
        seconds_since_last_data_change=(
            (now - last_change).total_seconds() if last_change else None
        ),
        oldest_snapshot_at=oldest,
    )
