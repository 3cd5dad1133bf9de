"""The code location: lakehouse assets, the Iceberg resources, maintenance and health checks.

``dagster dev -w workspace.yaml`` (repository root) and ``dg dev`` (this project's folder) load
``defs`` from here.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from example_project.assets import lakehouse_assets
from example_project.resources import catalog_from_env
from floe_dagster_iceberg import create_iceberg_resources


def build_definitions() -> dg.Definitions:
    """Assets with their resources, merged with the ``dg`` components of ``defs/``."""
    lakehouse = dg.Definitions(
        assets=lakehouse_assets,
        resources=create_iceberg_resources(catalog_from_env()),
    )
    components = dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
    return dg.Definitions.merge(lakehouse, components)


defs = build_definitions()
