"""IcebergTableManager on every catalog: create, evolve, write, scan, time travel, rollback."""

from __future__ import annotations

import datetime as dt
import threading
from decimal import Decimal

import pyarrow as pa
import pytest
from pyiceberg.expressions import And, GreaterThanOrEqual, LessThan

from floe_dagster_iceberg import (
    ColumnSpec,
    IcebergTableManager,
    InvalidIdentifierError,
    PartitionField,
    PartitionMismatchError,
    SchemaChange,
    SchemaEvolutionError,
    TableConfig,
    TableNotFoundError,
    TableSchema,
    WriteConfig,
)

DAY0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


def _events(day: int, ids: range) -> pa.Table:
    start = DAY0 + dt.timedelta(days=day)
    return pa.table(
        {
            "id": pa.array(list(ids), pa.int64()),
            "ts": pa.array(
                [start + dt.timedelta(minutes=i) for i in range(len(ids))],
                pa.timestamp("us", "UTC"),
            ),
            "amount": pa.array([float(i) for i in ids], pa.float64()),
        }
    )


def _day_filter(day: int):
    start = DAY0 + dt.timedelta(days=day)
    return And(
        GreaterThanOrEqual("ts", start.isoformat()),
        LessThan("ts", (start + dt.timedelta(days=1)).isoformat()),
    )


def _daily(mode: str, day: int) -> WriteConfig:
    return WriteConfig(
        mode=mode,
        row_filter=_day_filter(day),
        partition_spec=(PartitionField(source_column="ts", transform="day"),),
    )


def _config(namespace: str, name: str = "orders") -> TableConfig:
    return TableConfig(
        namespace=namespace,
        name=name,
        schema=TableSchema(
            columns=[
                ColumnSpec(name="id", type="long", required=True),
                ColumnSpec(name="count", type="int"),
                ColumnSpec(name="ratio", type="float"),
                ColumnSpec(name="price", type="decimal(9,2)"),
                ColumnSpec(name="ts", type="timestamptz"),
            ]
        ),
        partition_spec=[PartitionField(source_column="ts", transform="day")],
        properties={"owner": "sales"},
    )


def test_create_table_creates_namespace_and_is_idempotent(catalog, namespace):
    manager = IcebergTableManager(catalog)

    first = manager.create_table(_config(namespace))
    second = manager.create_table(_config(namespace))

    assert first.created
    assert not second.created
    assert second.differences == ()
    assert (namespace,) in catalog.list_namespaces()
    assert [f.notation for f in manager.partition_fields(f"{namespace}.orders")] == ["day"]
    assert first.table.properties["owner"] == "sales"


def test_create_table_reports_differences_and_never_changes_the_table(catalog, namespace):
    manager = IcebergTableManager(catalog)
    manager.create_table(_config(namespace))
    other = _config(namespace).model_copy(
        update={
            "table_schema": TableSchema(columns=[ColumnSpec(name="id", type="string")]),
            "partition_spec": (),
        }
    )

    result = manager.create_table(other)

    assert not result.created
    assert any("column id" in d for d in result.differences)
    assert any("partition spec" in d for d in result.differences)
    assert manager.load_table(f"{namespace}.orders").schema().find_field("id").field_type == (
        result.table.schema().find_field("id").field_type
    )
    assert str(result.table.schema().find_field("id").field_type) == "long"


def test_each_allowed_schema_change(catalog, namespace):
    manager = IcebergTableManager(catalog)
    manager.create_table(_config(namespace))
    table = f"{namespace}.orders"

    version = manager.evolve_schema(
        table,
        [
            SchemaChange.add_column("email", "string", doc="contact"),
            SchemaChange.widen_type("count", "long"),
            SchemaChange.widen_type("ratio", "double"),
            SchemaChange.widen_type("price", "decimal(12,2)"),
            SchemaChange.make_optional("id"),
            SchemaChange.set_doc("ts", "event time"),
        ],
    )
    manager.evolve_schema(table, [SchemaChange.rename("email", "contact_email")])

    schema = manager.load_table(table).schema()
    assert version.is_current
    assert str(schema.find_field("count").field_type) == "long"
    assert str(schema.find_field("ratio").field_type) == "double"
    assert str(schema.find_field("price").field_type) == "decimal(12, 2)"
    assert not schema.find_field("id").required
    assert schema.find_field("ts").doc == "event time"
    assert "contact_email" in schema.column_names
    assert "email" not in schema.column_names
    assert [v.schema_id for v in manager.schema_history(table)] == [0, 1, 2]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (SchemaChange.widen_type("id", "int"), "cannot change from long to int"),
        (SchemaChange.widen_type("count", "string"), "cannot change from int to string"),
        (SchemaChange.widen_type("price", "decimal(12,3)"), "same scale"),
        (SchemaChange.widen_type("price", "decimal(8,2)"), "cannot change"),
        (SchemaChange.rename("count", "ratio"), "already exists"),
        (SchemaChange.add_column("count", "long"), "already exists"),
        (SchemaChange.make_optional("missing"), "does not exist"),
    ],
)
def test_refused_schema_changes_leave_the_table_untouched(catalog, namespace, change, message):
    manager = IcebergTableManager(catalog)
    manager.create_table(_config(namespace))
    before = manager.load_table(f"{namespace}.orders").metadata.current_schema_id

    with pytest.raises(SchemaEvolutionError, match=message):
        manager.evolve_schema(
            f"{namespace}.orders", [SchemaChange.add_column("ok", "string"), change]
        )

    after = manager.load_table(f"{namespace}.orders")
    assert after.metadata.current_schema_id == before
    assert "ok" not in after.schema().column_names


def test_required_new_column_is_refused(catalog, namespace):
    manager = IcebergTableManager(catalog)
    manager.create_table(_config(namespace))
    change = SchemaChange(kind="add_column", column="must", new_type="long", required=True)

    with pytest.raises(SchemaEvolutionError, match="cannot be required"):
        manager.evolve_schema(f"{namespace}.orders", [change])


def test_append_overwrite_slice_scan_and_time_travel(catalog, namespace):
    manager = IcebergTableManager(catalog)
    table = f"{namespace}.events"
    first = manager.write(table, _events(0, range(0, 10)), _daily("overwrite", 0))
    manager.write(table, _events(1, range(10, 20)), _daily("overwrite", 1))
    manager.tag(table, "two-days")
    replaced = manager.write(table, _events(0, range(100, 105)), _daily("overwrite", 0))
    appended = manager.write(table, _events(1, range(200, 203)), _daily("append", 1))

    assert first.created_table
    assert (replaced.rows_added, replaced.rows_deleted) == (5, 10)
    assert appended.operation == "append"
    ids = sorted(manager.scan(table).column("id").to_pylist())
    assert ids == [*range(10, 20), *range(100, 105), *range(200, 203)]
    day0 = manager.scan(table, row_filter=_day_filter(0), columns=["id"])
    assert day0.column_names == ["id"]
    assert sorted(day0.column("id").to_pylist()) == list(range(100, 105))

    assert manager.scan(table, snapshot_id=first.snapshot_id).num_rows == 10
    assert manager.scan(table, ref="two-days").num_rows == 20
    history = manager.snapshots(table)
    at_first = dt.datetime.fromtimestamp(
        first_snapshot_ms(history, first.snapshot_id) / 1000, dt.UTC
    )
    assert manager.scan(table, as_of=at_first).num_rows == 10
    assert all(s.summary.get("floe.writer", "").startswith("floe-dagster-iceberg") for s in history)


def first_snapshot_ms(history, snapshot_id: int) -> int:
    return next(s.timestamp_ms for s in history if s.snapshot_id == snapshot_id)


def test_rollback_restores_an_earlier_snapshot(catalog, namespace):
    manager = IcebergTableManager(catalog)
    table = f"{namespace}.events"
    kept = manager.write(table, _events(0, range(5)))
    manager.write(table, _events(0, range(5, 9)))

    manager.rollback(table, kept.snapshot_id)

    assert manager.scan(table).num_rows == 5
    assert manager.load_table(table).current_snapshot().snapshot_id == kept.snapshot_id


def test_schema_evolution_and_data_land_in_one_commit(catalog, namespace):
    manager = IcebergTableManager(catalog)
    table = f"{namespace}.events"
    manager.write(table, _events(0, range(3)), _daily("overwrite", 0))
    commits_before = len(manager.load_table(table).metadata.metadata_log)
    wider = _events(0, range(3)).append_column("country", pa.array(["NL", "DE", None]))

    result = manager.write(table, wider, _daily("overwrite", 0))

    loaded = manager.load_table(table)
    assert result.schema_changes == ("add column country string",)
    assert len(loaded.metadata.metadata_log) == commits_before + 1
    assert loaded.scan().to_arrow().column("country").null_count == 1


def test_rows_outside_the_slice_are_refused_and_nothing_is_written(catalog, namespace):
    manager = IcebergTableManager(catalog)
    table = f"{namespace}.events"
    manager.write(table, _events(0, range(3)), _daily("overwrite", 0))
    snapshot_before = manager.load_table(table).current_snapshot().snapshot_id
    mixed = pa.concat_tables([_events(0, range(3)), _events(1, range(3, 5))])

    with pytest.raises(PartitionMismatchError, match="2 of 5 row"):
        manager.write(table, mixed, _daily("overwrite", 0))

    assert manager.load_table(table).current_snapshot().snapshot_id == snapshot_before


def test_missing_table_and_bad_identifiers_have_clear_errors(catalog, namespace):
    manager = IcebergTableManager(catalog)
    with pytest.raises(TableNotFoundError, match=f"{namespace}.nope"):
        manager.scan(f"{namespace}.nope")
    with pytest.raises(InvalidIdentifierError, match=r"\.\."):
        manager.write(("..", "escape"), _events(0, range(1)))


def test_eight_concurrent_writers_on_different_slices_all_commit(catalog, namespace):
    manager = IcebergTableManager(catalog)
    table = f"{namespace}.events"
    manager.write(table, _events(0, range(0)), _daily("overwrite", 0))
    barrier = threading.Barrier(8)
    results, errors = [], []

    def write(day: int) -> None:
        barrier.wait()
        try:
            mode = "overwrite" if day % 2 else "append"
            results.append(
                manager.write(
                    table, _events(day, range(day * 100, day * 100 + 50)), _daily(mode, day)
                )
            )
        except Exception as error:  # collected and asserted below
            errors.append(error)

    threads = [threading.Thread(target=write, args=(day,)) for day in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert len(results) == 8
    ids = manager.scan(table).column("id").to_pylist()
    assert sorted(ids) == sorted(i for day in range(8) for i in range(day * 100, day * 100 + 50))


def test_decimal_and_nested_types_round_trip(catalog, namespace):
    manager = IcebergTableManager(catalog)
    data = pa.table(
        {
            "id": pa.array([1, 2], pa.int64()),
            "price": pa.array([Decimal("1.50"), None], pa.decimal128(9, 2)),
            "tags": pa.array([["a", "b"], []], pa.list_(pa.string())),
            "attrs": pa.array([{"k": "v"}, None], pa.struct([("k", pa.string())])),
        }
    )
    manager.write(f"{namespace}.typed", data)

    back = manager.scan(f"{namespace}.typed").sort_by("id")
    assert back.column("price").to_pylist() == [Decimal("1.50"), None]
    assert back.column("tags").to_pylist() == [["a", "b"], []]
    assert back.column("attrs").to_pylist() == [{"k": "v"}, None]
