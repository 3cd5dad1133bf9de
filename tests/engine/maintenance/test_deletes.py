"""Merge-on-read delete files as Spark leaves them: the test helper writes real ones (PyIceberg's
own scan applies them), and the delete index knows which data files each one applies to."""

from __future__ import annotations

import pyarrow as pa
from infra.catalogs import dispose_catalog, load_test_catalog
from infra.deletes import (
    FILE_PATH_FIELD_ID,
    data_file_paths,
    ids_at,
    live_files,
    write_equality_deletes,
    write_position_deletes,
)
from pyiceberg.manifest import DataFile, DataFileContent, ManifestContent

from engine.maintenance.support import all_rows, small_files_table
from floe_dagster_iceberg.engine.maintenance.deletes import DeleteIndex, referenced_data_file


def test_position_deletes_from_the_helper_are_applied_by_pyiceberg_scans(
    sqlite_catalog_properties, namespace
):
    catalog = load_test_catalog(sqlite_catalog_properties)
    table = small_files_table(catalog, namespace, appends=4)  # 12 rows, 2 files per region
    eu = data_file_paths(table, "eu")
    doomed = ids_at(table, eu[0], [0, 2]) + ids_at(table, eu[1], [1])
    snapshots = len(table.snapshots())

    by_bounds = write_position_deletes(catalog, table, {eu[0]: [0, 2]})
    table = catalog.load_table(table.name())
    unbounded = write_position_deletes(catalog, table, {eu[1]: [1]}, bounds=False)
    table = catalog.load_table(table.name())

    rows = all_rows(table)["id"].to_pylist()
    assert len(rows) == 9
    assert not set(doomed) & set(rows)
    assert len(table.snapshots()) == snapshots + 2
    summary = table.current_snapshot().summary
    assert summary.operation.value == "delete"
    assert summary["added-position-deletes"] == "1"
    assert summary["total-position-deletes"] == "3"
    assert summary["total-delete-files"] == "2"
    assert summary["total-records"] == "12"  # Iceberg's totals count data file rows
    manifests = table.current_snapshot().manifests(table.io)
    assert {m.content for m in manifests} == {ManifestContent.DATA, ManifestContent.DELETES}
    listed = table.inspect.delete_files()
    assert sorted(listed["file_path"].to_pylist()) == sorted(
        [by_bounds.file_path, unbounded.file_path]
    )
    assert set(listed["content"].to_pylist()) == {DataFileContent.POSITION_DELETES.value}
    # As Iceberg's writers do, a file deleting from one data file names it by its bounds.
    assert referenced_data_file(live_files(table)[by_bounds.file_path]) == eu[0]
    assert referenced_data_file(live_files(table)[unbounded.file_path]) is None
    dispose_catalog(catalog)


def test_the_index_knows_which_data_files_each_delete_file_applies_to(
    sqlite_catalog_properties, namespace
):
    catalog = load_test_catalog(sqlite_catalog_properties)
    table = small_files_table(catalog, namespace, appends=6)  # 3 files per region
    eu, us = data_file_paths(table, "eu"), data_file_paths(table, "us")
    single = write_position_deletes(catalog, table, {eu[0]: [0]})
    table = catalog.load_table(table.name())
    # A partition-scoped file without bounds, over two data files: read to know them.
    spread = write_position_deletes(catalog, table, {eu[1]: [0, 1], eu[2]: [2]}, bounds=False)
    table = catalog.load_table(table.name())
    keys = pa.table({"id": pa.array(ids_at(table, us[0], [0]), pa.int64())})
    equality = write_equality_deletes(catalog, table, keys, like=us[0])
    table = catalog.load_table(table.name())

    index = DeleteIndex.of(table)

    by_path = {d.path: d for d in index.position_deletes}
    assert index.targets(by_path[single.file_path]) == {eu[0]: 1}
    assert index.targets(by_path[spread.file_path]) == {eu[1]: 2, eu[2]: 1}
    assert [d.path for d in index.position_deletes_for(eu[1])] == [spread.file_path]
    assert index.position_deletes_for(us[0]) == []
    assert index.deleted_rows() == 4
    assert index.deleted_positions(eu[1]) == 2
    (eq,) = index.equality_deletes
    assert eq.path == equality.file_path
    assert index.equality_applies(eq)
    # Equality deletes apply to the older data files of their partition only.
    assert [d.path for d in index.equality_deletes_for(index.data[us[0]])] == [eq.path]
    assert index.equality_deletes_for(index.data[eu[0]]) == []
    assert index.dangling() == []
    dispose_catalog(catalog)


def test_a_delete_file_naming_its_data_file_by_the_v3_field_is_resolved_without_reading():
    path = "s3://lake/t/data/a.parquet"
    deletes = DataFile.from_args(
        _table_format_version=3,
        content=DataFileContent.POSITION_DELETES,
        file_path="s3://lake/t/data/gone-deletes.parquet",
        referenced_data_file=path,
        lower_bounds={FILE_PATH_FIELD_ID: b"s3://lake/t/data/0"},
        upper_bounds={FILE_PATH_FIELD_ID: b"s3://lake/t/data/z"},
    )
    assert referenced_data_file(deletes) == path
