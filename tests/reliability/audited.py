"""One audited partition run, in a worker process of :mod:`reliability.processes`.

The blocking check of ``daily_orders`` waits on the workers' shared barrier, so every run has
staged its write on its audit branch before any of them publishes.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import dagster as dg
import pyarrow as pa

from floe_dagster_iceberg import IcebergCatalogResource, create_iceberg_resources
from floe_dagster_iceberg.catalog_config import EmbeddedCatalogConfig

DAYS = dg.StaticPartitionsDefinition(["2024-01-01", "2024-01-02"])
_STAGED: list[Callable[[], Any]] = []


@dg.asset(
    io_manager_key="iceberg",
    partitions_def=DAYS,
    metadata={"write_audit_publish": True, "partition_expr": "day"},
)
def daily_orders(context) -> pa.Table:
    day = context.partition_key
    return pa.table({"day": [day, day], "id": [1, 2]})


@dg.asset_check(asset=daily_orders, blocking=True)
def daily_orders_staged(daily_orders: pa.Table) -> dg.AssetCheckResult:
    _STAGED[0]()  # every run has staged its write
    return dg.AssetCheckResult(passed=daily_orders.num_rows == 2)


def run_audited_partition(home: str, day: str, *, start: Callable[[], Any]) -> bool:
    _STAGED[:] = [start]
    catalog = IcebergCatalogResource(catalog=EmbeddedCatalogConfig(home=home))
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [daily_orders, daily_orders_staged],
            resources=create_iceberg_resources(catalog),
            instance=instance,
            partition_key=day,
        )
    return result.success


@dg.asset(io_manager_key="iceberg", metadata={"write_audit_publish": True})
def ledger() -> pa.Table:
    return pa.table({"id": [1, 2, 3]})


@dg.asset_check(asset=ledger, blocking=True)
def ledger_is_reconciled() -> dg.AssetCheckResult:
    """A check that does not load the asset (it would query another system)."""
    return dg.AssetCheckResult(passed=True)


def ledger_job() -> dg.JobDefinition:
    """``ledger`` and its check in separate step processes (the multiprocess executor)."""
    home = os.environ["FLOE_TEST_ICEBERG_HOME"]
    catalog = IcebergCatalogResource(catalog=EmbeddedCatalogConfig(home=home))
    defs = dg.Definitions(
        assets=[ledger],
        asset_checks=[ledger_is_reconciled],
        jobs=[dg.define_asset_job("ledger_job", selection=[ledger])],
        resources=create_iceberg_resources(catalog),
        executor=dg.multiprocess_executor,
    )
    return defs.resolve_job_def("ledger_job")
