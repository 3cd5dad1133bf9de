"""Credentials given through ``EnvVar`` never appear in logs, exceptions, Dagster metadata and
event logs, OpenLineage events or spans.

One scenario exercises every path that could carry a secret: partitioned writes and a read on
a REST catalog with S3 storage and on a PostgreSQL catalog whose URI holds a password in its
user info and another in its query string, the ``repr`` of the catalog resource and the IO
manager inside a run, a write refused for a wrong type, a refused login (wrong credential), an
outage, and a PostgreSQL catalog (password in the query string) that nothing listens for.
Every surface is then searched for each secret: captured Python logs at DEBUG, stdout/stderr,
every file of the Dagster instance (run storage, event logs, compute logs), the OpenLineage
events written by the real file transport, the finished spans as JSON, and the formatted
exceptions with their chained causes.
"""

from __future__ import annotations

import logging
import traceback
import uuid
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pytest
from infra.ports import free_ports
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
from floe_dagster_iceberg.redaction import is_secret_name, redact

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


@dg.asset(required_resource_keys={"iceberg", "iceberg_catalog"})
def resources_described(context) -> dg.MaterializeResult:
    """What a user's code may print about the resources inside a run: their repr and str."""
    text = "\n".join(
        f"{conversion(context.resources.iceberg_catalog)} / {conversion(context.resources.iceberg)}"
        for conversion in (repr, str)
    )
    context.log.info(text)
    print(text)
    return dg.MaterializeResult(metadata={"resources": text})


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
    pg_query_password = f"pgq-{uuid.uuid4().hex}"
    down_password = f"down-{uuid.uuid4().hex}"
    wrong_secret = f"wrong-{uuid.uuid4().hex}"
    secrets = {
        "S3 / REST secret": server.secret_key,
        "PostgreSQL password": pg_password,
        "PostgreSQL password in the query string": pg_query_password,
        "password of an unreachable PostgreSQL": down_password,
        "wrong secret": wrong_secret,
    }

    # PostgreSQL trusts local socket connections, so the passwords are sent but not needed;
    # libpq takes a password from the user info or from the query string (which wins).
    user, rest = postgres_server.sqlalchemy_uri(postgres_database).split("://", 1)[1].split("@", 1)
    pg_uri = f"postgresql+psycopg2://{user}:{pg_password}@{rest}&password={pg_query_password}"
    (closed_port,) = free_ports(1)
    down_uri = (
        f"postgresql+psycopg2://{user}@127.0.0.1:{closed_port}/{postgres_database}"
        f"?connect_timeout=5&password={down_password}"
    )
    monkeypatch.setenv("FLOE_TEST_REST_CREDENTIAL", f"{server.access_key}:{server.secret_key}")
    monkeypatch.setenv("FLOE_TEST_WRONG_CREDENTIAL", f"{server.access_key}:{wrong_secret}")
    monkeypatch.setenv("FLOE_TEST_S3_SECRET", server.secret_key)
    monkeypatch.setenv("FLOE_TEST_PG_URI", pg_uri)
    monkeypatch.setenv("FLOE_TEST_PG_DOWN_URI", down_uri)
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
    postgres_down = _resource(
        "floe",
        SqlCatalogConfig(uri=dg.EnvVar("FLOE_TEST_PG_DOWN_URI"), warehouse=warehouse.as_uri()),
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
        # The resources as a user's code inside a run sees them, EnvVars resolved.
        described = []
        for resource in (rest, postgres):
            result = dg.materialize(
                [resources_described],
                resources=create_iceberg_resources(resource, namespace="secrets"),
                instance=instance,
            )
            metadata = result.asset_materializations_for_node("resources_described")[0].metadata
            described.append(metadata["resources"].value)
        assert "IcebergIOManager(catalog=IcebergCatalogResource(" in described[1]
        assert "password=***" in described[1]
        errors.extend(described)
        # A write refused for its data, a refused login, an outage.
        errors.append(_failed_step_error(run(rest, "a", {"bad": "type"})))
        errors.append(_failed_step_error(run(wrong, "a")))
        server.stop()
        errors.append(_failed_step_error(run(rest, "b")))
        # A PostgreSQL catalog that does not answer, password in its query string.
        errors.append(_failed_step_error(run(postgres_down, "a")))
        # The same failures through the engine, outside Dagster, with their chained causes.
        for resource, data in (
            (rest, pa.table({"part": ["a"], "id": ["x"]})),
            (postgres, pa.table({"part": ["a"], "id": ["x"]})),
            (postgres_down, pa.table({"part": ["a"], "id": [1]})),
        ):
            with pytest.raises(IcebergError) as raised:
                resource.get_manager().write("secrets.events", data)
            errors.append("".join(traceback.format_exception(raised.value)))
            errors.append(repr(raised.value))
        flush_lineage(10)

    assert any("127.0.0.1" in e and "CatalogConnectionError" in e for e in errors), errors
    assert any(f"127.0.0.1:{closed_port}" in e and "password=***" in e for e in errors), errors
    assert any("SchemaEvolutionError" in e for e in errors)
    spans = [span.to_json() for span in tracing.EXPORTER.get_finished_spans()]
    assert any('"error.type"' in span for span in spans)
    lineage_events = lineage_file.read_text()
    assert '"eventType": "FAIL"' in lineage_events
    assert '"eventType": "COMPLETE"' in lineage_events
    # The PostgreSQL writes completed: their catalog facet and symlink name the database.
    assert f"/{postgres_database}?host=" in lineage_events
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


CREDENTIAL_PROPERTIES = [
    "adls.account-key",
    "adls.connection-string",
    "adls.sas-token",
    "adls.token",
    "gcs.oauth2.token",
    "s3.session-token",
    "s3.secret-access-key",
    "s3.access-key-id",
    "s3.sse.key",
    "client.session-token",
    "token",
    "credential",
    "oauth2.client_secret",
    "header.Authorization",
]


@pytest.mark.parametrize("name", CREDENTIAL_PROPERTIES)
def test_credential_like_properties_are_hidden(name):
    """Any credential-like property is masked in repr and in error messages that echo it."""
    from floe_dagster_iceberg.engine.outages import connection_error

    secret = f"v{uuid.uuid4().hex}=="
    assert is_secret_name(name)
    resource = IcebergCatalogResource(
        catalog=SqlCatalogConfig(uri="sqlite:////tmp/x.db", warehouse="file:///tmp/wh"),
        properties={name: secret, "py-io-impl": "pyiceberg.io.pyarrow.PyArrowFileIO"},
    )
    for text in (repr(resource), str(resource)):
        assert secret not in text
        assert f"'{name}': '***'" in text
        assert "PyArrowFileIO" in text, "other properties are shown"
    # A store that echoes the value it was given, e.g. a refused connection string.
    echoed = OSError(f"Connection refused by the store configured with '{secret}'")
    error = connection_error(echoed, resource.catalog_properties(), "writing table 'a.b'")
    assert error is not None
    assert secret not in str(error)
    assert "***" in str(error)


@pytest.mark.parametrize(
    "parameter",
    [
        "password",
        "sslpassword",
        "secret",
        "client_secret",
        "token",
        "access_token",
        "key",
        "sig",
        "signature",
        "credential",
        "X-Amz-Credential",
        "X-Amz-Signature",
        "X-Amz-Security-Token",
        "apiKey",
    ],
)
def test_credential_like_query_parameters_are_hidden(parameter):
    secret = f"v{uuid.uuid4().hex}"
    uri = f"https://user:pw-{secret}@store.example.com/a/b?host=h&{parameter}={secret}&sp=r"
    for text in (redact(f"GET {uri} failed"), repr(SqlCatalogConfig(uri=uri, warehouse="w"))):
        assert secret not in text
        assert f"{parameter}=***" in text
        assert "user:***@store.example.com/a/b?host=h" in text
        assert text.count("&sp=r") == 1


def test_a_malformed_uri_does_not_leak_its_password(tmp_path):
    """A typo in the URI makes the driver echo it back: the password is still hidden."""
    password = f"pw-{uuid.uuid4().hex}"
    resource = IcebergCatalogResource(
        catalog=SqlCatalogConfig(
            uri=f"postgresql+psycopg2:/app:{password}@db:5432/iceberg",
            warehouse=tmp_path.as_uri(),
        )
    )
    with pytest.raises(IcebergError) as raised:
        resource.load_catalog()
    assert "postgresql+psycopg2:/app" in str(raised.value)
    assert password not in "".join(traceback.format_exception(raised.value))
    assert password not in repr(resource)
