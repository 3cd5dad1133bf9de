"""Report the Iceberg snapshot an external job committed back to Dagster, through Dagster Pipes.

For code that Dagster launches elsewhere (a Spark, Daft or plain PyIceberg job started by a
Pipes client such as ``PipesSubprocessClient``): after the job commits to an Iceberg table it
calls :func:`report_iceberg_snapshot`, and the asset that launched it turns the report into a
materialization with the same metadata, OpenLineage events and checks as an
``IcebergIOManager`` write (``floe_dagster_iceberg.iceberg_pipes_results``).

This package needs only ``dagster-pipes``: importing it imports neither Dagster nor
``floe_dagster_iceberg``, so it is cheap to import in a Spark driver. It is this one file with no
relative import, so a job can also ship it on its own (zipped, with ``spark-submit --py-files``).

Example:
    >>> from dagster_pipes import open_dagster_pipes
    >>> def main(table) -> None:  # a PyIceberg table, in a process launched through Pipes
    ...     with open_dagster_pipes() as context:
    ...         table.append(rows, snapshot_properties=iceberg_snapshot_properties(context))
    ...         report_iceberg_snapshot(context, table)
    >>> sorted(REPORT_KEYS)
    ['iceberg/previous_snapshot_id', 'iceberg/snapshot_id', 'iceberg/table']
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from dagster_pipes import PipesContext

__all__ = [
    "ASSET_KEY_PROPERTY",
    "PARTITION_KEYS_PROPERTY",
    "PARTITION_KEY_RANGE_PROPERTY",
    "PREVIOUS_SNAPSHOT_ID_KEY",
    "REPORT_KEYS",
    "RUN_ID_PROPERTY",
    "SNAPSHOT_ID_KEY",
    "TABLE_KEY",
    "iceberg_snapshot_properties",
    "report_iceberg_snapshot",
]

# Snapshot-summary keys of a commit made for a Dagster run: the IO manager writes the same ones.
RUN_ID_PROPERTY = "dagster.run-id"
"""The Dagster run a commit belongs to; the observation sensor skips snapshots that have it."""
ASSET_KEY_PROPERTY = "dagster.asset-key"
PARTITION_KEYS_PROPERTY = "dagster.partition-keys"
PARTITION_KEY_RANGE_PROPERTY = "dagster.partition-key-range"

# Materialization metadata of a report, read by the orchestration side.
SNAPSHOT_ID_KEY = "iceberg/snapshot_id"
TABLE_KEY = "iceberg/table"
PREVIOUS_SNAPSHOT_ID_KEY = "iceberg/previous_snapshot_id"
REPORT_KEYS = frozenset({SNAPSHOT_ID_KEY, TABLE_KEY, PREVIOUS_SNAPSHOT_ID_KEY})
"""The keys of a report; the orchestration side replaces them with the full metadata."""

_SNAPSHOT_QUERY_HINT = (
    'pass snapshot_id=, e.g. from Spark: spark.sql("SELECT snapshot_id FROM '
    'catalog.namespace.table.snapshots ORDER BY committed_at DESC LIMIT 1").first()[0], '
    "or pass the PyIceberg table object itself"
)


@runtime_checkable
class _IcebergTable(Protocol):
    """What is read from a PyIceberg ``Table`` (duck-typed: PyIceberg is not imported)."""

    def name(self) -> Sequence[str]: ...

    def current_snapshot(self) -> Any: ...


def iceberg_snapshot_properties(
    context: PipesContext, asset_key: str | None = None
) -> dict[str, str]:
    """Snapshot-summary properties that mark a commit as made for this Dagster run.

    Give them to the commit (PyIceberg: ``table.append(df, snapshot_properties=...)``; Spark:
    ``df.writeTo(t).option("snapshot-property.dagster.run-id", ...)`` for each item). The run id
    tells the Iceberg observation sensor that the snapshot is recorded as this run's
    materialization, so it is not reported again as an observation; the asset key and
    partition keys say in the table's history which asset and partitions the commit wrote.

    Example:
        >>> def append(context: PipesContext, table, rows) -> None:  # table: PyIceberg's
        ...     table.append(rows, snapshot_properties=iceberg_snapshot_properties(context))
    """
    properties = {RUN_ID_PROPERTY: context.run_id}
    keys = [asset_key] if asset_key else list(context.asset_keys if context.is_asset_step else ())
    if len(keys) == 1:
        properties[ASSET_KEY_PROPERTY] = keys[0]
    if context.is_partition_step:
        start, end = context.partition_key_range["start"], context.partition_key_range["end"]
        if start == end:
            properties[PARTITION_KEYS_PROPERTY] = start
        else:
            properties[PARTITION_KEY_RANGE_PROPERTY] = f"{start}...{end}"
    return properties


def report_iceberg_snapshot(
    context: PipesContext,
    table: str | Sequence[str] | Any,
    snapshot_id: int | None = None,
    *,
    previous_snapshot_id: int | None = None,
    asset_key: str | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> int:
    """Report to Dagster that this job committed ``snapshot_id`` to ``table``; returns the id.

    ``table`` is the table's name (``"namespace.table"``) or a PyIceberg table, whose current
    snapshot is reported when ``snapshot_id`` is not given. When the write committed several
    snapshots (PyIceberg's ``overwrite`` is a delete and an append), give
    ``previous_snapshot_id``, the table's snapshot before the write, so the counts cover all
    of them. ``asset_key`` is needed when the step materializes several assets; ``metadata`` is
    added to the materialization as it is.

    Dagster records one materialization of the asset per report. Return
    ``iceberg_pipes_results(context, invocation, catalog)`` from the asset that launched this
    job: it reads the snapshot from the catalog and records the same metadata and OpenLineage
    events as an IO manager write.

    Example:
        >>> def report(context: PipesContext, spark) -> int:  # after the job wrote the table
        ...     (snapshot_id,) = spark.sql(
        ...         "SELECT snapshot_id FROM lake.sales.orders.snapshots "
        ...         "ORDER BY committed_at DESC LIMIT 1"
        ...     ).first()
        ...     return report_iceberg_snapshot(context, "sales.orders", snapshot_id)
    """
    name = _table_name(table)
    if snapshot_id is None:
        snapshot_id = _current_snapshot_id(table, name)
    if isinstance(snapshot_id, bool) or not isinstance(snapshot_id, int):
        raise TypeError(
            f"Table '{name}': snapshot_id={snapshot_id!r} is not a snapshot id (an integer); "
            + _SNAPSHOT_QUERY_HINT
            + "."
        )
    report: dict[str, Any] = {**(metadata or {}), TABLE_KEY: name, SNAPSHOT_ID_KEY: snapshot_id}
    if previous_snapshot_id is not None:
        report[PREVIOUS_SNAPSHOT_ID_KEY] = int(previous_snapshot_id)
    context.report_asset_materialization(metadata=report, asset_key=asset_key)
    return snapshot_id


def _table_name(table: str | Sequence[str] | Any) -> str:
    if isinstance(table, str):
        name = table
    elif isinstance(table, _IcebergTable):
        name = ".".join(table.name())
    elif isinstance(table, Sequence) and all(isinstance(part, str) for part in table):
        name = ".".join(table)
    else:
        raise TypeError(
            f"table={table!r} is not an Iceberg table: pass its name ('namespace.table') or "
            "the PyIceberg table object."
        )
    if "." not in name.strip("."):
        raise ValueError(f"Table '{name}': name the table with its namespace, e.g. 'sales.{name}'.")
    return name


def _current_snapshot_id(table: Any, name: str) -> int:
    snapshot = table.current_snapshot() if isinstance(table, _IcebergTable) else None
    if snapshot is None:
        reason = "has no snapshot" if isinstance(table, _IcebergTable) else "is given by name"
        raise ValueError(
            f"Table '{name}' {reason}, so no snapshot to report: " + _SNAPSHOT_QUERY_HINT + "."
        )
    return int(snapshot.snapshot_id)
