"""Compaction on real tables with many small files: rows and values kept, bins packed, sort order
honoured, merge-on-read deletes applied, and writers committing meanwhile never lose a row."""

from __future__ import annotations

import datetime as dt
import threading

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from infra.catalogs import dispose_catalog, load_test_catalog
from infra.deletes import (
    data_file_paths,
    ids_at,
    live_files,
    write_equality_deletes,
    write_position_deletes,
)
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.expressions import EqualTo
from pyiceberg.manifest import DataFileContent
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.table.sorting import NullOrder, SortDirection, SortField, SortOrder
from pyiceberg.transforms import DayTransform, IdentityTransform
from pyiceberg.types import StringType

from engine.maintenance.support import (
    all_rows,
    data_files,
    fast_manager,
    make_rows,
    on_disk_data,
    small_files_table,
)
from floe_dagster_iceberg.engine.maintenance import compaction
from floe_dagster_iceberg.engine.maintenance.orphans import remove_orphan_files
from floe_dagster_iceberg.errors import InvalidInputError


def test_compaction_rewrites_small_files_and_keeps_every_row(catalog, namespace, warehouse_files):
    table = small_files_table(catalog, namespace, appends=12)
    manager = fast_manager(catalog)
    before_rows = all_rows(table)
    before_files = data_files(table)
    before_disk = on_disk_data(warehouse_files(table))
    assert len(before_files) == 12
    assert before_files.items() <= before_disk.items()  # every data file is on disk, same size

    result = manager.compact(table.name(), target_file_size_bytes=1024 * 1024)

    table = catalog.load_table(table.name())
    after_files = data_files(table)
    after_disk = on_disk_data(warehouse_files(table))
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
    assert all_rows(table).equals(before_rows)
    # The old files stay on disk (older snapshots still read them) until snapshots expire.
    assert before_files.items() <= after_disk.items()
    parent = table.metadata.snapshot_by_id(table.current_snapshot().parent_snapshot_id)
    assert table.scan(snapshot_id=parent.snapshot_id).to_arrow().sort_by("id").equals(before_rows)

    expired = manager.expire_snapshots(table.name(), older_than=dt.timedelta(0), retain_last=1)
    final_disk = on_disk_data(warehouse_files(table))
    assert expired.data_files_deleted == 12
    assert final_disk == after_files
    assert sum(final_disk.values()) < sum(before_disk.values())
    assert all_rows(catalog.load_table(table.name())).equals(before_rows)


def test_compaction_packs_bins_and_respects_thresholds(sqlite_catalog_properties, namespace):
    catalog = load_test_catalog(sqlite_catalog_properties)
    table = small_files_table(catalog, namespace, appends=12, spec=PartitionSpec())
    manager = fast_manager(catalog)
    sizes = sorted(data_files(table).values())
    rows = all_rows(table)

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
    assert len(data_files(table)) == result.files_added
    assert all_rows(table).equals(rows)

    with pytest.raises(InvalidInputError):
        manager.compact(table.name(), target_file_size_bytes=0)
    dispose_catalog(catalog)


def test_compaction_partition_filter_and_day_transform(sqlite_catalog_properties, namespace):
    catalog = load_test_catalog(sqlite_catalog_properties)
    spec = PartitionSpec(
        PartitionField(2, 1000, IdentityTransform(), "region"),
        PartitionField(3, 1001, DayTransform(), "ts_day"),
    )
    table = small_files_table(catalog, namespace, appends=24, spec=spec)
    manager = fast_manager(catalog)
    rows = all_rows(table)

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
    assert all_rows(table).equals(rows)
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
    table = small_files_table(
        catalog, namespace, appends=10, rows=5, spec=PartitionSpec(), sort_order=sort_order
    )
    rows = all_rows(table)

    fast_manager(catalog).compact(table.name(), target_file_size_bytes=10**7)

    table = catalog.load_table(table.name())
    (path,) = data_files(table)
    written = pq.read_table(table.io.new_input(path).open())
    scores = written["score"].to_pylist()
    present = [s for s in scores if s is not None]
    assert present == sorted(present, reverse=True)
    assert scores[len(present) :] == [None] * (len(scores) - len(present))  # nulls last
    null_ids = written["id"].to_pylist()[len(present) :]
    assert null_ids == sorted(null_ids)  # second key breaks ties
    assert all_rows(table).equals(rows)
    dispose_catalog(catalog)


def test_compaction_after_schema_evolution_keeps_values(sqlite_catalog_properties, namespace):
    catalog = load_test_catalog(sqlite_catalog_properties)
    table = small_files_table(catalog, namespace, appends=6)
    with table.update_schema() as update:
        update.add_column("note", StringType())
        update.rename_column("score", "quality")
    table = catalog.load_table(table.name())
    for n in range(6, 10):
        batch = make_rows(n * 3, 3, "eu").rename_columns(
            ["id", "region", "ts", "amount", "quality", "tags"]
        )
        table.append(batch.append_column("note", pa.array([f"n{n}"] * 3)))
    table = catalog.load_table(table.name())
    rows = all_rows(table)

    result = fast_manager(catalog).compact(table.name(), target_file_size_bytes=10**7)

    table = catalog.load_table(table.name())
    assert result.files_rewritten == 10
    after = all_rows(table)
    assert after.equals(rows)
    assert after["note"].null_count == 18
    dispose_catalog(catalog)


def test_write_landing_during_compaction_is_never_lost(
    sqlite_catalog_properties, namespace, monkeypatch
):
    """A commit lands in a partition between compaction's planning and its commit."""
    catalog = load_test_catalog(sqlite_catalog_properties)
    other_writer = load_test_catalog(sqlite_catalog_properties)
    table = small_files_table(catalog, namespace, appends=12)
    expected = pa.concat_tables([all_rows(table), make_rows(1000, 2, "eu")]).sort_by("id")
    real_write = compaction._write_data_files
    landed: list[int] = []

    def write_while_another_writer_commits(tbl, rows):
        if not landed:
            other_writer.load_table(tbl.name()).append(make_rows(1000, 2, "eu"))
            landed.append(1)
        return real_write(tbl, rows)

    monkeypatch.setattr(compaction, "_write_data_files", write_while_another_writer_commits)
    result = fast_manager(catalog).compact(table.name(), target_file_size_bytes=10**7)

    table = catalog.load_table(table.name())
    assert result.committed
    assert result.conflicts == 1
    assert result.commit_attempts == 2
    # Committed again on the fresh table with the files already written: the new file is
    # kept as it is (the next compaction takes it), and no row is lost.
    assert result.files_rewritten == 12
    assert len(data_files(table)) == result.files_added + 1
    assert all_rows(table).equals(expected)
    dispose_catalog(other_writer)
    dispose_catalog(catalog)


def test_files_removed_by_a_concurrent_overwrite_and_expiry_make_compaction_replan(
    sqlite_catalog_properties, namespace, monkeypatch
):
    """Another writer overwrites the table and expires the old snapshots while compaction reads."""
    catalog = load_test_catalog(sqlite_catalog_properties)
    other = load_test_catalog(sqlite_catalog_properties)
    table = small_files_table(catalog, namespace, appends=6)
    real_read = compaction._read_data_files
    replaced: list[int] = []

    def read_while_the_table_is_replaced(tbl, files, deletes):
        if not replaced:
            theirs = other.load_table(tbl.name())
            theirs.overwrite(pa.concat_tables([make_rows(100 + 3 * n, 3, "eu") for n in range(4)]))
            fast_manager(other).expire_snapshots(
                tbl.name(), older_than=dt.timedelta(0), retain_last=1
            )
            replaced.append(1)
        return real_read(tbl, files, deletes)

    monkeypatch.setattr(compaction, "_read_data_files", read_while_the_table_is_replaced)
    result = fast_manager(catalog).compact(table.name(), target_file_size_bytes=10**7)

    assert result.conflicts == 1
    assert result.files_rewritten == 0  # the overwrite left a single file: nothing to compact
    assert all_rows(catalog.load_table(table.name())).num_rows == 12
    dispose_catalog(other)
    dispose_catalog(catalog)


def test_partition_rewritten_during_compaction_is_replanned(
    sqlite_catalog_properties, namespace, monkeypatch
):
    catalog = load_test_catalog(sqlite_catalog_properties)
    other_writer = load_test_catalog(sqlite_catalog_properties)
    table = small_files_table(catalog, namespace, appends=12)
    real_write = compaction._write_data_files
    next_id = iter(range(5000, 6000, 10))

    def busy_partition(tbl, rows):
        if "eu" in rows["region"].to_pylist():
            # A writer rewrites eu (its rows plus one new) on every attempt: the files being
            # compacted are replaced each time.
            other = other_writer.load_table(tbl.name())
            eu = EqualTo("region", "eu")
            kept = other.scan(row_filter=eu).to_arrow()
            new = make_rows(next(next_id), 1, "eu").cast(kept.schema)
            other.overwrite(pa.concat_tables([kept, new]), overwrite_filter=eu)
        return real_write(tbl, rows)

    monkeypatch.setattr(compaction, "_write_data_files", busy_partition)
    result = fast_manager(catalog).compact(table.name(), target_file_size_bytes=10**7)

    table = catalog.load_table(table.name())
    # The first attempt's eu files were replaced meanwhile: eu is re-planned (now one file,
    # nothing to compact) and us is compacted.
    assert [p.partition for p in result.partitions] == ["region=us"]
    assert result.conflicts == 1
    eu_rows = table.scan(row_filter=EqualTo("region", "eu")).to_arrow()
    assert eu_rows.num_rows == 6 * 3 + 1  # the concurrent rewrite is kept
    # Nothing written by the failed attempts is left behind.
    orphans = remove_orphan_files(catalog, table, older_than=dt.timedelta(0), dry_run=True)
    assert orphans.orphan_files == ()
    dispose_catalog(other_writer)
    dispose_catalog(catalog)


def test_writer_thread_running_during_compaction_loses_nothing(
    postgres_catalog_properties, namespace
):
    catalog = load_test_catalog(postgres_catalog_properties)
    table = small_files_table(catalog, namespace, appends=16)
    initial = all_rows(table)
    started = threading.Event()
    errors: list[BaseException] = []
    appended: list[pa.Table] = []

    def writer() -> None:
        own = load_test_catalog(postgres_catalog_properties)
        try:
            for n in range(12):
                batch = make_rows(10_000 + n * 2, 2, "eu" if n % 2 else "us")
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
    manager = fast_manager(catalog)
    results = []
    while thread.is_alive():  # compaction runs while the writer is committing
        results.append(manager.compact(table.name(), target_file_size_bytes=10**7))
    thread.join()
    results.append(manager.compact(table.name(), target_file_size_bytes=10**7))

    assert not errors, errors
    assert any(r.committed for r in results)
    expected = pa.concat_tables([initial, *appended]).sort_by("id")
    assert all_rows(catalog.load_table(table.name())).equals(expected)
    dispose_catalog(catalog)


def test_compaction_applies_position_deletes_and_removes_those_it_makes_obsolete(
    catalog, namespace
):
    """Spark's merge-on-read deletes on small files: compaction leaves the deleted rows out and
    removes, in its one snapshot, the delete files that only applied to files it rewrote."""
    table = small_files_table(catalog, namespace, appends=8)  # 4 tiny files per region
    table.append(make_rows(10_000, 2000, "eu"))  # not small at the target below
    table = catalog.load_table(table.name())
    target = 24_000
    eu, us = data_file_paths(table, "eu"), data_file_paths(table, "us")
    big = eu.pop()
    assert data_files(table)[big] >= target * 0.75 > max(data_files(table)[p] for p in eu + us)
    only_small = write_position_deletes(catalog, table, {eu[0]: [0], eu[1]: [1, 2]})
    table = catalog.load_table(table.name())
    # Partition-scoped, without bounds: deletes from a rewritten file and from one kept.
    with_big = write_position_deletes(catalog, table, {eu[2]: [0], big: [5, 6]}, bounds=False)
    table = catalog.load_table(table.name())
    in_us = write_position_deletes(catalog, table, {us[0]: [1]})
    table = catalog.load_table(table.name())
    before = all_rows(table)
    before_id = table.current_snapshot().snapshot_id
    assert before.num_rows == 24 + 2000 - 7

    result = fast_manager(catalog).compact(table.name(), target_file_size_bytes=target)

    table = catalog.load_table(table.name())
    assert all_rows(table).equals(before)
    assert result.committed
    assert result.commit_attempts == 1
    assert result.files_rewritten == 8
    assert result.position_deletes_applied == 5
    assert result.rows_rewritten == 24 - 5
    assert result.delete_files_removed == 2
    assert {p.partition: p.delete_files_removed for p in result.partitions} == {
        "region=eu": 1,
        "region=us": 1,
    }
    assert result.as_metrics()["delete_files_removed"] == 2
    live = live_files(table)
    deletes_left = {p for p, f in live.items() if f.content != DataFileContent.DATA}
    assert deletes_left == {with_big.file_path}  # still deletes rows 5 and 6 of the big file
    assert only_small.file_path not in live
    assert in_us.file_path not in live
    assert len(data_file_paths(table)) == 3  # eu compacted, the big eu file, us compacted
    snapshot = table.current_snapshot()
    assert snapshot.parent_snapshot_id == before_id  # one snapshot
    assert snapshot.summary.operation.value == "replace"
    assert snapshot.summary["removed-position-delete-files"] == "2"
    assert snapshot.summary["total-position-deletes"] == "3"
    assert snapshot.summary["total-records"] == str(2000 + 19)
    # Time travel to before the compaction still applies the deletes of then.
    assert table.scan(snapshot_id=before_id).to_arrow().sort_by("id").equals(before)
    health = fast_manager(catalog).table_health(table.name())
    assert (health.rows, health.position_deletes, health.dangling_delete_files) == (
        before.num_rows,
        2,
        0,
    )


def test_compaction_leaves_files_with_equality_deletes_as_they_are(
    sqlite_catalog_properties, namespace
):
    catalog = load_test_catalog(sqlite_catalog_properties)
    table = small_files_table(catalog, namespace, appends=8)
    us = data_file_paths(table, "us")
    eu_rows = table.scan(row_filter=EqualTo("region", "eu")).to_arrow().sort_by("id")
    keys = pa.table({"id": pa.array(ids_at(table, us[0], [0]), pa.int64())})
    equality = write_equality_deletes(catalog, table, keys, like=us[0])

    result = fast_manager(catalog).compact(table.name(), target_file_size_bytes=10**7)

    table = catalog.load_table(table.name())
    assert [p.partition for p in result.partitions] == ["region=eu"]
    (skipped,) = result.skipped
    assert skipped.partition == "region=us"
    assert "4 file(s) have equality delete files" in skipped.reason
    assert data_file_paths(table, "us") == us
    assert equality.file_path in live_files(table)
    assert len(data_file_paths(table, "eu")) == 1
    assert table.scan(row_filter=EqualTo("region", "eu")).to_arrow().sort_by("id").equals(eu_rows)
    dispose_catalog(catalog)


def test_a_position_delete_committed_during_compaction_is_never_lost(
    sqlite_catalog_properties, namespace, monkeypatch
):
    """Another engine deletes a row of a file being compacted between planning and commit."""
    catalog = load_test_catalog(sqlite_catalog_properties)
    other_engine = load_test_catalog(sqlite_catalog_properties)
    table = small_files_table(catalog, namespace, appends=8)
    eu = data_file_paths(table, "eu")
    (doomed,) = ids_at(table, eu[1], [2])
    expected = all_rows(table).filter(pc.field("id") != doomed)
    real_write = compaction._write_data_files
    deleted: list[int] = []

    def write_while_another_engine_deletes(tbl, rows):
        if not deleted:
            write_position_deletes(other_engine, other_engine.load_table(tbl.name()), {eu[1]: [2]})
            deleted.append(1)
        return real_write(tbl, rows)

    monkeypatch.setattr(compaction, "_write_data_files", write_while_another_engine_deletes)
    result = fast_manager(catalog).compact(table.name(), target_file_size_bytes=10**7)

    table = catalog.load_table(table.name())
    assert result.committed
    assert result.conflicts == 1  # planned again, with the new delete
    assert result.position_deletes_applied == 1
    assert result.delete_files_removed == 1
    assert all_rows(table).equals(expected)
    assert doomed not in all_rows(table)["id"].to_pylist()
    assert all(f.content == DataFileContent.DATA for f in live_files(table).values())
    dispose_catalog(other_engine)
    dispose_catalog(catalog)
