"""Branches: reading and writing a branch other than ``main``, and publishing one into another.

A branch that does not exist yet is read as (and forks from) the first existing branch of a
fallback list, then ``main``. Publishing moves the staged snapshots of a branch into another
one in ONE commit that also removes the published branch: a fast-forward when the target has
not moved since the fork, else the branch's net file change re-applied on the target's head
(data files are never rewritten).

Example:
    >>> import pyarrow as pa, tempfile
    >>> from pyiceberg.catalog.sql import SqlCatalog
    >>> from floe_dagster_iceberg.engine.manager import IcebergTableManager
    >>> from floe_dagster_iceberg.engine.config import WriteConfig
    >>> tmp = tempfile.mkdtemp()
    >>> catalog = SqlCatalog("doc", uri=f"sqlite:///{tmp}/c.db", warehouse=f"file://{tmp}")
    >>> manager = IcebergTableManager(catalog)
    >>> _ = manager.write("sales.orders", pa.table({"id": [1]}))
    >>> _ = manager.write("sales.orders", pa.table({"id": [2]}), WriteConfig(branch="audit"))
    >>> manager.scan("sales.orders").num_rows, manager.scan("sales.orders", ref="audit").num_rows
    (1, 2)
    >>> manager.publish_branch("sales.orders", "audit").fast_forward
    True
    >>> manager.scan("sales.orders").num_rows
    2
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Iterator, Sequence

from pydantic import BaseModel, ConfigDict
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import (
    CommitFailedException,
    CommitStateUnknownException,
    ValidationException,
)
from pyiceberg.expressions import AlwaysTrue
from pyiceberg.io import FileIO
from pyiceberg.manifest import DataFile, ManifestContent, ManifestEntry, ManifestEntryStatus
from pyiceberg.table import Table
from pyiceberg.table.metadata import TableMetadata
from pyiceberg.table.refs import MAIN_BRANCH, SnapshotRefType
from pyiceberg.table.snapshots import Operation, Snapshot, ancestors_of
from pyiceberg.table.update import (
    AssertRefSnapshotId,
    AssertTableUUID,
    RemoveSnapshotRefUpdate,
    SetSnapshotRefUpdate,
)

from floe_dagster_iceberg.engine.attempt import PendingCommit, send
from floe_dagster_iceberg.engine.config import RetryPolicy
from floe_dagster_iceberg.engine.properties import WRITE_MODE_PROPERTY
from floe_dagster_iceberg.engine.retry import resolve_retry
from floe_dagster_iceberg.engine.snapshot import FileChange, FilesGoneError, produce_snapshot
from floe_dagster_iceberg.errors import CommitConflictError, InvalidInputError, TableNotFoundError

__all__ = [
    "SOURCE_SNAPSHOT_PROPERTY",
    "PublishResult",
    "branch_head",
    "net_change",
    "on_branch",
    "publish_branch",
    "remove_branches",
    "stale_branches",
]

log = logging.getLogger("floe_dagster_iceberg")

SOURCE_SNAPSHOT_PROPERTY = "source-snapshot-id"
"""Summary property of a re-applied snapshot: the branch snapshot it publishes (as Iceberg's
cherry-pick writes it)."""

_STANDARD_SUMMARY_PREFIXES = ("added-", "deleted-", "removed-", "total-", "changed-", "partitions.")


class PublishResult(BaseModel):
    """What publishing a branch did.

    ``fast_forward``: the target now points at the branch head itself; otherwise a new
    snapshot re-applied the branch's files on the target. ``already_published``: an earlier
    attempt had published it (only the branch was left to remove, if anything).

    Example:
        >>> PublishResult(table="sales.orders", branch="audit", into="main", snapshot_id=1,
        ...               fast_forward=True).fast_forward
        True
    """

    model_config = ConfigDict(frozen=True)

    table: str
    branch: str
    into: str
    snapshot_id: int | None
    fast_forward: bool
    already_published: bool = False
    snapshots_published: int = 0
    commit_attempts: int = 1


def branch_head(metadata: TableMetadata, branches: Sequence[str]) -> Snapshot | None:
    """The head of the first existing branch of ``branches``, else of ``main`` (None: empty)."""
    for name in (*branches, MAIN_BRANCH):
        snapshot = metadata.snapshot_by_name(name)
        if snapshot is not None:
            return snapshot
    return None


def on_branch(table: Table, branch: str, fork_from: Sequence[str] = ()) -> Table:
    """The table as seen from ``branch``: its head is the current snapshot.

    A branch that does not exist yet shows the head of the first existing branch of
    ``fork_from``, else ``main``; a write to it creates it from there.

    Example:
        >>> import pyarrow as pa, tempfile
        >>> from pyiceberg.catalog.sql import SqlCatalog
        >>> tmp = tempfile.mkdtemp()
        >>> catalog = SqlCatalog("doc", uri=f"sqlite:///{tmp}/c.db", warehouse=f"file://{tmp}")
        >>> catalog.create_namespace("sales")
        >>> table = catalog.create_table("sales.orders", pa.schema([("id", pa.int64())]))
        >>> table.append(pa.table({"id": [1]}))
        >>> on_branch(table, "dev").current_snapshot() == table.current_snapshot()
        True
    """
    head = branch_head(table.metadata, (branch, *fork_from))
    head_id = head.snapshot_id if head is not None else None
    if head_id == table.metadata.current_snapshot_id:
        return table
    return Table(
        identifier=table.name(),
        metadata=table.metadata.model_copy(update={"current_snapshot_id": head_id}),
        metadata_location=table.metadata_location,
        io=table.io,
        catalog=table.catalog,
    )


def publish_branch(
    catalog: Catalog,
    identifier: tuple[str, str],
    branch: str,
    into: str = MAIN_BRANCH,
    fork_from: Sequence[str] = (),
    retry: RetryPolicy | None = None,
    staged_snapshot_id: int | None = None,
) -> PublishResult:
    """Publish ``branch`` into ``into`` and remove it, in one commit, retried on conflicts.

    ``into`` is created (from the first existing branch of ``fork_from``, else ``main``) if
    missing. When ``into`` moved since ``branch`` forked, the branch's added and removed data
    files are re-applied on its head, unless the branch overwrote or upserted partitions that
    ``into`` changed meanwhile (the result would depend on the order): that refuses the
    publish, leaving both branches as they were.

    A branch that no longer exists counts as published only when ``staged_snapshot_id`` (the
    head the caller staged) is on ``into``, or when no ``staged_snapshot_id`` is given.
    """
    name = ".".join(identifier)
    schedule = None
    started = time.monotonic()
    for attempt in itertools.count(1):
        table = catalog.load_table(identifier)
        schedule = schedule or resolve_retry(retry, table.metadata.properties)
        plan = _PublishPlan(table, branch, into, fork_from, staged_snapshot_id)
        if plan.already_published and plan.head is None:
            return plan.result(attempt)
        pending = plan.pending_commit()
        try:
            return plan.result(attempt, send(catalog, pending))
        except CommitStateUnknownException:
            reloaded = catalog.load_table(identifier)
            staged = plan.head.snapshot_id if plan.head else staged_snapshot_id
            if _PublishPlan(reloaded, branch, into, fork_from, staged).already_published:
                return plan.result(attempt, reloaded)
            error: Exception = CommitConflictError(f"Table '{name}': publish outcome unknown")
        except (CommitFailedException, ValidationException) as refused:
            pending.discard()
            error = refused
        elapsed = time.monotonic() - started
        if attempt >= schedule.max_attempts or elapsed >= schedule.total_timeout_seconds:
            raise CommitConflictError(
                f"Table '{name}': publishing branch {branch!r} into {into!r} still conflicted "
                f"with concurrent commits after {attempt} attempts ({error}). Nothing was "
                f"published; the data stays on branch {branch!r}. Publish it again with "
                "IcebergTableManager.publish_branch."
            )
        time.sleep(schedule.backoff_seconds(attempt))
    raise AssertionError("unreachable")


class _PublishPlan:
    """What publishing ``branch`` into ``into`` takes on the table as loaded."""

    def __init__(
        self,
        table: Table,
        branch: str,
        into: str,
        fork_from: Sequence[str],
        staged_snapshot_id: int | None = None,
    ) -> None:
        self.table = table
        self.name = ".".join(table.name())
        self.branch = branch
        self.into = into
        metadata = table.metadata
        into_ref = metadata.refs.get(into)
        self.into_head_id = into_ref.snapshot_id if into_ref is not None else None
        self.target = branch_head(metadata, (into, *fork_from))
        self.fork_from = tuple(fork_from)
        self.head = metadata.snapshot_by_name(branch)
        self._target_line = list(ancestors_of(self.target, metadata)) if self.target else []
        self._target_ids = {s.snapshot_id for s in self._target_line}
        self.chain: list[Snapshot] = []
        if self.head is None:
            self.already_published = staged_snapshot_id is None or self._on_target(
                staged_snapshot_id
            )
            if not self.already_published:
                raise TableNotFoundError(
                    f"Table '{self.name}': branch {branch!r} no longer exists and its snapshot "
                    f"{staged_snapshot_id} is not on {into!r}: nothing was published (maintenance "
                    "may have removed the branch). Write the data again."
                )
            return
        self.already_published = self._on_target(self.head.snapshot_id)
        self.chain = self._unpublished_chain(metadata)

    def _on_target(self, snapshot_id: int) -> bool:
        """Whether ``snapshot_id`` is on the target line, itself or re-applied."""
        return snapshot_id in self._target_ids or any(
            s.summary is not None and s.summary.get(SOURCE_SNAPSHOT_PROPERTY) == str(snapshot_id)
            for s in self._target_line
        )

    def _unpublished_chain(self, metadata: TableMetadata) -> list[Snapshot]:
        """The branch's snapshots since it forked from the target line, newest first."""
        chain = []
        for snapshot in ancestors_of(self.head, metadata):
            if snapshot.snapshot_id in self._target_ids:
                break
            chain.append(snapshot)
        return chain

    @property
    def fast_forward(self) -> bool:
        if self.head is None:
            return False
        return self.target is None or self.target.snapshot_id in {
            s.snapshot_id for s in ancestors_of(self.head, self.table.metadata)
        }

    def pending_commit(self) -> PendingCommit:
        metadata = self.table.metadata
        requirements = [AssertTableUUID(uuid=metadata.table_uuid)]
        updates: list = []
        written: list[str] = []
        if self.head is not None:
            requirements.append(
                AssertRefSnapshotId(snapshot_id=self.head.snapshot_id, ref=self.branch)
            )
            updates.append(RemoveSnapshotRefUpdate(ref_name=self.branch))
        if not self.already_published:
            if self.fast_forward:
                requirements.append(
                    AssertRefSnapshotId(snapshot_id=self.into_head_id, ref=self.into)
                )
                updates.insert(
                    0,
                    SetSnapshotRefUpdate(
                        ref_name=self.into,
                        type=SnapshotRefType.BRANCH,
                        snapshot_id=self.head.snapshot_id,
                    ),
                )
            else:
                produced = self._reapplied()
                requirements.extend(produced.requirements)
                updates[:0] = produced.updates
                written = produced.written
        return PendingCommit(self.table, tuple(updates), tuple(requirements), written)

    def _reapplied(self):
        on_target = on_branch(self.table, self.into, self.fork_from)
        change = net_change(self.table.io, list(reversed(self.chain)), self.name, self.branch)
        self._refuse_order_dependent(change)
        properties = {
            **_custom_properties(self.head),
            SOURCE_SNAPSHOT_PROPERTY: str(self.head.snapshot_id),
        }
        try:
            return produce_snapshot(
                on_target.metadata, self.table.io, change, properties, self.into
            )
        except FilesGoneError as gone:
            raise CommitConflictError(
                f"Table '{self.name}': branch {self.branch!r} replaces data files that "
                f"{self.into!r} no longer holds ({gone}): another write changed the same "
                f"partitions of {self.into!r} since the branch was created. Nothing was "
                f"published; the staged data stays on branch {self.branch!r}. Re-run the write."
            ) from None

    def _refuse_order_dependent(self, change: FileChange) -> None:
        """An overwrite or upsert re-applied on partitions the target changed since the fork
        would keep both sides' rows: refuse it (as Iceberg's cherry-pick does)."""
        replacing = any(
            s.summary is not None and s.summary.get(WRITE_MODE_PROPERTY, "overwrite") != "append"
            for s in self.chain
        )
        if not replacing:
            return
        branch_ids = {s.snapshot_id for s in ancestors_of(self.head, self.table.metadata)}
        moved = [s for s in self._target_line if s.snapshot_id not in branch_ids]
        overlap = _partitions(change) & _changed_partitions(self.table.io, moved)
        if overlap:
            raise CommitConflictError(
                f"Table '{self.name}': branch {self.branch!r} replaces rows of partition(s) "
                f"that {self.into!r} changed since the branch was created "
                f"({len(overlap)} partition(s)); publishing it would keep both writes' rows. "
                f"Nothing was published; the staged data stays on branch {self.branch!r}. "
                "Re-run the write."
            )

    def result(self, attempts: int, committed: Table | None = None) -> PublishResult:
        """The outcome; ``committed``: the table after this plan's commit landed."""
        if self.already_published or self.head is None:
            return PublishResult(
                table=self.name,
                branch=self.branch,
                into=self.into,
                snapshot_id=self.target.snapshot_id if self.target else None,
                fast_forward=False,
                already_published=True,
                commit_attempts=attempts,
            )
        head = committed.metadata.snapshot_by_name(self.into) if committed else None
        return PublishResult(
            table=self.name,
            branch=self.branch,
            into=self.into,
            snapshot_id=head.snapshot_id if head else None,
            fast_forward=self.fast_forward,
            snapshots_published=len(self.chain),
            commit_attempts=attempts,
        )


def net_change(io: FileIO, snapshots: Sequence[Snapshot], table: str, branch: str) -> FileChange:
    """The data files ``snapshots`` (oldest first) added and removed, net of each other."""
    added: dict[str, DataFile] = {}
    removed: dict[str, DataFile] = {}
    for snapshot, content, entry in _own_entries(io, snapshots):
        if content != ManifestContent.DATA:
            raise InvalidInputError(
                f"Table '{table}': branch {branch!r} holds delete files (snapshot "
                f"{snapshot.snapshot_id}), which cannot be re-applied on a moved branch; "
                "publish it with the engine that wrote them (e.g. Spark's cherrypick)."
            )
        path = entry.data_file.file_path
        if entry.status == ManifestEntryStatus.ADDED:
            added[path] = entry.data_file
        elif entry.status == ManifestEntryStatus.DELETED and added.pop(path, None) is None:
            removed[path] = entry.data_file
    operation = Operation.OVERWRITE if removed else Operation.APPEND
    return FileChange(operation, list(added.values()), list(removed.values()), AlwaysTrue())


def _own_entries(
    io: FileIO, snapshots: Sequence[Snapshot]
) -> Iterator[tuple[Snapshot, ManifestContent, ManifestEntry]]:
    """The manifest entries each snapshot wrote itself (added or deleted files, of any kind)."""
    for snapshot in snapshots:
        for manifest in snapshot.manifests(io):
            if manifest.added_snapshot_id != snapshot.snapshot_id:
                continue
            for entry in manifest.fetch_manifest_entry(io, discard_deleted=False):
                if entry.snapshot_id == snapshot.snapshot_id:
                    yield snapshot, manifest.content, entry


def _changed_partitions(io: FileIO, snapshots: Sequence[Snapshot]) -> set[tuple[int, str]]:
    return {
        (entry.data_file.spec_id, repr(entry.data_file.partition))
        for _, _, entry in _own_entries(io, snapshots)
        if entry.status in (ManifestEntryStatus.ADDED, ManifestEntryStatus.DELETED)
    }


def _partitions(change: FileChange) -> set[tuple[int, str]]:
    return {(f.spec_id, repr(f.partition)) for f in (*change.added, *change.removed)}


def _custom_properties(snapshot: Snapshot) -> dict[str, str]:
    """The summary properties a writer added (run id, write id, ...), not Iceberg's totals."""
    if snapshot.summary is None:
        return {}
    return {
        key: value
        for key, value in snapshot.summary.additional_properties.items()
        if "." in key and not key.startswith(_STANDARD_SUMMARY_PREFIXES)
    }


def stale_branches(metadata: TableMetadata, prefix: str, older_than_ms: int) -> list[str]:
    """Branches named ``prefix...`` whose head was committed before ``older_than_ms``."""
    stale = []
    for name, ref in metadata.refs.items():
        if name == MAIN_BRANCH or not name.startswith(prefix):
            continue
        if ref.snapshot_ref_type != SnapshotRefType.BRANCH:
            continue
        head = metadata.snapshot_by_id(ref.snapshot_id)
        if head is None or head.timestamp_ms < older_than_ms:
            stale.append(name)
    return sorted(stale)


def remove_branches(
    catalog: Catalog, identifier: tuple[str, str], names: Sequence[str], attempts: int = 5
) -> list[str]:
    """Remove the branches ``names`` that still exist, in one commit; the removed names."""
    if MAIN_BRANCH in names:
        raise InvalidInputError(
            f"Table '{'.'.join(identifier)}': the main branch is never removed."
        )
    for attempt in itertools.count(1):
        table = catalog.load_table(identifier)
        present = [n for n in names if n in table.metadata.refs]
        if not present:
            return []
        requirements = [AssertTableUUID(uuid=table.metadata.table_uuid)]
        requirements += [
            AssertRefSnapshotId(snapshot_id=table.metadata.refs[n].snapshot_id, ref=n)
            for n in present
        ]
        updates = tuple(RemoveSnapshotRefUpdate(ref_name=n) for n in present)
        try:
            send(catalog, PendingCommit(table, updates, tuple(requirements)))
            return present
        except (CommitFailedException, ValidationException):
            if attempt >= attempts:
                raise
    raise AssertionError("unreachable")
