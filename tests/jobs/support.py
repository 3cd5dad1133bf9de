"""Helpers of the maintenance-job tests: small appending assets and what a run reports."""

import itertools
import os

import dagster as dg
import pyarrow as pa

from floe_dagster_iceberg.engine.config import WriteConfig
from floe_dagster_iceberg.jobs import iceberg_asset_tables

_ids = itertools.count()


def appending_asset(name: str, prefix: str = "lake"):
    @dg.asset(
        name=name, key_prefix=[prefix], io_manager_key="iceberg", metadata={"write_mode": "append"}
    )
    def appended() -> pa.Table:
        start = next(_ids) * 3
        return pa.table({"id": pa.array(range(start, start + 3), pa.int64()), "name": [name] * 3})

    return appended


@dg.asset(key_prefix=["lake"])
def not_iceberg() -> int:
    return 1


def materialize_times(assets, times: int, resources, instance) -> None:
    for _ in range(times):
        assert dg.materialize(assets, resources=resources, instance=instance).success


def append_times(catalog_resource, assets, times: int) -> None:
    """Fill the assets' tables with ``times`` small appends straight through the engine."""
    manager = catalog_resource.get_manager()
    for table in iceberg_asset_tables(assets).values():
        for _ in range(times):
            start = next(_ids) * 3
            rows = pa.table(
                {"id": pa.array(range(start, start + 3), pa.int64()), "name": [table] * 3}
            )
            manager.write(table, rows, WriteConfig(mode="append"))


def data_files_on_disk(table) -> list[str]:
    root = table.location().removeprefix("file://")
    return [
        os.path.join(directory, name)
        for directory, _, names in os.walk(root)
        for name in names
        if name.endswith(".parquet")
    ]


def observations(result: dg.ExecuteInProcessResult) -> list[dg.AssetObservation]:
    return [
        event.asset_observation_data.asset_observation
        for event in result.all_events
        if event.event_type_value == "ASSET_OBSERVATION"
    ]


def output_metadata(result: dg.ExecuteInProcessResult, node: str) -> dict:
    for event in result.all_node_events:
        if event.event_type_value == "STEP_OUTPUT" and event.node_name == node:
            return {k: v.value for k, v in event.step_output_data.metadata.items()}
    raise AssertionError(f"no output of {node}")
