"""Reading metadata while a concurrent expiry deletes files: health and manifest rewrite reload
the table and work on the current snapshot."""

from __future__ import annotations

import datetime as dt

from infra.catalogs import dispose_catalog, load_test_catalog

from engine.maintenance.support import (
    all_rows,
    fast_manager,
    in_thread,
    make_rows,
    pause_first_read,
    small_files_table,
)


def test_table_health_and_manifest_rewrite_concurrent_with_expiry(
    sqlite_catalog_properties, namespace, monkeypatch
):
    """The snapshot they started from is expired (its manifest list deleted) while they read
    it: they reload and work on the current one."""
    catalog = load_test_catalog(sqlite_catalog_properties)
    other = load_test_catalog(sqlite_catalog_properties)
    table = small_files_table(catalog, namespace, appends=6)
    manager = fast_manager(catalog)
    for step, run in [
        ("health", lambda: manager.table_health(table.name())),
        ("rewrite", lambda: manager.rewrite_manifests(table.name())),
    ]:
        paused, resume = pause_first_read(monkeypatch, step, "avro")
        thread, outcome = in_thread(step, run)
        assert paused.wait(timeout=120)
        theirs = other.load_table(table.name())
        theirs.append(make_rows(700 + len(theirs.snapshots()), 1, "us"))
        fast_manager(other).expire_snapshots(
            table.name(), older_than=dt.timedelta(0), retain_last=1
        )
        resume.set()
        thread.join(timeout=120)
        monkeypatch.undo()
        assert "error" not in outcome, f"{step}: {outcome.get('error')!r}"
        current = catalog.load_table(table.name())
        if step == "health":
            assert outcome["result"].snapshots == 1
            assert outcome["result"].rows == all_rows(current).num_rows == 19
        else:
            assert outcome["result"].committed
            assert current.current_snapshot().snapshot_id == outcome["result"].snapshot_id
            assert len(current.current_snapshot().manifests(current.io)) == 1
            assert all_rows(current).num_rows == 20
    dispose_catalog(other)
    dispose_catalog(catalog)
