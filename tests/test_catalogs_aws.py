"""AWS catalogs: Glue on a moto server (Glue + S3 APIs), S3 Tables by its properties and a
SigV4-signed request reaching a local endpoint."""

from __future__ import annotations

import json
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from infra.catalogs import unique_name
from infra.moto import ACCESS_KEY, REGION, SECRET_KEY, WAREHOUSE_BUCKET, MotoServer, moto_server
from infra.ports import LOOPBACK
from reliability.workers import PART_SPEC, partition_rows, write_partition

from floe_dagster_iceberg import (
    GlueCatalogConfig,
    IcebergCatalogResource,
    IcebergError,
    S3StorageConfig,
    S3TablesCatalogConfig,
    WriteConfig,
    create_iceberg_resources,
)
from floe_dagster_iceberg.redaction import redact_properties

__all__ = ["moto_server"]  # the session fixture, imported for this module's tests

TABLE_BUCKET_ARN = "arn:aws:s3tables:eu-west-1:123456789012:bucket/lake"
WRITERS = 4
ROWS = 200


def _glue_resource(moto: MotoServer) -> IcebergCatalogResource:
    return IcebergCatalogResource(
        catalog=GlueCatalogConfig(
            region=REGION,
            warehouse=f"s3://{WAREHOUSE_BUCKET}/{unique_name('wh')}",
            access_key_id=ACCESS_KEY,
            secret_access_key=SECRET_KEY,
            endpoint=moto.endpoint,
        ),
        storage=S3StorageConfig(endpoint=moto.endpoint, path_style_access=True),
    )


@pytest.fixture
def glue(moto_server: MotoServer) -> IcebergCatalogResource:
    """A Glue catalog on the session's moto server with its own warehouse prefix."""
    return _glue_resource(moto_server)


# -- Glue on moto -----------------------------------------------------------------------------


def test_glue_creates_and_writes_through_the_io_manager(glue, namespace):
    @dg.asset(key_prefix=[namespace], io_manager_key="iceberg")
    def orders() -> pa.Table:
        return pa.table({"id": pa.array([1, 2, 3], pa.int64()), "item": ["a", "b", "c"]})

    @dg.asset(key_prefix=[namespace], io_manager_key="iceberg")
    def order_count(orders: pa.Table) -> pa.Table:
        return pa.table({"n": pa.array([orders.num_rows], pa.int64())})

    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [orders, order_count], resources=create_iceberg_resources(glue), instance=instance
        )
    assert result.success
    assert glue.catalog_type == "glue"
    table = glue.load_catalog().load_table(f"{namespace}.orders")
    assert table.metadata_location.startswith(f"s3://{WAREHOUSE_BUCKET}/")
    assert sorted(table.scan().to_arrow().column("id").to_pylist()) == [1, 2, 3]
    assert glue.get_manager().scan(f"{namespace}.order_count").column("n").to_pylist() == [3]


def test_glue_concurrent_partition_writes_commit_every_row_once(glue, namespace):
    """Writers with their own Glue clients overwrite different partitions at once; Glue's
    table version check turns lost races into retries, so every row lands exactly once."""
    properties = glue.catalog_properties()
    table = f"{namespace}.events"
    seed = WriteConfig(mode="append", partition_spec=PART_SPEC)
    glue.get_manager().write(table, partition_rows("seed", 1, "seed"), seed)
    barrier = threading.Barrier(WRITERS)
    args = [(properties, table, f"p{i}", ROWS, f"w{i}") for i in range(WRITERS)]
    with ThreadPoolExecutor(WRITERS) as pool:
        futures = [pool.submit(write_partition, *a, start=lambda: barrier.wait(60)) for a in args]
        results = [future.result(timeout=240) for future in futures]

    rows = glue.get_manager().scan(table)
    keys = Counter(zip(rows.column("part").to_pylist(), rows.column("id").to_pylist(), strict=True))
    assert rows.num_rows == WRITERS * ROWS + 1
    assert max(keys.values()) == 1
    for i in range(WRITERS):
        part = rows.filter(pc.equal(rows.column("part"), f"p{i}"))
        assert set(part.column("writer").to_pylist()) == {f"w{i}"}
    snapshots = glue.get_manager().snapshots(table)
    assert len(snapshots) == WRITERS + 1
    print(f"\nGlue on moto: commit attempts {sorted(r['attempts'] for r in results)}")


def test_glue_maintenance_keeps_rows(glue, namespace):
    table = f"{namespace}.small_files"
    manager = glue.get_manager()
    for batch in range(4):
        manager.write(table, partition_rows("a", 10, f"w{batch}"), WriteConfig(mode="append"))
    before = sorted(manager.scan(table).to_pylist(), key=repr)

    compacted = manager.compact(table)
    expired = manager.expire_snapshots(table, older_than=timedelta(0), retain_last=1)

    assert (compacted.files_rewritten, compacted.files_added) == (4, 1)
    assert len(expired.expired_snapshot_ids) == 4
    assert sorted(manager.scan(table).to_pylist(), key=repr) == before
    assert len(manager.snapshots(table)) == 1


# -- typed configs ----------------------------------------------------------------------------


def test_glue_config_properties():
    config = GlueCatalogConfig(
        region="eu-west-1",
        warehouse="s3://lake/warehouse",
        catalog_id="123456789012",
        profile_name="analytics",
        endpoint="https://glue.eu-west-1.amazonaws.com",
    )
    assert config.to_properties() == {
        "type": "glue",
        "warehouse": "s3://lake/warehouse",
        "glue.id": "123456789012",
        "glue.endpoint": "https://glue.eu-west-1.amazonaws.com",
        "client.region": "eu-west-1",
        "client.profile-name": "analytics",
    }
    assert GlueCatalogConfig().to_properties() == {"type": "glue"}


def test_s3tables_config_properties(monkeypatch):
    config = S3TablesCatalogConfig(table_bucket_arn=TABLE_BUCKET_ARN)
    assert config.to_properties() == {
        "type": "rest",
        "uri": "https://s3tables.eu-west-1.amazonaws.com/iceberg",
        "warehouse": TABLE_BUCKET_ARN,
        "rest.sigv4-enabled": "true",
        "rest.signing-name": "s3tables",
        "rest.signing-region": "eu-west-1",
        "client.region": "eu-west-1",
    }
    resource = IcebergCatalogResource(catalog=config)
    assert resource.catalog_type == "rest"
    with pytest.raises(IcebergError, match=r"not a table bucket ARN.*set 'region'"):
        S3TablesCatalogConfig(table_bucket_arn="lake").to_properties()
    monkeypatch.setenv("TEST_TABLE_BUCKET_ARN", TABLE_BUCKET_ARN.replace("eu-west-1", "us-east-2"))
    from_env = S3TablesCatalogConfig(table_bucket_arn=dg.EnvVar("TEST_TABLE_BUCKET_ARN"))
    assert from_env.to_properties()["rest.signing-region"] == "us-east-2"


def test_aws_secrets_are_redacted(monkeypatch):
    monkeypatch.setenv("TEST_AWS_SECRET", "aws-secret-value-123")
    monkeypatch.setenv("TEST_AWS_TOKEN", "aws-session-token-456")
    resources = [
        IcebergCatalogResource(
            catalog=GlueCatalogConfig(
                region=REGION,
                access_key_id="AKIAFLOEEXAMPLE",
                secret_access_key=dg.EnvVar("TEST_AWS_SECRET"),
                session_token=dg.EnvVar("TEST_AWS_TOKEN"),
            )
        ),
        IcebergCatalogResource(
            catalog=S3TablesCatalogConfig(
                table_bucket_arn=TABLE_BUCKET_ARN,
                access_key_id="AKIAFLOEEXAMPLE",
                secret_access_key=dg.EnvVar("TEST_AWS_SECRET"),
                session_token=dg.EnvVar("TEST_AWS_TOKEN"),
            )
        ),
    ]
    for resource in resources:
        initialized = resource.process_config_and_initialize()
        properties = initialized.catalog_properties()
        assert properties["client.secret-access-key"] == "aws-secret-value-123"
        shown = repr(initialized) + str(redact_properties(properties))
        for secret in ("AKIAFLOEEXAMPLE", "aws-secret-value-123", "aws-session-token-456"):
            assert secret not in shown


def test_missing_boto3_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "boto3", None)  # what Python does for an absent package
    with pytest.raises(IcebergError, match=r"floe-dagster-iceberg\[glue\]"):
        IcebergCatalogResource(catalog=GlueCatalogConfig(region=REGION)).load_catalog()
    with pytest.raises(IcebergError, match=r"floe-dagster-iceberg\[s3tables\]"):
        S3TablesCatalogConfig(table_bucket_arn=TABLE_BUCKET_ARN).to_properties()


# -- S3 Tables: a signed request reaches the endpoint -----------------------------------------


class _RecordingHandler(BaseHTTPRequestHandler):
    """Answers every GET as an empty Iceberg REST catalog and records what it was sent."""

    requests: list[tuple[str, dict[str, str]]]

    def do_GET(self) -> None:
        self.server.requests.append((self.path, dict(self.headers)))  # type: ignore[attr-defined]
        path = self.path.split("?")[0]
        body = {"namespaces": []} if path.endswith("/namespaces") else {}
        if path.endswith("/v1/config"):
            body = {"defaults": {}, "overrides": {}}
        payload = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def recording_endpoint() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer((LOOPBACK, 0), _RecordingHandler)
    server.requests = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def test_s3tables_requests_are_signed_for_s3tables(recording_endpoint):
    port = recording_endpoint.server_address[1]
    resource = IcebergCatalogResource(
        catalog=S3TablesCatalogConfig(
            table_bucket_arn=TABLE_BUCKET_ARN,
            endpoint=f"http://{LOOPBACK}:{port}/iceberg",
            access_key_id="AKIAFLOEEXAMPLE",
            secret_access_key="floe-example-secret",
        )
    )
    catalog = resource.load_catalog()
    assert catalog.list_namespaces() == []

    requests = recording_endpoint.requests
    paths = [path.split("?")[0] for path, _ in requests]
    assert paths == ["/iceberg/v1/config", "/iceberg/v1/namespaces"]
    assert "warehouse=arn%3Aaws%3As3tables%3Aeu-west-1" in requests[0][0]
    for _, headers in requests:
        authorization = headers["Authorization"]
        assert authorization.startswith("AWS4-HMAC-SHA256 Credential=AKIAFLOEEXAMPLE/")
        assert "/eu-west-1/s3tables/aws4_request" in authorization
        assert "Signature=" in authorization
        assert "X-Amz-Date" in headers
