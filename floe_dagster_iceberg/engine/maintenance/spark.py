"""The Spark maintenance engine: Spark's Iceberg procedures behind the same maintenance API.

Each operation calls one of Iceberg's Spark procedures (``CALL <catalog>.system.<name>``) on a
Spark Connect server or a Spark session in this process (:class:`~.engines.SparkEngineConfig`),
then fills the same result model as the local engine from the procedure's output and from the
table's metadata before and after:

========================  =====================================================================
operation                 procedures
========================  =====================================================================
compact                   ``rewrite_data_files``, then ``rewrite_position_delete_files`` when
                          position-delete files remain
expire_snapshots          ``expire_snapshots``
remove_orphan_files       ``remove_orphan_files`` (finds them; deleted here, so sizes are known)
rewrite_manifests         ``rewrite_manifests``
========================  =====================================================================

``pyspark`` is imported on first use only (the ``spark`` extra installs it). One Spark session
serves the whole process; Spark keeps one catalog per name and session, so a process maintains
the tables of one catalog configuration.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from pyiceberg.manifest import DataFileContent, ManifestContent
from pyiceberg.table import Table
from pyiceberg.typedef import Record

from floe_dagster_iceberg.engine import properties as props
from floe_dagster_iceberg.engine.maintenance.engines import (
    ICEBERG_SPARK_EXTENSIONS,
    SparkEngineConfig,
)
from floe_dagster_iceberg.engine.maintenance.expiry import (
    resolve_cutoff,
    resolve_retain_last,
    snapshots_to_expire,
)
from floe_dagster_iceberg.engine.maintenance.files import (
    Reachable,
    files_of,
    manifests_of,
    reload,
    vanished,
)
from floe_dagster_iceberg.engine.maintenance.orphans import DEFAULT_ORPHAN_AGE, delete_orphans
from floe_dagster_iceberg.engine.maintenance.results import (
    CompactionResult,
    ExpireSnapshotsResult,
    OrphanFilesResult,
    PartitionCompaction,
    RewriteManifestsResult,
    partition_label,
    table_name,
)
from floe_dagster_iceberg.engine.maintenance.spark_catalog import (
    spark_catalog_conf,
    spark_catalog_properties,
)
from floe_dagster_iceberg.errors import IcebergError, InvalidInputError
from floe_dagster_iceberg.redaction import redact

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog
    from pyiceberg.expressions import BooleanExpression

__all__ = [
    "SPARK_MIN_ORPHAN_AGE",
    "compact",
    "expire_snapshots",
    "remove_orphan_files",
    "rewrite_manifests",
    "spark_session",
    "sql_literal",
]

log = logging.getLogger("floe_dagster_iceberg.engine.maintenance")

SPARK_MIN_ORPHAN_AGE = timedelta(hours=24)
"""Spark's ``remove_orphan_files`` refuses a shorter ``older_than``: younger files may belong to
writes still in flight."""
_APP_NAME = "floe-iceberg-maintenance"
_SESSION_LOCK = threading.Lock()
_STAT_WORKERS = 8


# -- the session ----------------------------------------------------------------------------------


def _session_class() -> Any:
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise IcebergError(
            "The Spark maintenance engine needs pyspark: pip install 'floe-dagster-iceberg[spark]' "
            "(pyspark 3.5 and the Iceberg Spark runtime jar), or use the local engine."
        ) from None
    return SparkSession


def _catalog_conf(config: SparkEngineConfig, catalog: Catalog) -> tuple[str, dict[str, str]]:
    name = config.catalog_name or catalog.name
    mapped = (
        dict(config.catalog_properties)
        if config.catalog_properties is not None
        else spark_catalog_properties(catalog.name, catalog.properties)
    )
    return name, spark_catalog_conf(name, mapped)


def spark_session(config: SparkEngineConfig, catalog: Catalog) -> Any:
    """The Spark session that runs maintenance on ``catalog``'s tables, started on first use.

    A session already running in this process is reused when it has Iceberg's SQL extensions
    and defines the catalog the same way (a catalog it lacks is added to it).

    Example:
        >>> SparkEngineConfig(master="local[2]").master  # spark_session(config, catalog)
        'local[2]'
    """
    spark_class = _session_class()
    name, catalog_conf = _catalog_conf(config, catalog)
    with _SESSION_LOCK:
        if config.connect_url:
            session = _start(lambda: spark_class.builder.remote(config.connect_url).getOrCreate())
            _define_catalog(session, catalog_conf)
            return session
        running = spark_class.getActiveSession()
        if running is not None:
            _check_reusable(running, name, catalog_conf)
            _define_catalog(running, catalog_conf)
            return running
        settings = {
            "spark.sql.extensions": ICEBERG_SPARK_EXTENSIONS,
            "spark.ui.showConsoleProgress": "false",
        }
        if config.jars:
            settings["spark.jars"] = ",".join(config.jars)
        if config.packages:
            settings["spark.jars.packages"] = ",".join(config.packages)
        settings.update(config.conf)
        extensions = settings["spark.sql.extensions"]
        if ICEBERG_SPARK_EXTENSIONS not in extensions:  # the user's own extensions come first
            settings["spark.sql.extensions"] = f"{extensions},{ICEBERG_SPARK_EXTENSIONS}"
        settings.update(catalog_conf)
        builder = spark_class.builder.master(config.master).appName(_APP_NAME)
        for key, value in settings.items():
            builder = builder.config(key, value)
        return _start(builder.getOrCreate)


def _start(start: Any) -> Any:
    try:
        return start()
    except Exception as error:
        raise IcebergError(
            f"Could not start the Spark session for maintenance: {redact(str(error))[:2000]}. "
            "Check that Java 17 is installed (JAVA_HOME or `java` on PATH) and that the "
            "engine's jars/packages hold the Iceberg Spark runtime."
        ) from None


def _check_reusable(session: Any, name: str, catalog_conf: Mapping[str, str]) -> None:
    extensions = session.conf.get("spark.sql.extensions", None) or ""
    if ICEBERG_SPARK_EXTENSIONS not in extensions:
        raise IcebergError(
            "The Spark session running in this process lacks Iceberg's SQL extensions, which "
            f"maintenance procedures need; start it with spark.sql.extensions="
            f"{ICEBERG_SPARK_EXTENSIONS}, or let the maintenance engine start it."
        )
    differing = sorted(
        key
        for key, value in catalog_conf.items()
        if session.conf.get(key, None) not in (None, value)
    )
    if differing:
        raise IcebergError(
            f"The Spark session running in this process defines catalog {name!r} differently "
            f"({', '.join(differing)}); Spark keeps one catalog per name and session. Maintain "
            "one catalog per process, or name the Spark catalog with catalog_name (REST catalogs)."
        )


def _define_catalog(session: Any, catalog_conf: Mapping[str, str]) -> None:
    """Define the catalog on a running session, unless it already defines one of that name."""
    root = min(catalog_conf, key=len)  # spark.sql.catalog.<name>
    if session.conf.get(root, None) is not None:
        return
    for key, value in catalog_conf.items():
        session.conf.set(key, value)


# -- calling procedures ---------------------------------------------------------------------------


def sql_literal(value: str | int | bool | datetime | Mapping[str, str]) -> str:
    """A Spark SQL literal of a typed value, as ``CALL`` arguments take them (Iceberg's
    procedure grammar has no parameter markers).

    Example:
        >>> sql_literal("it's"), sql_literal(5), sql_literal(True)
        ("'it\\\\'s'", '5', 'true')
        >>> sql_literal(datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC))
        "TIMESTAMP '2024-01-02 03:04:05.000000Z'"
        >>> sql_literal({"min-input-files": "2"})
        "map('min-input-files', '2')"
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, datetime):
        utc = (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC)
        return f"TIMESTAMP '{utc.strftime('%Y-%m-%d %H:%M:%S.%f')}Z'"
    if isinstance(value, Mapping):
        pairs = ", ".join(f"{sql_literal(str(k))}, {sql_literal(str(v))}" for k, v in value.items())
        return f"map({pairs})"
    escaped = str(value).replace("\\", "\\\\").replace("'", "\\'")
    return f"'{escaped}'"


def _identifier(part: str) -> str:
    return "`" + part.replace("`", "``") + "`"


def _call(
    session: Any, catalog_name: str, table: Table, procedure: str, **arguments: Any
) -> list[dict[str, Any]]:
    """Run ``CALL <catalog>.system.<procedure>(table => ..., **arguments)``; its rows."""
    target = ".".join(_identifier(part) for part in table.name())
    named = {"table": target, **{k: v for k, v in arguments.items() if v is not None}}
    args = ", ".join(f"{key} => {sql_literal(value)}" for key, value in named.items())
    statement = f"CALL {_identifier(catalog_name)}.system.{procedure}({args})"
    try:
        return [row.asDict() for row in session.sql(statement).collect()]
    except Exception as error:
        raise IcebergError(
            f"Table '{table_name(table)}': Spark's {procedure} procedure failed: "
            f"{redact(str(error))[:2000]}. Run it again; use the local engine if Spark cannot "
            "reach the catalog or the table's storage."
        ) from None


def _prepare(config: SparkEngineConfig, catalog: Catalog) -> tuple[Any, str]:
    session = spark_session(config, catalog)
    return session, config.catalog_name or catalog.name


# -- what the table held before and after ---------------------------------------------------------


@dataclass(frozen=True)
class _LiveFile:
    spec_id: int
    partition: Record
    size: int
    records: int
    content: DataFileContent

    @property
    def data(self) -> bool:
        return self.content == DataFileContent.DATA


def _live_files(table: Table) -> dict[str, _LiveFile]:
    """The current snapshot's data and delete files."""
    snapshot = table.current_snapshot()
    if snapshot is None:
        return {}
    files: dict[str, _LiveFile] = {}
    for manifest in snapshot.manifests(table.io):
        for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=True):
            data_file = entry.data_file
            files[data_file.file_path] = _LiveFile(
                spec_id=manifest.partition_spec_id,
                partition=data_file.partition,
                size=data_file.file_size_in_bytes,
                records=data_file.record_count,
                content=data_file.content,
            )
    return files


def _partition_changes(
    table: Table, before: dict[str, _LiveFile], after: dict[str, _LiveFile]
) -> tuple[PartitionCompaction, ...]:
    """Per partition: data files removed and added, rows written, deletes applied, and the
    delete files that went (net of those rewritten into new ones)."""
    removed = [before[p] for p in before.keys() - after.keys()]
    added = [after[p] for p in after.keys() - before.keys()]
    totals: dict[tuple[int, str], list[int]] = defaultdict(lambda: [0] * 8)
    for files, sign in ((removed, 0), (added, 1)):
        for live in files:
            label = partition_label(table.metadata, live.spec_id, live.partition)
            row = totals[(live.spec_id, label)]
            if live.data:
                row[0 + sign * 2] += 1
                row[1 + sign * 2] += live.size
                row[4 + sign] += live.records
            else:
                row[6 + sign] += 1
    return tuple(
        PartitionCompaction(
            partition=label,
            spec_id=spec_id,
            files_rewritten=row[0],
            bytes_rewritten=row[1],
            files_added=row[2],
            bytes_added=row[3],
            rows=row[5],
            position_deletes_applied=max(0, row[4] - row[5]) if row[0] else 0,
            delete_files_removed=max(0, row[6] - row[7]),
        )
        for (spec_id, label), row in sorted(totals.items())
        if row[0] or row[6]
    )


def _current_id(table: Table) -> int | None:
    return table.metadata.current_snapshot_id


# -- the operations -------------------------------------------------------------------------------


def compact(
    catalog: Catalog,
    table: Table,
    config: SparkEngineConfig,
    *,
    target_file_size_bytes: int | None = None,
    min_input_files: int = 2,
    partition_filter: BooleanExpression | None = None,
) -> CompactionResult:
    """Compact with Spark's ``rewrite_data_files`` (bin-pack; merge-on-read deletes applied and
    the delete files left dangling removed), then compact position-delete files with
    ``rewrite_position_delete_files`` when some remain. Same result as
    :func:`~.compaction.compact`, filled from the files of the table's current snapshot before
    and after (``snapshot_id``: the last snapshot committed; ``commit_attempts``: the snapshots
    committed).

    Spark's planner differs from the local one in one way: a group of files larger than the
    target in all is rewritten even below ``min_input_files``. Partitions are never skipped:
    Spark applies merge-on-read deletes while rewriting.

    Example:
        >>> compact.__name__  # compact(catalog, table, SparkEngineConfig(...))
        'compact'
    """
    name = table_name(table)
    if partition_filter is not None:
        raise InvalidInputError(
            f"Table '{name}': the Spark engine compacts whole tables; partition_filter needs "
            "the local engine (LocalEngineConfig)."
        )
    target = target_file_size_bytes or props.target_file_size(table.properties)
    if target <= 0:
        raise InvalidInputError(f"target_file_size_bytes must be positive, got {target}.")
    if min_input_files < 1:
        raise InvalidInputError(f"min_input_files must be at least 1, got {min_input_files}.")
    started = time.monotonic()
    session, spark_name = _prepare(config, catalog)
    before = _live_files(table)
    options = {
        "target-file-size-bytes": str(target),
        "min-input-files": str(min_input_files),
        # Delete files that applied only to rewritten files go too, as with the local engine.
        "remove-dangling-deletes": "true",
    }
    _call(session, spark_name, table, "rewrite_data_files", options=options)
    after_table = reload(catalog, table)
    after = _live_files(after_table)
    if any(f.content == DataFileContent.POSITION_DELETES for f in after.values()):
        _rewrite_position_deletes(session, spark_name, table)
        after_table = reload(catalog, table)
        after = _live_files(after_table)
    known = {s.snapshot_id for s in table.snapshots()}
    commits = sum(1 for s in after_table.snapshots() if s.snapshot_id not in known)
    return CompactionResult(
        table=name,
        snapshot_id=_current_id(after_table) if commits else None,
        partitions=_partition_changes(after_table, before, after),
        target_file_size_bytes=target,
        commit_attempts=commits,
        duration_seconds=time.monotonic() - started,
    )


def _rewrite_position_deletes(session: Any, spark_name: str, table: Table) -> None:
    """Rewrite every position-delete file, dropping the deletes of data files no longer live
    (those just rewritten), which Spark's size-based selection would leave in small files.

    The data compaction has committed by then: a failure here is logged, not raised (Iceberg
    1.10 cannot read the position deletes of a table with a list column); the delete files
    stay until ``remove_dangling_deletes`` or the next compaction removes them.
    """
    try:
        _call(
            session,
            spark_name,
            table,
            "rewrite_position_delete_files",
            options={"rewrite-all": "true"},
        )
    except IcebergError as error:
        log.warning("%s", str(error).split("\n", 1)[0][:500])


def expire_snapshots(
    catalog: Catalog,
    table: Table,
    config: SparkEngineConfig,
    *,
    older_than: datetime | timedelta | None = None,
    retain_last: int | None = None,
) -> ExpireSnapshotsResult:
    """Expire snapshots with Spark's ``expire_snapshots``; defaults as
    :func:`~.expiry.expire_snapshots` (the table's ``history.expire.*`` properties). File
    counts come from the procedure; ``bytes_freed`` adds up the files only the expired
    snapshots reached that are gone afterwards. Spark deletes no metadata JSON file here
    (``metadata_files_deleted`` is 0): ``write.metadata.delete-after-commit.enabled`` does.

    Example:
        >>> expire_snapshots.__name__  # expire_snapshots(catalog, table, SparkEngineConfig())
        'expire_snapshots'
    """
    started = time.monotonic()
    name = table_name(table)
    now = datetime.now(UTC)
    cutoff = resolve_cutoff(table, older_than, now)
    retain_last = resolve_retain_last(table, retain_last)
    session, spark_name = _prepare(config, catalog)
    expected = snapshots_to_expire(
        table.metadata, int(cutoff.timestamp() * 1000), retain_last, int(now.timestamp() * 1000)
    )
    candidates = _files_only_in(table, expected)
    rows = _call(
        session,
        spark_name,
        table,
        "expire_snapshots",
        older_than=cutoff,
        retain_last=retain_last,
    )
    counts = rows[0] if rows else {}
    after = reload(catalog, table)
    kept = {s.snapshot_id for s in after.snapshots()}
    expired = sorted(s.snapshot_id for s in table.snapshots() if s.snapshot_id not in kept)
    gone = _gone(after, candidates)
    return ExpireSnapshotsResult(
        table=name,
        older_than=cutoff,
        retain_last=retain_last,
        expired_snapshot_ids=tuple(expired),
        snapshots_kept=len(kept),
        data_files_deleted=int(counts.get("deleted_data_files_count") or 0),
        delete_files_deleted=int(counts.get("deleted_position_delete_files_count") or 0)
        + int(counts.get("deleted_equality_delete_files_count") or 0),
        manifests_deleted=int(counts.get("deleted_manifest_files_count") or 0),
        manifest_lists_deleted=int(counts.get("deleted_manifest_lists_count") or 0),
        statistics_files_deleted=int(counts.get("deleted_statistics_files_count") or 0),
        bytes_freed=sum(candidates[path] for path in gone),
        duration_seconds=time.monotonic() - started,
    )


def _files_only_in(table: Table, expiring: set[int]) -> dict[str, int]:
    """Files (``path -> size``) the ``expiring`` snapshots reach and the others do not: what an
    expiry of them deletes. Reads the expiring snapshots' manifests only."""
    if not expiring:
        return {}
    io = table.io
    snapshots = table.snapshots()
    gone, kept = Reachable(), Reachable()
    manifests_of(io, [s for s in snapshots if s.snapshot_id in expiring], gone, missing_ok=True)
    manifests_of(io, [s for s in snapshots if s.snapshot_id not in expiring], kept)
    dropped = {p: m for p, m in gone.manifests.items() if p not in kept.manifests}
    live = Reachable()
    files_of(io, dropped.values(), live, live_only=True, missing_ok=True)
    candidates: dict[str, int] = {**live.data_files, **live.delete_files}
    candidates.update({p: m.manifest_length for p, m in dropped.items()})
    lists = sorted(gone.manifest_lists - kept.manifest_lists)
    candidates.update(zip(lists, _sizes(table, lists), strict=True))
    return candidates


def _sizes(table: Table, paths: list[str]) -> list[int]:
    def size(path: str) -> int:
        try:
            return len(table.io.new_input(path))
        except Exception as error:
            if vanished(error):
                return 0
            raise

    with ThreadPoolExecutor(max_workers=_STAT_WORKERS) as pool:
        return list(pool.map(size, paths))


def _gone(table: Table, files: Mapping[str, int]) -> list[str]:
    def exists(path: str) -> bool:
        try:
            return table.io.new_input(path).exists()
        except Exception as error:
            if vanished(error):
                return False
            raise

    paths = list(files)
    with ThreadPoolExecutor(max_workers=_STAT_WORKERS) as pool:
        present = list(pool.map(exists, paths))
    return [p for p, there in zip(paths, present, strict=True) if not there]


def remove_orphan_files(
    catalog: Catalog,
    table: Table,
    config: SparkEngineConfig,
    *,
    older_than: timedelta = DEFAULT_ORPHAN_AGE,
    dry_run: bool = False,
) -> OrphanFilesResult:
    """Find orphan files with Spark's ``remove_orphan_files`` (listing and reference checks run
    in Spark), then delete them here, so their sizes and failed deletes are known. Spark
    refuses an ``older_than`` under 24 hours (:data:`SPARK_MIN_ORPHAN_AGE`). Spark skips
    hidden files (``.name.crc``) and does not report the files it scanned or spared
    (``files_scanned``, ``referenced_files`` and ``too_recent`` stay 0).

    Example:
        >>> remove_orphan_files.__name__  # remove_orphan_files(catalog, table, SparkEngineConfig())
        'remove_orphan_files'
    """
    name = table_name(table)
    if older_than < SPARK_MIN_ORPHAN_AGE:
        raise InvalidInputError(
            f"Table '{name}': Spark's remove_orphan_files refuses an older_than under 24 hours "
            f"(got {older_than.total_seconds() / 3600:g} h), as younger files may belong to "
            "writes in flight; use at least 24 hours, or the local engine."
        )
    started = time.monotonic()
    cutoff = datetime.now(UTC) - older_than
    location = table.location()
    session, spark_name = _prepare(config, catalog)
    rows = _call(session, spark_name, table, "remove_orphan_files", older_than=cutoff, dry_run=True)
    orphans = sorted(_in_location_style(r["orphan_file_location"], location) for r in rows)
    sizes = dict(zip(orphans, _sizes(table, orphans), strict=True))
    deleted, bytes_freed, failed = delete_orphans(table, {} if dry_run else sizes)
    return OrphanFilesResult(
        table=name,
        location=location,
        older_than=cutoff,
        dry_run=dry_run,
        orphan_files=tuple(orphans),
        orphan_bytes=sum(sizes.values()),
        files_deleted=deleted,
        bytes_freed=bytes_freed,
        failed_deletes=tuple(failed),
        duration_seconds=time.monotonic() - started,
    )


def _in_location_style(path: str, location: str) -> str:
    """A path as the table location spells it: Hadoop writes ``file:/x`` for ``file:///x``.

    Example:
        >>> _in_location_style("file:/w/t/data/x.parquet", "file:///w/t")
        'file:///w/t/data/x.parquet'
    """
    if location.startswith("file://") and path.startswith("file:/") and path[6:7] != "/":
        return "file://" + path[len("file:") :]
    return path


def rewrite_manifests(
    catalog: Catalog, table: Table, config: SparkEngineConfig
) -> RewriteManifestsResult:
    """Rewrite the data manifests with Spark's ``rewrite_manifests`` (clustered by partition,
    sized by ``commit.manifest.target-size-bytes``); counts from the procedure, manifests and
    entries from the current snapshot before and after.

    Example:
        >>> rewrite_manifests.__name__  # rewrite_manifests(catalog, table, SparkEngineConfig())
        'rewrite_manifests'
    """
    started = time.monotonic()
    name = table_name(table)
    session, spark_name = _prepare(config, catalog)
    snapshot = table.current_snapshot()
    before = snapshot.manifests(table.io) if snapshot is not None else []
    rows = _call(session, spark_name, table, "rewrite_manifests")
    counts = rows[0] if rows else {}
    after_table = reload(catalog, table)
    after_snapshot = after_table.current_snapshot()
    after = after_snapshot.manifests(after_table.io) if after_snapshot is not None else []
    committed = _current_id(after_table) != _current_id(table)
    still = {m.manifest_path for m in after}
    replaced = [m for m in before if m.manifest_path not in still]
    return RewriteManifestsResult(
        table=name,
        snapshot_id=_current_id(after_table) if committed else None,
        manifests_before=len(before),
        manifests_after=len(after),
        manifests_replaced=int(counts.get("rewritten_manifests_count") or 0),
        manifests_created=int(counts.get("added_manifests_count") or 0),
        entries_rewritten=sum(
            (m.added_files_count or 0) + (m.existing_files_count or 0)
            for m in replaced
            if m.content == ManifestContent.DATA
        ),
        commit_attempts=int(committed),
        duration_seconds=time.monotonic() - started,
    )
