"""What the lineage tests share: OpenLineage schema validation, an HTTP receiver, a project.

Every event is validated against the official OpenLineage JSON schemas vendored under
``tests/openlineage_spec`` (openlineage-python does not ship them).
"""

import datetime as dt
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow as pa
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from floe_dagster_iceberg import (
    EmbeddedCatalogConfig,
    IcebergCatalogResource,
    create_iceberg_resources,
)
from floe_dagster_iceberg.lineage import LineageConfig

SPEC_DIR = Path(__file__).resolve().parent.parent / "openlineage_spec"
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


def closed_port() -> int:
    """A 127.0.0.1 port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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


def project_resources(home: Path, lineage: LineageConfig | None = None) -> dict[str, Any]:
    catalog = IcebergCatalogResource(
        catalog=EmbeddedCatalogConfig(home=str(home)), openlineage=lineage
    )
    return create_iceberg_resources(catalog)


def materialize(
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


def lifecycle(dataset: dict[str, Any]) -> str | None:
    facet = dataset["facets"].get("lifecycleStateChange")
    return facet["lifecycleStateChange"] if facet else None
