"""Snapshot expiry: the files only expired snapshots referenced are deleted (on disk and on S3),
refs protect theirs, defaults come from the table, and two expiries at once free everything."""

from __future__ import annotations

import datetime as dt

from infra.catalogs import dispose_catalog, load_test_catalog

from engine.maintenance.support import (
    all_rows,
    data_files,
    fast_manager,
    in_thread,
    make_rows,
    metadata_paths,
    pause_first_read,
    small_files_table,
)


def test_expiry_frees_files_and_keeps_time_travel_tags_and_branches(
    sqlite_catalog_properties, namespace, warehouse_files
):
    catalog = load_test_catalog(sqlite_catalog_properties)
    table = small_files_table(catalog, namespace, appends=10)
    # A tag on an early snapshot and a branch on another protect them and their files.
    history = [s.snapshot_id for s in table.snapshots()]
    tagged, branched = history[2], history[4]
    table.manage_snapshots().create_tag(tagged, "audit").create_branch(branched, "dev").commit()
    table = catalog.load_table(table.name())
    table.overwrite(make_rows(500, 4, "eu"))  # drops every earlier file from the current snapshot
    table = catalog.load_table(table.name())
    for n in range(3):
        table.append(make_rows(600 + n, 1, "us"))
    table = catalog.load_table(table.name())
    snapshot_rows = {
        s.snapshot_id: table.scan(snapshot_id=s.snapshot_id).to_arrow().sort_by("id")
        for s in table.snapshots()
    }
    before_disk = warehouse_files(table)
    manager = fast_manager(catalog)

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
    referenced = metadata_paths(table)
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
    table = small_files_table(
        catalog, namespace, appends=8, properties={"history.expire.min-snapshots-to-keep": "5"}
    )
    manager = fast_manager(catalog)

    started = dt.datetime.now(dt.UTC)
    five_days = manager.expire_snapshots(table.name())  # Iceberg's default max snapshot age
    assert (
        started - dt.timedelta(days=5)
        <= five_days.older_than
        <= dt.datetime.now(dt.UTC) - dt.timedelta(days=5)
    )
    assert five_days.snapshots_expired == 0
    assert five_days.retain_last == 5

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
    table = small_files_table(
        catalog, namespace, appends=8, properties={"write.metadata.previous-versions-max": "2"}
    )
    metadata_json = [p for p in warehouse_files(table) if p.endswith(".metadata.json")]
    assert len(metadata_json) == 9

    result = fast_manager(catalog).expire_snapshots(table.name(), older_than=dt.timedelta(days=1))

    table = catalog.load_table(table.name())
    left = sorted(p for p in warehouse_files(table) if p.endswith(".metadata.json"))
    assert result.metadata_files_deleted == 6
    assert set(left) == {
        table.metadata_location,
        *(e.metadata_file for e in table.metadata.metadata_log),
    }
    assert all_rows(table).num_rows == 24
    dispose_catalog(catalog)


def test_expired_files_are_gone_from_s3(rest_catalog_properties, namespace, warehouse_files):
    catalog = load_test_catalog(rest_catalog_properties)
    table = small_files_table(catalog, namespace, appends=6)
    manager = fast_manager(catalog)
    manager.compact(table.name(), target_file_size_bytes=10**7)
    table = catalog.load_table(table.name())
    rows = all_rows(table)
    compacted_files = set(data_files(catalog.load_table(table.name())).keys())
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
    assert all_rows(catalog.load_table(table.name())).equals(rows)


def _referenced_storage(table) -> set[str]:
    """Manifest lists, manifests and data files the table's snapshots reference."""
    return (
        metadata_paths(table)
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
    table = small_files_table(catalog, namespace, appends=6)
    table.overwrite(make_rows(500, 4, "eu"))
    table = catalog.load_table(table.name())
    for n in range(3):
        table.append(make_rows(600 + n, 1, "us"))
    table = catalog.load_table(table.name())
    rows = all_rows(table)
    paused, resume = pause_first_read(monkeypatch, "keep-five", "avro")
    manager = fast_manager(catalog)

    thread, outcome = in_thread(
        "keep-five",
        lambda: manager.expire_snapshots(table.name(), older_than=dt.timedelta(0), retain_last=5),
    )
    assert paused.wait(timeout=120)
    last_only = fast_manager(other).expire_snapshots(
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
    assert all_rows(table).equals(rows)
    dispose_catalog(other)
    dispose_catalog(catalog)
