"""PyIceberg used directly, no Dagster: what a hand-written script against the library does.

A partition write is ``Table.overwrite`` with the day's row filter (partition aligned, so it
drops the day's old files and appends new ones), an upsert is ``Table.upsert(join_cols=["id"])``,
a read is a filtered ``scan().to_arrow()`` and compaction is the usual read-rewrite: read the
whole table and ``overwrite`` it with itself in one commit.
"""

from __future__ import annotations

import pyarrow as pa
from pyiceberg.catalog import Catalog

from benchmarks.systems import _iceberg
from benchmarks.systems.base import System


class PyIcebergDirect(System):
    name = "pyiceberg"
    distributions = ("pyiceberg", "pyiceberg-core", "pyarrow", "sqlalchemy")

    _catalog: Catalog | None = None

    @property
    def catalog(self) -> Catalog:
        if self._catalog is None:
            self._catalog = _iceberg.open_catalog(self.ctx)
        return self._catalog

    def prepare(self) -> None:
        import pyiceberg.io.pyarrow  # noqa: F401  (imported lazily on first use otherwise)

    def _table(self, schema: pa.Schema):
        return _iceberg.load_or_create(self.catalog, self.ctx.identifier, schema)

    def write_partition(self, day: int, table: pa.Table) -> None:
        self._table(table.schema).overwrite(table, overwrite_filter=_iceberg.day_range_filter(day))

    def write_range(self, first_day: int, days: int, table: pa.Table) -> None:
        self._table(table.schema).overwrite(
            table, overwrite_filter=_iceberg.day_range_filter(first_day, days)
        )

    def upsert(self, day: int, table: pa.Table) -> None:
        self.catalog.load_table(self.ctx.identifier).upsert(table, join_cols=["id"])

    def read_partition(self, day: int) -> pa.Table:
        return (
            self.catalog.load_table(self.ctx.identifier)
            .scan(row_filter=_iceberg.day_range_filter(day))
            .to_arrow()
        )

    def read_all(self) -> pa.Table:
        return self.catalog.load_table(self.ctx.identifier).scan().to_arrow()

    def count_rows(self) -> int:
        return _iceberg.count_rows(self.ctx)

    def snapshot_count(self) -> int:
        return _iceberg.snapshot_count(self.ctx)

    def compact(self) -> None:
        table = self.catalog.load_table(self.ctx.identifier)
        table.overwrite(table.scan().to_arrow())

    def data_file_count(self) -> int:
        return _iceberg.live_data_files(self.ctx)

    def build_small_files(self, days: int, batches: int, rows_per_file: int) -> None:
        _iceberg.build_small_files(self.ctx, days, batches, rows_per_file)
