"""OpenLineage events for IO manager writes and loads and for maintenance actions.

Every write, load and maintenance action is one OpenLineage run (:mod:`.runs`): ``START``
before it, then ``COMPLETE`` (or ``FAIL`` with an ``errorMessage`` facet). The job is the asset
(or the maintenance op and its table, :mod:`.maintenance`), with a ``parent`` run facet
pointing at the Dagster run (:mod:`.dagster_context`) and a ``jobType`` facet
(``integration="DAGSTER"``).

Datasets (:mod:`.datasets`) are named the way the OpenLineage Spark integration names Iceberg
tables, so lineage from Dagster joins the lineage of Spark, Trino or dbt jobs on the same table.

Configuration (:mod:`.config`) is OpenLineage's own: ``openlineage.yml``, ``OPENLINEAGE_URL``
or ``OPENLINEAGE__TRANSPORT__*``. The catalog resource's ``openlineage`` setting
(:class:`LineageConfig`) can override the transport, the job namespace or switch emission off.
When nothing is configured no event is built.

Emission never slows or fails a write (:mod:`.dispatch`): events are handed to one background
thread per process and transport, which sends them in order; :func:`flush_lineage` waits for
them. The catalog resource's ``lineage()`` gives the :class:`LineageEmitter` of its catalog
(:mod:`.emitter`).

Example:
    >>> from floe_dagster_iceberg.lineage import CatalogIdentity, LineageConfig, lineage_emitter
    >>> lineage_emitter(LineageConfig(enabled=False), CatalogIdentity("lake", "sql")).enabled
    False
"""

from floe_dagster_iceberg.lineage.config import (
    DEFAULT_JOB_NAMESPACE,
    LineageConfig,
    lineage_configured,
)
from floe_dagster_iceberg.lineage.dagster_context import ParentRun
from floe_dagster_iceberg.lineage.datasets import (
    LINEAGE_PRODUCER,
    CatalogIdentity,
    dataset_identity,
)
from floe_dagster_iceberg.lineage.dispatch import flush_lineage
from floe_dagster_iceberg.lineage.emitter import LineageEmitter, lineage_emitter
from floe_dagster_iceberg.lineage.maintenance import MaintenanceLineage, track_maintenance
from floe_dagster_iceberg.lineage.runs import LineageRun

__all__ = [
    "DEFAULT_JOB_NAMESPACE",
    "LINEAGE_PRODUCER",
    "CatalogIdentity",
    "LineageConfig",
    "LineageEmitter",
    "LineageRun",
    "MaintenanceLineage",
    "ParentRun",
    "dataset_identity",
    "flush_lineage",
    "lineage_configured",
    "lineage_emitter",
    "track_maintenance",
]
