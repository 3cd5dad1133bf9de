"""Credentials given through ``EnvVar`` never appear in logs, exceptions, Dagster metadata and
event logs, OpenLineage events or spans.

One scenario exercises every path that could carry a secret: partitioned writes and a read on
a REST catalog with S3 storage and on a PostgreSQL catalog whose URI holds a password, a write
refused for a wrong type, a refused login (wrong credential) and an outage. Every surface is
then searched for each secret: captured Python logs at DEBUG, stdout/stderr, every file of the
Dagster instance (run storage, event logs, compute logs), the OpenLineage events written by the
real file transport, the finished spans as JSON, and the formatted exceptions with their
chained causes.
"""

from __future__ import annotations

import logging
import traceback
import uuid
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pytest
from infra.seaweedfs import SeaweedFS
from reliability import tracing

from floe_dagster_iceberg import (
    IcebergCatalogResource,
    IcebergError,
    RestCatalogConfig,
    S3StorageConfig,
    SqlCatalogConfig,
    create_iceberg_resources,
)
from floe_dagster_iceberg.lineage import LineageConfig, flush_lineage

PARTITIONS = dg.StaticPartitionsDefinition(["a", "b"])


@dg.asset(partitions_def=PARTITIONS, io_manager_key="iceberg", metadata={"partition_expr": "part"})
def events(context) -> pa.Table:
    part = context.partition_key
    if context.run.tags.get("bad") == "type":
        return pa.table({"part": [part], "id": ["not a number"]})
    return pa.table({"part": [part] * 3, "id": pa.array([1, 2, 3], pa.int64())})


@dg.asset(partitions_def=PARTITIONS, io_manager_key="iceberg", metadata={"partition_expr": "part"})
def totals(events: pa.Table) -> pa.Table:
    return pa.table({"part": events.column("part").unique(), "n": [events.num_rows]})


@pytest.fixture
def secret_server():
    """A private SeaweedFS whose S3 secret (and REST client secret) is random."""
    server = SeaweedFS(secret_key=f"s3-{uuid.uuid4().hex}")
    try:
        server.start()
    except Exception as error:
        server.close()
        pytest.fail(f"SeaweedFS did not start: {error}", pytrace=False)
    try:
        yield server
    finally:
        server.close()


def _resource(name: str, catalog, storage=None, lineage_file: Path | None = None):
    return IcebergCatalogResource(
        name=name,
        catalog=catalog,
        storage=storage,
        openlineage=LineageConfig(
            enabled=True,
            transport={"type": "file", "log_file_path": str(lineage_file), "append": True},
        ),
        tracer_provider="reliability.tracing:PROVIDER",
    )


def _failed_step_error(result: dg.ExecuteInProcessResult) -> str:
    failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert failures, "the run was meant to fail"
    return failures[0].event_specific_data.error.to_string()


def test_envvar_secrets_never_leak(
    secret_server, postgres_server, postgres_database, tmp_path, monkeypatch, caplog, capfd
):
    server = secret_server
    pg_password = f"pg-{uuid.uuid4().hex}"
    wrong_secret = f"wrong-{uuid.uuid4().hex}"
    secrets = {"S3 / REST secret": server.secret_key, "PostgreSQL password": pg_password}
    secrets["wrong secret"] = wrong_secret

    # PostgreSQL trusts local socket connections, so the password is sent but not needed.
    user, rest = postgres_server.sqlalchemy_uri(postgres_database).split("://", 1)[1].split("@", 1)
    pg_uri = f"postgresql+psycopg2://{user}:{pg_password}@{rest}"
    monkeypatch.setenv("FLOE_TEST_REST_CREDENTIAL", f"{server.access_key}:{server.secret_key}")
    monkeypatch.setenv("FLOE_TEST_WRONG_CREDENTIAL", f"{server.access_key}:{wrong_secret}")
    monkeypatch.setenv("FLOE_TEST_S3_SECRET", server.secret_key)
    monkeypatch.setenv("FLOE_TEST_PG_URI", pg_uri)
    caplog.set_level(logging.DEBUG)
    tracing.EXPORTER.clear()
    lineage_file = tmp_path / "openlineage.jsonl"
    warehouse = tmp_path / "pg-warehouse"
    warehouse.mkdir()

    storage = S3StorageConfig(
        endpoint=server.s3_endpoint,
        region="us-east-1",
        access_key_id=server.access_key,
        secret_access_key=dg.EnvVar("FLOE_TEST_S3_SECRET"),
    )

    def rest_catalog(variable: str) -> RestCatalogConfig:
        return RestCatalogConfig(
            uri=server.rest_uri, warehouse=server.table_bucket, credential=dg.EnvVar(variable)
        )

    rest = _resource("lake", rest_catalog("FLOE_TEST_REST_CREDENTIAL"), storage, lineage_file)
    wrong = _resource("lake", rest_catalog("FLOE_TEST_WRONG_CREDENTIAL"), storage, lineage_file)
    postgres = _resource(
        "floe",
        SqlCatalogConfig(uri=dg.EnvVar("FLOE_TEST_PG_URI"), warehouse=warehouse.as_uri()),
        lineage_file=lineage_file,
    )
    errors: list[str] = []
    dagster_home = tmp_path / "dagster"
    dagster_home.mkdir()
    with dg.instance_for_test(temp_dir=str(dagster_home)) as instance:

        def run(resource, partition: str, tags: dict[str, str] | None = None):
            return dg.materialize(
                [events, totals],
                partition_key=partition,
                resources=create_iceberg_resources(resource, namespace="secrets"),
                instance=instance,
                tags=tags,
                raise_on_error=False,
            )

        # Writes, metadata, reads: on REST + S3 and on PostgreSQL.
        for resource in (rest, postgres):
            for partition in ("a", "b"):
                assert run(resource, partition).success
        # A write refused for its data, a refused login, an outage.
        errors.append(_failed_step_error(run(rest, "a", {"bad": "type"})))
        errors.append(_failed_step_error(run(wrong, "a")))
        server.stop()
        errors.append(_failed_step_error(run(rest, "b")))
        # The same failures through the engine, outside Dagster, with their chained causes.
        for resource, data in (
            (rest, pa.table({"part": ["a"], "id": ["x"]})),
            (postgres, pa.table({"part": ["a"], "id": ["x"]})),
        ):
            with pytest.raises(IcebergError) as raised:
                resource.get_manager().write("secrets.events", data)
            errors.append("".join(traceback.format_exception(raised.value)))
            errors.append(repr(raised.value))
        flush_lineage(10)

    assert any("127.0.0.1" in e and "CatalogConnectionError" in e for e in errors), errors
    assert any("SchemaEvolutionError" in e for e in errors)
    spans = [span.to_json() for span in tracing.EXPORTER.get_finished_spans()]
    assert any('"error.type"' in span for span in spans)
    lineage_events = lineage_file.read_text()
    assert '"eventType": "FAIL"' in lineage_events
    assert '"eventType": "COMPLETE"' in lineage_events
    captured = capfd.readouterr()
    instance_files = {
        str(path): path.read_bytes() for path in dagster_home.rglob("*") if path.is_file()
    }
    assert any(path.endswith(".db") for path in instance_files)

    surfaces: dict[str, bytes] = {
        "python logs": caplog.text.encode(),
        "stdout": captured.out.encode(),
        "stderr": captured.err.encode(),
        "exceptions": "\n".join(errors).encode(),
        "spans": "\n".join(spans).encode(),
        "openlineage events": lineage_events.encode(),
        **{f"Dagster instance file {path}": data for path, data in instance_files.items()},
    }
    leaks = [
        f"{what} in {surface}"
        for surface, data in surfaces.items()
        for what, secret in secrets.items()
        if secret.encode() in data
    ]
    assert not leaks, leaks
