"""Sending events: one OpenLineage client and one background thread per process and transport.

Emission never slows or fails a write: events are queued and the thread sends them in order.
A receiver that fails is logged once per process; while it keeps failing events are dropped
(it is tried again every ``retry_after_seconds``). Queued events are flushed when the process
exits (at most ``flush_timeout_seconds``) and by :func:`flush_lineage`.
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
from contextlib import suppress
from typing import TYPE_CHECKING, Any

from floe_dagster_iceberg.lineage.config import LineageConfig, environment_signature

if TYPE_CHECKING:
    from openlineage.client.event_v2 import RunEvent

__all__ = ["Dispatcher", "dispatcher_for", "flush_lineage", "warn_once"]

log = logging.getLogger("floe_dagster_iceberg.lineage")

_warned: set[str] = set()
_warned_lock = threading.Lock()


def warn_once(key: str, message: str, *args: Any) -> None:
    """Log a warning on the lineage logger, once per process and ``key``."""
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


class Dispatcher:
    """One OpenLineage client and the thread that sends its events, in order."""

    def __init__(self, settings: LineageConfig) -> None:
        self.transport_override = settings.transport
        self.flush_timeout = settings.flush_timeout_seconds
        self.retry_after = settings.retry_after_seconds
        self.pid = os.getpid()
        self.dropped = 0
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
            warn_once(
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
                warn_once(
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
            self.dropped += 1
            self._failing = True
            self._down_until = time.monotonic() + self.retry_after
            warn_once(
                f"receiver-{id(self)}",
                "OpenLineage events could not be sent (%s: %s). Runs are not affected; events are "
                "dropped while the receiver fails and sending is retried every %.0f s. Logged "
                "once per process.",
                type(error).__name__,
                str(error)[:300],
                self.retry_after,
            )
            return
        if self._failing:
            self._failing = False
            log.info("OpenLineage receiver accepts events again (%d dropped).", self.dropped)


_dispatchers: dict[tuple[Any, ...], Dispatcher] = {}
_dispatchers_lock = threading.Lock()
_exit_hooks_pid: int | None = None


def dispatcher_for(settings: LineageConfig) -> Dispatcher:
    """This process's dispatcher for ``settings`` and the current standard configuration."""
    global _exit_hooks_pid
    key = (
        os.getpid(),
        json.dumps(settings.transport, sort_keys=True, default=str),
        settings.flush_timeout_seconds,
        settings.retry_after_seconds,
        settings.max_queued_events,
        environment_signature(),
    )
    dispatcher = _dispatchers.get(key)
    if dispatcher is not None:
        return dispatcher
    with _dispatchers_lock:
        dispatcher = _dispatchers.get(key)
        if dispatcher is None:
            dispatcher = Dispatcher(settings)
            _dispatchers[key] = dispatcher
            if _exit_hooks_pid != os.getpid():
                _exit_hooks_pid = os.getpid()
                # atexit covers normal exits and spawned processes; multiprocessing's finalizers
                # also run in forked Dagster step processes, which leave through os._exit.
                atexit.register(_close_all)
                multiprocessing.util.Finalize(None, _close_all, exitpriority=100)
                logging.getLogger("urllib3.connectionpool").addFilter(_QuietWorkerFilter())
        return dispatcher


def _live_dispatchers() -> list[Dispatcher]:
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
