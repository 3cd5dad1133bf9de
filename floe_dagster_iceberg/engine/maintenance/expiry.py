"""Snapshot expiry that frees storage.

PyIceberg 0.12's ``expire_snapshots`` edits metadata and deletes no file. After the metadata
commit, :func:`expire_snapshots` deletes the files only the expired snapshots referenced, and
metadata JSON files the metadata log no longer lists.
"""

from __future__ import annotations

import logging
import posixpath
import re
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from pyiceberg.exceptions import CommitFailedException, CommitStateUnknownException
from pyiceberg.table import Table
from pyiceberg.table.refs import SnapshotRefType
from pyiceberg.table.snapshots import Snapshot, ancestors_of

from floe_dagster_iceberg.engine import properties as props
from floe_dagster_iceberg.engine.config import RetryPolicy
from floe_dagster_iceberg.engine.maintenance.files import (
    VANISHED_RELOADS,
    Deletion,
    KeptVanishing,
    Reachable,
    delete_files,
    files_of,
    list_files,
    manifests_of,
    normalize,
    read_fresh,
    reload,
    statistics_paths,
)
from floe_dagster_iceberg.engine.maintenance.results import ExpireSnapshotsResult, table_name
from floe_dagster_iceberg.engine.retry import resolve_retry
from floe_dagster_iceberg.errors import CommitConflictError, InvalidInputError

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog
    from pyiceberg.table.metadata import TableMetadata

__all__ = ["expire_snapshots", "resolve_cutoff", "resolve_retain_last", "snapshots_to_expire"]

log = logging.getLogger("floe_dagster_iceberg.engine.maintenance")

_METADATA_VERSION = re.compile(r"^v?(?P<version>\d+)[-.]")


def resolve_retain_last(table: Table, retain_last: int | None) -> int:
    """Snapshots kept per branch in any case: ``retain_last``, by default the table's
    ``history.expire.min-snapshots-to-keep``."""
    if retain_last is None:
        retain_last = props.int_property(
            table.properties, props.MIN_SNAPSHOTS_TO_KEEP, props.MIN_SNAPSHOTS_TO_KEEP_DEFAULT
        )
    if retain_last < 1:
        raise InvalidInputError(f"retain_last must be at least 1, got {retain_last}.")
    return retain_last


def resolve_cutoff(
    table: Table, older_than: datetime | timedelta | None, now: datetime
) -> datetime:
    """The time before which snapshots expire: ``older_than`` ago (or at it), by default the
    table's ``history.expire.max-snapshot-age-ms`` ago."""
    if older_than is None:
        max_age_ms = props.int_property(
            table.properties, props.MAX_SNAPSHOT_AGE, props.MAX_SNAPSHOT_AGE_DEFAULT_MS
        )
        return now - timedelta(milliseconds=max_age_ms)
    if isinstance(older_than, timedelta):
        if older_than < timedelta(0):
            raise InvalidInputError(f"older_than must not be negative, got {older_than}.")
        return now - older_than
    if older_than.tzinfo is None:
        return older_than.replace(tzinfo=UTC)
    return older_than


def snapshots_to_expire(
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
    catalog: Catalog,
    table: Table,
    *,
    retry: RetryPolicy | None = None,
    older_than: datetime | timedelta | None = None,
    retain_last: int | None = None,
) -> ExpireSnapshotsResult:
    """Expire old snapshots, then delete every file that only they referenced.

    Defaults come from the table's standard properties: ``history.expire.max-snapshot-age-ms``
    (Iceberg's default: 5 days) for ``older_than`` and ``history.expire.min-snapshots-to-keep`` (1) for
    ``retain_last``. Branch and tag heads are always kept, so are each branch's newest
    ``retain_last`` ancestors. After the metadata commit succeeded (never before), the data
    files, delete files, manifests, manifest lists and statistics files reachable from an
    expired snapshot and from no kept one are deleted, and so are metadata JSON files older than
    the oldest entry of the metadata log (``write.metadata.previous-versions-max``).

    A metadata commit that conflicts is retried as ``retry`` says, else as the table's
    ``commit.retry.*`` properties say.

    Example:
        >>> import tempfile, pyarrow as pa
        >>> from pyiceberg.catalog.sql import SqlCatalog
        >>> tmp = tempfile.mkdtemp()
        >>> catalog = SqlCatalog("demo", uri=f"sqlite:///{tmp}/c.db", warehouse=f"file://{tmp}")
        >>> catalog.create_namespace("sales")
        >>> table = catalog.create_table("sales.orders", pa.schema([("id", pa.int64())]))
        >>> table.append(pa.table({"id": [1, 2]}))
        >>> table.overwrite(pa.table({"id": [3, 4]}))  # a delete and an append snapshot
        >>> result = expire_snapshots(catalog, table, older_than=timedelta(0))
        >>> result.snapshots_expired, result.data_files_deleted, result.manifest_lists_deleted
        (2, 1, 2)
        >>> default = expire_snapshots(catalog, table)  # the table's max snapshot age: 5 days
        >>> round((result.older_than - default.older_than) / timedelta(days=1))
        5
    """
    started = time.monotonic()
    name = table_name(table)
    now = datetime.now(UTC)
    cutoff = resolve_cutoff(table, older_than, now)
    retain_last = resolve_retain_last(table, retain_last)
    cutoff_ms = int(cutoff.timestamp() * 1000)
    now_ms = int(now.timestamp() * 1000)
    schedule = resolve_retry(retry or RetryPolicy(), table.metadata.properties)
    max_attempts = schedule.max_attempts

    before = table.metadata
    to_expire: set[int] = set()
    for attempt in range(1, max_attempts + 1):
        current = table if attempt == 1 else reload(catalog, table)
        # The commit updates ``current`` in place: keep the metadata it started from.
        before = current.metadata
        to_expire = snapshots_to_expire(before, cutoff_ms, retain_last, now_ms)
        if not to_expire:
            break
        try:
            current.maintenance.expire_snapshots().by_ids(sorted(to_expire)).commit()
            break
        except (CommitFailedException, CommitStateUnknownException, ValueError) as error:
            # ValueError: a snapshot to expire vanished meanwhile (a concurrent expiry).
            refreshed = reload(catalog, table)
            remaining = {s.snapshot_id for s in refreshed.snapshots()}
            if isinstance(error, CommitStateUnknownException) and not to_expire & remaining:
                break
            if attempt == max_attempts:
                raise CommitConflictError(
                    f"Table '{name}': snapshot expiry kept conflicting with concurrent commits "
                    f"after {max_attempts} attempts ({error}). No file was deleted."
                ) from error
            log.info("Snapshot expiry of %s conflicted (attempt %d): %s", name, attempt, error)
            time.sleep(schedule.backoff_seconds(attempt))

    after = reload(catalog, table)
    kept_ids = {s.snapshot_id for s in after.snapshots()}
    expired = [s for s in before.snapshots if s.snapshot_id not in kept_ids]
    cleanup_skipped = None
    try:
        tallies, after, reloads = _delete_unreachable(catalog, before, after, expired)
    except KeptVanishing as error:
        # The expiry itself committed; its files stay for orphan removal to reclaim.
        log.warning("%s", error)
        tallies, reloads, cleanup_skipped = {}, VANISHED_RELOADS, str(error)
    old_metadata = _old_metadata_files(after)
    metadata_tally = delete_files(after, dict.fromkeys(old_metadata))

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
    catalog: Catalog, before: TableMetadata, after: Table, expired: Sequence[Snapshot]
) -> tuple[dict[str, dict[str, Deletion]], Table, int]:
    """Delete what the expired snapshots reached and the kept ones (``after``) do not.

    What the kept snapshots reference must be read completely: when one of their files
    vanishes (a concurrent expiry removed more snapshots), the table is reloaded and read
    again. Files of the expired snapshots that are already gone (deleted by whoever removed
    them first) are skipped. Returns the tallies, the table last read and the reloads.
    """
    if not expired:
        return {}, after, 0
    gone = Reachable()
    manifests_of(after.io, expired, gone, missing_ok=True)
    statistics_before = statistics_paths(before)

    def plan(current: Table) -> dict[str, dict[str, int | None]]:
        io = current.io
        kept = Reachable()
        manifests_of(io, current.snapshots(), kept)
        dropped_manifests = {p: m for p, m in gone.manifests.items() if p not in kept.manifests}
        # Files live in a dropped manifest are candidates; a kept manifest (or its live
        # entries) keeps them, whatever status the dropped manifest gave them.
        candidates = Reachable()
        files_of(io, dropped_manifests.values(), candidates, live_only=True, missing_ok=True)
        if candidates.data_files or candidates.delete_files:
            files_of(io, kept.manifests.values(), kept, live_only=True)
        statistics_after = statistics_paths(current.metadata)
        return {
            "data": {p: s for p, s in candidates.data_files.items() if p not in kept.data_files},
            "delete": {
                p: s for p, s in candidates.delete_files.items() if p not in kept.delete_files
            },
            "manifest": {p: m.manifest_length for p, m in dropped_manifests.items()},
            "manifest_list": dict.fromkeys(gone.manifest_lists - kept.manifest_lists),
            "statistics": {p: s for p, s in statistics_before.items() if p not in statistics_after},
        }

    groups, after, reloads = read_fresh(catalog, after, plan, "snapshot expiry")
    # Data before the metadata that points at it: a crash midway leaves only unreferenced files.
    tallies = {kind: delete_files(after, paths) for kind, paths in groups.items()}
    return tallies, after, reloads


def _metadata_dir(table: Table) -> str:
    probe = table.location_provider().new_metadata_location("probe")
    return probe[: -len("probe")].rstrip("/")


def _metadata_version(path: str) -> int | None:
    match = _METADATA_VERSION.match(posixpath.basename(path))
    return int(match["version"]) if match else None


def _old_metadata_files(table: Table) -> list[str]:
    """Metadata JSON files older than the oldest one the metadata log still lists."""
    kept = {normalize(e.metadata_file) for e in table.metadata.metadata_log}
    if table.metadata_location:
        kept.add(normalize(table.metadata_location))
    versions = [v for v in (_metadata_version(p) for p in kept) if v is not None]
    if not versions:
        return []
    oldest_kept = min(versions)
    old = []
    for listed in list_files(table, _metadata_dir(table)):
        if not listed.path.endswith(".metadata.json"):
            continue
        version = _metadata_version(listed.path)
        if version is not None and version < oldest_kept and normalize(listed.path) not in kept:
            old.append(listed.path)
    return old
