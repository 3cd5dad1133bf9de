"""What maintenance produces: one result model per operation, the labels they use, and the
summary properties that mark the snapshots maintenance commits.

A commit whose outcome is unknown (the catalog may or may not have applied it) is recognized
afterwards by :data:`MAINTENANCE_ID_PROPERTY` in its snapshot summary
(:func:`find_maintenance_snapshot`).
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field
from pyiceberg.table import Table
from pyiceberg.table.snapshots import Snapshot
from pyiceberg.typedef import Record

from floe_dagster_iceberg.engine import properties as props

if TYPE_CHECKING:
    from pyiceberg.table.metadata import TableMetadata

__all__ = [
    "MAINTENANCE_ID_PROPERTY",
    "MAINTENANCE_PROPERTY",
    "UNPARTITIONED",
    "CompactionResult",
    "DanglingDeletesResult",
    "ExpireSnapshotsResult",
    "OrphanFilesResult",
    "PartitionCompaction",
    "RewriteManifestsResult",
    "SkippedPartition",
    "TableHealth",
    "find_maintenance_snapshot",
    "partition_label",
    "table_name",
]

MAINTENANCE_PROPERTY = "floe.maintenance"
"""Snapshot summary property naming the maintenance action that produced a snapshot."""
MAINTENANCE_ID_PROPERTY = "floe.maintenance-id"
"""Snapshot summary property carrying the id of one maintenance call (finds a commit whose outcome
was unknown)."""

UNPARTITIONED = "unpartitioned"
"""Partition label used in results for the single partition of an unpartitioned table."""


class _Result(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PartitionCompaction(_Result):
    """What compaction did in one partition.

    ``rows`` are the rows written: the rewritten files' rows less the ``position_deletes_applied``
    (rows merge-on-read position deletes had removed, now left out of the new files). The
    position-delete files that only deleted rows of rewritten files are removed in the same
    snapshot: ``delete_files_removed``.

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
    position_deletes_applied: int = 0
    delete_files_removed: int = 0


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
    """The outcome of :func:`~.compaction.compact`: one ``replace`` snapshot, or nothing when no
    partition had enough small files.

    Example:
        >>> result = CompactionResult(table="sales.orders", snapshot_id=None)
        >>> result.committed, result.files_rewritten
        (False, 0)
    """

    table: str
    snapshot_id: int | None
    partitions: tuple[PartitionCompaction, ...] = ()
    skipped: tuple[SkippedPartition, ...] = ()
    target_file_size_bytes: int = props.TARGET_FILE_SIZE_DEFAULT
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

    @property
    def position_deletes_applied(self) -> int:
        return sum(p.position_deletes_applied for p in self.partitions)

    @property
    def delete_files_removed(self) -> int:
        return sum(p.delete_files_removed for p in self.partitions)

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
            "position_deletes_applied": self.position_deletes_applied,
            "delete_files_removed": self.delete_files_removed,
            "commit_attempts": self.commit_attempts,
            "conflicts": self.conflicts,
            "duration_seconds": round(self.duration_seconds, 3),
        }


class ExpireSnapshotsResult(_Result):
    """The outcome of :func:`~.expiry.expire_snapshots`: which snapshots went and which files
    were freed.

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
    branches_removed: tuple[str, ...] = ()
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
            "branches_removed": len(self.branches_removed),
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
    """The outcome of :func:`~.orphans.remove_orphan_files`.

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
    """The outcome of :func:`~.manifests.rewrite_manifests`.

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


class DanglingDeletesResult(_Result):
    """The outcome of :func:`~.dangling.remove_dangling_deletes`: one ``replace`` snapshot that
    removes the delete files applying to no live data file, or nothing when there were none.

    Example:
        >>> result = DanglingDeletesResult(table="sales.orders", snapshot_id=7,
        ...     position_delete_files_removed=3, equality_delete_files_removed=1, bytes_removed=6_000)
        >>> result.committed, result.delete_files_removed
        (True, 4)
    """

    table: str
    snapshot_id: int | None
    delete_files: int = Field(default=0, description="live delete files examined")
    position_delete_files_removed: int = 0
    equality_delete_files_removed: int = 0
    bytes_removed: int = Field(
        default=0,
        description="bytes of the removed delete files (freed once snapshot expiry drops the "
        "snapshots that still reference them)",
    )
    removed_files: tuple[str, ...] = ()
    commit_attempts: int = 0
    duration_seconds: float = 0.0

    @property
    def committed(self) -> bool:
        return self.snapshot_id is not None

    @property
    def delete_files_removed(self) -> int:
        return self.position_delete_files_removed + self.equality_delete_files_removed

    def as_metrics(self) -> dict[str, int | float | str | None]:
        """Flat metrics for run metadata and observations."""
        return {
            "snapshot_id": self.snapshot_id,
            "delete_files": self.delete_files,
            "delete_files_removed": self.delete_files_removed,
            "position_delete_files_removed": self.position_delete_files_removed,
            "equality_delete_files_removed": self.equality_delete_files_removed,
            "bytes_removed": self.bytes_removed,
            "commit_attempts": self.commit_attempts,
            "duration_seconds": round(self.duration_seconds, 3),
        }


class TableHealth(_Result):
    """Storage metrics of a table's current snapshot.

    ``small_files`` counts every data file below ``small_file_threshold_bytes``;
    ``compactable_small_files`` only those that :func:`~.compaction.compact` can merge: small
    files that share their partition with enough other small files (``min_input_files``, packed
    up to the target file size) and that no equality deletes apply to. A lone small file in its
    partition, as a daily backfill leaves in every day, is small but not compactable.

    ``rows`` are the live data files' rows less the ``position_deletes`` (rows merge-on-read
    position deletes remove: exact). Equality deletes can only be counted by reading the data
    they apply to, so ``equality_deletes`` reports the rows of the equality-delete files that
    apply (each may remove any number of data rows) and, when there are any, ``rows`` is an
    upper bound and ``rows_exact`` false. ``delete_files`` (position plus equality) and
    ``delete_file_bytes`` include ``dangling_delete_files``, those applying to no live data
    file (:func:`~.dangling.remove_dangling_deletes` removes them).

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
    rows_exact: bool = True
    snapshots: int = 0
    manifests: int = 0
    delete_files: int = 0
    position_delete_files: int = 0
    equality_delete_files: int = 0
    delete_file_bytes: int = 0
    dangling_delete_files: int = 0
    position_deletes: int = 0
    equality_deletes: int = 0
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
            "rows_exact": str(self.rows_exact).lower(),
            "snapshots": self.snapshots,
            "manifests": self.manifests,
            "delete_files": self.delete_files,
            "position_delete_files": self.position_delete_files,
            "equality_delete_files": self.equality_delete_files,
            "delete_file_bytes": self.delete_file_bytes,
            "dangling_delete_files": self.dangling_delete_files,
            "position_deletes": self.position_deletes,
            "equality_deletes": self.equality_deletes,
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


def table_name(table: Table) -> str:
    """The table's identifier as results give it: ``"namespace.table"``."""
    return ".".join(table.name())


def partition_label(table_metadata: TableMetadata, spec_id: int, partition: Record) -> str:
    """A partition as results name it: ``region=eu/ts_day=2024-01-01``, or ``unpartitioned``."""
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


def find_maintenance_snapshot(table: Table, maintenance_id: str) -> Snapshot | None:
    """The snapshot committed by the maintenance call ``maintenance_id``, if it landed."""
    for snapshot in table.snapshots():
        if (
            snapshot.summary is not None
            and snapshot.summary[MAINTENANCE_ID_PROPERTY] == maintenance_id
        ):
            return snapshot
    return None
