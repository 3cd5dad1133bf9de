"""The step registry: every step named once, with the options it reads, and what steps report."""

import dagster as dg
import pyarrow as pa
import pytest
from infra.deletes import data_file_paths, write_equality_deletes, write_position_deletes

from floe_dagster_iceberg.engine.config import WriteConfig
from floe_dagster_iceberg.jobs import (
    COMPACTION_STEPS,
    DEFAULT_MAINTENANCE_STEPS,
    NIGHTLY_STEPS,
    STEPS,
    MaintenanceOptions,
    MaintenanceStep,
    build_iceberg_maintenance_job,
    maintain_op_name,
)
from floe_dagster_iceberg.metadata import readable_size

from .support import append_times, appending_asset, observations, output_metadata


def test_unknown_steps_are_refused():
    with pytest.raises(ValueError, match="unknown maintenance step"):
        build_iceberg_maintenance_job("bad", steps=["vacuum"])
    with pytest.raises(ValueError, match="steps is empty"):
        build_iceberg_maintenance_job("bad", steps=[])


def test_the_registry_covers_every_step_and_option():
    assert tuple(STEPS) == MaintenanceStep.__args__
    assert set(DEFAULT_MAINTENANCE_STEPS + NIGHTLY_STEPS + COMPACTION_STEPS) <= set(STEPS)
    read = [option for step in STEPS.values() for option in step.options]
    assert set(read) == set(MaintenanceOptions.model_fields)  # every option is read
    assert [o for o in read if read.count(o) > 1] == ["engine"] * read.count("engine")
    assert STEPS["table_health"].describe(None) == "observed"


def test_dangling_deletes_are_removed_and_deletes_are_reported_in_observations(
    resources, catalog_resource, instance
):
    """A table Spark deleted rows from by position, then overwrote: the step removes the delete
    files left applying to nothing; the health observed counts rows net of the others."""
    orders = appending_asset("orders")
    append_times(catalog_resource, [orders], 2)
    manager = catalog_resource.get_manager()
    catalog = manager.catalog
    table = manager.load_table("lake.orders")
    gone = write_position_deletes(catalog, table, {data_file_paths(table)[0]: [0]})
    replacement = pa.table({"id": pa.array([100, 101, 102], pa.int64()), "name": ["orders"] * 3})
    manager.write("lake.orders", replacement, WriteConfig(mode="overwrite"))
    table = manager.load_table("lake.orders")
    (live,) = data_file_paths(table)
    applying = write_position_deletes(catalog, table, {live: [1]})
    job = build_iceberg_maintenance_job(
        "deletes", assets=[orders], steps=["remove_dangling_deletes", "table_health"]
    )
    defs = dg.Definitions(assets=[orders], jobs=[job], resources=resources)

    result = defs.get_job_def("deletes").execute_in_process(instance=instance)

    assert result.success
    removal, health = (o.metadata for o in observations(result))
    assert removal["iceberg/maintenance_step"].value == "remove_dangling_deletes"
    assert removal["iceberg/remove_dangling_deletes/delete_files_removed"].value == 1
    assert removal["iceberg/remove_dangling_deletes/size_removed"].value == readable_size(
        gone.file_size_in_bytes
    )
    assert health["iceberg/position_delete_files"].value == 1
    assert health["iceberg/dangling_delete_files"].value == 0
    assert health["iceberg/position_deletes"].value == 1
    assert health["iceberg/delete_file_size"].value == readable_size(applying.file_size_in_bytes)
    assert health["iceberg/rows_exact"].value == "true"
    assert health["dagster/row_count"].value == health["iceberg/rows"].value == 2
    assert manager.count("lake.orders") == 2
    metadata = output_metadata(result, maintain_op_name("deletes"))
    assert metadata["remove_dangling_deletes/delete_files_removed"] == 1
    assert "1 of 2 delete files dangled" in metadata["remove_dangling_deletes/summary"]

    # With equality deletes the rows are an upper bound: no dagster/row_count then.
    keys = pa.table({"id": pa.array([100], pa.int64())})
    write_equality_deletes(catalog, manager.load_table("lake.orders"), keys, like=live)
    again = defs.get_job_def("deletes").execute_in_process(instance=instance)
    removal, health = (o.metadata for o in observations(again))
    assert removal["iceberg/remove_dangling_deletes/delete_files_removed"].value == 0
    assert "dagster/row_count" not in health
    assert health["iceberg/rows_exact"].value == "false"
    assert health["iceberg/equality_delete_files"].value == 1
    assert health["iceberg/rows"].value == 2
