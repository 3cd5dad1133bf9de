"""A writer process that stops right before its data commit, so a test can SIGKILL it there.

:func:`start_paused_writer` starts a real process (from the forkserver of
:mod:`reliability.processes`) that runs an ordinary ``manager.write``. Every catalog commit
request goes through unchanged, except the first one that adds a snapshot (the data commit):
there the process reports the request over a pipe and blocks. By then it has written its data
files, manifests and manifest list. If the write were split into several commits (schema, then
spec, then data), the earlier ones would already have landed when the process stops.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import pyarrow as pa
from infra.catalogs import load_test_catalog
from pyiceberg.table.update import AddSnapshotUpdate

from floe_dagster_iceberg.engine.config import WriteConfig
from floe_dagster_iceberg.engine.manager import IcebergTableManager

from .processes import CONTEXT


@dataclass(frozen=True)
class PausedWriter:
    """A writer process blocked right before its data commit."""

    process: Any
    pid: int
    commits_before_pause: int
    update_kinds: tuple[str, ...]
    # Kept open until the kill: a closed end would wake the writer with end-of-file.
    connection: Connection


def _write_and_pause(
    properties: dict[str, str],
    table: str,
    data: pa.Table,
    config: WriteConfig,
    connection: Connection,
) -> None:
    manager = IcebergTableManager(load_test_catalog(properties))
    commit_table = manager.catalog.commit_table
    commits = [0]

    def pause_before_data_commit(target: Any, requirements: Any, updates: Any) -> Any:
        if any(isinstance(update, AddSnapshotUpdate) for update in updates):
            kinds = tuple(type(update).__name__ for update in updates)
            connection.send(("paused", os.getpid(), commits[0], kinds))
            connection.recv()  # the parent never answers: it kills this process
            raise AssertionError("the writer was meant to be killed before committing")
        commits[0] += 1
        return commit_table(target, requirements, updates)

    manager.catalog.commit_table = pause_before_data_commit  # type: ignore[method-assign]
    try:
        manager.write(table, data, config)
    except BaseException as error:
        connection.send(("error", os.getpid(), f"{type(error).__name__}: {error}", ()))
        raise
    connection.send(("committed", os.getpid(), commits[0], ()))


def start_paused_writer(
    properties: dict[str, str],
    table: str,
    data: pa.Table,
    config: WriteConfig,
    timeout: float = 120.0,
) -> PausedWriter:
    """Start the writer and return once it is blocked before its data commit."""
    parent, child = CONTEXT.Pipe()
    process = CONTEXT.Process(
        target=_write_and_pause, args=(properties, table, data, config, child)
    )
    process.start()
    child.close()
    if not parent.poll(timeout):
        process.kill()
        process.join()
        raise AssertionError(f"the writer did not reach its data commit within {timeout:.0f} s")
    state, pid, detail, kinds = parent.recv()
    if state != "paused":
        process.join(timeout)
        raise AssertionError(f"the writer did not pause before committing: {state} {detail}")
    return PausedWriter(process, pid, detail, kinds, parent)


def kill(writer: PausedWriter) -> None:
    """SIGKILL the paused writer and reap it."""
    os.kill(writer.pid, signal.SIGKILL)
    writer.process.join()
    writer.connection.close()
    assert writer.process.exitcode == -signal.SIGKILL
