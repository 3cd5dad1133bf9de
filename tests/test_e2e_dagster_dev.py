"""End to end the way users run the example: ``dagster dev`` (webserver + daemon) over GraphQL.

One ``dagster dev`` serves ``workspace.yaml`` on a free loopback port, with a temporary
``DAGSTER_HOME`` and Iceberg home. Through the GraphQL API the test launches

- an asset backfill of 7 daily partitions of ``raw/events`` and everything downstream of it
  (one run per day for events + staging, then the date x region fact as ONE run over its
  whole range, then the unpartitioned aggregate), and
- a single-run range backfill of the customer dimension (all regions, one run) and its
  downstream tag and time-travel assets,

waits for the daemon to finish both, and checks the Iceberg tables (rows per partition,
snapshots and their run ids) against Dagster's materialization metadata. Then it switches a
maintenance schedule on, evaluates it, launches its run request and checks the run and the
health asset checks.

The server processes (``infra.dagster_dev``) are stopped in a finalizer whatever happens; a
server that cannot start fails the test with its log tail.

Duration: Dagster's backfill daemon evaluates backfills every 30 s (a fixed interval), and the
events backfill has three levels (events + staging, the fact, the aggregate), so it needs four
evaluations: about two minutes of the test's ~2.5 on an idle 2-core machine. The runs are small.
"""

from __future__ import annotations

import datetime as dt
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow.compute as pc
import pytest
import yaml
from infra.dagster_dev import LOCATION, DagsterDev, running
from pyiceberg.catalog import load_catalog

REPO_ROOT = Path(__file__).resolve().parents[1]
REPOSITORY = "__repository__"
DAYS = [f"2024-01-{day:02d}" for day in range(1, 8)]
REGIONS = ["eu", "us", "apac"]
CATALOG_NAME = "floe"
TABLE_ASSETS = [
    ["raw", "events"],
    ["staging", "stg_events"],
    ["marts", "fct_orders"],
    ["marts", "revenue_by_region"],
    ["dim", "customers"],
    ["marts", "customer_tier_changes"],
]

BACKFILL_TIMEOUT = 300
RUN_TIMEOUT = 120

pytestmark = pytest.mark.slow


# ------------------------------------------------------------------------------------ server


@pytest.fixture
def dagster_dev(tmp_path: Path) -> Iterator[DagsterDev]:
    with running(DagsterDev(tmp_path)) as server:
        yield server


# ----------------------------------------------------------------------------------- queries

LAUNCH_BACKFILL = """
mutation Launch($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message stack }
    ... on UnauthorizedError { message }
    ... on PartitionSetNotFoundError { message }
    ... on InvalidStepError { invalidStepKey }
    ... on InvalidOutputError { stepKey invalidOutputName }
    ... on ConflictingExecutionParamsError { message }
    ... on NoModeProvidedError { message }
    ... on InvalidSubsetError { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}
"""

BACKFILL_STATUS = """
query Backfill($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill { id status isAssetBackfill error { message } }
    ... on PythonError { message }
  }
}
"""

BACKFILL_RUNS = """
query Runs($id: String!) {
  runsOrError(filter: { tags: [{ key: "dagster/backfill", value: $id }] }) {
    __typename
    ... on Runs {
      results { runId status assetSelection { path } tags { key value } }
    }
    ... on PythonError { message }
  }
}
"""

MATERIALIZATIONS = """
query Materializations($path: [String!]!) {
  assetOrError(assetKey: { path: $path }) {
    __typename
    ... on Asset {
      assetMaterializations(limit: 200) {
        partition
        runId
        metadataEntries {
          label
          __typename
          ... on IntMetadataEntry { intRepr }
          ... on TextMetadataEntry { text }
          ... on PathMetadataEntry { path }
        }
      }
    }
  }
}
"""

FINISHED = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}


def _launch_backfill(server: DagsterDev, params: dict[str, Any]) -> str:
    result = server.graphql(LAUNCH_BACKFILL, {"params": params})["launchPartitionBackfill"]
    assert result["__typename"] == "LaunchBackfillSuccess", result
    return result["backfillId"]


def _backfill_runs(server: DagsterDev, backfill_id: str) -> list[dict[str, Any]]:
    result = server.graphql(BACKFILL_RUNS, {"id": backfill_id})["runsOrError"]
    assert result["__typename"] == "Runs", result
    return result["results"]


def _wait_for_backfills(server: DagsterDev, backfill_ids: list[str]) -> dict[str, str]:
    statuses: dict[str, str] = {}

    def finished() -> bool:
        for backfill_id in backfill_ids:
            answer = server.graphql(BACKFILL_STATUS, {"id": backfill_id})
            statuses[backfill_id] = answer["partitionBackfillOrError"]["status"]
        return all(status in FINISHED for status in statuses.values())

    server.wait_for(finished, timeout=BACKFILL_TIMEOUT, what=f"backfills {statuses}")
    return statuses


def _tags(run: dict[str, Any]) -> dict[str, str]:
    return {tag["key"]: tag["value"] for tag in run["tags"]}


def _assets(run: dict[str, Any]) -> set[str]:
    return {"/".join(key["path"]) for key in run["assetSelection"] or []}


def _materializations(server: DagsterDev, path: list[str]) -> list[dict[str, Any]]:
    result = server.graphql(MATERIALIZATIONS, {"path": path})["assetOrError"]
    assert result["__typename"] == "Asset", result
    return result["assetMaterializations"]


def _entry(materialization: dict[str, Any], label: str) -> Any:
    for entry in materialization["metadataEntries"]:
        if entry["label"] == label:
            if "intRepr" in entry:  # intValue is a 32-bit GraphQL Int; snapshot ids are not
                return int(entry["intRepr"])
            return entry.get("text", entry.get("path"))
    raise AssertionError(f"no {label!r} in {materialization['metadataEntries']}")


def _catalog(server: DagsterDev) -> Any:
    home = server.iceberg_home
    return load_catalog(
        CATALOG_NAME,
        type="sql",
        uri=f"sqlite:///{home / 'catalog.db'}",
        warehouse=(home / "warehouse").as_uri(),
    )


def _example_modules() -> tuple[Any, Any]:
    """The example's ``data`` and ``assets`` modules, to compute what the tables must hold."""
    project = str(REPO_ROOT / "example_project")
    sys.path.insert(0, project)
    try:
        from example_project import assets, data
    finally:
        sys.path.remove(project)
    return data, assets


SCHEDULES = """
query Schedules($selector: RepositorySelector!) {
  repositoryOrError(repositorySelector: $selector) {
    __typename
    ... on Repository {
      schedules {
        name
        cronSchedule
        pipelineName
        scheduleState { status }
        futureTicks(limit: 1) { results { timestamp } }
      }
    }
  }
}
"""

START_SCHEDULE = """
mutation Start($selector: ScheduleSelector!) {
  startSchedule(scheduleSelector: $selector) {
    __typename
    ... on ScheduleStateResult { scheduleState { status } }
    ... on PythonError { message }
    ... on UnauthorizedError { message }
  }
}
"""

SCHEDULE_DRY_RUN = """
mutation DryRun($selector: ScheduleSelector!, $timestamp: Float) {
  scheduleDryRun(selectorData: $selector, timestamp: $timestamp) {
    __typename
    ... on DryRunInstigationTick {
      timestamp
      evaluationResult {
        skipReason
        error { message }
        runRequests { runKey jobName runConfigYaml tags { key value } }
      }
    }
    ... on PythonError { message }
  }
}
"""

LAUNCH_RUN = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on InvalidSubsetError { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}
"""

ASSET_CHECKS = """
query Checks($path: [String!]!) {
  assetNodeOrError(assetKey: { path: $path }) {
    __typename
    ... on AssetNode {
      assetChecksOrError {
        __typename
        ... on AssetChecks {
          checks {
            name
            executionForLatestMaterialization {
              runId
              status
              evaluation { success severity description }
            }
          }
        }
      }
    }
  }
}
"""

RUN_STATUS = """
query Run($id: ID!) {
  runOrError(runId: $id) { __typename ... on Run { runId status jobName } }
}
"""

RUN_ERRORS = """
query Errors($id: ID!) {
  runOrError(runId: $id) {
    ... on Run {
      eventConnection(limit: 500) {
        events {
          __typename
          ... on ExecutionStepFailureEvent { stepKey error { message } }
          ... on RunFailureEvent { message }
          ... on EngineEvent { message error { message } }
        }
      }
    }
  }
}
"""

TERMINAL_RUN_STATUSES = {"SUCCESS", "FAILURE", "CANCELED"}


def _run_errors(server: DagsterDev, run_id: str) -> str:
    """The failure messages of a run, for assertion messages."""
    run = server.graphql(RUN_ERRORS, {"id": run_id})["runOrError"]
    messages = []
    for event in (run.get("eventConnection") or {}).get("events", []):
        error = (event.get("error") or {}).get("message")
        if event["__typename"] == "RunFailureEvent" or error:
            messages.append(
                f"{event.get('stepKey') or event['__typename']}: {error or event.get('message')}"
            )
    return f"run {run_id}:\n" + "\n".join(messages)


def _wait_for_run(server: DagsterDev, run_id: str) -> str:
    client = server.client()
    return server.wait_for(
        lambda: (status := client.get_run_status(run_id).value) in TERMINAL_RUN_STATUSES and status,
        timeout=RUN_TIMEOUT,
        what=f"run {run_id}",
    )


def _run_ids_by_status(runs: list[dict[str, Any]]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for run in runs:
        grouped.setdefault(run["status"], []).append(run["runId"])
    return grouped


def _backfill_done(server: DagsterDev, backfill_id: str, final_assets: list[list[str]]) -> bool:
    """All runs of the backfill ended and its last assets were materialized by one of them."""
    runs = _backfill_runs(server, backfill_id)
    if not runs or any(r["status"] not in TERMINAL_RUN_STATUSES for r in runs):
        return False
    failed = [r for r in runs if r["status"] != "SUCCESS"]
    if failed:
        errors = "\n".join(_run_errors(server, r["runId"]) for r in failed)
        pytest.fail(
            f"backfill {backfill_id}: runs not successful: {_run_ids_by_status(runs)}\n"
            f"{errors}\n--- dagster dev log ---\n{server.log_tail()}",
            pytrace=False,
        )
    run_ids = {r["runId"] for r in runs}
    return all(
        any(m["runId"] in run_ids for m in _materializations(server, path)) for path in final_assets
    )


# ------------------------------------------------------------------------------------- test


def test_backfills_schedule_and_checks_through_dagster_dev(dagster_dev: DagsterDev) -> None:
    server = dagster_dev
    data, assets = _example_modules()
    started = time.monotonic()
    repository = {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY}

    # 1. Two asset backfills through GraphQL, as the UI's "Materialize" > "Launch backfill".
    #    Events: 7 days of raw/events and everything downstream of it.
    events_backfill = _launch_backfill(
        server,
        {
            "assetSelection": [
                {"path": ["raw", "events"]},
                {"path": ["staging", "stg_events"]},
                {"path": ["marts", "fct_orders"]},
                {"path": ["marts", "revenue_by_region"]},
            ],
            "partitionNames": DAYS,
            "title": "events 2024-01-01..07",
        },
    )
    #    Customers: all regions of dim/customers, whose single-run backfill policy makes ONE
    #    run over the range eu..apac, then the tag and the time-travel asset downstream.
    customers_backfill = _launch_backfill(
        server,
        {
            "assetSelection": [
                {"path": ["dim", "customers"]},
                {"path": ["dim", "customers_baseline"]},
                {"path": ["marts", "customer_tier_changes"]},
            ],
            "partitionNames": REGIONS,
            "title": "customers, all regions",
        },
    )

    # 2. While the daemon works: switch the weekly maintenance schedule on and evaluate it.
    schedules = server.graphql(SCHEDULES, {"selector": repository})["repositoryOrError"]
    assert schedules["__typename"] == "Repository", schedules
    by_name = {s["name"]: s for s in schedules["schedules"]}
    assert {"lakehouse_weekly_full_maintenance", "lakehouse_nightly_maintenance_schedule"} <= set(
        by_name
    ), sorted(by_name)
    schedule = by_name["lakehouse_weekly_full_maintenance"]
    assert schedule["scheduleState"]["status"] == "STOPPED"  # everything scheduled starts off
    selector = {**repository, "scheduleName": schedule["name"]}
    started_schedule = server.graphql(START_SCHEDULE, {"selector": selector})["startSchedule"]
    assert started_schedule["__typename"] == "ScheduleStateResult", started_schedule
    assert started_schedule["scheduleState"]["status"] == "RUNNING"
    schedules = server.graphql(SCHEDULES, {"selector": repository})["repositoryOrError"]
    schedule = {s["name"]: s for s in schedules["schedules"]}[schedule["name"]]
    assert schedule["scheduleState"]["status"] == "RUNNING"
    next_tick = schedule["futureTicks"]["results"][0]["timestamp"]
    assert next_tick > time.time()
    dry_run = server.graphql(SCHEDULE_DRY_RUN, {"selector": selector, "timestamp": next_tick})[
        "scheduleDryRun"
    ]
    assert dry_run["__typename"] == "DryRunInstigationTick", dry_run
    evaluation = dry_run["evaluationResult"]
    assert evaluation["error"] is None, evaluation
    assert evaluation["skipReason"] is None, evaluation
    (run_request,) = evaluation["runRequests"]

    # 3. Wait until the daemon has run everything (deadline, polling; never a fixed sleep).
    server.wait_for(
        lambda: (
            _backfill_done(server, events_backfill, [["marts", "revenue_by_region"]])
            and _backfill_done(server, customers_backfill, [["marts", "customer_tier_changes"]])
        ),
        timeout=BACKFILL_TIMEOUT,
        what="backfill runs",
    )
    backfill_seconds = time.monotonic() - started
    events_runs = _backfill_runs(server, events_backfill)
    customers_runs = _backfill_runs(server, customers_backfill)
    run_ids = {r["runId"] for r in events_runs + customers_runs}

    # 4. The runs the daemon launched. Events + staging: one run per day (same partitions and
    #    backfill policy, so together). The fact: ranged runs only (single-run policy; the
    #    daemon requests the days whose upstream is done, so a busy machine may need more
    #    than one), together covering the 21 (date, region) partitions. Customers: ONE run.
    per_day = [r for r in events_runs if "raw/events" in _assets(r)]
    assert sorted(_tags(r)["dagster/partition"] for r in per_day) == DAYS
    assert all(_assets(r) == {"raw/events", "staging/stg_events"} for r in per_day), per_day
    fact_runs = [r for r in events_runs if "marts/fct_orders" in _assets(r)]
    assert fact_runs
    covered: list[str] = []
    for run in fact_runs:
        tags = _tags(run)
        assert "dagster/partition" not in tags, tags
        key_range = dg.PartitionKeyRange(
            tags["dagster/asset_partition_range_start"], tags["dagster/asset_partition_range_end"]
        )
        covered += assets.DAILY_BY_REGION.get_partition_keys_in_range(key_range)
    assert sorted(covered) == sorted(f"{day}|{region}" for day in DAYS for region in REGIONS)
    (customer_run,) = [r for r in customers_runs if "dim/customers" in _assets(r)]
    customer_tags = _tags(customer_run)
    assert (
        customer_tags["dagster/asset_partition_range_start"],
        customer_tags["dagster/asset_partition_range_end"],
    ) == ("eu", "apac")
    assert "dagster/partition" not in customer_tags

    # 5. The Iceberg tables, read directly: rows per partition, one snapshot per run.
    catalog = _catalog(server)
    expected = {day: data.events(dt.date.fromisoformat(day)) for day in DAYS}
    events = catalog.load_table(("raw", "events"))
    raw = events.scan().to_arrow()
    raw_days = Counter(t.date().isoformat() for t in raw["event_time"].to_pylist())
    assert raw_days == {day: table.num_rows for day, table in expected.items()}
    snapshots = events.metadata.snapshots
    assert len(snapshots) == len(DAYS), [s.summary for s in snapshots]
    assert {s.summary["dagster.partition-keys"] for s in snapshots} == set(DAYS)
    assert {s.summary["dagster.run-id"] for s in snapshots} == {r["runId"] for r in per_day}

    staged = catalog.load_table(("staging", "stg_events")).scan().to_arrow()
    staged_days = Counter(d.isoformat() for d in staged["event_date"].to_pylist())
    assert staged_days == {
        day: len(set(table["event_id"].to_pylist())) for day, table in expected.items()
    }

    facts = catalog.load_table(("marts", "fct_orders"))
    orders = facts.scan().to_arrow()
    cells = Counter(
        zip(
            (d.isoformat() for d in orders["event_date"].to_pylist()),
            orders["region"].to_pylist(),
            strict=True,
        )
    )
    expected_cells: Counter[tuple[str, str]] = Counter()
    for day, table in expected.items():
        purchases = {
            row["event_id"]: row["region"]
            for row in table.to_pylist()
            if row["event_type"].lower() == "purchase"
        }
        expected_cells.update((day, region) for region in purchases.values())
    assert cells == expected_cells
    fact_snapshots = {s.summary["dagster.run-id"]: s.snapshot_id for s in facts.metadata.snapshots}
    assert set(fact_snapshots) == {r["runId"] for r in fact_runs}  # one commit per ranged run

    revenue = catalog.load_table(("marts", "revenue_by_region")).scan().to_arrow()
    assert sorted(revenue["region"].to_pylist()) == sorted(REGIONS)
    assert sum(revenue["orders"].to_pylist()) == orders.num_rows
    assert pc.sum(revenue["revenue"]).as_py() == pytest.approx(pc.sum(orders["amount"]).as_py())
    # revenue_by_region is audited: every run staged it on its audit branch and published it.
    assert set(catalog.load_table(("marts", "revenue_by_region")).refs()) == {"main"}
    revenue_runs = _materializations(server, ["marts", "revenue_by_region"])
    assert revenue_runs
    for materialization in revenue_runs:
        branch = _entry(materialization, "iceberg/audit_branch")
        assert branch == f"audit-{materialization['runId']}"

    customers = catalog.load_table(("dim", "customers"))
    first_export = data.customers(REGIONS, dt.date(2024, 1, 7))
    assert customers.scan().count() == first_export.num_rows
    assert customers.snapshot_by_name("baseline") is not None
    assert catalog.load_table(("marts", "customer_tier_changes")).scan().count() == 0

    # 6. Dagster's materialization metadata agrees with the tables.
    materializations = _materializations(server, ["raw", "events"])
    assert sorted(m["partition"] for m in materializations) == DAYS
    snapshot_ids = {s.snapshot_id for s in snapshots}
    table_rows = []
    for materialization in materializations:
        day = materialization["partition"]
        assert materialization["runId"] in run_ids
        assert _entry(materialization, "dagster/partition_row_count") == expected[day].num_rows
        # dagster/row_count is the whole table after the run's commit: at least the day's rows.
        table_rows.append(_entry(materialization, "dagster/row_count"))
        assert table_rows[-1] >= expected[day].num_rows
        assert _entry(materialization, "iceberg/snapshot_id") in snapshot_ids
        assert _entry(materialization, "dagster/table_name") == f"{CATALOG_NAME}.raw.events"
        assert _entry(materialization, "dagster/uri").endswith("/raw/events")
    assert max(table_rows) == raw.num_rows  # the last commit saw every day
    fact_materializations = _materializations(server, ["marts", "fct_orders"])
    assert sorted(m["partition"] for m in fact_materializations) == sorted(covered)
    for materialization in fact_materializations:
        run_id = materialization["runId"]
        assert _entry(materialization, "iceberg/snapshot_id") == fact_snapshots[run_id]
    customer_materializations = _materializations(server, ["dim", "customers"])
    assert sorted(m["partition"] for m in customer_materializations) == sorted(REGIONS)
    assert {m["runId"] for m in customer_materializations} == {customer_run["runId"]}
    assert {_entry(m, "iceberg/rows_inserted") for m in customer_materializations} == {
        first_export.num_rows
    }

    # 7. The schedule's run request, launched as the UI's "Launch run" after a dry run does.
    client = server.client()
    maintenance_run = client.submit_job_execution(
        run_request["jobName"] or schedule["pipelineName"],
        repository_location_name=LOCATION,
        repository_name=REPOSITORY,
        run_config=yaml.safe_load(run_request["runConfigYaml"]) or {},
        tags={t["key"]: t["value"] for t in run_request["tags"]},
    )

    # 8. The health checks of every table, executed as the UI's "Execute all checks" does.
    check_handles = []
    for path in TABLE_ASSETS:
        node = server.graphql(ASSET_CHECKS, {"path": path})["assetNodeOrError"]
        assert node["__typename"] == "AssetNode", node
        checks = node["assetChecksOrError"]
        assert checks["__typename"] == "AssetChecks", checks
        names = {c["name"] for c in checks["checks"]}
        assert {"iceberg_small_files", "iceberg_snapshot_count", "iceberg_staleness"} <= names
        check_handles += [{"assetKey": {"path": path}, "name": name} for name in sorted(names)]
    launched = server.graphql(
        LAUNCH_RUN,
        {
            "params": {
                "selector": {
                    **repository,
                    "jobName": "__ASSET_JOB",
                    "assetSelection": [],
                    "assetCheckSelection": check_handles,
                },
                "mode": "default",
                "executionMetadata": {"tags": []},
            }
        },
    )["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    checks_run = launched["run"]["runId"]

    assert _wait_for_run(server, maintenance_run) == "SUCCESS", _run_errors(server, maintenance_run)
    maintenance = server.graphql(RUN_STATUS, {"id": maintenance_run})["runOrError"]
    assert maintenance["jobName"] == "lakehouse_full_maintenance"
    assert _wait_for_run(server, checks_run) == "SUCCESS", _run_errors(server, checks_run)
    results: dict[tuple[str, str], dict[str, Any]] = {}
    for path in TABLE_ASSETS:
        node = server.graphql(ASSET_CHECKS, {"path": path})["assetNodeOrError"]
        for check in node["assetChecksOrError"]["checks"]:
            results["/".join(path), check["name"]] = check["executionForLatestMaterialization"]
    assert len(results) == len(check_handles)
    for key, execution in results.items():
        assert execution is not None, f"no result for check {key}"
        assert execution["runId"] == checks_run, (key, execution)
        assert execution["evaluation"] is not None, (key, execution)
    # Fresh tables with few snapshots pass snapshot-count and staleness.
    failing = {
        key: results[key]["evaluation"]
        for key in results
        if key[1] in ("iceberg_snapshot_count", "iceberg_staleness")
        and not results[key]["evaluation"]["success"]
    }
    assert failing == {}

    # 9. The daemon marks both backfills complete.
    statuses = _wait_for_backfills(server, [events_backfill, customers_backfill])
    assert set(statuses.values()) == {"COMPLETED_SUCCESS"}, statuses

    print(
        f"\ndagster dev started in {server.start_seconds:.1f} s; backfill runs "
        f"({len(run_ids)}) done {backfill_seconds:.1f} s after launch; "
        f"test body {time.monotonic() - started:.1f} s"
    )
