"""Table maintenance on real tables with many small files: compaction, expiry, orphans,
manifest rewrite and health, checked against the files really on disk (and on S3)."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import textwrap
import threading
from decimal import Decimal

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from infra.catalogs import dispose_catalog, load_test_catalog
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.expressions import EqualTo
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.table.sorting import NullOrder, SortDirection, SortField, SortOrder
from pyiceberg.transforms import DayTransform, IdentityTransform
from pyiceberg.types import (
    DecimalType,
    DoubleType,
    ListType,
    LongType,
    NestedField,
    StringType,
    TimestamptzType,
)

from floe_dagster_iceberg.engine import maintenance
from floe_dagster_iceberg.engine.config import RetryPolicy
from floe_dagster_iceberg.engine.manager import IcebergTableManager
from floe_dagster_iceberg.errors import InvalidInputError

DAY0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
SCHEMA = Schema(
    NestedField(1, "id", LongType(), required=False),
    NestedField(2, "region", StringType(), required=False),
    NestedField(3, "ts", TimestamptzType(), required=False),
    NestedField(4, "amount", DecimalType(9, 2), required=False),
    NestedField(5, "score", DoubleType(), required=False),
    NestedField(6, "tags", ListType(7, StringType(), element_required=False), required=False),
)
ARROW_SCHEMA = pa.schema(
    [
        pa.field("id", pa.int64()),
        pa.field("region", pa.string()),
        pa.field("ts", pa.timestamp("us", "UTC")),
        pa.field("amount", pa.decimal128(9, 2)),
        pa.field("score", pa.float64()),
        pa.field("tags", pa.list_(pa.string())),
    ]
)
REGION_SPEC = PartitionSpec(PartitionField(2, 1000, IdentityTransform(), "region"))
FAST_RETRY = RetryPolicy(max_attempts=6, initial_backoff_seconds=0.01, max_backoff_seconds=0.05)


def _rows(start: int, count: int, region: str, day: int = 0) -> pa.Table:
    ids = list(range(start, start + count))
    return pa.table(
        {
            "id": ids,
            "region": [region] * count,
            "ts": [DAY0 + dt.timedelta(days=day, minutes=i) for i in ids],
            "amount": [Decimal(i) / 4 for i in ids],
            "score": [None if i % 7 == 0 else i * 0.1 for i in ids],
            "tags": [[f"t{i % 3}", None] if i % 2 else [] for i in ids],
        },
        schema=ARROW_SCHEMA,
    )


def _small_files_table(
    catalog, namespace, name="events", appends=24, rows=3, spec=REGION_SPEC, **create
):
    """A table with ``appends`` tiny data files, alternating between regions eu and us."""
    catalog.create_namespace_if_not_exists(namespace)
    table = catalog.create_table(f"{namespace}.{name}", SCHEMA, partition_spec=spec, **create)
    for n in range(appends):
        table.append(_rows(n * rows, rows, "eu" if n % 2 else "us", day=n % 3))
    return catalog.load_table(f"{namespace}.{name}")


def _all_rows(table) -> pa.Table:
    return table.scan().to_arrow().sort_by("id")


def _data_files(table) -> dict[str, int]:
    files = table.inspect.data_files()
    return dict(
        zip(files["file_path"].to_pylist(), files["file_size_in_bytes"].to_pylist(), strict=True)
    )


def _on_disk_data(files_on_disk: dict[str, int]) -> dict[str, int]:
    return {path: size for path, size in files_on_disk.items() if path.endswith(".parquet")}


def _manager(catalog) -> IcebergTableManager:
    return IcebergTableManager(catalog, retry=FAST_RETRY)


# ---------------------------------------------------------------------------- compaction


def test_compaction_rewrites_small_files_and_keeps_every_row(catalog, namespace, warehouse_files):
    table = _small_files_table(catalog, namespace, appends=12)
    manager = _manager(catalog)
    before_rows = _all_rows(table)
    before_files = _data_files(table)
    before_disk = _on_disk_data(warehouse_files(table))
    assert len(before_files) == 12
    assert before_files.items() <= before_disk.items()  # every data file is on disk, same size

    result = manager.compact(table.name(), target_file_size_bytes=1024 * 1024)

    table = catalog.load_table(table.name())
    after_files = _data_files(table)
    after_disk = _on_disk_data(warehouse_files(table))
    assert result.committed
    assert result.snapshot_id == table.current_snapshot().snapshot_id
    assert table.current_snapshot().summary.operation.value == "replace"
    assert {p.partition for p in result.partitions} == {"region=eu", "region=us"}
    assert result.files_rewritten == 12
    assert result.bytes_rewritten == sum(before_files.values())
    assert result.rows_rewritten == before_rows.num_rows
    assert len(after_files) == 2 == result.files_added
    assert result.bytes_added == sum(after_files.values())
    assert after_files.items() <= after_disk.items()
    # Row-level equality: same rows, same values, same types.
    assert _all_rows(table).equals(before_rows)
    # The old files stay on disk (older snapshots still read them) until snapshots expire.
    assert before_files.items() <= after_disk.items()
    parent = table.metadata.snapshot_by_id(table.current_snapshot().parent_snapshot_id)
    assert table.scan(snapshot_id=parent.snapshot_id).to_arrow().sort_by("id").equals(before_rows)

    expired = manager.expire_snapshots(table.name(), older_than=dt.timedelta(0), retain_last=1)
    final_disk = _on_disk_data(warehouse_files(table))
    assert expired.data_files_deleted == 12
    assert final_disk == after_files
    assert sum(final_disk.values()) < sum(before_disk.values())
    assert _all_rows(catalog.load_table(table.name())).equals(before_rows)


def test_compaction_packs_bins_and_respects_thresholds(sqlite_catalog_properties, namespace):
    catalog = load_test_catalog(sqlite_catalog_properties)
    table = _small_files_table(catalog, namespace, appends=12, spec=PartitionSpec())
    manager = _manager(catalog)
    sizes = sorted(_data_files(table).values())
    rows = _all_rows(table)

    # Target so small that no file is a candidate (75% rule): nothing happens.
    nothing = manager.compact(table.name(), target_file_size_bytes=sizes[0])
    assert not nothing.committed
    assert nothing.files_rewritten == 0
    # min_input_files above the number of small files: nothing happens.
    assert not manager.compact(
        table.name(), target_file_size_bytes=10**7, min_input_files=13
    ).committed

    # A target of about four files per bin yields several output files, each bin >= 2 inputs.
    target = int(sizes[-1] * 4.2)
    result = manager.compact(table.name(), target_file_size_bytes=target)
    table = catalog.load_table(table.name())
    assert result.committed
    assert result.partitions[0].partition == "unpartitioned"
    assert result.files_rewritten == 12
    assert 3 <= result.files_added <= 4
    assert len(_data_files(table)) == result.files_added
    assert _all_rows(table).equals(rows)

    with pytest.raises(InvalidInputError):
        manager.compact(table.name(), target_file_size_bytes=0)
    dispose_catalog(catalog)


def test_compaction_partition_filter_and_day_transform(sqlite_catalog_properties, namespace):
    catalog = load_test_catalog(sqlite_catalog_properties)
    spec = PartitionSpec(
        PartitionField(2, 1000, IdentityTransform(), "region"),
        PartitionField(3, 1001, DayTransform(), "ts_day"),
    )
    table = _small_files_table(catalog, namespace, appends=24, spec=spec)
    manager = _manager(catalog)
    rows = _all_rows(table)

    result = manager.compact(
        table.name(), target_file_size_bytes=10**7, partition_filter=EqualTo("region", "eu")
    )

    table = catalog.load_table(table.name())
    assert sorted(p.partition for p in result.partitions) == [
        "region=eu/ts_day=2024-01-01",
        "region=eu/ts_day=2024-01-02",
        "region=eu/ts_day=2024-01-03",
    ]
    assert all(p.files_rewritten == 4 and p.files_added == 1 for p in result.partitions)
    files = table.inspect.data_files()
    regions = [partition["region"] for partition in files["partition"].to_pylist()]
    assert regions.count("eu") == 3
    assert regions.count("us") == 12
    assert _all_rows(table).equals(rows)
    dispose_catalog(catalog)


def test_compaction_honours_sort_order(sqlite_catalog_properties, namespace):
    catalog = load_test_catalog(sqlite_catalog_properties)
    sort_order = SortOrder(
        SortField(
            source_id=5,
            transform=IdentityTransform(),
            direction=SortDirection.DESC,
            null_order=NullOrder.NULLS_LAST,
        ),
        SortField(source_id=1, transform=IdentityTransform()),
    )
    table = _small_files_table(
        catalog, namespace, appends=10, rows=5, spec=PartitionSpec(), sort_order=sort_order
    )
    rows = _all_rows(table)

    _manager(catalog).compact(table.name(), target_file_size_bytes=10**7)

    table = catalog.load_table(table.name())
    (path,) = _data_files(table)
    written = pq.read_table(table.io.new_input(path).open())
    scores = written["score"].to_pylist()
    present = [s for s in scores if s is not None]
    assert present == sorted(present, reverse=True)
    assert scores[len(present) :] == [None] * (len(scores) - len(present))  # nulls last
    null_ids = written["id"].to_pylist()[len(present) :]
    assert null_ids == sorted(null_ids)  # second key breaks ties
    assert _all_rows(table).equals(rows)
    dispose_catalog(catalog)


def test_compaction_after_schema_evolution_keeps_values(sqlite_catalog_properties, namespace):
    catalog = load_test_catalog(sqlite_catalog_properties)
    table = _small_files_table(catalog, namespace, appends=6)
    with table.update_schema() as update:
        update.add_column("note", StringType())
        update.rename_column("score", "quality")
    table = catalog.load_table(table.name())
    for n in range(6, 10):
        batch = _rows(n * 3, 3, "eu").rename_columns(
            ["id", "region", "ts", "amount", "quality", "tags"]
        )
        table.append(batch.append_column("note", pa.array([f"n{n}"] * 3)))
    table = catalog.load_table(table.name())
    rows = _all_rows(table)

    result = _manager(catalog).compact(table.name(), target_file_size_bytes=10**7)

    table = catalog.load_table(table.name())
    assert result.files_rewritten == 10
    after = _all_rows(table)
    assert after.equals(rows)
    assert after["note"].null_count == 18
    dispose_catalog(catalog)


def test_write_landing_during_compaction_is_never_lost(
    sqlite_catalog_properties, namespace, monkeypatch
):
    """A commit lands in a partition between compaction's planning and its commit."""
    catalog = load_test_catalog(sqlite_catalog_properties)
    other_writer = load_test_catalog(sqlite_catalog_properties)
    table = _small_files_table(catalog, namespace, appends=12)
    expected = pa.concat_tables([_all_rows(table), _rows(1000, 2, "eu")]).sort_by("id")
    real_write = maintenance._write_data_files
    landed: list[int] = []

    def write_while_another_writer_commits(tbl, rows):
        if not landed:
            other_writer.load_table(tbl.name()).append(_rows(1000, 2, "eu"))
            landed.append(1)
        return real_write(tbl, rows)

    monkeypatch.setattr(maintenance, "_write_data_files", write_while_another_writer_commits)
    result = _manager(catalog).compact(table.name(), target_file_size_bytes=10**7)

    table = catalog.load_table(table.name())
    assert result.committed
    assert result.conflicts == 1
    assert result.commit_attempts == 2
    # Committed again on the fresh table with the files already written: the new file is
    # kept as it is (the next compaction takes it), and no row is lost.
    assert result.files_rewritten == 12
    assert len(_data_files(table)) == result.files_added + 1
    assert _all_rows(table).equals(expected)
    dispose_catalog(other_writer)
    dispose_catalog(catalog)


def test_files_removed_by_a_concurrent_overwrite_and_expiry_make_compaction_replan(
    sqlite_catalog_properties, namespace, monkeypatch
):
    """Another writer overwrites the table and expires the old snapshots while compaction reads."""
    catalog = load_test_catalog(sqlite_catalog_properties)
    other = load_test_catalog(sqlite_catalog_properties)
    table = _small_files_table(catalog, namespace, appends=6)
    real_read = maintenance._read_data_files
    replaced: list[int] = []

    def read_while_the_table_is_replaced(tbl, files):
        if not replaced:
            theirs = other.load_table(tbl.name())
            theirs.overwrite(pa.concat_tables([_rows(100 + 3 * n, 3, "eu") for n in range(4)]))
            _manager(other).expire_snapshots(tbl.name(), older_than=dt.timedelta(0), retain_last=1)
            replaced.append(1)
        return real_read(tbl, files)

    monkeypatch.setattr(maintenance, "_read_data_files", read_while_the_table_is_replaced)
    result = _manager(catalog).compact(table.name(), target_file_size_bytes=10**7)

    assert result.conflicts == 1
    assert result.files_rewritten == 0  # the overwrite left a single file: nothing to compact
    assert _all_rows(catalog.load_table(table.name())).num_rows == 12
    dispose_catalog(other)
    dispose_catalog(catalog)


def test_partition_rewritten_during_compaction_is_replanned(
    sqlite_catalog_properties, namespace, monkeypatch
):
    catalog = load_test_catalog(sqlite_catalog_properties)
    other_writer = load_test_catalog(sqlite_catalog_properties)
    table = _small_files_table(catalog, namespace, appends=12)
    real_write = maintenance._write_data_files
    next_id = iter(range(5000, 6000, 10))

    def busy_partition(tbl, rows):
        if "eu" in rows["region"].to_pylist():
            # A writer rewrites eu (its rows plus one new) on every attempt: the files being
            # compacted are replaced each time.
            other = other_writer.load_table(tbl.name())
            eu = EqualTo("region", "eu")
            kept = other.scan(row_filter=eu).to_arrow()
            new = _rows(next(next_id), 1, "eu").cast(kept.schema)
            other.overwrite(pa.concat_tables([kept, new]), overwrite_filter=eu)
        return real_write(tbl, rows)

    monkeypatch.setattr(maintenance, "_write_data_files", busy_partition)
    result = _manager(catalog).compact(table.name(), target_file_size_bytes=10**7)

    table = catalog.load_table(table.name())
    # The first attempt's eu files were replaced meanwhile: eu is re-planned (now one file,
    # nothing to compact) and us is compacted.
    assert [p.partition for p in result.partitions] == ["region=us"]
    assert result.conflicts == 1
    eu_rows = table.scan(row_filter=EqualTo("region", "eu")).to_arrow()
    assert eu_rows.num_rows == 6 * 3 + 1  # the concurrent rewrite is kept
    # Nothing written by the failed attempts is left behind.
    orphans = maintenance.remove_orphan_files(
        _manager(catalog), table, older_than=dt.timedelta(0), dry_run=True
    )
    assert orphans.orphan_files == ()
    dispose_catalog(other_writer)
    dispose_catalog(catalog)


def test_writer_thread_running_during_compaction_loses_nothing(
    postgres_catalog_properties, namespace
):
    catalog = load_test_catalog(postgres_catalog_properties)
    table = _small_files_table(catalog, namespace, appends=16)
    initial = _all_rows(table)
    started = threading.Event()
    errors: list[BaseException] = []
    appended: list[pa.Table] = []

    def writer() -> None:
        own = load_test_catalog(postgres_catalog_properties)
        try:
            for n in range(12):
                batch = _rows(10_000 + n * 2, 2, "eu" if n % 2 else "us")
                for _ in range(20):
                    try:
                        own.load_table(table.name()).append(batch)
                        break
                    except CommitFailedException:
                        continue
                else:
                    raise AssertionError("writer could not commit")
                appended.append(batch)
                started.set()
        except BaseException as error:  # surfaced by the assertion below
            errors.append(error)
            started.set()
        finally:
            dispose_catalog(own)

    thread = threading.Thread(target=writer)
    thread.start()
    started.wait(timeout=60)
    manager = _manager(catalog)
    results = []
    while thread.is_alive():  # compaction runs while the writer is committing
        results.append(manager.compact(table.name(), target_file_size_bytes=10**7))
    thread.join()
    results.append(manager.compact(table.name(), target_file_size_bytes=10**7))

    assert not errors, errors
    assert any(r.committed for r in results)
    expected = pa.concat_tables([initial, *appended]).sort_by("id")
    assert _all_rows(catalog.load_table(table.name())).equals(expected)
    dispose_catalog(catalog)


# ---------------------------------------------------------------------------- expiry


def _metadata_paths(table) -> set[str]:
    """Every file the table's metadata references: reachable must stay on disk."""
    paths = {table.metadata_location, *(e.metadata_file for e in table.metadata.metadata_log)}
    for snapshot in table.snapshots():
        paths.add(snapshot.manifest_list)
        for manifest in snapshot.manifests(table.io):
            paths.add(manifest.manifest_path)
            for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=True):
                paths.add(entry.data_file.file_path)
    return paths


def test_expiry_frees_files_and_keeps_time_travel_tags_and_branches(
    sqlite_catalog_properties, namespace, warehouse_files
):
    catalog = load_test_catalog(sqlite_catalog_properties)
    table = _small_files_table(catalog, namespace, appends=10)
    # A tag on an early snapshot and a branch on another protect them and their files.
    history = [s.snapshot_id for s in table.snapshots()]
    tagged, branched = history[2], history[4]
    table.manage_snapshots().create_tag(tagged, "audit").create_branch(branched, "dev").commit()
    table = catalog.load_table(table.name())
    table.overwrite(_rows(500, 4, "eu"))  # drops every earlier file from the current snapshot
    table = catalog.load_table(table.name())
    for n in range(3):
        table.append(_rows(600 + n, 1, "us"))
    table = catalog.load_table(table.name())
    snapshot_rows = {
        s.snapshot_id: table.scan(snapshot_id=s.snapshot_id).to_arrow().sort_by("id")
        for s in table.snapshots()
    }
    before_disk = warehouse_files(table)
    manager = _manager(catalog)

    result = manager.expire_snapshots(table.name(), older_than=dt.timedelta(0), retain_last=3)

    table = catalog.load_table(table.name())
    kept = [s.snapshot_id for s in table.snapshots()]
    # Kept: the 3 newest of main, the 3 newest of branch dev (its head included) and the tag.
    last_three_appends = list(snapshot_rows)[-3:]
    assert set(kept) == {*last_three_appends, history[4], history[3], history[2]}
    assert result.snapshots_expired == len(snapshot_rows) - len(kept)
    assert set(result.expired_snapshot_ids).isdisjoint(kept)
    # Time travel to every kept snapshot (and through the tag) still reads the same rows.
    for snapshot_id in kept:
        assert (
            table.scan(snapshot_id=snapshot_id)
            .to_arrow()
            .sort_by("id")
            .equals(snapshot_rows[snapshot_id])
        )
    assert table.scan().use_ref("audit").to_arrow().sort_by("id").equals(snapshot_rows[tagged])
    after_disk = warehouse_files(table)
    deleted = set(before_disk) - set(after_disk)
    referenced = _metadata_paths(table)
    # Nothing still referenced was deleted, and what was deleted is accounted for.
    assert referenced <= set(after_disk)
    assert len(deleted) == result.files_deleted
    assert sum(before_disk[p] for p in deleted) == result.bytes_freed
    # Files only expired snapshots referenced are gone: data files of snapshots 6-10 that
    # neither the tag, the branch nor the current snapshot read.
    data_deleted = {p for p in deleted if p.endswith(".parquet")}
    assert len(data_deleted) == result.data_files_deleted == 5
    assert result.manifest_lists_deleted == result.snapshots_expired
    # Nothing is left that an orphan scan could find: expiry removed all it made unreachable.
    orphans = manager.remove_orphan_files(table.name(), older_than=dt.timedelta(0), dry_run=True)
    assert orphans.orphan_files == ()
    dispose_catalog(catalog)


def test_expiry_defaults_come_from_table_properties(sqlite_catalog_properties, namespace):
    catalog = load_test_catalog(sqlite_catalog_properties)
    table = _small_files_table(
        catalog, namespace, appends=8, properties={"history.expire.min-snapshots-to-keep": "5"}
    )
    manager = _manager(catalog)

    started = dt.datetime.now(dt.UTC)
    seven_days = manager.expire_snapshots(table.name())
    assert (
        started - dt.timedelta(days=7)
        <= seven_days.older_than
        <= dt.datetime.now(dt.UTC) - dt.timedelta(days=7)
    )
    assert seven_days.snapshots_expired == 0
    assert seven_days.retain_last == 5

    with table.transaction() as tx:
        tx.set_properties({"history.expire.max-snapshot-age-ms": "0"})
    result = manager.expire_snapshots(table.name())
    assert result.retain_last == 5
    assert len(catalog.load_table(table.name()).snapshots()) == 5
    assert result.snapshots_expired == 3
    assert result.data_files_deleted == 0
    dispose_catalog(catalog)


def test_expiry_removes_metadata_files_beyond_previous_versions_max(
    sqlite_catalog_properties, namespace, warehouse_files
):
    catalog = load_test_catalog(sqlite_catalog_properties)
    table = _small_files_table(
        catalog, namespace, appends=8, properties={"write.metadata.previous-versions-max": "2"}
    )
    metadata_json = [p for p in warehouse_files(table) if p.endswith(".metadata.json")]
    assert len(metadata_json) == 9

    result = _manager(catalog).expire_snapshots(table.name(), older_than=dt.timedelta(days=1))

    table = catalog.load_table(table.name())
    left = sorted(p for p in warehouse_files(table) if p.endswith(".metadata.json"))
    assert result.metadata_files_deleted == 6
    assert set(left) == {
        table.metadata_location,
        *(e.metadata_file for e in table.metadata.metadata_log),
    }
    assert _all_rows(table).num_rows == 24
    dispose_catalog(catalog)


def test_expired_files_are_gone_from_s3(rest_catalog_properties, namespace, warehouse_files):
    catalog = load_test_catalog(rest_catalog_properties)
    table = _small_files_table(catalog, namespace, appends=6)
    manager = _manager(catalog)
    manager.compact(table.name(), target_file_size_bytes=10**7)
    table = catalog.load_table(table.name())
    rows = _all_rows(table)
    compacted_files = set(_data_files(catalog.load_table(table.name())).keys())
    before = warehouse_files(table)
    old_lists = {s.manifest_list for s in table.snapshots()[:-1]}
    assert old_lists <= set(before)

    result = manager.expire_snapshots(table.name(), older_than=dt.timedelta(0), retain_last=1)

    after = warehouse_files(catalog.load_table(table.name()))
    assert all(p.startswith("s3://") for p in after)
    assert result.data_files_deleted == 6
    assert result.manifest_lists_deleted == 6
    gone = set(before) - set(after)
    assert old_lists <= gone
    assert len([p for p in gone if p.endswith(".parquet")]) == 6
    assert compacted_files <= set(after)  # the compacted files stay
    assert result.bytes_freed == sum(before[p] for p in gone)
    assert _all_rows(catalog.load_table(table.name())).equals(rows)


# ---------------------------------------------------------------------------- orphans

_KILLED_WRITER = textwrap.dedent(
    """
    import json, os, signal, sys
    import pyarrow as pa
    from pyiceberg.catalog import load_catalog
    properties, identifier = json.loads(sys.argv[1]), sys.argv[2]
    table = load_catalog("floe", **properties).load_table(identifier)
    tx = table.transaction()
    tx.append(pa.table({"id": pa.array([-1, -2], pa.int64()), "region": ["eu", "us"]}))
    # Data files, manifest and manifest list are written; the catalog commit never happens.
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def _run_killed_writer(properties: dict[str, str], identifier: str) -> None:
    process = subprocess.run(
        [sys.executable, "-c", _KILLED_WRITER, json.dumps(properties), identifier],
        capture_output=True,
        timeout=120,
    )
    assert process.returncode == -9, process.stderr.decode()


def test_orphans_of_a_killed_writer_are_removed_after_the_age_guard(
    sqlite_catalog_properties, namespace, warehouse_files
):
    catalog = load_test_catalog(sqlite_catalog_properties)
    table = _small_files_table(catalog, namespace, appends=4)
    rows = _all_rows(table)
    clean = set(warehouse_files(table))
    _run_killed_writer(sqlite_catalog_properties, ".".join(table.name()))
    left_behind = set(warehouse_files(table)) - clean
    assert len([p for p in left_behind if p.endswith(".parquet")]) == 2
    assert len(left_behind) == 4  # 2 data files, 1 manifest, 1 manifest list
    manager = _manager(catalog)

    # Fresh files are spared by the default 3-day guard: the writer might still be running.
    guarded = manager.remove_orphan_files(table.name())
    assert guarded.orphan_files == ()
    assert guarded.too_recent == 4
    assert left_behind <= set(warehouse_files(table))

    # Age them past the guard (the crash happened days ago).
    four_days_ago = (dt.datetime.now(dt.UTC) - dt.timedelta(days=4)).timestamp()
    for path in left_behind:
        os.utime(path.removeprefix("file://"), (four_days_ago, four_days_ago))
    dry = manager.remove_orphan_files(table.name(), dry_run=True)
    assert set(dry.orphan_files) == left_behind
    assert dry.files_deleted == 0
    assert left_behind <= set(warehouse_files(table))

    result = manager.remove_orphan_files(table.name())

    assert set(result.orphan_files) == left_behind
    assert result.files_deleted == 4
    assert set(warehouse_files(table)) == clean
    assert _all_rows(catalog.load_table(table.name())).equals(rows)
    assert result.bytes_freed == dry.orphan_bytes > 0
    dispose_catalog(catalog)


def test_orphan_removal_on_s3(rest_catalog_properties, namespace, warehouse_files):
    catalog = load_test_catalog(rest_catalog_properties)
    table = _small_files_table(catalog, namespace, appends=3)
    clean = set(warehouse_files(table))
    _run_killed_writer(rest_catalog_properties, ".".join(table.name()))
    left_behind = set(warehouse_files(table)) - clean
    assert len(left_behind) == 4

    result = _manager(catalog).remove_orphan_files(table.name(), older_than=dt.timedelta(0))

    assert set(result.orphan_files) == left_behind
    assert result.files_deleted == 4
    assert set(warehouse_files(table)) == clean
    assert _all_rows(catalog.load_table(table.name())).num_rows == 9


# ---------------------------------------------------------------------------- manifests, health


def test_rewrite_manifests_clusters_many_manifests(sqlite_catalog_properties, namespace):
    catalog = load_test_catalog(sqlite_catalog_properties)
    table = _small_files_table(catalog, namespace, appends=20)
    rows = _all_rows(table)
    previous = table.current_snapshot().snapshot_id
    manager = _manager(catalog)
    assert len(table.current_snapshot().manifests(table.io)) == 20

    result = manager.rewrite_manifests(table.name())

    table = catalog.load_table(table.name())
    manifests = table.current_snapshot().manifests(table.io)
    assert result.committed
    assert result.manifests_before == 20
    assert len(manifests) == result.manifests_after == 1
    assert result.entries_rewritten == 20
    assert table.current_snapshot().summary.operation.value == "replace"
    assert table.current_snapshot().summary["total-records"] == str(rows.num_rows)
    assert _all_rows(table).equals(rows)
    assert table.scan(row_filter=EqualTo("region", "eu")).to_arrow().num_rows == 30
    assert table.scan(snapshot_id=previous).to_arrow().sort_by("id").equals(rows)
    # Nothing left to do: a second call commits nothing.
    assert not manager.rewrite_manifests(table.name()).committed
    dispose_catalog(catalog)


def test_table_health_reports_storage_metrics(sqlite_catalog_properties, namespace):
    catalog = load_test_catalog(sqlite_catalog_properties)
    table = _small_files_table(catalog, namespace, appends=10)
    sizes = list(_data_files(table).values())
    manager = _manager(catalog)

    health = manager.table_health(table.name())
    assert health.data_files == 10
    assert health.total_bytes == sum(sizes)
    assert health.small_files == 10
    assert health.small_file_ratio == pytest.approx(1.0)
    assert health.compactable_small_files == 10  # five per partition
    assert health.compactable_small_file_ratio == pytest.approx(1.0)
    assert health.small_file_threshold_bytes == int(128 * 1024 * 1024 * 0.75)
    assert health.average_file_size_bytes == pytest.approx(sum(sizes) / 10)
    assert health.partitions == 2
    assert health.rows == 30
    assert health.snapshots == 10
    assert health.manifests == 10
    assert health.delete_files == 0
    assert health.seconds_since_last_commit is not None
    assert health.seconds_since_last_commit >= 0
    assert health.last_data_change_at == health.last_commit_at
    assert health.needs_compaction()

    threshold = sorted(sizes)[5]
    assert manager.table_health(table.name(), small_file_threshold_bytes=threshold).small_files == 5

    manager.compact(table.name(), target_file_size_bytes=10**7)
    compacted = manager.table_health(table.name())
    assert compacted.data_files == 2
    assert compacted.rows == 30
    assert compacted.snapshots == 11
    assert compacted.last_data_change_at == health.last_commit_at  # compaction is no data change
    assert compacted.last_commit_at >= health.last_commit_at
    assert set(compacted.as_metrics()) >= {"data_files", "small_file_ratio", "rows", "snapshots"}
    dispose_catalog(catalog)


def test_table_health_counts_only_small_files_compaction_can_merge(
    sqlite_catalog_properties, namespace
):
    catalog = load_test_catalog(sqlite_catalog_properties)
    catalog.create_namespace_if_not_exists(namespace)
    table = catalog.create_table(f"{namespace}.daily", SCHEMA, partition_spec=REGION_SPEC)
    for n in range(7):  # a backfill: one small file in each of seven partitions
        table.append(_rows(n * 3, 3, f"r{n}"))
    manager = _manager(catalog)

    lone = manager.table_health(table.name())
    assert (lone.data_files, lone.small_files, lone.partitions) == (7, 7, 7)
    assert lone.compactable_small_files == 0
    assert lone.compactable_small_file_ratio == 0.0
    assert not lone.needs_compaction(max_small_file_ratio=0.5, min_small_files=2)
    assert not manager.compact(table.name(), target_file_size_bytes=10**7).committed

    table = catalog.load_table(table.name())
    for n in range(3):  # three more files in partition r0: four small files there
        table.append(_rows(100 + n * 3, 3, "r0"))
    piled_up = manager.table_health(table.name())
    assert (piled_up.small_files, piled_up.compactable_small_files) == (10, 4)
    assert piled_up.compactable_small_file_ratio == pytest.approx(0.4)
    assert piled_up.needs_compaction(max_small_file_ratio=0.3, min_small_files=4)
    assert not piled_up.needs_compaction(max_small_file_ratio=0.5)
    # Bins of fewer than min_input_files files are not rewritten, so they do not count.
    table = catalog.load_table(table.name())
    assert maintenance.table_health(manager, table, min_input_files=5).compactable_small_files == 0
    assert maintenance.table_health(manager, table, min_input_files=4).compactable_small_files == 4

    # A target size that fits one file per bin: every file is small, none can be merged.
    sizes = list(_data_files(table).values())
    target = int((max(sizes) + 2) / 0.75) + 1
    assert target < 2 * min(sizes)
    with table.transaction() as transaction:
        transaction.set_properties({"write.target-file-size-bytes": str(target)})
    one_per_bin = manager.table_health(table.name())
    assert (one_per_bin.small_files, one_per_bin.compactable_small_files) == (10, 0)
    assert not manager.compact(table.name(), target_file_size_bytes=target).committed

    with table.transaction() as transaction:
        transaction.remove_properties("write.target-file-size-bytes")
    result = manager.compact(table.name(), target_file_size_bytes=10**7)
    assert result.committed
    assert result.files_rewritten == 4
    compacted = manager.table_health(table.name())
    assert (compacted.small_files, compacted.compactable_small_files) == (7, 0)
    assert compacted.as_metrics()["compactable_small_files"] == 0
    dispose_catalog(catalog)


# ---------------------------------------------------------------------------- maintenance racing


def _age_everything(files_on_disk: dict[str, int], days: int = 4) -> None:
    """Make every file look ``days`` old, so only references (not the age guard) protect it."""
    then = (dt.datetime.now(dt.UTC) - dt.timedelta(days=days)).timestamp()
    for path in files_on_disk:
        os.utime(path.removeprefix("file://"), (then, then))


def _plant_orphan(table) -> str:
    """A data file nothing references (as a killed writer leaves), 4 days old."""
    path = f"{table.location()}/data/orphan-{os.getpid()}.parquet"
    pq.write_table(_rows(900, 2, "eu"), path.removeprefix("file://"))
    return path


def _pause_first_read(monkeypatch, thread_name: str, suffix: str):
    """Pause the named thread at its first FileIO read of a file ending in ``suffix``.

    Returns ``(paused, resume)`` events: the thread sets ``paused`` before opening the file and
    waits for ``resume``; other threads read unhindered.
    """
    from pyiceberg.io.pyarrow import PyArrowFileIO

    paused, resume = threading.Event(), threading.Event()
    real_new_input = PyArrowFileIO.new_input

    def new_input(self, location: str):
        if (
            threading.current_thread().name == thread_name
            and location.endswith(suffix)
            and not paused.is_set()
        ):
            paused.set()
            assert resume.wait(timeout=120), "the concurrent step never finished"
        return real_new_input(self, location)

    monkeypatch.setattr(PyArrowFileIO, "new_input", new_input)
    return paused, resume


def _in_thread(name: str, target) -> tuple[threading.Thread, dict]:
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["result"] = target()
        except BaseException as error:  # reported by the test, not lost in the thread
            outcome["error"] = error

    thread = threading.Thread(target=run, name=name)
    thread.start()
    return thread, outcome


def test_orphan_removal_concurrent_with_snapshot_expiry(
    sqlite_catalog_properties, namespace, warehouse_files, monkeypatch
):
    """Two schedules on one table: expiry commits and deletes manifests while orphan removal
    reads them. Orphan removal reloads the table and reads again; it deletes the real orphan
    and no file a live snapshot references."""
    catalog = load_test_catalog(sqlite_catalog_properties)
    other = load_test_catalog(sqlite_catalog_properties)
    table = _small_files_table(catalog, namespace, appends=6)
    table.overwrite(_rows(500, 4, "eu"))  # earlier files now only live in old snapshots
    table = catalog.load_table(table.name())
    rows = _all_rows(table)
    orphan = _plant_orphan(table)
    _age_everything(warehouse_files(table))
    paused, resume = _pause_first_read(monkeypatch, "orphans", "avro")  # a manifest list
    manager = _manager(catalog)

    thread, outcome = _in_thread("orphans", lambda: manager.remove_orphan_files(table.name()))
    assert paused.wait(timeout=120)
    expiry = _manager(other).expire_snapshots(
        table.name(), older_than=dt.timedelta(0), retain_last=1
    )
    resume.set()
    thread.join(timeout=120)

    assert "error" not in outcome, repr(outcome.get("error"))
    result = outcome["result"]
    assert expiry.snapshots_expired == 7
    assert expiry.manifest_lists_deleted == 7
    assert result.metadata_reloads == 1
    assert result.skipped is None
    assert result.orphan_files == (orphan,)
    assert result.files_deleted == 1
    table = catalog.load_table(table.name())
    on_disk = set(warehouse_files(table))
    assert orphan not in on_disk
    assert _metadata_paths(table) <= on_disk  # every live reference is still there
    assert _all_rows(table).equals(rows)
    dispose_catalog(other)
    dispose_catalog(catalog)


def _avro_files(files_on_disk: dict[str, int]) -> set[str]:
    return {p for p in files_on_disk if p.endswith(".avro")}


def _referenced_storage(table) -> set[str]:
    """Manifest lists, manifests and data files the table's snapshots reference."""
    return (
        _metadata_paths(table)
        - {table.metadata_location}
        - {e.metadata_file for e in table.metadata.metadata_log}
    )


def test_snapshot_expiry_concurrent_with_another_expiry(
    sqlite_catalog_properties, namespace, warehouse_files, monkeypatch
):
    """One expiry keeps five snapshots, a second one only the last: the second commits and
    deletes while the first is working out which files it may delete. The first reloads,
    deletes only what no kept snapshot references, and together they free everything."""
    catalog = load_test_catalog(sqlite_catalog_properties)
    other = load_test_catalog(sqlite_catalog_properties)
    table = _small_files_table(catalog, namespace, appends=6)
    table.overwrite(_rows(500, 4, "eu"))
    table = catalog.load_table(table.name())
    for n in range(3):
        table.append(_rows(600 + n, 1, "us"))
    table = catalog.load_table(table.name())
    rows = _all_rows(table)
    paused, resume = _pause_first_read(monkeypatch, "keep-five", "avro")
    manager = _manager(catalog)

    thread, outcome = _in_thread(
        "keep-five",
        lambda: manager.expire_snapshots(table.name(), older_than=dt.timedelta(0), retain_last=5),
    )
    assert paused.wait(timeout=120)
    last_only = _manager(other).expire_snapshots(
        table.name(), older_than=dt.timedelta(0), retain_last=1
    )
    resume.set()
    thread.join(timeout=120)

    assert "error" not in outcome, repr(outcome.get("error"))
    keep_five = outcome["result"]
    assert keep_five.metadata_reloads == 1
    assert keep_five.cleanup_skipped is None
    assert keep_five.failed_deletes == last_only.failed_deletes == ()
    assert keep_five.data_files_deleted == 6  # the files the overwrite replaced
    assert last_only.snapshots_expired == 4
    table = catalog.load_table(table.name())
    assert len(table.snapshots()) == 1
    on_disk = warehouse_files(table)
    # Nothing referenced is gone; nothing unreferenced is left.
    assert {p for p in on_disk if p.endswith((".parquet", ".avro"))} == _referenced_storage(table)
    assert _all_rows(table).equals(rows)
    dispose_catalog(other)
    dispose_catalog(catalog)


def test_table_health_and_manifest_rewrite_concurrent_with_expiry(
    sqlite_catalog_properties, namespace, monkeypatch
):
    """The snapshot they started from is expired (its manifest list deleted) while they read
    it: they reload and work on the current one."""
    catalog = load_test_catalog(sqlite_catalog_properties)
    other = load_test_catalog(sqlite_catalog_properties)
    table = _small_files_table(catalog, namespace, appends=6)
    manager = _manager(catalog)
    for step, run in [
        ("health", lambda: manager.table_health(table.name())),
        ("rewrite", lambda: manager.rewrite_manifests(table.name())),
    ]:
        paused, resume = _pause_first_read(monkeypatch, step, "avro")
        thread, outcome = _in_thread(step, run)
        assert paused.wait(timeout=120)
        theirs = other.load_table(table.name())
        theirs.append(_rows(700 + len(theirs.snapshots()), 1, "us"))
        _manager(other).expire_snapshots(table.name(), older_than=dt.timedelta(0), retain_last=1)
        resume.set()
        thread.join(timeout=120)
        monkeypatch.undo()
        assert "error" not in outcome, f"{step}: {outcome.get('error')!r}"
        current = catalog.load_table(table.name())
        if step == "health":
            assert outcome["result"].snapshots == 1
            assert outcome["result"].rows == _all_rows(current).num_rows == 19
        else:
            assert outcome["result"].committed
            assert current.current_snapshot().snapshot_id == outcome["result"].snapshot_id
            assert len(current.current_snapshot().manifests(current.io)) == 1
            assert _all_rows(current).num_rows == 20
    dispose_catalog(other)
    dispose_catalog(catalog)


def test_orphan_removal_gives_up_cleanly_when_files_keep_vanishing(
    sqlite_catalog_properties, namespace, warehouse_files, monkeypatch
):
    """Expiries without end (simulated: every manifest list read fails as deleted): orphan
    removal stops after a bounded number of reloads, deletes nothing and says why."""
    from pyiceberg.io.pyarrow import PyArrowFileIO

    catalog = load_test_catalog(sqlite_catalog_properties)
    table = _small_files_table(catalog, namespace, appends=3)
    orphan = _plant_orphan(table)
    _age_everything(warehouse_files(table))
    before = warehouse_files(table)
    real_new_input = PyArrowFileIO.new_input

    def vanishing(self, location: str):
        if "/snap-" in location:
            raise FileNotFoundError(f"Cannot open file, does not exist: {location}")
        return real_new_input(self, location)

    monkeypatch.setattr(PyArrowFileIO, "new_input", vanishing)
    result = _manager(catalog).remove_orphan_files(table.name())
    monkeypatch.undo()

    assert result.skipped is not None
    assert "kept vanishing" in result.skipped
    assert result.metadata_reloads == 5
    assert result.orphan_files == ()
    assert result.files_deleted == 0
    assert warehouse_files(table) == before
    assert orphan in before
    assert result.as_metrics()["skipped"] == result.skipped
    dispose_catalog(catalog)
