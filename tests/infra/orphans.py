"""Clean up servers left behind by test processes that died without running their finalizers.

Finalizers and ``atexit`` stop every server at session end, also when tests fail. A test
process killed outright (SIGKILL, ``os._exit`` after a hard timeout) runs neither, and its
servers would live on. Each server directory therefore records its owner's PID; when a later
test process starts a server of the same kind, it stops the servers of owners that are gone.
Only processes whose command line names the orphaned directory are signalled, so a recycled
PID is never hit.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import signal
import tempfile
from pathlib import Path

OWNER_FILE = "floe-owner.json"
_reaped: set[str] = set()


def write_owner(
    directory: Path,
    pids: dict[str, int] | None = None,
    files: tuple[str, ...] = (),
    pid_files: tuple[str, ...] = (),
) -> None:
    """Record this process as owner of ``directory``.

    ``pids`` are the server processes running there, ``pid_files`` files whose first line is
    the PID of one (PostgreSQL's ``postmaster.pid``); ``files`` are glob patterns of files the
    servers create elsewhere (sockets) that must go with them.
    """
    record = {
        "owner": os.getpid(),
        "pids": pids or {},
        "pid_files": list(pid_files),
        "files": list(files),
    }
    (directory / OWNER_FILE).write_text(json.dumps(record))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _cmdline_mentions(pid: int, text: str) -> bool:
    import psutil

    with contextlib.suppress(psutil.Error):
        return any(text in part for part in psutil.Process(pid).cmdline())
    return False


def reap_orphans(pattern: str, sig: int = signal.SIGKILL) -> None:
    """Stop servers in ``<tmp>/<pattern>`` directories whose owner process no longer exists.

    Runs once per pattern and process.
    """
    if pattern in _reaped:
        return
    _reaped.add(pattern)
    for owner_file in glob.glob(os.path.join(tempfile.gettempdir(), pattern, OWNER_FILE)):
        directory = Path(owner_file).parent
        try:
            record = json.loads(Path(owner_file).read_text())
        except (OSError, ValueError):
            continue
        owner = record.get("owner")
        if not isinstance(owner, int) or _alive(owner):
            continue
        pids = list(record.get("pids", {}).values())
        for pid_file in record.get("pid_files", []):
            with contextlib.suppress(OSError, ValueError, IndexError):
                pids.append(int(Path(pid_file).read_text().splitlines()[0]))
        for pid in pids:
            if isinstance(pid, int) and _cmdline_mentions(pid, str(directory)):
                with contextlib.suppress(OSError):
                    os.kill(pid, sig)
        for pattern_ in record.get("files", []):
            for path in glob.glob(pattern_):
                with contextlib.suppress(OSError):
                    os.unlink(path)
        shutil.rmtree(directory, ignore_errors=True)
