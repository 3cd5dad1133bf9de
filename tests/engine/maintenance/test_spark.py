"""The Spark engine against the local one: twin tables (same appends), one maintained here, the
other by Spark's procedures; both end with the same rows and report the same result fields.

The twins are shared by the module (each step runs once per engine) and every test compares
them at its own step, so the tests also pass alone. All Spark tests run in one worker
(``xdist_group``) on the session's one Spark session.
"""

from __future__ import annotations

import datetime as dt
import os

import pytest
from infra.catalogs import dispose_catalog, load_test_catalog, unique_name
from infra.deletes import data_file_paths, write_position_deletes
from pyiceberg.schema import Schema

from engine.maintenance.support import (
    REGION_SPEC,
    SCHEMA,
    age_everything,
    data_files,
    fast_manager,
    make_rows,
    on_disk_data,
    plant_orphan,
    small_files_table,
)
from floe_dagster_iceberg.engine.maintenance.files import normalize
from floe_dagster_iceberg.engine.maintenance.spark import SPARK_MIN_ORPHAN_AGE
from floe_dagster_iceberg.errors import InvalidInputError

pytestmark = pytest.mark.xdist_group("spark")

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def twins(spark_engine, spark_catalog_properties):
    """``(manager, local_table_name, spark_table_name)``: twin tables of 12 tiny files each."""
    catalog = load_test_catalog(spark_catalog_properties)
    namespace = unique_name("spark")
    names = []
    for twin in ("local", "spark"):
        table = small_files_table(catalog, namespace, name=twin, appends=12)
        names.append(".".join(table.name()))
    try:
        yield fast_manager(catalog), *names
    finally:
        dispose_catalog(catalog)


def rows(manager, table: str) -> list[dict]:
    """Every row, by id (Spark's files read back as ``string`` where ours are ``large_string``)."""
    return sorted(manager.scan(table).to_pylist(), key=lambda row: row["id"])


def live_and_on_disk(table, warehouse_files) -> tuple[dict[str, int], dict[str, int]]:
    """The live data files and the data files on disk, one spelling per path (Spark's Hadoop
    file system writes ``file:/x`` where ours write ``file:///x``)."""
    live = {normalize(path): size for path, size in data_files(table).items()}
    disk = {normalize(path): size for path, size in on_disk_data(warehouse_files(table)).items()}
    return live, disk


def test_compaction_on_spark_gives_the_local_result(twins, spark_engine, warehouse_files):
    manager, local, spark = twins
    before = rows(manager, local)
    assert rows(manager, spark) == before

    by_local = manager.compact(local, target_file_size_bytes=MIB)
    by_spark = manager.compact(spark, target_file_size_bytes=MIB, engine=spark_engine)

    def fields(result):
        return [
            (p.partition, p.spec_id, p.files_rewritten, p.bytes_rewritten, p.files_added, p.rows)
            for p in result.partitions
        ]

    assert fields(by_spark) == fields(by_local)
    assert [p.partition for p in by_spark.partitions] == ["region=eu", "region=us"]
    assert (by_spark.files_rewritten, by_spark.files_added, by_spark.rows_rewritten) == (12, 2, 36)
    assert (by_spark.committed, by_spark.commit_attempts, by_spark.skipped) == (True, 1, ())
    assert by_spark.target_file_size_bytes == by_local.target_file_size_bytes == MIB
    assert by_spark.position_deletes_applied == by_local.position_deletes_applied == 0
    table = manager.load_table(spark)
    assert by_spark.snapshot_id == table.current_snapshot().snapshot_id
    assert table.current_snapshot().summary["engine-name"] == "spark"
    assert table.current_snapshot().summary.operation.value == "replace"
    assert by_spark.bytes_added == sum(data_files(table).values())
    live, disk = live_and_on_disk(table, warehouse_files)
    assert live.items() <= disk.items()
    assert rows(manager, spark) == rows(manager, local) == before

    again = manager.compact(spark, target_file_size_bytes=MIB, engine=spark_engine)
    assert (again.committed, again.partitions) == (False, ())


def flat_small_files_table(catalog, namespace: str, name: str):
    """12 tiny files as ``small_files_table`` makes them, without the list column: Iceberg
    1.10's Spark cannot read the position deletes of a table with one (its
    ``rewrite_position_delete_files`` fails; the engine then logs it and goes on)."""
    schema = Schema(*(field for field in SCHEMA.fields if field.name != "tags"))
    table = catalog.create_table(f"{namespace}.{name}", schema, partition_spec=REGION_SPEC)
    for n in range(12):
        rows = make_rows(n * 3, 3, "eu" if n % 2 else "us", day=n % 3)
        table.append(rows.drop_columns(["tags"]))
    return catalog.load_table(f"{namespace}.{name}")


def test_compaction_on_spark_applies_position_deletes_as_local_does(twins, spark_engine):
    manager, local, spark = twins
    catalog = manager.catalog
    names = {}
    for table in (local, spark):  # twins of their own, deletes in 2 files of region eu
        twin = flat_small_files_table(catalog, table.split(".")[0], f"{table.split('.')[1]}_del")
        first, second = data_file_paths(twin, "eu")[:2]
        write_position_deletes(catalog, twin, {first: [0], second: [1, 2]})
        names[table] = ".".join(twin.name())
    local, spark = names[local], names[spark]
    before = rows(manager, local)
    assert rows(manager, spark) == before
    assert len(before) == 33  # 36 written, 3 deleted

    by_local = manager.compact(local, target_file_size_bytes=MIB)
    by_spark = manager.compact(spark, target_file_size_bytes=MIB, engine=spark_engine)

    def fields(result):
        return [
            (p.partition, p.files_rewritten, p.rows, p.position_deletes_applied,
             p.delete_files_removed)
            for p in result.partitions
        ]  # fmt: skip

    assert fields(by_spark) == fields(by_local)
    assert (by_spark.position_deletes_applied, by_spark.delete_files_removed) == (3, 1)
    assert manager.table_health(spark).delete_files == manager.table_health(local).delete_files == 0
    assert rows(manager, spark) == rows(manager, local) == before


def test_manifest_rewrite_on_spark_gives_the_local_result(twins, spark_engine):
    manager, local, spark = twins
    for table in (local, spark):  # one more append: one more manifest
        manager.write(table, make_rows(1000, 2, "eu"))
    before = rows(manager, local)

    by_local = manager.rewrite_manifests(local)
    by_spark = manager.rewrite_manifests(spark, engine=spark_engine)

    def fields(result):
        return (
            result.committed,
            result.manifests_after,
            result.manifests_created,
            result.commit_attempts,
        )

    assert fields(by_spark) == fields(by_local) == (True, 1, 1, 1)
    assert by_spark.manifests_before == by_spark.manifests_replaced >= 2
    assert by_spark.entries_rewritten == len(data_files(manager.load_table(spark)))
    assert by_spark.snapshot_id == manager.load_table(spark).current_snapshot().snapshot_id
    assert rows(manager, spark) == rows(manager, local) == before


def test_snapshot_expiry_on_spark_gives_the_local_result(twins, spark_engine, warehouse_files):
    manager, local, spark = twins
    for table in (local, spark):  # a replaced file: expiry has data files to delete
        manager.write(table, make_rows(2000, 1, "eu"))
        manager.compact(table, target_file_size_bytes=MIB)
    before = rows(manager, local)
    history = {t: len(manager.snapshots(t)) for t in (local, spark)}

    by_local = manager.expire_snapshots(local, older_than=dt.timedelta(0), retain_last=1)
    by_spark = manager.expire_snapshots(
        spark, older_than=dt.timedelta(0), retain_last=1, engine=spark_engine
    )

    assert by_spark.snapshots_kept == by_local.snapshots_kept == 1
    assert by_spark.snapshots_expired == history[spark] - 1
    assert by_local.snapshots_expired == history[local] - 1
    assert manager.snapshots(spark)[0].snapshot_id not in by_spark.expired_snapshot_ids
    assert by_spark.data_files_deleted == by_local.data_files_deleted > 0
    assert by_spark.manifest_lists_deleted == by_spark.snapshots_expired
    assert by_spark.manifests_deleted > 0
    assert by_spark.retain_last == by_local.retain_last == 1
    assert by_spark.bytes_freed > 0
    table = manager.load_table(spark)
    live, disk = live_and_on_disk(table, warehouse_files)
    assert disk == live
    assert rows(manager, spark) == rows(manager, local) == before


def test_orphan_removal_on_spark_gives_the_local_result(twins, spark_engine, warehouse_files):
    manager, local, spark = twins
    planted = {}
    for table in (local, spark):
        loaded = manager.load_table(table)
        age_everything(warehouse_files(loaded))  # Spark refuses a guard under 24 h
        planted[table] = plant_orphan(loaded)
        then = (dt.datetime.now(dt.UTC) - dt.timedelta(days=4)).timestamp()
        os.utime(planted[table].removeprefix("file://"), (then, then))
    before = rows(manager, local)

    dry = manager.remove_orphan_files(spark, dry_run=True, engine=spark_engine)
    assert (dry.orphan_files, dry.files_deleted) == ((planted[spark],), 0)
    by_local = manager.remove_orphan_files(local)
    by_spark = manager.remove_orphan_files(spark, engine=spark_engine)

    def fields(result):
        return (
            [os.path.basename(path) for path in result.orphan_files],
            result.orphan_bytes,
            result.files_deleted,
            result.bytes_freed,
            result.failed_deletes,
        )

    assert fields(by_spark) == fields(by_local)
    assert by_spark.orphan_files == (planted[spark],)
    assert by_spark.bytes_freed == dry.orphan_bytes > 0
    assert not os.path.exists(planted[spark].removeprefix("file://"))
    assert rows(manager, spark) == rows(manager, local) == before

    with pytest.raises(InvalidInputError, match="24 hours"):
        manager.remove_orphan_files(spark, older_than=SPARK_MIN_ORPHAN_AGE / 2, engine=spark_engine)
