"""A table's files as maintenance sees them: which ones metadata reaches, listing what storage
holds, deleting in parallel, and reading metadata while concurrent expiries delete files.

Snapshot expiry (:mod:`.expiry`) deletes what only expired snapshots reached; orphan removal
(:mod:`.orphans`) deletes what no metadata reaches at all. Both, and every operation that reads
manifests, may find a file gone under a concurrent expiry: :func:`read_fresh` reloads the table
and reads again.
"""

from __future__ import annotations

import logging
import os
import posixpath
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlparse

from pyiceberg.manifest import DataFileContent, ManifestEntry, ManifestFile
from pyiceberg.table import Table
from pyiceberg.table.snapshots import Snapshot

from floe_dagster_iceberg.engine.maintenance.results import table_name
from floe_dagster_iceberg.errors import IcebergError, InvalidInputError

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog
    from pyiceberg.io import FileIO
    from pyiceberg.table.metadata import TableMetadata

__all__ = [
    "VANISHED_RELOADS",
    "Deletion",
    "KeptVanishing",
    "ListedFile",
    "Reachable",
    "delete_files",
    "files_of",
    "list_files",
    "manifests_of",
    "normalize",
    "read_fresh",
    "reload",
    "statistics_paths",
    "still_there",
    "vanished",
]

log = logging.getLogger("floe_dagster_iceberg.engine.maintenance")

VANISHED_RELOADS = 5
"""Reloads allowed when files being read keep vanishing under concurrent snapshot expiries."""
_DELETE_WORKERS = 8
_MISSING_MARKERS = ("not found", "no such file", "does not exist", "nosuchkey")

_T = TypeVar("_T")


# -- reading while files vanish -------------------------------------------------------------------


def reload(catalog: Catalog, table: Table) -> Table:
    """The table's current metadata, loaded again from the catalog."""
    return catalog.load_table(table.name())


class KeptVanishing(IcebergError):
    """Metadata files kept vanishing under concurrent expiries, reload after reload."""


def vanished(error: BaseException) -> bool:
    """Whether ``error`` says a file is gone (a concurrent expiry or cleanup deleted it).

    Example:
        >>> vanished(FileNotFoundError("s3://bucket/m.avro")), vanished(ValueError("bad"))
        (True, False)
        >>> vanished(OSError("Cannot open file, does not exist: /w/snap-1.avro"))
        True
    """
    if isinstance(error, FileNotFoundError):
        return True
    text = str(error).lower()
    return isinstance(error, OSError) and any(marker in text for marker in _MISSING_MARKERS)


def read_fresh(
    catalog: Catalog, table: Table, read: Callable[[Table], _T], what: str
) -> tuple[_T, Table, int]:
    """``read(table)``; when a file it reads has vanished, reload the table and read again.

    A snapshot expiry commits new metadata first and then deletes the manifest lists,
    manifests and data files only the expired snapshots used, so a reader still holding the
    older metadata finds them gone; the reloaded metadata no longer references them. Returns
    what ``read`` returned, the table it read and the number of reloads; gives up with
    :class:`KeptVanishing` after :data:`VANISHED_RELOADS` reloads.
    """
    reloads = 0
    while True:
        try:
            return read(table), table, reloads
        except Exception as error:
            if not vanished(error):
                raise
            if reloads >= VANISHED_RELOADS:
                raise KeptVanishing(
                    f"Table '{table_name(table)}': files kept vanishing while {what} read the "
                    f"table's metadata ({reloads} reloads; last: {error}); concurrent snapshot "
                    "expiries are running. Run it again once they are done."
                ) from error
            reloads += 1
            log.info(
                "%s of %s: a file vanished under a concurrent expiry (%s); reloading the table.",
                what,
                table_name(table),
                error,
            )
            table = reload(catalog, table)


# -- reachability ---------------------------------------------------------------------------------


@dataclass
class Reachable:
    """Files a set of snapshots references, by kind."""

    manifest_lists: set[str] = field(default_factory=set)
    manifests: dict[str, ManifestFile] = field(default_factory=dict)
    data_files: dict[str, int] = field(default_factory=dict)
    delete_files: dict[str, int] = field(default_factory=dict)
    metadata_files: set[str] = field(default_factory=set)  # metadata JSON, statistics

    def all_paths(self) -> set[str]:
        return (
            self.manifest_lists
            | set(self.manifests)
            | set(self.data_files)
            | set(self.delete_files)
            | self.metadata_files
        )

    def update(self, other: Reachable) -> None:
        self.manifest_lists |= other.manifest_lists
        for path, manifest in other.manifests.items():
            self.manifests.setdefault(path, manifest)
        self.data_files.update(other.data_files)
        self.delete_files.update(other.delete_files)
        self.metadata_files |= other.metadata_files


def manifests_of(
    io: FileIO, snapshots: Iterable[Snapshot], into: Reachable, *, missing_ok: bool = False
) -> None:
    """Add the snapshots' manifest lists and manifests; ``missing_ok`` skips vanished lists."""
    for snapshot in snapshots:
        into.manifest_lists.add(snapshot.manifest_list)
        try:
            manifests = snapshot.manifests(io)
        except Exception as error:
            if not (missing_ok and vanished(error)):
                raise
            continue
        for manifest in manifests:
            into.manifests.setdefault(manifest.manifest_path, manifest)


def files_of(
    io: FileIO,
    manifests: Iterable[ManifestFile],
    into: Reachable,
    *,
    live_only: bool,
    missing_ok: bool = False,
) -> None:
    """Add the data and delete files of the manifests; ``missing_ok`` skips vanished ones."""

    def read(manifest: ManifestFile) -> list[ManifestEntry]:
        try:
            return manifest.fetch_manifest_entry(io, discard_deleted=live_only)
        except Exception as error:
            if missing_ok and vanished(error):
                return []
            raise

    with ThreadPoolExecutor(max_workers=_DELETE_WORKERS) as pool:
        for entries in pool.map(read, list(manifests)):
            for entry in entries:
                data_file = entry.data_file
                target = (
                    into.data_files
                    if data_file.content == DataFileContent.DATA
                    else into.delete_files
                )
                target[data_file.file_path] = data_file.file_size_in_bytes


def statistics_paths(metadata: TableMetadata) -> dict[str, int]:
    """The statistics and partition statistics files of the metadata: ``path -> size``."""
    paths: dict[str, int] = {}
    for statistics in (*metadata.statistics, *metadata.partition_statistics):
        paths[statistics.statistics_path] = statistics.file_size_in_bytes
    return paths


# -- listing --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ListedFile:
    """A file found in storage."""

    path: str
    size: int
    modified: datetime | None


def _filesystem(table: Table, location: str) -> tuple[Any, str, Callable[[str], str]]:
    """A pyarrow filesystem for ``location``, the path to list, and a path -> URI function."""
    from pyarrow.fs import FSSpecHandler, PyFileSystem
    from pyiceberg.io.pyarrow import PyArrowFileIO

    io = table.io
    scheme, netloc, path = PyArrowFileIO.parse_location(location, io.properties)
    if isinstance(io, PyArrowFileIO):
        fs = io.fs_by_scheme(scheme, netloc)
    elif hasattr(io, "get_fs"):
        fs = PyFileSystem(FSSpecHandler(io.get_fs(scheme)))
    else:
        raise InvalidInputError(
            f"Cannot list files of {location!r} with FileIO {type(io).__name__}; use PyArrowFileIO "
            "or FsspecFileIO."
        )
    if scheme == "file":
        if urlparse(location).scheme == "file":
            return fs, path, lambda listed: f"file://{listed}"
        return fs, path, lambda listed: listed
    return fs, path, lambda listed: f"{scheme}://{listed}"


def list_files(table: Table, location: str) -> Iterator[ListedFile]:
    """Every file under ``location``, recursively, through the table's FileIO."""
    from pyarrow.fs import FileSelector, FileType

    fs, path, to_uri = _filesystem(table, location)
    for info in fs.get_file_info(FileSelector(path, recursive=True, allow_not_found=True)):
        if info.type != FileType.File:
            continue
        modified = info.mtime
        if modified is not None and modified.tzinfo is None:
            modified = modified.replace(tzinfo=UTC)
        yield ListedFile(to_uri(info.path), info.size or 0, modified)


def normalize(location: str) -> str:
    """One spelling per file: ``s3a://`` = ``s3://``, ``file:///x`` = ``/x``.

    Example:
        >>> normalize("s3a://bucket/w/../t/data/f.parquet")
        's3://bucket/t/data/f.parquet'
        >>> normalize("file:///w/t/f.parquet") == normalize("/w/t/f.parquet")
        True
    """
    parsed = urlparse(location)
    if parsed.scheme in ("", "file") or len(parsed.scheme) == 1:  # 1: a Windows drive letter
        local = parsed.path if parsed.scheme == "file" else location
        return "file:" + os.path.normpath(local)
    scheme = "s3" if parsed.scheme in ("s3a", "s3n") else parsed.scheme
    return f"{scheme}://{parsed.netloc}{posixpath.normpath(parsed.path or '/')}"


def still_there(table: Table, files: Sequence[ListedFile]) -> list[ListedFile]:
    """The listed files that still exist."""

    def exists(listed: ListedFile) -> bool:
        try:
            return table.io.new_input(listed.path).exists()
        except Exception as error:
            if vanished(error):
                return False
            raise

    with ThreadPoolExecutor(max_workers=_DELETE_WORKERS) as pool:
        present = list(pool.map(exists, files))
    return [f for f, there in zip(files, present, strict=True) if there]


# -- deleting -------------------------------------------------------------------------------------


@dataclass
class Deletion:
    """The tally of deleting one file."""

    deleted: int = 0
    bytes: int = 0
    missing: int = 0
    failed: list[str] = field(default_factory=list)


def delete_files(table: Table, files: dict[str, int | None]) -> dict[str, Deletion]:
    """Delete files (``path -> size``, ``None`` = unknown, looked up first); tally per path."""

    def delete(item: tuple[str, int | None]) -> tuple[str, str, int]:
        path, size = item
        try:
            if size is None:
                size = len(table.io.new_input(path))
            table.io.delete(path)
            return path, "deleted", size
        except FileNotFoundError:
            return path, "missing", 0
        except Exception as error:
            if "not found" in str(error).lower() or "no such" in str(error).lower():
                return path, "missing", 0
            log.warning("Could not delete %s: %s", path, error)
            return path, "failed", 0

    outcome: dict[str, Deletion] = {}
    with ThreadPoolExecutor(max_workers=_DELETE_WORKERS) as pool:
        for path, status, size in pool.map(delete, files.items()):
            tally = outcome.setdefault(path, Deletion())
            if status == "deleted":
                tally.deleted, tally.bytes = 1, size
            elif status == "missing":
                tally.missing = 1
            else:
                tally.failed.append(path)
    return outcome
