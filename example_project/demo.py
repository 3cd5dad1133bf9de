"""The example lakehouse end to end on the embedded catalog, with a short report.

    python3 tasks.py demo            # from the repository root (creates .venv on first use)
    .venv/bin/python -m example_project.demo

It loads the customer dimension, backfills seven days of events through staging (a Dagster
backfill of the ``daily_events`` job, one run per day, launched with ``dagster job backfill``
and run by a ``dagster-daemon`` the demo starts and stops) into the date x region fact and its
aggregate, upserts three weekly CRM exports into the dimension, reads the dimension back at a
tag (time travel), mirrors the CRM's customers from two batches of its change feed (inserts,
updates, deletes, late changes), then compacts and expires snapshots and shows what that freed.

Runs are recorded in the demo's Dagster instance (``DAGSTER_HOME``, default ``.dagster_home``)
so the Dagster UI shows them afterwards. Re-running starts from empty tables AND an empty run
history, so the UI never shows partitions the tables no longer hold. The demo only wipes an
instance it created; a ``DAGSTER_HOME`` holding another Dagster instance is refused.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

REPO_ROOT = Path(__file__).resolve().parents[1]
DEMO_DAYS = [f"2024-01-{day:02d}" for day in range(1, 8)]
WEEKLY_EXPORTS = ["2024-01-14", "2024-01-21", "2024-01-28"]
MAINTENANCE_JOB = "lakehouse_full_maintenance"
BACKFILL_JOB = "daily_events"
WORKSPACE = REPO_ROOT / "workspace.yaml"
BACKFILL_TIMEOUT_SECONDS = 600
_QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}
_BIN = Path(sys.executable).parent

INSTANCE_MARKER = "# Dagster instance of the floe-dagster-iceberg demo."
INSTANCE_CONFIG = f"""{INSTANCE_MARKER}
# `python3 tasks.py demo` wipes this instance's run history whenever it rebuilds the tables.
telemetry:
  enabled: false
# Queued runs start within a second. A backfill's runs go one after the other, so the row
# count of each materialization is the table's total after it (concurrent runs may record
# their materializations in another order than they commit).
run_queue:
  dequeue_interval_seconds: 1
  tag_concurrency_limits:
    - key: dagster/backfill
      limit: 1
"""
"""``dagster.yaml`` of the demo's instance; its first line marks the instance as the demo's."""


class DemoError(RuntimeError):
    """The demo cannot go on; the message says why and what to do."""


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


def prepare_instance(dagster_home: Path) -> None:
    """Give the demo an empty Dagster instance at ``dagster_home``, with its ``dagster.yaml``.

    The run history of an instance the demo made before is wiped (the demo rebuilds its tables,
    so old runs would claim partitions the tables no longer hold). Another instance is refused.

    Example:
        >>> import tempfile
        >>> home = Path(tempfile.mkdtemp()) / "dagster_home"
        >>> prepare_instance(home)
        >>> (home / "dagster.yaml").read_text().startswith(INSTANCE_MARKER)
        True
    """
    config = dagster_home / "dagster.yaml"
    marked = config.exists() and config.read_text().startswith(INSTANCE_MARKER)
    empty = not dagster_home.exists() or not any(dagster_home.iterdir())
    # The repository's .dagster_home is the demo's even when an older demo made it unmarked.
    default = dagster_home.resolve() == (REPO_ROOT / ".dagster_home").resolve()
    if not (marked or empty or default):
        raise DemoError(
            f"DAGSTER_HOME={dagster_home} is not empty and not an instance the demo created; "
            "the demo wipes the run history of its instance, so it will not use this one. "
            "Unset DAGSTER_HOME (the demo then uses .dagster_home) or point it at an empty "
            "or new directory."
        )
    if dagster_home.exists():
        for entry in dagster_home.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    dagster_home.mkdir(parents=True, exist_ok=True)
    config.write_text(INSTANCE_CONFIG)


@contextlib.contextmanager
def dagster_daemon(log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``dagster-daemon run -w workspace.yaml`` for the duration of the block, then stopped.

    The daemon launches the queued runs of a backfill. It runs in its own process group, so
    stopping it also stops its code server.

    Example:
        >>> with dagster_daemon(Path(".dagster_home/daemon.log")) as daemon:  # doctest: +SKIP
        ...     pass  # launch a backfill, wait for its runs
    """
    with open(log_path, "wb") as log:
        daemon = subprocess.Popen(
            [str(_BIN / "dagster-daemon"), "run", "-w", str(WORKSPACE)],
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            yield daemon
        finally:
            _stop_process_group(daemon)


def _stop_process_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the process group, SIGKILL to what is left after a grace period."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=20)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def launch_job_backfill(job: str, first: str, last: str) -> str:
    """Launch a backfill of ``job`` over the partitions ``first``..``last``; return its id.

    It is the ``dagster job backfill`` command: the backfill is listed in the UI's Backfills
    tab and queues one run per partition, which a running daemon launches.

    Example:
        >>> launch_job_backfill("daily_events", "2024-01-01", "2024-01-07")  # doctest: +SKIP
        'qinumtvq'
    """
    command = [str(_BIN / "dagster"), "job", "backfill", "-w", str(WORKSPACE), "-j", job]
    completed = subprocess.run(
        [*command, "--from", first, "--to", last, "--noprompt"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    launched = re.search(r"Launched backfill job `([^`]+)`", completed.stdout)
    if completed.returncode != 0 or not launched:
        raise DemoError(
            f"dagster job backfill failed (exit code {completed.returncode}):\n"
            f"{completed.stdout[-3000:]}{completed.stderr[-3000:]}"
        )
    return launched.group(1)


class Demo:
    def __init__(self) -> None:
        # The demo always runs on the embedded default, whatever FLOE_CATALOG_* says.
        for name in [n for n in os.environ if n.startswith(("FLOE_CATALOG_", "FLOE_S3_"))]:
            del os.environ[name]
        if not os.environ.get("DAGSTER_HOME"):
            os.environ["DAGSTER_HOME"] = str(REPO_ROOT / ".dagster_home")
        # Dagster wants an absolute DAGSTER_HOME; so do the daemon and CLI processes started here.
        self.dagster_home = Path(os.environ["DAGSTER_HOME"]).resolve()
        os.environ["DAGSTER_HOME"] = str(self.dagster_home)
        # A fresh, local instance for the demo's runs; it sends nothing anywhere.
        prepare_instance(self.dagster_home)

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
        self.backfill_id: str | None = None

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
            [*self.assets.all_assets, *self.assets.audit_checks],
            selection=list(selection),
            partition_key=partition_key,
            resources=self.resources,
            instance=self.instance,
            run_config={**_QUIET, **(run_config or {})},
            tags=tags,
        )
        self.runs += 1
        return result

    def backfill(self, job: str, partition_keys: Sequence[str]) -> list[Any]:
        """Backfill ``job`` over ``partition_keys`` (one run each) and wait for its runs.

        The daemon must be running; runs that fail stop the demo with their ids and the
        place of their logs.
        """
        backfill_id = launch_job_backfill(job, partition_keys[0], partition_keys[-1])
        self.backfill_id = backfill_id
        runs_filter = self.dg.RunsFilter(tags={"dagster/backfill": backfill_id})
        deadline = time.monotonic() + BACKFILL_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            runs = [r.dagster_run for r in self.instance.get_run_records(filters=runs_filter)]
            if len(runs) == len(partition_keys) and all(r.is_finished for r in runs):
                break
            time.sleep(0.5)
        else:
            raise DemoError(
                f"backfill {backfill_id} did not finish in {BACKFILL_TIMEOUT_SECONDS} s"
            )
        failed = [r.run_id for r in runs if not r.is_success]
        if failed:
            raise DemoError(
                f"backfill {backfill_id}: runs {', '.join(failed)} failed; open the UI "
                "(see the end of the demo's output) or the daemon log in DAGSTER_HOME."
            )
        self.runs += len(runs)
        return runs

    def partition_row_count(self, asset_key: Any, partition_key: str) -> int:
        """``dagster/partition_row_count`` of the partition's latest materialization."""
        records = self.instance.fetch_materializations(
            self.dg.AssetRecordsFilter(asset_key=asset_key, asset_partitions=[partition_key]),
            limit=1,
        ).records
        return records[0].asset_materialization.metadata["dagster/partition_row_count"].value

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


def _change_data_capture(demo: Demo) -> None:
    """Apply the CRM change feed's batches to ``crm.customers`` (one run each) and report."""
    from example_project import data

    _say(
        "4. Change data capture: the CRM change feed upserted into crm.customers (op 'D' "
        "deletes, the newest lsn wins)"
    )
    for batch in range(1, data.CRM_BATCHES + 1):
        result = demo.materialize(
            [demo.assets.CRM_CUSTOMERS],
            run_config={"ops": {"crm__customers": {"config": {"batch": batch}}}},
        )
        (event,) = result.get_asset_materialization_events()
        metadata = event.materialization.metadata
        inserted, updated, removed, unchanged = (
            metadata[f"iceberg/rows_{k}"].value
            for k in ("inserted", "updated", "removed", "unchanged")
        )
        _say(
            f"   batch {batch}, {data.crm_changes(batch).num_rows} changes: {inserted} inserted, "
            f"{updated} updated, {removed} removed, {unchanged} unchanged"
        )
    _say(
        f"   crm.customers: {demo.manager.count('crm.customers')} customers (unchanged: a late "
        "change, older than the row it would replace)"
    )


def _audit_branch(result: Any) -> str:
    from floe_dagster_iceberg.audit import AUDIT_BRANCH_METADATA

    (materialization,) = result.asset_materializations_for_node("marts__revenue_by_region")
    return materialization.metadata[AUDIT_BRANCH_METADATA].value


def main() -> int:
    warnings.filterwarnings("ignore")  # beta/preview notices of Dagster APIs the example uses
    started = time.monotonic()
    _say("floe-dagster-iceberg demo: an Iceberg lakehouse run by Dagster, on the embedded catalog")
    try:
        return _run(Demo(), started)
    except DemoError as error:
        _say(f"The demo stopped: {error}")
        return 1


def _run(demo: Demo, started: float) -> int:
    assets = demo.assets
    warehouse = demo.home / "warehouse"
    demo.reset()
    _say(
        f"   catalog   {_relative(demo.home / 'catalog.db')} (SQLite, catalog name {demo.catalog.name!r})"
    )
    _say(f"   warehouse {_relative(warehouse)}")
    _say()

    # The daemon launches the backfill's runs; it loads the code location while step 1 runs.
    with dagster_daemon(demo.dagster_home / "demo-daemon.log"):
        _say("1. Customer dimension: CRM export of 2024-01-07, 3 regions in one run, then tag it")
        demo.materialize(
            [assets.CUSTOMERS, assets.CUSTOMERS_BASELINE], partition_range=("eu", "apac")
        )
        _say(f"   dim.customers: {demo.manager.count('dim.customers')} rows, tagged 'baseline'")

        _say(
            f"2. Backfill {DEMO_DAYS[0]}..{DEMO_DAYS[-1]} of the job {BACKFILL_JOB!r} "
            "(raw.events + staging.stg_events): one run per day, launched by the daemon"
        )
        demo.backfill(BACKFILL_JOB, DEMO_DAYS)
        _say(f"   backfill {demo.backfill_id} (UI: Runs > Backfills)")
        for day in DEMO_DAYS:
            raw = demo.partition_row_count(assets.EVENTS, day)
            staged = demo.partition_row_count(assets.STG_EVENTS, day)
            _say(f"   {day}: {raw} raw events, {staged} after de-duplication")
    marts = demo.materialize(
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
    (audit,) = marts.get_asset_check_evaluations()
    _say(
        f"   write-audit-publish: staged on branch {_audit_branch(marts)}, check "
        f"{audit.check_name} {'passed' if audit.passed else 'FAILED'}, published to main"
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
    _change_data_capture(demo)
    _say()

    before = demo.table_rows()
    disk_before = _disk_usage(warehouse)
    _say(f"5. Maintenance: job {MAINTENANCE_JOB} (compaction, manifest rewrite, snapshot expiry,")
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
        _say(f"   {bin_dir}/pip install -e '.[ui]'   # the UI, once")
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
