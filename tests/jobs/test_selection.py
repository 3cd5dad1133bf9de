"""Which tables a maintenance job maintains: listed, by namespace, by asset, or everything."""

import os
import subprocess
import sys

import dagster as dg
import pyarrow as pa

from floe_dagster_iceberg import EmbeddedCatalogConfig, IcebergCatalogResource
from floe_dagster_iceberg.engine.config import WriteConfig
from floe_dagster_iceberg.jobs import (
    build_iceberg_maintenance_job,
    iceberg_asset_tables,
    maintain_op_name,
)

from .support import append_times, appending_asset, not_iceberg

_CODE_LOCATION = """
import dagster as dg
import pyarrow as pa
from floe_dagster_iceberg import create_iceberg_resources
from floe_dagster_iceberg.jobs import build_iceberg_maintenance_job

@dg.asset(key_prefix=["lake"], io_manager_key="iceberg", metadata={"write_mode": "append"})
def orders() -> pa.Table:
    return pa.table({"id": [1]})

@dg.asset(key_prefix=["sales"], io_manager_key="iceberg", metadata={"namespace": "raw"})
def customers() -> pa.Table:
    return pa.table({"id": [1]})

@dg.asset(key_prefix=["lake"])
def not_iceberg() -> int:
    return 1

defs = dg.Definitions(
    assets=[orders, customers, not_iceberg],
    jobs=[build_iceberg_maintenance_job("maintain_everything", steps=["compact", "table_health"],
                                        target_file_size_bytes=10**7)],
    resources=create_iceberg_resources(),
)
"""


def test_job_launched_from_the_code_location_maintains_every_iceberg_asset(tmp_path):
    home, dagster_home = tmp_path / "lake", tmp_path / "dagster_home"
    dagster_home.mkdir()
    resource = IcebergCatalogResource(catalog=EmbeddedCatalogConfig(home=str(home)))
    manager = resource.get_manager()
    for _ in range(4):
        manager.write(
            "lake.orders",
            pa.table({"id": pa.array([1, 2], pa.int64())}),
            WriteConfig(mode="append"),
        )
        manager.write(
            "raw.customers",
            pa.table({"id": pa.array([1, 2], pa.int64())}),
            WriteConfig(mode="append"),
        )
    manager.write(
        "lake.unrelated", pa.table({"id": pa.array([1], pa.int64())}), WriteConfig(mode="append")
    )
    manager.write(
        "lake.unrelated", pa.table({"id": pa.array([2], pa.int64())}), WriteConfig(mode="append")
    )
    (tmp_path / "location.py").write_text(_CODE_LOCATION)
    env = {**os.environ, "FLOE_ICEBERG_HOME": str(home), "DAGSTER_HOME": str(dagster_home)}

    process = subprocess.run(
        [
            sys.executable,
            "-m",
            "dagster",
            "job",
            "execute",
            "-f",
            str(tmp_path / "location.py"),
            "-a",
            "defs",
            "-j",
            "maintain_everything",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )

    assert process.returncode == 0, process.stdout[-3000:] + process.stderr[-3000:]
    assert "Maintaining 2 Iceberg table(s)" in process.stdout + process.stderr
    assert len(manager.load_table("lake.orders").inspect.data_files()) == 1
    assert len(manager.load_table("raw.customers").inspect.data_files()) == 1
    assert len(manager.load_table("lake.unrelated").inspect.data_files()) == 2  # not an asset


def test_everything_needs_a_code_location(resources, instance):
    job = build_iceberg_maintenance_job("everything", steps=["table_health"])
    result = job.execute_in_process(resources=resources, instance=instance, raise_on_error=False)
    assert not result.success
    failure = result.failure_data_for_node(maintain_op_name("everything")).user_failure_data
    assert "tables=, namespaces= or assets=" in failure.description


def test_namespace_selection_and_run_config_override(resources, catalog_resource, instance):
    first, second = appending_asset("first", "ns_a"), appending_asset("second", "ns_b")
    append_times(catalog_resource, [first, second], 3)
    job = build_iceberg_maintenance_job(
        "by_namespace", namespaces=["ns_a"], steps=["compact"], target_file_size_bytes=10**7
    )
    manager = catalog_resource.get_manager()

    assert job.execute_in_process(resources=resources, instance=instance).success
    assert len(manager.load_table("ns_a.first").inspect.data_files()) == 1
    assert len(manager.load_table("ns_b.second").inspect.data_files()) == 3

    override = {
        "ops": {
            maintain_op_name("by_namespace"): {
                "config": {"tables": ["ns_b.second"], "min_input_files": 4}
            }
        }
    }
    assert job.execute_in_process(
        run_config=override, resources=resources, instance=instance
    ).success
    assert len(manager.load_table("ns_b.second").inspect.data_files()) == 3  # 3 < min_input_files
    override["ops"][maintain_op_name("by_namespace")]["config"]["min_input_files"] = 2
    assert job.execute_in_process(
        run_config=override, resources=resources, instance=instance
    ).success
    assert len(manager.load_table("ns_b.second").inspect.data_files()) == 1


def test_iceberg_asset_tables_follows_the_io_manager_mapping():
    @dg.asset(key_prefix=["sales"], io_manager_key="iceberg", metadata={"namespace": "raw"})
    def orders(): ...

    @dg.asset(io_manager_key="iceberg")
    def plain(): ...

    assert iceberg_asset_tables([orders, plain, not_iceberg]) == {
        dg.AssetKey(["sales", "orders"]): "raw.orders",
        dg.AssetKey(["plain"]): "public.plain",
    }
