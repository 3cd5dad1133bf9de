"""Table health: storage metrics, only the small files compaction can merge count as such, and
rows net of merge-on-read deletes."""

from __future__ import annotations

import pyarrow as pa
import pytest
from infra.catalogs import dispose_catalog, load_test_catalog
from infra.deletes import (
    data_file_paths,
    ids_at,
    write_equality_deletes,
    write_position_deletes,
)
from pyiceberg.expressions import EqualTo

from engine.maintenance.support import (
    REGION_SPEC,
    SCHEMA,
    all_rows,
    data_files,
    fast_manager,
    make_rows,
    small_files_table,
)
from floe_dagster_iceberg.engine.config import WriteConfig
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


def test_table_health_counts_rows_net_of_merge_on_read_deletes(
    postgres_catalog_properties, namespace, warehouse_files
):
    """As Spark leaves a table on a PostgreSQL catalog: 12 rows in data files, 2 deleted."""
    catalog = load_test_catalog(postgres_catalog_properties)
    table = small_files_table(catalog, namespace, appends=4)  # 12 rows, 2 files per region
    manager = fast_manager(catalog)
    eu, us = data_file_paths(table, "eu"), data_file_paths(table, "us")
    deletes = write_position_deletes(catalog, table, {eu[0]: [0, 2]})

    health = manager.table_health(table.name())
    table = catalog.load_table(table.name())
    assert health.rows == 10 == all_rows(table).num_rows == manager.count(table.name())
    assert health.rows_exact
    assert health.position_deletes == 2
    assert (health.delete_files, health.position_delete_files, health.equality_delete_files) == (
        1,
        1,
        0,
    )
    assert health.delete_file_bytes == warehouse_files(table)[deletes.file_path]
    assert (health.dangling_delete_files, health.equality_deletes) == (0, 0)
    assert health.data_files == 4
    assert health.compactable_small_files == 4  # compaction applies position deletes
    metrics = health.as_metrics()
    assert metrics["rows"] == 10
    assert metrics["rows_exact"] == "true"
    assert metrics["position_delete_files"] == 1
    assert metrics["delete_file_bytes"] == health.delete_file_bytes

    # Equality deletes are only countable by reading the data: rows is then an upper bound.
    key = pa.table({"id": pa.array([ids_at(table, us[0], [0])[0]], pa.int64())})
    write_equality_deletes(catalog, table, key, like=us[0])
    with_keys = manager.table_health(table.name())
    assert with_keys.rows == 10
    assert not with_keys.rows_exact
    assert with_keys.as_metrics()["rows_exact"] == "false"
    assert (with_keys.equality_delete_files, with_keys.equality_deletes) == (1, 1)
    assert with_keys.delete_files == 2
    assert with_keys.compactable_small_files == 2  # only eu: compaction leaves us as it is

    # Overwriting eu leaves its position deletes applying to no live data file.
    manager.write(
        table.name(),
        make_rows(500, 3, "eu"),
        WriteConfig(mode="overwrite", row_filter=EqualTo("region", "eu")),
    )
    overwritten = manager.table_health(table.name())
    assert (overwritten.rows, overwritten.position_deletes) == (9, 0)
    assert overwritten.dangling_delete_files == 1
    assert overwritten.delete_files == 2
    # ... and overwriting us, its equality deletes: older than every live us file.
    manager.write(
        table.name(),
        make_rows(600, 3, "us"),
        WriteConfig(mode="overwrite", row_filter=EqualTo("region", "us")),
    )
    both = manager.table_health(table.name())
    assert (both.rows, both.rows_exact, both.equality_deletes) == (6, True, 0)
    assert both.dangling_delete_files == 2 == both.delete_files
    assert both.rows == all_rows(catalog.load_table(table.name())).num_rows
    dispose_catalog(catalog)
