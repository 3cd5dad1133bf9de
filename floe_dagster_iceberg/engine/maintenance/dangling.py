"""Dangling delete files: merge-on-read delete files that apply to no live data file, removed
from the current snapshot in ONE ``replace`` snapshot that changes nothing else.

They are left behind when the data files they delete from leave the snapshot without them: an
overwrite or a delete of whole files, a compaction by an engine that keeps delete files (or
ours, for a position-delete file that also named files it did not rewrite). Every reader still
opens them and matches them against the data it reads. Which files dangle is decided by
:class:`~.deletes.DeleteIndex` (position deletes by the data files they name, equality deletes by
sequence number). The files themselves stay on storage while older snapshots reference them;
snapshot expiry deletes them.

This is a step of its own rather than a part of compaction: deletes dangle without any
compaction (an overwrite of a partition leaves them), removing them rewrites only delete
manifests (no data is read or written), so it is cheap enough to run after every compaction
and on tables compaction does not touch; and it matches Iceberg's own separate action
(``rewrite_data_files`` option ``remove-dangling-deletes``). Compaction itself removes the
position deletes its rewrite makes obsolete, in its own snapshot.
"""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING

from pyiceberg.exceptions import (
    CommitFailedException,
    CommitStateUnknownException,
    ValidationException,
)
from pyiceberg.expressions import AlwaysTrue
from pyiceberg.manifest import DataFileContent
from pyiceberg.table import Table
from pyiceberg.table.snapshots import Operation
from pyiceberg.table.update import AssertTableUUID

from floe_dagster_iceberg.engine.attempt import PendingCommit, send
from floe_dagster_iceberg.engine.config import RetryPolicy
from floe_dagster_iceberg.engine.maintenance.deletes import DeleteIndex, LiveFile
from floe_dagster_iceberg.engine.maintenance.files import read_fresh, reload
from floe_dagster_iceberg.engine.maintenance.results import (
    MAINTENANCE_ID_PROPERTY,
    MAINTENANCE_PROPERTY,
    DanglingDeletesResult,
    find_maintenance_snapshot,
    table_name,
)
from floe_dagster_iceberg.engine.retry import resolve_retry
from floe_dagster_iceberg.engine.snapshot import FileChange, FilesGoneError, produce_snapshot
from floe_dagster_iceberg.errors import CommitConflictError, InvalidInputError

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog

__all__ = ["remove_dangling_deletes"]


def _plan(table: Table) -> tuple[int, list[LiveFile]]:
    """(live delete files, the dangling ones) of the table's current snapshot."""
    index = DeleteIndex.of(table)
    return len(index.position_deletes) + len(index.equality_deletes), index.dangling()


def remove_dangling_deletes(
    catalog: Catalog, table: Table, *, retry: RetryPolicy | None = None
) -> DanglingDeletesResult:
    """Remove the delete files that apply to no live data file, in one ``replace`` snapshot.

    A position-delete file dangles when none of the data files it names is live any more; an
    equality-delete file when it is not newer than any live data file of its partition (of the
    table, for an unpartitioned delete file). Data files, rows and every other delete file are
    left as they are; nothing is committed when nothing dangles. A commit that conflicts with a
    concurrent one is planned again against the fresh table, as ``retry`` says, else as the
    table's ``commit.retry.*`` properties say.

    Example:
        >>> import tempfile, pyarrow as pa
        >>> from pyiceberg.catalog.sql import SqlCatalog
        >>> tmp = tempfile.mkdtemp()
        >>> catalog = SqlCatalog("demo", uri=f"sqlite:///{tmp}/c.db", warehouse=f"file://{tmp}")
        >>> catalog.create_namespace("sales")
        >>> table = catalog.create_table("sales.orders", pa.schema([("id", pa.int64())]))
        >>> table.append(pa.table({"id": [1, 2, 3]}))
        >>> result = remove_dangling_deletes(catalog, table)
        >>> result.committed, result.delete_files_removed
        (False, 0)
    """
    started = time.monotonic()
    name = table_name(table)
    schedule = resolve_retry(retry or RetryPolicy(), table.metadata.properties)
    maintenance_id = uuid.uuid4().hex
    properties = {
        MAINTENANCE_PROPERTY: "remove-dangling-deletes",
        MAINTENANCE_ID_PROPERTY: maintenance_id,
    }
    last_error: Exception | None = None
    for attempt in range(1, schedule.max_attempts + 1):
        if attempt > 1:
            table = reload(catalog, table)
        (examined, dangling), table, _ = read_fresh(
            catalog, table, _plan, "dangling delete removal"
        )
        result = _result(name, None, examined, dangling, attempt - 1, started)
        if not dangling:
            return result
        _check_writable(name, table)
        try:
            snapshot_id = _commit(catalog, table, dangling, properties)
        except (CommitFailedException, ValidationException, FilesGoneError) as error:
            last_error = error
        except CommitStateUnknownException as error:
            last_error = error
            found = find_maintenance_snapshot(reload(catalog, table), maintenance_id)
            if found is not None:
                return _result(name, found.snapshot_id, examined, dangling, attempt, started)
        else:
            return _result(name, snapshot_id, examined, dangling, attempt, started)
        if attempt < schedule.max_attempts:
            time.sleep(schedule.backoff_seconds(attempt))
    raise CommitConflictError(
        f"Table '{name}': removing dangling delete files still conflicted with concurrent "
        f"commits after {schedule.max_attempts} attempts ({type(last_error).__name__}: "
        f"{last_error}). Nothing was committed; run it again when writers are quieter."
    ) from last_error


def _check_writable(name: str, table: Table) -> None:
    version = table.metadata.format_version
    if version != 2:
        raise InvalidInputError(
            f"Table '{name}' is format version {version}: PyIceberg 0.12 writes the delete "
            "manifests of version-2 tables only. Remove its dangling delete files with Spark "
            "(rewrite_data_files with the option remove-dangling-deletes)."
        )


def _commit(
    catalog: Catalog, table: Table, dangling: list[LiveFile], properties: dict[str, str]
) -> int:
    produced = produce_snapshot(
        table.metadata,
        table.io,
        FileChange(Operation.REPLACE, removed=[d.file for d in dangling], scope=AlwaysTrue()),
        properties,
    )
    pending = PendingCommit(
        table,
        produced.updates,
        (AssertTableUUID(uuid=table.metadata.table_uuid), *produced.requirements),
        produced.written,
    )
    committed = send(catalog, pending).metadata.current_snapshot_id
    assert committed is not None
    return committed


def _result(
    name: str,
    snapshot_id: int | None,
    examined: int,
    dangling: list[LiveFile],
    attempts: int,
    started: float,
) -> DanglingDeletesResult:
    removed = dangling if snapshot_id is not None else []
    sizes = {d.path: d.file.file_size_in_bytes for d in removed}
    return DanglingDeletesResult(
        table=name,
        snapshot_id=snapshot_id,
        delete_files=examined,
        position_delete_files_removed=sum(
            d.file.content == DataFileContent.POSITION_DELETES for d in removed
        ),
        equality_delete_files_removed=sum(
            d.file.content == DataFileContent.EQUALITY_DELETES for d in removed
        ),
        bytes_removed=sum(sizes.values()),
        removed_files=tuple(sorted(sizes)),
        commit_attempts=attempts,
        duration_seconds=time.monotonic() - started,
    )
