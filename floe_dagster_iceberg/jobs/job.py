"""A maintenance job: one maintenance op, run in process."""

from collections.abc import Mapping, Sequence
from typing import Any

import dagster as dg

from floe_dagster_iceberg.asset_tables import DEFAULT_NAMESPACE
from floe_dagster_iceberg.jobs.op import DEFAULT_RESOURCE_KEY, build_iceberg_maintenance_op
from floe_dagster_iceberg.jobs.options import MaintenanceOptions
from floe_dagster_iceberg.jobs.selection import DEFAULT_IO_MANAGER_KEY, AssetLike
from floe_dagster_iceberg.jobs.steps import DEFAULT_MAINTENANCE_STEPS, MaintenanceStep, check_steps

__all__ = ["build_iceberg_maintenance_job", "maintain_op_name"]


def maintain_op_name(job_name: str) -> str:
    """Name of the op inside a job built by :func:`build_iceberg_maintenance_job`, for run
    config: ``{"ops": {maintain_op_name("nightly"): {"config": {"orphan_dry_run": True}}}}``.

    Example:
        >>> maintain_op_name("nightly")
        'nightly__maintain'
    """
    return f"{job_name}__maintain"


def build_iceberg_maintenance_job(
    name: str = "iceberg_maintenance",
    *,
    tables: Sequence[str | Sequence[str]] = (),
    namespaces: Sequence[str] = (),
    assets: Sequence[AssetLike] | None = None,
    steps: Sequence[MaintenanceStep] = DEFAULT_MAINTENANCE_STEPS,
    resource_key: str = DEFAULT_RESOURCE_KEY,
    io_manager_key: str = DEFAULT_IO_MANAGER_KEY,
    default_namespace: str = DEFAULT_NAMESPACE,
    options: MaintenanceOptions | None = None,
    description: str | None = None,
    tags: Mapping[str, str] | None = None,
    **option_values: Any,
) -> dg.JobDefinition:
    """A job that runs maintenance ``steps`` on the selected Iceberg tables.

    Selection and options (``options``, or
    :class:`~floe_dagster_iceberg.jobs.options.MaintenanceOptions` fields as keywords) are those
    of :func:`~floe_dagster_iceberg.jobs.op.build_iceberg_maintenance_op` (the job's one op,
    named ``<name>__maintain``); with no ``tables``, ``namespaces`` or ``assets``, every
    Iceberg asset of the code location is maintained. The run fails at the end, listing every
    failed table, when a step failed on any table; the other tables are maintained all the
    same. Needs the catalog resource (``create_iceberg_resources()`` provides it).

    Example:
        >>> job = build_iceberg_maintenance_job(
        ...     "nightly", namespaces=["sales"], steps=["expire_snapshots", "remove_orphan_files"],
        ...     retain_last=5,
        ... )
        >>> [node.name for node in job.graph.nodes]
        ['nightly__maintain']
    """
    chosen = [step.name for step in check_steps(steps)]
    maintenance_op = build_iceberg_maintenance_op(
        chosen,
        name=maintain_op_name(name),
        tables=tables,
        namespaces=namespaces,
        assets=assets,
        resource_key=resource_key,
        io_manager_key=io_manager_key,
        default_namespace=default_namespace,
        options=options,
        **option_values,
    )

    @dg.job(
        name=name,
        description=description
        or f"Iceberg table maintenance: {', '.join(s.replace('_', ' ') for s in chosen)}.",
        tags={"floe/maintenance": ",".join(chosen), **(tags or {})},
        executor_def=dg.in_process_executor,
    )
    def maintenance_job() -> None:
        maintenance_op()

    return maintenance_job
