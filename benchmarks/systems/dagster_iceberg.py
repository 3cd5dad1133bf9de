"""The community ``dagster-iceberg`` package (0.3.14, ``PyArrowIcebergIOManager``).

It pins ``pyiceberg<0.12``, so this adapter runs in its own virtual environment
(``benchmarks/.venv-dagster-iceberg/``, created by ``benchmarks/run.py``). Assets, runs and data
are exactly those of the floe adapter; only the IO manager differs.
"""

from typing import Any, ClassVar

from benchmarks.systems import _iceberg
from benchmarks.systems._dagster import DagsterSystem, instrument
from benchmarks.systems.base import CATALOG_NAME, NAMESPACE, Context


class DagsterIceberg(DagsterSystem):
    name = "dagster_iceberg"
    distributions: ClassVar[tuple[str, ...]] = (
        "dagster-iceberg",
        "dagster",
        "pyiceberg",
        "pyiceberg-core",
        "pyarrow",
        "sqlalchemy",
    )

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        # The package does not create namespaces ("It does not automatically create the
        # namespace if it does not exist"), so, as its users do, create it once beforehand.
        _iceberg.open_catalog(ctx)

    def instrument_io_manager(self) -> None:
        from dagster._core.storage.db_io_manager import DbIOManager

        instrument(DbIOManager, "handle_output", "load_input")

    def make_resources(self) -> dict[str, Any]:
        from dagster_iceberg.config import IcebergCatalogConfig
        from dagster_iceberg.io_manager.arrow import PyArrowIcebergIOManager

        return {
            "iceberg": PyArrowIcebergIOManager(
                name=CATALOG_NAME,
                config=IcebergCatalogConfig(properties=_iceberg.catalog_properties(self.ctx)),
                namespace=NAMESPACE,
            )
        }
