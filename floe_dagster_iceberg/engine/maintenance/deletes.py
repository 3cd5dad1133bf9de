"""Merge-on-read delete files of a snapshot, and the live data files each one applies to.

Engines that update tables in place (Spark's merge-on-read ``DELETE``, ``UPDATE``, ``MERGE``)
leave delete files beside the data files, as the Iceberg spec defines them:

- a **position-delete** file lists ``(file_path, pos)`` pairs: rows of given data files. It
  applies to a data file of its partition whose data sequence number is not newer than its own.
  Which data files it names is known without reading it when its ``referenced_data_file`` is
  set, or when its lower and upper ``file_path`` bounds are equal (Iceberg's writers keep full
  bounds on that column); otherwise the file is read (delete files hold two small columns).
- an **equality-delete** file lists column values: every row with those values in a data file
  of its partition (of any partition when its spec is unpartitioned) whose data sequence number
  is older than its own is deleted. Which rows match is only known by reading the data.

A delete file is *dangling* when it applies to no live data file: a position-delete file whose
data files are all gone from the snapshot (rewritten by compaction, replaced by an overwrite),
an equality-delete file older than every live data file it could apply to. Dangling files
change no row; they only cost readers time.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pyarrow as pa
from pyiceberg.manifest import (
    DATA_FILE_TYPE,
    INITIAL_SEQUENCE_NUMBER,
    DataFile,
    DataFileContent,
    ManifestEntry,
)
from pyiceberg.typedef import Record

from floe_dagster_iceberg.engine._pyiceberg import read_position_deletes

if TYPE_CHECKING:
    from pyiceberg.io import FileIO
    from pyiceberg.table import Table
    from pyiceberg.table.metadata import TableMetadata

__all__ = ["DeleteIndex", "LiveFile", "referenced_data_file"]

FILE_PATH_FIELD_ID = 2147483546
"""The reserved field id of a position-delete file's ``file_path`` column."""
_REFERENCED_DATA_FILE_ID = 143
_V3_FIELDS = DATA_FILE_TYPE[3].fields
_REFERENCED_POSITION = next(
    i for i, f in enumerate(_V3_FIELDS) if f.field_id == _REFERENCED_DATA_FILE_ID
)

PartitionKey = tuple[int, Record]
"""A partition as Iceberg matches deletes to data: the spec id and the partition values."""


def referenced_data_file(delete_file: DataFile) -> str | None:
    """The one data file every row of a position-delete file deletes from, when it says so:
    its ``referenced_data_file`` field (format version 3), else equal lower and upper bounds
    of its ``file_path`` column.

    Example:
        >>> from pyiceberg.manifest import DataFile, DataFileContent
        >>> path = b"s3://lake/t/data/a.parquet"
        >>> deletes = DataFile.from_args(content=DataFileContent.POSITION_DELETES,
        ...     file_path="s3://lake/t/data/d.parquet", lower_bounds={2147483546: path},
        ...     upper_bounds={2147483546: path})
        >>> referenced_data_file(deletes)
        's3://lake/t/data/a.parquet'
    """
    if len(delete_file) == len(_V3_FIELDS) and delete_file[_REFERENCED_POSITION]:
        return str(delete_file[_REFERENCED_POSITION])
    lower, upper = _path_bounds(delete_file)
    if lower is not None and lower == upper:
        try:
            return lower.decode("utf-8")
        except UnicodeDecodeError:
            return None
    return None


def _path_bounds(delete_file: DataFile) -> tuple[bytes | None, bytes | None]:
    lower = (delete_file.lower_bounds or {}).get(FILE_PATH_FIELD_ID)
    upper = (delete_file.upper_bounds or {}).get(FILE_PATH_FIELD_ID)
    return lower, upper


@dataclass(frozen=True)
class LiveFile:
    """A live data or delete file of a snapshot with its data sequence number."""

    file: DataFile
    sequence_number: int

    @property
    def path(self) -> str:
        return self.file.file_path

    @property
    def partition(self) -> PartitionKey:
        return (self.file.spec_id, self.file.partition)


class DeleteIndex:
    """The live files of one snapshot and which delete files apply to which data files.

    Built from the snapshot's live manifest entries; position-delete files whose data files
    are not known from their metadata are read once, when first needed.

    Example:
        >>> import tempfile, pyarrow as pa
        >>> from pyiceberg.catalog.sql import SqlCatalog
        >>> tmp = tempfile.mkdtemp()
        >>> catalog = SqlCatalog("demo", uri=f"sqlite:///{tmp}/c.db", warehouse=f"file://{tmp}")
        >>> catalog.create_namespace("sales")
        >>> table = catalog.create_table("sales.orders", pa.schema([("id", pa.int64())]))
        >>> table.append(pa.table({"id": [1, 2, 3]}))
        >>> index = DeleteIndex.of(table)
        >>> len(index.data), index.deleted_rows(), index.dangling()
        (1, 0, [])
    """

    def __init__(self, metadata: TableMetadata, io: FileIO, entries: Iterable[ManifestEntry]):
        self._io = io
        self._unpartitioned = {
            spec_id for spec_id, spec in metadata.specs().items() if spec.is_unpartitioned()
        }
        self.data: dict[str, LiveFile] = {}
        self.position_deletes: list[LiveFile] = []
        self.equality_deletes: list[LiveFile] = []
        for entry in entries:
            live = LiveFile(entry.data_file, entry.sequence_number or INITIAL_SEQUENCE_NUMBER)
            if entry.data_file.content == DataFileContent.DATA:
                self.data[live.path] = live
            elif entry.data_file.content == DataFileContent.POSITION_DELETES:
                self.position_deletes.append(live)
            else:
                self.equality_deletes.append(live)
        self._data_by_partition: dict[PartitionKey, list[LiveFile]] = defaultdict(list)
        for live in self.data.values():
            self._data_by_partition[live.partition].append(live)
        self._oldest_by_partition = {
            key: min(f.sequence_number for f in files)
            for key, files in self._data_by_partition.items()
        }
        self._oldest = min(self._oldest_by_partition.values(), default=None)
        self._targets: dict[str, dict[str, int]] = {}
        self._positions: dict[str, dict[str, pa.ChunkedArray]] = {}
        self._by_data_file: dict[str, list[LiveFile]] | None = None

    @classmethod
    def of(cls, table: Table) -> DeleteIndex:
        """The index of the table's current snapshot (empty for a table without one)."""
        snapshot = table.current_snapshot()
        entries: list[ManifestEntry] = []
        if snapshot is not None:
            for manifest in snapshot.manifests(table.io):
                entries.extend(manifest.fetch_manifest_entry(table.io, discard_deleted=True))
        return cls(table.metadata, table.io, entries)

    # -- position deletes

    def targets(self, delete: LiveFile) -> dict[str, int]:
        """The live data files a position-delete file deletes rows from: ``path -> rows``."""
        if delete.path not in self._targets:
            self._targets[delete.path] = self._resolve(delete)
        return self._targets[delete.path]

    def _resolve(self, delete: LiveFile) -> dict[str, int]:
        candidates = {
            f.path: f
            for f in self._data_by_partition.get(delete.partition, ())
            if f.sequence_number <= delete.sequence_number
        }
        referenced = referenced_data_file(delete.file)
        if referenced is not None:
            live = referenced in candidates
            return {referenced: delete.file.record_count} if live else {}
        lower, upper = _path_bounds(delete.file)
        if lower is not None and upper is not None:
            candidates = {p: f for p, f in candidates.items() if lower <= p.encode() <= upper}
        if not candidates:
            return {}
        positions = self._read(delete)
        return {path: len(rows) for path, rows in positions.items() if path in candidates}

    def _read(self, delete: LiveFile) -> dict[str, pa.ChunkedArray]:
        """The positions a position-delete file deletes, per data file (read once)."""
        if delete.path not in self._positions:
            self._positions[delete.path] = read_position_deletes(self._io, delete.file)
        return self._positions[delete.path]

    def position_deletes_for(self, data_path: str) -> list[LiveFile]:
        """The position-delete files that delete rows of the live data file ``data_path``."""
        if self._by_data_file is None:
            by_data_file: dict[str, list[LiveFile]] = defaultdict(list)
            for delete in self.position_deletes:
                for path in self.targets(delete):
                    by_data_file[path].append(delete)
            self._by_data_file = dict(by_data_file)
        return self._by_data_file.get(data_path, [])

    def deleted_positions(self, data_path: str) -> int:
        """Rows of the live data file ``data_path`` that position deletes remove (each row once,
        whatever number of delete files name it); reads the delete files."""
        data = self.data[data_path]
        deleted: set[int] = set()
        for delete in self.position_deletes_for(data_path):
            rows = self._read(delete).get(data_path)
            if rows is not None:
                deleted.update(p for p in rows.to_pylist() if p < data.file.record_count)
        return len(deleted)

    def deleted_rows(self) -> int:
        """Rows of live data files that live position deletes remove, from the delete files'
        record counts (a row named by two delete files, which Iceberg writers do not produce,
        would count twice)."""
        return sum(sum(self.targets(delete).values()) for delete in self.position_deletes)

    # -- equality deletes

    def _may_apply_to(self, delete: LiveFile) -> int | None:
        """The oldest data sequence number of the live data files ``delete`` could apply to."""
        if delete.file.spec_id in self._unpartitioned:
            return self._oldest
        return self._oldest_by_partition.get(delete.partition)

    def equality_applies(self, delete: LiveFile) -> bool:
        """Whether an equality-delete file is older than some live data file of its scope."""
        oldest = self._may_apply_to(delete)
        return oldest is not None and oldest < delete.sequence_number

    def equality_deletes_for(self, data: LiveFile) -> list[LiveFile]:
        """The equality-delete files that apply to the live data file ``data``."""
        return [
            delete
            for delete in self.equality_deletes
            if delete.sequence_number > data.sequence_number
            and (delete.file.spec_id in self._unpartitioned or delete.partition == data.partition)
        ]

    # -- dangling

    def dangling(self) -> list[LiveFile]:
        """Delete files that apply to no live data file, position deletes first."""
        return [d for d in self.position_deletes if not self.targets(d)] + [
            d for d in self.equality_deletes if not self.equality_applies(d)
        ]
