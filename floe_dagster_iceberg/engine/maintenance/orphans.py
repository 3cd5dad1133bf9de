"""Orphan removal: delete files under the table location that no metadata references.

Writers that crash between writing files and committing, and commits whose cleanup failed,
leave such files. An age guard spares files young enough to belong to a write still in flight.
"""

from __future__ import annotations

import logging
import posixpath
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from pyiceberg.table import Table

from floe_dagster_iceberg.engine.maintenance.files import (
    VANISHED_RELOADS,
    KeptVanishing,
    ListedFile,
    Reachable,
    delete_files,
    files_of,
    list_files,
    manifests_of,
    normalize,
    read_fresh,
    reload,
    statistics_paths,
    still_there,
)
from floe_dagster_iceberg.engine.maintenance.results import OrphanFilesResult, table_name
from floe_dagster_iceberg.errors import InvalidInputError

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog

__all__ = ["DEFAULT_ORPHAN_AGE", "checksum_target", "delete_orphans", "remove_orphan_files"]

log = logging.getLogger("floe_dagster_iceberg.engine.maintenance")

DEFAULT_ORPHAN_AGE = timedelta(days=3)
"""Files younger than this are never treated as orphans: a writer may still be committing them."""

_PROTECTED_FILE_NAMES = frozenset({"version-hint.text"})


def checksum_target(path: str) -> str | None:
    """The file a Hadoop checksum sidecar belongs to (``dir/.name.crc`` -> ``dir/name``), as
    Spark writes one beside every file on a local warehouse; ``None`` for other files.

    Example:
        >>> checksum_target("file:///w/t/data/.part-0.parquet.crc")
        'file:///w/t/data/part-0.parquet'
        >>> checksum_target("file:///w/t/data/part-0.parquet") is None
        True
    """
    directory, name = posixpath.split(path)
    if not (name.startswith(".") and name.endswith(".crc")) or len(name) <= len("..crc"):
        return None
    return posixpath.join(directory, name[1 : -len(".crc")])


def _referenced_files(table: Table, seen: Reachable) -> set[str]:
    """Every file the table's metadata references, in any snapshot, with any entry status.

    ``seen`` keeps what earlier calls read from older versions of the metadata, also when a
    call fails midway: a file any version referenced is never taken for an orphan by the
    same run (whoever expired its snapshot deletes it).
    """
    metadata = table.metadata
    reachable = Reachable()
    reachable.metadata_files.update(entry.metadata_file for entry in metadata.metadata_log)
    if table.metadata_location:
        reachable.metadata_files.add(table.metadata_location)
    reachable.metadata_files.update(statistics_paths(metadata))
    reachable.manifest_lists.update(s.manifest_list for s in metadata.snapshots)
    try:
        manifests_of(table.io, metadata.snapshots, reachable)
        files_of(table.io, reachable.manifests.values(), reachable, live_only=False)
    finally:
        seen.update(reachable)
    return {normalize(p) for p in seen.all_paths()}


def remove_orphan_files(
    catalog: Catalog,
    table: Table,
    *,
    older_than: timedelta = DEFAULT_ORPHAN_AGE,
    dry_run: bool = False,
) -> OrphanFilesResult:
    """Delete files under the table location that no metadata references.

    Such files are left by writers that crashed between writing files and committing, or by
    commits whose cleanup failed. Referenced means: the current metadata file and every one in
    the metadata log, and for every snapshot its manifest list, manifests, data and delete
    files, plus statistics files; a Hadoop checksum sidecar (``.name.crc``, written by Spark)
    counts as referenced when its file is. Only files last modified more than ``older_than`` ago are
    deleted, so files of a write still in flight are safe; keep the guard longer than your
    longest write. The table location is listed first and the metadata loaded afterwards, so a
    commit landing during the scan still protects its files. When a concurrent snapshot
    expiry deletes a manifest list or manifest being read, the table is reloaded and read
    again (``result.metadata_reloads``); files any version of the metadata referenced are
    kept; if files keep vanishing, nothing is deleted and ``result.skipped`` says why.
    ``dry_run`` reports, deletes nothing.

    Example:
        >>> import os, tempfile, pyarrow as pa
        >>> from pyiceberg.catalog.sql import SqlCatalog
        >>> tmp = tempfile.mkdtemp()
        >>> catalog = SqlCatalog("demo", uri=f"sqlite:///{tmp}/c.db", warehouse=f"file://{tmp}")
        >>> catalog.create_namespace("sales")
        >>> table = catalog.create_table("sales.orders", pa.schema([("id", pa.int64())]))
        >>> table.append(pa.table({"id": [1, 2]}))
        >>> left_behind = f"{table.location()}/data/crashed-writer.parquet"
        >>> open(left_behind.removeprefix("file://"), "wb").close()
        >>> remove_orphan_files(catalog, table).too_recent  # spared by the 3-day guard
        1
        >>> result = remove_orphan_files(catalog, table, older_than=timedelta(0))
        >>> result.orphan_files == (left_behind,), result.files_deleted
        (True, 1)
    """
    if older_than < timedelta(0):
        raise InvalidInputError(f"older_than must not be negative, got {older_than}.")
    started = time.monotonic()
    name = table_name(table)
    cutoff = datetime.now(UTC) - older_than
    location = table.location()
    listed = list(list_files(table, location))
    seen = Reachable()
    try:
        referenced, table, reloads = read_fresh(
            catalog,
            reload(catalog, table),
            lambda current: _referenced_files(current, seen),
            "orphan file removal",
        )
    except KeptVanishing as error:
        log.warning("%s", error)
        return OrphanFilesResult(
            table=name,
            location=location,
            older_than=cutoff,
            dry_run=dry_run,
            files_scanned=len(listed),
            metadata_reloads=VANISHED_RELOADS,
            skipped=f"nothing deleted: {error}",
            duration_seconds=time.monotonic() - started,
        )

    orphans: list[ListedFile] = []
    too_recent = 0
    for candidate in listed:
        if posixpath.basename(candidate.path) in _PROTECTED_FILE_NAMES:
            continue
        if normalize(candidate.path) in referenced:
            continue
        target = checksum_target(candidate.path)
        if target is not None and normalize(target) in referenced:
            continue  # the checksum of a live file lives and dies with it
        if candidate.modified is None or candidate.modified >= cutoff:
            too_recent += 1
            continue
        orphans.append(candidate)
    if reloads:
        # A concurrent expiry ran: the files it deleted since the listing are no orphans.
        orphans = still_there(table, orphans)
    orphans.sort(key=lambda f: f.path)

    deleted, bytes_freed, failed = delete_orphans(
        table, {} if dry_run else {f.path: f.size for f in orphans}
    )
    return OrphanFilesResult(
        table=name,
        location=location,
        older_than=cutoff,
        dry_run=dry_run,
        files_scanned=len(listed),
        referenced_files=len(referenced),
        orphan_files=tuple(f.path for f in orphans),
        orphan_bytes=sum(f.size for f in orphans),
        too_recent=too_recent,
        files_deleted=deleted,
        bytes_freed=bytes_freed,
        failed_deletes=tuple(failed),
        metadata_reloads=reloads,
        duration_seconds=time.monotonic() - started,
    )


def delete_orphans(table: Table, sizes: dict[str, int | None]) -> tuple[int, int, list[str]]:
    """Delete orphan files (path -> size): how many went, their bytes, the paths that failed."""
    if not sizes:
        return 0, 0, []
    tallies = delete_files(table, sizes).values()
    failed = sorted(p for t in tallies for p in t.failed)
    return sum(t.deleted for t in tallies), sum(t.bytes for t in tallies), failed
