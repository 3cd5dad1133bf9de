"""What one commit attempt stages: data written once, metadata planned per attempt.

* :class:`WrittenFiles` keeps the data files a write produced, so a retried attempt re-plans
  metadata only; the files are deleted when the write fails for good (unless an attempt's
  outcome stayed unknown, when they may be referenced).
* :class:`MetadataChanges` stages schema, spec and property changes on a transaction only when
  there are any (a transaction copies the whole table metadata on every access).
* :class:`PendingCommit` is one request to the catalog: updates, requirements, and the
  manifests written for it, deleted when the request is refused.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import CommitStateUnknownException
from pyiceberg.io import FileIO
from pyiceberg.manifest import DataFile
from pyiceberg.table import Table, Transaction
from pyiceberg.table.metadata import TableMetadata
from pyiceberg.table.update import (
    AssertCreate,
    AssertTableUUID,
    TableRequirement,
    TableUpdate,
)

from floe_dagster_iceberg.engine._pyiceberg import staged_changes, transaction_table
from floe_dagster_iceberg.engine.outages import may_have_reached_server
from floe_dagster_iceberg.engine.snapshot import ProducedSnapshot

log = logging.getLogger("floe_dagster_iceberg")


def delete_quietly(io: FileIO, paths: Iterable[str]) -> None:
    """Delete files nothing references; what cannot be deleted is left to orphan removal."""
    for path in paths:
        try:
            io.delete(path)
        except Exception:
            log.warning("Could not delete uncommitted file %s", path, exc_info=True)


@dataclass
class PendingCommit:
    """One commit request and the metadata files written for it."""

    table: Table
    updates: tuple[TableUpdate, ...]
    requirements: tuple[TableRequirement, ...]
    metadata_files: list[str] = field(default_factory=list)

    def discard(self) -> None:
        """The request was refused: its manifests and manifest list are nobody's."""
        delete_quietly(self.table.io, self.metadata_files)
        self.metadata_files = []


def send(catalog: Catalog, pending: PendingCommit) -> Table:
    """One commit request; the committed table, or ``CommitStateUnknownException`` when the
    request may have been processed (never redo it blindly: look for its write id)."""
    try:
        response = catalog.commit_table(pending.table, pending.requirements, pending.updates)
    except CommitStateUnknownException:
        raise
    except Exception as error:
        if may_have_reached_server(error):
            raise CommitStateUnknownException(str(error)) from error
        pending.discard()
        raise
    return Table(
        identifier=pending.table.name(),
        metadata=response.metadata,
        metadata_location=response.metadata_location,
        io=pending.table.io,
        catalog=catalog,
    )


class MetadataChanges:
    """Schema, spec and property changes of one attempt, on a transaction opened on demand."""

    def __init__(self, table: Table, create: Transaction | None = None) -> None:
        self.table = transaction_table(create) if create is not None else table
        self.creating = create is not None
        self._transaction = create

    @property
    def transaction(self) -> Transaction:
        if self._transaction is None:
            self._transaction = self.table.transaction()
        return self._transaction

    @property
    def changed(self) -> bool:
        """Whether anything is staged (a table creation counts)."""
        return self.creating or (
            self._transaction is not None and bool(staged_changes(self._transaction)[0])
        )

    @property
    def metadata(self) -> TableMetadata:
        """The table metadata with the staged changes applied."""
        if not self.changed:
            return self.table.metadata
        return self.transaction.table_metadata

    def with_snapshot(self, produced: ProducedSnapshot) -> PendingCommit:
        """The request committing the staged changes and ``produced`` together."""
        pending = self.without_snapshot()
        pending.updates = (*pending.updates, *produced.updates)
        if not self.creating:
            pending.requirements = (*pending.requirements, *produced.requirements)
        pending.metadata_files = list(produced.written)
        return pending

    def without_snapshot(self) -> PendingCommit:
        """The request committing only the staged changes."""
        updates, requirements = (
            staged_changes(self._transaction) if self._transaction is not None else ((), ())
        )
        if self.creating:
            requirements = (AssertCreate(),)
        else:
            requirements = (
                *requirements,
                AssertTableUUID(uuid=self.table.metadata.table_uuid),
            )
        return PendingCommit(self.table, tuple(updates), tuple(requirements))


def layout_of(metadata: TableMetadata) -> tuple[Any, ...]:
    """What data files depend on: the schema's fields (ids, names, types) and the spec."""
    spec = metadata.spec()
    return (metadata.schema().as_struct(), spec.spec_id, tuple(spec.fields), metadata.location)


class WrittenFiles:
    """The data files of one write: produced once, reused by every attempt whose table layout
    is the same, deleted when the write fails for good."""

    def __init__(self) -> None:
        self.io: FileIO | None = None
        self._by_key: dict[tuple[Any, ...], list[DataFile]] = {}
        self._paths: list[str] = []
        self._unknown = False
        self._landed = False
        self.upsert: Any = None

    def once(
        self, metadata: TableMetadata, write: Callable[[], list[DataFile]], key: Any = None
    ) -> list[DataFile]:
        """The files ``write`` produced for this layout (and ``key``), written on first use."""
        full_key = (key, layout_of(metadata))
        if full_key not in self._by_key:
            files = write()
            self._by_key[full_key] = files
            self._paths.extend(f.file_path for f in files)
        return self._by_key[full_key]

    def track(self, files: Iterable[DataFile]) -> None:
        """Files written for this write elsewhere (e.g. by an upsert plan)."""
        self._paths.extend(f.file_path for f in files)

    def forget(self, files: Iterable[DataFile]) -> None:
        """Files of a stale plan that no attempt committed: delete them now."""
        stale = {f.file_path for f in files}
        if self._unknown or self.io is None:
            return
        delete_quietly(self.io, stale)
        self._paths = [p for p in self._paths if p not in stale]

    def outcome_unknown(self) -> None:
        self._unknown = True

    def landed(self, committed: Iterable[str] = ()) -> None:
        """The write landed with the data files ``committed``: files written for attempts
        whose plan changed (another layout, a file no longer to rewrite) are nobody's."""
        self._landed = True
        if self._unknown or self.io is None:
            return
        kept = set(committed)
        delete_quietly(self.io, [p for p in self._paths if p not in kept])
        self._paths = [p for p in self._paths if p in kept]

    def discard(self) -> None:
        """The write failed: delete its data files, unless a commit may reference them."""
        if self._landed or self._unknown or self.io is None:
            return
        delete_quietly(self.io, self._paths)
        self._paths = []
