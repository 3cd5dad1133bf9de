"""Helpers of the maintenance tests: tables with many small files, what they hold and reference,
and maintenance steps paused or run in threads to race each other."""

from __future__ import annotations

import datetime as dt
import os
import threading
from decimal import Decimal

import pyarrow as pa
import pyarrow.parquet as pq
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.transforms import IdentityTransform
from pyiceberg.types import (
    DecimalType,
    DoubleType,
    ListType,
    LongType,
    NestedField,
    StringType,
    TimestamptzType,
)

from floe_dagster_iceberg.engine.config import RetryPolicy
from floe_dagster_iceberg.engine.manager import IcebergTableManager

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


def make_rows(start: int, count: int, region: str, day: int = 0) -> pa.Table:
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


def small_files_table(
    catalog, namespace, name="events", appends=24, rows=3, spec=REGION_SPEC, **create
):
    """A table with ``appends`` tiny data files, alternating between regions eu and us."""
    catalog.create_namespace_if_not_exists(namespace)
    table = catalog.create_table(f"{namespace}.{name}", SCHEMA, partition_spec=spec, **create)
    for n in range(appends):
        table.append(make_rows(n * rows, rows, "eu" if n % 2 else "us", day=n % 3))
    return catalog.load_table(f"{namespace}.{name}")


def all_rows(table) -> pa.Table:
    return table.scan().to_arrow().sort_by("id")


def data_files(table) -> dict[str, int]:
    files = table.inspect.data_files()
    return dict(
        zip(files["file_path"].to_pylist(), files["file_size_in_bytes"].to_pylist(), strict=True)
    )


def on_disk_data(files_on_disk: dict[str, int]) -> dict[str, int]:
    return {path: size for path, size in files_on_disk.items() if path.endswith(".parquet")}


def fast_manager(catalog) -> IcebergTableManager:
    return IcebergTableManager(catalog, retry=FAST_RETRY)


def metadata_paths(table) -> set[str]:
    """Every file the table's metadata references: reachable must stay on disk."""
    paths = {table.metadata_location, *(e.metadata_file for e in table.metadata.metadata_log)}
    for snapshot in table.snapshots():
        paths.add(snapshot.manifest_list)
        for manifest in snapshot.manifests(table.io):
            paths.add(manifest.manifest_path)
            for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=True):
                paths.add(entry.data_file.file_path)
    return paths


def age_everything(files_on_disk: dict[str, int], days: int = 4) -> None:
    """Make every file look ``days`` old, so only references (not the age guard) protect it."""
    then = (dt.datetime.now(dt.UTC) - dt.timedelta(days=days)).timestamp()
    for path in files_on_disk:
        os.utime(path.removeprefix("file://"), (then, then))


def plant_orphan(table) -> str:
    """A data file nothing references (as a killed writer leaves), 4 days old."""
    path = f"{table.location()}/data/orphan-{os.getpid()}.parquet"
    pq.write_table(make_rows(900, 2, "eu"), path.removeprefix("file://"))
    return path


def pause_first_read(monkeypatch, thread_name: str, suffix: str):
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


def in_thread(name: str, target) -> tuple[threading.Thread, dict]:
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["result"] = target()
        except BaseException as error:  # reported by the test, not lost in the thread
            outcome["error"] = error

    thread = threading.Thread(target=run, name=name)
    thread.start()
    return thread, outcome
