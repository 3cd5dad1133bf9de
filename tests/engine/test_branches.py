"""Branch writes and publishing: main untouched until publish, fast-forward, re-applied files on
a moved main, conflicts refused, idempotent publish, stale branch removal."""

from __future__ import annotations

from datetime import timedelta

import pyarrow as pa
import pytest
from infra.catalogs import load_test_catalog
from pyiceberg.expressions import EqualTo

from floe_dagster_iceberg.engine.branches import SOURCE_SNAPSHOT_PROPERTY
from floe_dagster_iceberg.engine.config import PartitionField, WriteConfig, WriteMode
from floe_dagster_iceberg.engine.manager import IcebergTableManager
from floe_dagster_iceberg.errors import CommitConflictError, InvalidInputError, TableNotFoundError

DAY = PartitionField(source_column="day")


def _rows(day: str, ids: list[int]) -> pa.Table:
    return pa.table({"day": [day] * len(ids), "id": ids})


def _overwrite(day: str, branch: str | None = None) -> WriteConfig:
    return WriteConfig(
        mode=WriteMode.OVERWRITE,
        row_filter=EqualTo("day", day),
        partition_spec=(DAY,),
        branch=branch,
    )


def _sorted_ids(table: pa.Table) -> list[tuple[str, int]]:
    return sorted(zip(table.column("day").to_pylist(), table.column("id").to_pylist(), strict=True))


def _orders(catalog, namespace: str) -> tuple[IcebergTableManager, str]:
    manager = IcebergTableManager(catalog)
    name = f"{namespace}.orders"
    manager.write(name, _rows("a", [1, 2]), _overwrite("a"))
    manager.write(name, _rows("b", [3]), _overwrite("b"))
    return manager, name


@pytest.fixture
def orders_everywhere(catalog, namespace) -> tuple[IcebergTableManager, str]:
    """The table on every catalog kind: publishing is a catalog commit of ref updates."""
    return _orders(catalog, namespace)


@pytest.fixture
def orders(sqlite_catalog_properties, namespace) -> tuple[IcebergTableManager, str]:
    return _orders(load_test_catalog(sqlite_catalog_properties), namespace)


def test_branch_write_leaves_main_untouched_until_published(orders_everywhere) -> None:
    manager, name = orders_everywhere
    before = manager.load_table(name)
    main_rows = manager.scan(name)

    staged = manager.write(name, _rows("a", [10, 11, 12]), _overwrite("a", branch="audit-1"))

    after = manager.load_table(name)
    assert after.metadata.current_snapshot_id == before.metadata.current_snapshot_id
    assert manager.scan(name).equals(main_rows)
    on_branch = manager.scan(name, ref="audit-1")
    assert _sorted_ids(on_branch) == [("a", 10), ("a", 11), ("a", 12), ("b", 3)]
    assert staged.rows_deleted == 2
    assert staged.rows_added == 3

    published = manager.publish_branch(name, "audit-1")

    table = manager.load_table(name)
    assert published.fast_forward
    assert published.snapshot_id == staged.snapshot_id
    assert table.metadata.current_snapshot_id == staged.snapshot_id
    assert "audit-1" not in table.refs()
    assert _sorted_ids(manager.scan(name)) == _sorted_ids(on_branch)
    again = manager.publish_branch(name, "audit-1")
    assert again.already_published
    assert manager.load_table(name).metadata == table.metadata


def test_diverged_branches_of_different_partitions_both_publish(orders_everywhere) -> None:
    manager, name = orders_everywhere
    first = manager.write(name, _rows("a", [20]), _overwrite("a", branch="audit-a"))
    second = manager.write(name, _rows("b", [30, 31]), _overwrite("b", branch="audit-b"))
    manager.write(name, _rows("c", [40]), _overwrite("c"))  # main moves meanwhile

    manager.publish_branch(name, "audit-a")
    result = manager.publish_branch(name, "audit-b")

    assert not result.fast_forward
    assert result.snapshots_published == 1
    assert _sorted_ids(manager.scan(name)) == [("a", 20), ("b", 30), ("b", 31), ("c", 40)]
    table = manager.load_table(name)
    head = table.current_snapshot()
    assert head.summary[SOURCE_SNAPSHOT_PROPERTY] == str(second.snapshot_id)
    assert head.summary["deleted-records"] == "1"
    assert head.summary["added-records"] == "2"
    assert {"audit-a", "audit-b"}.isdisjoint(table.refs())
    assert first.snapshot_id != second.snapshot_id


def test_publish_refused_when_main_replaced_the_same_files(orders) -> None:
    manager, name = orders
    manager.write(name, _rows("a", [50]), _overwrite("a", branch="audit-1"))
    manager.write(name, _rows("a", [60]), _overwrite("a"))
    main_before = manager.load_table(name).metadata

    with pytest.raises(CommitConflictError, match="audit-1") as refused:
        manager.publish_branch(name, "audit-1")

    assert "Re-run" in str(refused.value)
    after = manager.load_table(name)
    assert after.metadata.current_snapshot_id == main_before.current_snapshot_id
    assert _sorted_ids(manager.scan(name, ref="audit-1")) == [("a", 50), ("b", 3)]


def test_branch_forks_from_fallback_and_publishes_into_it(orders) -> None:
    manager, name = orders
    main_head = manager.load_table(name).metadata.current_snapshot_id
    manager.write(
        name,
        _rows("b", [7]),
        WriteConfig(mode=WriteMode.APPEND, branch="audit-x", fork_from=("dev",)),
    )
    manager.publish_branch(name, "audit-x", into="dev")

    table = manager.load_table(name)
    assert table.metadata.current_snapshot_id == main_head
    assert _sorted_ids(manager.scan(name, ref="dev")) == [("a", 1), ("a", 2), ("b", 3), ("b", 7)]
    assert set(table.refs()) == {"main", "dev"}


def test_upsert_on_a_branch_merges_against_the_branch_head(orders) -> None:
    manager, name = orders
    manager.write(name, _rows("a", [8]), WriteConfig(mode=WriteMode.APPEND, branch="dev"))
    result = manager.upsert(
        name, _rows("a", [8, 9]), join_cols=["id"], config=WriteConfig(branch="dev")
    )
    assert result.rows_inserted == 1
    assert result.rows_unchanged == 1
    assert sorted(manager.scan(name, ref="dev").column("id").to_pylist()) == [1, 2, 3, 8, 9]
    assert sorted(manager.scan(name).column("id").to_pylist()) == [1, 2, 3]


def test_stale_branches_are_removed_by_age(orders) -> None:
    manager, name = orders
    manager.write(name, _rows("a", [1]), WriteConfig(branch="audit-old"))
    manager.write(name, _rows("a", [1]), WriteConfig(branch="keep-me"))

    assert manager.remove_stale_branches(name, "audit-", timedelta(days=1)) == []
    assert manager.remove_stale_branches(name, "audit-", timedelta(0)) == ["audit-old"]
    assert set(manager.load_table(name).refs()) == {"main", "keep-me"}


def test_overwrite_of_a_partition_main_filled_meanwhile_is_refused(orders) -> None:
    manager, name = orders
    manager.write(name, _rows("c", [70, 71]), _overwrite("c", branch="audit-1"))
    manager.write(name, _rows("c", [80]), _overwrite("c"))  # main fills the same partition

    with pytest.raises(CommitConflictError, match="changed since the branch was created"):
        manager.publish_branch(name, "audit-1")

    assert _sorted_ids(manager.scan(name)) == [("a", 1), ("a", 2), ("b", 3), ("c", 80)]


def test_appends_of_the_same_partition_both_publish(orders) -> None:
    manager, name = orders
    append = WriteConfig(mode=WriteMode.APPEND, branch="audit-1")
    manager.write(name, _rows("a", [90]), append)
    manager.write(name, _rows("a", [91]), WriteConfig(mode=WriteMode.APPEND))

    manager.publish_branch(name, "audit-1")

    assert [i for d, i in _sorted_ids(manager.scan(name)) if d == "a"] == [1, 2, 90, 91]


def test_upsert_of_keys_main_changed_meanwhile_is_refused(orders) -> None:
    manager, name = orders
    manager.upsert(name, _rows("a", [2, 5]), ["id"], config=WriteConfig(branch="audit-1"))
    manager.upsert(name, _rows("a", [2, 6]), ["id"])

    with pytest.raises(CommitConflictError):
        manager.publish_branch(name, "audit-1")

    assert [i for d, i in _sorted_ids(manager.scan(name)) if d == "a"] == [1, 2, 6]


def test_a_branch_removed_before_publishing_is_an_error_not_a_success(orders) -> None:
    manager, name = orders
    staged = manager.write(name, _rows("a", [4]), WriteConfig(branch="audit-1"))
    manager.remove_stale_branches(name, "audit-", timedelta(0))

    with pytest.raises(TableNotFoundError, match="nothing was published"):
        manager.publish_branch(name, "audit-1", staged_snapshot_id=staged.snapshot_id)

    published = manager.write(name, _rows("a", [5]), WriteConfig(branch="audit-2"))
    manager.publish_branch(name, "audit-2")
    again = manager.publish_branch(name, "audit-2", staged_snapshot_id=published.snapshot_id)
    assert again.already_published


def test_a_branch_write_never_drops_columns_of_the_table(orders) -> None:
    manager, name = orders
    before = manager.load_table(name).metadata.current_schema_id
    narrower = WriteConfig(mode=WriteMode.APPEND, branch="audit-1", schema_update_mode="update")

    with pytest.raises(InvalidInputError, match=r"drop column\(s\) id"):
        manager.write(name, pa.table({"day": ["a"]}), narrower)

    table = manager.load_table(name)
    assert table.metadata.current_schema_id == before
    assert "audit-1" not in table.refs()
