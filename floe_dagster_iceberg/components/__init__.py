"""``dg`` components: Iceberg features declared in a project's ``defs.yaml``.

Example:
    >>> from floe_dagster_iceberg.components import IcebergMaintenanceComponent
    >>> IcebergMaintenanceComponent().name_prefix
    'iceberg_component'
"""

from floe_dagster_iceberg.components.maintenance import (
    DEFAULT_COMPONENT_NAME_PREFIX,
    IcebergHealthChecksModel,
    IcebergMaintenanceComponent,
)

__all__ = [
    "DEFAULT_COMPONENT_NAME_PREFIX",
    "IcebergHealthChecksModel",
    "IcebergMaintenanceComponent",
]
