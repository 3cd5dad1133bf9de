"""floe-dagster-iceberg, used like a user: ``dagster.materialize`` with its IO manager.

Resources come from ``create_iceberg_resources`` with an SQL catalog (SQLite, or PostgreSQL for
the concurrent writers). Compaction and the full-table reads of workload 6 go through the
table manager the catalog resource hands out, which is what the maintenance jobs call.
"""

from typing import Any, ClassVar

import pyarrow as pa

from benchmarks.systems._dagster import DagsterSystem, instrument
from benchmarks.systems.base import CATALOG_NAME, NAMESPACE


class Floe(DagsterSystem):
    name = "floe"
    distributions: ClassVar[tuple[str, ...]] = (
        "floe-dagster-iceberg",
        "dagster",
        "pyiceberg",
        "pyiceberg-core",
        "pyarrow",
        "sqlalchemy",
    )

    def catalog_resource(self) -> Any:
        from floe_dagster_iceberg import IcebergCatalogResource, SqlCatalogConfig

        return IcebergCatalogResource(
            name=CATALOG_NAME,
            catalog=SqlCatalogConfig(
                uri=self.ctx.catalog_uri, warehouse=self.ctx.warehouse.as_uri()
            ),
        )

    def instrument_io_manager(self) -> None:
        from floe_dagster_iceberg import IcebergIOManager

        instrument(IcebergIOManager, "handle_output", "load_input")

    def make_resources(self) -> dict[str, Any]:
        from floe_dagster_iceberg import create_iceberg_resources

        return create_iceberg_resources(self.catalog_resource(), namespace=NAMESPACE)

    def _manager(self) -> Any:
        return self.resources["iceberg_catalog"].get_manager()

    def compact(self) -> None:
        self._manager().compact(self.ctx.identifier)

    def read_all(self) -> pa.Table:
        return self._manager().scan(self.ctx.identifier)
