"""The example lakehouse end to end on the embedded catalog, with a short report.

    python3 tasks.py demo            # from the repository root (creates .venv on first use)
    .venv/bin/python -m example_project.demo

It loads the customer dimension, backfills seven days of events through staging into the
date x region fact and its aggregate, upserts three weekly CRM exports into the dimension,
reads the dimension back at a tag (time travel), then compacts and expires snapshots and shows
what that freed. Runs are recorded in a Dagster instance (``DAGSTER_HOME``, default
``.dagster_home``) so the Dagster UI shows them afterwards. Re-running starts from empty tables.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

REPO_ROOT = Path(__file__).resolve().parents[1]
DEMO_DAYS = [f"2024-01-{day:02d}" for day in range(1, 8)]
WEEKLY_EXPORTS = ["2024-01-14", "2024-01-21", "2024-01-28"]
MAINTENANCE_JOB = "lakehouse_full_maintenance"
_QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}


def _say(text: str = "") -> None:
    print(text, flush=True)


def _size(num_bytes: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if num_bytes < 1024 or unit == "GB":
            return f"{num_bytes:.0f} {unit}" if unit == "B" else f"{num_bytes:.1f} {unit}"
        num_bytes /= 1024
    return f"{num_bytes:.1f} GB"


def _disk_usage(directory: Path) -> tuple[int, int]:
    files = [p for p in directory.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def _relative(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _maintenance_totals(result: Any) -> dict[str, int]:
    """The step totals the maintenance op reports in its output metadata."""
    totals: dict[str, int] = {}
    for event in result.all_node_events:
        if event.is_successful_output:
            for key, value in event.step_output_data.metadata.items():
                if isinstance(value.value, int):
                    totals[key] = value.value
    return totals


class Demo:
    def __init__(self) -> None:
        # The demo always runs on the embedded default, whatever FLOE_CATALOG_* says.
        for name in [n for n in os.environ if n.startswith(("FLOE_CATALOG_", "FLOE_S3_"))]:
            del os.environ[name]
        if not os.environ.get("DAGSTER_HOME"):
            os.environ["DAGSTER_HOME"] = str(REPO_ROOT / ".dagster_home")
        dagster_home = Path(os.environ["DAGSTER_HOME"])
        if not (dagster_home / "dagster.yaml").exists():
            dagster_home.mkdir(parents=True, exist_ok=True)
            # A local instance for the demo's runs; it sends nothing anywhere.
            (dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")

        import dagster as dg

        from example_project import assets
        from example_project.definitions import defs
        from example_project.resources import embedded_home

        self.dg = dg
        self.assets = assets
        self.defs = defs
        self.home = embedded_home()
        self.resources = defs.resources
        self.catalog = self.resources["iceberg_catalog"]
        self.manager = self.catalog.get_manager()
        self.instance = dg.DagsterInstance.get()
        self.runs = 0

    # -------------------------------------------------------------------------------- runs

    def materialize(
        self,
        selection: Sequence[Any],
        *,
        partition_key: str | None = None,
        partition_range: tuple[str, str] | None = None,
        run_config: Mapping[str, Any] | None = None,
    ) -> Any:
        tags = {}
        if partition_range:
            tags = {
                "dagster/asset_partition_range_start": partition_range[0],
                "dagster/asset_partition_range_end": partition_range[1],
            }
        result = self.dg.materialize(
            self.assets.all_assets,
            selection=list(selection),
            partition_key=partition_key,
            resources=self.resources,
            instance=self.instance,
            run_config={**_QUIET, **(run_config or {})},
            tags=tags,
        )
        self.runs += 1
        return result

    def reset(self) -> None:
        """Drop the example's tables (data files included): every demo starts from scratch."""
        catalog = self.catalog.load_catalog()
        for table in self.tables():
            if not catalog.table_exists(table):
                continue
            location = catalog.load_table(table).location()
            catalog.drop_table(table)
            parsed = urlparse(location)
            if parsed.scheme == "file" and Path(parsed.path).is_dir():
                shutil.rmtree(parsed.path)

    def tables(self) -> list[str]:
        """The example's Iceberg tables."""
        return [".".join(key.path) for asset in self.assets.lakehouse_assets for key in asset.keys]

    # ------------------------------------------------------------------------------ report

    def table_rows(self) -> list[tuple[str, int, int, int, int]]:
        rows = []
        for name in self.tables():
            if not self.manager.table_exists(name):
                continue
            health = self.manager.table_health(name)
            rows.append(
                (name, health.rows, health.snapshots, health.data_files, health.total_bytes)
            )
        return rows

    def print_tables(self, rows: list[tuple[str, int, int, int, int]]) -> None:
        _say(f"   {'table':<30} {'rows':>6} {'snapshots':>10} {'data files':>11} {'size':>9}")
        for name, count, snapshots, files, size in rows:
            _say(f"   {name:<30} {count:>6} {snapshots:>10} {files:>11} {_size(size):>9}")


def main() -> int:
    warnings.filterwarnings("ignore")  # beta/preview notices of Dagster APIs the example uses
    started = time.monotonic()
    _say("floe-dagster-iceberg demo: an Iceberg lakehouse run by Dagster, on the embedded catalog")
    demo = Demo()
    assets = demo.assets
    warehouse = demo.home / "warehouse"
    demo.reset()
    _say(
        f"   catalog   {_relative(demo.home / 'catalog.db')} (SQLite, catalog name {demo.catalog.name!r})"
    )
    _say(f"   warehouse {_relative(warehouse)}")
    _say()

    _say("1. Customer dimension: CRM export of 2024-01-07, 3 regions in one run, then tag it")
    demo.materialize([assets.CUSTOMERS, assets.CUSTOMERS_BASELINE], partition_range=("eu", "apac"))
    _say(f"   dim.customers: {demo.manager.count('dim.customers')} rows, tagged 'baseline'")

    _say(
        f"2. Backfill {DEMO_DAYS[0]}..{DEMO_DAYS[-1]}: one run per day (raw.events + staging.stg_events)"
    )
    for day in DEMO_DAYS:
        result = demo.materialize([assets.EVENTS, assets.STG_EVENTS], partition_key=day)
        raw, staged = (
            e.materialization.metadata["dagster/partition_row_count"].value
            for e in result.get_asset_materialization_events()
        )
        _say(f"   {day}: {raw} raw events, {staged} after de-duplication")
    demo.materialize(
        [assets.FCT_ORDERS, assets.REVENUE_BY_REGION],
        partition_range=(f"{DEMO_DAYS[0]}|eu", f"{DEMO_DAYS[-1]}|apac"),
    )
    revenue = demo.manager.scan("marts.revenue_by_region").to_pylist()
    _say(
        f"   marts.fct_orders: {demo.manager.count('marts.fct_orders')} orders in 21 (date, region) "
        "partitions, written by ONE run"
    )
    _say(
        "   marts.revenue_by_region: "
        + ", ".join(f"{r['region']} {r['revenue']:,.2f} ({r['orders']} orders)" for r in revenue)
    )

    _say("3. Upsert weekly CRM exports into dim.customers (merge on customer_id)")
    for export in WEEKLY_EXPORTS:
        last = export == WEEKLY_EXPORTS[-1]
        result = demo.materialize(
            [assets.CUSTOMERS, assets.CUSTOMER_TIER_CHANGES] if last else [assets.CUSTOMERS],
            partition_range=("eu", "apac"),
            run_config={"ops": {"dim__customers": {"config": {"export_date": export}}}},
        )
        metadata = next(
            e.materialization.metadata
            for e in result.get_asset_materialization_events()
            if e.asset_key == assets.CUSTOMERS
        )
        updated, inserted, unchanged = (
            metadata[f"iceberg/rows_{k}"].value for k in ("updated", "inserted", "unchanged")
        )
        _say(f"   {export}: {updated} updated, {inserted} inserted, {unchanged} unchanged")
    changes = demo.manager.scan("marts.customer_tier_changes").to_pylist()
    new = sum(1 for c in changes if c["change"] == "new")
    _say(
        f"   time travel: vs the 'baseline' tag, {new} new customers and "
        f"{len(changes) - new} tier changes (marts.customer_tier_changes)"
    )
    _say()

    before = demo.table_rows()
    disk_before = _disk_usage(warehouse)
    _say(f"4. Maintenance: job {MAINTENANCE_JOB} (compaction, manifest rewrite, snapshot expiry,")
    _say("   orphan cleanup), told to keep only each table's newest snapshot for the demo")
    job = demo.defs.resolve_job_def(MAINTENANCE_JOB)
    maintained = job.execute_in_process(
        run_config={
            **_QUIET,
            "ops": {
                f"{MAINTENANCE_JOB}__maintain": {
                    # In-process, the job cannot list the code location's assets: name the
                    # tables (launched from the UI or a schedule, it finds them itself).
                    "config": {
                        "tables": demo.tables(),
                        "expire_older_than_hours": 0,
                        "retain_last": 1,
                    }
                }
            },
        },
        instance=demo.instance,
    )
    demo.runs += 1
    summary = _maintenance_totals(maintained)
    _say(
        f"   compaction: {summary.get('compact/files_rewritten', 0)} small files rewritten into "
        f"{summary.get('compact/files_added', 0)}; expiry: "
        f"{summary.get('expire_snapshots/snapshots_expired', 0)} snapshots expired, "
        f"{summary.get('expire_snapshots/files_deleted', 0)} files deleted "
        f"({_size(summary.get('expire_snapshots/bytes_freed', 0))} freed)"
    )
    after = demo.table_rows()
    disk_after = _disk_usage(warehouse)
    _say()

    _say("Tables before maintenance:")
    demo.print_tables(before)
    _say("Tables after maintenance (same rows; dim.customers keeps its tagged snapshot):")
    demo.print_tables(after)
    _say(
        f"Files in the warehouse: {disk_before[0]} ({_size(disk_before[1])}) before, "
        f"{disk_after[0]} ({_size(disk_after[1])}) after."
    )
    _say(
        f"The data lives in {_relative(warehouse)}/<namespace>/<table>/ (Parquet in data/, "
        f"Iceberg metadata in metadata/), the catalog in {_relative(demo.home / 'catalog.db')}."
    )
    _say()
    dagster_home = _relative(Path(os.environ["DAGSTER_HOME"]))
    bin_dir = _relative(Path(sys.executable).parent)
    _say(
        f"Done in {time.monotonic() - started:.1f} s: {demo.runs} Dagster runs, recorded in "
        f"{dagster_home}. To see them in the Dagster UI, from the repository root:"
    )
    if importlib.util.find_spec("dagster_webserver") is None:
        _say(f"   {bin_dir}/pip install 'dagster-webserver>=1.13,<1.14'   # the UI, once")
    # Dagster wants an absolute DAGSTER_HOME: a path under the repository is given from $PWD.
    home_arg = dagster_home if Path(dagster_home).is_absolute() else f'"$PWD/{dagster_home}"'
    _say(f"   DAGSTER_HOME={home_arg} {bin_dir}/dagster dev -w workspace.yaml")
    _say(
        "and open http://127.0.0.1:3000: Assets (lineage, partitions, health checks), Runs, "
        "Jobs (lakehouse_full_maintenance), Automation (maintenance schedules, sensor)."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
