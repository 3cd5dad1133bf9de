"""Snapshot producers shared by the upsert engine and table maintenance.

PyIceberg 0.12's ``_OverwriteFiles._deleted_entries`` filters the parent's manifests on its
worker threads with one manifest evaluator per partition spec. The evaluator keeps the manifest
being evaluated in an attribute, so threads overwrite each other's: with many manifests some
matching ones are skipped and the commit fails with "Missing required files to delete".
:class:`OverwriteFiles` evaluates the manifests on the calling thread and only fetches their
entries in parallel; everything else is PyIceberg's overwrite.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from pyiceberg.manifest import DataFileContent, ManifestEntry, ManifestEntryStatus, ManifestFile
from pyiceberg.table.refs import MAIN_BRANCH
from pyiceberg.table.snapshots import Operation
from pyiceberg.table.update.snapshot import _OverwriteFiles

if TYPE_CHECKING:
    from pyiceberg.table import Transaction

ENTRY_WORKERS = 8
"""Threads reading the entries of the parent's candidate manifests."""


class OverwriteFiles(_OverwriteFiles):
    """PyIceberg's overwrite producer, with a thread-safe ``_deleted_entries``."""

    def _deleted_entries(self) -> list[ManifestEntry]:
        """The parent's entries of the files being deleted, marked DELETED.

        Same result as PyIceberg's, but manifests are filtered on this thread (the evaluators
        are not thread-safe) and only the entries are fetched in parallel.
        """
        if self._parent_snapshot_id is None:
            entries: list[ManifestEntry] = []
        else:
            parent = self._transaction.table_metadata.snapshot_by_id(self._parent_snapshot_id)
            if parent is None:
                raise ValueError(
                    f"Could not find the previous snapshot: {self._parent_snapshot_id}"
                )
            evaluators: dict[int, Callable[[ManifestFile], bool]] = {}
            candidates = []
            for manifest in parent.manifests(self._io):
                spec_id = manifest.partition_spec_id
                if spec_id not in evaluators:
                    evaluators[spec_id] = self._build_manifest_evaluator(spec_id)
                if evaluators[spec_id](manifest):
                    candidates.append(manifest)
            with ThreadPoolExecutor(max_workers=ENTRY_WORKERS) as pool:
                entries = [e for chunk in pool.map(self._deleted_in, candidates) for e in chunk]
        self._validate_required_deletes(entries)
        return entries

    def _deleted_in(self, manifest: ManifestFile) -> list[ManifestEntry]:
        return [
            ManifestEntry.from_args(
                status=ManifestEntryStatus.DELETED,
                snapshot_id=self._snapshot_id,
                sequence_number=entry.sequence_number,
                file_sequence_number=entry.file_sequence_number,
                data_file=entry.data_file,
            )
            for entry in manifest.fetch_manifest_entry(self._io, discard_deleted=True)
            if entry.data_file.content == DataFileContent.DATA
            and entry.data_file in self._deleted_data_files
        ]


def overwrite(
    tx: Transaction, snapshot_properties: dict[str, str], branch: str | None = MAIN_BRANCH
) -> OverwriteFiles:
    """What ``tx.update_snapshot(snapshot_properties, branch).overwrite()`` returns, made safe.

    As in PyIceberg, the snapshot is an ``overwrite``, or an ``append`` when the branch has no
    snapshot yet.
    """
    has_parent = tx.table_metadata.snapshot_by_name(name=branch) is not None
    return OverwriteFiles(
        operation=Operation.OVERWRITE if has_parent else Operation.APPEND,
        transaction=tx,
        io=tx._table.io,
        branch=branch,
        snapshot_properties=snapshot_properties,
    )
