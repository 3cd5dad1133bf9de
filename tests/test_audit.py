"""Write-audit-publish through Dagster: blocking checks read the staged data, a pass publishes,
a failure leaves main unchanged, concurrent audited partitions both publish; and branch-aware
environments."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pyarrow as pa
import pytest
from reliability import audited
from reliability.processes import run_concurrently

from floe_dagster_iceberg import IcebergCatalogResource, create_iceberg_resources
from floe_dagster_iceberg.audit import AUDIT_BRANCH_METADATA, AUDIT_BRANCH_PREFIX
from floe_dagster_iceberg.catalog_config import EmbeddedCatalogConfig

TABLE = "public.orders"


class Batches:
    """What the next run of the assets below writes, and what their checks saw."""

    rows: dict[str, list[int]]
    seen_by_check: list[list[int]]

    def __init__(self) -> None:
        self.rows = {}
        self.seen_by_check = []


BATCHES = Batches()


@pytest.fixture(autouse=True)
def _fresh_batches() -> None:
    BATCHES.__init__()


@dg.asset(io_manager_key="iceberg", metadata={"write_audit_publish": True})
def orders() -> pa.Table:
    return pa.table({"id": pa.array(BATCHES.rows["orders"], pa.int64())})


@dg.asset_check(asset=orders, blocking=True)
def ids_are_positive(orders: pa.Table) -> dg.AssetCheckResult:
    ids = orders.column("id").to_pylist()
    BATCHES.seen_by_check.append(sorted(ids))
    return dg.AssetCheckResult(passed=all(i > 0 for i in ids), metadata={"rows": len(ids)})


@dg.asset(io_manager_key="iceberg")
def order_count(orders: pa.Table) -> pa.Table:
    return pa.table({"n": [orders.num_rows]})


def _ids(manager, ref: str | None = None) -> list[int]:
    return sorted(manager.scan(TABLE, ref=ref).column("id").to_pylist())


def _run(assets, resources, instance, rows: list[int]) -> dg.ExecuteInProcessResult:
    BATCHES.rows["orders"] = rows
    return dg.materialize(assets, resources=resources, instance=instance, raise_on_error=False)


def test_passing_audit_publishes_and_failing_one_leaves_main_unchanged(
    resources, manager, instance
) -> None:
    first = _run([orders, ids_are_positive, order_count], resources, instance, [1, 2])
    assert first.success
    assert _ids(manager) == [1, 2]
    assert BATCHES.seen_by_check == [[1, 2]]
    assert not [r for r in manager.load_table(TABLE).refs() if r.startswith(AUDIT_BRANCH_PREFIX)]
    assert manager.scan("public.order_count").column("n").to_pylist() == [2]
    main_before = manager.load_table(TABLE).metadata.current_snapshot_id
    rows_before = manager.scan(TABLE)

    failed = _run([orders, ids_are_positive, order_count], resources, instance, [3, -4, 5])

    assert not failed.success
    assert BATCHES.seen_by_check[-1] == [-4, 3, 5]  # the check read the staged rows
    table = manager.load_table(TABLE)
    assert table.metadata.current_snapshot_id == main_before
    assert manager.scan(TABLE).equals(rows_before)
    materialization = failed.asset_materializations_for_node("orders")[0]
    branch = materialization.metadata[AUDIT_BRANCH_METADATA].value
    assert branch == f"{AUDIT_BRANCH_PREFIX}{failed.run_id}"
    assert _ids(manager, ref=branch) == [-4, 3, 5]
    assert not failed.asset_materializations_for_node("order_count")  # downstream never ran
    assert manager.scan("public.order_count").column("n").to_pylist() == [2]


def test_audited_write_without_checks_in_the_run_publishes_at_once(
    resources, manager, instance
) -> None:
    result = _run([orders], resources, instance, [7])
    assert result.success
    assert _ids(manager) == [7]
    assert set(manager.load_table(TABLE).refs()) == {"main"}


def test_concurrent_audited_partition_runs_both_publish(tmp_path, manager) -> None:
    days = audited.DAYS.get_partition_keys()
    outcomes = run_concurrently(
        audited.run_audited_partition, [(str(tmp_path), day) for day in days]
    )

    assert outcomes.values == [True, True]
    rows = manager.scan("public.daily_orders").sort_by([("day", "ascending"), ("id", "ascending")])
    assert rows.to_pylist() == [{"day": day, "id": i} for day in days for i in (1, 2)]
    table = manager.load_table("public.daily_orders")
    assert set(table.refs()) == {"main"}
    published = [s for s in table.snapshots() if s.snapshot_id in _main_line(table)]
    assert len(published) == 2  # one snapshot on main per audited write, nothing else


def _main_line(table) -> set[int]:
    from pyiceberg.table.snapshots import ancestors_of

    return {s.snapshot_id for s in ancestors_of(table.current_snapshot(), table.metadata)}


def test_environment_branch_isolates_reads_and_writes(tmp_path, manager, instance) -> None:
    production = create_iceberg_resources(
        IcebergCatalogResource(catalog=EmbeddedCatalogConfig(home=str(tmp_path)))
    )
    _run([orders, ids_are_positive], production, instance, [1])
    preview = create_iceberg_resources(
        IcebergCatalogResource(catalog=EmbeddedCatalogConfig(home=str(tmp_path)), branch="pr-42")
    )

    BATCHES.rows["orders"] = [1, 2, 3]
    assert dg.materialize([orders, ids_are_positive, order_count], resources=preview).success

    assert _ids(manager) == [1]
    assert _ids(manager, ref="pr-42") == [1, 2, 3]
    assert manager.scan("public.order_count", ref="pr-42").column("n").to_pylist() == [3]
    assert "main" not in manager.load_table("public.order_count").refs()

    @dg.asset(io_manager_key="iceberg")
    def reader(orders: pa.Table) -> None:
        BATCHES.seen_by_check.append(sorted(orders.column("id").to_pylist()))

    BATCHES.seen_by_check.clear()
    assert dg.materialize([orders.to_source_asset(), reader], resources=preview).success
    assert dg.materialize([orders.to_source_asset(), reader], resources=production).success
    assert BATCHES.seen_by_check == [[1, 2, 3], [1]]


def test_multiprocess_run_publishes_after_a_check_that_does_not_load_the_asset(
    tmp_path, manager, monkeypatch
) -> None:
    monkeypatch.setenv("FLOE_TEST_ICEBERG_HOME", str(tmp_path))
    monkeypatch.chdir(Path(audited.__file__).parent.parent)  # step processes import reliability
    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
        result = dg.execute_job(dg.reconstructable(audited.ledger_job), instance=instance)
        assert result.success
        evaluations = result.get_asset_check_evaluations()
    assert [e.check_name for e in evaluations] == ["ledger_is_reconciled"]
    assert sorted(manager.scan("public.ledger").column("id").to_pylist()) == [1, 2, 3]
    assert set(manager.load_table("public.ledger").refs()) == {"main"}
