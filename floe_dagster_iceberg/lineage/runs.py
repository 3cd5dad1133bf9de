"""OpenLineage runs: ``START``, then ``COMPLETE`` or ``FAIL``, of one job.

The job is the asset (or the maintenance op and its table), with a ``parent`` run facet
pointing at the Dagster run, a ``jobType`` facet (``integration="DAGSTER"``) and a
``processing_engine`` facet naming Dagster; a failure carries an ``errorMessage`` facet.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from floe_dagster_iceberg.lineage.datasets import (
    LINEAGE_PRODUCER,
    CatalogIdentity,
    input_dataset,
    output_dataset,
    write_lifecycle,
)
from floe_dagster_iceberg.redaction import redact
from floe_dagster_iceberg.version import __version__

if TYPE_CHECKING:
    from openlineage.client.event_v2 import RunEvent
    from pyiceberg.table import Table

    from floe_dagster_iceberg.engine.config import WriteMode, WriteResult
    from floe_dagster_iceberg.lineage.dagster_context import ParentRun
    from floe_dagster_iceberg.lineage.emitter import LineageEmitter

__all__ = ["DISABLED_RUN", "INTEGRATION", "LineageRun"]

log = logging.getLogger("floe_dagster_iceberg.lineage")

INTEGRATION = "DAGSTER"
"""The ``integration`` of every ``jobType`` facet."""


class LineageRun:
    """One OpenLineage run: :meth:`start` sent START; send COMPLETE or FAIL once.

    Every method swallows its own errors: lineage never fails what it observes.

    Example:
        >>> import json
        >>> from floe_dagster_iceberg.lineage.datasets import CatalogIdentity
        >>> from floe_dagster_iceberg.lineage.emitter import LineageEmitter
        >>> class Events(LineageEmitter):
        ...     def dispatch(self, event):
        ...         print(event.eventType.value, event.job.name)
        >>> run = LineageRun(Events(CatalogIdentity("lake", "sql")), "sales/orders", "ASSET", None)
        >>> run.start().complete()
        START sales/orders
        COMPLETE sales/orders
        >>> run.fail(RuntimeError("too late: the run already completed"))
    """

    def __init__(
        self,
        emitter: LineageEmitter,
        job_name: str,
        job_type: str,
        parent: ParentRun | None,
    ) -> None:
        from openlineage.client.uuid import generate_new_uuid

        self.emitter = emitter
        self.job_name = job_name
        self.job_type = job_type
        self.parent = parent
        self.run_id = str(generate_new_uuid())
        self.finished = False

    @property
    def catalog(self) -> CatalogIdentity:
        return self.emitter.catalog

    def start(self, inputs: Sequence[Any] = (), outputs: Sequence[Any] = ()) -> LineageRun:
        self._emit("START", inputs, outputs)
        return self

    def complete(self, inputs: Sequence[Any] = (), outputs: Sequence[Any] = ()) -> None:
        if not self.finished:
            self.finished = True
            self._emit("COMPLETE", inputs, outputs)

    def fail(
        self, error: BaseException, inputs: Sequence[Any] = (), outputs: Sequence[Any] = ()
    ) -> None:
        if not self.finished:
            self.finished = True
            self._emit("FAIL", inputs, outputs, error)

    def complete_write(self, table: Table, result: WriteResult, mode: WriteMode | str) -> None:
        """COMPLETE of an IO manager write, with the written snapshot and its statistics."""
        try:
            output = output_dataset(
                table,
                self.catalog,
                snapshot_id=result.snapshot_id,
                lifecycle=write_lifecycle(result, mode),
                rows=result.rows_added,
                size=result.bytes_added,
                files=result.files_added,
            )
        except Exception:
            log.debug("OpenLineage output dataset of %s failed", self.job_name, exc_info=True)
            output = None
        self.complete(outputs=[output] if output is not None else [])

    def complete_load(self, table: Table, snapshot_id: int | None, rows: int | None) -> None:
        """COMPLETE of an IO manager load, with the snapshot read."""
        try:
            inputs = [input_dataset(table, self.catalog, snapshot_id=snapshot_id, rows=rows)]
        except Exception:
            log.debug("OpenLineage input dataset of %s failed", self.job_name, exc_info=True)
            inputs = []
        self.complete(inputs=inputs)

    def _emit(
        self,
        state: str,
        inputs: Sequence[Any],
        outputs: Sequence[Any],
        error: BaseException | None = None,
    ) -> None:
        try:
            self.emitter.dispatch(self._event(state, inputs, outputs, error))
        except Exception:
            log.debug("OpenLineage %s event of %s failed", state, self.job_name, exc_info=True)

    def _event(
        self,
        state: str,
        inputs: Sequence[Any],
        outputs: Sequence[Any],
        error: BaseException | None,
    ) -> RunEvent:
        from openlineage.client.event_v2 import Job, Run, RunEvent, RunState
        from openlineage.client.facet_v2 import (
            error_message_run,
            job_type_job,
            parent_run,
            processing_engine_run,
        )

        namespace = self.emitter.namespace
        run_facets: dict[str, Any] = {
            "processing_engine": processing_engine_run.ProcessingEngineRunFacet(
                version=_dagster_version(),
                name="Dagster",
                openlineageAdapterVersion=__version__,
                producer=LINEAGE_PRODUCER,
            )
        }
        if self.parent is not None:
            run_facets["parent"] = parent_run.ParentRunFacet(
                run=parent_run.Run(runId=self.parent.run_id),
                job=parent_run.Job(namespace=namespace, name=self.parent.job_name),
                root=parent_run.Root(
                    run=parent_run.RootRun(runId=self.parent.run_id),
                    job=parent_run.RootJob(namespace=namespace, name=self.parent.job_name),
                ),
                producer=LINEAGE_PRODUCER,
            )
        if error is not None:
            run_facets["errorMessage"] = error_message_run.ErrorMessageRunFacet(
                message=redact(f"{type(error).__name__}: {error}"),
                programmingLanguage="python",
                stackTrace=redact(
                    "".join(traceback.format_exception(type(error), error, error.__traceback__))
                ),
                producer=LINEAGE_PRODUCER,
            )
        job_facets = {
            "jobType": job_type_job.JobTypeJobFacet(
                processingType="BATCH",
                integration=INTEGRATION,
                jobType=self.job_type,
                producer=LINEAGE_PRODUCER,
            )
        }
        return RunEvent(
            eventType=RunState[state],
            eventTime=datetime.now(UTC).isoformat(),
            run=Run(runId=self.run_id, facets=run_facets),
            job=Job(namespace=namespace, name=self.job_name, facets=job_facets),
            inputs=list(inputs),
            outputs=list(outputs),
            producer=LINEAGE_PRODUCER,
        )


class _DisabledRun(LineageRun):
    """What a disabled emitter hands out: every call is a no-op."""

    def __init__(self) -> None:
        self.finished = True
        self.run_id = ""
        self.job_name = ""

    def start(self, inputs: Sequence[Any] = (), outputs: Sequence[Any] = ()) -> LineageRun:
        return self

    def complete(self, inputs: Sequence[Any] = (), outputs: Sequence[Any] = ()) -> None:
        return None

    def fail(
        self, error: BaseException, inputs: Sequence[Any] = (), outputs: Sequence[Any] = ()
    ) -> None:
        return None

    def complete_write(self, table: Table, result: WriteResult, mode: WriteMode | str) -> None:
        return None

    def complete_load(self, table: Table, snapshot_id: int | None, rows: int | None) -> None:
        return None


DISABLED_RUN: LineageRun = _DisabledRun()
"""The run handed out when lineage is off (or a run could not be created): it sends nothing."""


def _dagster_version() -> str:
    try:
        from dagster.version import __version__ as dagster_version

        return dagster_version
    except ImportError:
        return "unknown"
