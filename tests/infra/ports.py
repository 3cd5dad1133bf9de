"""Free loopback TCP ports and readiness polling.

Every server started by the test suite binds to 127.0.0.1 on ports chosen here. Ports handed
out once in this process are remembered and never handed out again, so a server that is
stopped for an outage test can be restarted on the same ports without another server of the
same session having taken them meanwhile.
"""

from __future__ import annotations

import contextlib
import random
import socket
import threading
import time
from collections.abc import Callable
from typing import TypeVar

LOOPBACK = "127.0.0.1"

_lock = threading.Lock()
_handed_out: set[int] = set()

T = TypeVar("T")


def _bindable(port: int, host: str = LOOPBACK) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_ports(count: int, host: str = LOOPBACK) -> list[int]:
    """Return ``count`` distinct ports that are free on ``host`` right now."""
    with _lock:
        ports: list[int] = []
        sockets: list[socket.socket] = []
        try:
            while len(ports) < count:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sockets.append(sock)
                sock.bind((host, 0))
                port = sock.getsockname()[1]
                if port in _handed_out or port in ports:
                    continue
                ports.append(port)
        finally:
            for sock in sockets:
                sock.close()
        _handed_out.update(ports)
        return ports


def free_port(host: str = LOOPBACK) -> int:
    """Return one port that is free on ``host`` right now."""
    return free_ports(1, host)[0]


def free_port_with_companion(offset: int, host: str = LOOPBACK, attempts: int = 500) -> int:
    """Return a free port ``p`` such that ``p + offset`` is free as well.

    For servers that derive a second port from the first one (SeaweedFS derives gRPC ports as
    HTTP port + 10000 in places where no flag overrides it).
    """
    rng = random.Random()
    low, high = 15000, 65535 - offset
    with _lock:
        for _ in range(attempts):
            port = rng.randint(low, high)
            pair = (port, port + offset)
            if any(p in _handed_out for p in pair):
                continue
            if all(_bindable(p, host) for p in pair):
                _handed_out.update(pair)
                return port
    raise RuntimeError(f"no free port pair (p, p+{offset}) found on {host} after {attempts} tries")


def port_open(port: int, host: str = LOOPBACK, timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections on ``host:port``."""
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=timeout):
        return True
    return False


class DeadlineExceeded(RuntimeError):
    """A readiness condition did not become true before its deadline."""


def poll_until(
    condition: Callable[[], T | None],
    *,
    timeout: float,
    what: str,
    interval: float = 0.05,
    max_interval: float = 0.5,
    abort: Callable[[], str | None] | None = None,
) -> T:
    """Call ``condition`` until it returns a truthy value or ``timeout`` seconds have passed.

    ``abort`` is checked before every attempt; a non-empty string from it stops polling at once
    (for example "process exited with code 1"). Exceptions raised by ``condition`` count as "not
    yet" and the last one is reported on timeout.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        if abort is not None:
            reason = abort()
            if reason:
                raise DeadlineExceeded(f"{what}: {reason}")
        try:
            result = condition()
        except Exception as exc:
            last_error = exc
        else:
            if result:
                return result
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            detail = f" (last error: {last_error!r})" if last_error is not None else ""
            raise DeadlineExceeded(f"{what}: not ready after {timeout:.0f} s{detail}")
        time.sleep(min(interval, remaining))
        interval = min(interval * 1.5, max_interval)
