"""A loopback TCP port that forwards every connection to a Unix socket.

The session's PostgreSQL listens on a Unix socket only; Java's PostgreSQL driver (Spark's JDBC
catalog) speaks TCP only. :class:`UnixSocketForward` bridges the two inside the test process:
``127.0.0.1:<port>`` -> ``<socket path>``, one pair of pump threads per connection.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from pathlib import Path

from .ports import LOOPBACK


class UnixSocketForward:
    """Accept TCP connections on ``127.0.0.1:<port>`` and relay them to ``socket_path``.

    Use as a context manager, or call :meth:`start` and :meth:`stop`.
    """

    def __init__(self, socket_path: Path | str) -> None:
        self.socket_path = str(socket_path)
        self._listener: socket.socket | None = None
        self._connections: list[socket.socket] = []
        self._lock = threading.Lock()

    @property
    def port(self) -> int:
        if self._listener is None:
            raise RuntimeError("the forward is not started")
        return self._listener.getsockname()[1]

    def start(self) -> UnixSocketForward:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((LOOPBACK, 0))  # the kernel picks a free port: no race with others
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, name="pg-forward-accept", daemon=True).start()
        return self

    def stop(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.close()
        with self._lock:
            connections, self._connections = self._connections, []
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.close()

    def __enter__(self) -> UnixSocketForward:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _accept(self) -> None:
        listener = self._listener
        while listener is not None:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed by stop()
            try:
                upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                upstream.connect(self.socket_path)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._connections.extend((client, upstream))
            for source, target in ((client, upstream), (upstream, client)):
                threading.Thread(
                    target=_pump, args=(source, target), name="pg-forward-pump", daemon=True
                ).start()


def _pump(source: socket.socket, target: socket.socket) -> None:
    """Copy bytes until either side closes, then close both."""
    try:
        while chunk := source.recv(65536):
            target.sendall(chunk)
    except OSError:
        pass
    finally:
        for side in (source, target):
            with contextlib.suppress(OSError):
                side.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                side.close()
