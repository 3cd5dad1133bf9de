"""OpenLineage events of IO manager writes and loads and of maintenance, end to end.

Events go through openlineage-python's real transports to a real receiver: an HTTP server on a
free 127.0.0.1 port (``http`` transport) or a JSON-lines file (``file`` transport). Every event
is validated against the official OpenLineage JSON schemas vendored under
``tests/openlineage_spec`` (openlineage-python does not ship them).
"""

import datetime as dt
import json
import logging
import os
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow as pa
import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from floe_dagster_iceberg import (
    EmbeddedCatalogConfig,
    IcebergCatalogResource,
    RestCatalogConfig,
    create_iceberg_resources,
)
from floe_dagster_iceberg.lineage import (
    CatalogIdentity,
    LineageConfig,
    dataset_identity,
    flush_lineage,
    lineage_configured,
)
from floe_dagster_iceberg.maintenance_jobs import build_iceberg_maintenance_job

SPEC_DIR = Path(__file__).parent / "openlineage_spec"
RUN_EVENT_SCHEMA = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent"
FLUSH_SECONDS = 30.0

# ---------------------------------------------------------------------- schema validation


def _registry() -> tuple[Registry, set[str]]:
    resources = []
    for path in [SPEC_DIR / "OpenLineage.json", *sorted((SPEC_DIR / "facets").glob("*.json"))]:
        contents = json.loads(path.read_text())
        resources.append((contents["$id"], Resource.from_contents(contents)))
    return Registry().with_resources(resources), {uri for uri, _ in resources}


REGISTRY, KNOWN_SCHEMAS = _registry()


def _validate(instance: Any, schema_url: str) -> None:
    base = schema_url.partition("#")[0]
    assert base in KNOWN_SCHEMAS, f"no vendored schema for {schema_url}"
    Draft202012Validator({"$ref": schema_url}, registry=REGISTRY).validate(instance)


def validate_event(event: dict[str, Any]) -> None:
    """The event against RunEvent, then every facet against the schema its _schemaURL names."""
    assert event["schemaURL"] == RUN_EVENT_SCHEMA
    _validate(event, RUN_EVENT_SCHEMA)
    facet_maps = [event["run"].get("facets", {}), event["job"].get("facets", {})]
    for dataset in event.get("inputs", []):
        facet_maps += [dataset.get("facets", {}), dataset.get("inputFacets", {})]
    for dataset in event.get("outputs", []):
        facet_maps += [dataset.get("facets", {}), dataset.get("outputFacets", {})]
    for facets in facet_maps:
        for facet in facets.values():
            _validate(facet, facet["_schemaURL"])


# ---------------------------------------------------------------------- receivers


class Receiver:
    """An OpenLineage HTTP receiver on 127.0.0.1 that answers ``status`` to every POST."""

    def __init__(self, status: int = 200) -> None:
        self.events: list[dict[str, Any]] = []
        self.requests = 0
        self.paths: set[str] = set()
        lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with lock:
                    receiver.requests += 1
                    receiver.paths.add(self.path)
                    if status < 300:
                        receiver.events.append(json.loads(body))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    try:
        yield server
    finally:
        server.close()


def _closed_port() -> int:
    """A 127.0.0.1 port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(autouse=True)
def no_openlineage_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """Every test starts with OpenLineage unconfigured: no variables, no openlineage.yml."""
    for key in list(os.environ):
        if key.startswith("OPENLINEAGE"):
            monkeypatch.delenv(key)
    workdir = tmp_path / "work"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    yield workdir
    flush_lineage(FLUSH_SECONDS)


# ---------------------------------------------------------------------- the project under test

DAYS = dg.DailyPartitionsDefinition(start_date="2024-01-01", end_date="2024-01-03")


class OrdersConfig(dg.Config):
    late_rows_with_channel: bool = False


@dg.asset(
    key_prefix=["sales"],
    partitions_def=DAYS,
    metadata={"partition_expr": "day"},
    io_manager_key="iceberg",
)
def orders(context: dg.AssetExecutionContext, config: OrdersConfig) -> dg.Output[pa.Table]:
    day = dt.date.fromisoformat(context.partition_key)
    if config.late_rows_with_channel:
        late = pa.table(
            {
                "day": [day, day],
                "order_id": [100, 101],
                "amount": [7.5, 8.5],
                "channel": ["web", "shop"],
            }
        )
        return dg.Output(late, metadata={"write_mode": "append"})
    base = 10 * day.day
    return dg.Output(
        pa.table(
            {
                "day": [day] * 3,
                "order_id": [base, base + 1, base + 2],
                "amount": [1.0, 2.0, 3.0],
            }
        )
    )


class CustomersConfig(dg.Config):
    second_batch: bool = False


@dg.asset(
    key_prefix=["crm"],
    metadata={"write_mode": "upsert", "upsert_options": {"join_cols": ["customer_id"]}},
    io_manager_key="iceberg",
)
def customers(config: CustomersConfig) -> pa.Table:
    if config.second_batch:
        return pa.table({"customer_id": [2, 4], "name": ["Bea", "Dan"]})
    return pa.table({"customer_id": [1, 2, 3], "name": ["Ann", "Bob", "Cid"]})


@dg.asset(
    key_prefix=["sales"],
    ins={"orders": dg.AssetIn(key=["sales", "orders"])},
    io_manager_key="iceberg",
)
def order_summary(orders: pa.Table) -> pa.Table:
    return pa.table({"orders": [orders.num_rows], "amount": [sum(orders["amount"].to_pylist())]})


COMPACTION = build_iceberg_maintenance_job(
    "compact_orders", tables=["sales.orders"], steps=["compact"], min_input_files=2
)


def _resources(home: Path, lineage: LineageConfig | None = None) -> dict[str, Any]:
    catalog = IcebergCatalogResource(
        catalog=EmbeddedCatalogConfig(home=str(home)), openlineage=lineage
    )
    return create_iceberg_resources(catalog)


def _materialize(
    resources: dict[str, Any],
    instance: dg.DagsterInstance,
    selection: list[Any],
    partition_key: str | None = None,
    run_config: dict[str, Any] | None = None,
) -> dg.ExecuteInProcessResult:
    result = dg.materialize(
        [orders, customers, order_summary],
        selection=selection,
        partition_key=partition_key,
        resources=resources,
        instance=instance,
        run_config=run_config,
    )
    assert result.success
    return result


def _run_scenario(home: Path, lineage: LineageConfig | None = None) -> list[str]:
    """Seven runs: partitioned writes, upserts, a schema evolution, a load and a compaction.

    Returns the Dagster run ids in order.
    """
    resources = _resources(home, lineage)
    instance = dg.DagsterInstance.ephemeral()
    runs = [
        _materialize(resources, instance, [orders], "2024-01-01"),
        _materialize(resources, instance, [orders], "2024-01-02"),
        _materialize(
            resources,
            instance,
            [orders],
            "2024-01-02",
            {"ops": {"sales__orders": {"config": {"late_rows_with_channel": True}}}},
        ),
        _materialize(resources, instance, [customers]),
        _materialize(
            resources,
            instance,
            [customers],
            run_config={"ops": {"crm__customers": {"config": {"second_batch": True}}}},
        ),
        _materialize(resources, instance, [order_summary]),
    ]
    compaction = COMPACTION.execute_in_process(resources=resources, instance=instance)
    assert compaction.success
    return [run.run_id for run in runs] + [compaction.run_id]


def _outputs(event: dict[str, Any]) -> list[dict[str, Any]]:
    return event.get("outputs", [])


def _lifecycle(dataset: dict[str, Any]) -> str | None:
    facet = dataset["facets"].get("lifecycleStateChange")
    return facet["lifecycleStateChange"] if facet else None


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
    assert _lifecycle(first_output) == "CREATE"
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
    assert _lifecycle(second) == "OVERWRITE"
    assert second["outputFacets"]["outputStatistics"]["rowCount"] == 3
    version_2 = second["facets"]["version"]["datasetVersion"]
    assert version_2 != version_1

    # -- late rows with a new column: schema evolution
    evolved = _outputs(events[5])[0]
    assert _lifecycle(evolved) == "ALTER"
    assert [f["name"] for f in evolved["facets"]["schema"]["fields"]][-1] == "channel"
    assert evolved["outputFacets"]["outputStatistics"]["rowCount"] == 2
    version_3 = evolved["facets"]["version"]["datasetVersion"]

    # -- upserts: CREATE, then a plain merge commit
    customers_created = _outputs(events[7])[0]
    assert customers_created["name"] == f"{warehouse}/crm/customers"
    assert _lifecycle(customers_created) == "CREATE"
    merged = _outputs(events[9])[0]
    assert _lifecycle(merged) is None
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
    assert _lifecycle(summary_output) == "CREATE"

    # -- compaction: input the table before, output the new snapshot with its statistics
    compact_done = events[15]
    (before,) = compact_done["inputs"]
    (after,) = compact_done["outputs"]
    assert before["name"] == after["name"] == orders_name
    assert before["facets"]["version"]["datasetVersion"] == version_3
    assert after["facets"]["version"]["datasetVersion"] != version_3
    assert _lifecycle(after) is None
    compact_stats = after["outputFacets"]["outputStatistics"]
    assert (compact_stats["rowCount"], compact_stats["fileCount"]) == (5, 1)

    # -- every event carries the processing engine
    for event in events:
        engine = event["run"]["facets"]["processing_engine"]
        assert engine["name"] == "Dagster"
        assert engine["version"] == dg.__version__


# ---------------------------------------------------------------------- tests: naming


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        ("s3://lake/warehouse/sales/orders", ("s3://lake", "warehouse/sales/orders")),
        ("s3a://lake/warehouse/sales/orders/", ("s3://lake", "warehouse/sales/orders")),
        ("gs://lake/w/orders", ("gs://lake", "w/orders")),
        ("abfss://c@acct.dfs.core.windows.net/w/t", ("abfss://c@acct.dfs.core.windows.net", "w/t")),
        ("file:///data/warehouse/sales.db/orders", ("file", "/data/warehouse/sales.db/orders")),
        ("/data/warehouse/sales.db/orders/", ("file", "/data/warehouse/sales.db/orders")),
        ("file:///data/my%20lake/t", ("file", "/data/my lake/t")),
        ("hdfs://namenode:8020/warehouse/orders", ("hdfs://namenode:8020", "/warehouse/orders")),
    ],
)
def test_dataset_identity_follows_the_spark_integration(
    location: str, expected: tuple[str, str]
) -> None:
    assert dataset_identity(location) == expected


@pytest.mark.parametrize(
    ("identity", "expected"),
    [
        (
            CatalogIdentity("lake", "rest", uri="http://127.0.0.1:8181/catalog"),
            ("http://127.0.0.1:8181/catalog", "sales.orders"),
        ),
        (
            CatalogIdentity("lake", "sql", uri="postgresql+psycopg2://***@db:5432/iceberg"),
            ("postgresql://db:5432/iceberg", "sales.orders"),
        ),
        (
            CatalogIdentity("lake", "hive", uri="thrift://metastore:9083"),
            ("hive://metastore:9083", "sales.orders"),
        ),
        (
            CatalogIdentity(
                "lake", "glue", glue_region="eu-west-1", glue_catalog_id="123456789012"
            ),
            ("arn:aws:glue:eu-west-1:123456789012", "table/sales/orders"),
        ),
        (CatalogIdentity("lake", "custom"), ("iceberg://lake", "sales.orders")),
    ],
)
def test_catalog_symlink_identity(identity: CatalogIdentity, expected: tuple[str, str]) -> None:
    assert identity.symlink(("sales", "orders")) == expected


# ---------------------------------------------------------------------- tests: configuration


def test_off_when_nothing_is_configured(tmp_path: Path, no_openlineage_config: Path) -> None:
    resource = IcebergCatalogResource(catalog=EmbeddedCatalogConfig(home=str(tmp_path / "lake")))
    assert not lineage_configured()
    assert not resource.lineage().enabled

    (no_openlineage_config / "openlineage.yml").write_text("transport:\n  type: console\n")
    assert lineage_configured()
    assert resource.lineage().enabled


def test_standard_environment_variables_switch_it_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__TYPE", "console")
    assert lineage_configured()
    monkeypatch.delenv("OPENLINEAGE__TRANSPORT__TYPE")
    monkeypatch.setenv("OPENLINEAGE_URL", "http://127.0.0.1:1")
    assert lineage_configured()
    monkeypatch.setenv("OPENLINEAGE_DISABLED", "true")
    assert not lineage_configured()
    resource = IcebergCatalogResource(
        openlineage=LineageConfig(transport={"type": "http", "url": "http://127.0.0.1:1"})
    )
    assert not resource.lineage().enabled, "OPENLINEAGE_DISABLED beats every other setting"


def test_enabled_false_on_the_resource_beats_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENLINEAGE_URL", "http://127.0.0.1:1")
    resource = IcebergCatalogResource(openlineage=LineageConfig(enabled=False))
    assert not resource.lineage().enabled


# ---------------------------------------------------------------------- tests: end to end


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


def test_resource_override_sets_transport_and_job_namespace(
    tmp_path: Path, receiver: Receiver
) -> None:
    lineage = LineageConfig(transport={"type": "http", "url": receiver.url}, namespace="analytics")
    result = _materialize(
        _resources(tmp_path / "lake", lineage),
        dg.DagsterInstance.ephemeral(),
        [customers],
    )
    assert flush_lineage(FLUSH_SECONDS)
    assert [e["eventType"] for e in receiver.events] == ["START", "COMPLETE"]
    for event in receiver.events:
        validate_event(event)
        assert event["job"]["namespace"] == "analytics"
        assert event["run"]["facets"]["parent"]["job"]["namespace"] == "analytics"
        assert event["run"]["facets"]["parent"]["run"]["runId"] == result.run_id


def test_failed_write_emits_fail_with_error_message(tmp_path: Path, receiver: Receiver) -> None:
    @dg.asset(
        key_prefix=["sales"],
        name="orders",
        partitions_def=DAYS,
        metadata={"partition_expr": "day"},
        io_manager_key="iceberg",
    )
    def wrong_day_orders() -> pa.Table:
        # rows of 2024-01-02 returned for partition 2024-01-01: refused by the IO manager
        return pa.table({"day": [dt.date(2024, 1, 2)], "order_id": [1], "amount": [1.0]})

    lineage = LineageConfig(transport={"type": "http", "url": receiver.url})
    result = dg.materialize(
        [wrong_day_orders],
        partition_key="2024-01-01",
        resources=_resources(tmp_path / "lake", lineage),
        raise_on_error=False,
    )
    assert not result.success
    assert flush_lineage(FLUSH_SECONDS)
    assert [e["eventType"] for e in receiver.events] == ["START", "FAIL"]
    for event in receiver.events:
        validate_event(event)
    error = receiver.events[1]["run"]["facets"]["errorMessage"]
    assert error["message"].startswith("PartitionMismatchError:")
    assert error["programmingLanguage"] == "python"
    assert "PartitionMismatchError" in error["stackTrace"]


@pytest.mark.parametrize("failure", ["unreachable", "http 500"])
def test_failing_receiver_never_fails_a_run_and_is_logged_once(
    tmp_path: Path, failure: str, caplog: pytest.LogCaptureFixture
) -> None:
    server = Receiver(status=500) if failure == "http 500" else None
    url = server.url if server else f"http://127.0.0.1:{_closed_port()}"
    transport = {
        "type": "http",
        "url": url,
        "timeout": 2,
        # the client's default retries, shortened so the test does not wait for backoff
        "retry": {"total": 2, "connect": 2, "read": 2, "backoff_factor": 0.01},
    }
    lineage = LineageConfig(transport=transport)
    resources = _resources(tmp_path / "lake", lineage)
    instance = dg.DagsterInstance.ephemeral()
    caplog.set_level(logging.WARNING, logger="floe_dagster_iceberg.lineage")
    try:
        for day in ("2024-01-01", "2024-01-02"):
            _materialize(resources, instance, [orders], day)
        _materialize(resources, instance, [order_summary])
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
    # the step processes import this module by name, from the working directory
    monkeypatch.chdir(Path(__file__).parent)
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


# ---------------------------------------------------------------------- REST catalog on S3


def test_rest_catalog_on_s3_is_named_like_spark(
    rest_catalog_properties: dict[str, str], namespace: str, receiver: Receiver
) -> None:
    properties = dict(rest_catalog_properties)
    catalog = IcebergCatalogResource(
        catalog=RestCatalogConfig(
            uri=properties["uri"],
            warehouse=properties["warehouse"],
            credential=properties["credential"],
        ),
        properties={k: v for k, v in properties.items() if k.startswith("s3.")},
        openlineage=LineageConfig(transport={"type": "http", "url": receiver.url}),
    )

    @dg.asset(name="orders", metadata={"namespace": namespace}, io_manager_key="iceberg")
    def rest_orders() -> pa.Table:
        return pa.table({"order_id": [1, 2], "amount": [1.0, 2.0]})

    result = dg.materialize([rest_orders], resources=create_iceberg_resources(catalog))
    assert result.success
    assert flush_lineage(FLUSH_SECONDS)
    assert [e["eventType"] for e in receiver.events] == ["START", "COMPLETE"]
    for event in receiver.events:
        validate_event(event)
    (output,) = receiver.events[1]["outputs"]

    location = catalog.get_manager().load_table((namespace, "orders")).location()
    assert location.startswith("s3://")
    bucket, _, path = location.removeprefix("s3://").partition("/")
    assert output["namespace"] == f"s3://{bucket}"
    assert output["name"] == path.rstrip("/")
    assert not output["name"].startswith("/")
    assert output["facets"]["symlinks"]["identifiers"] == [
        {"namespace": properties["uri"], "name": f"{namespace}.orders", "type": "TABLE"}
    ]
    facet = output["facets"]["catalog"]
    assert (facet["type"], facet["name"], facet["metadataUri"], facet["warehouseUri"]) == (
        "rest",
        "floe",
        properties["uri"],
        properties["warehouse"],
    )
    assert properties["credential"] not in json.dumps(receiver.events)
    assert _lifecycle(output) == "CREATE"
