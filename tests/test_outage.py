"""Outages of the REST catalog and of S3, and commits whose outcome is unknown.

Outages are real: a private SeaweedFS (S3 + Iceberg REST catalog) is stopped in the middle of a
run or of a write and started again. An ambiguous commit (a 5xx answer to a commit request, or
``CommitStateUnknownException``) cannot be produced on demand by a healthy catalog, so it is
injected: through an HTTP proxy in front of the real REST catalog, or by wrapping a SQL
catalog's commit; in both directions (the commit landed, or it did not).
"""

from __future__ import annotations

import pyarrow as pa
import pytest
from dagster import RetryPolicy, asset, materialize
from infra.catalogs import (
    dispose_catalog,
    initialise_sql_catalog,
    load_test_catalog,
    sqlite_catalog_properties_for,
    unique_name,
)
from pyiceberg.exceptions import CommitStateUnknownException
from pyiceberg.table.update import AddSnapshotUpdate
from reliability.proxy import RestFaultProxy

from floe_dagster_iceberg import (
    CatalogConnectionError,
    IcebergCatalogResource,
    RestCatalogConfig,
    S3StorageConfig,
    create_iceberg_resources,
)
from floe_dagster_iceberg.engine.config import WriteConfig
from floe_dagster_iceberg.engine.manager import IcebergTableManager
from floe_dagster_iceberg.engine.outages import endpoint_of


def _rows(start: int, count: int, tag: str) -> pa.Table:
    ids = range(start, start + count)
    return pa.table({"id": pa.array(ids, pa.int64()), "tag": pa.array([tag] * count)})


def _assert_names_endpoint_without_secrets(message: str, endpoint: str, secrets: list[str]) -> None:
    assert endpoint in message, message
    for secret in secrets:
        assert secret not in message, f"a secret leaked into: {message}"


# ---------------------------------------------------------------------- outages


def test_rest_catalog_outage_fails_the_step_and_the_retry_policy_finishes_the_run(
    seaweedfs_factory, namespace
):
    """The catalog goes away while an asset computes; the retry after it is back succeeds."""
    server = seaweedfs_factory()
    properties = server.rest_catalog_properties()
    catalog = IcebergCatalogResource(
        catalog=RestCatalogConfig(
            uri=server.rest_uri, warehouse=server.table_bucket, credential=properties["credential"]
        ),
        storage=S3StorageConfig(
            endpoint=server.s3_endpoint,
            region=properties["s3.region"],
            access_key_id=server.access_key,
            secret_access_key=server.secret_key,
        ),
    )
    attempts: list[int] = []

    @asset(io_manager_key="iceberg", metadata={"namespace": namespace})
    def first() -> pa.Table:
        return _rows(0, 10, "first")

    @asset(
        deps=[first],
        io_manager_key="iceberg",
        metadata={"namespace": namespace},
        retry_policy=RetryPolicy(max_retries=2),
    )
    def second(context) -> pa.Table:
        attempts.append(context.retry_number)
        if context.retry_number == 0:
            server.stop()  # the outage starts while the step runs, before its output is stored
        else:
            server.start()  # the catalog is back for the retry
        return _rows(100, 20, "second")

    result = materialize([first, second], resources=create_iceberg_resources(catalog))
    assert result.success
    assert attempts == [0, 1]
    retries = [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    assert len(retries) == 1
    error = retries[0].event_specific_data.error
    assert error.cause.cls_name == "CatalogConnectionError"
    _assert_names_endpoint_without_secrets(
        error.to_string(), f"127.0.0.1:{server.ports.iceberg}", [server.secret_key]
    )

    manager = catalog.get_manager()
    rows = manager.scan(f"{namespace}.second")
    assert sorted(rows.column("id").to_pylist()) == list(range(100, 120))
    assert len(manager.snapshots(f"{namespace}.second")) == 1
    assert manager.count(f"{namespace}.first") == 10


def _stop_before_data_commit(manager: IcebergTableManager, server) -> list[int]:
    """Stop ``server`` right before the manager's next data commit request is sent."""
    commit_table = manager.catalog.commit_table
    stopped = []

    def stop_then_commit(table, requirements, updates):
        if not stopped and any(isinstance(u, AddSnapshotUpdate) for u in updates):
            server.stop()
            stopped.append(1)
        return commit_table(table, requirements, updates)

    manager.catalog.commit_table = stop_then_commit
    return stopped


@pytest.mark.parametrize("catalog_kind", ["rest", "sqlite+s3"])
def test_outage_between_data_files_and_commit_commits_nothing(
    seaweedfs_factory, tmp_path, catalog_kind
):
    """S3 and the REST catalog stop after the data files are written, before the commit."""
    server = seaweedfs_factory()
    if catalog_kind == "rest":
        properties = server.rest_catalog_properties()
        endpoint = f"127.0.0.1:{server.ports.iceberg}"
    else:
        sqlite = sqlite_catalog_properties_for(tmp_path)["uri"]
        properties = server.sql_catalog_properties(sqlite, prefix=unique_name("wh"))
        initialise_sql_catalog(properties)
        endpoint = endpoint_of(server.s3_endpoint)
    table = f"{unique_name('t')}.events"
    loaded = load_test_catalog(properties)
    manager = IcebergTableManager(loaded)
    try:
        manager.write(table, _rows(0, 10, "before"))
        before = manager.load_table(table).metadata_location
        stopped = _stop_before_data_commit(manager, server)
        with pytest.raises(CatalogConnectionError) as raised:
            manager.write(table, _rows(10, 10, "during"), WriteConfig(mode="append"))
        assert stopped == [1]
        _assert_names_endpoint_without_secrets(str(raised.value), endpoint, [server.secret_key])
        assert raised.value.__cause__ is None  # no raw traceback from inside a dependency

        server.start()
        assert manager.load_table(table).metadata_location == before
        assert manager.count(table) == 10
        manager.write(table, _rows(10, 10, "after"), WriteConfig(mode="append"))
        ids = manager.scan(table).column("id").to_pylist()
        assert sorted(ids) == list(range(20))
    finally:
        dispose_catalog(loaded)


def test_reads_during_an_outage_name_the_endpoint(seaweedfs_factory, namespace):
    server = seaweedfs_factory()
    properties = server.rest_catalog_properties()
    manager = IcebergTableManager(load_test_catalog(properties))
    table = f"{namespace}.events"
    manager.write(table, _rows(0, 5, "x"))
    server.stop()
    for read in (manager.scan, manager.count, manager.load_table, manager.table_exists):
        with pytest.raises(CatalogConnectionError) as raised:
            read(table)
        _assert_names_endpoint_without_secrets(
            str(raised.value), f"127.0.0.1:{server.ports.iceberg}", [server.secret_key]
        )
    server.start()
    assert manager.count(table) == 5


# ---------------------------------------------------------------------- ambiguous commits


@pytest.mark.parametrize("fault", ["landed", "lost", "dropped"])
def test_ambiguous_rest_commit_is_resolved_by_checking_the_table(
    rest_catalog_properties, namespace, fault
):
    """A 502 or 504 answer to a commit, or a connection dropped before any answer: the manager
    looks for its write in the table instead of appending again."""
    with RestFaultProxy(rest_catalog_properties["uri"]) as proxy:
        properties = {**rest_catalog_properties, "uri": proxy.uri}
        manager = IcebergTableManager(load_test_catalog(properties))
        table = f"{namespace}.events"
        manager.write(table, _rows(0, 10, "first"))
        proxy.fail_next_commit(fault)
        commits_before = proxy.commits_forwarded
        result = manager.write(table, _rows(10, 10, "second"), WriteConfig(mode="append"))
    assert proxy.faults_served == [fault]
    # Landed or dropped: one commit request reached the catalog and nothing was sent again.
    # Lost: the retry sent the commit that never arrived.
    assert proxy.commits_forwarded - commits_before == 1
    assert result.commit_attempts == (2 if fault == "lost" else 1)
    ids = manager.scan(table).column("id").to_pylist()
    assert sorted(ids) == list(range(20))
    appends = [s for s in manager.snapshots(table) if s.summary.get("floe.write-id")]
    assert len(appends) == 2


def _unknown_commit_state(manager: IcebergTableManager, landed: bool) -> list[str]:
    """Make the next data commit report an unknown outcome, after committing it or not."""
    commit_table = manager.catalog.commit_table
    injected: list[str] = []

    def ambiguous(table, requirements, updates):
        if not injected and any(isinstance(u, AddSnapshotUpdate) for u in updates):
            injected.append("landed" if landed else "lost")
            if landed:
                commit_table(table, requirements, updates)
            raise CommitStateUnknownException("the connection dropped before the answer arrived")
        return commit_table(table, requirements, updates)

    manager.catalog.commit_table = ambiguous
    return injected


@pytest.mark.parametrize("landed", [True, False], ids=["commit-landed", "commit-lost"])
@pytest.mark.parametrize("mode", ["append", "overwrite", "upsert"])
def test_unknown_commit_state_never_duplicates_rows(
    postgres_catalog_properties, namespace, landed, mode
):
    manager = IcebergTableManager(load_test_catalog(postgres_catalog_properties))
    table = f"{namespace}.events"
    manager.write(table, _rows(0, 10, "first"))
    injected = _unknown_commit_state(manager, landed)
    if mode == "upsert":
        result = manager.upsert(table, _rows(5, 10, "second"), join_cols=["id"])
        expected = {i: "first" for i in range(5)} | {i: "second" for i in range(5, 15)}
    else:
        config = WriteConfig(mode=mode)
        result = manager.write(table, _rows(10, 10, "second"), config)
        expected = {i: "second" for i in range(10, 20)}
        if mode == "append":
            expected |= {i: "first" for i in range(10)}
    assert injected == ["landed" if landed else "lost"]
    assert result.commit_attempts == (1 if landed else 2)
    rows = manager.scan(table)
    ids = rows.column("id").to_pylist()
    assert len(ids) == len(set(ids)), "a row was written twice"
    assert dict(zip(ids, rows.column("tag").to_pylist(), strict=True)) == expected
    dispose_catalog(manager.catalog)


def test_outage_while_checking_an_unknown_commit_says_how_to_tell(seaweedfs_factory, namespace):
    """The catalog dies right after an ambiguous commit: the error gives the write id to look for."""
    server = seaweedfs_factory()
    properties = server.rest_catalog_properties()
    manager = IcebergTableManager(load_test_catalog(properties))
    table = f"{namespace}.events"
    manager.write(table, _rows(0, 10, "first"))
    commit_table = manager.catalog.commit_table

    def commit_then_lose_the_catalog(target, requirements, updates):
        commit_table(target, requirements, updates)
        server.stop()
        raise CommitStateUnknownException("the connection dropped before the answer arrived")

    manager.catalog.commit_table = commit_then_lose_the_catalog
    with pytest.raises(CatalogConnectionError) as raised:
        manager.write(table, _rows(10, 10, "second"), WriteConfig(mode="append"))
    message = str(raised.value)
    assert "outcome is unknown" in message
    _assert_names_endpoint_without_secrets(
        message, f"127.0.0.1:{server.ports.iceberg}", [server.secret_key]
    )
    write_id = message.split("floe.write-id=")[1].split(".")[0].split()[0]

    server.start()
    manager.catalog.commit_table = commit_table
    assert manager.count(table) == 20
    landed = [s for s in manager.snapshots(table) if s.summary.get("floe.write-id") == write_id]
    assert len(landed) == 1
