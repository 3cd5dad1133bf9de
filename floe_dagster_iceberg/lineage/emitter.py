"""The lineage of one catalog: the runs of IO manager writes and loads, sent by a dispatcher."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from floe_dagster_iceberg.lineage.config import (
    DEFAULT_JOB_NAMESPACE,
    LineageConfig,
    emission_off,
    job_namespace,
)
from floe_dagster_iceberg.lineage.dagster_context import (
    ParentRun,
    asset_job_name,
    consumer_job_name,
    parent_run,
)
from floe_dagster_iceberg.lineage.datasets import CatalogIdentity, input_dataset, output_dataset
from floe_dagster_iceberg.lineage.dispatch import Dispatcher, dispatcher_for, warn_once
from floe_dagster_iceberg.lineage.runs import DISABLED_RUN, LineageRun

if TYPE_CHECKING:
    from openlineage.client.event_v2 import RunEvent
    from pyiceberg.table import Table

__all__ = ["LineageEmitter", "lineage_emitter"]

log = logging.getLogger("floe_dagster_iceberg.lineage")


@dataclass
class LineageEmitter:
    """Builds and sends the OpenLineage events of one catalog; disabled without a dispatcher.

    Get one from :func:`lineage_emitter` or ``IcebergCatalogResource.lineage()``.
    """

    catalog: CatalogIdentity
    namespace: str = DEFAULT_JOB_NAMESPACE
    _dispatcher: Dispatcher | None = field(default=None, repr=False)

    @property
    def enabled(self) -> bool:
        return self._dispatcher is not None

    def dispatch(self, event: RunEvent) -> None:
        if self._dispatcher is not None:
            self._dispatcher.submit(event)

    def run(self, job_name: str, job_type: str, parent: ParentRun | None = None) -> LineageRun:
        """A new run of ``job_name`` (not started); a no-op run when lineage is off."""
        if self._dispatcher is None:
            return DISABLED_RUN
        try:
            return LineageRun(self, job_name, job_type, parent)
        except Exception:
            log.debug("OpenLineage run of %s could not be created", job_name, exc_info=True)
            return DISABLED_RUN

    # -- IO manager

    def start_write(self, context: Any, existing: Table | None) -> LineageRun:
        """START of an IO manager write; the job is the asset being written."""
        if self._dispatcher is None:
            return DISABLED_RUN
        try:
            outputs = [output_dataset(existing, self.catalog)] if existing is not None else []
            run = self.run(asset_job_name(context), "ASSET", parent_run(context))
            return run.start(outputs=outputs)
        except Exception:
            log.debug("OpenLineage START of a write failed", exc_info=True)
            return DISABLED_RUN

    def start_load(self, context: Any, table: Table, snapshot_id: int | None) -> LineageRun:
        """START of an IO manager load; the job is the asset (or op) that reads the table."""
        if self._dispatcher is None:
            return DISABLED_RUN
        try:
            run = self.run(consumer_job_name(context), "ASSET", parent_run(context))
            return run.start(inputs=[input_dataset(table, self.catalog, snapshot_id=snapshot_id)])
        except Exception:
            log.debug("OpenLineage START of a load failed", exc_info=True)
            return DISABLED_RUN


def lineage_emitter(config: LineageConfig | None, catalog: CatalogIdentity) -> LineageEmitter:
    """The emitter for ``catalog`` under ``config`` and the standard OpenLineage configuration.

    Cheap to call per operation: clients and threads are shared per process and configuration.

    Example:
        >>> emitter = lineage_emitter(LineageConfig(enabled=False), CatalogIdentity("c", "sql"))
        >>> emitter.enabled
        False
    """
    settings = config or LineageConfig()
    namespace = job_namespace(settings)
    if emission_off(settings):
        return LineageEmitter(catalog=catalog, namespace=namespace)
    try:
        dispatcher = dispatcher_for(settings)
    except Exception as error:
        warn_once(
            "dispatcher",
            "OpenLineage could not start (%s: %s); no lineage is sent from this process.",
            type(error).__name__,
            error,
        )
        return LineageEmitter(catalog=catalog, namespace=namespace)
    return LineageEmitter(catalog=catalog, namespace=namespace, _dispatcher=dispatcher)
