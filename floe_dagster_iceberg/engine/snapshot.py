"""One snapshot from a set of added and removed files: manifests, manifest list, summary.

Files are data files or delete files (position or equality deletes, format version 2): each kind
goes to manifests of its own content, as Iceberg requires.

The work done depends on the change, not on the table's history: manifests whose partition
summaries cannot hold a removed file are carried over untouched, and manifests are merged on
commit the way Iceberg does (``commit.manifest-merge.enabled``, ``min-count-to-merge``,
``target-size-bytes``), so their number stays bounded without maintenance.
"""

from __future__ import annotations

import contextlib
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pyiceberg.expressions import AlwaysFalse, BooleanExpression
from pyiceberg.expressions.visitors import inclusive_projection, manifest_evaluator
from pyiceberg.io import FileIO
from pyiceberg.manifest import (
    DataFile,
    DataFileContent,
    ManifestContent,
    ManifestEntry,
    ManifestEntryStatus,
    ManifestFile,
    write_manifest,
    write_manifest_list,
)
from pyiceberg.table.locations import load_location_provider
from pyiceberg.table.metadata import TableMetadata
from pyiceberg.table.refs import MAIN_BRANCH, SnapshotRefType
from pyiceberg.table.snapshots import (
    Operation,
    Snapshot,
    SnapshotSummaryCollector,
    Summary,
    update_snapshot_summaries,
)
from pyiceberg.table.update import (
    AddSnapshotUpdate,
    AssertRefSnapshotId,
    SetSnapshotRefUpdate,
    TableRequirement,
    TableUpdate,
)
from pyiceberg.utils.bin_packing import ListPacker

from floe_dagster_iceberg.engine import properties as props
from floe_dagster_iceberg.engine._pyiceberg import write_delete_manifest


class FilesGoneError(Exception):
    """Files the change removes are no longer live: a concurrent commit removed them."""

    def __init__(self, paths: Iterable[str]) -> None:
        self.paths = sorted(paths)
        super().__init__(
            f"{len(self.paths)} file(s) to replace were removed meanwhile, e.g. {self.paths[0]}"
        )


@dataclass(frozen=True)
class FileChange:
    """What one write does to the table's files.

    ``added`` and ``removed`` hold data files and delete files alike (by their ``content``).
    ``scope`` bounds where ``removed`` files can be (manifests it excludes are not read).
    """

    operation: Operation
    added: Sequence[DataFile] = ()
    removed: Sequence[DataFile] = ()
    scope: BooleanExpression = field(default_factory=AlwaysFalse)


@dataclass
class ProducedSnapshot:
    """A snapshot ready to commit, and the metadata files written for it."""

    snapshot: Snapshot
    updates: tuple[TableUpdate, ...]
    requirements: tuple[TableRequirement, ...]
    written: list[str]


def produce_snapshot(
    metadata: TableMetadata,
    io: FileIO,
    change: FileChange,
    summary_properties: dict[str, str],
    branch: str = MAIN_BRANCH,
) -> ProducedSnapshot:
    """Write the manifests and manifest list of ``change`` applied to ``metadata``'s branch head.

    The requirement asserts the head is still the one planned against, so a concurrent commit
    fails this one cleanly and it can be planned again.

    Example:
        >>> import pyarrow as pa, tempfile
        >>> from pyiceberg.catalog.sql import SqlCatalog
        >>> tmp = tempfile.mkdtemp()
        >>> catalog = SqlCatalog("doc", uri=f"sqlite:///{tmp}/c.db", warehouse=f"file://{tmp}")
        >>> catalog.create_namespace("sales")
        >>> from floe_dagster_iceberg.engine.data_files import write_data_files
        >>> rows = pa.table({"id": [1, 2]})
        >>> table = catalog.create_table("sales.orders", rows.schema)
        >>> files = write_data_files(table.metadata, table.io, rows)
        >>> produced = produce_snapshot(table.metadata, table.io, FileChange(Operation.APPEND, files), {})
        >>> _ = catalog.commit_table(table, produced.requirements, produced.updates)
        >>> table.refresh().scan().to_arrow().num_rows
        2
    """
    producer = _Producer(metadata, io, branch)
    try:
        return producer.produce(change, summary_properties)
    except BaseException:
        producer.discard()
        raise


class _Producer:
    def __init__(self, metadata: TableMetadata, io: FileIO, branch: str) -> None:
        self.metadata = metadata
        self.io = io
        self.branch = branch
        self.snapshot_id = metadata.new_snapshot_id()
        self.commit_id = uuid.uuid4()
        self.compression = metadata.properties.get(
            props.AVRO_COMPRESSION, props.AVRO_COMPRESSION_DEFAULT
        )
        self.locations = load_location_provider(metadata.location, metadata.properties)
        self.written: list[str] = []
        self._counter = 0
        head = metadata.snapshot_by_name(branch)
        self.branch_head_id = head.snapshot_id if head is not None else None
        # A branch that does not exist yet forks from the current snapshot (see engine.branches).
        self.parent = head if head is not None else metadata.current_snapshot()

    def produce(self, change: FileChange, summary_properties: dict[str, str]) -> ProducedSnapshot:
        removed_paths = {f.file_path: _manifest_content(f) for f in change.removed}
        manifests = self._added_manifests(change.added)
        manifests += self._carried_manifests(removed_paths, change.scope)
        manifests = self._merge(manifests)
        sequence_number = self.metadata.next_sequence_number()
        manifest_list = self._new_location(f"snap-{self.snapshot_id}-0-{self.commit_id}.avro")
        with write_manifest_list(
            format_version=self.metadata.format_version,
            output_file=self.io.new_output(manifest_list),
            snapshot_id=self.snapshot_id,
            parent_snapshot_id=self.parent.snapshot_id if self.parent else None,
            sequence_number=sequence_number,
            avro_compression=self.compression,
        ) as writer:
            writer.add_manifests(manifests)
        snapshot = Snapshot(
            snapshot_id=self.snapshot_id,
            parent_snapshot_id=self.parent.snapshot_id if self.parent else None,
            manifest_list=manifest_list,
            sequence_number=sequence_number,
            summary=self._summary(change, summary_properties),
            schema_id=self.metadata.current_schema_id,
        )
        updates = (
            AddSnapshotUpdate(snapshot=snapshot),
            SetSnapshotRefUpdate(
                snapshot_id=self.snapshot_id,
                parent_snapshot_id=snapshot.parent_snapshot_id,
                ref_name=self.branch,
                type=SnapshotRefType.BRANCH,
            ),
        )
        requirements = (AssertRefSnapshotId(snapshot_id=self.branch_head_id, ref=self.branch),)
        return ProducedSnapshot(snapshot, updates, requirements, self.written)

    def discard(self) -> None:
        for path in self.written:
            # Best effort: orphan removal reclaims what is left.
            with contextlib.suppress(Exception):
                self.io.delete(path)
        self.written.clear()

    # -- manifests

    def _new_location(self, file_name: str) -> str:
        location = self.locations.new_metadata_location(file_name)
        self.written.append(location)
        return location

    def _new_writer(self, spec_id: int, content: ManifestContent = ManifestContent.DATA):
        path = self._new_location(f"{self.commit_id}-m{self._counter}.avro")
        self._counter += 1
        write = write_manifest if content == ManifestContent.DATA else write_delete_manifest
        return write(
            format_version=self.metadata.format_version,
            spec=self.metadata.specs()[spec_id],
            schema=self.metadata.schema(),
            output_file=self.io.new_output(path),
            snapshot_id=self.snapshot_id,
            avro_compression=self.compression,
        )

    def _added_manifests(self, added: Sequence[DataFile]) -> list[ManifestFile]:
        by_spec: dict[tuple[int, ManifestContent], list[DataFile]] = defaultdict(list)
        for data_file in added:
            by_spec[(data_file.spec_id, _manifest_content(data_file))].append(data_file)
        manifests = []
        for (spec_id, content), files in by_spec.items():
            with self._new_writer(spec_id, content) as writer:
                for data_file in files:
                    writer.add(
                        ManifestEntry.from_args(
                            status=ManifestEntryStatus.ADDED,
                            snapshot_id=self.snapshot_id,
                            data_file=data_file,
                        )
                    )
            manifests.append(writer.to_manifest_file())
        return manifests

    def _carried_manifests(
        self, removed: dict[str, ManifestContent], scope: BooleanExpression
    ) -> list[ManifestFile]:
        """The parent's manifests, those holding removed files rewritten with them deleted.

        ``removed`` maps each removed path to the manifest content it is listed in.
        """
        if self.parent is None:
            if removed:
                raise FilesGoneError(removed)
            return []
        may_hold = _manifest_filter(self.metadata, scope) if removed else None
        contents = set(removed.values())
        carried = []
        found: set[str] = set()
        for manifest in self.parent.manifests(self.io):
            if may_hold is None or manifest.content not in contents or not may_hold(manifest):
                carried.append(manifest)
                continue
            entries = manifest.fetch_manifest_entry(self.io, discard_deleted=True)
            hits = [e for e in entries if e.data_file.file_path in removed]
            if not hits:
                carried.append(manifest)
                continue
            found.update(e.data_file.file_path for e in hits)
            carried.append(self._without(manifest, entries, removed))
        if missing := set(removed) - found:
            self.discard()
            raise FilesGoneError(missing)
        return carried

    def _without(
        self, manifest: ManifestFile, entries: list[ManifestEntry], removed: dict[str, Any]
    ) -> ManifestFile:
        with self._new_writer(manifest.partition_spec_id, manifest.content) as writer:
            for entry in entries:
                if entry.data_file.file_path in removed:
                    writer.delete(entry)
                else:
                    writer.existing(entry)
        return writer.to_manifest_file()

    def _merge(self, manifests: list[ManifestFile]) -> list[ManifestFile]:
        """Iceberg's merge-on-commit: small manifests of a spec are packed and rewritten as one."""
        properties = self.metadata.properties
        if not manifests or not props.bool_property(
            properties, props.MANIFEST_MERGE_ENABLED, props.MANIFEST_MERGE_ENABLED_DEFAULT
        ):
            return manifests
        min_count = props.int_property(
            properties, props.MANIFEST_MIN_MERGE_COUNT, props.MANIFEST_MIN_MERGE_COUNT_DEFAULT
        )
        target = props.int_property(
            properties, props.MANIFEST_TARGET_SIZE, props.MANIFEST_TARGET_SIZE_DEFAULT
        )
        first = manifests[0]
        data = [m for m in manifests if m.content == ManifestContent.DATA]
        others = [m for m in manifests if m.content != ManifestContent.DATA]
        by_spec: dict[int, list[ManifestFile]] = defaultdict(list)
        for manifest in data:
            by_spec[manifest.partition_spec_id].append(manifest)
        merged: list[ManifestFile] = []
        packer: ListPacker[ManifestFile] = ListPacker(target, lookback=1, largest_bin_first=False)
        for spec_id, group in by_spec.items():
            for manifest_bin in packer.pack_end(group, lambda m: m.manifest_length):
                if len(manifest_bin) == 1 or (
                    first in manifest_bin and len(manifest_bin) < min_count
                ):
                    merged.extend(manifest_bin)
                else:
                    merged.append(self._merged(spec_id, manifest_bin))
        return merged + others

    def _merged(self, spec_id: int, manifests: list[ManifestFile]) -> ManifestFile:
        with self._new_writer(spec_id) as writer:
            for manifest in manifests:
                for entry in manifest.fetch_manifest_entry(self.io, discard_deleted=False):
                    ours = entry.snapshot_id == self.snapshot_id
                    if entry.status == ManifestEntryStatus.DELETED:
                        if ours:
                            writer.delete(entry)
                    elif entry.status == ManifestEntryStatus.ADDED and ours:
                        writer.add(entry)
                    else:
                        writer.existing(entry)
        return writer.to_manifest_file()

    # -- summary

    def _summary(self, change: FileChange, properties: dict[str, str]) -> Summary:
        schema = self.metadata.schema()
        specs = self.metadata.specs()
        collector = SnapshotSummaryCollector(
            partition_summary_limit=props.int_property(
                self.metadata.properties,
                props.PARTITION_SUMMARY_LIMIT,
                props.PARTITION_SUMMARY_LIMIT_DEFAULT,
            )
        )
        for data_file in change.added:
            collector.add_file(data_file, partition_spec=specs[data_file.spec_id], schema=schema)
        for data_file in change.removed:
            collector.remove_file(data_file, partition_spec=specs[data_file.spec_id], schema=schema)
        # PyIceberg totals only append/overwrite/delete; a replace totals like an overwrite.
        counted_as = (
            Operation.OVERWRITE if change.operation == Operation.REPLACE else change.operation
        )
        summary = update_snapshot_summaries(
            Summary(operation=counted_as, **collector.build(), **properties),
            previous_summary=self.parent.summary if self.parent else None,
        )
        return Summary(change.operation, **summary.additional_properties)


def _manifest_content(content_file: DataFile) -> ManifestContent:
    """The content of the manifests that list ``content_file``: data, or deletes."""
    if content_file.content == DataFileContent.DATA:
        return ManifestContent.DATA
    return ManifestContent.DELETES


def _manifest_filter(
    metadata: TableMetadata, scope: BooleanExpression
) -> Callable[[ManifestFile], bool]:
    """Whether a manifest's partition summaries allow rows of ``scope``, one evaluator per spec."""
    schema = metadata.schema()
    specs = metadata.specs()
    evaluators: dict[int, Callable[[ManifestFile], bool]] = {}

    def may_hold(manifest: ManifestFile) -> bool:
        spec_id = manifest.partition_spec_id
        if spec_id not in evaluators:
            spec = specs[spec_id]
            projected = inclusive_projection(schema, spec, True)(scope)
            evaluators[spec_id] = manifest_evaluator(spec, schema, projected, True)
        return evaluators[spec_id](manifest)

    return may_hold
