"""The code location: lakehouse assets, the Iceberg resources, maintenance and health checks.

``dagster dev -w workspace.yaml`` (repository root) and ``dg dev`` / ``dg check defs`` (this
project's folder) load ``defs`` from here:

- ``example_project.assets``: the lakehouse assets;
- ``example_project.resources``: the ``iceberg`` IO manager and ``iceberg_catalog`` resource,
  on the catalog that ``FLOE_CATALOG_*`` / ``FLOE_S3_*`` environment variables describe
  (the embedded SQLite catalog when none is set);
- ``example_project.maintenance``: a full maintenance job, its weekly schedule and the storage
  health checks of every table;
- ``defs/maintenance/defs.yaml``: the nightly maintenance and compaction-after-backfill
  sensor, declared with the ``IcebergMaintenanceComponent``.
"""

from pathlib import Path

import dagster as dg

from example_project import maintenance
from example_project.assets import all_assets, audit_checks, daily_events_job
from example_project.resources import catalog_from_env
from floe_dagster_iceberg import create_iceberg_resources, validate_iceberg_definitions


def build_definitions() -> dg.Definitions:
    """Assets with their resources, merged with the maintenance definitions and components."""
    lakehouse = dg.Definitions(
        assets=all_assets,
        asset_checks=audit_checks,
        jobs=[daily_events_job],
        resources=create_iceberg_resources(catalog_from_env()),
        # A run handles one partition or one range of a few small tables: its steps run in the
        # run's own process. Use dg.multiprocess_executor for runs of many heavy steps.
        executor=dg.in_process_executor,
    )
    components = dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
    # Checks every Iceberg asset's metadata when the code location loads, and labels it for the UI.
    return validate_iceberg_definitions(
        dg.Definitions.merge(lakehouse, maintenance.maintenance_defs, components)
    )


defs = build_definitions()
