"""A maintenance job run end to end: every step on every listed table."""

import datetime as dt
import os

import dagster as dg

from floe_dagster_iceberg.engine.config import WriteConfig
from floe_dagster_iceberg.jobs import build_iceberg_maintenance_job, maintain_op_name
from floe_dagster_iceberg.metadata import readable_size

from .support import (
    append_times,
    appending_asset,
    data_files_on_disk,
    not_iceberg,
    output_metadata,
)


def test_job_maintains_listed_assets_with_observations_and_run_metadata(
    resources, catalog_resource, instance
):
    orders, customers = appending_asset("orders"), appending_asset("customers")
    append_times(catalog_resource, [orders, customers], 6)
    manager = catalog_resource.get_manager()
    rows_before = {t: manager.scan(t).sort_by("id") for t in ("lake.orders", "lake.customers")}
    assert len(data_files_on_disk(manager.load_table("lake.orders"))) == 6
    job = build_iceberg_maintenance_job(
        "lake_maintenance",
        assets=[orders, customers],
        target_file_size_bytes=10**7,
        expire_older_than_hours=dt.timedelta(0),
        retain_last=1,
        orphan_older_than_hours=0,
    )
    defs = dg.Definitions(assets=[orders, customers, not_iceberg], jobs=[job], resources=resources)

    result = defs.get_job_def("lake_maintenance").execute_in_process(instance=instance)

    assert result.success
    node = maintain_op_name("lake_maintenance")
    observations = result.asset_observations_for_node(node)
    keys = {o.asset_key for o in observations}
    assert keys == {dg.AssetKey(["lake", "orders"]), dg.AssetKey(["lake", "customers"])}
    assert len(observations) == 10  # 5 steps x 2 tables
    last = {o.asset_key: o.metadata for o in observations}
    orders_health = last[dg.AssetKey(["lake", "orders"])]
    assert orders_health["iceberg/data_files"].value == 1
    assert orders_health["iceberg/snapshots"].value == 1
    assert orders_health["dagster/row_count"].value == manager.count("lake.orders") == 18
    assert orders_health["dagster/storage_kind"].value == "iceberg"
    total_bytes = orders_health["iceberg/total_bytes"].value
    assert total_bytes == sum(
        os.path.getsize(f) for f in data_files_on_disk(manager.load_table("lake.orders"))
    )
    assert orders_health["iceberg/total_size"].value == readable_size(total_bytes)
    compaction = next(
        o.metadata
        for o in observations
        if o.metadata["iceberg/maintenance_step"].value == "compact"
    )
    assert compaction["iceberg/compact/files_rewritten"].value == 6
    metadata = output_metadata(result, node)
    assert metadata["tables"] == ["lake.customers", "lake.orders"]
    assert metadata["compact/files_rewritten"] == 12
    assert (
        metadata["expire_snapshots/snapshots_expired"] == 14
    )  # 6 appends + compaction + rewrite, 1 kept
    assert metadata["expire_snapshots/files_deleted"] > 12
    assert "lake.orders" in metadata["compact/summary"]
    freed = metadata["expire_snapshots/bytes_freed"]
    assert metadata["expire_snapshots/size_freed"] == readable_size(freed)
    orders_expiry = next(
        o.metadata
        for o in observations
        if o.asset_key == dg.AssetKey(["lake", "orders"])
        and o.metadata["iceberg/maintenance_step"].value == "expire_snapshots"
    )
    orders_freed = orders_expiry["iceberg/expire_snapshots/bytes_freed"].value
    assert orders_expiry["iceberg/expire_snapshots/size_freed"].value == readable_size(orders_freed)
    assert f"({readable_size(orders_freed)}) deleted" in metadata["expire_snapshots/summary"]
    assert metadata["failed_tables"] == []
    for table, rows in rows_before.items():
        loaded = manager.load_table(table)
        assert len(data_files_on_disk(loaded)) == 1
        assert manager.scan(table).sort_by("id").equals(rows)


def test_expiry_removes_stale_audit_branches_then_their_snapshots(
    resources, catalog_resource, instance
):
    orders = appending_asset("orders")
    append_times(catalog_resource, [orders], 2)
    manager = catalog_resource.get_manager()
    rows = manager.scan("lake.orders").slice(0, 1)
    failed_audit = manager.write("lake.orders", rows, WriteConfig(mode="append", branch="audit-r1"))
    manager.write("lake.orders", rows, WriteConfig(mode="append", branch="feature"))
    job = build_iceberg_maintenance_job(
        "expiry",
        assets=[orders],
        steps=["expire_snapshots"],
        expire_older_than_hours=0,
        retain_last=1,
        audit_branch_max_age_hours=0,
    )
    defs = dg.Definitions(assets=[orders], jobs=[job], resources=resources)

    result = defs.get_job_def("expiry").execute_in_process(instance=instance)

    assert result.success
    table = manager.load_table("lake.orders")
    assert set(table.refs()) == {"main", "feature"}
    assert table.snapshot_by_id(failed_audit.snapshot_id) is None
    metadata = output_metadata(result, maintain_op_name("expiry"))
    assert "1 stale audit branch(es) removed" in metadata["expire_snapshots/summary"]
