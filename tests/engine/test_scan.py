"""Reads: one Arrow schema whoever wrote the files, incremental ranges, planning pruned by slice.

Runs on every catalog kind (sqlite, postgres, rest) like the other engine tests.
"""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.expressions import (
    And,
    EqualTo,
    GreaterThanOrEqual,
    In,
    IsNull,
    LessThan,
    Not,
    Or,
    StartsWith,
)

from floe_dagster_iceberg import (
    ArrowStringType,
    IcebergTableManager,
    InvalidInputError,
    PartitionField,
    TableNotFoundError,
    WriteConfig,
)
from floe_dagster_iceberg.engine.slice_files import candidate_files

APPEND = WriteConfig(mode="append")


def _rows(part: str, ids: list[int]) -> pa.Table:
    return pa.table(
        {
            "part": pa.array([part] * len(ids), pa.large_string()),
            "id": pa.array(ids, pa.int64()),
            "tags": pa.array([[f"t{i}"] for i in ids], pa.large_list(pa.large_string())),
            "blob": pa.array([bytes([i]) for i in ids], pa.large_binary()),
        }
    )


def _add_foreign_file(table, directory, part: str, ids: list[int]) -> None:
    """Add a Parquet file as Spark, DuckDB or pandas write one: plain string, binary and list
    types, no Arrow schema stored, no field ids (the table maps columns by name)."""
    rows = pa.table(
        {
            "part": pa.array([part] * len(ids), pa.string()),
            "id": pa.array(ids, pa.int64()),
            "tags": pa.array([[f"t{i}"] for i in ids], pa.list_(pa.string())),
            "blob": pa.array([bytes([i]) for i in ids], pa.binary()),
        }
    )
    path = directory / f"foreign-{part}.parquet"
    pq.write_table(rows, path, store_schema=False)
    table.add_files([str(path)])


def test_schema_is_decided_by_the_table_not_by_the_writer(catalog, namespace, tmp_path):
    manager = IcebergTableManager(catalog)
    name = f"{namespace}.mixed"
    manager.write(name, _rows("a", [1, 2]), APPEND)
    _add_foreign_file(catalog.load_table(name), tmp_path, "b", [3])
    foreign_only = EqualTo("part", "b")

    ours = manager.scan(name, EqualTo("part", "a"))
    theirs = manager.scan(name, foreign_only)
    small = manager.scan(name, foreign_only, string_type=ArrowStringType.STRING)
    streamed = manager.scan_batches(name, string_type=ArrowStringType.STRING).read_all()

    assert ours.schema == theirs.schema
    assert theirs.schema.field("part").type == pa.large_string()
    assert theirs.schema.field("tags").type.value_type == pa.large_string()
    assert theirs.schema.field("blob").type == pa.large_binary()
    assert small.schema.field("part").type == pa.string()
    assert small.schema.field("tags").type.value_type == pa.string()
    assert small.schema.field("blob").type == pa.binary()
    assert streamed.schema == small.schema
    assert theirs.to_pylist() == _rows("b", [3]).to_pylist()
    assert small.to_pylist() == theirs.to_pylist()


def test_filtered_read_of_one_part_with_columns(catalog, namespace):
    manager = IcebergTableManager(catalog)
    name = f"{namespace}.parts"
    for part, ids in (("a", [1, 2]), ("b", [3]), ("c", [4, 5])):
        manager.write(name, _rows(part, ids), APPEND)

    result = manager.scan(name, EqualTo("part", "c"), columns=["id"])

    assert sorted(result.column("id").to_pylist()) == [4, 5]
    assert result.schema.names == ["id"]


def test_scan_appended_reads_each_increment_once(catalog, namespace):
    manager = IcebergTableManager(catalog)
    name = f"{namespace}.log"
    snapshots = []
    for part, ids in (("a", [1]), ("b", [2, 3]), ("c", [4])):
        snapshots.append(manager.write(name, _rows(part, ids), APPEND).snapshot_id)

    everything = manager.scan_appended(name)
    after_first = manager.scan_appended(name, from_snapshot_id=snapshots[0])
    middle = manager.scan_appended(name, from_snapshot_id=snapshots[0], to_snapshot_id=snapshots[1])

    assert sorted(everything.column("id").to_pylist()) == [1, 2, 3, 4]
    assert sorted(after_first.column("id").to_pylist()) == [2, 3, 4]
    assert sorted(middle.column("id").to_pylist()) == [2, 3]


def test_scan_appended_counts_slice_writes_that_removed_nothing(catalog, namespace):
    manager = IcebergTableManager(catalog)
    name = f"{namespace}.slices"
    first = manager.write(name, _rows("a", [1]), APPEND).snapshot_id
    new_slice = WriteConfig(mode="overwrite", row_filter=EqualTo("part", "b"))
    manager.write(name, _rows("b", [2]), new_slice)

    assert manager.scan_appended(name, from_snapshot_id=first).column("id").to_pylist() == [2]


def test_scan_appended_refuses_a_range_that_replaced_rows(catalog, namespace):
    manager = IcebergTableManager(catalog)
    name = f"{namespace}.replaced"
    first = manager.write(name, _rows("a", [1]), APPEND).snapshot_id
    replaced = manager.write(
        name, _rows("a", [9]), WriteConfig(mode="overwrite", row_filter=EqualTo("part", "a"))
    ).snapshot_id

    with pytest.raises(InvalidInputError) as error:
        manager.scan_appended(name, from_snapshot_id=first)

    assert str(replaced) in str(error.value)
    assert f"from_snapshot_id={replaced}" in str(error.value)


def test_scan_appended_passes_over_compaction(catalog, namespace):
    manager = IcebergTableManager(catalog)
    name = f"{namespace}.compacted"
    for ids in ([1], [2], [3]):
        manager.write(name, _rows("a", ids), APPEND)
    before = catalog.load_table(name).current_snapshot().snapshot_id
    manager.compact(name)
    manager.write(name, _rows("a", [4]), APPEND)

    assert manager.scan_appended(name, from_snapshot_id=before).column("id").to_pylist() == [4]


def test_scan_appended_from_an_unknown_snapshot_is_refused(catalog, namespace):
    manager = IcebergTableManager(catalog)
    name = f"{namespace}.unknown"
    manager.write(name, _rows("a", [1]), APPEND)

    with pytest.raises(TableNotFoundError, match="expired"):
        manager.scan_appended(name, from_snapshot_id=12345)


def test_vectorized_partition_pruning_agrees_with_file_by_file(tmp_path):
    """Planning tests the partitions of a whole manifest at once; it must keep exactly the
    files the per-file test keeps, for every transform and filter shape."""
    catalog = SqlCatalog(
        "pruning", uri=f"sqlite:///{tmp_path}/c.db", warehouse=f"file://{tmp_path}"
    )
    manager = IcebergTableManager(catalog)
    name = "pruning.events"
    spec = (
        PartitionField(source_column="day", transform="day"),
        PartitionField(source_column="user", transform="bucket", width=4),
        PartitionField(source_column="region", transform="truncate", width=1),
    )
    for i in range(12):
        rows = pa.table(
            {
                "day": pa.array([dt.datetime(2024, 1, 1 + i % 6)] * 2, pa.timestamp("us")),
                "user": pa.array([i, i + 100], pa.int64()),
                "region": pa.array([None if i == 3 else f"{'ab'[i % 2]}x{i}"] * 2, pa.string()),
            }
        )
        manager.write(name, rows, WriteConfig(mode="append", partition_spec=spec))
    table = catalog.load_table(name)
    filters = [
        EqualTo("region", "ax0"),
        In("user", [1, 5, 105]),
        And(
            GreaterThanOrEqual("day", "2024-01-02T00:00:00"), LessThan("day", "2024-01-04T00:00:00")
        ),
        IsNull("region"),
        Not(EqualTo("region", "bx1")),
        Or(EqualTo("user", 7), StartsWith("region", "b")),
    ]
    for row_filter in filters:
        vectorized = {
            f.file_path for f in candidate_files(table.metadata, table.io, row_filter, cached=True)
        }
        per_file = {f.file_path for f in candidate_files(table.metadata, table.io, row_filter)}
        assert vectorized == per_file, row_filter
        assert vectorized, row_filter


def test_a_time_column_is_written_with_a_warning_naming_it(tmp_path, caplog):
    catalog = SqlCatalog("times", uri=f"sqlite:///{tmp_path}/c.db", warehouse=f"file://{tmp_path}")
    manager = IcebergTableManager(catalog)
    rows = pa.table({"id": [1], "opens": pa.array([dt.time(9, 30)], pa.time64("us"))})

    with caplog.at_level("WARNING", logger="floe_dagster_iceberg"):
        manager.write("shops.hours", rows, APPEND)
        manager.write("shops.hours", rows, APPEND)  # no schema change: no second warning

    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1
    assert "shops.hours" in warnings[0]
    assert "['opens']" in warnings[0]
    assert "Spark" in warnings[0]
    assert manager.scan("shops.hours").column("opens").to_pylist() == [dt.time(9, 30)] * 2
