"""Manifest rewrite: the current snapshot's data manifests, rewritten into few manifests
clustered by partition, committed as a ``replace`` snapshot.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections import Counter, defaultdict
from typing import TYPE_CHECKING, Any

from pyiceberg.exceptions import (
    CommitFailedException,
    CommitStateUnknownException,
    ValidationException,
)
from pyiceberg.manifest import ManifestContent, ManifestEntry, ManifestFile
from pyiceberg.table import Table
from pyiceberg.table.snapshots import Operation, Summary
from pyiceberg.typedef import EMPTY_DICT, Record

from floe_dagster_iceberg.engine import properties as props
from floe_dagster_iceberg.engine._pyiceberg import SnapshotProducer
from floe_dagster_iceberg.engine.config import RetryPolicy
from floe_dagster_iceberg.engine.maintenance.files import read_fresh, reload, vanished
from floe_dagster_iceberg.engine.maintenance.results import (
    MAINTENANCE_ID_PROPERTY,
    MAINTENANCE_PROPERTY,
    RewriteManifestsResult,
    find_maintenance_snapshot,
    table_name,
)
from floe_dagster_iceberg.engine.retry import resolve_retry
from floe_dagster_iceberg.errors import CommitConflictError

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog

__all__ = ["rewrite_manifests"]

log = logging.getLogger("floe_dagster_iceberg.engine.maintenance")


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
        target_bytes = props.int_property(
            metadata.properties, props.MANIFEST_TARGET_SIZE, props.MANIFEST_TARGET_SIZE_DEFAULT
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
    target_bytes = props.int_property(
        table.properties, props.MANIFEST_TARGET_SIZE, props.MANIFEST_TARGET_SIZE_DEFAULT
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


def rewrite_manifests(
    catalog: Catalog, table: Table, *, retry: RetryPolicy | None = None
) -> RewriteManifestsResult:
    """Rewrite the current snapshot's data manifests into few manifests clustered by partition.

    Many appends leave one small manifest each, and planning a scan reads them all. The live
    entries are sorted by partition and written into manifests of about
    ``commit.manifest.target-size-bytes`` (8 MiB), so a scan with a partition filter skips
    most of them. Delete manifests are kept as they are. The commit is a ``replace`` snapshot:
    no data file is added or removed. Nothing happens when a rewrite would not reduce the
    number of data manifests. A manifest that vanishes under a concurrent snapshot expiry
    while being read makes it reload the table and start over. A commit that conflicts is
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
        >>> result = rewrite_manifests(catalog, table)
        >>> result.manifests_before, result.manifests_after, result.entries_rewritten
        (3, 1, 3)
        >>> rewrite_manifests(catalog, table).committed  # nothing left to cluster
        False
    """
    started = time.monotonic()
    name = table_name(table)
    (current, planned, total), table, _ = read_fresh(
        catalog, table, _data_manifest_plan, "manifest rewrite"
    )
    if current <= planned:
        return RewriteManifestsResult(
            table=name,
            snapshot_id=None,
            manifests_before=total,
            manifests_after=total,
            duration_seconds=time.monotonic() - started,
        )
    schedule = resolve_retry(retry or RetryPolicy(), table.metadata.properties)
    max_attempts = schedule.max_attempts
    maintenance_id = uuid.uuid4().hex
    last_error: Exception | None = None
    for attempt in range(1, max_attempts + 1):
        if attempt > 1:
            table = reload(catalog, table)
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
                time.sleep(schedule.backoff_seconds(attempt))
            continue
        except CommitStateUnknownException as error:
            last_error = error
            if find_maintenance_snapshot(reload(catalog, table), maintenance_id) is None:
                continue
        except Exception as error:
            if not vanished(error):
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
