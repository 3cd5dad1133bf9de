"""Table maintenance as Dagster ops, jobs, schedules and a sensor.

A maintenance op resolves which tables to maintain (a list, whole namespaces, given assets, or
every asset of the code location stored by the Iceberg IO manager), then runs its steps in
order (``compact``, ``rewrite_manifests``, ``expire_snapshots``, ``remove_orphan_files``,
``table_health``) on every table. A failure on one table never stops the others; at the end the
op (and so the run) fails, listing every failed table.

After each step, an :class:`dagster.AssetObservation` is logged on the table's asset with its
storage health and what the step did; the op's output metadata summarises every step (run
metadata).

Example:
    >>> import dagster as dg
    >>> from floe_dagster_iceberg.maintenance_jobs import build_iceberg_maintenance_definitions
    >>> maintenance = build_iceberg_maintenance_definitions(namespaces=["sales"])
    >>> sorted(job.name for job in maintenance.jobs)
    ['iceberg_compaction', 'iceberg_nightly_maintenance']
"""

import json
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import dagster as dg

from floe_dagster_iceberg.errors import TableNotFoundError
from floe_dagster_iceberg.identifiers import DEFAULT_NAMESPACE, asset_table_identifier
from floe_dagster_iceberg.lineage import track_maintenance
from floe_dagster_iceberg.maintenance import (
    DEFAULT_ORPHAN_AGE,
    DEFAULT_TARGET_FILE_SIZE_BYTES,
    TableHealth,
)

__all__ = [
    "COMPACTION_STEPS",
    "DEFAULT_MAINTENANCE_STEPS",
    "NIGHTLY_STEPS",
    "MaintenanceStep",
    "build_iceberg_compaction_sensor",
    "build_iceberg_maintenance_definitions",
    "build_iceberg_maintenance_job",
    "build_iceberg_maintenance_op",
    "build_iceberg_maintenance_schedule",
    "iceberg_asset_tables",
    "maintain_op_name",
]

MaintenanceStep = Literal[
    "compact", "rewrite_manifests", "expire_snapshots", "remove_orphan_files", "table_health"
]
STEPS: tuple[MaintenanceStep, ...] = (
    "compact",
    "rewrite_manifests",
    "expire_snapshots",
    "remove_orphan_files",
    "table_health",
)
DEFAULT_MAINTENANCE_STEPS: tuple[MaintenanceStep, ...] = (
    "compact",
    "rewrite_manifests",
    "expire_snapshots",
    "remove_orphan_files",
)
"""Everything, in the order that frees the most: compaction first, then expiry removes the
files compaction replaced."""
NIGHTLY_STEPS: tuple[MaintenanceStep, ...] = ("expire_snapshots", "remove_orphan_files")
COMPACTION_STEPS: tuple[MaintenanceStep, ...] = ("compact", "rewrite_manifests")

DEFAULT_RESOURCE_KEY = "iceberg_catalog"
DEFAULT_IO_MANAGER_KEY = "iceberg"

AssetLike = dg.AssetsDefinition | dg.AssetSpec | dg.AssetKey | str | Sequence[str]


# ============================================================================ table selection


def _metadata_value(value: Any) -> Any:
    return value.value if isinstance(value, dg.MetadataValue) else value


def iceberg_asset_tables(
    assets: Iterable[dg.AssetsDefinition | dg.AssetSpec],
    *,
    io_manager_key: str | None = DEFAULT_IO_MANAGER_KEY,
    default_namespace: str = DEFAULT_NAMESPACE,
) -> dict[dg.AssetKey, str]:
    """The Iceberg table (``"namespace.table"``) of every asset stored by the Iceberg IO manager.

    ``io_manager_key=None`` maps every asset, whatever stores it.

    Example:
        >>> import dagster as dg
        >>> @dg.asset(key_prefix="sales", io_manager_key="iceberg")
        ... def orders(): ...
        >>> iceberg_asset_tables([orders])
        {AssetKey(['sales', 'orders']): 'sales.orders'}
    """
    tables: dict[dg.AssetKey, str] = {}
    for definition in assets:
        specs = (
            [definition.get_asset_spec(key) for key in definition.keys]
            if isinstance(definition, dg.AssetsDefinition)
            else [definition]
        )
        for spec in specs:
            if io_manager_key is not None and _io_manager_key(definition, spec) != io_manager_key:
                continue
            metadata = {k: _metadata_value(v) for k, v in (spec.metadata or {}).items()}
            namespace, name = asset_table_identifier(spec.key.path, metadata, default_namespace)
            tables[spec.key] = f"{namespace}.{name}"
    return tables


def _io_manager_key(definition: dg.AssetsDefinition | dg.AssetSpec, spec: dg.AssetSpec) -> str:
    if isinstance(definition, dg.AssetsDefinition):
        try:
            return definition.get_io_manager_key_for_asset_key(spec.key)
        except Exception:
            return "io_manager"
    return str(_metadata_value((spec.metadata or {}).get("dagster/io_manager_key", "io_manager")))


def _asset_key(asset: AssetLike) -> dg.AssetKey:
    if isinstance(asset, dg.AssetKey):
        return asset
    if isinstance(asset, dg.AssetSpec):
        return asset.key
    if isinstance(asset, str):
        return dg.AssetKey.from_user_string(asset)
    return dg.AssetKey(list(asset))


def _asset_keys(assets: Sequence[AssetLike] | None) -> list[dg.AssetKey]:
    keys: list[dg.AssetKey] = []
    for asset in assets or ():
        if isinstance(asset, dg.AssetsDefinition):
            keys.extend(asset.keys)
        else:
            keys.append(_asset_key(asset))
    return keys


@dataclass(frozen=True)
class _Selection:
    tables: tuple[str, ...] = ()
    namespaces: tuple[str, ...] = ()
    asset_keys: tuple[dg.AssetKey, ...] = ()
    known_assets: tuple[tuple[dg.AssetKey, str], ...] = ()  # from AssetsDefinitions given
    io_manager_key: str = DEFAULT_IO_MANAGER_KEY
    default_namespace: str = DEFAULT_NAMESPACE

    @property
    def everything(self) -> bool:
        return not (self.tables or self.namespaces or self.asset_keys)


def _selection(
    tables: Sequence[str | Sequence[str]],
    namespaces: Sequence[str],
    assets: Sequence[AssetLike] | None,
    io_manager_key: str,
    default_namespace: str,
) -> _Selection:
    keys: list[dg.AssetKey] = []
    known: dict[dg.AssetKey, str] = {}
    for asset in assets or ():
        if isinstance(asset, dg.AssetsDefinition | dg.AssetSpec):
            mapped = iceberg_asset_tables(
                [asset], io_manager_key=None, default_namespace=default_namespace
            )
            known.update(mapped)
            keys.extend(mapped)
        else:
            keys.append(_asset_key(asset))
    return _Selection(
        tables=tuple(t if isinstance(t, str) else ".".join(t) for t in tables),
        namespaces=tuple(namespaces),
        asset_keys=tuple(keys),
        known_assets=tuple(known.items()),
        io_manager_key=io_manager_key,
        default_namespace=default_namespace,
    )


def _code_location_tables(context: Any, selection: _Selection) -> dict[dg.AssetKey, str] | None:
    """Iceberg assets of the code location the run or sensor belongs to (None: unknown).

    A run launched from a code location (UI, schedule, sensor, ``dagster job execute``) knows
    its code location; ``execute_in_process`` does not.
    """
    try:
        repository = context.repository_def
    except Exception:
        return None
    if repository is None:
        return None
    definitions = {id(d): d for d in repository.assets_defs_by_key.values()}
    return iceberg_asset_tables(
        definitions.values(),
        io_manager_key=selection.io_manager_key,
        default_namespace=selection.default_namespace,
    )


def _resolve(context: Any, selection: _Selection, catalog: Any) -> tuple[list[dict], list[dict]]:
    """(targets, failures): ``{"table", "asset_key"}`` per table to maintain."""
    location = _code_location_tables(context, selection)
    if location is None:
        if selection.everything:
            raise dg.Failure(
                description="This run does not know its code location (it was started with "
                "execute_in_process), so 'every Iceberg asset of the code location' cannot be "
                "listed: give the job tables=, namespaces= or assets=, or launch it from the "
                "code location (UI, schedule, sensor, `dagster job execute`)."
            )
        location = {}
    by_table = {table: key for key, table in location.items()}
    targets: dict[str, dg.AssetKey | None] = {}
    failures: list[dict] = []
    if selection.everything:
        targets.update({table: key for key, table in location.items()})
    for key in selection.asset_keys:
        known = dict(selection.known_assets)
        table = known.get(key) or location.get(key)
        if table is None:
            namespace, name = asset_table_identifier(key.path, {}, selection.default_namespace)
            table = f"{namespace}.{name}"
        targets[table] = key
    for table in selection.tables:
        targets.setdefault(table, by_table.get(table))
    for namespace in selection.namespaces:
        try:
            identifiers = catalog.list_tables(namespace)
        except Exception as error:
            failures.append(_failure(f"namespace {namespace}", "list_tables", error))
            continue
        for identifier in identifiers:
            table = ".".join(identifier)
            targets.setdefault(table, by_table.get(table))
    return (
        [
            {"table": table, "asset_key": list(key.path) if key else None}
            for table, key in sorted(targets.items())
        ],
        failures,
    )


def _failure(table: str, step: str, error: BaseException) -> dict:
    return {"table": table, "step": step, "error": f"{type(error).__name__}: {error}"}


# ============================================================================ ops


def _catalog_resource(context: Any, resource_key: str) -> Any:
    return getattr(context.resources, resource_key)


def _observation_metadata(
    health: TableHealth, step: str, metrics: Mapping[str, Any]
) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        f"iceberg/{key}": value for key, value in health.as_metrics().items() if value is not None
    }
    metadata["dagster/row_count"] = health.rows
    metadata["iceberg/maintenance_step"] = step
    for key, value in metrics.items():
        if value is not None and step != "table_health":
            metadata[f"iceberg/{step}/{key}"] = value
    return metadata


def _run_step(manager: Any, step: str, table: str, config: Mapping[str, Any]) -> Any:
    if step == "compact":
        target = config.get("target_file_size_bytes")
        if target is None:
            loaded = manager.load_table(table)
            target = int(
                loaded.properties.get(
                    "write.target-file-size-bytes", DEFAULT_TARGET_FILE_SIZE_BYTES
                )
            )
        return manager.compact(
            table, target_file_size_bytes=target, min_input_files=config["min_input_files"]
        )
    if step == "rewrite_manifests":
        return manager.rewrite_manifests(table)
    if step == "expire_snapshots":
        hours = config.get("expire_older_than_hours")
        return manager.expire_snapshots(
            table,
            older_than=None if hours is None else timedelta(hours=hours),
            retain_last=config.get("retain_last"),
        )
    if step == "remove_orphan_files":
        return manager.remove_orphan_files(
            table,
            older_than=timedelta(hours=config["orphan_older_than_hours"]),
            dry_run=config["orphan_dry_run"],
        )
    return None  # table_health: the observation is the result


def _config_schema(steps: Sequence[str], defaults: Mapping[str, Any]) -> dict[str, dg.Field]:
    schema: dict[str, dg.Field] = {
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
    if "compact" in steps:
        schema["target_file_size_bytes"] = dg.Field(
            dg.Noneable(int),
            default_value=defaults["target_file_size_bytes"],
            description="Target size of a compacted file; null: the table's "
            "write.target-file-size-bytes, else 128 MiB.",
        )
        schema["min_input_files"] = dg.Field(
            int,
            default_value=defaults["min_input_files"],
            description="Rewrite a bin only when it holds at least this many small files.",
        )
    if "expire_snapshots" in steps:
        older = defaults["expire_older_than"]
        schema["expire_older_than_hours"] = dg.Field(
            dg.Noneable(float),
            default_value=None if older is None else older.total_seconds() / 3600,
            description="Expire snapshots older than this; null: the table's "
            "history.expire.max-snapshot-age-ms (7 days).",
        )
        schema["retain_last"] = dg.Field(
            dg.Noneable(int),
            default_value=defaults["retain_last"],
            description="Keep this many newest snapshots per branch in any case; null: the "
            "table's history.expire.min-snapshots-to-keep (1).",
        )
    if "remove_orphan_files" in steps:
        schema["orphan_older_than_hours"] = dg.Field(
            float,
            default_value=defaults["orphan_older_than"].total_seconds() / 3600,
            description="Only unreferenced files older than this are orphans; in-flight writes "
            "are younger.",
        )
        schema["orphan_dry_run"] = dg.Field(
            bool,
            default_value=defaults["orphan_dry_run"],
            description="Report orphan files without deleting them.",
        )
    return schema


def _summary_markdown(rows: list[tuple[str, str]]) -> str:
    lines = ["| table | result |", "| --- | --- |"]
    lines.extend(f"| {table} | {text} |" for table, text in rows)
    return "\n".join(lines)


def _short(step: str, result: Any) -> str:
    if result is None:
        return "observed"
    metrics = result.as_metrics()
    if step == "compact":
        return (
            f"{metrics['files_rewritten']} files ({metrics['bytes_rewritten']} B) -> "
            f"{metrics['files_added']} files in {metrics['partitions_compacted']} partition(s), "
            f"{metrics['partitions_skipped']} skipped"
        )
    if step == "rewrite_manifests":
        return f"{metrics['manifests_before']} -> {metrics['manifests_after']} manifests"
    if step == "expire_snapshots":
        return (
            f"{metrics['snapshots_expired']} snapshots expired, {metrics['files_deleted']} files "
            f"({metrics['bytes_freed']} B) deleted"
        )
    return (
        f"{metrics['orphan_files']} orphan files, {metrics['files_deleted']} deleted "
        f"({metrics['bytes_freed']} B)"
    )


_TOTALS: dict[str, tuple[str, ...]] = {
    "compact": ("files_rewritten", "bytes_rewritten", "files_added", "bytes_added"),
    "rewrite_manifests": ("manifests_before", "manifests_after"),
    "expire_snapshots": ("snapshots_expired", "files_deleted", "bytes_freed"),
    "remove_orphan_files": ("orphan_files", "files_deleted", "bytes_freed"),
    "table_health": (),
}


def _check_steps(steps: Sequence[str]) -> tuple[MaintenanceStep, ...]:
    if not steps:
        raise ValueError("steps is empty: name at least one maintenance step")
    unknown = [s for s in steps if s not in STEPS]
    if unknown:
        raise ValueError(f"unknown maintenance step(s) {unknown}; use {', '.join(STEPS)}")
    return tuple(steps)  # type: ignore[arg-type]


def _override(selection: _Selection, config: Mapping[str, Any]) -> _Selection:
    if not any(config.get(k) for k in ("tables", "namespaces", "asset_keys")):
        return selection
    return _Selection(
        tables=tuple(config.get("tables") or ()),
        namespaces=tuple(config.get("namespaces") or ()),
        asset_keys=tuple(dg.AssetKey.from_user_string(k) for k in config.get("asset_keys") or ()),
        known_assets=selection.known_assets,
        io_manager_key=selection.io_manager_key,
        default_namespace=selection.default_namespace,
    )


def _maintain(
    context: dg.OpExecutionContext,
    steps: Sequence[MaintenanceStep],
    selection: _Selection,
    resource_key: str,
) -> Iterator[dg.AssetObservation | dg.Output]:
    """Run the steps; yield observations as they happen (kept even when the op fails)."""
    config = dict(context.op_config or {})
    resource = _catalog_resource(context, resource_key)
    manager = resource.get_manager()
    lineage = resource.lineage() if hasattr(resource, "lineage") else None
    chosen = _override(selection, config)
    targets, failures = _resolve(context, chosen, resource.load_catalog())
    explicit = set(chosen.tables)
    context.log.info(
        f"Maintaining {len(targets)} Iceberg table(s) ({', '.join(steps)}): "
        + (", ".join(t["table"] for t in targets) or "none")
    )
    metadata: dict[str, Any] = {"tables": dg.MetadataValue.json([t["table"] for t in targets])}
    missing: set[str] = set()
    for step in steps:
        rows: list[tuple[str, str]] = []
        totals: dict[str, int] = dict.fromkeys(_TOTALS[step], 0)
        for target in targets:
            table = target["table"]
            if table in missing:
                continue
            started = time.monotonic()
            try:
                if lineage is None:
                    result = _run_step(manager, step, table, config)
                else:
                    with track_maintenance(lineage, manager, table, step, context) as tracked:
                        result = _run_step(manager, step, table, config)
                        tracked.record(result)
                health = manager.table_health(table)
            except TableNotFoundError as error:
                if table not in explicit and target["asset_key"] is not None:
                    context.log.warning(f"{table}: not created yet (asset never materialized).")
                    rows.append((table, "not created yet"))
                else:
                    failures.append(_failure(table, step, error))
                    rows.append((table, f"FAILED: {error}"))
                missing.add(table)
                continue
            except Exception as error:
                context.log.error(f"Iceberg {step} failed on {table}: {error!r}")
                failures.append(_failure(table, step, error))
                rows.append((table, f"FAILED: {type(error).__name__}: {error}"))
                continue
            metrics = result.as_metrics() if result is not None else {}
            for key in totals:
                totals[key] += int(metrics.get(key) or 0)
            text = _short(step, result)
            rows.append((table, text))
            context.log.info(
                f"Iceberg {step} on {table}: {text} ({time.monotonic() - started:.2f} s)"
            )
            if target["asset_key"]:
                yield dg.AssetObservation(
                    asset_key=dg.AssetKey(target["asset_key"]),
                    description=f"Iceberg {step.replace('_', ' ')}: {text}",
                    metadata=_observation_metadata(health, step, metrics),
                )
        metadata[f"{step}/summary"] = dg.MetadataValue.md(
            _summary_markdown(rows) if rows else "no tables"
        )
        metadata.update({f"{step}/{key}": value for key, value in totals.items()})
    metadata["failed_tables"] = dg.MetadataValue.json(sorted({f["table"] for f in failures}))
    if failures:
        listing = "; ".join(f"{f['table']} ({f['step']}: {f['error']})" for f in failures)
        raise dg.Failure(
            description=(
                f"Iceberg maintenance failed for {len({f['table'] for f in failures})} "
                f"table(s); the others were maintained: {listing}"
            ),
            metadata={**metadata, "failures": dg.MetadataValue.json(failures)},
        )
    yield dg.Output(None, metadata=metadata)


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
    target_file_size_bytes: int | None = None,
    min_input_files: int = 2,
    expire_older_than: timedelta | None = None,
    retain_last: int | None = None,
    orphan_older_than: timedelta = DEFAULT_ORPHAN_AGE,
    orphan_dry_run: bool = False,
) -> dg.OpDefinition:
    """An op that runs maintenance ``steps``, in order, on every selected table.

    Tables are selected by ``tables`` (``"namespace.table"``), ``namespaces`` (every table in
    them, listed at run time) and ``assets`` (definitions, specs or keys); with none of the
    three, every asset of the code location whose IO manager is ``io_manager_key``. The op's
    config (launchpad, schedules, sensors) can replace the selection (``tables``,
    ``namespaces``, ``asset_keys``) and the step options, whose defaults are the arguments
    given here. A failure on one table is logged and the other tables are maintained; the op
    then fails, listing every failed table. It has a ``start`` input of type ``Nothing`` to run
    after other ops. Needs the catalog resource under ``resource_key``.

    Example:
        >>> op = build_iceberg_maintenance_op(["expire_snapshots"], namespaces=["sales"])
        >>> op.name, sorted(op.config_schema.config_type.fields)[:3]
        ('iceberg_maintenance', ['asset_keys', 'expire_older_than_hours', 'namespaces'])
    """
    chosen_steps = _check_steps(steps)
    selection = _selection(tables, namespaces, assets, io_manager_key, default_namespace)
    defaults = {
        "target_file_size_bytes": target_file_size_bytes,
        "min_input_files": min_input_files,
        "expire_older_than": expire_older_than,
        "retain_last": retain_last,
        "orphan_older_than": orphan_older_than,
        "orphan_dry_run": orphan_dry_run,
    }

    @dg.op(
        name=name,
        ins={"start": dg.In(dg.Nothing)},
        out=dg.Out(dg.Nothing),
        config_schema=_config_schema(chosen_steps, defaults),
        required_resource_keys={resource_key},
        tags={"kind": "iceberg"},
        description="Iceberg table maintenance: "
        + ", ".join(s.replace("_", " ") for s in chosen_steps)
        + ".",
    )
    def maintenance_op(context: dg.OpExecutionContext) -> Iterator[dg.AssetObservation | dg.Output]:
        yield from _maintain(context, chosen_steps, selection, resource_key)

    return maintenance_op


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
    target_file_size_bytes: int | None = None,
    min_input_files: int = 2,
    expire_older_than: timedelta | None = None,
    retain_last: int | None = None,
    orphan_older_than: timedelta = DEFAULT_ORPHAN_AGE,
    orphan_dry_run: bool = False,
    description: str | None = None,
    tags: Mapping[str, str] | None = None,
) -> dg.JobDefinition:
    """A job that runs maintenance ``steps`` on the selected Iceberg tables.

    Selection and options are those of :func:`build_iceberg_maintenance_op` (the job's one op,
    named ``<name>__maintain``); with no ``tables``, ``namespaces`` or ``assets``, every
    Iceberg asset of the code location is maintained. The run fails at the end, listing every
    failed table, when a step failed on any table; the other tables are maintained all the
    same. Needs the catalog resource (``create_iceberg_resources()`` provides it).

    Example:
        >>> job = build_iceberg_maintenance_job(
        ...     "nightly", namespaces=["sales"], steps=["expire_snapshots", "remove_orphan_files"]
        ... )
        >>> [node.name for node in job.graph.nodes]
        ['nightly__maintain']
    """
    chosen_steps = _check_steps(steps)
    maintenance_op = build_iceberg_maintenance_op(
        chosen_steps,
        name=maintain_op_name(name),
        tables=tables,
        namespaces=namespaces,
        assets=assets,
        resource_key=resource_key,
        io_manager_key=io_manager_key,
        default_namespace=default_namespace,
        target_file_size_bytes=target_file_size_bytes,
        min_input_files=min_input_files,
        expire_older_than=expire_older_than,
        retain_last=retain_last,
        orphan_older_than=orphan_older_than,
        orphan_dry_run=orphan_dry_run,
    )

    @dg.job(
        name=name,
        description=description
        or f"Iceberg table maintenance: {', '.join(s.replace('_', ' ') for s in chosen_steps)}.",
        tags={"floe/maintenance": ",".join(chosen_steps), **(tags or {})},
        executor_def=dg.in_process_executor,
    )
    def maintenance_job() -> None:
        maintenance_op()

    return maintenance_job


def maintain_op_name(job_name: str) -> str:
    """Name of the op inside a job built by :func:`build_iceberg_maintenance_job`, for run
    config: ``{"ops": {maintain_op_name("nightly"): {"config": {"orphan_dry_run": True}}}}``.

    Example:
        >>> maintain_op_name("nightly")
        'nightly__maintain'
    """
    return f"{job_name}__maintain"


# ============================================================================ schedules, sensor


def build_iceberg_maintenance_schedule(
    job: dg.JobDefinition,
    cron_schedule: str = "0 3 * * *",
    *,
    name: str | None = None,
    execution_timezone: str = "UTC",
    default_status: dg.DefaultScheduleStatus = dg.DefaultScheduleStatus.STOPPED,
    run_config: Mapping[str, Any] | None = None,
    tags: Mapping[str, str] | None = None,
    description: str | None = None,
) -> dg.ScheduleDefinition:
    """A schedule for a maintenance job, created STOPPED: switch it on in the UI.

    Example:
        >>> job = build_iceberg_maintenance_job("nightly", namespaces=["sales"])
        >>> build_iceberg_maintenance_schedule(job, "0 3 * * *").name
        'nightly_schedule'
    """
    return dg.ScheduleDefinition(
        name=name or f"{job.name}_schedule",
        job=job,
        cron_schedule=cron_schedule,
        execution_timezone=execution_timezone,
        default_status=default_status,
        run_config=dict(run_config) if run_config else None,
        tags=dict(tags) if tags else None,
        description=description or f"Runs {job.name} ({cron_schedule}, {execution_timezone}).",
    )


def build_iceberg_compaction_sensor(
    job: dg.JobDefinition,
    *,
    name: str | None = None,
    assets: Sequence[AssetLike] | None = None,
    io_manager_key: str = DEFAULT_IO_MANAGER_KEY,
    min_materializations: int = 10,
    quiet_period: timedelta = timedelta(minutes=15),
    minimum_interval_seconds: int = 300,
    default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.STOPPED,
) -> dg.SensorDefinition:
    """Compaction after backfills: request a run of ``job`` (built by
    :func:`build_iceberg_maintenance_job`) for the tables of assets that received at least
    ``min_materializations`` materializations (a backfill writes one small file per partition)
    and none for ``quiet_period`` (the backfill is over). Watches ``assets``, or every Iceberg
    asset of the code location. Created STOPPED.

    Example:
        >>> job = build_iceberg_maintenance_job("compaction", steps=["compact"])
        >>> build_iceberg_compaction_sensor(job).name
        'compaction_after_backfills'
    """
    op_name = maintain_op_name(job.name)
    explicit = _asset_keys(assets)

    @dg.sensor(
        name=name or f"{job.name}_after_backfills",
        job=job,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=default_status,
        description=(
            f"Runs {job.name} on tables whose assets got >= {min_materializations} "
            f"materializations, once quiet for {quiet_period}."
        ),
    )
    def compaction_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
        state = json.loads(context.cursor) if context.cursor else {"after": {}, "pending": {}}
        keys = explicit or list(
            _code_location_tables(context, _Selection(io_manager_key=io_manager_key)) or {}
        )
        if not keys:
            return dg.SkipReason("no Iceberg assets to watch")
        for key in keys:
            user_key = key.to_user_string()
            cursor = state["after"].get(user_key)
            while True:
                result = context.instance.fetch_materializations(
                    dg.AssetRecordsFilter(asset_key=key, after_storage_id=cursor),
                    limit=1000,
                    ascending=True,
                )
                for record in result.records:
                    count, latest = state["pending"].get(user_key, (0, 0.0))
                    state["pending"][user_key] = (count + 1, max(latest, record.timestamp))
                    cursor = record.storage_id
                if not result.has_more:
                    break
            if cursor is not None:
                state["after"][user_key] = cursor
        now = datetime.now(UTC).timestamp()
        ready = sorted(
            key
            for key, (count, latest) in state["pending"].items()
            if count >= min_materializations and now - latest >= quiet_period.total_seconds()
        )
        for key in ready:
            del state["pending"][key]
        context.update_cursor(json.dumps(state))
        if not ready:
            waiting = {k: v[0] for k, v in state["pending"].items()}
            return dg.SkipReason(f"no backfill finished; pending materializations: {waiting}")
        marker = ",".join(f"{k}@{state['after'].get(k)}" for k in ready)
        return dg.SensorResult(
            run_requests=[
                dg.RunRequest(
                    run_key=f"compaction:{marker}",
                    run_config={"ops": {op_name: {"config": {"asset_keys": ready}}}},
                    tags={"floe/trigger": "after-backfill"},
                )
            ]
        )

    return compaction_sensor


def build_iceberg_maintenance_definitions(
    *,
    tables: Sequence[str | Sequence[str]] = (),
    namespaces: Sequence[str] = (),
    assets: Sequence[AssetLike] | None = None,
    name_prefix: str = "iceberg",
    resource_key: str = DEFAULT_RESOURCE_KEY,
    io_manager_key: str = DEFAULT_IO_MANAGER_KEY,
    default_namespace: str = DEFAULT_NAMESPACE,
    nightly_cron: str | None = "0 3 * * *",
    compaction_cron: str | None = None,
    compaction_after_backfills: bool = True,
    min_materializations: int = 10,
    quiet_period: timedelta = timedelta(minutes=15),
    execution_timezone: str = "UTC",
    target_file_size_bytes: int | None = None,
    min_input_files: int = 2,
    expire_older_than: timedelta | None = None,
    retain_last: int | None = None,
    orphan_older_than: timedelta = DEFAULT_ORPHAN_AGE,
    orphan_dry_run: bool = False,
) -> dg.Definitions:
    """Ready-made maintenance: two jobs, their schedules and the compaction sensor, all STOPPED.

    - ``<prefix>_nightly_maintenance``: snapshot expiry + orphan cleanup, scheduled
      ``nightly_cron`` (03:00 UTC);
    - ``<prefix>_compaction``: compaction + manifest rewrite, run by the sensor
      ``<prefix>_compaction_after_backfills`` after backfills, and on ``compaction_cron`` if
      given.

    Example:
        >>> defs = build_iceberg_maintenance_definitions(namespaces=["sales"])
        >>> sorted(s.name for s in defs.schedules)
        ['iceberg_nightly_maintenance_schedule']
    """
    common: dict[str, Any] = {
        "tables": tables,
        "namespaces": namespaces,
        "assets": assets,
        "resource_key": resource_key,
        "io_manager_key": io_manager_key,
        "default_namespace": default_namespace,
        "target_file_size_bytes": target_file_size_bytes,
        "min_input_files": min_input_files,
        "expire_older_than": expire_older_than,
        "retain_last": retain_last,
        "orphan_older_than": orphan_older_than,
        "orphan_dry_run": orphan_dry_run,
    }
    nightly = build_iceberg_maintenance_job(
        f"{name_prefix}_nightly_maintenance", steps=NIGHTLY_STEPS, **common
    )
    compaction = build_iceberg_maintenance_job(
        f"{name_prefix}_compaction", steps=COMPACTION_STEPS, **common
    )
    schedules = []
    if nightly_cron:
        schedules.append(
            build_iceberg_maintenance_schedule(
                nightly, nightly_cron, execution_timezone=execution_timezone
            )
        )
    if compaction_cron:
        schedules.append(
            build_iceberg_maintenance_schedule(
                compaction, compaction_cron, execution_timezone=execution_timezone
            )
        )
    sensors = []
    if compaction_after_backfills:
        sensors.append(
            build_iceberg_compaction_sensor(
                compaction,
                assets=_asset_keys(assets) or None,
                io_manager_key=io_manager_key,
                min_materializations=min_materializations,
                quiet_period=quiet_period,
            )
        )
    return dg.Definitions(jobs=[nightly, compaction], schedules=schedules, sensors=sensors)
