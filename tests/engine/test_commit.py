"""Commits of the engine: data written once, metadata re-planned per attempt, nothing left over.

Concurrent writers run in threads on SQLite (one database file, one process) and in separate
processes on PostgreSQL and the REST catalog. Commit refusals and a crash right before the
commit are injected by wrapping the catalog's ``commit_table``; everything else is real.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import dagster as dg
import pyarrow as pa
import pytest
from infra.catalogs import dispose_catalog, load_test_catalog
from infra.warehouse import list_warehouse_files
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import CommitFailedException, CommitStateUnknownException
from pyiceberg.expressions import EqualTo, LessThan
from pyiceberg.schema import Schema
from pyiceberg.table import Table
from pyiceberg.table.update import AddSnapshotUpdate
from pyiceberg.types import LongType, NestedField, StringType
from reliability.workers import PART_SPEC, write_partition

from engine.support import (
    DATA_FILE_SUFFIX,
    Rows,
    append_ids,
    id_rows,
    kill_writer_at_commit,
    live_data_files,
    rows_of,
    run_writers,
    storage_files,
    summary_of,
    unreferenced_files,
)
from floe_dagster_iceberg import (
    CommitConflictError,
    CustomCatalogConfig,
    IcebergCatalogResource,
    IcebergTableManager,
    InvalidInputError,
    RetryPolicy,
    WriteConfig,
    WriteResult,
    create_iceberg_resources,
)


@pytest.fixture
def manager(catalog) -> IcebergTableManager:
    return IcebergTableManager(catalog)


def _seed(manager: IcebergTableManager, table: str, parts: dict[str, range]) -> Rows:
    """Create ``table`` (partitioned by ``part``) holding ``parts``' rows of writer ``seed``."""
    data = pa.concat_tables([id_rows(part, ids, "seed") for part, ids in parts.items()])
    manager.write(table, data, WriteConfig(partition_spec=PART_SPEC))
    return rows_of(data)


def _on(*cases: tuple[str, str]) -> list[Any]:
    """``(catalog kind, case)`` pairs, for tests whose logic does not need every combination."""
    return [pytest.param(kind, case, id=f"{kind}-{case}") for kind, case in cases]


# ---------------------------------------------------------------------- concurrent writers

PARTITION_WRITERS = 16
APPENDERS = 4
SHARED_PARTS = ("s0", "s1")


def test_sixteen_partition_writers_and_appenders_commit_at_once(
    catalog_properties, catalog_kind, manager, namespace
):
    """16 overwrites of 16 partitions and 4 appends to 2 shared partitions, all at once: none
    fails, every write lands as one snapshot, rows are exact, no file is left unreferenced."""
    table = f"{namespace}.events"
    expected = _seed(manager, table, dict.fromkeys(SHARED_PARTS, range(10)))
    calls: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []
    for i in range(PARTITION_WRITERS):
        part, count, writer = f"p{i:02d}", 20 + i, f"w{i}"
        calls.append((write_partition, (catalog_properties, table, part, count, writer)))
        expected |= rows_of(id_rows(part, range(count), writer))
    for j in range(APPENDERS):
        part, writer = SHARED_PARTS[j % len(SHARED_PARTS)], f"a{j}"
        ids = list(range(100 * (j + 1), 100 * (j + 1) + 15))  # apart from the seed's and others'
        calls.append((append_ids, (catalog_properties, table, part, ids, writer)))
        expected |= rows_of(id_rows(part, ids, writer))

    results = run_writers(catalog_kind == "sqlite", calls)

    loaded = manager.load_table(table)
    assert rows_of(manager.scan(loaded)) == expected
    written = {r["snapshot_id"] for r in results}
    assert len(written) == len(calls), "two writes reported the same snapshot"
    snapshots = loaded.snapshots()
    assert len(snapshots) == 1 + len(calls), "a write committed other than one snapshot"
    assert written <= {s.snapshot_id for s in snapshots}
    assert unreferenced_files(loaded, catalog_properties) == set()


def test_eight_overwrites_of_one_partition_leave_one_writers_rows(
    catalog_properties, catalog_kind, manager, namespace
):
    """8 writers replace the same partition at once: it ends with the rows of exactly one, the
    one that committed last, and each overwrite replaced exactly the rows before it."""
    table = f"{namespace}.hot"
    hot_seed = range(30)
    state = _seed(manager, table, {"hot": hot_seed, "cold": range(40)})
    sizes = {f"o{i}": 50 + 7 * i for i in range(8)}
    calls = [
        (write_partition, (catalog_properties, table, "hot", size, writer))
        for writer, size in sizes.items()
    ]
    results = dict(zip(sizes, run_writers(catalog_kind == "sqlite", calls), strict=True))

    loaded = manager.load_table(table)
    rows = rows_of(manager.scan(loaded))
    hot_writers = {writer for (part, _), (writer, _) in rows.items() if part == "hot"}
    assert len(hot_writers) == 1, f"partition 'hot' mixes the rows of {hot_writers}"
    (winner,) = hot_writers
    cold = {key: row for key, row in state.items() if key[0] == "cold"}
    assert rows == cold | rows_of(id_rows("hot", range(sizes[winner]), winner))
    assert loaded.metadata.current_snapshot_id == results[winner]["snapshot_id"]
    # In commit order, every overwrite deleted exactly the rows the previous one had added.
    by_id = {s.snapshot_id: s for s in loaded.snapshots()}
    order = [entry.snapshot_id for entry in loaded.history()]
    assert sorted(order[1:]) == sorted(r["snapshot_id"] for r in results.values())
    previous_rows = len(hot_seed)
    for snapshot_id in order[1:]:
        summary = summary_of(by_id[snapshot_id])
        assert summary["deleted-records"] == previous_rows
        previous_rows = summary["added-records"]
    assert unreferenced_files(loaded, catalog_properties) == set()


# ---------------------------------------------------------------------- crash before the commit


def _crash_write(mode: str) -> tuple[pa.Table, WriteConfig]:
    if mode == "append":
        return id_rows("b", range(20, 60), "killed"), WriteConfig()
    if mode == "overwrite":
        config = WriteConfig(mode="overwrite", row_filter=EqualTo("part", "a"))
        return id_rows("a", range(25), "killed"), config
    data = pa.concat_tables([id_rows("a", range(5, 15), "killed"), id_rows("c", range(5), "k")])
    return data, WriteConfig(mode="upsert", join_cols=("part", "id"))


@pytest.mark.parametrize(
    ("catalog_properties", "mode"),
    _on(
        ("sqlite", "append"),
        ("sqlite", "overwrite"),
        ("sqlite", "upsert"),
        ("postgres", "overwrite"),
        ("rest", "upsert"),
    ),
    indirect=["catalog_properties"],
)
def test_a_writer_killed_before_its_commit_changes_nothing_and_its_files_are_orphans(
    catalog_properties, manager, namespace, mode
):
    """SIGKILL after the files are written, before the commit: the table is as it was, and
    orphan removal deletes exactly the files the killed writer left (and nothing else)."""
    table = f"{namespace}.events"
    state = _seed(manager, table, {"a": range(40), "b": range(20)})
    loaded = manager.load_table(table)
    stored_before = set(storage_files(loaded, catalog_properties))
    data, config = _crash_write(mode)

    kill_writer_at_commit(catalog_properties, table, data, config)

    after = manager.load_table(table)
    assert after.metadata_location == loaded.metadata_location
    assert after.metadata.current_snapshot_id == loaded.metadata.current_snapshot_id
    assert rows_of(manager.scan(after)) == state
    left = set(storage_files(after, catalog_properties)) - stored_before
    assert any(path.endswith(DATA_FILE_SUFFIX) for path in left), "no data file was written"
    assert any("/snap-" in path for path in left), "no manifest list was written"

    removed = manager.remove_orphan_files(table, older_than=timedelta(0))
    assert set(removed.orphan_files) == left
    assert removed.files_deleted == len(left)
    assert set(storage_files(after, catalog_properties)) == stored_before
    assert rows_of(manager.scan(table)) == state


# ---------------------------------------------------------------------- refused attempts

REFUSALS = 2
FAST = RetryPolicy(initial_backoff_seconds=0.01, max_backoff_seconds=0.05)


@dataclass
class _Refusals:
    """What the refusing catalog saw: requests, and the table location and metadata files
    (manifest lists, manifests) of refused requests, each stored when it was refused."""

    calls: int = 0
    locations: set[str] = field(default_factory=set)
    metadata_files: list[str] = field(default_factory=list)


def _refuse_commits(
    monkeypatch: pytest.MonkeyPatch, catalog: Catalog, refusals: int | None
) -> _Refusals:
    """Refuse the first ``refusals`` commit requests (all when ``None``), as a catalog refuses
    a request whose base another writer replaced."""
    commit_table = catalog.commit_table
    seen = _Refusals()

    def refusing(target: Table, requirements: Any, updates: Any) -> Any:
        seen.calls += 1
        if refusals is not None and seen.calls > refusals:
            return commit_table(target, requirements, updates)
        seen.locations.add(target.location())
        for update in updates:
            if isinstance(update, AddSnapshotUpdate):
                snapshot = update.snapshot
                paths = [snapshot.manifest_list]
                paths += [
                    m.manifest_path
                    for m in snapshot.manifests(target.io)
                    if m.added_snapshot_id == snapshot.snapshot_id  # not the carried ones
                ]
                assert all(target.io.new_input(path).exists() for path in paths)
                seen.metadata_files.extend(paths)
        raise CommitFailedException("refused: the table moved on (injected)")

    monkeypatch.setattr(catalog, "commit_table", refusing)
    return seen


def _write(
    manager: IcebergTableManager, table: str, mode: str, retry: RetryPolicy = FAST
) -> WriteResult:
    """One write of ``mode`` to a table seeded with ``a`` 0..39 and ``b`` 0..19 (``create``:
    to no table)."""
    if mode in ("create", "append"):
        config = WriteConfig(partition_spec=PART_SPEC, retry=retry)
        return manager.write(table, id_rows("c", range(30), "retried"), config)
    if mode == "overwrite":
        config = WriteConfig(mode="overwrite", row_filter=EqualTo("part", "a"), retry=retry)
        return manager.write(table, id_rows("a", range(15), "retried"), config)
    data = pa.concat_tables([id_rows("a", range(10, 30), "retried"), id_rows("c", range(4), "r")])
    return manager.upsert(table, data, join_cols=["part", "id"], config=WriteConfig(retry=retry))


WRITE_MODES = ["create", "append", "overwrite", "upsert"]


@pytest.mark.parametrize("mode", WRITE_MODES)
def test_refused_attempts_reuse_the_data_files_and_leave_no_metadata(
    catalog_properties, catalog, manager, namespace, monkeypatch, mode
):
    """Two refused commits, then success: the data files were written once (every Parquet
    file written is referenced), and the refused attempts' manifests are gone."""
    table = f"{namespace}.events"
    stored_before: set[str] = set()
    snapshots_before = 0
    if mode != "create":
        _seed(manager, table, {"a": range(40), "b": range(20)})
        loaded = manager.load_table(table)
        stored_before = set(storage_files(loaded, catalog_properties))
        snapshots_before = len(loaded.snapshots())
    refusals = _refuse_commits(monkeypatch, catalog, REFUSALS)

    result = _write(manager, table, mode)

    assert result.commit_attempts == REFUSALS + 1 == refusals.calls
    loaded = manager.load_table(table)
    assert len(loaded.snapshots()) == snapshots_before + 1
    snapshot = loaded.current_snapshot()
    assert snapshot is not None
    assert snapshot.snapshot_id == result.snapshot_id
    # Some REST catalogs stage every create attempt at a location of its own: look there too.
    stored_after = set(storage_files(loaded, catalog_properties))
    for location in refusals.locations - {loaded.location()}:
        stored_after |= set(list_warehouse_files(location, catalog_properties))
    new_data = {p for p in stored_after - stored_before if p.endswith(DATA_FILE_SUFFIX)}
    now = live_data_files(loaded, snapshot.snapshot_id)
    parent = live_data_files(loaded, snapshot.parent_snapshot_id)
    assert new_data == now.keys() - parent.keys(), "data files were written more than once"
    assert len(new_data) == result.files_added == summary_of(snapshot)["added-data-files"]
    assert len(refusals.metadata_files) >= 2 * REFUSALS, "no manifest list or manifest refused"
    assert set(refusals.metadata_files) & stored_after == set(), "refused metadata is stored"
    assert unreferenced_files(loaded, catalog_properties) == set()


@pytest.mark.parametrize(
    ("catalog_properties", "mode"),
    _on(*(("sqlite", mode) for mode in WRITE_MODES), ("postgres", "overwrite"), ("rest", "create")),
    indirect=["catalog_properties"],
)
def test_a_write_refused_for_good_leaves_no_file_behind(
    catalog_properties, catalog, manager, namespace, monkeypatch, mode
):
    """Every attempt refused: CommitConflictError after the policy's attempts, the table as it
    was, and neither its data files nor any attempt's manifests stay on storage."""
    table = f"{namespace}.events"
    state: Rows = {}
    if mode != "create":
        state = _seed(manager, table, {"a": range(40), "b": range(20)})
        before = manager.load_table(table)
    refusals = _refuse_commits(monkeypatch, catalog, None)
    attempts = 3

    with pytest.raises(CommitConflictError, match=f"after {attempts} attempts"):
        _write(manager, table, mode, FAST.model_copy(update={"max_attempts": attempts}))

    assert refusals.calls == attempts
    assert len(refusals.metadata_files) >= 2 * attempts, "no manifest list or manifest refused"
    if mode == "create":
        # On a REST catalog the empty table is created first (its creates are not atomic with
        # the data commit): it may stay, with no snapshot and no data file.
        if catalog.table_exists(table):
            assert manager.load_table(table).current_snapshot() is None
        left = {
            p
            for location in refusals.locations
            for p in list_warehouse_files(location, catalog_properties)
            if "/metadata/" not in p
        }
        assert left == set(), "a write that created nothing left data files"
    else:
        after = manager.load_table(table)
        assert after.metadata_location == before.metadata_location
        assert rows_of(manager.scan(after)) == state
        assert set(storage_files(after, catalog_properties)) == set(
            storage_files(before, catalog_properties)
        )
        assert unreferenced_files(after, catalog_properties) == set()


def test_the_managers_retry_policy_bounds_its_writes(
    sqlite_catalog_properties, namespace, monkeypatch
):
    """``IcebergTableManager(retry=...)`` is the policy of writes that do not bring their own
    (as ``IcebergCatalogResource.get_manager`` passes ``max_commit_attempts``)."""
    catalog = load_test_catalog(sqlite_catalog_properties)
    try:
        attempts = 2
        manager = IcebergTableManager(
            catalog, retry=FAST.model_copy(update={"max_attempts": attempts})
        )
        table = f"{namespace}.events"
        _seed(manager, table, {"a": range(5)})
        refusals = _refuse_commits(monkeypatch, catalog, None)
        with pytest.raises(CommitConflictError):
            manager.write(table, id_rows("b", range(5), "refused"))
        assert refusals.calls == attempts
    finally:
        dispose_catalog(catalog)


def test_a_commit_whose_response_is_lost_lands_once(
    catalog_properties, catalog, manager, namespace, monkeypatch
):
    """The catalog commits, then the response is lost (state unknown): the write finds its
    own snapshot by write id instead of committing again; rows land once, no file is left."""
    table = f"{namespace}.events"
    state = _seed(manager, table, {"a": range(20)})
    commit_table = catalog.commit_table
    calls = [0]

    def commit_then_lose_the_response(target: Table, requirements: Any, updates: Any) -> Any:
        calls[0] += 1
        commit_table(target, requirements, updates)
        if calls[0] == 1:
            raise CommitStateUnknownException("the connection dropped after the commit (injected)")

    monkeypatch.setattr(catalog, "commit_table", commit_then_lose_the_response)
    data = id_rows("b", range(12), "once")
    result = manager.write(table, data)

    assert calls[0] == 1
    assert result.commit_attempts == 1
    loaded = manager.load_table(table)
    assert len(loaded.snapshots()) == 2
    assert loaded.metadata.current_snapshot_id == result.snapshot_id
    assert result.rows_added == data.num_rows
    assert rows_of(manager.scan(loaded)) == state | rows_of(data)
    assert unreferenced_files(loaded, catalog_properties) == set()


# ---------------------------------------------------------------------- the layout moves on


def _interleave(
    monkeypatch: pytest.MonkeyPatch, catalog: Catalog, other_write: Callable[[], WriteResult]
) -> list[WriteResult]:
    """Let ``other_write`` (another writer, on its own catalog) commit right before this
    catalog's first commit request, as a concurrent run landing in between does."""
    commit_table = catalog.commit_table
    interleaved: list[WriteResult] = []

    def another_writer_commits_first(target: Table, requirements: Any, updates: Any) -> Any:
        if not interleaved:
            interleaved.append(other_write())
        return commit_table(target, requirements, updates)

    monkeypatch.setattr(catalog, "commit_table", another_writer_commits_first)
    return interleaved


@pytest.mark.parametrize(
    ("catalog_properties", "moved"),
    _on(*((kind, moved) for kind in ("sqlite", "rest") for moved in ("schema", "rewrite"))),
    indirect=["catalog_properties"],
)
def test_data_files_an_attempt_no_longer_needs_do_not_stay_behind(
    catalog_properties, catalog, manager, namespace, monkeypatch, moved
):
    """A concurrent commit lands between this write's planning and its commit, so the retry
    needs other data files than the first attempt wrote:

    * ``schema``: the other writer adds a column; the retry writes the rows again for the new
      schema.
    * ``rewrite``: this write replaces ``id < 10`` across partitions, rewriting the files
      of ``a`` and ``b`` without those rows; the other writer replaces partition ``b`` with
      rows ``id >= 10``, so the retry no longer touches ``b`` and its rewrite is not needed.

    Either way the write lands, and the files written for the first attempt only, which no
    snapshot references, must not stay on storage."""
    table = f"{namespace}.events"
    state = _seed(manager, table, {"a": range(30), "b": range(30)})
    other_catalog = load_test_catalog(catalog_properties)
    other = IcebergTableManager(other_catalog)
    if moved == "schema":
        theirs = id_rows("b", range(30, 35), "other").append_column(
            "score", pa.array([float(i) for i in range(5)], pa.float64())
        )
        their_config = WriteConfig()
        ours, our_config = id_rows("c", range(8), "ours"), WriteConfig()
        expected = state | rows_of(theirs.drop_columns(["score"])) | rows_of(ours)
    else:
        theirs = id_rows("b", range(10, 20), "other")
        their_config = WriteConfig(mode="overwrite", row_filter=EqualTo("part", "b"))
        ours = id_rows("a", range(10), "ours")
        our_config = WriteConfig(mode="overwrite", row_filter=LessThan("id", 10))
        kept_a = {key: row for key, row in state.items() if key[0] == "a" and key[1] >= 10}
        expected = kept_a | rows_of(theirs) | rows_of(ours)
    _interleave(monkeypatch, catalog, lambda: other.write(table, theirs, their_config))
    try:
        result = manager.write(table, ours, our_config)
    finally:
        dispose_catalog(other_catalog)

    assert result.commit_attempts == 2
    loaded = manager.load_table(table)
    rows = manager.scan(loaded)
    assert rows_of(rows.select(["part", "id", "writer", "payload"])) == expected
    assert unreferenced_files(loaded, catalog_properties) == set()


# ---------------------------------------------------------------------- format version 3

V3_SCHEMA = Schema(
    *(
        NestedField(field_id, name, field_type, required=False)
        for field_id, name, field_type in (
            (1, "part", StringType()),
            (2, "id", LongType()),
            (3, "writer", StringType()),
            (4, "payload", StringType()),
        )
    )
)


def _create_v3_table(catalog: Catalog, catalog_kind: str, namespace: str, name: str) -> Table:
    """A format-version 3 table. A REST catalog creates it (the server writes the metadata);
    PyIceberg 0.12 cannot write v3 metadata itself, neither to create nor to upgrade a table,
    so on SQL catalogs the v3 metadata file an engine such as Spark writes is registered."""
    catalog.create_namespace(namespace)
    identifier = (namespace, name)
    if catalog_kind == "rest":
        return catalog.create_table(identifier, V3_SCHEMA, properties={"format-version": "3"})
    v2 = catalog.create_table(identifier, V3_SCHEMA)
    with v2.io.new_input(v2.metadata_location).open() as stream:
        metadata = json.loads(stream.read())
    metadata.update({"format-version": 3, "next-row-id": 0})
    location = f"{v2.location()}/metadata/00001-{uuid.uuid4()}.metadata.json"
    with v2.io.new_output(location).create() as stream:
        stream.write(json.dumps(metadata).encode())
    catalog.drop_table(identifier)
    return catalog.register_table(identifier, location)


def test_a_format_version_3_table_is_refused_before_any_file_is_written(
    catalog_properties, catalog_kind, catalog, manager, namespace
):
    """Through the manager (every write mode) and through the IO manager: InvalidInputError
    naming the table and its version, and nothing added under the table location."""
    v3 = _create_v3_table(catalog, catalog_kind, namespace, "modern")
    assert v3.metadata.format_version == 3
    table = f"{namespace}.modern"
    stored = storage_files(v3, catalog_properties)
    refusal = rf"'{namespace}\.modern'.*format version 3"
    data = id_rows("a", range(5), "refused")
    for config in (
        WriteConfig(),
        WriteConfig(mode="overwrite", row_filter=EqualTo("part", "a")),
        WriteConfig(mode="upsert", join_cols=("part", "id")),
    ):
        with pytest.raises(InvalidInputError, match=refusal):
            manager.write(table, data, config)
        assert storage_files(v3, catalog_properties) == stored, f"{config.mode} left files"

    @dg.asset(name="modern", key_prefix=[namespace], io_manager_key="iceberg")
    def modern() -> pa.Table:
        return data

    resource = IcebergCatalogResource(catalog=CustomCatalogConfig(properties=catalog_properties))
    with dg.instance_for_test() as instance, pytest.raises(InvalidInputError, match=refusal):
        dg.materialize([modern], resources=create_iceberg_resources(resource), instance=instance)
    assert storage_files(v3, catalog_properties) == stored
    loaded = manager.load_table(table)
    assert loaded.metadata_location == v3.metadata_location
    assert loaded.snapshots() == []


def test_a_first_write_asking_for_format_version_3_is_refused(sqlite_catalog_properties, namespace):
    """The write that would create a v3 table is refused like a write to one: InvalidInputError
    naming the table and the version, and no table is created."""
    catalog = load_test_catalog(sqlite_catalog_properties)
    try:
        manager = IcebergTableManager(catalog)
        table = f"{namespace}.modern"
        config = WriteConfig(partition_spec=PART_SPEC, table_properties={"format-version": "3"})
        with pytest.raises(InvalidInputError, match=rf"'{namespace}\.modern'.*format version 3"):
            manager.write(table, id_rows("a", range(5), "refused"), config)
        assert not catalog.table_exists((namespace, "modern"))
        warehouse = sqlite_catalog_properties["warehouse"]
        assert list_warehouse_files(warehouse, sqlite_catalog_properties) == {}
    finally:
        dispose_catalog(catalog)
