"""The maintenance op: runs its steps, in order, on every selected table.

A failure on one table never stops the others; at the end the op (and so the run) fails,
listing every failed table. After each step an :class:`dagster.AssetObservation` is logged on
the table's asset with its storage health and what the step did; the op's output metadata
summarises every step (run metadata).
"""

import time
from collections.abc import Iterator, Sequence
from typing import Any

import dagster as dg

from floe_dagster_iceberg.asset_tables import DEFAULT_NAMESPACE
from floe_dagster_iceberg.errors import TableNotFoundError
from floe_dagster_iceberg.jobs.options import (
    MaintenanceOptions,
    maintenance_options,
    option_config_fields,
)
from floe_dagster_iceberg.jobs.selection import (
    DEFAULT_IO_MANAGER_KEY,
    AssetLike,
    TableSelection,
    failure,
)
from floe_dagster_iceberg.jobs.steps import (
    DEFAULT_MAINTENANCE_STEPS,
    MaintenanceStep,
    Step,
    check_steps,
)
from floe_dagster_iceberg.lineage import track_maintenance
from floe_dagster_iceberg.metadata import with_readable_sizes

__all__ = ["DEFAULT_RESOURCE_KEY", "build_iceberg_maintenance_op", "failure_summary"]

DEFAULT_RESOURCE_KEY = "iceberg_catalog"

_SELECTION_CONFIG = {
    "tables": dg.Field(
        dg.Noneable(dg.Array(str)),
        default_value=None,
        description="Maintain these tables ('namespace.table') instead of the selection.",
    ),
    "namespaces": dg.Field(
        dg.Noneable(dg.Array(str)),
        default_value=None,
        description="Maintain every table of these namespaces instead of the selection.",
    ),
    "asset_keys": dg.Field(
        dg.Noneable(dg.Array(str)),
        default_value=None,
        description="Maintain the tables of these assets ('prefix/name') instead.",
    ),
}


def build_iceberg_maintenance_op(
    steps: Sequence[MaintenanceStep] = DEFAULT_MAINTENANCE_STEPS,
    *,
    name: str = "iceberg_maintenance",
    tables: Sequence[str | Sequence[str]] = (),
    namespaces: Sequence[str] = (),
    assets: Sequence[AssetLike] | None = None,
    resource_key: str = DEFAULT_RESOURCE_KEY,
    io_manager_key: str = DEFAULT_IO_MANAGER_KEY,
    default_namespace: str = DEFAULT_NAMESPACE,
    options: MaintenanceOptions | None = None,
    **option_values: Any,
) -> dg.OpDefinition:
    """An op that runs maintenance ``steps``, in order, on every selected table.

    Tables are selected by ``tables`` (``"namespace.table"``), ``namespaces`` (every table in
    them, listed at run time) and ``assets`` (definitions, specs or keys); with none of the
    three, every asset of the code location whose IO manager is ``io_manager_key``. The step
    options are ``options`` or :class:`~floe_dagster_iceberg.jobs.options.MaintenanceOptions`
    fields given as keywords (``retain_last=5``). The op's config (launchpad, schedules,
    sensors) can replace the selection (``tables``, ``namespaces``, ``asset_keys``) and the
    options its steps read, whose defaults are the ones given here; among them ``engine``
    (:class:`~floe_dagster_iceberg.engine.maintenance.engines.SparkEngineConfig` or its mapping
    ``{"type": "spark", ...}``) runs the steps as Spark's Iceberg procedures. A failure on one table is
    logged and the other tables are maintained; the op then fails, listing every failed table.
    It has a ``start`` input of type ``Nothing`` to run after other ops. Needs the catalog
    resource under ``resource_key``.

    Example:
        >>> op = build_iceberg_maintenance_op(["expire_snapshots"], namespaces=["sales"])
        >>> fields = op.config_schema.config_type.fields
        >>> op.name, {"namespaces", "expire_older_than_hours", "engine"} <= set(fields)
        ('iceberg_maintenance', True)
    """
    chosen = check_steps(steps)
    selection = TableSelection.of(tables, namespaces, assets, io_manager_key, default_namespace)
    defaults = maintenance_options(options, option_values)
    read = [option for step in chosen for option in step.options]

    @dg.op(
        name=name,
        ins={"start": dg.In(dg.Nothing)},
        out=dg.Out(dg.Nothing),
        config_schema={**_SELECTION_CONFIG, **option_config_fields(read, defaults)},
        required_resource_keys={resource_key},
        tags={"kind": "iceberg"},
        description="Iceberg table maintenance: "
        + ", ".join(step.name.replace("_", " ") for step in chosen)
        + ".",
    )
    def maintenance_op(context: dg.OpExecutionContext) -> Iterator[dg.AssetObservation | dg.Output]:
        config = dict(context.op_config or {})
        run_options = maintenance_options(defaults, {k: config[k] for k in read if k in config})
        yield from _maintain(
            context, chosen, selection.with_run_config(config), run_options, resource_key
        )

    return maintenance_op


def _summary_markdown(rows: list[tuple[str, str]]) -> str:
    lines = ["| table | result |", "| --- | --- |"]
    lines.extend(f"| {table} | {text} |" for table, text in rows)
    return "\n".join(lines)


def _maintain(
    context: dg.OpExecutionContext,
    steps: Sequence[Step],
    selection: TableSelection,
    options: MaintenanceOptions,
    resource_key: str,
) -> Iterator[dg.AssetObservation | dg.Output]:
    """Run the steps; yield observations as they happen (kept even when the op fails)."""
    resource = getattr(context.resources, resource_key)
    manager = resource.get_manager()
    lineage = resource.lineage() if hasattr(resource, "lineage") else None
    targets, failures = selection.resolve(context, resource.load_catalog())
    explicit = set(selection.tables)
    context.log.info(
        f"Maintaining {len(targets)} Iceberg table(s) ({', '.join(s.name for s in steps)}): "
        + (", ".join(t.table for t in targets) or "none")
    )
    metadata: dict[str, Any] = {"tables": dg.MetadataValue.json([t.table for t in targets])}
    missing: set[str] = set()
    for step in steps:
        rows: list[tuple[str, str]] = []
        totals: dict[str, int] = dict.fromkeys(step.totals, 0)
        for target in targets:
            table = target.table
            if table in missing:
                continue
            started = time.monotonic()
            try:
                if lineage is None:
                    result = step.run(manager, table, options)
                else:
                    with track_maintenance(lineage, manager, table, step.name, context) as tracked:
                        result = step.run(manager, table, options)
                        tracked.record(result)
                health = manager.table_health(table)
            except TableNotFoundError as error:
                if table not in explicit and target.asset_key is not None:
                    context.log.warning(f"{table}: not created yet (asset never materialized).")
                    rows.append((table, "not created yet"))
                else:
                    failures.append(failure(table, step.name, error))
                    rows.append((table, f"FAILED: {error}"))
                missing.add(table)
                continue
            except Exception as error:
                context.log.error(f"Iceberg {step.name} failed on {table}: {error!r}")
                failures.append(failure(table, step.name, error))
                rows.append((table, f"FAILED: {type(error).__name__}: {error}"))
                continue
            metrics = result.as_metrics() if result is not None else {}
            for key in totals:
                totals[key] += int(metrics.get(key) or 0)
            text = step.describe(result)
            rows.append((table, text))
            context.log.info(
                f"Iceberg {step.name} on {table}: {text} ({time.monotonic() - started:.2f} s)"
            )
            if target.asset_key is not None:
                yield dg.AssetObservation(
                    asset_key=target.asset_key,
                    description=f"Iceberg {step.name.replace('_', ' ')}: {text}",
                    metadata=step.observation_metadata(health, result),
                )
        metadata[f"{step.name}/summary"] = dg.MetadataValue.md(
            _summary_markdown(rows) if rows else "no tables"
        )
        metadata.update(
            with_readable_sizes({f"{step.name}/{key}": value for key, value in totals.items()})
        )
    metadata["failed_tables"] = dg.MetadataValue.json(sorted({f["table"] for f in failures}))
    if failures:
        raise dg.Failure(
            description=failure_summary(failures, [t.table for t in targets], missing),
            metadata={**metadata, "failures": dg.MetadataValue.json(failures)},
        )
    yield dg.Output(None, metadata=metadata)


def failure_summary(failures: Sequence[dict], tables: Sequence[str], missing: set[str]) -> str:
    """What a maintenance run did, said exactly: how many of its tables failed (named, with each
    error), how many were maintained and how many do not exist yet.

    Example:
        >>> error = {"table": "sales.orders", "step": "compact", "error": "OSError: disk full"}
        >>> failure_summary([error], ["sales.orders"], set())
        'Iceberg maintenance failed on its only table, sales.orders: compact: OSError: disk full'
        >>> failure_summary([error], ["sales.orders", "sales.items", "sales.new"], {"sales.new"})
        'Iceberg maintenance failed on 1 of 3 tables (sales.orders); 1 maintained (sales.items), 1 not created yet (sales.new). sales.orders: compact: OSError: disk full'
    """
    failed = sorted({f["table"] for f in failures})
    details = "; ".join(f"{f['table']}: {f['step']}: {f['error']}" for f in failures)
    if len(tables) == 1 and failed == list(tables):
        return f"Iceberg maintenance failed on its only table, {details}"
    maintained = [t for t in tables if t not in failed and t not in missing]
    absent = [t for t in tables if t in missing and t not in failed]
    failed_tables = [t for t in failed if t in tables]
    outcome = [f"{len(maintained)} maintained" + _names(maintained)]
    if absent:
        outcome.append(f"{len(absent)} not created yet" + _names(absent))
    return (
        f"Iceberg maintenance failed on {len(failed_tables)} of {len(tables)} table"
        + ("" if len(tables) == 1 else "s")
        + _names(failed)
        + f"; {', '.join(outcome)}. {details}"
    )


def _names(tables: Sequence[str], shown: int = 10) -> str:
    if not tables:
        return ""
    more = f", ... ({len(tables)} in all)" if len(tables) > shown else ""
    return f" ({', '.join(tables[:shown])}{more})"
