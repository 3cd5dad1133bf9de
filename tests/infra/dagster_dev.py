"""A Dagster UI server (``dagster dev`` or ``dagster-webserver``) on a free loopback port.

The server runs ``workspace.yaml`` in its own process group with the given ``DAGSTER_HOME`` and
Iceberg home, and is driven over GraphQL. It is stopped, with every process it started, by
:meth:`DagsterDev.stop`; a server that cannot start raises :class:`DagsterDevError` with the
tail of its log.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from dagster_graphql import DagsterGraphQLClient

from infra.logs import tail_file
from infra.ports import DeadlineExceeded, free_port, poll_until

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKSPACE = REPO_ROOT / "workspace.yaml"
BIN = Path(sys.executable).parent
LOCATION = "example_project"
START_TIMEOUT = 120

# The default instance, except that queued runs are launched in parallel threads and polled
# every second (instead of one by one, every 5 s): a backfill's runs start together.
FAST_QUEUE_INSTANCE = """telemetry:
  enabled: false
run_coordinator:
  module: dagster.core.run_coordinator
  class: QueuedRunCoordinator
  config:
    dequeue_interval_seconds: 1
    dequeue_use_threads: true
    dequeue_num_workers: 8
"""


class DagsterDevError(RuntimeError):
    """The server did not start, or the GraphQL API answered with an error."""


class DagsterDev:
    """A Dagster server subprocess in its own process group.

    ``dagster_home`` and ``iceberg_home`` default to fresh directories under ``root`` (with the
    fast-queue instance config); pass existing ones to serve an instance made elsewhere, e.g.
    by the demo. ``daemon=False`` runs ``dagster-webserver`` alone (the UI, no daemon).

    Example:
        >>> server = DagsterDev(tmp_path)  # doctest: +SKIP
        >>> server.start(); server.graphql("{ version }"); server.stop()  # doctest: +SKIP
    """

    def __init__(
        self,
        root: Path,
        workspace: Path = WORKSPACE,
        *,
        dagster_home: Path | None = None,
        iceberg_home: Path | None = None,
        daemon: bool = True,
    ) -> None:
        self.root = root
        self.workspace = workspace
        self.fresh_homes = dagster_home is None
        self.dagster_home = dagster_home or root / "dagster_home"
        self.iceberg_home = iceberg_home or root / "iceberg"
        self.daemon = daemon
        self.log_path = root / ("dagster-dev.log" if daemon else "dagster-webserver.log")
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.url = f"{self.base_url}/graphql"
        self.process: subprocess.Popen[bytes] | None = None
        self.start_seconds = 0.0
        self._log: Any = None
        self._load_error: str | None = None
        self.session = requests.Session()

    # -- lifecycle

    def command(self) -> list[str]:
        """The server command line, bound to 127.0.0.1 and this server's port."""
        program = [str(BIN / "dagster"), "dev"] if self.daemon else [str(BIN / "dagster-webserver")]
        return [*program, "-w", str(self.workspace), "-h", "127.0.0.1", "-p", str(self.port)]

    def environment(self) -> dict[str, str]:
        """This process's environment without FLOE_/DAGSTER_ settings, plus the two homes."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("FLOE_", "DAGSTER_"))}
        env.update(
            DAGSTER_HOME=str(self.dagster_home),
            FLOE_ICEBERG_HOME=str(self.iceberg_home),
            PYTHONUNBUFFERED="1",
        )
        return env

    def start(self) -> None:
        if self.fresh_homes:
            self.dagster_home.mkdir(parents=True)
            self.iceberg_home.mkdir(parents=True)
            (self.dagster_home / "dagster.yaml").write_text(FAST_QUEUE_INSTANCE)
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        started = time.monotonic()
        command = self.command()
        try:
            self.process = subprocess.Popen(
                command,
                cwd=self.root,
                env=self.environment(),
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: webserver, daemon, code servers, runs
            )
        except OSError as error:
            raise DagsterDevError(f"cannot start {command[0]}: {error}") from None
        try:
            poll_until(
                self._location_loaded,
                timeout=START_TIMEOUT,
                what=f"{Path(command[0]).name} on port {self.port}",
                interval=0.25,
                abort=self._start_failed,
            )
        except (DeadlineExceeded, DagsterDevError) as error:
            raise DagsterDevError(f"{error}\n--- server log ---\n{self.log_tail()}") from None
        self.start_seconds = time.monotonic() - started

    def stop(self) -> None:
        """Stop every process of the group: SIGTERM, then SIGKILL after a grace period."""
        process = self.process
        if process is not None:
            family = descendants(process.pid)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=20)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            for pid in family | descendants(process.pid):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=10)
        if self._log is not None:
            self._log.close()
        self.session.close()

    def exited(self) -> str | None:
        """Why the server is gone, or ``None`` while it runs."""
        code = self.process.poll() if self.process else None
        return None if code is None else f"the server exited with code {code}"

    def _start_failed(self) -> str | None:
        return self.exited() or self._load_error

    def _location_loaded(self) -> bool:
        data = self.graphql(
            """{ workspaceOrError { __typename ... on Workspace { locationEntries {
                   name loadStatus
                   locationOrLoadError { __typename ... on PythonError { message } } } } } }"""
        )
        entries = data["workspaceOrError"].get("locationEntries") or []
        for entry in entries:
            error = entry["locationOrLoadError"]
            if error and error["__typename"] == "PythonError":
                self._load_error = f"code location {entry['name']} failed: {error['message']}"
        return any(
            e["name"] == LOCATION
            and e["loadStatus"] == "LOADED"
            and (e["locationOrLoadError"] or {}).get("__typename") == "RepositoryLocation"
            for e in entries
        )

    def log_tail(self, lines: int = 80) -> str:
        if self._log is not None and not self._log.closed:
            self._log.flush()
        return tail_file(self.log_path, lines)

    # -- GraphQL

    def graphql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        response = self.session.post(
            self.url, json={"query": query, "variables": variables or {}}, timeout=60
        )
        response.raise_for_status()
        body = response.json()
        if body.get("errors"):
            raise DagsterDevError(f"GraphQL errors: {body['errors']}")
        return body["data"]

    def client(self) -> DagsterGraphQLClient:
        return DagsterGraphQLClient("127.0.0.1", port_number=self.port, timeout=60)

    def wait_for(self, condition: Any, *, timeout: float, what: str) -> Any:
        """Poll ``condition`` with a deadline; on timeout fail the test with the log tail."""
        try:
            return poll_until(
                condition,
                timeout=timeout,
                what=what,
                interval=0.5,
                max_interval=2.0,
                abort=self.exited,
            )
        except DeadlineExceeded as error:
            pytest.fail(f"{error}\n--- server log ---\n{self.log_tail()}", pytrace=False)


@contextlib.contextmanager
def running(server: DagsterDev) -> Iterator[DagsterDev]:
    """``server`` started (the calling test fails, never skips, if it cannot), then stopped."""
    try:
        try:
            server.start()
        except DagsterDevError as error:
            pytest.fail(str(error), pytrace=False)
        yield server
    finally:
        server.stop()


def descendants(pid: int) -> set[int]:
    """Every live descendant of ``pid`` (from /proc), so nothing outlives the test."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    found: set[int] = set()
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in found:
                found.add(child)
                stack.append(child)
    return found
