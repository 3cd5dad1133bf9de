"""The upsert engine against an in-memory reference merge, on a real SQLite catalog."""

from __future__ import annotations

import itertools
import json
import threading
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyiceberg.catalog import Catalog, load_catalog
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.expressions import (
    AlwaysTrue,
    And,
    BooleanExpression,
    EqualTo,
    GreaterThanOrEqual,
    In,
    LessThan,
    visitors,
)
from pyiceberg.io.pyarrow import _dataframe_to_data_files
from pyiceberg.manifest import ManifestEntry, ManifestEntryStatus, ManifestFile
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.table import Table
from pyiceberg.table.snapshots import Operation
from pyiceberg.table.update.snapshot import _FastAppendFiles
from pyiceberg.transforms import BucketTransform, DayTransform, IdentityTransform
from pyiceberg.types import (
    DateType,
    DecimalType,
    DoubleType,
    ListType,
    LongType,
    NestedField,
    StringType,
    StructType,
    TimestamptzType,
)

from floe_dagster_iceberg.engine.config import UpsertScope
from floe_dagster_iceberg.engine.manager import IcebergTableManager
from floe_dagster_iceberg.engine.snapshot import FileChange, produce_snapshot
from floe_dagster_iceberg.engine.upsert import (
    UpsertOutcome,
    UpsertPlan,
    plan_upsert,
    validate_upsert_input,
)
from floe_dagster_iceberg.errors import PartitionMismatchError, UpsertKeyError

PARTS = ("p0", "p1", "p2")
FAST_RETRIES = {"commit.retry.min-wait-ms": "1", "commit.retry.max-wait-ms": "5"}


# --------------------------------------------------------------------------------------------
# Fixtures and helpers
# --------------------------------------------------------------------------------------------


def _new_catalog(directory: Path) -> Catalog:
    directory.mkdir(parents=True, exist_ok=True)
    return load_catalog(
        "floe", type="sql", uri=f"sqlite:///{directory}/catalog.db", warehouse=f"file://{directory}"
    )


@pytest.fixture
def catalog(tmp_path: Path) -> Catalog:
    cat = _new_catalog(tmp_path)
    cat.create_namespace("t")
    return cat


@pytest.fixture
def manager(catalog: Catalog) -> IcebergTableManager:
    return IcebergTableManager(catalog)


def _schema(composite: bool) -> Schema:
    keys = [NestedField(1, "id", LongType(), required=True)]
    if composite:
        keys.append(NestedField(2, "code", StringType(), required=True))
    return Schema(
        *keys,
        NestedField(3, "part", StringType(), required=False),
        NestedField(4, "qty", LongType(), required=False),
        NestedField(5, "label", StringType(), required=False),
        NestedField(6, "amount", DecimalType(9, 2), required=False),
    )


def _identity_spec(schema: Schema, column: str = "part") -> PartitionSpec:
    source = schema.find_field(column).field_id
    return PartitionSpec(
        PartitionField(source_id=source, field_id=1000, transform=IdentityTransform(), name=column)
    )


def _create(
    catalog: Catalog,
    schema: Schema,
    spec: PartitionSpec | None = None,
    batches: Sequence[list[dict[str, Any]]] = (),
) -> Table:
    table = catalog.create_table(
        f"t.u{uuid.uuid4().hex[:10]}",
        schema=schema,
        partition_spec=spec or PartitionSpec(),
        properties=FAST_RETRIES,
    )
    for batch in batches:
        if batch:
            table.append(_arrow(table, batch))
    return table.refresh()


def _arrow(table: Table, rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=table.schema().as_arrow())


def _rows(table: Table) -> list[dict[str, Any]]:
    return _sorted(table.refresh().scan().to_arrow().to_pylist())


def _sorted(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(rows, key=lambda row: json.dumps(row, sort_keys=True, default=str))


def _name(table: Table) -> str:
    return ".".join(table.name())


def _plan(
    table: Table,
    rows: list[dict[str, Any]] | pa.Table,
    join_cols: Sequence[str],
    scope: BooleanExpression = AlwaysTrue(),
    **flags: bool,
) -> UpsertPlan:
    """Plan an upsert against ``table`` as it is now (its new files are written)."""
    data = rows if isinstance(rows, pa.Table) else _arrow(table, rows)
    return plan_upsert(
        table.metadata,
        table.metadata,
        table.io,
        data,
        table_name=_name(table),
        join_cols=join_cols,
        when_matched_update_all=flags.get("update", True),
        when_not_matched_insert_all=flags.get("insert", True),
        scope_filter=scope,
    )


def _commit(table: Table, plan: UpsertPlan) -> None:
    """Commit a plan as one snapshot on top of ``table``'s snapshot (refused if it moved)."""
    if not plan.outcome.changed:
        return
    operation = Operation.OVERWRITE if plan.removed else Operation.APPEND
    change = FileChange(operation, plan.added, plan.removed, plan.conflict_filter)
    produced = produce_snapshot(table.metadata, table.io, change, {})
    table.catalog.commit_table(table, produced.requirements, produced.updates)


def _stage(
    table: Table,
    rows: list[dict[str, Any]] | pa.Table,
    join_cols: Sequence[str],
    scope: BooleanExpression = AlwaysTrue(),
    **flags: bool,
) -> UpsertOutcome:
    """Plan an upsert on ``table`` and commit it."""
    plan = _plan(table, rows, join_cols, scope, **flags)
    _commit(table, plan)
    return plan.outcome


def _file_paths(table: Table) -> set[str]:
    return set(table.refresh().inspect.files().column("file_path").to_pylist())


def reference_merge(
    existing: list[dict[str, Any]],
    data: list[dict[str, Any]],
    join_cols: Sequence[str],
    in_scope: Any = None,
    update: bool = True,
    insert: bool = True,
) -> tuple[list[dict[str, Any]], tuple[int, int, int]]:
    """The merge computed row by row in memory: (final rows, (updated, inserted, unchanged))."""

    def key(row: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(row[name] for name in join_cols)

    index = {key(row): i for i, row in enumerate(existing) if in_scope is None or in_scope(row)}
    removed: set[int] = set()
    added: list[dict[str, Any]] = []
    updated = inserted = unchanged = 0
    for row in data:
        position = index.get(key(row))
        if position is None:
            if insert:
                added.append(row)
                inserted += 1
        elif update and existing[position] != row:
            removed.add(position)
            added.append(row)
            updated += 1
        else:
            unchanged += 1
    final = [row for i, row in enumerate(existing) if i not in removed] + added
    return _sorted(final), (updated, inserted, unchanged)


# --------------------------------------------------------------------------------------------
# Property: the result always equals the reference merge
# --------------------------------------------------------------------------------------------

_values = {
    "qty": st.one_of(st.none(), st.integers(-2, 2)),
    "label": st.one_of(st.none(), st.sampled_from(["x", "y", "ü"])),
    "amount": st.one_of(
        st.none(), st.integers(-300, 300).map(lambda cents: Decimal(cents).scaleb(-2))
    ),
}


@st.composite
def scenarios(draw: st.DrawFn) -> dict[str, Any]:
    composite = draw(st.booleans())
    partitioned = draw(st.booleans())
    key_strategy = (
        st.tuples(st.integers(0, 6), st.sampled_from(["a", "b", "c"]))
        if composite
        else st.tuples(st.integers(0, 30))
    )
    join_cols = ["id", "code"] if composite else ["id"]

    def row(key: tuple[Any, ...], part: str) -> dict[str, Any]:
        values = {name: draw(strategy) for name, strategy in _values.items()}
        return {**dict(zip(join_cols, key, strict=True)), "part": part, **values}

    existing_keys = draw(st.lists(key_strategy, unique=True, max_size=20))
    existing = [row(key, draw(st.sampled_from(PARTS))) for key in existing_keys]
    cuts = sorted(draw(st.lists(st.integers(0, len(existing)), max_size=2)))
    bounds = [0, *cuts, len(existing)]
    batches = [existing[a:b] for a, b in itertools.pairwise(bounds)]

    scope_part = draw(st.sampled_from(PARTS)) if partitioned and draw(st.booleans()) else None
    input_keys = draw(st.lists(key_strategy, unique=True, max_size=20))
    by_key = {tuple(r[c] for c in join_cols): r for r in existing}
    data = []
    for key in input_keys:
        old = by_key.get(key)
        if old is not None and draw(st.booleans()) and (scope_part in (None, old["part"])):
            data.append(dict(old))  # an unchanged row
        else:
            part = scope_part or (
                old["part"]
                if old is not None and draw(st.booleans())
                else draw(st.sampled_from(PARTS))
            )
            data.append(row(key, part))
    return {
        "composite": composite,
        "partitioned": partitioned,
        "join_cols": join_cols,
        "batches": batches,
        "existing": existing,
        "data": data,
        "scope_part": scope_part,
        "update": draw(st.booleans()),
        "insert": draw(st.booleans()),
    }


@pytest.mark.parametrize("via", ["manager", "plan"])
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(scenario=scenarios())
def test_upsert_equals_reference_merge(
    manager: IcebergTableManager, via: str, scenario: dict[str, Any]
) -> None:
    """Through ``IcebergTableManager.upsert`` and through ``plan_upsert`` committed directly."""
    schema = _schema(scenario["composite"])
    spec = _identity_spec(schema) if scenario["partitioned"] else None
    table = _create(manager.catalog, schema, spec, scenario["batches"])
    join_cols = scenario["join_cols"]
    scope_part = scenario["scope_part"]
    snapshots = len(table.metadata.snapshots)

    if via == "manager":
        result: Any = manager.upsert(
            _name(table),
            _arrow(table, scenario["data"]),
            join_cols=join_cols,
            when_matched_update_all=scenario["update"],
            when_not_matched_insert_all=scenario["insert"],
            scope=EqualTo("part", scope_part) if scope_part else UpsertScope.TABLE,
        )
    else:
        result = _stage(
            table,
            scenario["data"],
            join_cols,
            scope=EqualTo("part", scope_part) if scope_part else AlwaysTrue(),
            update=scenario["update"],
            insert=scenario["insert"],
        )

    expected, (updated, inserted, unchanged) = reference_merge(
        scenario["existing"],
        scenario["data"],
        join_cols,
        in_scope=(lambda r: r["part"] == scope_part) if scope_part else None,
        update=scenario["update"],
        insert=scenario["insert"],
    )
    assert _rows(table) == expected
    assert (result.rows_updated, result.rows_inserted, result.rows_unchanged) == (
        updated,
        inserted,
        unchanged,
    )
    # One commit when something changed, none otherwise.
    assert len(table.refresh().metadata.snapshots) == snapshots + bool(updated or inserted)


# --------------------------------------------------------------------------------------------
# Key types, the range path (more than 200 distinct keys) and non-identity partitions
# --------------------------------------------------------------------------------------------

_KEY_TYPES = {
    "long": (LongType(), lambda i: i * 7),
    "string": (StringType(), lambda i: f"key-{i:05d}-with-a-long-common-prefix"),
    "date": (DateType(), lambda i: date(2020, 1, 1) + timedelta(days=i)),
    "timestamptz": (
        TimestamptzType(),
        lambda i: datetime(2024, 1, 1, tzinfo=UTC) + timedelta(minutes=17 * i),
    ),
    "decimal": (DecimalType(12, 3), lambda i: Decimal(i * 13).scaleb(-3)),
}


@pytest.mark.parametrize("key_type", sorted(_KEY_TYPES))
@pytest.mark.parametrize("n_keys", [5, 250])
def test_key_types_and_many_keys(manager: IcebergTableManager, key_type: str, n_keys: int) -> None:
    iceberg_type, make = _KEY_TYPES[key_type]
    schema = Schema(
        NestedField(1, "k", iceberg_type, required=True),
        NestedField(2, "v", LongType(), required=False),
    )
    existing = [{"k": make(i), "v": i} for i in range(0, 600, 2)]
    table = _create(manager.catalog, schema, None, [existing[:150], existing[150:]])
    # Even keys exist (every third one changes), odd keys are new.
    data = [{"k": make(i), "v": i + (1 if i % 3 == 0 else 0)} for i in range(100, 100 + n_keys)]

    result = manager.upsert(_name(table), _arrow(table, data), join_cols=["k"])

    expected, counts = reference_merge(existing, data, ["k"])
    assert _rows(table) == expected
    assert (result.rows_updated, result.rows_inserted, result.rows_unchanged) == counts


def test_day_partitioned_scope_and_bucketed_table(manager: IcebergTableManager) -> None:
    schema = Schema(
        NestedField(1, "id", LongType(), required=True),
        NestedField(2, "ts", TimestamptzType(), required=False),
        NestedField(3, "v", StringType(), required=False),
    )
    day = PartitionSpec(
        PartitionField(source_id=2, field_id=1000, transform=DayTransform(), name="ts_day")
    )
    start = datetime(2024, 3, 1, tzinfo=UTC)
    existing = [{"id": i, "ts": start + timedelta(hours=5 * i), "v": f"v{i}"} for i in range(30)]
    table = _create(manager.catalog, schema, day, [existing])
    day_two = And(
        GreaterThanOrEqual("ts", (start + timedelta(days=2)).isoformat()),
        LessThan("ts", (start + timedelta(days=3)).isoformat()),
    )
    # id 1 lives on day one: with the day-two scope it is inserted again, not moved.
    data = [
        {"id": 10, "ts": start + timedelta(days=2, hours=2), "v": "changed"},
        {"id": 1, "ts": start + timedelta(days=2, hours=3), "v": "again"},
    ]
    result = manager.upsert(_name(table), _arrow(table, data), join_cols=["id"], scope=day_two)

    in_day_two = lambda r: start + timedelta(days=2) <= r["ts"] < start + timedelta(days=3)  # noqa: E731
    expected, counts = reference_merge(existing, data, ["id"], in_scope=in_day_two)
    assert _rows(table) == expected
    assert (result.rows_updated, result.rows_inserted, result.rows_unchanged) == counts == (1, 1, 0)

    bucketed = PartitionSpec(
        PartitionField(source_id=1, field_id=1000, transform=BucketTransform(4), name="id_bucket")
    )
    table = _create(manager.catalog, schema, bucketed, [existing])
    data = [{"id": i, "ts": start, "v": "new"} for i in range(0, 40, 3)]
    result = manager.upsert(_name(table), _arrow(table, data), join_cols=["id"])
    expected, counts = reference_merge(existing, data, ["id"])
    assert _rows(table) == expected
    assert (result.rows_updated, result.rows_inserted, result.rows_unchanged) == counts


# --------------------------------------------------------------------------------------------
# Partition scope
# --------------------------------------------------------------------------------------------


def test_partition_scope_never_moves_a_row_out_of_another_partition(
    manager: IcebergTableManager,
) -> None:
    schema = _schema(composite=False)
    table = _create(
        manager.catalog,
        schema,
        _identity_spec(schema),
        [
            [{"id": 1, "part": "1", "qty": 10, "label": "one", "amount": None}],
            [{"id": 2, "part": "2", "qty": 20, "label": "two", "amount": None}],
        ],
    )
    partition_one_files = {
        row["file_path"]
        for row in table.inspect.files().to_pylist()
        if row["partition"]["part"] == "1"
    }
    data = [
        {"id": 1, "part": "2", "qty": 11, "label": "moved?", "amount": None},
        {"id": 2, "part": "2", "qty": 21, "label": "two", "amount": None},
    ]

    result = manager.upsert(_name(table), _arrow(table, data), ["id"], scope=EqualTo("part", "2"))

    assert (result.rows_updated, result.rows_inserted, result.rows_unchanged) == (1, 1, 0)
    rows = _rows(table)
    assert {"id": 1, "part": "1", "qty": 10, "label": "one", "amount": None} in rows
    assert {"id": 1, "part": "2", "qty": 11, "label": "moved?", "amount": None} in rows
    assert {"id": 2, "part": "2", "qty": 21, "label": "two", "amount": None} in rows
    assert len(rows) == 3
    assert partition_one_files <= _file_paths(table)

    # id 1 now lives in partitions "1" and "2"; a table-wide match would be ambiguous.
    with pytest.raises(UpsertKeyError, match="already holds more than one row"):
        manager.upsert(
            _name(table),
            _arrow(table, [{"id": 1, "part": "1", "qty": 13, "label": "x", "amount": None}]),
            ["id"],
            scope=UpsertScope.TABLE,
        )


def test_table_scope_moves_a_row_between_partitions(manager: IcebergTableManager) -> None:
    schema = _schema(composite=False)
    existing = [
        {"id": 1, "part": "1", "qty": 10, "label": "one", "amount": None},
        {"id": 2, "part": "2", "qty": 20, "label": "two", "amount": None},
    ]
    table = _create(manager.catalog, schema, _identity_spec(schema), [existing])
    data = [{"id": 1, "part": "2", "qty": 10, "label": "one", "amount": None}]

    result = manager.upsert(_name(table), _arrow(table, data), ["id"], scope=UpsertScope.TABLE)

    assert (result.rows_updated, result.rows_inserted) == (1, 0)
    assert _rows(table) == _sorted([data[0], existing[1]])


def test_rows_outside_the_scope_are_refused_before_writing(catalog: Catalog) -> None:
    schema = _schema(composite=False)
    row = {"id": 1, "part": "1", "qty": 1, "label": None, "amount": None}
    table = _create(catalog, schema, _identity_spec(schema), [[row]])
    snapshots = len(table.metadata.snapshots)
    with pytest.raises(PartitionMismatchError, match="1 upsert row"):
        _stage(table, [{**row, "part": "2"}], ["id"], scope=EqualTo("part", "1"))
    assert len(table.refresh().metadata.snapshots) == snapshots


# --------------------------------------------------------------------------------------------
# Only files that can hold the keys are read, only files with changed keys are rewritten
# --------------------------------------------------------------------------------------------


def _ranged_table(catalog: Catalog, partitioned: bool) -> tuple[Table, list[dict[str, Any]]]:
    schema = _schema(composite=False)
    batches = [
        [
            {"id": i, "part": PARTS[i // 100 % 3], "qty": i % 5, "label": "l", "amount": None}
            for i in range(start, start + 100)
        ]
        for start in range(0, 600, 100)
    ]
    spec = _identity_spec(schema) if partitioned else None
    return _create(catalog, schema, spec, batches), [r for b in batches for r in b]


def test_only_files_that_can_hold_the_keys_are_read(catalog: Catalog) -> None:
    table, existing = _ranged_table(catalog, partitioned=False)
    before = _file_paths(table)
    assert len(before) == 6
    data = [
        {"id": 150, "part": "p1", "qty": 99, "label": "l", "amount": None},  # changed
        {"id": 160, "part": "p1", "qty": 0, "label": "l", "amount": None},  # unchanged
        {"id": 450, "part": "p1", "qty": 0, "label": "l", "amount": None},  # unchanged
        {"id": 10_000, "part": "p1", "qty": 1, "label": "new", "amount": None},
    ]

    outcome = _stage(table, data, ["id"])

    assert outcome == UpsertOutcome(
        rows_updated=1, rows_inserted=1, rows_unchanged=2, files_rewritten=1, files_scanned=2
    )
    after = _file_paths(table)
    assert len(before - after) == 1  # only the file holding id 150 was replaced
    replaced = next(iter(before - after))
    assert replaced in {
        row["data_file"]["file_path"]
        for row in table.inspect.entries().to_pylist()
        if row["status"] == 2  # deleted by our snapshot
    }
    assert _rows(table) == reference_merge(existing, data, ["id"])[0]


def test_many_keys_use_min_max_ranges_and_partition_pruning(catalog: Catalog) -> None:
    table, existing = _ranged_table(catalog, partitioned=True)
    before = _file_paths(table)
    # 250 keys (more than an In predicate lists) in [200, 450): files 200-299, 300-399, 400-499
    # can hold them; the scope keeps only partition p0 (ids 300-399).
    data = [
        {"id": i, "part": "p0", "qty": (i + 1) % 5, "label": "l", "amount": None}
        for i in range(200, 450)
    ]
    outcome = _stage(table, data, ["id"], scope=EqualTo("part", "p0"))

    assert outcome.files_scanned == 1
    assert outcome.files_rewritten == 1
    assert (outcome.rows_updated, outcome.rows_inserted) == (100, 150)
    assert len(before - _file_paths(table)) == 1
    expected, _ = reference_merge(existing, data, ["id"], in_scope=lambda r: r["part"] == "p0")
    assert _rows(table) == expected


def test_unchanged_rows_stage_nothing(manager: IcebergTableManager) -> None:
    table, existing = _ranged_table(manager.catalog, partitioned=False)
    snapshots = len(table.metadata.snapshots)

    result = manager.upsert(_name(table), _arrow(table, existing[100:250]), ["id"])

    assert (result.rows_updated, result.rows_inserted, result.rows_unchanged) == (0, 0, 150)
    assert not result.committed
    assert len(table.refresh().metadata.snapshots) == snapshots


def test_one_snapshot_per_upsert_with_counts(manager: IcebergTableManager) -> None:
    table, existing = _ranged_table(manager.catalog, partitioned=True)
    snapshots = len(table.metadata.snapshots)
    data = [{**existing[5], "qty": 42}, {**existing[305], "qty": 42}]
    data.append({"id": 999, "part": "p2", "qty": 1, "label": None, "amount": Decimal("1.25")})

    result = manager.upsert(_name(table), _arrow(table, data), ["id"])

    table.refresh()
    assert len(table.metadata.snapshots) == snapshots + 1
    assert result.snapshot_id == table.current_snapshot().snapshot_id
    assert (result.rows_updated, result.rows_inserted, result.files_rewritten) == (2, 1, 2)
    summary = table.current_snapshot().summary
    assert summary.operation.value == "overwrite"
    assert int(summary["deleted-data-files"]) == 2
    assert _rows(table) == reference_merge(existing, data, ["id"])[0]


# --------------------------------------------------------------------------------------------
# Change detection: nulls, NaN, nested types
# --------------------------------------------------------------------------------------------


def test_change_detection_is_null_safe_for_nan_and_nested_types(catalog: Catalog) -> None:
    schema = Schema(
        NestedField(1, "id", LongType(), required=True),
        NestedField(2, "ratio", DoubleType(), required=False),
        NestedField(3, "tags", ListType(4, StringType(), element_required=False), required=False),
        NestedField(
            5,
            "info",
            StructType(
                NestedField(6, "a", LongType(), required=False),
                NestedField(7, "b", StringType(), required=False),
            ),
            required=False,
        ),
    )
    existing = [
        {"id": 1, "ratio": float("nan"), "tags": ["x", None], "info": {"a": 1, "b": None}},
        {"id": 2, "ratio": None, "tags": None, "info": None},
        {"id": 3, "ratio": 0.5, "tags": [], "info": {"a": None, "b": "z"}},
    ]
    table = _create(catalog, schema, None, [existing])
    snapshots = len(table.metadata.snapshots)

    outcome = _stage(table, existing, ["id"])
    assert (outcome.rows_updated, outcome.rows_unchanged, outcome.files_rewritten) == (0, 3, 0)
    assert len(table.refresh().metadata.snapshots) == snapshots

    changed = [
        {**existing[0], "tags": ["x", "y"]},
        {**existing[1], "info": {"a": None, "b": None}},
        {**existing[2], "ratio": None},
    ]
    outcome = _stage(table, changed, ["id"])
    assert (outcome.rows_updated, outcome.rows_unchanged) == (3, 0)
    rows = {row["id"]: row for row in _rows(table)}
    assert rows[1]["tags"] == ["x", "y"]
    assert rows[2]["info"] == {"a": None, "b": None}
    assert rows[3]["ratio"] is None


# --------------------------------------------------------------------------------------------
# Errors before writing anything
# --------------------------------------------------------------------------------------------


def _simple_table(catalog: Catalog) -> Table:
    schema = _schema(composite=True)
    rows = [
        {"id": i, "code": "a", "part": "p0", "qty": i, "label": None, "amount": None}
        for i in range(5)
    ]
    return _create(catalog, schema, None, [rows])


def test_duplicate_keys_in_the_input_are_named_and_counted(manager: IcebergTableManager) -> None:
    table = _simple_table(manager.catalog)
    snapshots = len(table.metadata.snapshots)
    row = {"id": 1, "code": "a", "part": "p0", "qty": 1, "label": None, "amount": None}
    data = [row, {**row, "qty": 2}, {**row, "qty": 3}, {**row, "id": 2}, {**row, "id": 2}]
    with pytest.raises(UpsertKeyError) as caught:
        manager.upsert(_name(table), _arrow(table, data), ["id", "code"])
    message = str(caught.value)
    assert "2 duplicated key(s)" in message
    assert "(id=1, code='a') x3" in message
    assert "(id=2, code='a') x2" in message
    assert "5 rows in all" in message
    assert len(table.refresh().metadata.snapshots) == snapshots


def test_null_keys_are_refused(catalog: Catalog) -> None:
    schema = Schema(
        NestedField(1, "id", LongType(), required=False),
        NestedField(2, "v", LongType(), required=False),
    )
    table = _create(catalog, schema, None, [[{"id": 1, "v": 1}]])
    with pytest.raises(UpsertKeyError, match=r"null values \('id': 2 row"):
        _stage(table, [{"id": None, "v": 1}, {"id": None, "v": 2}, {"id": 3, "v": 3}], ["id"])
    assert len(table.refresh().metadata.snapshots) == 1


def test_missing_and_mistyped_join_columns(manager: IcebergTableManager) -> None:
    table = _simple_table(manager.catalog)
    schema = table.schema()
    data = _arrow(
        table, [{"id": 1, "code": "a", "part": "p0", "qty": 1, "label": None, "amount": None}]
    )

    with pytest.raises(UpsertKeyError, match=r"\['nope'\] are missing from the data"):
        validate_upsert_input("t.x", schema, data, ["id", "nope"])
    with pytest.raises(UpsertKeyError, match="not columns of the table"):
        validate_upsert_input("t.x", schema, data.append_column("extra", pa.array([1])), ["extra"])
    with pytest.raises(UpsertKeyError, match="'id' is string in the data but long in the table"):
        validate_upsert_input("t.x", schema, data.set_column(0, "id", pa.array(["1"])), ["id"])
    with pytest.raises(UpsertKeyError, match="'qty' is double in the data but long"):
        validate_upsert_input("t.x", schema, data.set_column(3, "qty", pa.array([1.0])), ["qty"])
    with pytest.raises(UpsertKeyError, match="listed more than once"):
        validate_upsert_input("t.x", schema, data, ["id", "id"])
    with pytest.raises(UpsertKeyError, match="needs join columns"):
        validate_upsert_input("t.x", schema, data, [])
    # A lossless widening (int -> long) is fine.
    validate_upsert_input(
        "t.x", schema, data.set_column(0, "id", pa.array([1], pa.int32())), ["id"]
    )

    # Through the manager: a key column the write itself would add is refused, nothing commits.
    snapshots = len(table.metadata.snapshots)
    with pytest.raises(UpsertKeyError, match="not columns of the table"):
        manager.upsert(_name(table), data.append_column("extra", pa.array([1])), ["extra"])
    with pytest.raises(UpsertKeyError, match="missing from the data"):
        manager.upsert(_name(table), data.drop_columns(["label"]), ["id", "label"])
    assert len(table.refresh().metadata.snapshots) == snapshots
    assert table.schema().column_names == schema.column_names


def test_duplicates_already_in_the_target_are_refused(manager: IcebergTableManager) -> None:
    schema = _schema(composite=False)
    row = {"id": 7, "part": "p0", "qty": 1, "label": None, "amount": None}
    table = _create(manager.catalog, schema, None, [[row], [{**row, "qty": 2}], [{**row, "id": 8}]])
    snapshots = len(table.metadata.snapshots)
    files = _file_paths(table)
    with pytest.raises(UpsertKeyError) as caught:
        manager.upsert(_name(table), _arrow(table, [{**row, "qty": 3}, {**row, "id": 8}]), ["id"])
    assert "more than one row for 1 key(s)" in str(caught.value)
    assert "(id=7) x2" in str(caught.value)
    assert len(table.refresh().metadata.snapshots) == snapshots
    assert _file_paths(table) == files


# --------------------------------------------------------------------------------------------
# Table creation and schema evolution through the manager
# --------------------------------------------------------------------------------------------


def test_upsert_creates_a_missing_table(manager: IcebergTableManager) -> None:
    data = pa.table({"id": pa.array([1, 2], pa.int64()), "v": ["a", "b"]})
    result = manager.upsert("t.fresh", data, ["id"])
    assert result.created_table
    assert (result.rows_inserted, result.rows_updated) == (2, 0)
    assert _rows(manager.catalog.load_table("t.fresh")) == [
        {"id": 1, "v": "a"},
        {"id": 2, "v": "b"},
    ]


def test_upsert_with_a_new_column(manager: IcebergTableManager) -> None:
    data = pa.table({"id": pa.array([1, 2], pa.int64()), "v": ["a", "b"]})
    manager.upsert("t.evolving", data, ["id"])
    wider = pa.table(
        {"id": pa.array([1, 2], pa.int64()), "v": ["a", "b"], "extra": pa.array(["e", None])}
    )
    result = manager.upsert("t.evolving", wider, ["id"])
    assert (result.rows_updated, result.rows_unchanged) == (1, 1)
    assert _rows(manager.catalog.load_table("t.evolving")) == [
        {"id": 1, "v": "a", "extra": "e"},
        {"id": 2, "v": "b", "extra": None},
    ]


# --------------------------------------------------------------------------------------------
# Concurrency: a conflicting concurrent commit makes ours fail instead of merging stale rows
# --------------------------------------------------------------------------------------------


def _begin(
    table: Table, rows: list[dict[str, Any]], scope: BooleanExpression = AlwaysTrue()
) -> UpsertPlan:
    return _plan(table, rows, ["id"], scope)


def test_concurrent_insert_of_the_same_key_conflicts(catalog: Catalog) -> None:
    table, _ = _ranged_table(catalog, partitioned=False)
    new = {"id": 5000, "part": "p0", "qty": 1, "label": "ours", "amount": None}
    plan = _begin(table, [new])

    other = catalog.load_table(table.name())
    other.append(_arrow(other, [{**new, "label": "theirs"}]))

    fresh = catalog.load_table(table.name())
    assert not plan.still_applies(fresh.metadata, fresh.io)
    with pytest.raises(CommitFailedException):
        _commit(table, plan)
    labels = [row["label"] for row in _rows(table) if row["id"] == 5000]
    assert labels == ["theirs"]


def test_concurrent_delete_of_a_rewritten_file_conflicts(catalog: Catalog) -> None:
    table, _ = _ranged_table(catalog, partitioned=False)
    plan = _begin(table, [{"id": 5, "part": "p0", "qty": 77, "label": "l", "amount": None}])
    assert plan.outcome.files_rewritten == 1

    other = catalog.load_table(table.name())
    other.delete(EqualTo("id", 5))

    fresh = catalog.load_table(table.name())
    assert not plan.still_applies(fresh.metadata, fresh.io)
    with pytest.raises(CommitFailedException):
        _commit(table, plan)
    rows = _rows(table)
    assert [row for row in rows if row["id"] == 5] == []  # not resurrected
    assert len(rows) == 599


@pytest.mark.parametrize("their_partition", ["p2", "p0"])
def test_concurrent_append_of_other_keys_does_not_conflict(
    catalog: Catalog, their_partition: str
) -> None:
    """Another partition, or the same partition with keys outside ours: the plan still applies,
    so a retry commits the files already written against the fresh table."""
    table, existing = _ranged_table(catalog, partitioned=True)
    data = [{"id": 300, "part": "p0", "qty": 9, "label": "l", "amount": None}]
    plan = _begin(table, data, scope=EqualTo("part", "p0"))

    other = catalog.load_table(table.name())
    elsewhere = {"id": 7000, "part": their_partition, "qty": 1, "label": None, "amount": None}
    other.append(_arrow(other, [elsewhere]))

    fresh = catalog.load_table(table.name())
    assert plan.still_applies(fresh.metadata, fresh.io)
    _commit(fresh, plan)
    expected, _ = reference_merge([*existing, elsewhere], data, ["id"])
    assert _rows(table) == expected


def _upsert_after(
    manager: IcebergTableManager,
    table: Table,
    rows: list[dict[str, Any]],
    barrier: threading.Barrier,
    errors: list[BaseException],
) -> None:
    try:
        barrier.wait()
        manager.upsert(_name(table), _arrow(table, rows), ["id"])
    except BaseException as error:  # reported by the test
        errors.append(error)


def test_concurrent_upserts_of_overlapping_keys_end_in_a_serial_order(
    manager: IcebergTableManager,
) -> None:
    schema = Schema(
        NestedField(1, "id", LongType(), required=True),
        NestedField(2, "v", StringType(), required=False),
    )
    existing = [{"id": i, "v": "base"} for i in range(20)]
    for round_number in range(3):
        table = _create(manager.catalog, schema, None, [existing])
        first = [{"id": i, "v": f"A{round_number}"} for i in range(5, 25)]
        second = [{"id": i, "v": f"B{round_number}"} for i in range(0, 30, 2)]
        barrier = threading.Barrier(2)
        errors: list[BaseException] = []
        threads = [
            threading.Thread(target=_upsert_after, args=(manager, table, rows, barrier, errors))
            for rows in (first, second)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        a_then_b = reference_merge(reference_merge(existing, first, ["id"])[0], second, ["id"])[0]
        b_then_a = reference_merge(reference_merge(existing, second, ["id"])[0], first, ["id"])[0]
        assert _rows(table) in (a_then_b, b_then_a)


# --------------------------------------------------------------------------------------------
# Many manifests: every rewritten file is found, whatever the thread interleaving
# --------------------------------------------------------------------------------------------


def _append_one_manifest_per_row(table: Table, rows: list[dict[str, Any]]) -> None:
    """Commit ``rows`` as one data file and one manifest per row, in a single snapshot.

    The manifest layout of as many single-row appends, built in one commit: each real append
    copies the growing table metadata, which would take a minute for a few hundred of them.
    """

    class OneManifestPerFile(_FastAppendFiles):
        def _manifests(self) -> list[ManifestFile]:
            manifests = []
            for data_file in self._added_data_files:
                with self.new_manifest_writer(spec=self._transaction.table_metadata.spec()) as w:
                    w.add(
                        ManifestEntry.from_args(
                            status=ManifestEntryStatus.ADDED,
                            snapshot_id=self._snapshot_id,
                            data_file=data_file,
                        )
                    )
                manifests.append(w.to_manifest_file())
            return manifests + self._existing_manifests()

    counter, write_uuid = itertools.count(), uuid.uuid4()
    with table.transaction() as tx:
        producer = OneManifestPerFile(operation=Operation.APPEND, transaction=tx, io=table.io)
        for row in rows:
            for data_file in _dataframe_to_data_files(
                table_metadata=tx.table_metadata,
                df=_arrow(table, [row]),
                io=table.io,
                write_uuid=write_uuid,
                counter=counter,
            ):
                producer.append_data_file(data_file)
        producer.commit()
    table.refresh()


def test_upserts_find_every_rewritten_file_among_many_manifests(
    catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: PyIceberg 0.12 filters the parent's manifests on worker threads that share
    one manifest evaluator, which stores the manifest being evaluated; a thread could judge
    its manifest by another's partition bounds, skip it, and fail the commit with "Missing
    required files to delete".

    The evaluator is widened (a short sleep between storing the manifest and evaluating it,
    otherwise PyIceberg's code) so that any sharing across threads shows up on every upsert,
    not once in a few thousand manifests.
    """

    def widened_eval(self: Any, manifest: Any) -> bool:
        if partitions := manifest.partitions:
            self.partition_fields = partitions
            time.sleep(0.0002)
            return visitors.visit(self.partition_filter, self)
        return True

    monkeypatch.setattr(visitors._ManifestEvalVisitor, "eval", widened_eval)

    schema = _schema(composite=False)
    parts = [f"q{i:02d}" for i in range(20)]
    table = _create(catalog, schema, _identity_spec(schema))
    existing = [
        {"id": i, "part": parts[i % len(parts)], "qty": 0, "label": None, "amount": None}
        for i in range(320)
    ]
    _append_one_manifest_per_row(table, existing)
    assert len(table.current_snapshot().manifests(table.io)) == 320

    next_id = len(existing)
    for round_number, chosen in enumerate(
        [parts[0:4], parts[3:8], parts[8:12], parts[12:16] + parts[0:1], parts[16:20]], 1
    ):
        owned = set(chosen)
        data = [
            {**row, "qty": round_number, "label": f"r{round_number}"}
            for row in existing
            if row["part"] in owned
        ]
        data += [
            {"id": next_id + k, "part": part, "qty": round_number, "label": None, "amount": None}
            for k, part in enumerate(chosen)
        ]
        next_id += len(chosen)
        snapshots = len(table.refresh().metadata.snapshots)

        outcome = _stage(table, data, ["id"], scope=In("part", chosen))

        expected, counts = reference_merge(
            existing, data, ["id"], in_scope=lambda row, owned=owned: row["part"] in owned
        )
        assert (outcome.rows_updated, outcome.rows_inserted, outcome.rows_unchanged) == counts
        assert outcome.files_rewritten >= 64  # four partitions of 16 single-row files
        assert len(table.refresh().metadata.snapshots) == snapshots + 1
        assert _rows(table) == expected
        existing = expected
