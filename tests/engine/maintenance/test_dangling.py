"""Dangling delete files: removed in one snapshot, every row, data file and applying delete kept."""

from __future__ import annotations

import pyarrow as pa
import pytest
from infra.catalogs import dispose_catalog, load_test_catalog
from infra.deletes import (
    data_file_paths,
    ids_at,
    live_files,
    write_equality_deletes,
    write_position_deletes,
)
from pyiceberg.expressions import EqualTo
from pyiceberg.manifest import DataFileContent

from engine.maintenance.support import all_rows, fast_manager, make_rows, small_files_table
from floe_dagster_iceberg.engine.config import WriteConfig
from floe_dagster_iceberg.engine.maintenance import dangling

EU = EqualTo("region", "eu")


def _delete_paths(table) -> set[str]:
    return {p for p, f in live_files(table).items() if f.content != DataFileContent.DATA}


def _overwrite_eu(manager, table) -> None:
    manager.write(
        table.name(), make_rows(500, 3, "eu"), WriteConfig(mode="overwrite", row_filter=EU)
    )


def test_dangling_position_deletes_are_removed_in_one_snapshot_that_changes_nothing_else(
    postgres_catalog_properties, namespace, warehouse_files
):
    catalog = load_test_catalog(postgres_catalog_properties)
    table = small_files_table(catalog, namespace, appends=6)  # 3 files per region
    manager = fast_manager(catalog)
    eu, us = data_file_paths(table, "eu"), data_file_paths(table, "us")
    named = write_position_deletes(catalog, table, {eu[0]: [0]})
    table = catalog.load_table(table.name())
    unbounded = write_position_deletes(catalog, table, {eu[1]: [1], eu[2]: [0]}, bounds=False)
    table = catalog.load_table(table.name())
    applying = write_position_deletes(catalog, table, {us[0]: [2]})
    table = catalog.load_table(table.name())
    _overwrite_eu(manager, table)  # eu's data files leave the snapshot; their deletes stay
    table = catalog.load_table(table.name())
    assert _delete_paths(table) == {named.file_path, unbounded.file_path, applying.file_path}
    assert manager.table_health(table.name()).dangling_delete_files == 2
    rows, data, before_id = all_rows(table), data_file_paths(table), table.current_snapshot()
    on_disk = warehouse_files(table)

    result = manager.remove_dangling_deletes(table.name())

    table = catalog.load_table(table.name())
    assert result.committed
    assert result.snapshot_id == table.current_snapshot().snapshot_id
    assert table.current_snapshot().parent_snapshot_id == before_id.snapshot_id
    assert (result.position_delete_files_removed, result.equality_delete_files_removed) == (2, 0)
    assert result.delete_files == 3
    assert result.removed_files == tuple(sorted([named.file_path, unbounded.file_path]))
    assert result.bytes_removed == on_disk[named.file_path] + on_disk[unbounded.file_path]
    assert result.as_metrics()["delete_files_removed"] == 2
    assert _delete_paths(table) == {applying.file_path}
    assert data_file_paths(table) == data
    assert all_rows(table).equals(rows)
    summary = table.current_snapshot().summary
    assert summary.operation.value == "replace"
    assert summary["removed-position-delete-files"] == "2"
    assert (summary["total-delete-files"], summary["total-position-deletes"]) == ("1", "1")
    assert summary["total-records"] == before_id.summary["total-records"]
    assert table.scan(snapshot_id=before_id.snapshot_id).to_arrow().sort_by("id").equals(rows)
    # The files stay on storage for older snapshots; expiry deletes them.
    assert named.file_path in warehouse_files(table)
    health = manager.table_health(table.name())
    assert (health.dangling_delete_files, health.delete_files, health.rows) == (0, 1, rows.num_rows)

    again = manager.remove_dangling_deletes(table.name())
    assert not again.committed
    assert again.delete_files == 1
    assert len(catalog.load_table(table.name()).snapshots()) == len(table.snapshots())
    dispose_catalog(catalog)


def test_equality_deletes_older_than_every_data_file_of_their_partition_are_removed(
    sqlite_catalog_properties, namespace
):
    catalog = load_test_catalog(sqlite_catalog_properties)
    table = small_files_table(catalog, namespace, appends=4)
    manager = fast_manager(catalog)
    eu, us = data_file_paths(table, "eu"), data_file_paths(table, "us")
    old = write_equality_deletes(
        catalog, table, pa.table({"id": pa.array(ids_at(table, eu[0], [0]), pa.int64())}), eu[0]
    )
    table = catalog.load_table(table.name())
    kept = write_equality_deletes(
        catalog, table, pa.table({"id": pa.array(ids_at(table, us[0], [0]), pa.int64())}), us[0]
    )
    table = catalog.load_table(table.name())
    _overwrite_eu(manager, table)
    table = catalog.load_table(table.name())
    # PyIceberg refuses to read a partition with equality deletes, applying or not.
    with pytest.raises(ValueError, match="equality deletes"):
        table.scan(row_filter=EU).to_arrow()
    data = data_file_paths(table)

    result = manager.remove_dangling_deletes(table.name())

    table = catalog.load_table(table.name())
    assert (result.position_delete_files_removed, result.equality_delete_files_removed) == (0, 1)
    assert result.removed_files == (old.file_path,)
    assert _delete_paths(table) == {kept.file_path}
    assert data_file_paths(table) == data
    eu_rows = table.scan(row_filter=EU).to_arrow().sort_by("id")
    assert eu_rows.to_pylist() == make_rows(500, 3, "eu").to_pylist()
    dispose_catalog(catalog)


def test_a_commit_landing_meanwhile_makes_the_removal_plan_again(
    sqlite_catalog_properties, namespace, monkeypatch
):
    """Another writer commits between planning and commit: planned again, its rows kept."""
    catalog = load_test_catalog(sqlite_catalog_properties)
    other_writer = load_test_catalog(sqlite_catalog_properties)
    table = small_files_table(catalog, namespace, appends=4)
    manager = fast_manager(catalog)
    eu = data_file_paths(table, "eu")
    doomed = write_position_deletes(catalog, table, {eu[0]: [0]})
    _overwrite_eu(manager, catalog.load_table(table.name()))
    real_plan = dangling._plan
    planned: list[int] = []

    def plan_while_another_writer_appends(tbl):
        found = real_plan(tbl)
        if not planned:
            other_writer.load_table(tbl.name()).append(make_rows(900, 2, "us"))
            planned.append(1)
        return found

    monkeypatch.setattr(dangling, "_plan", plan_while_another_writer_appends)
    result = manager.remove_dangling_deletes(table.name())

    table = catalog.load_table(table.name())
    assert result.committed
    assert result.commit_attempts == 2
    assert result.removed_files == (doomed.file_path,)
    assert _delete_paths(table) == set()
    assert {900, 901} <= set(all_rows(table)["id"].to_pylist())
    assert all_rows(table).num_rows == 6 + 3 + 2
    dispose_catalog(other_writer)
    dispose_catalog(catalog)
