"""Bad input: each case fails with a clear error of the package's own type and leaves the table
exactly as it was (same metadata file, same rows); names and partition keys cannot escape or
inject anything.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import dagster as dg
import pyarrow as pa
import pytest
from infra.catalogs import CATALOG_NAME, dispose_catalog, load_test_catalog, unique_name
from pyiceberg.expressions import EqualTo

from floe_dagster_iceberg import (
    CatalogConnectionError,
    CustomCatalogConfig,
    IcebergCatalogResource,
    IcebergError,
    InvalidIdentifierError,
    InvalidInputError,
    RestCatalogConfig,
    S3StorageConfig,
    SchemaEvolutionError,
    SqlCatalogConfig,
    UpsertKeyError,
    create_iceberg_resources,
)
from floe_dagster_iceberg.engine.config import PartitionField, WriteConfig
from floe_dagster_iceberg.engine.identifiers import MAX_NAME_BYTES
from floe_dagster_iceberg.engine.manager import IcebergTableManager

PARTS = (PartitionField(source_column="part"),)


def _rows(part: str, ids: range, value: str = "v") -> pa.Table:
    return pa.table(
        {
            "part": pa.array([part] * len(ids), pa.string()),
            "id": pa.array(ids, pa.int64()),
            "value": pa.array([f"{value}{i}" for i in ids], pa.string()),
        }
    )


@pytest.fixture
def manager(sqlite_catalog_properties):
    loaded = load_test_catalog(sqlite_catalog_properties)
    try:
        yield IcebergTableManager(loaded)
    finally:
        dispose_catalog(loaded)


@pytest.fixture
def table(manager, namespace) -> str:
    """``<namespace>.events``, partitioned by ``part``, with partitions a and b."""
    name = f"{namespace}.events"
    manager.write(name, _rows("a", range(5)), WriteConfig(partition_spec=PARTS))
    manager.write(name, _rows("b", range(5)))
    return name


@contextlib.contextmanager
def untouched(manager: IcebergTableManager, table: str) -> Iterator[None]:
    """The block must leave the table's metadata file and rows as they were."""
    loaded = manager.load_table(table)
    before = (loaded.metadata_location, manager.scan(loaded).sort_by("id").to_pylist())
    yield
    loaded = manager.load_table(table)
    assert (loaded.metadata_location, manager.scan(loaded).sort_by("id").to_pylist()) == before


def _resources(properties: dict[str, str], namespace: str) -> dict:
    catalog = IcebergCatalogResource(
        name=CATALOG_NAME,
        catalog=SqlCatalogConfig(uri=properties["uri"], warehouse=properties["warehouse"]),
    )
    return create_iceberg_resources(catalog, namespace=namespace)


def _step_error(result: dg.ExecuteInProcessResult) -> dg.SerializableErrorInfo:
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    error = failure.event_specific_data.error
    while error.cause is not None and error.cls_name.startswith("Dagster"):
        error = error.cause  # Dagster wraps errors raised by IO managers
    return error


# ---------------------------------------------------------------------- data


@pytest.mark.parametrize(
    ("column", "values"),
    [
        ("id", pa.array(["1", "2"])),  # long column, strings
        ("id", pa.array([1.5, 2.5])),  # long column, doubles
        ("part", pa.array([1, 2])),  # string column, integers
        ("value", pa.array([b"x", b"y"])),  # string column, bytes
    ],
    ids=["string-into-long", "double-into-long", "int-into-string", "binary-into-string"],
)
def test_wrong_column_types_are_refused(manager, table, column, values):
    data = _rows("a", range(2)).set_column(
        _rows("a", range(2)).column_names.index(column), column, values
    )
    with untouched(manager, table), pytest.raises(SchemaEvolutionError, match=repr(column)):
        manager.write(table, data, WriteConfig(mode="append"))


def test_nulls_in_a_required_column_are_refused(manager, namespace):
    name = f"{namespace}.required"
    schema = pa.schema([pa.field("id", pa.int64(), nullable=False), pa.field("v", pa.string())])
    manager.write(name, pa.table({"id": [1], "v": ["x"]}, schema=schema))
    bad = pa.table({"id": pa.array([2, None], pa.int64()), "v": ["y", "z"]})
    with untouched(manager, name), pytest.raises(InvalidInputError, match="required column 'id'"):
        manager.write(name, bad, WriteConfig(mode="append"))


def test_rows_outside_the_run_partition_and_null_partition_values_are_refused(
    manager, table, sqlite_catalog_properties, namespace
):
    partitions = dg.StaticPartitionsDefinition(["a", "b"])

    @dg.asset(
        name="events",
        partitions_def=partitions,
        io_manager_key="iceberg",
        metadata={"partition_expr": "part"},
    )
    def events(context) -> pa.Table:
        stray = _rows("b", range(100, 102))  # partition b in the run of partition a
        nulls = _rows("a", range(200, 201)).set_column(0, "part", pa.array([None], pa.string()))
        return pa.concat_tables(
            [_rows("a", range(5, 8)), stray if context.run.tags.get("stray") else nulls]
        )

    resources = _resources(sqlite_catalog_properties, namespace)
    for tags, hint in (({"stray": "1"}, "'part': 'b'"), ({}, "hold nulls")):
        with untouched(manager, table):
            result = dg.materialize(
                [events], partition_key="a", resources=resources, tags=tags, raise_on_error=False
            )
        assert not result.success
        error = _step_error(result)
        assert error.cls_name == "PartitionMismatchError"
        assert hint in error.message


def test_duplicate_upsert_keys_are_refused(manager, table):
    data = pa.concat_tables([_rows("a", range(3)), _rows("a", range(2, 4))])
    with untouched(manager, table), pytest.raises(UpsertKeyError, match="duplicated key"):
        manager.upsert(table, data, join_cols=["id"])


def test_data_of_another_kind_is_refused(manager, table):
    with untouched(manager, table), pytest.raises(InvalidInputError, match=r"pyarrow\.Table"):
        manager.write(table, [{"part": "a", "id": 1}])  # type: ignore[arg-type]


def test_columns_iceberg_cannot_store_are_refused(manager, table):
    data = _rows("a", range(2)).append_column("flag", pa.array([1, 2], pa.uint64()))
    with untouched(manager, table), pytest.raises(InvalidInputError, match="uint64"):
        manager.write(table, data, WriteConfig(mode="append"))
    data = _rows("a", range(2)).append_column("nothing", pa.nulls(2))
    with untouched(manager, table), pytest.raises(InvalidInputError, match="only nulls"):
        manager.write(table, data, WriteConfig(mode="append"))


# ---------------------------------------------------------------------- empty output


def test_empty_output_behaviour(manager, table, sqlite_catalog_properties, namespace):
    """None writes nothing; an empty overwrite empties the run's slice; empty append and upsert
    commit nothing."""
    empty = _rows("a", range(0))
    with untouched(manager, table):
        assert manager.write(table, empty, WriteConfig(mode="append")).snapshot_id is None
        assert manager.upsert(table, empty, join_cols=["id"]).snapshot_id is None

    partitions = dg.StaticPartitionsDefinition(["a", "b"])

    @dg.asset(
        name="events",
        partitions_def=partitions,
        io_manager_key="iceberg",
        metadata={"partition_expr": "part"},
    )
    def events(context):
        return None if context.run.tags.get("output") == "none" else empty

    resources = _resources(sqlite_catalog_properties, namespace)
    with untouched(manager, table):
        result = dg.materialize(
            [events], partition_key="a", resources=resources, tags={"output": "none"}
        )
    assert result.success

    result = dg.materialize([events], partition_key="a", resources=resources)
    assert result.success
    assert manager.count(table, EqualTo("part", "a")) == 0  # the slice was emptied
    assert manager.count(table, EqualTo("part", "b")) == 5  # the other partition is untouched
    (materialization,) = result.asset_materializations_for_node("events")
    assert materialization.metadata["dagster/partition_row_count"].value == 0
    assert materialization.metadata["dagster/row_count"].value == manager.count(table) == 5


# ---------------------------------------------------------------------- configuration


def test_unknown_catalog_type_is_refused():
    resource = IcebergCatalogResource(
        catalog=CustomCatalogConfig(properties={"type": "no-such-catalog"})
    )
    with pytest.raises(IcebergError, match="no-such-catalog"):
        resource.load_catalog()


def test_wrong_rest_credentials_are_refused_without_echoing_them(seaweedfs, namespace):
    wrong_secret = f"wrong-{unique_name('s')}"
    resource = IcebergCatalogResource(
        catalog=RestCatalogConfig(
            uri=seaweedfs.rest_uri,
            warehouse=seaweedfs.table_bucket,
            credential=f"{seaweedfs.access_key}:{wrong_secret}",
        ),
    )
    with pytest.raises(CatalogConnectionError) as raised:
        resource.get_manager().write(f"{namespace}.events", _rows("a", range(2)))
    assert f"127.0.0.1:{seaweedfs.ports.iceberg}" in str(raised.value)
    assert wrong_secret not in str(raised.value)


def test_wrong_s3_credentials_are_refused_without_echoing_them(seaweedfs, namespace):
    wrong_secret = f"wrong-{unique_name('s')}"
    properties = seaweedfs.rest_catalog_properties()
    resource = IcebergCatalogResource(
        catalog=RestCatalogConfig(
            uri=seaweedfs.rest_uri,
            warehouse=seaweedfs.table_bucket,
            credential=properties["credential"],
        ),
        storage=S3StorageConfig(
            endpoint=seaweedfs.s3_endpoint,
            region=properties["s3.region"],
            access_key_id=seaweedfs.access_key,
            secret_access_key=wrong_secret,
        ),
    )
    manager = resource.get_manager()
    with pytest.raises(CatalogConnectionError) as raised:
        manager.write(f"{namespace}.events", _rows("a", range(2)))
    message = str(raised.value)
    assert f"127.0.0.1:{seaweedfs.ports.s3}" in message
    assert "credentials" in message
    assert wrong_secret not in message
    # A REST catalog creates the empty table before the data (see Write semantics): no rows.
    table = f"{namespace}.events"
    assert not manager.table_exists(table) or manager.load_table(table).current_snapshot() is None


# ---------------------------------------------------------------------- names


BAD_NAMES = ["..", "../escape", "a/b", "a\\b", "with\nnewline", "nul\x00byte", "tab\there", ""]


@pytest.mark.parametrize("bad", BAD_NAMES, ids=repr)
def test_unsafe_namespace_and_table_names_are_refused(
    manager, namespace, sqlite_catalog_properties, warehouse_files, bad
):
    warehouse = sqlite_catalog_properties["warehouse"]
    before = set(warehouse_files(warehouse))
    namespaces = manager.catalog.list_namespaces()
    for identifier in ((bad, "events"), (namespace, bad), (f"{namespace}.{bad}", "events")):
        with pytest.raises(InvalidIdentifierError):
            manager.write(identifier, _rows("a", range(2)))
    with pytest.raises(InvalidIdentifierError):
        manager.scan((namespace, bad))

    if bad:  # an empty namespace metadata means "not set": the asset key decides

        @dg.asset(name="events", io_manager_key="iceberg", metadata={"namespace": bad})
        def events() -> pa.Table:
            return _rows("a", range(2))

        resources = _resources(sqlite_catalog_properties, namespace)
        result = dg.materialize([events], resources=resources, raise_on_error=False)
        assert not result.success
        assert _step_error(result).cls_name == "InvalidIdentifierError"
    assert set(warehouse_files(warehouse)) == before
    assert manager.catalog.list_namespaces() == namespaces


def test_names_over_the_length_limit_are_refused_before_anything_is_created(
    manager, namespace, sqlite_catalog_properties, warehouse_files
):
    """Names longer than MAX_NAME_BYTES (UTF-8) fail with the name and the limit, not OSError."""
    warehouse = sqlite_catalog_properties["warehouse"]
    before = set(warehouse_files(warehouse))
    namespaces = manager.catalog.list_namespaces()
    long_name = "t" * 300
    wide_name = "é" * 121  # 121 characters, 242 bytes
    for identifier, name in (
        ((namespace, long_name), long_name),
        ((long_name, "events"), long_name),
        ((f"{namespace}.{long_name}", "events"), long_name),
        ((namespace, wide_name), wide_name),
    ):
        with pytest.raises(InvalidIdentifierError) as raised:
            manager.write(identifier, _rows("a", range(2)))
        message = str(raised.value)
        assert name in message
        assert f"limit is {MAX_NAME_BYTES} bytes" in message
        assert "shorter name" in message
    with pytest.raises(InvalidIdentifierError):
        manager.scan((namespace, long_name))

    @dg.asset(name=long_name, io_manager_key="iceberg")
    def long_asset() -> pa.Table:
        return _rows("a", range(2))

    result = dg.materialize(
        [long_asset],
        resources=_resources(sqlite_catalog_properties, namespace),
        raise_on_error=False,
    )
    assert not result.success
    error = _step_error(result)
    assert error.cls_name == "InvalidIdentifierError"
    assert long_name in error.message
    assert "asset key" in error.message
    assert set(warehouse_files(warehouse)) == before
    assert manager.catalog.list_namespaces() == namespaces

    # At the limit, names work.
    longest = "t" * MAX_NAME_BYTES
    manager.write((namespace, longest), _rows("a", range(2)))
    assert manager.scan((namespace, longest)).num_rows == 2


# ---------------------------------------------------------------------- partition keys

NASTY_KEYS = [
    "o'brien",
    'say "hi"',
    "x'); DROP TABLE iceberg_tables; --",
    "' OR '1'='1",
    "back\\slash",
    "../../escape",
    "a/b",
    "%2F..%2F",
    "ünï ☃",
]


def test_partition_keys_with_quotes_and_sql_are_plain_values(
    catalog_properties, catalog_kind, namespace, warehouse_files
):
    """Each nasty key is its own partition: written, read and replaced exactly, on each catalog."""
    loaded = load_test_catalog(catalog_properties)
    manager = IcebergTableManager(loaded)
    name = f"{namespace}.events"
    try:
        for index, key in enumerate(NASTY_KEYS):
            config = WriteConfig(
                mode="overwrite", row_filter=EqualTo("part", key), partition_spec=PARTS
            )
            manager.write(name, _rows(key, range(index, index + 3)), config)
        # Replacing one partition touches no other.
        victim = NASTY_KEYS[2]
        config = WriteConfig(mode="overwrite", row_filter=EqualTo("part", victim))
        manager.write(name, _rows(victim, range(100, 101), "new"), config)
        for index, key in enumerate(NASTY_KEYS):
            rows = manager.scan(name, EqualTo("part", key)).to_pylist()
            expected = range(100, 101) if key == victim else range(index, index + 3)
            assert sorted(r["id"] for r in rows) == list(expected), key
            assert {r["part"] for r in rows} == {key}
        assert manager.count(name) == 3 * (len(NASTY_KEYS) - 1) + 1
        # The catalog is intact and every data file lies inside the table's location.
        assert manager.catalog.list_tables(namespace) == [(namespace, "events")]
        table = manager.load_table(name)
        location = table.location().rstrip("/") + "/"
        paths = table.inspect.files().column("file_path").to_pylist()
        assert all(path.startswith(location) and "/../" not in path for path in paths)
        assert set(paths) <= set(warehouse_files(table))
    finally:
        dispose_catalog(loaded)


def test_partition_keys_with_quotes_and_sql_through_dagster(
    manager, sqlite_catalog_properties, namespace
):
    partitions = dg.StaticPartitionsDefinition(NASTY_KEYS)

    @dg.asset(
        name="events",
        partitions_def=partitions,
        io_manager_key="iceberg",
        metadata={"partition_expr": "part"},
    )
    def events(context) -> pa.Table:
        return _rows(
            context.partition_key,
            range(
                NASTY_KEYS.index(context.partition_key) * 10,
                NASTY_KEYS.index(context.partition_key) * 10 + 2,
            ),
        )

    @dg.asset(partitions_def=partitions, ins={"events": dg.AssetIn()})
    def echo(events: pa.Table) -> None:
        assert events.num_rows == 2

    resources = _resources(sqlite_catalog_properties, namespace)
    for key in NASTY_KEYS[:4]:
        result = dg.materialize([events, echo], partition_key=key, resources=resources)
        assert result.success
    rows = manager.scan(f"{namespace}.events")
    assert sorted(rows.column("part").to_pylist()) == sorted(
        k for k in NASTY_KEYS[:4] for _ in range(2)
    )
