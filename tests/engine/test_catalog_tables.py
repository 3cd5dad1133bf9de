"""The first open of a SQL catalog creates its tables, also when many processes do it at once.

A first backfill on a fresh deployment starts many runs together, each in its own process,
against a catalog database that has no catalog tables yet (the embedded SQLite file does not
even exist). Every process must find or create the tables and write its partition. Each test
repeats the race on several fresh catalogs, all processes starting each round together.
"""

from __future__ import annotations

import collections
import uuid
from collections.abc import Iterator

import pyarrow as pa
import pytest
from infra.catalogs import dispose_catalog, load_test_catalog
from reliability.processes import run_concurrently
from reliability.workers import first_writes_through_resource

WRITERS = 16
ROUNDS = 4
ROWS_PER_PARTITION = 20
TABLE = "first.events"


def _first_backfills(catalogs: list[dict[str, str]]) -> None:
    """16 processes; in each round all of them open the same fresh catalog and write at once."""
    outcomes = run_concurrently(
        first_writes_through_resource,
        [(catalogs, TABLE, f"p{i:02d}", ROWS_PER_PARTITION, f"w{i}") for i in range(WRITERS)],
        timeout=600,
    )
    by_round = list(zip(*outcomes.values, strict=True))  # raises if a process died
    failures = [
        f"round {n}, writer {i}: {result['error']}"
        for n, results in enumerate(by_round)
        for i, result in enumerate(results)
        if "error" in result
    ]
    assert not failures, f"{len(failures)} of {WRITERS * ROUNDS} first writes failed:\n" + (
        "\n".join(failures)
    )
    for results in by_round:
        assert sum(r["created_table"] for r in results) == 1
        assert all(r["rows_added"] == ROWS_PER_PARTITION for r in results)


def _check_rows(properties: dict[str, str]) -> None:
    loaded = load_test_catalog(properties)
    try:
        rows = loaded.load_table(TABLE).scan().to_arrow()
    finally:
        dispose_catalog(loaded)
    by_part = collections.defaultdict(list)
    for part, row_id, writer in zip(
        rows.column("part").to_pylist(),
        rows.column("id").to_pylist(),
        rows.column("writer").to_pylist(),
        strict=True,
    ):
        by_part[part].append((row_id, writer))
    assert rows.num_rows == WRITERS * ROWS_PER_PARTITION
    assert sorted(by_part) == [f"p{i:02d}" for i in range(WRITERS)]
    for i in range(WRITERS):
        expected = [(n, f"w{i}") for n in range(ROWS_PER_PARTITION)]
        assert sorted(by_part[f"p{i:02d}"]) == expected


def test_first_backfill_on_a_fresh_embedded_home(tmp_path):
    """16 processes open a home that does not exist yet and write at once: 16/16 land."""
    homes = [tmp_path / f"home{n}" for n in range(ROUNDS)]
    _first_backfills([{"home": str(home)} for home in homes])
    for home in homes:
        _check_rows(
            {
                "type": "sql",
                "uri": f"sqlite:///{home / 'catalog.db'}",
                "warehouse": (home / "warehouse").as_uri(),
            }
        )


@pytest.fixture
def fresh_postgres_databases(postgres_server) -> Iterator[list[str]]:
    """``ROUNDS`` empty PostgreSQL databases: no catalog table exists in any of them."""
    names = [postgres_server.create_database() for _ in range(ROUNDS)]
    try:
        yield names
    finally:
        for name in names:
            postgres_server.drop_database(name)


def test_first_backfill_on_a_fresh_postgres_database(
    postgres_server, fresh_postgres_databases, tmp_path
):
    """16 processes open an empty PostgreSQL database as a catalog at once: 16/16 land."""
    catalogs = [
        {
            "uri": postgres_server.sqlalchemy_uri(database),
            "warehouse": (tmp_path / database).as_uri(),
        }
        for database in fresh_postgres_databases
    ]
    _first_backfills(catalogs)
    for catalog in catalogs:
        _check_rows({"type": "sql", **catalog})


def test_catalog_tables_that_cannot_be_created_are_reported_as_such(
    postgres_server, postgres_database, tmp_path
):
    """A database user who may not create tables gets CatalogSetupError saying so, not an outage."""
    import psycopg2
    from psycopg2 import sql

    from floe_dagster_iceberg import (
        CatalogConnectionError,
        CatalogSetupError,
        IcebergCatalogResource,
        SqlCatalogConfig,
    )

    role = f"reader_{uuid.uuid4().hex[:8]}"
    owner_uri = postgres_server.sqlalchemy_uri(postgres_database)
    reader_uri = owner_uri.replace("://postgres@", f"://{role}@", 1)
    warehouse = (tmp_path / "warehouse").as_uri()

    def execute(*statements: sql.Composable) -> None:
        connection = psycopg2.connect(postgres_server.uri(postgres_database))
        try:
            connection.autocommit = True
            with connection.cursor() as cursor:
                for statement in statements:
                    cursor.execute(statement)
        finally:
            connection.close()

    execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    try:
        reader = IcebergCatalogResource(
            catalog=SqlCatalogConfig(uri=reader_uri, warehouse=warehouse)
        )
        with pytest.raises(CatalogSetupError) as raised:
            reader.load_catalog()
        message = str(raised.value)
        assert not isinstance(raised.value, CatalogConnectionError)
        assert "iceberg_tables" in message
        assert "permission denied" in message
        assert "may create tables" in message
        assert "credentials" not in message

        # Once the owner has opened the catalog (creating its tables), the reader opens it.
        owner = IcebergCatalogResource(catalog=SqlCatalogConfig(uri=owner_uri, warehouse=warehouse))
        owner.get_manager().write("ready.events", pa.table({"id": [1, 2]}))
        execute(
            sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {}").format(
                sql.Identifier(role)
            )
        )
        reader = IcebergCatalogResource(
            name="floe", catalog=SqlCatalogConfig(uri=reader_uri, warehouse=warehouse)
        )
        assert reader.get_manager().scan("ready.events").num_rows == 2
    finally:
        execute(
            sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)),
            sql.SQL("DROP ROLE {}").format(sql.Identifier(role)),
        )
