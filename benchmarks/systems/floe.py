"""floe-dagster-iceberg, used like a user: ``dagster.materialize`` with its IO manager."""

from typing import Any, ClassVar

from benchmarks.systems._dagster import DagsterSystem


class Floe(DagsterSystem):
    name = "floe"
    distributions: ClassVar[tuple[str, ...]] = (
        "floe-dagster-iceberg", "dagster", "pyiceberg", "pyiceberg-core", "pyarrow", "sqlalchemy",
    )

    def make_resources(self) -> dict[str, Any]:
        raise NotImplementedError(
            "waiting for floe_dagster_iceberg.create_iceberg_resources / IcebergIOManager "
            "(floe_dagster_iceberg/io_manager.py and catalog_resource.py)"
        )
