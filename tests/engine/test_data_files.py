"""Data files: written once per write, split by partition, NULL nested values kept exactly."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from infra.catalogs import dispose_catalog, load_test_catalog

from floe_dagster_iceberg.engine.config import PartitionField, WriteConfig
from floe_dagster_iceberg.engine.manager import IcebergTableManager

MEMBER = pa.struct([("price", pa.float64()), ("sku", pa.string())])


def _nested_rows() -> pa.Table:
    """NULL and empty lists, maps and structs at depths 1 to 3, next to filled ones."""
    items = pa.list_(MEMBER)
    payload = pa.struct([("items", items), ("tags", pa.map_(pa.string(), MEMBER))])
    return pa.table(
        {
            "id": pa.array([1, 2, 3, 4, 5], pa.int64()),
            "part": ["a", "a", "b", "b", "b"],
            "items": pa.array(
                [[{"price": 1.5, "sku": "x"}], None, [], [None], [{"price": None, "sku": None}]],
                items,
            ),
            "payload": pa.array(
                [
                    {
                        "items": [{"price": 2.0, "sku": "y"}],
                        "tags": [("k", {"price": 1.0, "sku": "z"})],
                    },
                    {"items": None, "tags": None},
                    None,
                    {"items": [], "tags": []},
                    {"items": [None], "tags": [("n", None)]},
                ],
                payload,
            ),
        }
    )


@pytest.mark.parametrize("partitioned", [False, True])
def test_null_nested_values_round_trip_exactly(sqlite_catalog_properties, namespace, partitioned):
    catalog = load_test_catalog(sqlite_catalog_properties)
    manager = IcebergTableManager(catalog)
    rows = _nested_rows()
    spec = (PartitionField(source_column="part"),) if partitioned else None
    table = f"{namespace}.nested"
    manager.write(table, rows, WriteConfig(partition_spec=spec))

    read = manager.scan(table).sort_by("id")
    for column in ("items", "payload"):
        assert read.column(column).to_pylist() == rows.column(column).to_pylist()
    # The files themselves hold the NULLs (another engine reading them sees the same).
    loaded = manager.load_table(table)
    stored = pa.concat_tables(
        pq.read_table(task.file.file_path.removeprefix("file://"))
        for task in loaded.scan().plan_files()
    ).sort_by("id")
    assert stored.column("items").to_pylist() == rows.column("items").to_pylist()
    dispose_catalog(catalog)


def test_rows_split_by_partition_in_one_file_each(sqlite_catalog_properties, namespace):
    catalog = load_test_catalog(sqlite_catalog_properties)
    manager = IcebergTableManager(catalog)
    parts = [f"p{i % 7}" for i in range(700)]
    rows = pa.table({"id": pa.array(range(700), pa.int64()), "part": parts})
    result = manager.write(
        f"{namespace}.split",
        rows,
        WriteConfig(partition_spec=(PartitionField(source_column="part"),)),
    )
    assert result.files_added == len(set(parts))
    loaded = manager.load_table(f"{namespace}.split")
    for task in loaded.scan().plan_files():
        values = set(
            pq.read_table(task.file.file_path.removeprefix("file://")).column("part").to_pylist()
        )
        assert values == {task.file.partition[0]}
    read = manager.scan(f"{namespace}.split").sort_by("id")
    assert read.select(["id", "part"]).to_pylist() == rows.to_pylist()
    dispose_catalog(catalog)
