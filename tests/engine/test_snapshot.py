"""The snapshot a write produces: one per write, its summary, time travel, manifest merging."""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterator

import pyarrow as pa
import pytest
from infra.catalogs import dispose_catalog, load_test_catalog
from pyiceberg.expressions import And, EqualTo, GreaterThanOrEqual, LessThan
from pyiceberg.partitioning import PartitionField as IcebergPartitionField
from pyiceberg.partitioning import PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.table import TableProperties
from pyiceberg.transforms import IdentityTransform
from pyiceberg.types import LongType, NestedField, StringType
from reliability.workers import PART_SPEC

from engine.support import (
    Rows,
    id_rows,
    live_data_files,
    rows_of,
    summary_from_files,
    summary_of,
)
from floe_dagster_iceberg import IcebergTableManager, PartitionField, WriteConfig, WriteResult


@pytest.fixture
def manager(catalog) -> IcebergTableManager:
    return IcebergTableManager(catalog)


@pytest.fixture
def sqlite_manager(sqlite_catalog_properties) -> Iterator[IcebergTableManager]:
    """Manifest merging does not depend on the catalog: SQLite only, the cheapest."""
    catalog = load_test_catalog(sqlite_catalog_properties)
    try:
        yield IcebergTableManager(catalog)
    finally:
        dispose_catalog(catalog)


def _assert_summary_is_true(manager: IcebergTableManager, table: str, snapshot_id: int) -> None:
    """The snapshot's counters equal what its files and its rows say."""
    loaded = manager.load_table(table)
    snapshot = loaded.snapshot_by_id(snapshot_id)
    assert snapshot is not None
    summary = summary_of(snapshot)
    assert summary == summary_from_files(loaded, snapshot)
    assert summary["total-records"] == manager.scan(loaded, snapshot_id=snapshot_id).num_rows


def _assert_result_matches_summary(result: WriteResult, summary: dict[str, int]) -> None:
    assert (
        result.rows_added,
        result.rows_deleted,
        result.files_added,
        result.files_deleted,
        result.bytes_added,
        result.bytes_deleted,
    ) == (
        summary["added-records"],
        summary["deleted-records"],
        summary["added-data-files"],
        summary["deleted-data-files"],
        summary["added-files-size"],
        summary["removed-files-size"],
    )


# ---------------------------------------------------------------------- one snapshot per write

SEED = {"a": range(30), "b": range(20)}


def _seed_rows() -> pa.Table:
    return pa.concat_tables([id_rows(part, ids, "seed") for part, ids in SEED.items()])


@pytest.mark.parametrize("mode", ["create", "append", "overwrite", "upsert"])
def test_each_write_commits_one_snapshot_with_a_true_summary(manager, namespace, mode):
    """Append, overwrite of a partition, upsert, and the write that creates the table: each
    adds exactly one snapshot, whose summary counters agree with the files and rows."""
    table = f"{namespace}.events"
    seed = _seed_rows()
    create = WriteConfig(partition_spec=PART_SPEC)
    state: Rows = {}
    if mode != "create":
        manager.write(table, seed, create)
        state = rows_of(seed)
    before = manager.load_table(table) if mode != "create" else None
    parent_id = before.metadata.current_snapshot_id if before else None
    snapshots_before = len(before.snapshots()) if before else 0

    if mode == "create":
        data = seed
        result = manager.write(table, data, create)
        expected = rows_of(data)
        operation, partitions = "append", set(SEED)
    elif mode == "append":
        data = pa.concat_tables(
            [id_rows("b", range(20, 35), "new"), id_rows("c", range(10), "new")]
        )
        result = manager.write(table, data)
        expected = state | rows_of(data)
        operation, partitions = "append", {"b", "c"}
    elif mode == "overwrite":
        data = id_rows("a", range(12), "new")
        config = WriteConfig(mode="overwrite", row_filter=EqualTo("part", "a"))
        result = manager.write(table, data, config)
        expected = {key: row for key, row in state.items() if key[0] != "a"} | rows_of(data)
        operation, partitions = "overwrite", {"a"}
    else:
        # Ids 25..29 of "a" exist (updated); 30..34 of "a" and 0..4 of "c" are new (inserted).
        data = pa.concat_tables([id_rows("a", range(25, 35), "new"), id_rows("c", range(5), "new")])
        result = manager.upsert(table, data, join_cols=["part", "id"])
        updated = len(rows_of(data).keys() & state.keys())
        assert (result.rows_updated, result.rows_inserted) == (updated, data.num_rows - updated)
        expected = state | rows_of(data)
        operation, partitions = "overwrite", {"a", "c"}

    loaded = manager.load_table(table)
    assert len(loaded.snapshots()) == snapshots_before + 1
    snapshot = loaded.current_snapshot()
    assert snapshot is not None
    assert snapshot.snapshot_id == result.snapshot_id
    assert snapshot.parent_snapshot_id == parent_id
    assert snapshot.summary.operation.value == operation == result.operation
    assert result.created_table == (mode == "create")

    summary = summary_of(snapshot)
    assert summary == summary_from_files(loaded, snapshot)
    assert summary["changed-partition-count"] == len(partitions)
    if mode in ("create", "append"):
        assert summary["added-records"] == data.num_rows
        assert summary["deleted-records"] == summary["deleted-data-files"] == 0
    if mode == "overwrite":
        assert summary["added-records"] == data.num_rows
        assert summary["deleted-records"] == len(SEED["a"])
    rows = manager.scan(loaded)
    assert rows_of(rows) == expected
    assert summary["total-records"] == rows.num_rows == len(expected)
    assert summary["total-data-files"] == loaded.inspect.files().num_rows
    _assert_result_matches_summary(result, summary)


# ---------------------------------------------------------------------- time travel

DAY0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
DAILY = (PartitionField(source_column="ts", transform="day"),)
# (mode, {day: ids}); an overwrite replaces exactly the days it names (a contiguous range).
TIME_TRAVEL_WRITES: list[tuple[str, dict[int, range]]] = [
    ("append", {0: range(10), 1: range(10), 2: range(10)}),
    ("append", {1: range(10, 15), 3: range(8)}),
    ("overwrite", {1: range(6)}),
    ("append", {0: range(10, 14)}),
    ("overwrite", {0: range(3)}),
    ("overwrite", {2: range(4), 3: range(5)}),
]
DayRows = dict[int, set[tuple[int, str]]]


def _day_rows(days: dict[int, range], writer: str) -> pa.Table:
    ids = [i for day in days for i in days[day]]
    times = [DAY0 + dt.timedelta(days=day, minutes=i) for day in days for i in days[day]]
    return pa.table(
        {
            "id": pa.array(ids, pa.int64()),
            "ts": pa.array(times, pa.timestamp("us", "UTC")),
            "writer": pa.array([writer] * len(ids), pa.string()),
        }
    )


def _days_filter(days: dict[int, range]):
    first, last = min(days), max(days)
    assert sorted(days) == list(range(first, last + 1)), "an overwrite names contiguous days"
    return And(
        GreaterThanOrEqual("ts", (DAY0 + dt.timedelta(days=first)).isoformat()),
        LessThan("ts", (DAY0 + dt.timedelta(days=last + 1)).isoformat()),
    )


def _by_day(rows: pa.Table) -> DayRows:
    found: DayRows = {}
    columns = (rows.column(name).to_pylist() for name in ("id", "ts", "writer"))
    for row_id, ts, writer in zip(*columns, strict=True):
        found.setdefault((ts - DAY0).days, set()).add((row_id, writer))
    return found


def test_every_snapshot_of_a_run_of_writes_reads_as_the_state_after_its_write(manager, namespace):
    """Time travel to any snapshot shows the state right after one write: an overwritten
    partition is never missing in between, as it is when delete and append are two snapshots."""
    table = f"{namespace}.daily"
    states: list[DayRows] = []
    state: DayRows = {}
    snapshot_ids = []
    for index, (mode, days) in enumerate(TIME_TRAVEL_WRITES):
        writer = f"w{index}"
        config = WriteConfig(
            mode=mode,
            row_filter=_days_filter(days) if mode == "overwrite" else None,
            partition_spec=DAILY,
        )
        snapshot_ids.append(manager.write(table, _day_rows(days, writer), config).snapshot_id)
        state = {day: set(rows) for day, rows in state.items()}
        for day, ids in days.items():
            written = {(i, writer) for i in ids}
            state[day] = written if mode == "overwrite" else state.get(day, set()) | written
        states.append(state)

    loaded = manager.load_table(table)
    assert sorted(s.snapshot_id for s in loaded.snapshots()) == sorted(snapshot_ids)
    for snapshot in loaded.snapshots():
        index = snapshot_ids.index(snapshot.snapshot_id)
        seen = _by_day(manager.scan(loaded, snapshot_id=snapshot.snapshot_id))
        assert seen == states[index], f"snapshot of write {index} does not read as its state"
        if 0 < index < len(states) - 1:
            kept = states[index - 1].keys() & states[index + 1].keys()
            assert kept <= seen.keys(), f"write {index}: partitions {kept - seen.keys()} missing"
        _assert_summary_is_true(manager, table, snapshot.snapshot_id)


# ---------------------------------------------------------------------- manifest merge

APPENDS = 120
UNMERGED_APPENDS = 30
ROWS_PER_APPEND = 3


def _append_many(
    manager: IcebergTableManager, table: str, properties: dict[str, str], appends: int = APPENDS
) -> tuple[list[int], list[int]]:
    """``appends`` appends of their own rows (the first creates the table with ``properties``);
    their snapshot ids and the manifest count of each."""
    snapshot_ids = []
    for batch in range(appends):
        ids = range(batch * ROWS_PER_APPEND, (batch + 1) * ROWS_PER_APPEND)
        config = WriteConfig(table_properties=properties if batch == 0 else {})
        snapshot_ids.append(
            manager.write(table, id_rows("a", ids, f"b{batch}"), config).snapshot_id
        )
    loaded = manager.load_table(table)
    assert [entry.snapshot_id for entry in loaded.history()] == snapshot_ids
    counts = [len(loaded.snapshot_by_id(i).manifests(loaded.io)) for i in snapshot_ids]
    return snapshot_ids, counts


def test_appends_merge_manifests_so_their_number_stays_bounded(sqlite_manager, namespace):
    """With Iceberg's defaults (merge on, min-count 100), the manifest count of 120 appends
    never exceeds the minimum merge count, and every row and data file stays live."""
    manager = sqlite_manager
    table = f"{namespace}.merged"
    snapshot_ids, counts = _append_many(manager, table, {})
    min_count = TableProperties.MANIFEST_MIN_MERGE_COUNT_DEFAULT
    assert max(counts) <= min_count < APPENDS
    assert counts[: min_count - 1] == list(range(1, min_count)), "merged before min-count"
    loaded = manager.load_table(table)
    expected = {("a", i) for i in range(APPENDS * ROWS_PER_APPEND)}
    assert set(rows_of(manager.scan(loaded))) == expected
    live = live_data_files(loaded, loaded.metadata.current_snapshot_id)
    assert len(live) == APPENDS
    assert set(live) == set(loaded.inspect.all_files().column("file_path").to_pylist())
    # Snapshots on both sides of the first merge read as the rows appended so far.
    first_merge = next(i for i, (a, b) in enumerate(itertools.pairwise(counts)) if b < a)
    for index in (first_merge, first_merge + 1):
        rows = manager.scan(loaded, snapshot_id=snapshot_ids[index])
        assert rows.num_rows == (index + 1) * ROWS_PER_APPEND
        _assert_summary_is_true(manager, table, snapshot_ids[index])


def test_appends_without_manifest_merge_keep_one_manifest_each(sqlite_manager, namespace):
    """``commit.manifest-merge.enabled=false`` wins over a minimum merge count every append
    reaches: one manifest per append."""
    manager = sqlite_manager
    table = f"{namespace}.unmerged"
    properties = {
        TableProperties.MANIFEST_MERGE_ENABLED: "false",
        TableProperties.MANIFEST_MIN_MERGE_COUNT: "2",
    }
    _, counts = _append_many(manager, table, properties, UNMERGED_APPENDS)
    assert counts == list(range(1, UNMERGED_APPENDS + 1))
    assert manager.count(table) == UNMERGED_APPENDS * ROWS_PER_APPEND


# ---------------------------------------------------------------------- format version 1


def test_a_format_version_1_table_takes_every_write_mode(manager, namespace):
    """Append, overwrite of a partition and upsert on a v1 table: exact rows, true summaries."""
    table = f"{namespace}.legacy"
    manager.catalog.create_namespace(namespace)
    manager.catalog.create_table(
        (namespace, "legacy"),
        schema=Schema(
            *(
                NestedField(field_id, name, field_type, required=False)
                for field_id, name, field_type in (
                    (1, "part", StringType()),
                    (2, "id", LongType()),
                    (3, "writer", StringType()),
                    (4, "payload", StringType()),
                )
            )
        ),
        partition_spec=PartitionSpec(
            IcebergPartitionField(
                source_id=1, field_id=1000, transform=IdentityTransform(), name="part"
            )
        ),
        properties={"format-version": "1"},
    )
    assert manager.load_table(table).metadata.format_version == 1
    results = []
    state: Rows = {}

    seed = _seed_rows()
    results.append(manager.write(table, seed))
    state |= rows_of(seed)
    assert rows_of(manager.scan(table)) == state

    appended = id_rows("c", range(7), "append")
    results.append(manager.write(table, appended))
    state |= rows_of(appended)
    assert rows_of(manager.scan(table)) == state

    replacement = id_rows("a", range(5), "overwrite")
    config = WriteConfig(mode="overwrite", row_filter=EqualTo("part", "a"))
    results.append(manager.write(table, replacement, config))
    state = {key: row for key, row in state.items() if key[0] != "a"} | rows_of(replacement)
    assert rows_of(manager.scan(table)) == state

    upserted = pa.concat_tables([id_rows("b", range(15, 25), "upsert"), id_rows("d", [1], "up")])
    results.append(manager.upsert(table, upserted, join_cols=["part", "id"]))
    state |= rows_of(upserted)
    assert rows_of(manager.scan(table)) == state

    loaded = manager.load_table(table)
    assert loaded.metadata.format_version == 1
    assert [s.snapshot_id for s in loaded.snapshots()] == [r.snapshot_id for r in results]
    assert [r.operation for r in results] == ["append", "append", "overwrite", "overwrite"]
    for result in results:
        _assert_summary_is_true(manager, table, result.snapshot_id)


def test_a_first_write_asking_for_format_version_1_creates_a_v1_table(manager, namespace):
    """``format-version`` in the creating write's table properties picks the table's format
    version; it is a reserved key, never stored as a table property (REST catalogs refuse
    setting it), so the same config keeps working on later writes."""
    table = f"{namespace}.legacy"
    config = WriteConfig(partition_spec=PART_SPEC, table_properties={"format-version": "1"})
    first, second = id_rows("a", range(10), "first"), id_rows("b", range(5), "second")
    manager.write(table, first, config)
    manager.write(table, second, config)
    loaded = manager.load_table(table)
    assert loaded.metadata.format_version == 1
    assert "format-version" not in loaded.properties
    assert rows_of(manager.scan(loaded)) == rows_of(first) | rows_of(second)
