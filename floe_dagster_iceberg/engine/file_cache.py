"""Parsed Iceberg files kept per process, by location: table metadata JSON and manifests.

Both are immutable once written (a commit writes new files, never changes old ones), so a file
parsed once is valid for as long as the process lives. Loading a table whose metadata location
has not moved, or planning a read over manifests already read, then costs no file read and no
parse: a read's cost stays flat as the table's history grows.

Example:
    >>> cache = LocationCache[str](max_entries=2)
    >>> cache.get_or_load("s3://b/m1.json", lambda: "parsed m1")
    'parsed m1'
    >>> cache.get_or_load("s3://b/m1.json", lambda: "parsed again")
    'parsed m1'
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

import pyarrow as pa
from pyiceberg.io import FileIO
from pyiceberg.manifest import ManifestEntry, ManifestFile
from pyiceberg.table.metadata import TableMetadata
from pyiceberg.table.snapshots import Snapshot

__all__ = [
    "METADATA_FILES",
    "LocationCache",
    "live_entries",
    "partition_table",
    "snapshot_manifests",
]

T = TypeVar("T")


class LocationCache(Generic[T]):
    """A bounded, thread-safe, least-recently-used map from a file's location to its content."""

    def __init__(self, max_entries: int) -> None:
        self._max_entries = max_entries
        self._entries: OrderedDict[str, T] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, location: str) -> T | None:
        with self._lock:
            value = self._entries.get(location)
            if value is not None:
                self._entries.move_to_end(location)
            return value

    def put(self, location: str, value: T) -> None:
        with self._lock:
            self._entries[location] = value
            self._entries.move_to_end(location)
            while len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)

    def get_or_load(self, location: str, load: Callable[[], T]) -> T:
        cached = self.get(location)
        if cached is not None:
            return cached
        value = load()
        self.put(location, value)
        return value

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


METADATA_FILES: LocationCache[TableMetadata] = LocationCache(max_entries=64)
"""Table metadata read or written by this process, by metadata location."""

_MANIFEST_LISTS: LocationCache[tuple[ManifestFile, ...]] = LocationCache(max_entries=128)
_MANIFEST_ENTRIES: LocationCache[tuple[ManifestEntry, ...]] = LocationCache(max_entries=1024)


def snapshot_manifests(snapshot: Snapshot, io: FileIO) -> tuple[ManifestFile, ...]:
    """The manifests of ``snapshot``, its manifest list read once per process."""
    return _MANIFEST_LISTS.get_or_load(
        snapshot.manifest_list, lambda: tuple(snapshot.manifests(io))
    )


_PARTITION_TABLES: LocationCache[pa.Table] = LocationCache(max_entries=1024)


def partition_table(
    manifest: ManifestFile, io: FileIO, partition_schema: pa.Schema
) -> pa.Table | None:
    """The partition values of ``manifest``'s live entries, one row per entry in entry order,
    built once per process; ``None`` when a value has no Arrow form (then test per file)."""
    key = f"{manifest.manifest_path}#partitions"
    cached = _PARTITION_TABLES.get(key)
    if cached is not None:
        return cached
    entries = live_entries(manifest, io)
    try:
        columns = [
            [entry.data_file.partition[i] for entry in entries]
            for i in range(len(partition_schema))
        ]
        table = pa.Table.from_arrays(
            [
                pa.array(values, type=f.type)
                for values, f in zip(columns, partition_schema, strict=True)
            ],
            schema=partition_schema,
        )
    except (pa.ArrowException, TypeError, ValueError, IndexError):
        return None
    _PARTITION_TABLES.put(key, table)
    return table


def live_entries(manifest: ManifestFile, io: FileIO) -> tuple[ManifestEntry, ...]:
    """The live (added or existing) entries of ``manifest``, read once per process.

    The entries are shared between reads: callers must not change them.
    """
    return _MANIFEST_ENTRIES.get_or_load(
        manifest.manifest_path,
        lambda: tuple(manifest.fetch_manifest_entry(io, discard_deleted=True)),
    )
