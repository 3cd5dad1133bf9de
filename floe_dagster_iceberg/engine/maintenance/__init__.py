"""Table maintenance: compaction, snapshot expiry that frees storage, orphan removal, manifest
rewrite and storage health, one operation per module.

PyIceberg 0.12 ships only ``expire_snapshots``, which edits metadata and deletes no file. This
package adds the rest on top of PyIceberg's own transaction machinery, so every change is one
atomic catalog commit and concurrent writers are detected instead of overwritten:

- :func:`~.compaction.compact` bin-packs small data files per partition, up to the table's
  ``write.target-file-size-bytes`` unless told otherwise, and commits ONE ``replace`` snapshot
  per table that removes the small files and adds the rewritten ones. A concurrent write to a
  partition being compacted fails validation; that partition is re-planned (its new rows are
  then compacted too) and, if writers keep landing there, skipped and reported.
- :func:`~.expiry.expire_snapshots` expires snapshots with the table's standard
  ``history.expire.*`` properties as defaults (Iceberg's: 5 days, 1 snapshot), then deletes the
  files that only expired snapshots referenced.
- :func:`~.orphans.remove_orphan_files` deletes files under the table location that no metadata
  references, guarded by an age threshold so in-flight writes are never touched.
- :func:`~.manifests.rewrite_manifests` rewrites the current snapshot's data manifests into few
  manifests clustered by partition.
- :func:`~.dangling.remove_dangling_deletes` removes the merge-on-read delete files that apply
  to no live data file any more, in one ``replace`` snapshot.
- :func:`~.health.table_health` reports storage metrics, rows net of deletes.

:mod:`.results` holds the result models, :mod:`.files` what expiry and orphan removal share
(which files metadata reaches, listing, deleting), :mod:`.deletes` which delete files apply to
which data files (health, compaction and dangling-delete removal share it). Each operation takes the catalog (to reload
the table and to commit) and the table; the ones that commit also take a
:class:`~floe_dagster_iceberg.engine.config.RetryPolicy` (unset fields: the table's
``commit.retry.*`` properties). :class:`~floe_dagster_iceberg.engine.manager.IcebergTableManager`
calls them from its methods (``manager.compact("sales.orders")``).
"""

from floe_dagster_iceberg.engine.maintenance.compaction import compact
from floe_dagster_iceberg.engine.maintenance.dangling import remove_dangling_deletes
from floe_dagster_iceberg.engine.maintenance.expiry import expire_snapshots
from floe_dagster_iceberg.engine.maintenance.health import small_file_threshold, table_health
from floe_dagster_iceberg.engine.maintenance.manifests import rewrite_manifests
from floe_dagster_iceberg.engine.maintenance.orphans import DEFAULT_ORPHAN_AGE, remove_orphan_files
from floe_dagster_iceberg.engine.maintenance.results import (
    CompactionResult,
    DanglingDeletesResult,
    ExpireSnapshotsResult,
    OrphanFilesResult,
    PartitionCompaction,
    RewriteManifestsResult,
    SkippedPartition,
    TableHealth,
)

__all__ = [
    "DEFAULT_ORPHAN_AGE",
    "CompactionResult",
    "DanglingDeletesResult",
    "ExpireSnapshotsResult",
    "OrphanFilesResult",
    "PartitionCompaction",
    "RewriteManifestsResult",
    "SkippedPartition",
    "TableHealth",
    "compact",
    "expire_snapshots",
    "remove_dangling_deletes",
    "remove_orphan_files",
    "rewrite_manifests",
    "small_file_threshold",
    "table_health",
]
