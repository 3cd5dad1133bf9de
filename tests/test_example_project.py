"""The example lakehouse, materialized in-process: every asset kind, rows per partition.

Also: the catalog the example builds from ``FLOE_CATALOG_*`` / ``FLOE_S3_*`` environment
variables, proven against a real Iceberg REST catalog on S3 (SeaweedFS), and the demo command
in a fresh clone, run again after the README's commands (``infra.demo``): Dagster then records
exactly what the tables hold.
"""

from __future__ import annotations

import datetime as dt
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow.compute as pc
import pytest
from infra.demo import DemoTwice, demo_twice

REPO_ROOT = Path(__file__).resolve().parents[1]
PROJECT_DIR = REPO_ROOT / "example_project"
if str(PROJECT_DIR) not in sys.path:  # the project's package, as `dg` and `dagster dev` load it
    sys.path.insert(0, str(PROJECT_DIR))

from example_project.definitions import defs  # noqa: E402
from example_project.resources import CATALOG_ENV_VARS, catalog_from_env  # noqa: E402

from example_project import assets, data  # noqa: E402
from floe_dagster_iceberg import (  # noqa: E402
    EmbeddedCatalogConfig,
    IcebergCatalogResource,
    RestCatalogConfig,
    SqlCatalogConfig,
    create_iceberg_resources,
)

DAYS = ["2024-01-01", "2024-01-02"]
REGIONS = list(data.REGIONS)
QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in (*CATALOG_ENV_VARS, "FLOE_ICEBERG_HOME"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


class Lakehouse:
    """Materializes the example's assets with the given resources on an ephemeral instance."""

    def __init__(self, resources: dict[str, Any]) -> None:
        self.resources = resources
        self.instance = dg.DagsterInstance.ephemeral()
        # Outside a run, EnvVar settings are resolved by initializing the resource.
        catalog: IcebergCatalogResource = resources["iceberg_catalog"]
        self.manager = catalog.process_config_and_initialize().get_manager()

    def materialize(
        self,
        selection: list[dg.AssetKey],
        *,
        partition_key: str | None = None,
        partition_range: tuple[str, str] | None = None,
        export_date: str | None = None,
        op_config: dict[str, dict[str, Any]] | None = None,
    ) -> dg.ExecuteInProcessResult:
        tags = (
            {
                "dagster/asset_partition_range_start": partition_range[0],
                "dagster/asset_partition_range_end": partition_range[1],
            }
            if partition_range
            else None
        )
        run_config: dict[str, Any] = dict(QUIET)
        if export_date:
            run_config["ops"] = {"dim__customers": {"config": {"export_date": export_date}}}
        if op_config:
            ops = {op: {"config": config} for op, config in op_config.items()}
            run_config["ops"] = {**run_config.get("ops", {}), **ops}
        result = dg.materialize(
            [*assets.all_assets, *assets.audit_checks],
            selection=selection,
            partition_key=partition_key,
            resources=self.resources,
            instance=self.instance,
            run_config=run_config,
            tags=tags,
        )
        assert result.success
        return result

    def scan(self, table: str) -> Any:
        return self.manager.scan(table)


def _metadata(result: dg.ExecuteInProcessResult, key: dg.AssetKey) -> list[dict[str, Any]]:
    return [
        {k: v.value for k, v in event.materialization.metadata.items()}
        for event in result.get_asset_materialization_events()
        if event.asset_key == key
    ]


def _purchases_by_cell(days: list[str]) -> Counter[tuple[str, str]]:
    cells: Counter[tuple[str, str]] = Counter()
    for day in days:
        seen: set[str] = set()
        for row in data.events(dt.date.fromisoformat(day)).to_pylist():
            if row["event_type"].lower() == "purchase" and row["event_id"] not in seen:
                seen.add(row["event_id"])
                cells[day, row["region"]] += 1
    return cells


@pytest.fixture
def lakehouse(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> Lakehouse:
    clean_env.setenv("FLOE_ICEBERG_HOME", str(tmp_path / "floe"))
    return Lakehouse(create_iceberg_resources(catalog_from_env()))


def test_every_asset_kind_materializes_with_rows_per_partition(lakehouse: Lakehouse) -> None:
    # Static partitions, one ranged run, upserted on the key; then the tag.
    lakehouse.materialize(
        [assets.CUSTOMERS, assets.CUSTOMERS_BASELINE], partition_range=("eu", "apac")
    )
    first_export = data.customers(REGIONS, dt.date(2024, 1, 7))
    customers = lakehouse.scan("dim.customers")
    assert Counter(customers["region"].to_pylist()) == Counter(first_export["region"].to_pylist())

    # Daily PyArrow events and their Polars staging, one run per day as a backfill makes them.
    for day in DAYS:
        result = lakehouse.materialize([assets.EVENTS, assets.STG_EVENTS], partition_key=day)
        raw = data.events(dt.date.fromisoformat(day))
        (events_meta,) = _metadata(result, assets.EVENTS)
        (staged_meta,) = _metadata(result, assets.STG_EVENTS)
        assert events_meta["dagster/partition_row_count"] == raw.num_rows
        assert staged_meta["dagster/partition_row_count"] == len(set(raw["event_id"].to_pylist()))
        assert events_meta["dagster/table_name"] == "floe.raw.events"
    events = lakehouse.scan("raw.events")
    assert Counter(t.date().isoformat() for t in events["event_time"].to_pylist()) == {
        day: data.events(dt.date.fromisoformat(day)).num_rows for day in DAYS
    }
    staged = lakehouse.scan("staging.stg_events")
    assert staged.num_rows == len(set(staged["event_id"].to_pylist()))  # de-duplicated
    assert set(staged["event_type"].to_pylist()) <= set(data.EVENT_TYPES)  # normalised
    assert lakehouse.manager.partition_fields("staging.stg_events")[0].source_column == "event_date"

    # Re-running a day replaces exactly that day: no duplicates, the other day untouched.
    lakehouse.materialize([assets.EVENTS, assets.STG_EVENTS], partition_key=DAYS[0])
    assert lakehouse.scan("raw.events").num_rows == events.num_rows

    # The date x region fact in ONE ranged run, and the aggregate over all its partitions.
    result = lakehouse.materialize(
        [assets.FCT_ORDERS, assets.REVENUE_BY_REGION],
        partition_range=(f"{DAYS[0]}|eu", f"{DAYS[-1]}|apac"),
    )
    fact_meta = _metadata(result, assets.FCT_ORDERS)
    assert len(fact_meta) == len(DAYS) * len(REGIONS)
    assert len({m["iceberg/snapshot_id"] for m in fact_meta}) == 1  # one commit
    orders = lakehouse.scan("marts.fct_orders")
    cells = Counter(
        zip(
            (d.isoformat() for d in orders["event_date"].to_pylist()),
            orders["region"].to_pylist(),
            strict=True,
        )
    )
    assert cells == _purchases_by_cell(DAYS)
    assert [f.source_column for f in lakehouse.manager.partition_fields("marts.fct_orders")] == [
        "event_date",
        "region",
    ]
    # Audited: the blocking check read the staged write, then it was published to main.
    (audit,) = result.get_asset_check_evaluations()
    assert audit.passed
    assert audit.metadata["regions"].value == len(REGIONS)
    (revenue_meta,) = _metadata(result, assets.REVENUE_BY_REGION)
    assert revenue_meta["iceberg/audit_branch"] == f"audit-{result.run_id}"
    assert set(lakehouse.manager.load_table("marts.revenue_by_region").refs()) == {"main"}
    revenue = {r["region"]: r for r in lakehouse.scan("marts.revenue_by_region").to_pylist()}
    assert set(revenue) == set(REGIONS)
    for region, row in revenue.items():
        mask = pc.equal(orders["region"], region)
        assert row["orders"] == pc.sum(pc.cast(mask, "int64")).as_py()
        assert row["revenue"] == pytest.approx(pc.sum(orders.filter(mask)["amount"]).as_py())
        assert row["last_day"].isoformat() == DAYS[-1]

    # Upsert of a later export, then the time-travel asset reads the table at the tag.
    result = lakehouse.materialize(
        [assets.CUSTOMERS, assets.CUSTOMER_TIER_CHANGES],
        partition_range=("eu", "apac"),
        export_date="2024-01-14",
    )
    later_export = data.customers(REGIONS, dt.date(2024, 1, 14))
    before = {r["customer_id"]: r["tier"] for r in first_export.to_pylist()}
    after = {r["customer_id"]: r["tier"] for r in later_export.to_pylist()}
    inserted = set(after) - set(before)
    updated = {k for k in before if after[k] != before[k]}
    (upsert_meta, *_) = _metadata(result, assets.CUSTOMERS)
    assert upsert_meta["iceberg/rows_inserted"] == len(inserted) > 0
    assert upsert_meta["iceberg/rows_updated"] == len(updated) > 0
    assert upsert_meta["iceberg/rows_unchanged"] == len(before) - len(updated)
    current = lakehouse.scan("dim.customers")
    assert (
        dict(zip(current["customer_id"].to_pylist(), current["tier"].to_pylist(), strict=True))
        == after
    )
    changes = lakehouse.scan("marts.customer_tier_changes").to_pylist()
    assert {c["customer_id"] for c in changes if c["change"] == "new"} == inserted
    assert {c["customer_id"] for c in changes if c["change"] == "tier_change"} == updated
    assert all(c["tier_before"] == before[c["customer_id"]] for c in changes if c["tier_before"])


def _replayed_log(changes: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """The CRM table as its database holds it: every change applied one by one in lsn order."""
    rows: dict[int, dict[str, Any]] = {}
    for change in sorted(changes, key=lambda c: c["lsn"]):
        if change["op"] == "D":
            rows.pop(change["customer_id"], None)
        else:
            rows[change["customer_id"]] = change
    return rows


def test_change_feed_mirror_holds_the_rows_of_the_replayed_log(lakehouse: Lakehouse) -> None:
    """Each batch of the CRM feed, upserted with deletes and versions, leaves crm.customers
    exactly as replaying every change delivered so far in log order; late changes and a
    replayed batch change nothing."""
    delivered: list[dict[str, Any]] = []
    stored: dict[int, dict[str, Any]] = {}
    for batch in range(1, data.CRM_BATCHES + 1):
        changes = data.crm_changes(batch).to_pylist()
        delivered += changes
        result = lakehouse.materialize(
            [assets.CRM_CUSTOMERS], op_config={"crm__customers": {"batch": batch}}
        )
        before, stored = (
            stored,
            {r["customer_id"]: r for r in lakehouse.scan("crm.customers").to_pylist()},
        )
        assert stored == _replayed_log(delivered), batch

        (meta,) = _metadata(result, assets.CRM_CUSTOMERS)
        kept = set(before) & set(stored)
        touched = {c["customer_id"] for c in changes}
        assert meta["iceberg/rows_inserted"] == len(set(stored) - set(before))
        assert meta["iceberg/rows_removed"] == len(set(before) - set(stored))
        assert meta["iceberg/rows_updated"] == sum(stored[k] != before[k] for k in kept)
        assert meta["iceberg/rows_unchanged"] == sum(stored[k] == before[k] for k in kept & touched)
        assert meta["dagster/row_count"] == len(stored)

    # The last batch updated, inserted and deleted rows, and its late changes (older than the
    # stored row) left their rows as they were.
    assert min(meta[f"iceberg/rows_{k}"] for k in ("updated", "inserted", "removed")) > 0
    late = [c for c in changes if c["lsn"] < before.get(c["customer_id"], c)["lsn"]]
    assert late
    assert all(stored[c["customer_id"]] == before[c["customer_id"]] for c in late)
    assert meta["iceberg/rows_unchanged"] > 0

    # At-least-once delivery: the same batch again changes nothing and commits nothing.
    snapshots = len(lakehouse.manager.snapshots("crm.customers"))
    again = lakehouse.materialize(
        [assets.CRM_CUSTOMERS], op_config={"crm__customers": {"batch": data.CRM_BATCHES}}
    )
    (meta,) = _metadata(again, assets.CRM_CUSTOMERS)
    assert [meta[f"iceberg/rows_{k}"] for k in ("updated", "inserted", "removed")] == [0, 0, 0]
    assert len(lakehouse.manager.snapshots("crm.customers")) == snapshots
    assert {r["customer_id"]: r for r in lakehouse.scan("crm.customers").to_pylist()} == stored


def test_assets_are_described_owned_grouped_and_kinded() -> None:
    specs = {spec.key: spec for spec in defs.resolve_all_asset_specs()}
    assert set(specs) == {key for a in assets.all_assets for key in a.keys}
    for key, spec in specs.items():
        assert spec.description, key
        assert "iceberg" in spec.kinds, key
        assert spec.owners, key
        assert spec.group_name in {"raw", "staging", "dims", "marts"}, key
    for a in assets.lakehouse_assets:
        (key,) = a.keys
        assert a.get_io_manager_key_for_asset_key(key) == "iceberg", key
    kinds = {k for spec in specs.values() for k in spec.kinds}
    assert {"pyarrow", "polars"} <= kinds


def test_code_location_has_maintenance_schedules_sensor_and_health_checks() -> None:
    repository = defs.get_repository_def()
    jobs = {job.name for job in repository.get_all_jobs()}
    assert {
        "lakehouse_full_maintenance",
        "lakehouse_nightly_maintenance",
        "lakehouse_compaction",
    } <= jobs
    schedules = {s.name: s for s in repository.schedule_defs}
    assert {"lakehouse_weekly_full_maintenance", "lakehouse_nightly_maintenance_schedule"} <= set(
        schedules
    )
    assert all(s.default_status == dg.DefaultScheduleStatus.STOPPED for s in schedules.values())
    assert "lakehouse_compaction_after_backfills" in {s.name for s in repository.sensor_defs}
    checked = {key.asset_key for key in repository.asset_graph.asset_check_keys}
    assert checked == {key for a in assets.lakehouse_assets for key in a.keys}


def test_catalog_defaults_to_the_embedded_one(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    catalog = catalog_from_env()
    assert isinstance(catalog.catalog, EmbeddedCatalogConfig)
    assert Path(catalog.catalog.home) == PROJECT_DIR / ".floe"
    assert catalog.storage is None
    clean_env.setenv("FLOE_ICEBERG_HOME", str(tmp_path))
    assert Path(catalog_from_env().catalog.home) == tmp_path


def test_catalog_from_env_passes_secrets_as_env_vars(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("FLOE_CATALOG_URI", "https://catalog.example.com/api/catalog")
    clean_env.setenv("FLOE_CATALOG_WAREHOUSE", "lake")
    clean_env.setenv("FLOE_CATALOG_CREDENTIAL", "client:secret")
    clean_env.setenv("FLOE_S3_REGION", "eu-west-1")
    clean_env.setenv("FLOE_S3_SECRET_ACCESS_KEY", "s3-secret")
    clean_env.setenv("FLOE_S3_PATH_STYLE", "true")
    catalog = catalog_from_env()
    assert isinstance(catalog.catalog, RestCatalogConfig)
    assert catalog.catalog.uri == "https://catalog.example.com/api/catalog"
    assert isinstance(catalog.catalog.credential, dg.EnvVar)
    assert catalog.catalog.credential.env_var_name == "FLOE_CATALOG_CREDENTIAL"
    assert isinstance(catalog.storage.secret_access_key, dg.EnvVar)
    assert catalog.storage.path_style_access is True
    assert catalog.catalog.token is None

    clean_env.setenv("FLOE_CATALOG_URI", "postgresql+psycopg2://u:pw@db/iceberg")
    clean_env.setenv("FLOE_CATALOG_WAREHOUSE", "s3://lake/warehouse")
    sql = catalog_from_env()
    assert isinstance(sql.catalog, SqlCatalogConfig)
    assert isinstance(sql.catalog.uri, dg.EnvVar)  # the URI holds a password

    clean_env.delenv("FLOE_CATALOG_WAREHOUSE")
    with pytest.raises(ValueError, match="FLOE_CATALOG_WAREHOUSE"):
        catalog_from_env()


@pytest.fixture
def seaweed(seaweedfs_factory: Any) -> Any:
    """A private SeaweedFS: the example's fixed namespaces must not meet other tests' tables."""
    return seaweedfs_factory()


def test_example_runs_on_a_rest_catalog_and_s3_configured_by_env_vars(
    clean_env: pytest.MonkeyPatch, seaweed: Any
) -> None:
    properties = seaweed.rest_catalog_properties()
    clean_env.setenv("FLOE_CATALOG_URI", properties["uri"])
    clean_env.setenv("FLOE_CATALOG_WAREHOUSE", properties["warehouse"])
    clean_env.setenv("FLOE_CATALOG_CREDENTIAL", properties["credential"])
    clean_env.setenv("FLOE_S3_ENDPOINT", properties["s3.endpoint"])
    clean_env.setenv("FLOE_S3_REGION", properties["s3.region"])
    clean_env.setenv("FLOE_S3_ACCESS_KEY_ID", properties["s3.access-key-id"])
    clean_env.setenv("FLOE_S3_SECRET_ACCESS_KEY", properties["s3.secret-access-key"])
    lakehouse = Lakehouse(create_iceberg_resources(catalog_from_env()))

    lakehouse.materialize([assets.EVENTS, assets.STG_EVENTS], partition_key=DAYS[0])
    lakehouse.materialize([assets.CUSTOMERS], partition_range=("eu", "apac"))
    lakehouse.materialize(
        [assets.CUSTOMERS], partition_range=("eu", "apac"), export_date="2024-01-14"
    )
    raw = data.events(dt.date.fromisoformat(DAYS[0]))
    assert lakehouse.scan("raw.events").num_rows == raw.num_rows
    assert (
        lakehouse.scan("dim.customers").num_rows
        == data.customers(REGIONS, dt.date(2024, 1, 14)).num_rows
    )
    table = lakehouse.manager.load_table("raw.events")
    assert table.location().startswith("s3://")
    assert any(key.endswith(".parquet") for key in seaweed.list_objects())


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> DemoTwice:
    """A fresh clone: the README's demo and commands, then the demo again (shared)."""
    state = demo_twice(tmp_path_factory, worker_id)
    state.require_success()
    return state


def _dagster_partitions(instance: dg.DagsterInstance, key: dg.AssetKey) -> set[str]:
    """The partitions of ``key`` that the instance records as materialized."""
    records = instance.fetch_materializations(key, limit=10_000).records
    return {r.asset_materialization.partition for r in records if r.asset_materialization}


def _table_partitions(manager: Any, table: str, columns: list[str]) -> set[str]:
    """The partition keys present in an Iceberg table, built from its partition columns."""
    rows = manager.scan(table, columns=columns).to_pylist()
    return {"|".join(str(row[c])[:10] for c in columns) for row in rows}


@pytest.mark.slow
@pytest.mark.xdist_group("demo")
def test_demo_command_reports_tables_maintenance_and_the_ui(demo: DemoTwice) -> None:
    assert demo.rerun is not None
    out = demo.rerun.output
    for expected in (
        "backfill ",  # the daily_events backfill and its id
        "2024-01-07:",  # the backfill's last day
        "updated,",  # the upserts
        "time travel",
        "write-audit-publish: staged on branch audit-",
        "compaction:",
        "snapshots expired",
        "Tables after maintenance",
        'DAGSTER_HOME="$PWD/.dagster_home" .venv/bin/dagster dev -w workspace.yaml',
        "example_project/.floe/warehouse",
    ):
        assert expected in out, out
    assert (demo.dagster_home / "dagster.yaml").exists()
    print(f"\nthe README's commands and a second demo run took {demo.seconds:.1f} s")


@pytest.mark.slow
@pytest.mark.xdist_group("demo")
def test_demo_mirrors_the_crm_change_feed(demo: DemoTwice) -> None:
    """The demo applies every batch of the CRM feed: its mirror holds the replayed log."""
    manager = IcebergCatalogResource(
        catalog=EmbeddedCatalogConfig(home=str(demo.iceberg_home))
    ).get_manager()
    changes = [c for b in range(1, data.CRM_BATCHES + 1) for c in data.crm_changes(b).to_pylist()]
    mirror = {r["customer_id"]: r for r in manager.scan("crm.customers").to_pylist()}
    assert mirror == _replayed_log(changes)
    assert demo.rerun is not None
    reported = re.findall(r"batch (\d+), (\d+) changes: .* (\d+) removed", demo.rerun.output)
    assert [int(b) for b, _, _ in reported] == list(range(1, data.CRM_BATCHES + 1))
    assert [int(n) for _, n, _ in reported] == [
        data.crm_changes(b).num_rows for b in range(1, data.CRM_BATCHES + 1)
    ]
    assert sum(int(r) for _, _, r in reported) > 0
    assert f"crm.customers: {len(mirror)} customers" in demo.rerun.output


@pytest.mark.slow
@pytest.mark.xdist_group("demo")
def test_demo_rerun_leaves_dagster_and_the_tables_consistent(demo: DemoTwice) -> None:
    """After the README's commands and a re-run, Dagster records exactly what the tables hold.

    The re-run wipes the runs of the first demo and of the README's commands with the tables;
    its own runs are recorded once. The 7-day backfill is a real backfill of the named job
    ``daily_events``: one run per day.
    """
    manager = IcebergCatalogResource(
        catalog=EmbeddedCatalogConfig(home=str(demo.iceberg_home))
    ).get_manager()
    partition_columns = {
        assets.EVENTS: ("raw.events", ["event_time"]),
        assets.STG_EVENTS: ("staging.stg_events", ["event_date"]),
        assets.CUSTOMERS: ("dim.customers", ["region"]),
    }
    with dg.DagsterInstance.from_config(str(demo.dagster_home)) as instance:
        for key, (table, columns) in partition_columns.items():
            in_table = _table_partitions(manager, table, columns)
            assert _dagster_partitions(instance, key) == in_table, key
        # A fact cell with no orders is materialized but holds no rows: a subset then.
        orders = _table_partitions(manager, "marts.fct_orders", ["event_date", "region"])
        assert orders <= _dagster_partitions(instance, assets.FCT_ORDERS)

        first, second = demo.reported_runs()
        assert len(instance.get_run_records()) == second == first

        (backfill,) = instance.get_backfills()
        backfill_runs = instance.get_run_records(
            dg.RunsFilter(tags={"dagster/backfill": backfill.backfill_id})
        )
        assert {r.dagster_run.job_name for r in backfill_runs} == {"daily_events"}
        assert sorted(r.dagster_run.tags["dagster/partition"] for r in backfill_runs) == sorted(
            _table_partitions(manager, "raw.events", ["event_time"])
        )
        assert all(r.dagster_run.is_success for r in backfill_runs)
