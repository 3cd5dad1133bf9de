"""Manifest rewrite: many small manifests clustered into few, rows and time travel unchanged."""

from __future__ import annotations

from infra.catalogs import dispose_catalog, load_test_catalog
from pyiceberg.expressions import EqualTo

from engine.maintenance.support import (
    all_rows,
    fast_manager,
    small_files_table,
)


def test_rewrite_manifests_clusters_many_manifests(sqlite_catalog_properties, namespace):
    catalog = load_test_catalog(sqlite_catalog_properties)
    table = small_files_table(catalog, namespace, appends=20)
    rows = all_rows(table)
    previous = table.current_snapshot().snapshot_id
    manager = fast_manager(catalog)
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
    assert all_rows(table).equals(rows)
    assert table.scan(row_filter=EqualTo("region", "eu")).to_arrow().num_rows == 30
    assert table.scan(snapshot_id=previous).to_arrow().sort_by("id").equals(rows)
    # Nothing left to do: a second call commits nothing.
    assert not manager.rewrite_manifests(table.name()).committed
    dispose_catalog(catalog)
