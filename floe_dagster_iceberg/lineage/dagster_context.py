"""What lineage reads from Dagster contexts: the parent run and the job names.

Contexts are read defensively: output, input and op contexts (and the ones built for tests)
expose different attributes, and a context that lacks one gives a default, never an error.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ParentRun",
    "asset_job_name",
    "consumer_job_name",
    "maintenance_job_name",
    "parent_run",
]


@dataclass(frozen=True)
class ParentRun:
    """The Dagster run an OpenLineage run belongs to (``run_id`` is Dagster's UUID)."""

    run_id: str
    job_name: str


def _valid_uuid(value: Any) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True


def parent_run(context: Any) -> ParentRun | None:
    """The Dagster run of an output, input or op context, when it has a real run id.

    Example:
        >>> import dagster as dg
        >>> run_id = "5f0b7c1e-2f7a-4d0e-9c59-0c1b1a6c2d3e"
        >>> parent_run(dg.build_output_context(run_id=run_id))
        ParentRun(run_id='5f0b7c1e-2f7a-4d0e-9c59-0c1b1a6c2d3e', job_name='dagster_run')
        >>> parent_run(dg.build_output_context(run_id="EPHEMERAL")) is None
        True
    """
    run_id = None
    for getter in (
        lambda: context.run_id,
        lambda: context.step_context.run_id,
        lambda: context.run.run_id,
    ):
        try:
            run_id = getter()
        except Exception:
            continue
        if run_id:
            break
    if not run_id or not _valid_uuid(run_id):
        return None
    job_name = None
    for getter in (lambda: context.job_name, lambda: context.run.job_name):
        try:
            job_name = getter()
        except Exception:
            continue
        if job_name:
            break
    return ParentRun(run_id=str(run_id), job_name=str(job_name or "dagster_run"))


def asset_job_name(context: Any) -> str:
    """The job of a write: the asset the output context stores.

    Example:
        >>> import dagster as dg
        >>> asset_job_name(dg.build_output_context(asset_key=dg.AssetKey(["sales", "orders"])))
        'sales/orders'
    """
    return context.asset_key.to_user_string()


def consumer_job_name(context: Any) -> str:
    """The asset whose step loads an input (its op's name for multi-asset or plain op steps).

    Example:
        >>> import dagster as dg
        >>> consumer_job_name(dg.build_input_context(asset_key=dg.AssetKey(["sales", "orders"])))
        'sales/orders'
    """
    try:
        keys = context.step_context.get_output_asset_keys()
        if len(keys) == 1:
            return next(iter(keys)).to_user_string()
    except Exception:
        pass
    try:
        return context.op_def.name
    except Exception:
        return context.asset_key.to_user_string()


def maintenance_job_name(context: Any, action: str, identifier: Sequence[str]) -> str:
    """``{op name}.{action}.{namespace}.{table}``, or ``{action}.{namespace}.{table}`` without
    an op context: one stable job per op, action and table, as Spark's integration appends the
    dataset name to its job names.

    Example:
        >>> import dagster as dg
        >>> @dg.op
        ... def nightly(context):
        ...     return maintenance_job_name(context, "compact", ("sales", "orders"))
        >>> @dg.job
        ... def maintain():
        ...     nightly()
        >>> maintain.execute_in_process().output_for_node("nightly")
        'nightly.compact.sales.orders'
        >>> maintenance_job_name(None, "compact", ("sales", "orders"))
        'compact.sales.orders'
    """
    try:
        return f"{context.op_def.name}.{action}.{'.'.join(identifier)}"
    except Exception:
        return f"{action}.{'.'.join(identifier)}"
