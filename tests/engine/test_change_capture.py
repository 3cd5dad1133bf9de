"""Change-data-capture upserts against a reference merge: deletes, versions, out-of-order and
replayed batches, duplicates within a batch, and full syncs of a slice."""

import itertools
import tempfile

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.expressions import EqualTo

from floe_dagster_iceberg import ChangeCapture, IcebergTableManager, UpsertKeyError, WriteConfig

WAREHOUSE = tempfile.mkdtemp(prefix="cdc-")
MANAGER = IcebergTableManager(
    SqlCatalog("cdc", uri=f"sqlite:///{WAREHOUSE}/catalog.db", warehouse=f"file://{WAREHOUSE}")
)
TABLE_NUMBERS = itertools.count()
CDC = ChangeCapture(delete_column="op", version_column="v")
SCHEMA = pa.schema([("k", pa.int64()), ("v", pa.int64()), ("op", pa.string()), ("x", pa.int64())])


def _batch(changes: list[tuple[int, int, str, int]]) -> pa.Table:
    return pa.Table.from_pylist(
        [{"k": k, "v": v, "op": op, "x": x} for k, v, op, x in changes], schema=SCHEMA
    )


def _reference(state: dict[int, tuple], batch: list[tuple[int, int, str, int]]) -> None:
    """The documented merge: the newest change of each key in the batch applies when the key is
    absent (a delete of an absent key does nothing) or its version is newer than the row's."""
    newest: dict[int, tuple] = {}
    for change in batch:
        if change[0] not in newest or change[1] > newest[change[0]][1]:
            newest[change[0]] = change
    for key, (_, version, op, x) in newest.items():
        row = state.get(key)
        if row is not None and version <= row[1]:
            continue
        if op == "D":
            state.pop(key, None)
        else:
            state[key] = (key, version, op, x)


def _rows(table: str) -> set[tuple]:
    return {(r["k"], r["v"], r["op"], r["x"]) for r in MANAGER.scan(table).to_pylist()}


CHANGE = st.tuples(st.integers(0, 5), st.sampled_from(["I", "U", "D"]), st.integers(0, 9))


@st.composite
def change_batches(draw, with_deletes: bool = True):
    changes = draw(st.lists(CHANGE, min_size=1, max_size=24))
    # Versions are unique per change; the order the batches arrive in is drawn separately.
    versioned = [
        (k, version + 1, op if with_deletes else "U", x)
        for version, (k, op, x) in enumerate(changes)
    ]
    arrival = draw(st.permutations(versioned))
    cuts = sorted(draw(st.lists(st.integers(1, len(arrival)), max_size=3, unique=True)))
    bounds = [0, *cuts, len(arrival)]
    return [arrival[a:b] for a, b in itertools.pairwise(bounds) if b > a]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(change_batches())
def test_change_batches_apply_like_the_reference_merge(batches):
    table = f"cdc.t{next(TABLE_NUMBERS)}"
    state: dict[int, tuple] = {}
    for batch in batches:
        MANAGER.upsert(table, _batch(batch), ["k"], change_capture=CDC)
        _reference(state, batch)
        assert _rows(table) == set(state.values())


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(change_batches(with_deletes=False))
def test_out_of_order_batches_end_at_the_newest_version_of_each_key(batches):
    table = f"cdc.t{next(TABLE_NUMBERS)}"
    for batch in batches:
        MANAGER.upsert(table, _batch(batch), ["k"], change_capture=CDC)

    newest = {}
    for change in itertools.chain.from_iterable(batches):
        if change[0] not in newest or change[1] > newest[change[0]][1]:
            newest[change[0]] = change
    assert _rows(table) == set(newest.values())


def test_replaying_a_batch_changes_nothing():
    table = f"cdc.t{next(TABLE_NUMBERS)}"
    batch = _batch([(1, 1, "I", 10), (2, 2, "I", 20), (1, 3, "U", 11), (2, 4, "D", 0)])
    MANAGER.upsert(table, batch, ["k"], change_capture=CDC)
    snapshots = len(MANAGER.snapshots(table))

    again = MANAGER.upsert(table, batch, ["k"], change_capture=CDC)

    assert (again.rows_updated, again.rows_inserted, again.rows_removed) == (0, 0, 0)
    assert len(MANAGER.snapshots(table)) == snapshots
    assert _rows(table) == {(1, 3, "U", 11)}


def test_deletes_are_counted_and_late_changes_ignored():
    table = f"cdc.t{next(TABLE_NUMBERS)}"
    MANAGER.upsert(
        table, _batch([(1, 5, "I", 1), (2, 5, "I", 2), (3, 5, "I", 3)]), ["k"], change_capture=CDC
    )

    result = MANAGER.upsert(
        table,
        _batch([(1, 6, "D", 0), (2, 4, "U", 99), (3, 7, "U", 33)]),
        ["k"],
        change_capture=CDC,
    )

    assert (result.rows_removed, result.rows_updated, result.rows_unchanged) == (1, 1, 1)
    assert _rows(table) == {(2, 5, "I", 2), (3, 7, "U", 33)}


def test_full_sync_deletes_rows_of_the_slice_missing_from_the_input():
    table = f"cdc.t{next(TABLE_NUMBERS)}"
    rows = pa.table({"part": ["a", "a", "b"], "k": [1, 2, 3], "x": [1, 2, 3]})
    MANAGER.write(table, rows, WriteConfig(mode="append"))
    sync = ChangeCapture(delete_missing=True)

    result = MANAGER.upsert(
        table,
        pa.table({"part": ["a"], "k": [2], "x": [20]}),
        ["k"],
        scope=EqualTo("part", "a"),
        change_capture=sync,
    )

    assert (result.rows_removed, result.rows_updated) == (1, 1)
    stored = {(r["part"], r["k"], r["x"]) for r in MANAGER.scan(table).to_pylist()}
    assert stored == {("a", 2, 20), ("b", 3, 3)}


def test_two_different_rows_with_the_same_newest_version_are_refused():
    table = f"cdc.t{next(TABLE_NUMBERS)}"

    with pytest.raises(UpsertKeyError, match="same newest 'v'"):
        MANAGER.upsert(table, _batch([(1, 2, "U", 1), (1, 2, "U", 2)]), ["k"], change_capture=CDC)
    assert not MANAGER.table_exists(table)
