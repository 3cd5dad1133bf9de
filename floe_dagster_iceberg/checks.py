"""Asset checks on the storage health of Iceberg-backed assets.

Three checks per asset, run together by one multi-asset check that loads each table once:

- ``iceberg_small_files``: the share of small data files that compaction can merge stays at or
  below a ratio (compaction is running); a lone small file per partition, which compaction
  cannot merge, does not count;
- ``iceberg_snapshot_count``: the number of snapshots stays at or below a limit (snapshot expiry
  is running);
- ``iceberg_staleness``: the table's data changed recently (compactions do not count).

Example:
    >>> import dagster as dg
    >>> from floe_dagster_iceberg.checks import build_iceberg_health_checks
    >>> @dg.asset(key_prefix="sales", io_manager_key="iceberg")
    ... def orders(): ...
    >>> checks = build_iceberg_health_checks([orders])
    >>> sorted(spec.name for spec in checks[0].check_specs)
    ['iceberg_small_files', 'iceberg_snapshot_count', 'iceberg_staleness']
"""

from collections.abc import Iterator, Sequence
from datetime import timedelta
from typing import Any

import dagster as dg

from floe_dagster_iceberg.asset_tables import DEFAULT_NAMESPACE, asset_table_identifier
from floe_dagster_iceberg.engine.maintenance import TableHealth
from floe_dagster_iceberg.errors import TableNotFoundError
from floe_dagster_iceberg.jobs.selection import AssetLike, iceberg_asset_tables
from floe_dagster_iceberg.metadata import readable_size, with_readable_sizes

__all__ = [
    "DEFAULT_CHECK_NAME_PREFIX",
    "SMALL_FILES_CHECK",
    "SNAPSHOT_COUNT_CHECK",
    "STALENESS_CHECK",
    "build_iceberg_health_checks",
]

DEFAULT_CHECK_NAME_PREFIX = "iceberg"
SMALL_FILES_CHECK = "iceberg_small_files"
SNAPSHOT_COUNT_CHECK = "iceberg_snapshot_count"
STALENESS_CHECK = "iceberg_staleness"
_SMALL_FILES, _SNAPSHOT_COUNT, _STALENESS = "small_files", "snapshot_count", "staleness"


def _tables_of(
    assets: Sequence[AssetLike], io_manager_key: str | None, default_namespace: str
) -> dict[dg.AssetKey, str]:
    tables: dict[dg.AssetKey, str] = {}
    for asset in assets:
        if isinstance(asset, dg.AssetsDefinition | dg.AssetSpec):
            tables.update(
                iceberg_asset_tables(
                    [asset], io_manager_key=io_manager_key, default_namespace=default_namespace
                )
            )
            continue
        if isinstance(asset, dg.AssetKey):
            key = asset
        elif isinstance(asset, str):
            key = dg.AssetKey.from_user_string(asset)
        else:
            key = dg.AssetKey(list(asset))
        namespace, name = asset_table_identifier(key.path, {}, default_namespace)
        tables[key] = f"{namespace}.{name}"
    return tables


def _metadata(health: TableHealth) -> dict[str, Any]:
    return with_readable_sizes(
        {f"iceberg/{key}": value for key, value in health.as_metrics().items() if value is not None}
    )


def readable_duration(duration: timedelta) -> str:
    """A duration in the largest whole unit that fits, as people say it.

    Example:
        >>> readable_duration(timedelta(hours=36)), readable_duration(timedelta(days=2))
        ('36 hours', '2 days')
        >>> readable_duration(timedelta(seconds=4000))
        '1 hour 6 minutes'
    """
    seconds = round(duration.total_seconds())
    if seconds and seconds % 86400 == 0:
        return _count(seconds // 86400, "day")
    if seconds >= 3600:
        hours, rest = divmod(seconds, 3600)
        minutes = rest // 60
        return _count(hours, "hour") + (f" {_count(minutes, 'minute')}" if minutes else "")
    if seconds >= 60:
        return _count(seconds // 60, "minute")
    return _count(seconds, "second")


def _count(number: int, unit: str) -> str:
    return f"{number} {unit}" + ("" if number == 1 else "s")


def build_iceberg_health_checks(
    assets: Sequence[AssetLike],
    *,
    name: str = "iceberg_health_checks",
    resource_key: str = "iceberg_catalog",
    io_manager_key: str | None = "iceberg",
    default_namespace: str = DEFAULT_NAMESPACE,
    max_small_file_ratio: float = 0.5,
    min_small_files: int = 10,
    small_file_threshold_bytes: int | None = None,
    max_snapshots: int = 500,
    max_staleness: timedelta | None = timedelta(hours=36),
    severity: dg.AssetCheckSeverity = dg.AssetCheckSeverity.WARN,
    blocking: bool = False,
    check_name_prefix: str = DEFAULT_CHECK_NAME_PREFIX,
) -> list[dg.AssetChecksDefinition]:
    """Asset checks on small-file ratio, snapshot count and staleness of Iceberg assets.

    ``assets`` are asset definitions, specs or keys. Of definitions and specs, only the assets
    stored by the IO manager ``io_manager_key`` get checks (``None``: every asset given), so
    all the assets of a code location can be passed; keys are checked as given. Tables are
    found the way the Iceberg IO manager names them (metadata ``namespace``/``schema``, else
    the key prefix, else ``default_namespace``).

    A data file is small below ``small_file_threshold_bytes`` (default 75% of the table's
    target file size). The small-file check counts only the small files compaction can merge
    (at least two in a partition): it fails when more than ``max_small_file_ratio`` of the data
    files are such files and there are at least ``min_small_files`` of them. Lone small files,
    one per partition as a daily backfill leaves them, are reported but never fail it. The
    snapshot check fails above ``max_snapshots``; the staleness check fails when the data last
    changed more than ``max_staleness`` ago (``None`` leaves staleness out). Every result
    carries the table's health metrics. A table that does not exist yet fails its checks.
    Checks are named ``<check_name_prefix>_small_files``, ``_snapshot_count`` and
    ``_staleness`` (``iceberg_...`` by default; another prefix lets two sets of checks, e.g. the
    ``dg`` component's, watch the same asset).

    Example:
        >>> checks = build_iceberg_health_checks(["sales/orders"], max_snapshots=100)
        >>> sorted(key.name for key in checks[0].check_keys)
        ['iceberg_small_files', 'iceberg_snapshot_count', 'iceberg_staleness']
    """
    tables = _tables_of(assets, io_manager_key, default_namespace)
    if not tables:
        return []
    descriptions = {
        _SMALL_FILES: f"At most {max_small_file_ratio:.0%} of the data files are small files "
        "that compaction can merge.",
        _SNAPSHOT_COUNT: f"At most {max_snapshots} snapshots (snapshot expiry is running).",
    }
    if max_staleness is not None:
        descriptions[_STALENESS] = (
            f"Data changed within the last {readable_duration(max_staleness)}."
        )
    kinds = {f"{check_name_prefix}_{kind}": kind for kind in descriptions}
    specs = [
        dg.AssetCheckSpec(name, asset=key, blocking=blocking, description=descriptions[kind])
        for key in tables
        for name, kind in kinds.items()
    ]

    @dg.multi_asset_check(
        specs=specs,
        name=name,
        can_subset=True,
        required_resource_keys={resource_key},
        description="Storage health of Iceberg tables: small files, snapshots, staleness.",
    )
    def iceberg_health(context: dg.AssetCheckExecutionContext) -> Iterator[dg.AssetCheckResult]:
        manager = getattr(context.resources, resource_key).get_manager()
        selected = context.selected_asset_check_keys
        for key, table in tables.items():
            wanted = [c for c in selected if c.asset_key == key]
            if not wanted:
                continue
            try:
                health = manager.table_health(
                    table, small_file_threshold_bytes=small_file_threshold_bytes
                )
            except TableNotFoundError as error:
                for check_key in wanted:
                    yield dg.AssetCheckResult(
                        asset_key=key,
                        check_name=check_key.name,
                        passed=False,
                        severity=severity,
                        description=str(error),
                        metadata={"iceberg/table": table},
                    )
                continue
            metadata = {"iceberg/table": table, **_metadata(health)}
            for check_key in wanted:
                yield _evaluate(
                    kinds[check_key.name],
                    check_key.name,
                    key,
                    health,
                    metadata,
                    severity=severity,
                    max_small_file_ratio=max_small_file_ratio,
                    min_small_files=min_small_files,
                    max_snapshots=max_snapshots,
                    max_staleness=max_staleness,
                )

    return [iceberg_health]


def _evaluate(
    kind: str,
    check_name: str,
    key: dg.AssetKey,
    health: TableHealth,
    metadata: dict[str, Any],
    *,
    severity: dg.AssetCheckSeverity,
    max_small_file_ratio: float,
    min_small_files: int,
    max_snapshots: int,
    max_staleness: timedelta | None,
) -> dg.AssetCheckResult:
    if kind == _SMALL_FILES:
        passed = not health.needs_compaction(max_small_file_ratio, min_small_files)
        description = (
            f"{health.small_files} of {health.data_files} data files are small "
            f"(< {readable_size(health.small_file_threshold_bytes)}); "
            f"{health.compactable_small_files} of "
            f"them can be merged by compaction (ratio {health.compactable_small_file_ratio:.2f}, "
            f"limit {max_small_file_ratio:.2f})" + ("" if passed else ": run compaction")
        )
    elif kind == _SNAPSHOT_COUNT:
        passed = health.snapshots <= max_snapshots
        description = f"{health.snapshots} snapshots (limit {max_snapshots})" + (
            "" if passed else ": run snapshot expiry"
        )
    else:
        age = health.seconds_since_last_data_change
        limit = max_staleness.total_seconds() if max_staleness else 0.0
        passed = age is not None and age <= limit
        description = (
            "no data written yet"
            if age is None
            else f"data last changed {readable_duration(timedelta(seconds=age))} ago "
            f"(limit {readable_duration(max_staleness or timedelta(0))})"
        )
    return dg.AssetCheckResult(
        asset_key=key,
        check_name=check_name,
        passed=passed,
        severity=severity,
        description=description,
        metadata=metadata,
    )
