"""Reading what commits of other engines did from a table's history."""

from collections.abc import Iterator

import pyarrow as pa
import pytest
from infra.catalogs import dispose_catalog, load_test_catalog
from pyiceberg.table import Table
from pyiceberg.types import StringType

from floe_dagster_iceberg import TableNotFoundError
from floe_dagster_iceberg.engine.history import (
    SnapshotMark,
    snapshots_since,
    write_result,
)


@pytest.fixture
def table(sqlite_catalog_properties) -> Iterator[Table]:
    catalog = load_test_catalog(sqlite_catalog_properties)
    try:
        catalog.create_namespace("sales")
        yield catalog.create_table("sales.orders", pa.schema([("id", pa.int64())]))
    finally:
        dispose_catalog(catalog)


def _append(table: Table, *ids: int) -> int:
    table.append(pa.table({"id": pa.array(ids, pa.int64())}))
    return table.current_snapshot().snapshot_id


def _ids(snapshots) -> list[int]:
    return [s.snapshot_id for s in snapshots]


def test_new_snapshots_are_those_after_the_last_seen_in_commit_order(table: Table) -> None:
    assert snapshots_since(table, SnapshotMark(None)) == []
    first = _append(table, 1)
    seen = SnapshotMark.of(table.current_snapshot())
    second, third = _append(table, 2), _append(table, 3)

    assert _ids(snapshots_since(table, SnapshotMark(None))) == [first, second, third]
    assert _ids(snapshots_since(table, seen)) == [second, third]
    assert snapshots_since(table, SnapshotMark.of(table.current_snapshot())) == []


def test_after_a_rollback_only_commits_newer_than_the_last_seen_are_new(table: Table) -> None:
    first = _append(table, 1)
    _append(table, 2)
    seen = SnapshotMark.of(table.current_snapshot())
    table.manage_snapshots().rollback_to_snapshot(first).commit()

    assert snapshots_since(table, seen) == []  # the branch went back: nothing was committed
    after = _append(table, 3)
    assert _ids(snapshots_since(table, seen)) == [after]


def test_a_write_of_several_snapshots_adds_them_up_and_names_its_schema_changes(
    table: Table,
) -> None:
    _append(table, 1, 2)
    before = table.current_snapshot().snapshot_id
    with table.transaction() as transaction:
        with transaction.update_schema() as update:
            update.add_column("note", StringType())
        transaction.overwrite(pa.table({"id": pa.array([3], pa.int64()), "note": ["n"]}))

    result = write_result(table, table.current_snapshot().snapshot_id, before)

    assert result.operation == "overwrite"
    assert (result.rows_added, result.rows_deleted) == (1, 2)
    assert (result.files_added, result.files_deleted) == (1, 1)
    assert result.schema_changes == ("add column note string",)
    assert not result.created_table
    assert write_result(table, table.current_snapshot().snapshot_id).rows_deleted == 0


def test_a_previous_snapshot_that_is_no_ancestor_is_refused_with_the_fix(table: Table) -> None:
    first = _append(table, 1)
    second = _append(table, 2)

    with pytest.raises(TableNotFoundError, match="report the snapshot the table had before"):
        write_result(table, first, previous_snapshot_id=second)
    with pytest.raises(TableNotFoundError, match=r"Table 'sales\.orders' has no snapshot 12345"):
        write_result(table, 12345)
