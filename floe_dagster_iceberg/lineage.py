"""OpenLineage events for IO manager writes and loads and for maintenance actions.

Every write, load and maintenance action is one OpenLineage run: ``START`` before it, then
``COMPLETE`` (or ``FAIL`` with an ``errorMessage`` facet). The job is the asset (or the
maintenance op and its table), with a ``parent`` run facet pointing at the Dagster run and a
``jobType`` facet (``integration="DAGSTER"``).

Datasets are named the way the OpenLineage Spark integration names Iceberg tables, so lineage
from Dagster joins the lineage of Spark, Trino or dbt jobs on the same table:

- namespace and name come from the physical table location: ``s3://bucket`` +
  ``warehouse/db/tbl``, ``file`` + ``/data/warehouse/db/tbl``, ``gs://bucket`` + ``path``, or
  ``scheme://authority`` + ``/path`` for other file systems (``s3a``/``s3n`` become ``s3``);
- a ``symlinks`` identifier of type ``TABLE`` carries the catalog identity (REST: the catalog
  URI + ``ns.table``; Hive: ``hive://host:port`` + ``ns.table``; Glue:
  ``arn:aws:glue:region:account`` + ``table/ns/table``; SQL: the database URI without driver or
  credentials + ``ns.table``);
- ``version`` is the snapshot id written or read; ``catalog``, ``storage`` and ``schema``
  facets describe the table; outputs carry ``lifecycleStateChange`` (``CREATE`` on the first
  write, ``ALTER`` when the write evolved the schema, ``OVERWRITE`` for an overwrite) and
  ``outputStatistics`` (rows, bytes, files added, from the snapshot summary).

Configuration is OpenLineage's own: ``openlineage.yml`` (``$OPENLINEAGE_CONFIG``, the working
directory or ``~/.openlineage``), ``OPENLINEAGE_URL`` or ``OPENLINEAGE__TRANSPORT__*``. The
catalog resource's ``openlineage`` setting (:class:`LineageConfig`) can override the transport,
the job namespace or switch emission off. When nothing is configured no event is built.

Emission never slows or fails a write: events are handed to one background thread per process
and transport, which sends them in order. A receiver that fails is logged once per process;
while it keeps failing events are dropped (it is tried again every ``retry_after_seconds``).
Queued events are flushed when the process exits (at most ``flush_timeout_seconds``) and by
:func:`flush_lineage`.
"""

from __future__ import annotations

import atexit
import json
import logging
import multiprocessing.util
import os
import queue
import threading
import time
import traceback
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from dagster import Config
from pydantic import Field

from floe_dagster_iceberg.redaction import RedactedRepr, redact, redact_uri
from floe_dagster_iceberg.version import __version__

if TYPE_CHECKING:
    from openlineage.client.event_v2 import InputDataset, OutputDataset, RunEvent
    from pyiceberg.schema import Schema
    from pyiceberg.table import Table
    from pyiceberg.types import NestedField

    from floe_dagster_iceberg.manager import IcebergTableManager
    from floe_dagster_iceberg.models import WriteMode, WriteResult

__all__ = [
    "DEFAULT_JOB_NAMESPACE",
    "LINEAGE_PRODUCER",
    "CatalogIdentity",
    "LineageConfig",
    "LineageEmitter",
    "LineageRun",
    "MaintenanceLineage",
    "ParentRun",
    "dataset_identity",
    "flush_lineage",
    "lineage_configured",
    "lineage_emitter",
    "track_maintenance",
]

log = logging.getLogger("floe_dagster_iceberg.lineage")

LINEAGE_PRODUCER = f"urn:floe-dagster-iceberg:{__version__}"
"""The ``producer`` of every event and facet this package emits."""

DEFAULT_JOB_NAMESPACE = "dagster"
"""Job namespace when neither the config nor ``$OPENLINEAGE_NAMESPACE`` names one."""

INTEGRATION = "DAGSTER"
READ_ONLY_ACTIONS = frozenset({"health", "table_health"})
_ALIAS_PREFIX = "OPENLINEAGE__TRANSPORT__TRANSPORTS__DEFAULT_HTTP"


class LineageConfig(RedactedRepr, Config):
    """OpenLineage settings of a catalog resource; every field is optional.

    With no settings, events go where OpenLineage's standard configuration says
    (``openlineage.yml``, ``OPENLINEAGE_URL``, ``OPENLINEAGE__TRANSPORT__*``) and nowhere when
    nothing is configured.

    Example:
        >>> LineageConfig(transport={"type": "http", "url": "http://marquez:5000"}).namespace is None
        True
    """

    enabled: bool | None = Field(
        default=None,
        description="None: emit when OpenLineage is configured; False: never; True: always "
        "(the client's console transport when nothing is configured)",
    )
    transport: dict[str, Any] | None = Field(
        default=None,
        description="Transport as in openlineage.yml, e.g. {'type': 'http', 'url': "
        "'http://marquez:5000'}; replaces the transport of the standard configuration",
    )
    namespace: str | None = Field(
        default=None,
        description="Job namespace (default: $OPENLINEAGE_NAMESPACE or 'dagster')",
    )
    flush_timeout_seconds: float = Field(
        default=5.0, ge=0, description="How long a process waits at exit for queued events"
    )
    retry_after_seconds: float = Field(
        default=30.0, ge=0, description="How long events are dropped after a failed send"
    )
    max_queued_events: int = Field(
        default=10_000, ge=1, description="Events beyond this many waiting are dropped"
    )


# ---------------------------------------------------------------------- naming


def dataset_identity(location: str) -> tuple[str, str]:
    """OpenLineage ``(namespace, name)`` of a table location, as the Spark integration names it.

    Example:
        >>> dataset_identity("s3a://lake/warehouse/sales/orders/")
        ('s3://lake', 'warehouse/sales/orders')
        >>> dataset_identity("file:///data/warehouse/sales.db/orders")
        ('file', '/data/warehouse/sales.db/orders')
        >>> dataset_identity("hdfs://namenode:8020/warehouse/orders")
        ('hdfs://namenode:8020', '/warehouse/orders')
    """
    parts = urlsplit(location)
    scheme = parts.scheme.lower()
    path = unquote(parts.path).rstrip("/")
    if scheme in ("", "file"):
        if parts.netloc and parts.netloc != "localhost":
            return f"file://{parts.netloc}", path or "/"
        return "file", path or "/"
    canonical = {"s3a": "s3", "s3n": "s3", "gcs": "gs", "abfs": "abfss", "wasb": "wasbs"}
    if scheme in ("s3", "s3a", "s3n", "gs", "gcs", "abfs", "abfss", "wasb", "wasbs"):
        return f"{canonical.get(scheme, scheme)}://{parts.netloc}", path.lstrip("/") or "/"
    return f"{scheme}://{parts.netloc}", path or "/"


@dataclass(frozen=True)
class CatalogIdentity:
    """What lineage says about the catalog: its name, type, address and warehouse.

    ``uri`` loses its user info and credential-like query parameters; secrets in
    ``warehouse`` are masked.

    Example:
        >>> rest = CatalogIdentity(name="lake", type="rest", uri="https://catalog.example.com/api")
        >>> rest.symlink(("sales", "orders"))
        ('https://catalog.example.com/api', 'sales.orders')
    """

    name: str
    type: str
    uri: str | None = None
    warehouse: str | None = None
    glue_region: str | None = None
    glue_catalog_id: str | None = None

    def __post_init__(self) -> None:
        if self.uri:  # an identity: without user info and credential parameters
            object.__setattr__(self, "uri", redact_uri(self.uri, drop=True))
        if self.warehouse:  # a location: a container in its user info is kept
            object.__setattr__(self, "warehouse", redact_uri(self.warehouse))

    @classmethod
    def from_properties(
        cls, name: str, catalog_type: str, uri: str | None, properties: Mapping[str, str]
    ) -> CatalogIdentity:
        """Build it from PyIceberg catalog properties; credentials are dropped from ``uri``."""
        return cls(
            name=name,
            type=catalog_type,
            uri=uri,
            warehouse=properties.get("warehouse"),
            glue_region=properties.get("glue.region") or properties.get("client.region"),
            glue_catalog_id=properties.get("glue.id"),
        )

    def symlink(self, identifier: Sequence[str]) -> tuple[str, str]:
        """``(namespace, name)`` of the table's catalog identity (the ``TABLE`` symlink)."""
        *namespace, table = identifier
        dotted = ".".join(identifier)
        kind = self.type.lower()
        if kind == "glue" and self.glue_region and self.glue_catalog_id:
            return (
                f"arn:aws:glue:{self.glue_region}:{self.glue_catalog_id}",
                f"table/{'/'.join(namespace)}/{table}",
            )
        if kind == "hive" and self.uri:
            return f"hive://{urlsplit(self.uri).netloc}", dotted
        if kind == "sql" and self.uri:
            scheme, sep, rest = self.uri.partition("://")
            return (f"{scheme.split('+', 1)[0]}://{rest}" if sep else self.uri), dotted
        if self.uri:
            return self.uri, dotted
        return f"iceberg://{self.name}", dotted


@dataclass(frozen=True)
class ParentRun:
    """The Dagster run an OpenLineage run belongs to (``run_id`` is Dagster's UUID)."""

    run_id: str
    job_name: str


# ---------------------------------------------------------------------- configuration


def _config_file() -> Path | None:
    candidates = [
        os.environ.get("OPENLINEAGE_CONFIG"),
        str(Path.cwd() / "openlineage.yml"),
        str(Path.home() / ".openlineage" / "openlineage.yml"),
    ]
    for candidate in candidates:
        if candidate and os.path.isfile(candidate):
            return Path(candidate)
    return None


def _disabled_by_environment() -> bool:
    return os.environ.get("OPENLINEAGE_DISABLED", "").strip().lower() == "true"


def lineage_configured() -> bool:
    """Whether OpenLineage is configured the standard ways (and not disabled).

    True when ``OPENLINEAGE_URL`` or an ``OPENLINEAGE__TRANSPORT__*`` variable is set, or an
    ``openlineage.yml`` exists at ``$OPENLINEAGE_CONFIG``, in the working directory or in
    ``~/.openlineage``; always False when ``OPENLINEAGE_DISABLED=true``.
    """
    if _disabled_by_environment():
        return False
    if os.environ.get("OPENLINEAGE_URL"):
        return True
    if any(key.startswith("OPENLINEAGE__TRANSPORT") for key in os.environ):
        return True
    return _config_file() is not None


def _environment_signature() -> tuple[Any, ...]:
    # The client copies OPENLINEAGE_URL into DEFAULT_HTTP variables when it starts: ignore them,
    # so the same configuration keeps the same dispatcher (and events stay in order).
    variables = tuple(
        sorted(
            (key, value)
            for key, value in os.environ.items()
            if key.startswith("OPENLINEAGE") and not key.startswith(_ALIAS_PREFIX)
        )
    )
    path = _config_file()
    return variables, str(path) if path else None, str(Path.cwd())


# ---------------------------------------------------------------------- background dispatch

_warned: set[str] = set()
_warned_lock = threading.Lock()


def _warn_once(key: str, message: str, *args: Any) -> None:
    with _warned_lock:
        if key in _warned:
            return
        _warned.add(key)
    log.warning(message, *args)


class _QuietWorkerFilter(logging.Filter):
    """Drops urllib3's per-attempt retry warnings raised on the lineage threads."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.threadName.startswith("floe-openlineage")


_STOP = object()


class _Dispatcher:
    """One OpenLineage client and the thread that sends its events, in order."""

    def __init__(self, settings: LineageConfig) -> None:
        self.transport_override = settings.transport
        self.flush_timeout = settings.flush_timeout_seconds
        self.retry_after = settings.retry_after_seconds
        self.pid = os.getpid()
        self.sent = 0
        self.dropped = 0
        self.failed = 0
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=settings.max_queued_events)
        self._client: Any = None
        self._broken = False
        self._down_until = 0.0
        self._failing = False
        self._closed = False
        self._thread = threading.Thread(
            target=self._run, name=f"floe-openlineage-{id(self):x}", daemon=True
        )
        self._thread.start()

    def submit(self, event: RunEvent) -> None:
        if self._closed:
            return
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            self.dropped += 1
            _warn_once(
                "queue-full",
                "OpenLineage: more than %d events wait to be sent; newer events are dropped "
                "until the receiver catches up (logged once per process).",
                self._queue.maxsize,
            )

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued event was sent or dropped; False when ``timeout`` ran out."""
        deadline = None if timeout is None else time.monotonic() + timeout
        condition = self._queue.all_tasks_done
        with condition:
            while self._queue.unfinished_tasks:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                condition.wait(remaining)
        return True

    def close(self, timeout: float) -> bool:
        if self._closed:
            return True
        flushed = self.flush(timeout)
        self._closed = True
        if not flushed:
            log.warning(
                "OpenLineage: %d event(s) were still unsent after %.1f s at exit and are lost.",
                self._queue.unfinished_tasks,
                timeout,
            )
        with suppress(queue.Full):
            self._queue.put_nowait(_STOP)
        if flushed and self._client is not None:
            try:
                self._client.close(timeout)
            except Exception:  # closing must never fail the process exit
                log.debug("OpenLineage client did not close cleanly", exc_info=True)
        return flushed

    # -- worker thread

    def _run(self) -> None:
        while True:
            event = self._queue.get()
            try:
                if event is _STOP:
                    return
                self._send(event)
            except Exception:  # the thread must survive anything an event or transport does
                log.debug("OpenLineage event could not be sent", exc_info=True)
            finally:
                self._queue.task_done()

    def _client_or_none(self) -> Any:
        if self._client is None and not self._broken:
            try:
                from openlineage.client import OpenLineageClient

                if self.transport_override:
                    self._client = OpenLineageClient(
                        config={"transport": dict(self.transport_override)}
                    )
                else:
                    self._client = OpenLineageClient()
            except Exception as error:
                self._broken = True
                _warn_once(
                    "client",
                    "OpenLineage is configured but its client could not start (%s: %s); no "
                    "lineage is sent from this process. Runs are not affected.",
                    type(error).__name__,
                    error,
                )
        return self._client

    def _send(self, event: RunEvent) -> None:
        client = self._client_or_none()
        if client is None or time.monotonic() < self._down_until:
            self.dropped += 1
            return
        try:
            client.emit(event)
        except Exception as error:
            self.failed += 1
            self.dropped += 1
            self._failing = True
            self._down_until = time.monotonic() + self.retry_after
            _warn_once(
                f"receiver-{id(self)}",
                "OpenLineage events could not be sent (%s: %s). Runs are not affected; events are "
                "dropped while the receiver fails and sending is retried every %.0f s. Logged "
                "once per process.",
                type(error).__name__,
                str(error)[:300],
                self.retry_after,
            )
            return
        self.sent += 1
        if self._failing:
            self._failing = False
            log.info("OpenLineage receiver accepts events again (%d dropped).", self.dropped)


_dispatchers: dict[tuple[Any, ...], _Dispatcher] = {}
_dispatchers_lock = threading.Lock()
_exit_hooks_pid: int | None = None


def _dispatcher_for(settings: LineageConfig) -> _Dispatcher:
    global _exit_hooks_pid
    key = (
        os.getpid(),
        json.dumps(settings.transport, sort_keys=True, default=str),
        settings.flush_timeout_seconds,
        settings.retry_after_seconds,
        settings.max_queued_events,
        _environment_signature(),
    )
    dispatcher = _dispatchers.get(key)
    if dispatcher is not None:
        return dispatcher
    with _dispatchers_lock:
        dispatcher = _dispatchers.get(key)
        if dispatcher is None:
            dispatcher = _Dispatcher(settings)
            _dispatchers[key] = dispatcher
            if _exit_hooks_pid != os.getpid():
                _exit_hooks_pid = os.getpid()
                # atexit covers normal exits and spawned processes; multiprocessing's finalizers
                # also run in forked Dagster step processes, which leave through os._exit.
                atexit.register(_close_all)
                multiprocessing.util.Finalize(None, _close_all, exitpriority=100)
                logging.getLogger("urllib3.connectionpool").addFilter(_QuietWorkerFilter())
        return dispatcher


def _live_dispatchers() -> list[_Dispatcher]:
    pid = os.getpid()
    return [d for d in list(_dispatchers.values()) if d.pid == pid]


def _close_all() -> None:
    for dispatcher in _live_dispatchers():
        dispatcher.close(dispatcher.flush_timeout)


def flush_lineage(timeout: float | None = 10.0) -> bool:
    """Wait until this process has sent (or dropped) every queued OpenLineage event.

    Returns False when ``timeout`` seconds passed first. Processes flush by themselves at exit;
    call this in scripts and tests that read the receiver right after a run.

    Example:
        >>> flush_lineage(timeout=1.0)
        True
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    done = True
    for dispatcher in _live_dispatchers():
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        done = dispatcher.flush(remaining) and done
    return done


# ---------------------------------------------------------------------- facets


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _schema_fields(fields: Sequence[NestedField]) -> list[Any]:
    from openlineage.client.facet_v2 import schema_dataset
    from pyiceberg.types import StructType

    from floe_dagster_iceberg.schema import type_to_string

    result = []
    for position, nested in enumerate(fields, start=1):
        is_struct = isinstance(nested.field_type, StructType)
        result.append(
            schema_dataset.SchemaDatasetFacetFields(
                name=nested.name,
                type="struct" if is_struct else type_to_string(nested.field_type),
                description=nested.doc,
                ordinal_position=position,
                fields=_schema_fields(nested.field_type.fields) if is_struct else [],
            )
        )
    return result


def _dataset_facets(
    table: Table, catalog: CatalogIdentity, snapshot_id: int | None, schema: Schema | None = None
) -> tuple[str, str, dict[str, Any]]:
    from openlineage.client.facet_v2 import (
        catalog_dataset,
        dataset_version_dataset,
        schema_dataset,
        storage_dataset,
        symlinks_dataset,
    )

    identifier = tuple(table.name())
    namespace, name = dataset_identity(table.location())
    link_namespace, link_name = catalog.symlink(identifier)
    facets: dict[str, Any] = {
        "symlinks": symlinks_dataset.SymlinksDatasetFacet(
            identifiers=[
                symlinks_dataset.Identifier(namespace=link_namespace, name=link_name, type="TABLE")
            ],
            producer=LINEAGE_PRODUCER,
        ),
        "catalog": catalog_dataset.CatalogDatasetFacet(
            framework="iceberg",
            type=catalog.type,
            name=catalog.name,
            metadataUri=catalog.uri,
            warehouseUri=catalog.warehouse,
            source="dagster",
            producer=LINEAGE_PRODUCER,
        ),
        "storage": storage_dataset.StorageDatasetFacet(
            storageLayer="iceberg",
            fileFormat=table.properties.get("write.format.default", "parquet"),
            producer=LINEAGE_PRODUCER,
        ),
        "schema": schema_dataset.SchemaDatasetFacet(
            fields=_schema_fields((schema or table.schema()).fields), producer=LINEAGE_PRODUCER
        ),
    }
    if snapshot_id is not None:
        facets["version"] = dataset_version_dataset.DatasetVersionDatasetFacet(
            datasetVersion=str(snapshot_id), producer=LINEAGE_PRODUCER
        )
    return namespace, name, facets


def _current_snapshot_id(table: Table) -> int | None:
    snapshot = table.current_snapshot()
    return snapshot.snapshot_id if snapshot else None


def input_dataset(
    table: Table,
    catalog: CatalogIdentity,
    snapshot_id: int | None = None,
    rows: int | None = None,
) -> InputDataset:
    """The table as an input: identity, ``version`` (the snapshot read) and table facets."""
    from openlineage.client.event_v2 import InputDataset
    from openlineage.client.facet_v2 import input_statistics_input_dataset

    if snapshot_id is None:
        snapshot_id = _current_snapshot_id(table)
    schema = None
    snapshot = table.snapshot_by_id(snapshot_id) if snapshot_id is not None else None
    if snapshot is not None and snapshot.schema_id is not None:
        schema = table.schemas().get(snapshot.schema_id)
    namespace, name, facets = _dataset_facets(table, catalog, snapshot_id, schema)
    input_facets = {}
    if rows is not None:
        input_facets["inputStatistics"] = (
            input_statistics_input_dataset.InputStatisticsInputDatasetFacet(
                rowCount=rows, producer=LINEAGE_PRODUCER
            )
        )
    return InputDataset(namespace=namespace, name=name, facets=facets, inputFacets=input_facets)


def output_dataset(
    table: Table,
    catalog: CatalogIdentity,
    snapshot_id: int | None = None,
    lifecycle: str | None = None,
    rows: int | None = None,
    size: int | None = None,
    files: int | None = None,
) -> OutputDataset:
    """The table as an output: identity, ``version`` (the snapshot written), lifecycle, statistics."""
    from openlineage.client.event_v2 import OutputDataset
    from openlineage.client.facet_v2 import (
        lifecycle_state_change_dataset,
        output_statistics_output_dataset,
    )

    if snapshot_id is None:
        snapshot_id = _current_snapshot_id(table)
    namespace, name, facets = _dataset_facets(table, catalog, snapshot_id)
    if lifecycle is not None:
        facets["lifecycleStateChange"] = (
            lifecycle_state_change_dataset.LifecycleStateChangeDatasetFacet(
                lifecycleStateChange=lifecycle_state_change_dataset.LifecycleStateChange(lifecycle),
                producer=LINEAGE_PRODUCER,
            )
        )
    output_facets = {}
    if rows is not None or size is not None or files is not None:
        output_facets["outputStatistics"] = (
            output_statistics_output_dataset.OutputStatisticsOutputDatasetFacet(
                rowCount=rows, size=size, fileCount=files, producer=LINEAGE_PRODUCER
            )
        )
    return OutputDataset(namespace=namespace, name=name, facets=facets, outputFacets=output_facets)


def write_lifecycle(result: WriteResult, mode: WriteMode | str) -> str | None:
    """``CREATE`` for the first write, ``ALTER`` when the schema evolved, ``OVERWRITE`` for an
    overwrite, nothing for appends and upserts.

    Example:
        >>> from floe_dagster_iceberg.models import WriteResult
        >>> write_lifecycle(WriteResult(table="a.b", snapshot_id=1, operation="append",
        ...                             created_table=True), "append")
        'CREATE'
    """
    if result.created_table:
        return "CREATE"
    if result.schema_changes:
        return "ALTER"
    if str(getattr(mode, "value", mode)) == "overwrite" and result.committed:
        return "OVERWRITE"
    return None


# ---------------------------------------------------------------------- runs


class LineageRun:
    """One OpenLineage run: :meth:`start` sent START; send COMPLETE or FAIL once.

    Every method swallows its own errors: lineage never fails what it observes.
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
            eventTime=_now(),
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


_DISABLED_RUN = _DisabledRun()


def _dagster_version() -> str:
    try:
        from dagster.version import __version__ as dagster_version

        return dagster_version
    except ImportError:
        return "unknown"


@dataclass
class LineageEmitter:
    """Builds and sends the OpenLineage events of one catalog; disabled without a dispatcher.

    Get one from :func:`lineage_emitter` or ``IcebergCatalogResource.lineage()``.
    """

    catalog: CatalogIdentity
    namespace: str = DEFAULT_JOB_NAMESPACE
    _dispatcher: _Dispatcher | None = field(default=None, repr=False)

    @property
    def enabled(self) -> bool:
        return self._dispatcher is not None

    def dispatch(self, event: RunEvent) -> None:
        if self._dispatcher is not None:
            self._dispatcher.submit(event)

    def flush(self, timeout: float | None = 10.0) -> bool:
        return self._dispatcher.flush(timeout) if self._dispatcher is not None else True

    def run(self, job_name: str, job_type: str, parent: ParentRun | None = None) -> LineageRun:
        """A new run of ``job_name`` (not started); a no-op run when lineage is off."""
        if self._dispatcher is None:
            return _DISABLED_RUN
        try:
            return LineageRun(self, job_name, job_type, parent)
        except Exception:
            log.debug("OpenLineage run of %s could not be created", job_name, exc_info=True)
            return _DISABLED_RUN

    @contextmanager
    def track(
        self,
        job_name: str,
        job_type: str,
        parent: ParentRun | None = None,
        inputs: Sequence[Any] = (),
        outputs: Sequence[Any] = (),
    ) -> Iterator[LineageRun]:
        """START, then COMPLETE when the block ends (unless it completed the run) or FAIL."""
        run = self.run(job_name, job_type, parent).start(inputs, outputs)
        try:
            yield run
        except BaseException as error:
            run.fail(error)
            raise
        run.complete()

    # -- IO manager

    def start_write(self, context: Any, existing: Table | None) -> LineageRun:
        """START of an IO manager write; the job is the asset being written."""
        if self._dispatcher is None:
            return _DISABLED_RUN
        try:
            outputs = [output_dataset(existing, self.catalog)] if existing is not None else []
            run = self.run(context.asset_key.to_user_string(), "ASSET", _parent_of(context))
            return run.start(outputs=outputs)
        except Exception:
            log.debug("OpenLineage START of a write failed", exc_info=True)
            return _DISABLED_RUN

    def start_load(self, context: Any, table: Table, snapshot_id: int | None) -> LineageRun:
        """START of an IO manager load; the job is the asset (or op) that reads the table."""
        if self._dispatcher is None:
            return _DISABLED_RUN
        try:
            run = self.run(_consumer_job_name(context), "ASSET", _parent_of(context))
            return run.start(inputs=[input_dataset(table, self.catalog, snapshot_id=snapshot_id)])
        except Exception:
            log.debug("OpenLineage START of a load failed", exc_info=True)
            return _DISABLED_RUN


def lineage_emitter(config: LineageConfig | None, catalog: CatalogIdentity) -> LineageEmitter:
    """The emitter for ``catalog`` under ``config`` and the standard OpenLineage configuration.

    Cheap to call per operation: clients and threads are shared per process and configuration.

    Example:
        >>> emitter = lineage_emitter(LineageConfig(enabled=False), CatalogIdentity("c", "sql"))
        >>> emitter.enabled
        False
    """
    settings = config or LineageConfig()
    namespace = (
        settings.namespace or os.environ.get("OPENLINEAGE_NAMESPACE") or DEFAULT_JOB_NAMESPACE
    )
    off = (
        settings.enabled is False
        or _disabled_by_environment()
        or (settings.enabled is None and not settings.transport and not lineage_configured())
    )
    if off:
        return LineageEmitter(catalog=catalog, namespace=namespace)
    try:
        dispatcher = _dispatcher_for(settings)
    except Exception as error:
        _warn_once(
            "dispatcher",
            "OpenLineage could not start (%s: %s); no lineage is sent from this process.",
            type(error).__name__,
            error,
        )
        return LineageEmitter(catalog=catalog, namespace=namespace)
    return LineageEmitter(catalog=catalog, namespace=namespace, _dispatcher=dispatcher)


# ---------------------------------------------------------------------- Dagster contexts


def _valid_uuid(value: Any) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True


def _parent_of(context: Any) -> ParentRun | None:
    """The Dagster run of an output, input or op context, when it has a real run id."""
    run_id = None
    for getter in (
        lambda: context.run_id,
        lambda: context.step_context.run_id,
        lambda: context.run.run_id,
    ):
        try:
            run_id = getter()
        except Exception:
            continue
        if run_id:
            break
    if not run_id or not _valid_uuid(run_id):
        return None
    job_name = None
    for getter in (lambda: context.job_name, lambda: context.run.job_name):
        try:
            job_name = getter()
        except Exception:
            continue
        if job_name:
            break
    return ParentRun(run_id=str(run_id), job_name=str(job_name or "dagster_run"))


def _consumer_job_name(context: Any) -> str:
    """The asset whose step loads an input (its op's name for multi-asset or plain op steps)."""
    try:
        keys = context.step_context.get_output_asset_keys()
        if len(keys) == 1:
            return next(iter(keys)).to_user_string()
    except Exception:
        pass
    try:
        return context.op_def.name
    except Exception:
        return context.asset_key.to_user_string()


# ---------------------------------------------------------------------- maintenance


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
    ``context`` (an op context) gives the parent Dagster run. The table before the action is the input; the table after it is the
    output (not for read-only actions such as ``health``), with ``outputStatistics`` from the
    recorded result's ``rows_rewritten``, ``bytes_added`` and ``files_added``.

    Example:
        >>> # with track_maintenance(catalog.lineage(), manager, "sales.orders", "compact",
        >>> #                        context) as lineage:
        >>> #     lineage.record(manager.compact("sales.orders"))
    """
    handle = MaintenanceLineage()
    if not emitter.enabled:
        yield handle
        return
    run: LineageRun = _DISABLED_RUN
    before = None
    identifier: tuple[str, ...] = ()
    try:
        identifier = manager.identifier(table)
        op_name = job_name
        if op_name is None:
            try:
                op_name = f"{context.op_def.name}.{action}.{'.'.join(identifier)}"
            except Exception:
                op_name = f"{action}.{'.'.join(identifier)}"
        before = manager.load_table(identifier)
        run = emitter.run(op_name, "OP", _parent_of(context) if context is not None else None)
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
