"""A writer killed with SIGKILL between writing its files and committing changes nothing.

The writer is a real process. It runs an ordinary write and blocks right before the catalog
commit that adds its snapshot; the test kills it there (see :mod:`reliability.crash`). The table
must be exactly as before and readable, and orphan removal must delete the files it left.
"""

from __future__ import annotations

from datetime import timedelta

import pyarrow as pa
import pytest
from infra.catalogs import dispose_catalog, load_test_catalog
from pyiceberg.expressions import EqualTo
from reliability.crash import kill, start_paused_writer
from reliability.workers import PART_SPEC, partition_rows

from floe_dagster_iceberg.engine.config import PartitionField, WriteConfig
from floe_dagster_iceberg.engine.manager import IcebergTableManager


@pytest.fixture(params=["sqlite", "rest"])
def properties(request: pytest.FixtureRequest) -> dict[str, str]:
    return dict(request.getfixturevalue(f"{request.param}_catalog_properties"))


@pytest.fixture
def manager(properties):
    loaded = load_test_catalog(properties)
    try:
        yield IcebergTableManager(loaded)
    finally:
        dispose_catalog(loaded)


def _state(manager: IcebergTableManager, table: str) -> dict:
    loaded = manager.load_table(table)
    return {
        "metadata_location": loaded.metadata_location,
        "snapshot_id": loaded.metadata.current_snapshot_id,
        "schema": loaded.schema(),
        "spec": loaded.spec(),
        "properties": dict(loaded.properties),
        "rows": manager.scan(loaded).sort_by([("part", "ascending"), ("id", "ascending")]),
    }


def _crash_and_clean(manager, properties, table, data, config, warehouse_files):
    """Kill a writer before its data commit; check nothing changed; remove its files."""
    before = _state(manager, table)
    location = manager.load_table(table).location()
    files_before = warehouse_files(location, properties)

    writer = start_paused_writer(properties, table, data, config)
    assert writer.commits_before_pause == 0, "the write committed something before its data"
    assert "AddSnapshotUpdate" in writer.update_kinds
    kill(writer)

    after = _state(manager, table)
    assert after == before, "the killed writer changed the table"
    left_behind = set(warehouse_files(location, properties)) - set(files_before)
    assert any(path.endswith(".parquet") for path in left_behind), "no data file was written"

    result = manager.remove_orphan_files(table, older_than=timedelta(0))
    assert set(result.orphan_files) == left_behind
    assert result.files_deleted == len(left_behind)
    assert set(warehouse_files(location, properties)) == set(files_before)
    assert _state(manager, table) == before
    return writer


def test_killed_append_leaves_the_table_unchanged(manager, properties, namespace, warehouse_files):
    table = f"{namespace}.events"
    manager.write(table, partition_rows("a", 50, "first"), WriteConfig(partition_spec=PART_SPEC))
    _crash_and_clean(
        manager,
        properties,
        table,
        partition_rows("b", 500, "killed"),
        WriteConfig(),
        warehouse_files,
    )
    # The same write, run again, lands once.
    manager.write(table, partition_rows("b", 500, "rerun"), WriteConfig())
    assert manager.count(table, EqualTo("part", "b")) == 500


def test_killed_write_with_schema_and_spec_changes_changes_nothing(
    manager, properties, namespace, warehouse_files
):
    """A write that adds a column, evolves the spec and replaces a partition is one commit."""
    table = f"{namespace}.events"
    manager.write(table, partition_rows("a", 50, "first"), WriteConfig(partition_spec=PART_SPEC))
    evolved = partition_rows("a", 80, "killed").append_column(
        "score", pa.array([float(i) for i in range(80)], pa.float64())
    )
    config = WriteConfig(
        mode="overwrite",
        row_filter=EqualTo("part", "a"),
        partition_spec=(*PART_SPEC, PartitionField(source_column="id", transform="bucket[4]")),
        table_properties={"floe.test": "evolved"},
    )
    writer = _crash_and_clean(manager, properties, table, evolved, config, warehouse_files)
    # The one commit the killed writer was about to make carried all of it.
    assert {"AddSchemaUpdate", "AddPartitionSpecUpdate", "SetPropertiesUpdate"} <= set(
        writer.update_kinds
    )

    result = manager.write(table, evolved, config)
    loaded = manager.load_table(table)
    assert "score" in loaded.schema().column_names
    assert [f.name for f in loaded.spec().fields] == ["part", "id_bucket_4"]
    assert loaded.properties["floe.test"] == "evolved"
    assert manager.count(table) == 80
    snapshot = next(s for s in manager.snapshots(table) if s.snapshot_id == result.snapshot_id)
    assert snapshot.schema_id == loaded.schema().schema_id
