"""Reads: scan planning with a filter, columns and time travel (snapshot id, timestamp, ref).

Example:
    >>> import pyarrow as pa, tempfile
    >>> from pyiceberg.catalog.sql import SqlCatalog
    >>> tmp = tempfile.mkdtemp()
    >>> catalog = SqlCatalog("doc", uri=f"sqlite:///{tmp}/c.db", warehouse=f"file://{tmp}")
    >>> catalog.create_namespace("sales")
    >>> from pyiceberg.expressions import EqualTo
    >>> table = catalog.create_table("sales.orders", pa.schema([("id", pa.int64()), ("day", pa.string())]))
    >>> table.append(pa.table({"id": [1, 2], "day": ["a", "b"]}))
    >>> plan_scan(table, row_filter=EqualTo("day", "a"), columns=["id"]).to_arrow().to_pylist()
    [{'id': 1}]
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pyiceberg.expressions import AlwaysTrue, BooleanExpression
from pyiceberg.table import DataScan, Table

from floe_dagster_iceberg.errors import InvalidInputError, TableNotFoundError

__all__ = ["annotate_scan", "current_snapshot_id", "plan_scan", "snapshot_id_for"]


def plan_scan(
    loaded: Table,
    row_filter: BooleanExpression | None = None,
    columns: Sequence[str] | None = None,
    snapshot_id: int | None = None,
    as_of: datetime | None = None,
    ref: str | None = None,
    limit: int | None = None,
) -> DataScan:
    """A PyIceberg scan of ``loaded`` with the filter, columns and point in time asked for."""
    name = ".".join(loaded.name())
    if sum(x is not None for x in (snapshot_id, as_of, ref)) > 1:
        raise InvalidInputError(f"Table '{name}': give at most one of snapshot_id, as_of and ref.")
    if as_of is not None or ref is not None:
        snapshot_id = snapshot_id_for(loaded, as_of=as_of, ref=ref)
    if snapshot_id is not None and loaded.snapshot_by_id(snapshot_id) is None:
        raise TableNotFoundError(
            f"Table '{name}' has no snapshot {snapshot_id} (it may have been expired)."
        )
    selected = ("*",)
    if columns:
        known = set(loaded.schema().column_names)
        unknown = [c for c in columns if c not in known]
        if unknown:
            raise InvalidInputError(
                f"Table '{name}' has no column(s) {unknown}; columns are {sorted(known)}."
            )
        selected = tuple(columns)
    return loaded.scan(
        row_filter=row_filter if row_filter is not None else AlwaysTrue(),
        selected_fields=selected,
        snapshot_id=snapshot_id,
        limit=limit,
    )


def snapshot_id_for(loaded: Table, as_of: datetime | None = None, ref: str | None = None) -> int:
    """The snapshot current at ``as_of``, or the head of tag/branch ``ref``."""
    name = ".".join(loaded.name())
    if ref is not None:
        snapshot = loaded.snapshot_by_name(ref)
        if snapshot is None:
            raise TableNotFoundError(
                f"Table '{name}' has no tag or branch {ref!r}; existing refs: "
                f"{sorted(loaded.refs())}."
            )
        return snapshot.snapshot_id
    if as_of is None:
        return current_snapshot_id(loaded)
    snapshot = loaded.snapshot_as_of_timestamp(int(as_of.timestamp() * 1000))
    if snapshot is None:
        raise TableNotFoundError(
            f"Table '{name}' has no snapshot at or before {as_of.isoformat()}; "
            "its history starts later (see manager.snapshots())."
        )
    return snapshot.snapshot_id


def current_snapshot_id(table: Table) -> int:
    snapshot = table.current_snapshot()
    if snapshot is None:
        raise TableNotFoundError(f"Table '{'.'.join(table.name())}' has no snapshot yet.")
    return snapshot.snapshot_id


def annotate_scan(span: Any, scan: Any) -> None:
    snapshot = scan.snapshot()
    if snapshot is not None:
        span.set_attribute("iceberg.snapshot_id", snapshot.snapshot_id)
