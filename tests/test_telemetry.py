"""OpenTelemetry spans of manager operations, asserted with the SDK's in-memory exporter.

The SDK is a test dependency only; the package itself depends on opentelemetry-api.
"""

import datetime as dt
import logging
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from pyiceberg.expressions import EqualTo

from floe_dagster_iceberg import (
    ColumnSpec,
    CommitConflictError,
    EmbeddedCatalogConfig,
    IcebergCatalogResource,
    IcebergTableManager,
    PartitionField,
    RetryPolicy,
    SchemaChange,
    TableConfig,
    TableNotFoundError,
    TableSchema,
    WriteConfig,
    create_iceberg_resources,
)
from floe_dagster_iceberg.engine.telemetry import resolve_tracer_provider, set_tracer_provider

EXPORTER = InMemorySpanExporter()
PROVIDER = TracerProvider()
PROVIDER.add_span_processor(SimpleSpanProcessor(EXPORTER))


def tracer_provider() -> TracerProvider:
    """Named by the catalog resource's ``tracer_provider`` setting in a test below."""
    return PROVIDER


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    EXPORTER.clear()
    yield EXPORTER
    EXPORTER.clear()


@pytest.fixture
def resource(tmp_path: Path) -> IcebergCatalogResource:
    return IcebergCatalogResource(catalog=EmbeddedCatalogConfig(home=str(tmp_path / "lake")))


@pytest.fixture
def manager(resource: IcebergCatalogResource) -> IcebergTableManager:
    return resource.get_manager(tracer_provider=PROVIDER)


def _named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == name]


def _children(exporter: InMemorySpanExporter, parent: ReadableSpan) -> list[ReadableSpan]:
    return [
        s
        for s in exporter.get_finished_spans()
        if s.parent is not None and s.parent.span_id == parent.context.span_id
    ]


def _assert_db_span(span: ReadableSpan, operation: str, namespace: str, table: str) -> None:
    assert span.name == f"{operation} {namespace}.{table}"
    assert span.kind is SpanKind.CLIENT
    assert span.attributes["db.system.name"] == "iceberg"
    assert span.attributes["db.operation.name"] == operation
    assert span.attributes["db.namespace"] == namespace
    assert span.attributes["db.collection.name"] == table
    assert span.instrumentation_scope.name == "floe_dagster_iceberg"


def _orders(day: str, ids: list[int]) -> pa.Table:
    return pa.table(
        {
            "day": pa.array([dt.date.fromisoformat(day)] * len(ids), pa.date32()),
            "order_id": pa.array(ids, pa.int64()),
            "amount": pa.array([1.5] * len(ids), pa.float64()),
        }
    )


def test_every_manager_operation_is_a_client_span(
    manager: IcebergTableManager, spans: InMemorySpanExporter
) -> None:
    config = TableConfig(
        namespace="sales",
        name="orders",
        schema=TableSchema(
            columns=[
                ColumnSpec(name="day", type="date"),
                ColumnSpec(name="order_id", type="long", required=True),
                ColumnSpec(name="amount", type="double"),
            ]
        ),
        partition_spec=[PartitionField(source_column="day")],
    )
    manager.create_table(config)
    manager.evolve_schema("sales.orders", [SchemaChange.add_column("note", "string")])
    first = manager.write("sales.orders", _orders("2024-01-01", [1, 2]))
    second = manager.write("sales.orders", _orders("2024-01-01", [3]))
    upserted = manager.upsert("sales.orders", _orders("2024-01-01", [3, 4]), join_cols=["order_id"])
    manager.scan("sales.orders", columns=["order_id"])
    compacted = manager.compact("sales.orders", min_input_files=2)
    manager.expire_snapshots("sales.orders", older_than=dt.timedelta(0), retain_last=1)

    names = [s.name for s in spans.get_finished_spans() if s.parent is None]
    assert names == [
        "create sales.orders",
        "evolve sales.orders",
        "write sales.orders",
        "write sales.orders",
        "upsert sales.orders",
        "scan sales.orders",
        "compact sales.orders",
        "expire sales.orders",
    ]
    for span in spans.get_finished_spans():
        assert span.status.status_code is StatusCode.UNSET
        operation = span.name.split(" ")[0]
        _assert_db_span(span, operation, "sales", "orders")

    (create,) = _named(spans, "create sales.orders")
    assert create.attributes["iceberg.created"] is True

    write = _named(spans, "write sales.orders")[0]
    assert write.attributes["iceberg.write_mode"] == "append"
    assert write.attributes["iceberg.snapshot_id"] == first.snapshot_id
    assert write.attributes["iceberg.rows_added"] == 2
    assert write.attributes["iceberg.files_added"] == 1
    assert write.attributes["iceberg.bytes_added"] == first.bytes_added > 0
    assert write.attributes["iceberg.commit_attempts"] == 1
    (commit,) = _children(spans, write)
    _assert_db_span(commit, "commit", "sales", "orders")
    assert commit.attributes["iceberg.commit.attempt"] == 1
    assert commit.attributes["iceberg.snapshot_id"] == first.snapshot_id
    assert _named(spans, "write sales.orders")[1].attributes["iceberg.snapshot_id"] == (
        second.snapshot_id
    )

    (upsert,) = _named(spans, "upsert sales.orders")
    assert upsert.attributes["iceberg.write_mode"] == "upsert"
    assert upsert.attributes["iceberg.snapshot_id"] == upserted.snapshot_id

    (scan,) = _named(spans, "scan sales.orders")
    assert scan.attributes["iceberg.rows"] == 4
    assert scan.attributes["iceberg.snapshot_id"] == upserted.snapshot_id

    (compact,) = _named(spans, "compact sales.orders")
    assert compact.attributes["iceberg.snapshot_id"] == compacted.snapshot_id
    assert compact.attributes["iceberg.files_rewritten"] == compacted.files_rewritten >= 2
    assert compact.attributes["iceberg.files_added"] == compacted.files_added == 1

    (expire,) = _named(spans, "expire sales.orders")
    assert expire.attributes["iceberg.snapshots_expired"] > 0


def _racing_stream(other: IcebergTableManager, schema: pa.Schema, day: str) -> pa.RecordBatchReader:
    """A stream whose producer is slow: another writer appends to the same partition before
    the first batch is ready, so the overwrite started before it conflicts when it commits."""

    def batches() -> Iterator[pa.RecordBatch]:
        other.write("sales.orders", _orders(day, [99]))
        yield from _orders(day, [5, 6]).to_batches()

    return pa.RecordBatchReader.from_batches(schema, batches())


def _overwrite_day(day: str, attempts: int = 8) -> WriteConfig:
    return WriteConfig(
        mode="overwrite",
        row_filter=EqualTo("day", day),
        partition_spec=(PartitionField(source_column="day"),),
        retry=RetryPolicy(max_attempts=attempts, initial_backoff_seconds=0.01),
    )


def test_commit_retries_are_child_spans(
    resource: IcebergCatalogResource,
    manager: IcebergTableManager,
    spans: InMemorySpanExporter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    manager.write("sales.orders", _orders("2024-01-01", [1]), _overwrite_day("2024-01-01"))
    spans.clear()
    caplog.set_level(logging.INFO, logger="floe_dagster_iceberg")
    stream = _racing_stream(resource.get_manager(), _orders("2024-01-01", []).schema, "2024-01-01")

    result = manager.write("sales.orders", stream, _overwrite_day("2024-01-01"))

    assert result.commit_attempts == 2
    (write,) = _named(spans, "write sales.orders")
    assert write.status.status_code is StatusCode.UNSET
    assert write.attributes["iceberg.commit_attempts"] == 2
    assert write.attributes["iceberg.snapshot_id"] == result.snapshot_id
    first, second = sorted(_children(spans, write), key=lambda s: s.start_time)
    for attempt, span in enumerate((first, second), start=1):
        _assert_db_span(span, "commit", "sales", "orders")
        assert span.attributes["iceberg.commit.attempt"] == attempt
    assert first.status.status_code is StatusCode.ERROR
    assert first.attributes["error.type"] == "CommitFailedException"
    assert [e.name for e in first.events] == ["exception"]
    assert first.events[0].attributes["exception.type"].endswith("CommitFailedException")
    assert second.status.status_code is StatusCode.UNSET
    assert second.attributes["iceberg.snapshot_id"] == result.snapshot_id

    messages = [r.getMessage() for r in caplog.records if r.name == "floe_dagster_iceberg"]
    retry = [m for m in messages if m.startswith("iceberg.commit_retry ")]
    assert len(retry) == 1
    assert "table=sales.orders attempt=1/8 error=CommitFailedException backoff_ms=" in retry[0]
    commit = [m for m in messages if m.startswith("iceberg.commit ")]
    assert len(commit) == 2, "the racing writer's append, then the retried overwrite"
    assert commit[1:] == [
        f"iceberg.commit table=sales.orders snapshot_id={result.snapshot_id} "
        "operation=overwrite attempt=2/8 rows_added=2 rows_deleted=2 files_added=1 "
        f"files_deleted=2 bytes_added={result.bytes_added} created=false"
    ]


def test_exhausted_retries_mark_the_operation_failed(
    resource: IcebergCatalogResource, manager: IcebergTableManager, spans: InMemorySpanExporter
) -> None:
    manager.write("sales.orders", _orders("2024-01-01", [1]), _overwrite_day("2024-01-01"))
    spans.clear()
    stream = _racing_stream(resource.get_manager(), _orders("2024-01-01", []).schema, "2024-01-01")

    with pytest.raises(CommitConflictError):
        manager.write("sales.orders", stream, _overwrite_day("2024-01-01", attempts=1))

    (write,) = _named(spans, "write sales.orders")
    assert write.status.status_code is StatusCode.ERROR
    assert write.attributes["error.type"] == "CommitConflictError"
    (event,) = write.events
    assert event.name == "exception"
    assert event.attributes["exception.type"].endswith("CommitConflictError")
    (attempt,) = _children(spans, write)
    assert attempt.status.status_code is StatusCode.ERROR
    assert attempt.attributes["error.type"] == "CommitFailedException"


def test_non_retryable_error_fails_the_span_once(
    manager: IcebergTableManager, spans: InMemorySpanExporter
) -> None:
    with pytest.raises(TableNotFoundError):
        manager.evolve_schema("sales.missing", [SchemaChange.add_column("x", "string")])

    (evolve,) = _named(spans, "evolve sales.missing")
    _assert_db_span(evolve, "evolve", "sales", "missing")
    assert evolve.status.status_code is StatusCode.ERROR
    assert evolve.status.description.startswith("TableNotFoundError")
    assert evolve.attributes["error.type"] == "TableNotFoundError"
    (attempt,) = _children(spans, evolve)
    assert attempt.status.status_code is StatusCode.ERROR
    assert attempt.attributes["iceberg.commit.attempt"] == 1


DAYS = dg.DailyPartitionsDefinition(start_date="2024-01-01", end_date="2024-01-03")


@dg.asset(
    key_prefix=["sales"],
    partitions_def=DAYS,
    metadata={"partition_expr": "day"},
    io_manager_key="iceberg",
)
def orders(context: dg.AssetExecutionContext) -> pa.Table:
    return _orders(context.partition_key, [1, 2, 3])


@dg.asset(
    key_prefix=["sales"],
    io_manager_key="iceberg",
    ins={"orders": dg.AssetIn(key=["sales", "orders"])},
)
def order_count(orders: pa.Table) -> pa.Table:
    return pa.table({"orders": [orders.num_rows]})


def test_io_manager_spans_use_the_resource_tracer_provider(
    tmp_path: Path, spans: InMemorySpanExporter
) -> None:
    catalog = IcebergCatalogResource(
        catalog=EmbeddedCatalogConfig(home=str(tmp_path / "lake")),
        tracer_provider="test_telemetry:tracer_provider",
    )
    instance = dg.DagsterInstance.ephemeral()
    resources = create_iceberg_resources(catalog)
    written = dg.materialize(
        [orders, order_count],
        selection=[orders],
        partition_key="2024-01-01",
        resources=resources,
        instance=instance,
    )
    loaded = dg.materialize(
        [orders, order_count], selection=[order_count], resources=resources, instance=instance
    )
    assert written.success
    assert loaded.success

    (write,) = _named(spans, "write sales.orders")
    assert write.attributes["iceberg.write_mode"] == "overwrite"
    assert write.attributes["iceberg.rows_added"] == 3
    (scan,) = _named(spans, "scan sales.orders")
    assert scan.attributes["iceberg.rows"] == 3
    assert _named(spans, "write sales.order_count")

    # commit log lines reach the Dagster run's log
    messages = [
        record.user_message
        for record in instance.all_logs(written.run_id)
        if record.user_message.startswith("iceberg.commit ")
    ]
    assert len(messages) == 1
    assert messages[0].startswith("iceberg.commit table=sales.orders snapshot_id=")
    assert "attempt=1/8 rows_added=3" in messages[0]


def test_package_tracer_provider_applies_when_none_is_given(
    resource: IcebergCatalogResource, spans: InMemorySpanExporter
) -> None:
    set_tracer_provider(PROVIDER)
    try:
        resource.get_manager().write("sales.events", pa.table({"n": [1]}))
    finally:
        set_tracer_provider(None)
    (write,) = _named(spans, "write sales.events")
    assert write.attributes["iceberg.created"] is True
    spans.clear()
    resource.get_manager().write("sales.events", pa.table({"n": [2]}))
    assert spans.get_finished_spans() == ()


def test_tracer_provider_import_paths() -> None:
    assert resolve_tracer_provider("test_telemetry:tracer_provider") is PROVIDER
    assert resolve_tracer_provider("test_telemetry.PROVIDER") is PROVIDER
    with pytest.raises(Exception, match="could not be imported"):
        resolve_tracer_provider("test_telemetry:nothing_here")
    with pytest.raises(Exception, match="not an OpenTelemetry TracerProvider"):
        resolve_tracer_provider("test_telemetry:DAYS")
