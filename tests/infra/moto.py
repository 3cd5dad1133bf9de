"""A moto server (``moto[server]``) as the AWS Glue Data Catalog and S3 API on a loopback port.

moto serves every AWS service it emulates on one port; the Glue tests use it as the Glue
catalog and as the S3 store of the warehouse. It runs in a subprocess in its own process group
(:meth:`MotoServer.start`), bound to 127.0.0.1 on a free port, and fails with its log tail when
it cannot start.

moto 5.2 ignores the ``VersionId`` of Glue's ``UpdateTable``, with which AWS Glue rejects a
commit based on a stale table version (optimistic locking, what keeps concurrent Iceberg
commits from overwriting each other). The server started here adds that check, atomically
under a lock, so concurrent-commit tests see what they would see on AWS Glue: a
``ConcurrentModificationException`` for the loser. Without it, concurrent commits to one table
on moto silently lose all but one of the racing commits.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .logs import tail_file
from .orphans import reap_orphans, write_owner
from .ports import LOOPBACK, DeadlineExceeded, free_port, poll_until, port_open

REGION = "us-east-1"
ACCESS_KEY = "floe-moto-access-key"
SECRET_KEY = "floe-moto-secret-key"
WAREHOUSE_BUCKET = "warehouse"
TESTS_DIR = Path(__file__).resolve().parents[1]


class MotoStartError(RuntimeError):
    """The moto server could not be started or did not serve; carries the log tail."""


def serve(port: int, _directory: str = "") -> None:
    """Run moto's server on ``127.0.0.1:port`` with Glue's table-version check (blocks).

    Called in the server subprocess; ``_directory`` only marks the command line as belonging
    to this server's directory, so a later session can reap it if its owner died.
    """
    from moto.server import main

    _check_glue_table_versions()
    main(["-H", LOOPBACK, "-p", str(port)])


def _check_glue_table_versions() -> None:
    """Make moto's Glue ``UpdateTable`` refuse a stale ``VersionId``, as AWS Glue does."""
    import threading

    from moto.core.exceptions import JsonRESTError
    from moto.glue.responses import GlueResponse

    original = GlueResponse.update_table
    lock = threading.Lock()

    def update_table(self: GlueResponse):  # type: ignore[no-untyped-def]
        expected = self.parameters.get("VersionId")
        database = self.parameters.get("DatabaseName")
        name = self.parameters.get("TableInput", {}).get("Name")
        with lock:
            if expected is not None:
                current = self.glue_backend.get_table(database, name).as_dict()["VersionId"]
                if str(current) != str(expected):
                    raise JsonRESTError(
                        "ConcurrentModificationException",
                        f"Table {database}.{name} is at version {current}, not {expected}",
                    )
            return original(self)

    GlueResponse.update_table = update_table  # type: ignore[method-assign]


class MotoServer:
    """One moto server subprocess with its own port and log.

    Example:
        >>> server = MotoServer().start()  # doctest: +SKIP
        >>> server.create_bucket("warehouse"); server.stop()  # doctest: +SKIP
    """

    def __init__(self, startup_timeout: float = 60.0) -> None:
        reap_orphans("floe-moto-*")
        self.directory = Path(tempfile.mkdtemp(prefix="floe-moto-"))
        self.log_path = self.directory / "moto.log"
        self.port = free_port()
        self.startup_timeout = startup_timeout
        self.start_seconds: float | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def start(self) -> MotoServer:
        """Start the server and wait until it answers S3 requests."""
        code = f"from infra.moto import serve; serve({self.port}, {str(self.directory)!r})"
        env = {**os.environ, "PYTHONPATH": str(TESTS_DIR), "PYTHONUNBUFFERED": "1"}
        started = time.monotonic()
        with open(self.log_path, "wb") as log:
            try:
                self._process = subprocess.Popen(
                    [sys.executable, "-c", code],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,
                )
            except OSError as error:
                raise MotoStartError(f"cannot run {sys.executable}: {error}") from None
        write_owner(self.directory, {"moto": self._process.pid})
        try:
            poll_until(
                self._serves,
                timeout=self.startup_timeout,
                what=f"moto server on {self.endpoint}",
                abort=self._exited,
            )
        except DeadlineExceeded as error:
            self.stop()
            raise MotoStartError(
                f"{error}\n--- {self.log_path} (tail) ---\n{tail_file(self.log_path)}"
            ) from None
        self.start_seconds = time.monotonic() - started
        return self

    def stop(self) -> None:
        """Stop the server's process group."""
        process, self._process = self._process, None
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    def client(self, service: str):  # type: ignore[no-untyped-def]
        """A boto3 client of ``service`` (``s3``, ``glue``) on this server."""
        import boto3

        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
        )

    def create_bucket(self, name: str) -> str:
        """Create the S3 bucket ``name``; returns ``s3://name``."""
        self.client("s3").create_bucket(Bucket=name)
        return f"s3://{name}"

    def _serves(self) -> bool:
        if not port_open(self.port):
            return False
        self.client("s3").list_buckets()
        return True

    def _exited(self) -> str | None:
        process = self._process
        code = None if process is None else process.poll()
        return None if code is None else f"the moto server exited with code {code}"


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    """The session's moto server (Glue + S3) with the bucket ``warehouse``; fails if it cannot
    start. Import it into a test module to use it; tests isolate by unique names."""
    server = MotoServer()
    try:
        server.start()
        server.create_bucket(WAREHOUSE_BUCKET)
    except MotoStartError as error:
        server.stop()
        pytest.fail(str(error), pytrace=False)
    try:
        yield server
    finally:
        server.stop()
