"""A maintenance job switched to Spark by configuration only: the same job, run config
``engine: {type: spark, ...}``, run with real Dagster on the session's Spark session."""

import dagster as dg
import pytest
from infra.catalogs import unique_name

from floe_dagster_iceberg import (
    IcebergCatalogResource,
    SparkEngineConfig,
    SqlCatalogConfig,
    build_iceberg_maintenance_definitions,
    create_iceberg_resources,
)
from floe_dagster_iceberg.jobs import build_iceberg_maintenance_job, maintain_op_name

from .support import append_times, appending_asset, observations, output_metadata

pytestmark = pytest.mark.xdist_group("spark")


def test_maintenance_job_runs_on_spark_by_configuration_only(
    spark_engine: SparkEngineConfig, spark_catalog_properties: dict[str, str], instance
) -> None:
    resource = IcebergCatalogResource(
        catalog=SqlCatalogConfig(
            uri=spark_catalog_properties["uri"], warehouse=spark_catalog_properties["warehouse"]
        )
    )
    orders = appending_asset(unique_name("orders"))
    append_times(resource, [orders], 6)
    manager = resource.get_manager()
    table = f"lake.{orders.key.path[-1]}"
    rows_before = manager.scan(table).sort_by("id").to_pylist()
    job = build_iceberg_maintenance_job(
        "spark_maintenance", assets=[orders], target_file_size_bytes=10**7, retain_last=1
    )
    defs = dg.Definitions(assets=[orders], jobs=[job], resources=create_iceberg_resources(resource))
    node = maintain_op_name("spark_maintenance")
    engine = spark_engine.model_dump(mode="json")
    run_config = {"ops": {node: {"config": {"engine": engine, "expire_older_than_hours": 0}}}}

    result = defs.get_job_def("spark_maintenance").execute_in_process(
        run_config=run_config, instance=instance
    )

    assert result.success
    metadata = output_metadata(result, node)
    assert metadata["compact/files_rewritten"] == 6
    assert metadata["compact/files_added"] == 1
    assert metadata["rewrite_manifests/manifests_after"] == 1
    assert metadata["expire_snapshots/snapshots_expired"] >= 7
    assert metadata["expire_snapshots/files_deleted"] > 6
    assert metadata["remove_orphan_files/orphan_files"] == 0
    by_step = {
        o.metadata["iceberg/maintenance_step"].value: o.metadata for o in observations(result)
    }
    assert by_step["compact"]["iceberg/compact/files_rewritten"].value == 6
    assert by_step["compact"]["iceberg/data_files"].value == 1
    assert by_step["remove_orphan_files"]["iceberg/snapshots"].value == 1
    assert by_step["remove_orphan_files"]["dagster/row_count"].value == len(rows_before) == 18
    loaded = manager.load_table(table)
    assert loaded.current_snapshot().summary["engine-name"] == "spark"
    assert manager.scan(table).sort_by("id").to_pylist() == rows_before

    # The builders take the engine too: it becomes the op's run config default.
    defaults = build_iceberg_maintenance_definitions(assets=[orders], engine=spark_engine)
    nightly = next(j for j in defaults.jobs if j.name == "iceberg_nightly_maintenance")
    fields = nightly.graph.node_named(maintain_op_name(nightly.name)).definition.config_schema
    assert fields.config_type.fields["engine"].default_value == engine
