"""Storage health of a table's current snapshot: files, bytes, small files (and how many of
them compaction can merge), partitions, rows, delete files, snapshots, manifests and staleness.

Rows are counted net of merge-on-read deletes without reading data: the data files' record
counts minus the rows position deletes remove (exact: a position delete names one row). What
equality deletes remove is only known by reading every data file they apply to, which PyIceberg
0.12 cannot do (its scan refuses them) and which would make health cost a full read of the
affected partitions; so when equality deletes apply, their rows are reported on their own and
``rows`` is an upper bound (``rows_exact`` is false).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from pyiceberg.manifest import DataFile, ManifestEntry, ManifestFile
from pyiceberg.table import Table
from pyiceberg.table.snapshots import Operation, ancestors_of
from pyiceberg.typedef import Properties, Record

from floe_dagster_iceberg.engine import properties as props
from floe_dagster_iceberg.engine.maintenance.compaction import SMALL_FILE_FRACTION, pack
from floe_dagster_iceberg.engine.maintenance.deletes import DeleteIndex
from floe_dagster_iceberg.engine.maintenance.files import read_fresh
from floe_dagster_iceberg.engine.maintenance.results import TableHealth, table_name

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog

__all__ = ["small_file_threshold", "table_health"]


def small_file_threshold(properties: Properties) -> int:
    """Bytes below which a data file counts as small: 75% of the table's target file size.

    The target is the table's ``write.target-file-size-bytes`` (Iceberg's default: 512 MiB),
    the size :func:`~.compaction.compact` packs files up to by default.

    Example:
        >>> small_file_threshold({}) == int(512 * 1024**2 * 0.75)
        True
        >>> small_file_threshold({"write.target-file-size-bytes": str(128 * 1024**2)})
        100663296
    """
    return int(props.target_file_size(properties) * SMALL_FILE_FRACTION)


def _compactable_small_files(
    table: Table, small_by_partition: dict[tuple[int, Record], list[DataFile]], min_input_files: int
) -> int:
    """How many of the small files :func:`~.compaction.compact` would rewrite with the table's
    target size."""
    target = props.target_file_size(table.properties)
    return sum(
        len(packed)
        for files in small_by_partition.values()
        if len(files) >= min_input_files
        for packed in pack(files, target)
        if len(packed) >= min_input_files
    )


def table_health(
    catalog: Catalog,
    table: Table,
    *,
    small_file_threshold_bytes: int | None = None,
    min_input_files: int = 2,
) -> TableHealth:
    """Storage metrics of the table's current snapshot.

    Data files, total bytes, small files (below ``small_file_threshold_bytes``, default
    :func:`small_file_threshold`) and their ratio, the small files
    :func:`~.compaction.compact` can merge (packed per partition up to the table's target file
    size, in bins of at least ``min_input_files`` files, as compaction plans them; files that
    equality deletes apply to are left out) and their ratio, average file size, partitions,
    rows net of position deletes (an upper bound when equality deletes apply:
    ``rows_exact``), delete files by kind with their bytes and the rows they delete, dangling
    delete files (applying to no live data file), snapshots, manifests, and the time since the
    last commit and since the last data change. A manifest that vanishes under a concurrent
    snapshot expiry while being read makes it reload the table and measure again.

    Example:
        >>> import tempfile, pyarrow as pa
        >>> from pyiceberg.catalog.sql import SqlCatalog
        >>> tmp = tempfile.mkdtemp()
        >>> catalog = SqlCatalog("demo", uri=f"sqlite:///{tmp}/c.db", warehouse=f"file://{tmp}")
        >>> catalog.create_namespace("sales")
        >>> table = catalog.create_table("sales.orders", pa.schema([("id", pa.int64())]))
        >>> for start in (0, 10, 20):
        ...     table.append(pa.table({"id": list(range(start, start + 10))}))
        >>> health = table_health(catalog, table)
        >>> health.data_files, health.small_files, health.compactable_small_files, health.rows
        (3, 3, 3, 30)
        >>> health.needs_compaction()
        True
    """
    threshold = (
        small_file_threshold(table.properties)
        if small_file_threshold_bytes is None
        else small_file_threshold_bytes
    )
    health, _, _ = read_fresh(
        catalog,
        table,
        lambda current: _health(current, threshold, min_input_files),
        "table health",
    )
    return health


def _health(table: Table, threshold: int, min_input_files: int) -> TableHealth:
    name = table_name(table)
    now = datetime.now(UTC)
    snapshots = table.snapshots()
    current = table.current_snapshot()
    manifests: set[str] = set()
    entries: list[ManifestEntry] = []
    for manifest, entry in _current_entries(table):
        manifests.add(manifest.manifest_path)
        entries.append(entry)
    index = DeleteIndex(table.metadata, table.io, entries)
    total_bytes = small = rows = 0
    partitions: set[tuple[int, Record]] = set()
    small_by_partition: dict[tuple[int, Record], list[DataFile]] = defaultdict(list)
    for live in index.data.values():
        data_file = live.file
        total_bytes += data_file.file_size_in_bytes
        rows += data_file.record_count
        partitions.add(live.partition)
        if data_file.file_size_in_bytes < threshold:
            small += 1
            # Compaction leaves the files that equality deletes apply to as they are.
            if not index.equality_deletes_for(live):
                small_by_partition[live.partition].append(data_file)
    data_files = len(index.data)
    compactable = _compactable_small_files(table, small_by_partition, min_input_files)
    deletes = _delete_metrics(index)
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
        rows=rows - deletes["position_deletes"],
        snapshots=len(snapshots),
        manifests=len(manifests),
        **deletes,
        last_commit_at=last_commit,
        last_data_change_at=last_change,
        seconds_since_last_commit=(now - last_commit).total_seconds() if last_commit else None,
        seconds_since_last_data_change=(
            (now - last_change).total_seconds() if last_change else None
        ),
        oldest_snapshot_at=oldest,
    )


def _delete_metrics(index: DeleteIndex) -> dict[str, int | bool]:
    """The delete-file fields of :class:`TableHealth`."""
    applying_equality = [d for d in index.equality_deletes if index.equality_applies(d)]
    sizes = {
        d.path: d.file.file_size_in_bytes for d in index.position_deletes + index.equality_deletes
    }
    return {
        "delete_files": len(index.position_deletes) + len(index.equality_deletes),
        "position_delete_files": len(index.position_deletes),
        "equality_delete_files": len(index.equality_deletes),
        "delete_file_bytes": sum(sizes.values()),
        "dangling_delete_files": len(index.dangling()),
        "position_deletes": index.deleted_rows(),
        "equality_deletes": sum(d.file.record_count for d in applying_equality),
        "rows_exact": not applying_equality,
    }


def _current_entries(table: Table) -> Iterator[tuple[ManifestFile, ManifestEntry]]:
    snapshot = table.current_snapshot()
    if snapshot is None:
        return
    for manifest in snapshot.manifests(table.io):
        for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=True):
            yield manifest, entry


def _ms_to_datetime(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)
