"""OpenLineage runs of maintenance actions: the table before is the input, after the output."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from floe_dagster_iceberg.lineage.dagster_context import maintenance_job_name, parent_run
from floe_dagster_iceberg.lineage.datasets import input_dataset, output_dataset
from floe_dagster_iceberg.lineage.runs import DISABLED_RUN, LineageRun

if TYPE_CHECKING:
    from floe_dagster_iceberg.engine.manager import IcebergTableManager
    from floe_dagster_iceberg.lineage.emitter import LineageEmitter

__all__ = ["READ_ONLY_ACTIONS", "MaintenanceLineage", "track_maintenance"]

log = logging.getLogger("floe_dagster_iceberg.lineage")

READ_ONLY_ACTIONS = frozenset({"health", "table_health"})
"""Actions that change nothing: their runs have an input and no output."""


class MaintenanceLineage:
    """Handed out by :func:`track_maintenance`: give it the action's result with :meth:`record`."""

    def __init__(self) -> None:
        self.result: Any = None

    def record(self, result: Any) -> None:
        self.result = result


@contextmanager
def track_maintenance(
    emitter: LineageEmitter,
    manager: IcebergTableManager,
    table: Any,
    action: str,
    context: Any = None,
    job_name: str | None = None,
) -> Iterator[MaintenanceLineage]:
    """OpenLineage START/COMPLETE/FAIL around one maintenance action on one table.

    The job is ``{op name}.{action}.{namespace}.{table}`` (one stable job per op, action and
    table, as Spark's integration appends the dataset name to its job names), or ``job_name``;
    ``context`` (an op context) gives the parent Dagster run. The table before the action is
    the input; the table after it is the output (not for read-only actions such as
    ``health``), with ``outputStatistics`` from the recorded result's ``rows_rewritten``,
    ``bytes_added`` and ``files_added``.

    Example:
        >>> import json, tempfile
        >>> import pyarrow as pa
        >>> from pyiceberg.catalog.sql import SqlCatalog
        >>> from floe_dagster_iceberg.lineage import (
        ...     CatalogIdentity, LineageConfig, flush_lineage, lineage_emitter
        ... )
        >>> from floe_dagster_iceberg.engine.manager import IcebergTableManager
        >>> tmp = tempfile.mkdtemp()
        >>> catalog = SqlCatalog("floe", uri=f"sqlite:///{tmp}/c.db", warehouse=f"file://{tmp}")
        >>> manager = IcebergTableManager(catalog)
        >>> for day in (1, 2):
        ...     _ = manager.write("sales.orders", pa.table({"day": [day]}))
        >>> events = f"{tmp}/events.jsonl"
        >>> transport = {"type": "file", "log_file_path": events, "append": True}
        >>> emitter = lineage_emitter(
        ...     LineageConfig(transport=transport), CatalogIdentity("floe", "sql")
        ... )
        >>> with track_maintenance(emitter, manager, "sales.orders", "compact") as lineage:
        ...     lineage.record(manager.compact("sales.orders"))
        >>> flush_lineage()
        True
        >>> sent = [json.loads(line) for line in open(events)]
        >>> [(event["eventType"], event["job"]["name"]) for event in sent]
        [('START', 'compact.sales.orders'), ('COMPLETE', 'compact.sales.orders')]
        >>> sent[1]["outputs"][0]["outputFacets"]["outputStatistics"]["rowCount"]
        2
    """
    handle = MaintenanceLineage()
    if not emitter.enabled:
        yield handle
        return
    run: LineageRun = DISABLED_RUN
    before = None
    identifier: tuple[str, ...] = ()
    try:
        identifier = manager.identifier(table)
        op_name = job_name
        if op_name is None:
            op_name = maintenance_job_name(context, action, identifier)
        before = manager.load_table(identifier)
        run = emitter.run(op_name, "OP", parent_run(context) if context is not None else None)
        run.start(inputs=[input_dataset(before, emitter.catalog)])
    except Exception:
        log.debug("OpenLineage START of %s failed", action, exc_info=True)
    try:
        yield handle
    except BaseException as error:
        inputs = []
        if before is not None:
            try:
                inputs = [input_dataset(before, emitter.catalog)]
            except Exception:
                inputs = []
        run.fail(error, inputs=inputs)
        raise
    try:
        after = manager.load_table(identifier)
        inputs = [input_dataset(before, emitter.catalog)] if before is not None else []
        outputs = []
        if action not in READ_ONLY_ACTIONS:
            result = handle.result
            stats = {
                "rows": getattr(result, "rows_rewritten", None),
                "size": getattr(result, "bytes_added", None),
                "files": getattr(result, "files_added", None),
            }
            outputs = [output_dataset(after, emitter.catalog, **stats)]
        run.complete(inputs=inputs, outputs=outputs)
    except Exception:
        log.debug("OpenLineage COMPLETE of %s failed", action, exc_info=True)
        run.complete()
