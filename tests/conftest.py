"""Shared fixtures: real catalogs and storage for every test.

Servers (PostgreSQL via pgserver, SeaweedFS via ``weed mini``) are session-scoped and start
only when a test asks for them, so a run of SQLite-only tests starts nothing. A server that
cannot start fails the tests that need it, with the reason and the server log tail.

Catalog fixtures return plain, JSON-serialisable ``dict[str, str]`` PyIceberg properties, so
the same catalog can be opened in subprocesses. Every catalog is loaded under the one name
:data:`infra.catalogs.CATALOG_NAME` (``"floe"``): ``SqlCatalog`` keys its rows by catalog
name, so processes must agree on it. Tests are isolated by a fresh SQLite file / PostgreSQL
database per test and, on the shared REST catalog, by the unique ``namespace`` fixture.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import dagster as dg
import pytest
from dagster import DagsterInstance

_TESTS_DIR = str(Path(__file__).resolve().parent)
if _TESTS_DIR not in sys.path:  # `import infra` also under --import-mode=importlib
    sys.path.insert(0, _TESTS_DIR)

from infra.catalogs import (  # noqa: E402
    CATALOG_KINDS,
    CATALOG_NAME,
    catalog_kind_of,
    dispose_catalog,
    initialise_sql_catalog,
    load_test_catalog,
    sqlite_catalog_properties_for,
    unique_name,
)
from infra.postgres import PostgresServer, PostgresStartError  # noqa: E402
from infra.seaweedfs import SeaweedFS, SeaweedFSStartError  # noqa: E402
from infra.spark import SparkSetupError, spark_jars  # noqa: E402
from infra.warehouse import list_warehouse_files, table_files  # noqa: E402

from floe_dagster_iceberg import (  # noqa: E402
    EmbeddedCatalogConfig,
    IcebergCatalogResource,
    IcebergTableManager,
    SparkEngineConfig,
    create_iceberg_resources,
)

# Start-up times of the session's servers, printed at the end of the run.
_STARTUP_SECONDS: dict[str, float] = {}


def pytest_terminal_summary(terminalreporter) -> None:
    if _STARTUP_SECONDS:
        timings = ", ".join(f"{name} {seconds:.2f} s" for name, seconds in _STARTUP_SECONDS.items())
        terminalreporter.write_line(f"test servers started: {timings}")


def _start_order(item: pytest.Item) -> int:
    """Long tests first, so the two workers end together instead of one finishing a long test
    alone: the demo's tests (one worker builds the shared demo), then the other slow ones."""
    groups = {mark.args[0] for mark in item.iter_markers("xdist_group") if mark.args}
    if "demo" in groups:
        return 0
    if item.get_closest_marker("slow") is not None:
        return 1
    return 2 if groups else 3


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Start long tests first; keep the tests of one ``xdist_group`` in one worker under
    ``--dist=loadgroup``.

    pytest-xdist 3.8 tags them by setting ``item._nodeid``, which pytest 9 no longer reads
    (the id lives in ``item._id``), so the groups would be spread over the workers and, for
    example, every worker would start its own Spark session.
    """
    items.sort(key=_start_order)
    if not getattr(config.option, "loadgroup", False):
        return
    try:
        from _pytest.nodeid import NodeId
    except ImportError:  # pytest < 9: xdist's own tagging works
        return
    for item in items:
        groups = {
            str(mark.args[0] if mark.args else mark.kwargs.get("name", "default"))
            for mark in item.iter_markers("xdist_group")
        }
        if groups and "@" not in item.nodeid and hasattr(item, "_id"):
            item._id = NodeId.parse(f"{item.nodeid}@{'_'.join(sorted(groups))}")


# -- servers -----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL 16 server for the session (Unix socket only), stopped at session end."""
    server = PostgresServer()
    try:
        server.start()
    except PostgresStartError as exc:
        pytest.fail(str(exc), pytrace=False)
    assert server.start_seconds is not None
    _STARTUP_SECONDS["postgres"] = server.start_seconds
    try:
        yield server
    finally:
        server.stop()


def _start_seaweedfs(attempts: int = 2) -> SeaweedFS:
    """A started SeaweedFS; a start that times out on a loaded machine is tried once more on
    fresh ports, and the test fails (never skips) when no attempt starts."""
    for attempt in range(1, attempts + 1):
        server = SeaweedFS()
        try:
            server.start()
            return server
        except SeaweedFSStartError as exc:
            server.close()
            if attempt == attempts:
                pytest.fail(str(exc), pytrace=False)
        except BaseException:
            server.close()
            raise
    raise AssertionError("unreachable")


@pytest.fixture(scope="session")
def seaweedfs() -> Iterator[SeaweedFS]:
    """The session's SeaweedFS: S3 on ``seaweedfs.s3_endpoint`` and an Iceberg REST catalog.

    Shared by many tests: do not stop it. Outage tests use ``seaweedfs_factory``.
    """
    server = _start_seaweedfs()
    _STARTUP_SECONDS["seaweedfs"] = server.start_seconds[0]
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def seaweedfs_factory() -> Iterator[Callable[[], SeaweedFS]]:
    """Start private SeaweedFS instances that a test may stop, kill and restart at will.

    Each call returns a started instance; all are closed (and their data deleted) when the
    test ends, whatever the outcome.
    """
    servers: list[SeaweedFS] = []

    def start() -> SeaweedFS:
        server = _start_seaweedfs()
        servers.append(server)
        return server

    try:
        yield start
    finally:
        for server in servers:
            server.close()


# -- catalog properties ------------------------------------------------------------------------


@pytest.fixture
def sqlite_catalog_properties(tmp_path: Path) -> dict[str, str]:
    """SQLite catalog ``<tmp>/sqlite/catalog.db``, warehouse ``file://<tmp>/sqlite/warehouse``.

    ``<tmp>`` is this test's fresh ``tmp_path``.
    """
    properties = sqlite_catalog_properties_for(tmp_path / "sqlite")
    initialise_sql_catalog(properties)
    return properties


@pytest.fixture
def postgres_database(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for this test (dropped afterwards)."""
    name = postgres_server.create_database()
    try:
        yield name
    finally:
        postgres_server.drop_database(name)


@pytest.fixture
def postgres_catalog_properties(
    postgres_server: PostgresServer, postgres_database: str, tmp_path: Path
) -> dict[str, str]:
    """SQL catalog in a fresh PostgreSQL database, ``file://`` warehouse in tmp.

    The catalog tables already exist, so concurrent processes opening the catalog do not race
    to create them.
    """
    warehouse = tmp_path / "postgres" / "warehouse"
    warehouse.mkdir(parents=True)
    properties = {
        "type": "sql",
        "uri": postgres_server.sqlalchemy_uri(postgres_database),
        "warehouse": warehouse.as_uri(),
    }
    initialise_sql_catalog(properties)
    return properties


@pytest.fixture(scope="session")
def spark_catalog_properties(
    postgres_server: PostgresServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    """A SQL catalog on a PostgreSQL database of the session, reached over TCP (Spark's JDBC
    driver speaks no Unix socket: a loopback port forwards to it), warehouse in tmp.

    Spark keeps one catalog per name and session, so Spark tests share this catalog: isolate
    them with the ``namespace`` fixture.
    """
    from infra.forward import UnixSocketForward

    database = postgres_server.create_database()
    warehouse = tmp_path_factory.mktemp("spark") / "warehouse"
    warehouse.mkdir()
    with UnixSocketForward(postgres_server.socket_path) as forward:
        properties = {
            "type": "sql",
            "uri": f"postgresql+psycopg2://postgres@127.0.0.1:{forward.port}/{database}",
            "warehouse": warehouse.as_uri(),
        }
        initialise_sql_catalog(properties)
        yield properties
    postgres_server.drop_database(database)


@pytest.fixture(scope="session")
def spark_engine(spark_catalog_properties: dict[str, str]) -> Iterator[SparkEngineConfig]:
    """The Spark maintenance engine on ``spark_catalog_properties``: ONE local[2] session for the
    whole test session (started here, through the engine), stopped at the end."""
    import time

    from floe_dagster_iceberg.engine.maintenance.spark import spark_session

    try:
        jars = spark_jars()
    except SparkSetupError as exc:
        pytest.fail(f"Spark cannot run here: {exc}", pytrace=False)
    engine = SparkEngineConfig(
        master="local[2]",
        jars=jars,
        conf={
            "spark.driver.memory": "768m",
            "spark.ui.enabled": "false",
            "spark.sql.shuffle.partitions": "2",
            "spark.default.parallelism": "2",
            "spark.driver.host": "127.0.0.1",
            "spark.driver.bindAddress": "127.0.0.1",
            # Short jobs on tiny tables: the quick JIT tier and no code generation start
            # faster than they would run optimised.
            "spark.driver.extraJavaOptions": "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC",
            "spark.sql.codegen.wholeStage": "false",
            "spark.sql.adaptive.enabled": "false",
        },
    )
    catalog = load_test_catalog(spark_catalog_properties)
    started = time.perf_counter()
    session = spark_session(engine, catalog)
    _STARTUP_SECONDS["spark"] = time.perf_counter() - started
    session.sparkContext.setLogLevel("ERROR")
    try:
        yield engine
    finally:
        dispose_catalog(catalog)
        session.stop()


@pytest.fixture
def rest_catalog_properties(seaweedfs: SeaweedFS) -> dict[str, str]:
    """The Iceberg REST catalog of the session's SeaweedFS, data on its S3 endpoint.

    The catalog is shared by the whole session: use the ``namespace`` fixture for isolation.
    """
    return seaweedfs.rest_catalog_properties()


@pytest.fixture
def s3_sql_catalog_properties(seaweedfs: SeaweedFS, tmp_path: Path) -> dict[str, str]:
    """SQLite catalog in tmp with its warehouse on SeaweedFS S3 (``s3://data/<unique>``)."""
    properties = seaweedfs.sql_catalog_properties(
        sqlite_catalog_properties_for(tmp_path / "s3sql")["uri"], prefix=unique_name("wh")
    )
    initialise_sql_catalog(properties)
    return properties


@pytest.fixture(params=CATALOG_KINDS)
def catalog_properties(request: pytest.FixtureRequest) -> dict[str, str]:
    """PyIceberg properties of each catalog kind in turn: ``sqlite``, ``postgres``, ``rest``."""
    return dict(request.getfixturevalue(f"{request.param}_catalog_properties"))


@pytest.fixture
def catalog_kind(catalog_properties: dict[str, str]) -> str:
    """``"sqlite"``, ``"postgres"`` or ``"rest"``: the kind behind ``catalog_properties``."""
    return catalog_kind_of(catalog_properties)


@pytest.fixture
def catalog(catalog_properties: dict[str, str]):
    """``load_catalog("floe", **catalog_properties)``; connections closed after the test."""
    loaded = load_test_catalog(catalog_properties)
    try:
        yield loaded
    finally:
        dispose_catalog(loaded)


@pytest.fixture
def catalog_name() -> str:
    """The catalog name every process must use: ``"floe"``."""
    return CATALOG_NAME


@pytest.fixture
def namespace() -> str:
    """A unique namespace name (``t_<hex>``) for this test; not created yet."""
    return unique_name("t")


@pytest.fixture
def warehouse_files():
    """List the files that exist under a table location, local or S3: ``{uri: size}``.

    Call as ``warehouse_files(table)`` or ``warehouse_files(location, properties)``.
    """

    def list_files(target, properties: dict[str, str] | None = None) -> dict[str, int]:
        if isinstance(target, str):
            return list_warehouse_files(target, properties)
        return table_files(target)

    return list_files


@pytest.fixture(autouse=True)
def _isolated_dagster_context() -> Iterator[None]:
    """Run each test inside its own (ephemeral) Dagster instance context.

    Entering a Dagster instance publishes its definitions-state storage in a context variable;
    an instance an earlier test left behind would otherwise be found there after it was
    garbage-collected ("undefined DagsterInstance weakref") by a later ``materialize``.
    """
    with DagsterInstance.ephemeral():
        yield


# -- Dagster-level fixtures: an embedded catalog in tmp, its resources, a test instance ---------


@pytest.fixture
def catalog_resource(tmp_path: Path) -> IcebergCatalogResource:
    """The embedded catalog (SQLite and a local warehouse) in this test's tmp folder."""
    return IcebergCatalogResource(catalog=EmbeddedCatalogConfig(home=str(tmp_path)))


@pytest.fixture
def resources(catalog_resource: IcebergCatalogResource) -> dict:
    return create_iceberg_resources(catalog_resource)


@pytest.fixture
def manager(catalog_resource: IcebergCatalogResource) -> IcebergTableManager:
    return catalog_resource.get_manager()


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as test_instance:
        yield test_instance
