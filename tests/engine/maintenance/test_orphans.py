"""Orphan removal: what a killed writer left is deleted once past the age guard (on disk and on
S3), and a snapshot expiry running meanwhile makes it reload, never delete a live file."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import textwrap

from infra.catalogs import dispose_catalog, load_test_catalog

from engine.maintenance.support import (
    age_everything,
    all_rows,
    fast_manager,
    in_thread,
    make_rows,
    metadata_paths,
    pause_first_read,
    plant_orphan,
    small_files_table,
)

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
    table = small_files_table(catalog, namespace, appends=4)
    rows = all_rows(table)
    clean = set(warehouse_files(table))
    _run_killed_writer(sqlite_catalog_properties, ".".join(table.name()))
    left_behind = set(warehouse_files(table)) - clean
    assert len([p for p in left_behind if p.endswith(".parquet")]) == 2
    assert len(left_behind) == 4  # 2 data files, 1 manifest, 1 manifest list
    manager = fast_manager(catalog)

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
    assert all_rows(catalog.load_table(table.name())).equals(rows)
    assert result.bytes_freed == dry.orphan_bytes > 0
    dispose_catalog(catalog)


def test_orphan_removal_on_s3(rest_catalog_properties, namespace, warehouse_files):
    catalog = load_test_catalog(rest_catalog_properties)
    table = small_files_table(catalog, namespace, appends=3)
    clean = set(warehouse_files(table))
    _run_killed_writer(rest_catalog_properties, ".".join(table.name()))
    left_behind = set(warehouse_files(table)) - clean
    assert len(left_behind) == 4

    result = fast_manager(catalog).remove_orphan_files(table.name(), older_than=dt.timedelta(0))

    assert set(result.orphan_files) == left_behind
    assert result.files_deleted == 4
    assert set(warehouse_files(table)) == clean
    assert all_rows(catalog.load_table(table.name())).num_rows == 9


def test_orphan_removal_concurrent_with_snapshot_expiry(
    sqlite_catalog_properties, namespace, warehouse_files, monkeypatch
):
    """Two schedules on one table: expiry commits and deletes manifests while orphan removal
    reads them. Orphan removal reloads the table and reads again; it deletes the real orphan
    and no file a live snapshot references."""
    catalog = load_test_catalog(sqlite_catalog_properties)
    other = load_test_catalog(sqlite_catalog_properties)
    table = small_files_table(catalog, namespace, appends=6)
    table.overwrite(make_rows(500, 4, "eu"))  # earlier files now only live in old snapshots
    table = catalog.load_table(table.name())
    rows = all_rows(table)
    orphan = plant_orphan(table)
    age_everything(warehouse_files(table))
    paused, resume = pause_first_read(monkeypatch, "orphans", "avro")  # a manifest list
    manager = fast_manager(catalog)

    thread, outcome = in_thread("orphans", lambda: manager.remove_orphan_files(table.name()))
    assert paused.wait(timeout=120)
    expiry = fast_manager(other).expire_snapshots(
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
    assert metadata_paths(table) <= on_disk  # every live reference is still there
    assert all_rows(table).equals(rows)
    dispose_catalog(other)
    dispose_catalog(catalog)


def test_orphan_removal_gives_up_cleanly_when_files_keep_vanishing(
    sqlite_catalog_properties, namespace, warehouse_files, monkeypatch
):
    """Expiries without end (simulated: every manifest list read fails as deleted): orphan
    removal stops after a bounded number of reloads, deletes nothing and says why."""
    from pyiceberg.io.pyarrow import PyArrowFileIO

    catalog = load_test_catalog(sqlite_catalog_properties)
    table = small_files_table(catalog, namespace, appends=3)
    orphan = plant_orphan(table)
    age_everything(warehouse_files(table))
    before = warehouse_files(table)
    real_new_input = PyArrowFileIO.new_input

    def vanishing(self, location: str):
        if "/snap-" in location:
            raise FileNotFoundError(f"Cannot open file, does not exist: {location}")
        return real_new_input(self, location)

    monkeypatch.setattr(PyArrowFileIO, "new_input", vanishing)
    result = fast_manager(catalog).remove_orphan_files(table.name())
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


def test_checksum_sidecars_follow_their_files(
    sqlite_catalog_properties, namespace, warehouse_files
):
    """Spark's Hadoop FileIO writes ``.name.crc`` beside every file: sidecars of live files
    stay, sidecars of orphans go with them."""
    catalog = load_test_catalog(sqlite_catalog_properties)
    table = small_files_table(catalog, namespace, appends=2)
    rows = all_rows(table)
    live = table.inspect.files().column("file_path").to_pylist()
    live_sidecars = [_sidecar(path) for path in live]
    orphan = plant_orphan(table)
    orphan_sidecar = _sidecar(orphan)
    for path in [*live_sidecars, orphan_sidecar]:
        with open(path.removeprefix("file://"), "wb") as handle:
            handle.write(b"crc")
    age_everything(warehouse_files(table))

    result = fast_manager(catalog).remove_orphan_files(table.name())

    assert set(result.orphan_files) == {orphan, orphan_sidecar}
    assert all(os.path.exists(p.removeprefix("file://")) for p in live_sidecars)
    assert not os.path.exists(orphan_sidecar.removeprefix("file://"))
    assert all_rows(catalog.load_table(table.name())).equals(rows)
    dispose_catalog(catalog)


def _sidecar(path: str) -> str:
    directory, name = os.path.split(path)
    return f"{directory}/.{name}.crc"
