"""A Dagster code location for the reliability tests' backfill: 16 partitions, one Iceberg table.

The table is ``reliability.events``; its SQL catalog comes from the environment at run time
(``FLOE_TEST_CATALOG_URI``, ``FLOE_TEST_WAREHOUSE``), so every test points the same definitions
at its own catalog. ``FLOE_TEST_BARRIER_DIR`` (optional) names a directory where each
partition's step announces itself and waits until all 16 have arrived, so the writes overlap.

Runs use the multiprocess executor: each step (the partition write) runs in its own process,
as in a deployment where the run launcher starts one run per partition of a backfill.
"""

import os
import time
from pathlib import Path

import pyarrow as pa
from dagster import (
    AssetExecutionContext,
    Definitions,
    EnvVar,
    StaticPartitionsDefinition,
    asset,
    define_asset_job,
    multiprocess_executor,
)

from floe_dagster_iceberg import IcebergCatalogResource, SqlCatalogConfig, create_iceberg_resources

PARTITION_KEYS = [f"p{i:02d}" for i in range(16)]
ROWS_PER_PARTITION = 250
PARTITIONS = StaticPartitionsDefinition(PARTITION_KEYS)


def _wait_for_all_partitions(part: str, timeout: float = 180.0) -> None:
    directory = os.environ.get("FLOE_TEST_BARRIER_DIR")
    if not directory:
        return
    barrier = Path(directory)
    (barrier / part).touch()
    deadline = time.monotonic() + timeout
    while len(list(barrier.iterdir())) < len(PARTITION_KEYS):
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(list(barrier.iterdir()))} partitions arrived")
        time.sleep(0.05)


@asset(
    partitions_def=PARTITIONS,
    io_manager_key="iceberg",
    metadata={
        "namespace": "reliability",
        "partition_expr": "part",
    },
)
def events(context: AssetExecutionContext) -> pa.Table:
    part = context.partition_key
    _wait_for_all_partitions(part)
    return pa.table(
        {
            "part": pa.array([part] * ROWS_PER_PARTITION, pa.string()),
            "id": pa.array(range(ROWS_PER_PARTITION), pa.int64()),
            "writer": pa.array([context.run_id] * ROWS_PER_PARTITION, pa.string()),
            "pid": pa.array([os.getpid()] * ROWS_PER_PARTITION, pa.int64()),
        }
    )


backfill_job = define_asset_job("events_backfill", selection=[events], partitions_def=PARTITIONS)

defs = Definitions(
    assets=[events],
    jobs=[backfill_job],
    resources=create_iceberg_resources(
        IcebergCatalogResource(
            catalog=SqlCatalogConfig(
                uri=EnvVar("FLOE_TEST_CATALOG_URI"), warehouse=EnvVar("FLOE_TEST_WAREHOUSE")
            ),
            max_commit_attempts=30,
        )
    ),
    executor=multiprocess_executor,
)


def events_backfill_job():
    """The resolved job, for ``dagster.reconstructable``."""
    return defs.resolve_job_def("events_backfill")
