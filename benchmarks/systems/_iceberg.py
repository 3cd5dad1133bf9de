"""PyIceberg helpers shared by the adapters (work with PyIceberg 0.11 and 0.12)."""

from __future__ import annotations

import contextlib
from typing import Any

import pyarrow as pa
from pyiceberg.catalog import Catalog, load_catalog
from pyiceberg.exceptions import NamespaceAlreadyExistsError, NoSuchTableError
from pyiceberg.expressions import And, GreaterThanOrEqual, LessThan
from pyiceberg.table import Table
from pyiceberg.transforms import DayTransform

from benchmarks import data
from benchmarks.systems.base import CATALOG_NAME, NAMESPACE, Context


def catalog_properties(ctx: Context) -> dict[str, str]:
    return {"type": "sql", "uri": ctx.catalog_uri, "warehouse": ctx.warehouse.as_uri()}


def open_catalog(ctx: Context) -> Catalog:
    catalog = load_catalog(CATALOG_NAME, **catalog_properties(ctx))
    with contextlib.suppress(NamespaceAlreadyExistsError):
        catalog.create_namespace(NAMESPACE)
    return catalog


def day_range_filter(first_day: int, days: int = 1) -> Any:
    start, _ = data.day_bounds(first_day)
    _, end = data.day_bounds(first_day + days - 1)
    return And(GreaterThanOrEqual("ts", start.isoformat()), LessThan("ts", end.isoformat()))


def load_or_create(catalog: Catalog, identifier: str, schema: pa.Schema) -> Table:
    """The table, created with a ``day(ts)`` partition spec if it does not exist yet."""
    try:
        return catalog.load_table(identifier)
    except NoSuchTableError:
        table = catalog.create_table(identifier, schema=schema)
        with table.update_spec() as spec:
            spec.add_field("ts", DayTransform(), "ts_day")
        return catalog.load_table(identifier)


def build_small_files(ctx: Context, days: int, batches: int, rows_per_file: int) -> None:
    """``batches`` appends, each adding one small file to each of ``days`` partitions."""
    catalog = open_catalog(ctx)
    table = load_or_create(catalog, ctx.identifier, data.SCHEMA)
    wholes = [data.partition_table(day, batches * rows_per_file) for day in range(days)]
    for b in range(batches):
        batch = pa.concat_tables([w.slice(b * rows_per_file, rows_per_file) for w in wholes])
        table.append(batch)


def live_data_files(ctx: Context) -> int:
    table = open_catalog(ctx).load_table(ctx.identifier)
    return table.inspect.files().num_rows


def snapshot_count(ctx: Context) -> int:
    return len(open_catalog(ctx).load_table(ctx.identifier).snapshots())


def count_rows(ctx: Context) -> int:
    try:
        table = open_catalog(ctx).load_table(ctx.identifier)
    except NoSuchTableError:
        return 0
    return (
        sum(task.file.record_count for task in table.scan().plan_files())
        if not _has_deletes(table)
        else table.scan().to_arrow().num_rows
    )


def _has_deletes(table: Table) -> bool:
    snapshot = table.current_snapshot()
    if snapshot is None or snapshot.summary is None:
        return False
    return int(snapshot.summary.get("total-delete-files", "0") or 0) > 0
