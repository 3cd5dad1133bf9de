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
from reliability.backfill import run_partition
from reliability.processes import run_concurrently
from reliability.workers import (
    write_partition,
)

from floe_dagster_iceberg.manager import IcebergTableManager

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
    record_property("commit_attempts", attempts)
    record_property("seconds", round(outcomes.seconds, 2))
    print(f"\n{catalog_kind}: 16 writers in {outcomes.seconds:.1f} s, commit attempts {attempts}")

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
