"""The floor: the same Arrow data as plain zstd Parquet files in hive-style day directories.

No catalog, no snapshots, no atomicity: a partition write replaces the day's directory, a read
opens the dataset and filters on the day directory and the timestamp range. This is the least
work any system can do to keep the data, so every ratio against it is an overhead.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from benchmarks import data
from benchmarks.systems.base import System

COLUMNS = data.SCHEMA.names


class RawParquet(System):
    name = "raw_parquet"
    distributions = ("pyarrow",)
    iceberg = False

    @property
    def root(self) -> Path:
        return self.ctx.warehouse / "events"

    def _day_dir(self, day: int) -> Path:
        return self.root / f"day={data.day_key(day)}"

    def _replace_day(self, day: int, table: pa.Table) -> None:
        target = self._day_dir(day)
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        pq.write_table(table, target / f"{uuid.uuid4().hex}.parquet", compression="zstd")

    def _dataset(self) -> ds.Dataset:
        return ds.dataset(self.root, format="parquet", partitioning="hive")

    def write_partition(self, day: int, table: pa.Table) -> None:
        self._replace_day(day, table)

    def write_range(self, first_day: int, days: int, table: pa.Table) -> None:
        start, _ = data.day_bounds(0)
        day_of_row = pc.days_between(pa.scalar(start, pa.timestamp("us")), table["ts"])
        for day in range(first_day, first_day + days):
            self._replace_day(day, table.filter(pc.equal(day_of_row, day)))

    def read_partition(self, day: int) -> pa.Table:
        start, end = data.day_bounds(day)
        row_filter = (
            (ds.field("day") == data.day_key(day))
            & (ds.field("ts") >= pa.scalar(start, pa.timestamp("us")))
            & (ds.field("ts") < pa.scalar(end, pa.timestamp("us")))
        )
        return self._dataset().to_table(columns=COLUMNS, filter=row_filter)

    def read_all(self) -> pa.Table:
        return self._dataset().to_table(columns=COLUMNS)

    def count_rows(self) -> int:
        return self._dataset().count_rows() if self.root.exists() else 0

    def data_file_count(self) -> int:
        return sum(1 for _ in self.root.rglob("*.parquet"))

    def build_small_files(self, days: int, batches: int, rows_per_file: int) -> None:
        for day in range(days):
            whole = data.partition_table(day, batches * rows_per_file)
            self._day_dir(day).mkdir(parents=True, exist_ok=True)
            for b in range(batches):
                pq.write_table(
                    whole.slice(b * rows_per_file, rows_per_file),
                    self._day_dir(day) / f"{uuid.uuid4().hex}.parquet",
                    compression="zstd",
                )

    def compact(self) -> None:
        for day_dir in sorted(self.root.iterdir()):
            old = list(day_dir.glob("*.parquet"))
            if len(old) < 2:
                continue
            merged = pa.concat_tables([pq.ParquetFile(path).read() for path in old])
            pq.write_table(merged, day_dir / f"{uuid.uuid4().hex}.parquet", compression="zstd")
            for path in old:
                path.unlink()
