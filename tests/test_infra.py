"""The test infrastructure itself: every catalog kind works end to end with plain PyIceberg."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap

import pyarrow as pa
import pytest
from infra.catalogs import CATALOG_NAME, load_test_catalog
from infra.ports import LOOPBACK
from infra.seaweedfs import SeaweedFS, SeaweedFSStartError
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.transforms import IdentityTransform
from pyiceberg.types import LongType, NestedField, StringType

SCHEMA = Schema(
    NestedField(1, "id", LongType(), required=False),
    NestedField(2, "region", StringType(), required=False),
)
SPEC = PartitionSpec(PartitionField(2, 1000, IdentityTransform(), "region"))
ROWS = pa.table(
    {"id": pa.array([1, 2, 3], pa.int64()), "region": pa.array(["eu", "us", "eu"], pa.string())}
)


def _create_table(catalog, namespace: str, name: str = "events"):
    catalog.create_namespace(namespace)
    return catalog.create_table(f"{namespace}.{name}", schema=SCHEMA, partition_spec=SPEC)


def test_catalog_round_trip(catalog, catalog_kind, namespace, warehouse_files):
    table = _create_table(catalog, namespace)
    table.append(ROWS)

    reloaded = catalog.load_table(f"{namespace}.events")
    assert reloaded.scan().to_arrow().sort_by("id").equals(ROWS)
    assert (namespace,) in catalog.list_namespaces()

    files = warehouse_files(reloaded)
    data_files = reloaded.inspect.data_files()
    assert data_files.num_rows == 2  # one file per region
    for path, size in zip(
        data_files["file_path"].to_pylist(),
        data_files["file_size_in_bytes"].to_pylist(),
        strict=True,
    ):
        assert files.get(path) == size, f"{path} missing or wrong size in {sorted(files)}"
    assert reloaded.metadata_location in files
    expected_scheme = "s3://" if catalog_kind == "rest" else "file://"
    assert all(path.startswith(expected_scheme) for path in files)


def test_catalog_properties_are_plain_json(catalog_properties, catalog_kind):
    assert catalog_kind in ("sqlite", "postgres", "rest")
    assert all(isinstance(v, str) for v in catalog_properties.values())
    assert json.loads(json.dumps(catalog_properties)) == catalog_properties


def test_s3_warehouse_for_sql_catalog(s3_sql_catalog_properties, seaweedfs, namespace):
    catalog = load_test_catalog(s3_sql_catalog_properties)
    table = _create_table(catalog, namespace)
    table.append(ROWS)

    assert table.location().startswith(s3_sql_catalog_properties["warehouse"] + "/")
    objects = seaweedfs.list_objects(table.location())
    assert table.metadata_location in objects
    assert sum(path.endswith(".parquet") for path in objects) == 2
    assert load_test_catalog(s3_sql_catalog_properties).load_table(
        f"{namespace}.events"
    ).scan().to_arrow().num_rows == len(ROWS)


def test_seaweedfs_restart_and_crash_keep_data(seaweedfs_factory, namespace):
    server: SeaweedFS = seaweedfs_factory()
    properties = server.rest_catalog_properties()
    catalog = load_test_catalog(properties)
    table = _create_table(catalog, namespace)
    table.append(ROWS)
    files_before = server.list_objects(table.location())
    ports_before = server.ports

    server.restart()
    assert server.ports == ports_before
    assert server.rest_catalog_properties() == properties
    # A catalog handle opened before the restart keeps working (its token stays valid).
    table = catalog.load_table(f"{namespace}.events")
    table.append(ROWS)

    server.pause()
    with pytest.raises(OSError, match="timed out"):
        server.rest_token(timeout=0.5)
    server.resume()
    assert server.rest_token()

    server.kill()
    assert not server.running
    with pytest.raises(Exception):  # noqa: B017, PT011 - the endpoint is simply gone
        load_test_catalog(properties).load_table(f"{namespace}.events")
    server.start()

    scanned = load_test_catalog(properties).load_table(f"{namespace}.events").scan().to_arrow()
    assert scanned.num_rows == 2 * len(ROWS)
    files_after = server.list_objects(table.location())
    assert set(files_before) < set(files_after)
    assert len(server.start_seconds) == 3


def test_seaweedfs_start_failure_reports_log(tmp_path):
    server = SeaweedFS(tmp_path / "weed", startup_timeout=30)
    blocker = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        blocker.bind((LOOPBACK, server.ports.s3))
        blocker.listen()
        with pytest.raises(SeaweedFSStartError) as failure:
            server.start()
        message = str(failure.value)
        assert "weed.log" in message
        assert str(server.ports.s3) in message
        assert not server.running
    finally:
        blocker.close()
        server.close()


_SUBPROCESS_WRITER = textwrap.dedent(
    """
    import json, sys
    import pyarrow as pa
    from pyiceberg.catalog import load_catalog

    request = json.loads(sys.stdin.read())
    catalog = load_catalog(request["name"], **request["properties"])
    table = catalog.load_table(request["table"])
    table.append(pa.table({"id": pa.array([10, 11], pa.int64()),
                           "region": pa.array(["ap", "ap"], pa.string())}))
    print(json.dumps({"rows": table.scan().to_arrow().num_rows}))
    """
)


def test_subprocess_opens_same_postgres_catalog(postgres_catalog_properties, namespace):
    catalog = load_test_catalog(postgres_catalog_properties)
    _create_table(catalog, namespace).append(ROWS)

    request = {
        "name": CATALOG_NAME,
        "properties": postgres_catalog_properties,
        "table": f"{namespace}.events",
    }
    result = subprocess.run(
        [sys.executable, "-c", _SUBPROCESS_WRITER],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"rows": len(ROWS) + 2}

    rows = catalog.load_table(f"{namespace}.events").scan().to_arrow()
    assert sorted(rows["id"].to_pylist()) == [1, 2, 3, 10, 11]


def test_postgres_databases_are_isolated(postgres_server, postgres_catalog_properties, namespace):
    catalog = load_test_catalog(postgres_catalog_properties)
    catalog.create_namespace(namespace)

    other_database = postgres_server.create_database()
    try:
        other = load_test_catalog(
            {**postgres_catalog_properties, "uri": postgres_server.sqlalchemy_uri(other_database)}
        )
        assert other.list_namespaces() == []
        other.engine.dispose()
    finally:
        postgres_server.drop_database(other_database)
