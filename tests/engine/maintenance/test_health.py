"""Table health: storage metrics, and only the small files compaction can merge count as such."""

from __future__ import annotations

import pytest
from infra.catalogs import dispose_catalog, load_test_catalog

from engine.maintenance.support import (
    REGION_SPEC,
    SCHEMA,
    data_files,
    fast_manager,
    make_rows,
    small_files_table,
)
from floe_dagster_iceberg.engine.maintenance.health import table_health


def test_table_health_reports_storage_metrics(sqlite_catalog_properties, namespace):
    catalog = load_test_catalog(sqlite_catalog_properties)
    table = small_files_table(catalog, namespace, appends=10)
    sizes = list(data_files(table).values())
    manager = fast_manager(catalog)

    health = manager.table_health(table.name())
    assert health.data_files == 10
    assert health.total_bytes == sum(sizes)
    assert health.small_files == 10
    assert health.small_file_ratio == pytest.approx(1.0)
    assert health.compactable_small_files == 10  # five per partition
    assert health.compactable_small_file_ratio == pytest.approx(1.0)
    # 75% of the table's write.target-file-size-bytes (Iceberg's default: 512 MiB)
    assert health.small_file_threshold_bytes == int(512 * 1024 * 1024 * 0.75)
    assert health.average_file_size_bytes == pytest.approx(sum(sizes) / 10)
    assert health.partitions == 2
    assert health.rows == 30
    assert health.snapshots == 10
    assert health.manifests == 10
    assert health.delete_files == 0
    assert health.seconds_since_last_commit is not None
    assert health.seconds_since_last_commit >= 0
    assert health.last_data_change_at == health.last_commit_at
    assert health.needs_compaction()

    threshold = sorted(sizes)[5]
    assert manager.table_health(table.name(), small_file_threshold_bytes=threshold).small_files == 5

    manager.compact(table.name(), target_file_size_bytes=10**7)
    compacted = manager.table_health(table.name())
    assert compacted.data_files == 2
    assert compacted.rows == 30
    assert compacted.snapshots == 11
    assert compacted.last_data_change_at == health.last_commit_at  # compaction is no data change
    assert compacted.last_commit_at >= health.last_commit_at
    assert set(compacted.as_metrics()) >= {"data_files", "small_file_ratio", "rows", "snapshots"}
    dispose_catalog(catalog)


def test_table_health_counts_only_small_files_compaction_can_merge(
    sqlite_catalog_properties, namespace
):
    catalog = load_test_catalog(sqlite_catalog_properties)
    catalog.create_namespace_if_not_exists(namespace)
    table = catalog.create_table(f"{namespace}.daily", SCHEMA, partition_spec=REGION_SPEC)
    for n in range(7):  # a backfill: one small file in each of seven partitions
        table.append(make_rows(n * 3, 3, f"r{n}"))
    manager = fast_manager(catalog)

    lone = manager.table_health(table.name())
    assert (lone.data_files, lone.small_files, lone.partitions) == (7, 7, 7)
    assert lone.compactable_small_files == 0
    assert lone.compactable_small_file_ratio == 0.0
    assert not lone.needs_compaction(max_small_file_ratio=0.5, min_small_files=2)
    assert not manager.compact(table.name(), target_file_size_bytes=10**7).committed

    table = catalog.load_table(table.name())
    for n in range(3):  # three more files in partition r0: four small files there
        table.append(make_rows(100 + n * 3, 3, "r0"))
    piled_up = manager.table_health(table.name())
    assert (piled_up.small_files, piled_up.compactable_small_files) == (10, 4)
    assert piled_up.compactable_small_file_ratio == pytest.approx(0.4)
    assert piled_up.needs_compaction(max_small_file_ratio=0.3, min_small_files=4)
    assert not piled_up.needs_compaction(max_small_file_ratio=0.5)
    # Bins of fewer than min_input_files files are not rewritten, so they do not count.
    table = catalog.load_table(table.name())
    assert table_health(catalog, table, min_input_files=5).compactable_small_files == 0
    assert table_health(catalog, table, min_input_files=4).compactable_small_files == 4

    # A target size that fits one file per bin: every file is small, none can be merged.
    sizes = list(data_files(table).values())
    target = int((max(sizes) + 2) / 0.75) + 1
    assert target < 2 * min(sizes)
    with table.transaction() as transaction:
        transaction.set_properties({"write.target-file-size-bytes": str(target)})
    one_per_bin = manager.table_health(table.name())
    assert (one_per_bin.small_files, one_per_bin.compactable_small_files) == (10, 0)
    assert not manager.compact(table.name(), target_file_size_bytes=target).committed

    with table.transaction() as transaction:
        transaction.remove_properties("write.target-file-size-bytes")
    result = manager.compact(table.name(), target_file_size_bytes=10**7)
    assert result.committed
    assert result.files_rewritten == 4
    compacted = manager.table_health(table.name())
    assert (compacted.small_files, compacted.compactable_small_files) == (7, 0)
    assert compacted.as_metrics()["compactable_small_files"] == 0
    dispose_catalog(catalog)
