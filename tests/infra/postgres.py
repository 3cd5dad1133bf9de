"""A throw-away PostgreSQL server for SQL-catalog tests, started with ``pgserver`` (PyPI).

``pgserver`` ships PostgreSQL 16 binaries in its wheel and runs ``initdb`` + ``pg_ctl start``
in a directory of our choosing. The server listens on a Unix socket inside the data directory
only (no TCP port at all), so nothing is exposed on the network and no port can collide.

Connection strings have the form ``postgresql+psycopg2://postgres@/<db>?host=<socket dir>``;
they work from any process on the machine, so subprocesses (Dagster runs, concurrent
writers) can open the same catalog from its plain properties dict.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import time
import uuid
import warnings
from pathlib import Path
from urllib.parse import quote

from .logs import tail_file
from .orphans import reap_orphans, write_owner

_USER = "postgres"


class PostgresStartError(RuntimeError):
    """PostgreSQL could not be started; the message carries the server log tail."""


class PostgresServer:
    """One PostgreSQL server in a private temporary directory.

    ``start()`` initialises and starts it, ``stop()`` stops it and deletes the directory.
    ``create_database()`` gives each test its own database.
    """

    def __init__(self, base_dir: Path | str | None = None) -> None:
        self._base_dir = Path(base_dir) if base_dir is not None else None
        self._own_base_dir = base_dir is None
        self._server = None  # pgserver.PostgresServer
        self.pgdata: Path | None = None
        self.start_seconds: float | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> PostgresServer:
        if self._server is not None:
            return self
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (pgserver keeps a lock file there).
            warnings.simplefilter("ignore")
            import pgserver

        if self._base_dir is None:
            reap_orphans("floe-pg-*", signal.SIGQUIT)
            # Short path: the Unix socket lives in the data directory and socket paths are
            # limited to ~100 characters.
            self._base_dir = Path(tempfile.mkdtemp(prefix="floe-pg-"))
        self._base_dir.mkdir(parents=True, exist_ok=True)
        self.pgdata = self._base_dir / "pgdata"
        write_owner(self._base_dir, pid_files=(str(self.pgdata / "postmaster.pid"),))
        started = time.perf_counter()
        try:
            self._server = pgserver.get_server(self.pgdata, cleanup_mode="delete")
        except BaseException as exc:
            message = (
                f"PostgreSQL (pgserver) failed to start in {self.pgdata}: {exc!r}\n"
                f"--- {self.log_path} (tail) ---\n{self.log_tail()}"
            )
            self._kill_postmaster()
            self.stop()
            if isinstance(exc, Exception):
                raise PostgresStartError(message) from exc
            raise
        self.start_seconds = time.perf_counter() - started
        return self

    def stop(self) -> None:
        """Stop the server (``pg_ctl stop``, killing it if that fails) and delete its files."""
        server, self._server = self._server, None
        try:
            if server is not None:
                server.cleanup()
        finally:
            if self._own_base_dir and self._base_dir is not None:
                shutil.rmtree(self._base_dir, ignore_errors=True)

    def _kill_postmaster(self) -> None:
        # After a failed start pgserver may hold no handle to a postmaster it did launch;
        # SIGQUIT is PostgreSQL's immediate shutdown, which also ends its child processes.
        pid_file = None if self.pgdata is None else self.pgdata / "postmaster.pid"
        if pid_file is None or not pid_file.exists():
            return
        with contextlib.suppress(OSError, ValueError, IndexError):
            os.kill(int(pid_file.read_text().splitlines()[0]), signal.SIGQUIT)

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        if self._server is None:
            return False
        return self._server.get_postmaster_info().is_running()

    # -- diagnostics ------------------------------------------------------------------------

    @property
    def log_path(self) -> Path | None:
        return None if self.pgdata is None else self.pgdata / "log"

    def log_tail(self, lines: int = 60) -> str:
        return tail_file(self.log_path, lines)

    # -- connection strings -----------------------------------------------------------------

    @property
    def socket_dir(self) -> Path:
        if self._server is None:
            raise RuntimeError("PostgreSQL server is not running")
        socket_dir = self._server.get_postmaster_info().socket_dir
        assert socket_dir is not None, "pgserver always uses a Unix socket on this platform"
        return Path(socket_dir)

    @property
    def socket_path(self) -> Path:
        """The server's Unix socket file (``<socket dir>/.s.PGSQL.<port>``)."""
        assert self._server is not None
        port = self._server.get_postmaster_info().port or 5432
        return self.socket_dir / f".s.PGSQL.{port}"

    def uri(self, database: str = _USER) -> str:
        """libpq URI, e.g. for ``psycopg2.connect`` or ``psql``."""
        return f"postgresql://{_USER}@/{database}?host={quote(str(self.socket_dir), safe='/')}"

    def sqlalchemy_uri(self, database: str = _USER, driver: str = "psycopg2") -> str:
        """SQLAlchemy URI, as PyIceberg's ``SqlCatalog`` expects in its ``uri`` property."""
        return (
            f"postgresql+{driver}://{_USER}@/{database}"
            f"?host={quote(str(self.socket_dir), safe='/')}"
        )

    # -- databases --------------------------------------------------------------------------

    def _execute_autocommit(self, statement) -> None:
        import psycopg2

        conn = psycopg2.connect(self.uri())
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(statement)
        finally:
            conn.close()

    def create_database(self, name: str | None = None) -> str:
        """Create an empty database and return its name (a unique one when not given)."""
        from psycopg2 import sql

        name = name or f"db_{uuid.uuid4().hex[:12]}"
        self._execute_autocommit(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return name

    def drop_database(self, name: str) -> None:
        """Drop a database, disconnecting any session still using it."""
        from psycopg2 import sql

        self._execute_autocommit(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
