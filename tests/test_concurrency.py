"""Concurrent writers on one table: backfills, same-partition races, writers vs maintenance.

Every writer is a separate process with its own catalog connection, as separate Dagster runs
(or Kubernetes pods) are. Processes start their writes together on a barrier.
"""

from __future__ import annotations

import collections
import uuid

import pyarrow as pa
import pytest
import reliability_defs
from dagster import DagsterInstance, DagsterRunStatus
from infra.catalogs import dispose_catalog, load_test_catalog
from pyiceberg.expressions import EqualTo
from reliability.backfill import run_partition
from reliability.processes import run_concurrently, run_together
from reliability.workers import (
    PART_SPEC,
    append_batches,
    maintain,
    overwrite_versions,
    partition_rows,
    upsert_rows,
    write_partition,
)

from floe_dagster_iceberg.engine.config import WriteConfig
from floe_dagster_iceberg.engine.manager import IcebergTableManager

WRITERS = 16
ROWS_PER_PARTITION = 250


def _rows_by_partition(table: pa.Table) -> dict[str, list[tuple[int, str]]]:
    grouped: dict[str, list[tuple[int, str]]] = collections.defaultdict(list)
    for part, row_id, writer in zip(
        table.column("part").to_pylist(),
        table.column("id").to_pylist(),
        table.column("writer").to_pylist(),
        strict=True,
    ):
        grouped[part].append((row_id, writer))
    return grouped


@pytest.fixture
def manager(catalog_properties):
    loaded = load_test_catalog(catalog_properties)
    try:
        yield IcebergTableManager(loaded)
    finally:
        dispose_catalog(loaded)


def test_sixteen_processes_backfill_sixteen_partitions(
    catalog_properties, catalog_kind, manager, namespace, record_property
):
    """16 processes overwrite 16 partitions of one (not yet existing) table at once: all land."""
    table = f"{namespace}.events"
    parts = [f"p{i:02d}" for i in range(WRITERS)]
    outcomes = run_concurrently(
        write_partition,
        [
            (catalog_properties, table, part, ROWS_PER_PARTITION, f"w{i}")
            for i, part in enumerate(parts)
        ],
        timeout=240,
    )
    results = outcomes.values  # raises with every worker's traceback if one failed

    attempts = sorted(r["attempts"] for r in results)
    catalog_commits = sorted(r["catalog_commits"] for r in results)
    record_property("commit_attempts", attempts)
    record_property("catalog_commits", catalog_commits)
    record_property("seconds", round(outcomes.seconds, 2))
    print(
        f"\n{catalog_kind}: 16 writers in {outcomes.seconds:.1f} s; write attempts {attempts}; "
        f"catalog commit requests {catalog_commits} (total {sum(catalog_commits)})"
    )

    assert sum(r["created_table"] for r in results) == 1, "exactly one writer created the table"
    assert all(r["rows_added"] == ROWS_PER_PARTITION for r in results)
    rows = manager.scan(table)
    assert rows.num_rows == WRITERS * ROWS_PER_PARTITION
    by_part = _rows_by_partition(rows)
    assert sorted(by_part) == parts
    for i, part in enumerate(parts):
        assert sorted(by_part[part]) == [(n, f"w{i}") for n in range(ROWS_PER_PARTITION)]
    # Every write is one snapshot pair (delete + append of its slice) or one append: no write
    # left a trace twice.
    write_ids = collections.Counter(
        s.summary.get("floe.write-id") for s in manager.snapshots(table) if s.operation == "append"
    )
    assert len(write_ids) == WRITERS
    assert set(write_ids.values()) == {1}


@pytest.mark.slow
def test_dagster_backfill_with_multiprocess_executor(
    postgres_catalog_properties, tmp_path, monkeypatch, record_property
):
    """A 16-partition backfill: 16 runs at once on one instance, each step in its own process."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    # Create the instance's storage once, as a deployment has it before runs start; sixteen
    # processes migrating a fresh SQLite storage at once would race.
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    DagsterInstance.get().dispose()
    environment = {
        "DAGSTER_HOME": str(home),
        "FLOE_TEST_CATALOG_URI": postgres_catalog_properties["uri"],
        "FLOE_TEST_WAREHOUSE": postgres_catalog_properties["warehouse"],
        "FLOE_TEST_BARRIER_DIR": str(barrier),
    }
    backfill_id = f"bf{uuid.uuid4().hex[:8]}"
    outcomes = run_concurrently(
        run_partition,
        [(environment, key, backfill_id) for key in reliability_defs.PARTITION_KEYS],
        timeout=300,
    )
    results = outcomes.values
    failed = [r for r in results if not r["success"]]
    assert not failed, f"{len(failed)} runs failed; first: " + "\n".join(failed[0]["errors"])
    record_property("seconds", round(outcomes.seconds, 1))

    with DagsterInstance.get() as instance:
        runs = instance.get_runs()
        assert len(runs) == 16
        assert {r.status for r in runs} == {DagsterRunStatus.SUCCESS}
        assert {r.tags["dagster/backfill"] for r in runs} == {backfill_id}
        assert sorted(r.tags["dagster/partition"] for r in runs) == reliability_defs.PARTITION_KEYS
        attempts = []
        for run in runs:
            events = instance.all_logs(run.run_id)
            messages = [e.message or "" for e in events]
            assert any("multiprocess executor" in m for m in messages), messages
            materializations = [
                e
                for e in events
                if e.dagster_event and e.dagster_event.event_type_value == "ASSET_MATERIALIZATION"
            ]
            assert len(materializations) == 1
            metadata = materializations[0].asset_materialization.metadata
            attempts.append(metadata["iceberg/commit_attempts"].value)
        run_of = {r.tags["dagster/partition"]: r.run_id for r in runs}
    attempts.sort()
    record_property("commit_attempts", attempts)
    print(f"\nDagster backfill of 16 partitions in {outcomes.seconds:.1f} s, attempts {attempts}")

    loaded = load_test_catalog(postgres_catalog_properties)
    try:
        rows = IcebergTableManager(loaded).scan("reliability.events")
    finally:
        dispose_catalog(loaded)
    assert rows.num_rows == 16 * reliability_defs.ROWS_PER_PARTITION
    by_part = _rows_by_partition(rows)
    for key in reliability_defs.PARTITION_KEYS:
        expected = [(n, run_of[key]) for n in range(reliability_defs.ROWS_PER_PARTITION)]
        assert sorted(by_part[key]) == expected
    # Each partition was written by a step process of its own, none of them a run's process.
    step_pids = set(rows.column("pid").to_pylist())
    assert len(step_pids) == 16
    assert not step_pids & {r["pid"] for r in results}


# ---------------------------------------------------------------------- same-partition races

RACE_ROUNDS = 3


def test_two_overwrites_of_one_partition_leave_exactly_one_runs_rows(
    catalog_properties, catalog_kind, manager, namespace
):
    """Two runs overwrite the same partition at once: one run's rows win, never a mix."""
    table = f"{namespace}.race"
    config = WriteConfig(
        mode="overwrite", row_filter=EqualTo("part", "b"), partition_spec=PART_SPEC
    )
    manager.write(
        table,
        partition_rows("a", 40, "neighbour"),
        config.model_copy(update={"row_filter": EqualTo("part", "a")}),
    )
    manager.write(table, partition_rows("b", 30, "initial"), config)
    winners = []
    for round_ in range(RACE_ROUNDS):
        sizes = {f"r{round_}x": 100 + round_, f"r{round_}y": 150 + round_}
        outcomes = run_concurrently(
            write_partition,
            [(catalog_properties, table, "b", size, writer) for writer, size in sizes.items()],
        )
        outcomes.values  # noqa: B018 - raises if a writer failed
        rows = manager.scan(table, EqualTo("part", "b"))
        writers = set(rows.column("writer").to_pylist())
        assert len(writers) == 1, f"round {round_}: rows of {writers} mixed"
        (winner,) = writers
        assert sorted(rows.column("id").to_pylist()) == list(range(sizes[winner]))
        winners.append(winner)
        neighbour = manager.scan(table, EqualTo("part", "a"))
        assert sorted(neighbour.column("id").to_pylist()) == list(range(40))
    print(f"\n{catalog_kind}: overwrite race winners {winners}")


def _apply(state: dict[int, tuple[str, str]], rows: dict[str, list]) -> dict[int, tuple[str, str]]:
    merged = dict(state)
    for key, value, writer in zip(rows["id"], rows["value"], rows["writer"], strict=True):
        merged[key] = (value, writer)
    return merged


def _state(table: pa.Table) -> dict[int, tuple[str, str]]:
    columns = (table.column(c).to_pylist() for c in ("id", "value", "writer"))
    return {key: (value, writer) for key, value, writer in zip(*columns, strict=True)}


def _upsert_input(ids: range, value: str, writer: str) -> dict[str, list]:
    return {"id": list(ids), "value": [f"{value}{i}" for i in ids], "writer": [writer] * len(ids)}


def test_two_upserts_of_overlapping_keys_end_in_a_serial_order(
    catalog_properties, catalog_kind, manager, namespace
):
    """Two concurrent upserts sharing keys: the result equals one of their serial orders."""
    table = f"{namespace}.accounts"
    initial = pa.table(
        {
            "id": pa.array(range(100), pa.int64()),
            "value": pa.array([f"v{i}" for i in range(100)]),
            "writer": pa.array(["initial"] * 100),
        }
    )
    manager.write(table, initial)
    orders = []
    for round_ in range(RACE_ROUNDS):
        state = _state(manager.scan(table))
        # Both update keys 40..59 and insert keys 110..119; each also touches keys of its own.
        first = _upsert_input(range(0, 60), f"x{round_}-", "x")
        first = {c: first[c] + _upsert_input(range(100, 120), f"x{round_}-", "x")[c] for c in first}
        second = _upsert_input(range(40, 100), f"y{round_}-", "y")
        second = {
            c: second[c] + _upsert_input(range(110, 130), f"y{round_}-", "y")[c] for c in second
        }
        outcomes = run_concurrently(
            upsert_rows, [(catalog_properties, table, first), (catalog_properties, table, second)]
        )
        outcomes.values  # noqa: B018 - raises if a writer failed
        result = manager.scan(table)
        keys = result.column("id").to_pylist()
        assert len(keys) == len(set(keys)), "an upsert duplicated keys"
        final = _state(result)
        x_then_y = _apply(_apply(state, first), second)
        y_then_x = _apply(_apply(state, second), first)
        assert final in (x_then_y, y_then_x), "the result is no serial order of the two upserts"
        orders.append("x,y" if final == x_then_y else "y,x")
    print(f"\n{catalog_kind}: upsert race serial orders {orders}")


# ---------------------------------------------------------------------- writers vs maintenance


def test_writers_and_maintenance_at_once_lose_no_row_and_no_live_file(
    postgres_catalog_properties, namespace, tmp_path, warehouse_files, record_property
):
    """Appends and overwrites commit while compaction and snapshot expiry run in a loop."""
    loaded = load_test_catalog(postgres_catalog_properties)
    manager = IcebergTableManager(loaded)
    table = f"{namespace}.busy"
    manager.write(table, partition_rows("c", 10, "seed"), WriteConfig(partition_spec=PART_SPEC))
    done = tmp_path / "done"
    done.mkdir()
    commits, rows_per_commit, versions = 12, 20, 8
    properties = postgres_catalog_properties
    outcomes = run_together(
        [
            (append_batches, (properties, table, "a", commits, rows_per_commit, str(done))),
            (append_batches, (properties, table, "b", commits, rows_per_commit, str(done))),
            (overwrite_versions, (properties, table, "c", versions, 30, str(done))),
            (maintain, (properties, table, str(done), 3)),
        ],
        timeout=240,
    )
    *writers, maintenance = outcomes.values
    record_property("maintenance", maintenance)
    print(f"\nmaintenance during writes: {maintenance}; writer attempts {writers}")
    # Writers waited for a compaction half-way, and maintenance compacts once more at the end.
    assert maintenance["compactions"] >= 2
    assert maintenance["snapshots_expired"] >= 1

    loaded_table = manager.load_table(table)
    rows = manager.scan(loaded_table)
    by_part = _rows_by_partition(rows)
    for part in ("a", "b"):
        ids = sorted(row_id for row_id, _ in by_part[part])
        assert ids == list(range(commits * rows_per_commit)), (
            f"partition {part} lost or doubled rows"
        )
    assert sorted(by_part["c"]) == [(i, f"v{versions - 1}") for i in range(30)]

    # Every file a live snapshot needs still exists, and every live snapshot reads.
    existing = set(warehouse_files(loaded_table))
    needed = set(loaded_table.inspect.all_files().column("file_path").to_pylist())
    needed |= set(loaded_table.inspect.all_manifests().column("path").to_pylist())
    needed |= {s.manifest_list for s in loaded_table.snapshots()}
    assert needed - existing == set()
    for snapshot in loaded_table.snapshots():
        manager.scan(loaded_table, snapshot_id=snapshot.snapshot_id)
    dispose_catalog(loaded)


def _interleave_a_write(manager, other, table) -> list[int]:
    """Let ``other`` commit to ``table`` right before ``manager``'s next commit request."""
    commit_table = manager.catalog.commit_table
    interleaved: list[int] = []

    def another_writer_commits_first(target, requirements, updates):
        if not interleaved:  # a concurrent run lands between our planning and our commit
            interleaved.append(other.write(table, partition_rows("b", 5, "other")).snapshot_id)
        return commit_table(target, requirements, updates)

    manager.catalog.commit_table = another_writer_commits_first
    return interleaved


def _stream(part: str, count: int) -> pa.RecordBatchReader:
    rows = partition_rows(part, count, "stream")
    return pa.RecordBatchReader.from_batches(rows.schema, rows.to_batches(max_chunksize=5))


@pytest.mark.parametrize("mode", ["append", "overwrite"])
def test_streamed_write_meeting_a_concurrent_commit(sqlite_catalog_properties, namespace, mode):
    """A streamed write's files are written once, so after a concurrent commit only its
    metadata is re-planned: an append lands once next to the other write, an overwrite replaces
    everything, the other write included (it committed first)."""
    loaded = load_test_catalog(sqlite_catalog_properties)
    other = load_test_catalog(sqlite_catalog_properties)
    manager = IcebergTableManager(loaded)
    table = f"{namespace}.stream"
    manager.write(table, partition_rows("a", 10, "first"))
    interleaved = _interleave_a_write(manager, IcebergTableManager(other), table)
    try:
        if mode == "append":
            manager.write(table, _stream("c", 20), WriteConfig(mode="append"))
            writers = collections.Counter(manager.scan(table).column("writer").to_pylist())
            assert writers == {"first": 10, "other": 5, "stream": 20}
        else:
            result = manager.write(table, _stream("c", 20), WriteConfig(mode="overwrite"))
            writers = collections.Counter(manager.scan(table).column("writer").to_pylist())
            assert writers == {"stream": 20}
            assert result.commit_attempts == 2
            snapshot = manager.load_table(table).current_snapshot()
            assert snapshot.parent_snapshot_id == interleaved[0]
    finally:
        dispose_catalog(loaded)
        dispose_catalog(other)
