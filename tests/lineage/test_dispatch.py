"""Events reach real receivers through openlineage-python's transports, end to end.

The receivers are an HTTP server on a free 127.0.0.1 port (``http`` transport) or a JSON-lines
file (``file`` transport); sending never fails a run, and step processes send before exiting.
"""

import json
import logging
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow as pa
import pytest

from floe_dagster_iceberg import build_iceberg_maintenance_job, create_iceberg_resources
from floe_dagster_iceberg.lineage import LineageConfig
from floe_dagster_iceberg.lineage.dispatch import flush_lineage
from lineage.support import (
    FLUSH_SECONDS,
    Receiver,
    closed_port,
    customers,
    lifecycle,
    materialize,
    order_summary,
    orders,
    project_resources,
    validate_event,
)

COMPACTION = build_iceberg_maintenance_job(
    "compact_orders", tables=["sales.orders"], steps=["compact"], min_input_files=2
)


def _run_scenario(home: Path, lineage: LineageConfig | None = None) -> list[str]:
    """Seven runs: partitioned writes, upserts, a schema evolution, a load and a compaction.

    Returns the Dagster run ids in order.
    """
    resources = project_resources(home, lineage)
    instance = dg.DagsterInstance.ephemeral()
    runs = [
        materialize(resources, instance, [orders], "2024-01-01"),
        materialize(resources, instance, [orders], "2024-01-02"),
        materialize(
            resources,
            instance,
            [orders],
            "2024-01-02",
            {"ops": {"sales__orders": {"config": {"late_rows_with_channel": True}}}},
        ),
        materialize(resources, instance, [customers]),
        materialize(
            resources,
            instance,
            [customers],
            run_config={"ops": {"crm__customers": {"config": {"second_batch": True}}}},
        ),
        materialize(resources, instance, [order_summary]),
    ]
    compaction = COMPACTION.execute_in_process(resources=resources, instance=instance)
    assert compaction.success
    return [run.run_id for run in runs] + [compaction.run_id]


def _outputs(event: dict[str, Any]) -> list[dict[str, Any]]:
    return event.get("outputs", [])


def _check_scenario(events: list[dict[str, Any]], run_ids: list[str], home: Path) -> None:
    for event in events:
        validate_event(event)
    warehouse = (home / "warehouse").resolve()
    orders_name = f"{warehouse}/sales/orders"

    # -- order and jobs
    summary = [(e["eventType"], e["job"]["name"]) for e in events]
    compact_job = "compact_orders__maintain.compact.sales.orders"
    assert summary == [
        ("START", "sales/orders"),
        ("COMPLETE", "sales/orders"),
        ("START", "sales/orders"),
        ("COMPLETE", "sales/orders"),
        ("START", "sales/orders"),
        ("COMPLETE", "sales/orders"),
        ("START", "crm/customers"),
        ("COMPLETE", "crm/customers"),
        ("START", "crm/customers"),
        ("COMPLETE", "crm/customers"),
        ("START", "sales/order_summary"),  # load of sales.orders
        ("COMPLETE", "sales/order_summary"),
        ("START", "sales/order_summary"),  # write of sales.order_summary
        ("COMPLETE", "sales/order_summary"),
        ("START", compact_job),
        ("COMPLETE", compact_job),
    ]
    # one OpenLineage run per action: START and COMPLETE share a run id, actions do not
    pairs = [events[i : i + 2] for i in range(0, len(events), 2)]
    assert all(start["run"]["runId"] == done["run"]["runId"] for start, done in pairs)
    assert len({start["run"]["runId"] for start, _ in pairs}) == len(pairs)

    # -- parent run facet and job type
    dagster_runs = [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 5, 5, 6, 6]
    for event, index in zip(events, dagster_runs, strict=True):
        parent = event["run"]["facets"]["parent"]
        assert parent["run"]["runId"] == run_ids[index]
        assert parent["root"]["run"]["runId"] == run_ids[index]
        assert parent["job"]["namespace"] == event["job"]["namespace"] == "dagster"
        job_type = event["job"]["facets"]["jobType"]
        assert job_type["integration"] == "DAGSTER"
        assert job_type["processingType"] == "BATCH"
        assert job_type["jobType"] == ("OP" if event["job"]["name"] == compact_job else "ASSET")
    assert events[-1]["run"]["facets"]["parent"]["job"]["name"] == "compact_orders"

    # -- dataset identity: physical location, TABLE symlink to the catalog identity
    first_output = _outputs(events[1])[0]
    assert (first_output["namespace"], first_output["name"]) == ("file", orders_name)
    assert first_output["facets"]["symlinks"]["identifiers"] == [
        {
            "namespace": f"sqlite:///{home.resolve() / 'catalog.db'}",
            "name": "sales.orders",
            "type": "TABLE",
        }
    ]
    catalog = first_output["facets"]["catalog"]
    assert catalog["framework"] == "iceberg"
    assert catalog["type"] == "sql"
    assert catalog["name"] == "floe"
    assert catalog["warehouseUri"] == warehouse.as_uri()
    assert catalog["metadataUri"] == f"sqlite:///{home.resolve() / 'catalog.db'}"
    assert first_output["facets"]["storage"]["storageLayer"] == "iceberg"
    assert first_output["facets"]["storage"]["fileFormat"] == "parquet"

    # -- first write: no output on START (no table yet), CREATE on COMPLETE
    assert _outputs(events[0]) == []
    assert lifecycle(first_output) == "CREATE"
    stats = first_output["outputFacets"]["outputStatistics"]
    assert (stats["rowCount"], stats["fileCount"]) == (3, 1)
    assert stats["size"] > 0
    schema = [(f["name"], f["type"]) for f in first_output["facets"]["schema"]["fields"]]
    assert schema == [("day", "date"), ("order_id", "long"), ("amount", "double")]
    version_1 = first_output["facets"]["version"]["datasetVersion"]

    # -- second partition: overwrite of its slice; START names the table at its last version
    start_2 = _outputs(events[2])[0]
    assert start_2["facets"]["version"]["datasetVersion"] == version_1
    second = _outputs(events[3])[0]
    assert lifecycle(second) == "OVERWRITE"
    assert second["outputFacets"]["outputStatistics"]["rowCount"] == 3
    version_2 = second["facets"]["version"]["datasetVersion"]
    assert version_2 != version_1

    # -- late rows with a new column: schema evolution
    evolved = _outputs(events[5])[0]
    assert lifecycle(evolved) == "ALTER"
    assert [f["name"] for f in evolved["facets"]["schema"]["fields"]][-1] == "channel"
    assert evolved["outputFacets"]["outputStatistics"]["rowCount"] == 2
    version_3 = evolved["facets"]["version"]["datasetVersion"]

    # -- upserts: CREATE, then a plain merge commit
    customers_created = _outputs(events[7])[0]
    assert customers_created["name"] == f"{warehouse}/crm/customers"
    assert lifecycle(customers_created) == "CREATE"
    merged = _outputs(events[9])[0]
    assert lifecycle(merged) is None
    assert merged["outputFacets"]["outputStatistics"]["rowCount"] >= 2
    assert (
        merged["facets"]["version"]["datasetVersion"]
        != customers_created["facets"]["version"]["datasetVersion"]
    )

    # -- load: the consumer asset's job reads sales.orders at the snapshot written last
    load_start, load_done = events[10], events[11]
    assert load_start["outputs"] == []
    assert load_done["outputs"] == []
    (read,) = load_done["inputs"]
    assert (read["namespace"], read["name"]) == ("file", orders_name)
    assert read["facets"]["version"]["datasetVersion"] == version_3
    assert read["inputFacets"]["inputStatistics"]["rowCount"] == 8
    assert load_start["inputs"][0]["facets"]["version"]["datasetVersion"] == version_3
    summary_output = _outputs(events[13])[0]
    assert summary_output["name"] == f"{warehouse}/sales/order_summary"
    assert lifecycle(summary_output) == "CREATE"

    # -- compaction: input the table before, output the new snapshot with its statistics
    compact_done = events[15]
    (before,) = compact_done["inputs"]
    (after,) = compact_done["outputs"]
    assert before["name"] == after["name"] == orders_name
    assert before["facets"]["version"]["datasetVersion"] == version_3
    assert after["facets"]["version"]["datasetVersion"] != version_3
    assert lifecycle(after) is None
    compact_stats = after["outputFacets"]["outputStatistics"]
    assert (compact_stats["rowCount"], compact_stats["fileCount"]) == (5, 1)

    # -- every event carries the processing engine
    for event in events:
        engine = event["run"]["facets"]["processing_engine"]
        assert engine["name"] == "Dagster"
        assert engine["version"] == dg.__version__


def test_http_transport_configured_by_openlineage_url(
    tmp_path: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENLINEAGE_URL", receiver.url)
    home = tmp_path / "lake"
    run_ids = _run_scenario(home)
    assert flush_lineage(FLUSH_SECONDS)
    assert receiver.paths == {"/api/v1/lineage"}
    _check_scenario(receiver.events, run_ids, home)


def test_file_transport_configured_by_openlineage_yml(
    tmp_path: Path, no_openlineage_config: Path
) -> None:
    events_file = tmp_path / "events.jsonl"
    (no_openlineage_config / "openlineage.yml").write_text(
        f"transport:\n  type: file\n  log_file_path: {events_file}\n  append: true\n"
    )
    home = tmp_path / "lake"
    run_ids = _run_scenario(home)
    assert flush_lineage(FLUSH_SECONDS)
    events = [json.loads(line) for line in events_file.read_text().splitlines()]
    _check_scenario(events, run_ids, home)


@pytest.mark.parametrize("failure", ["unreachable", "http 500"])
def test_failing_receiver_never_fails_a_run_and_is_logged_once(
    tmp_path: Path, failure: str, caplog: pytest.LogCaptureFixture
) -> None:
    server = Receiver(status=500) if failure == "http 500" else None
    url = server.url if server else f"http://127.0.0.1:{closed_port()}"
    transport = {
        "type": "http",
        "url": url,
        "timeout": 2,
        # the client's default retries, shortened so the test does not wait for backoff
        "retry": {"total": 2, "connect": 2, "read": 2, "backoff_factor": 0.01},
    }
    lineage = LineageConfig(transport=transport)
    resources = project_resources(tmp_path / "lake", lineage)
    instance = dg.DagsterInstance.ephemeral()
    caplog.set_level(logging.WARNING, logger="floe_dagster_iceberg.lineage")
    try:
        for day in ("2024-01-01", "2024-01-02"):
            materialize(resources, instance, [orders], day)
        materialize(resources, instance, [order_summary])
        assert flush_lineage(FLUSH_SECONDS), "dropped events must not block the flush"
    finally:
        if server:
            server.close()
    warnings = [
        r for r in caplog.records if r.name == "floe_dagster_iceberg.lineage" and r.levelno >= 30
    ]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "could not be sent" in warnings[0].getMessage()
    if server:
        # the first event was tried (with its retries); the rest were dropped while it failed
        assert 1 <= server.requests <= 3
        assert server.events == []


# ---------------------------------------------------------------------- step processes


@dg.asset(key_prefix=["mp"], io_manager_key="iceberg")
def raw_events() -> pa.Table:
    return pa.table({"kind": ["click", "view", "click"], "n": [1, 2, 3]})


@dg.asset(
    key_prefix=["mp"],
    io_manager_key="iceberg",
    ins={"raw_events": dg.AssetIn(key=["mp", "raw_events"])},
)
def event_counts(raw_events: pa.Table) -> pa.Table:
    return pa.table({"events": [raw_events.num_rows]})


MULTIPROCESS_DEFS = dg.Definitions(
    assets=[raw_events, event_counts],
    jobs=[dg.define_asset_job("lineage_steps_job", selection=[raw_events, event_counts])],
    resources=create_iceberg_resources(),
)


def lineage_steps_job() -> dg.JobDefinition:
    return MULTIPROCESS_DEFS.resolve_job_def("lineage_steps_job")


def test_step_processes_send_their_events_before_exiting(
    tmp_path: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the multiprocess executor every step runs in its own process: the events queued
    there are sent when that process exits, so nothing is lost and this process flushes
    nothing."""
    monkeypatch.setenv("OPENLINEAGE_URL", receiver.url)
    monkeypatch.setenv("FLOE_ICEBERG_HOME", str(tmp_path / "lake"))
    # the step processes import this module by its dotted name, from the working directory
    monkeypatch.chdir(Path(__file__).parents[__name__.count(".")])
    with dg.instance_for_test() as instance:
        result = dg.execute_job(dg.reconstructable(lineage_steps_job), instance=instance)
        assert result.success
        run_id = result.run_id
    assert [(e["eventType"], e["job"]["name"]) for e in receiver.events] == [
        ("START", "mp/raw_events"),
        ("COMPLETE", "mp/raw_events"),
        ("START", "mp/event_counts"),
        ("COMPLETE", "mp/event_counts"),
        ("START", "mp/event_counts"),
        ("COMPLETE", "mp/event_counts"),
    ]
    for event in receiver.events:
        validate_event(event)
        parent = event["run"]["facets"]["parent"]
        assert parent["run"]["runId"] == run_id
        assert parent["job"]["name"] == "lineage_steps_job"
    assert receiver.events[3]["inputs"][0]["name"].endswith("/mp/raw_events")
