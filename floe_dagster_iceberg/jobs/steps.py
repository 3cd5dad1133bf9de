"""The maintenance steps: one registry entry per step.

An entry names the step, the engine method it calls (with the options it reads, which become
the op's run config), and how its result turns into Dagster metadata: the observation logged on
the table's asset, the one-line summary per table and the totals of the run.

Example:
    >>> [step.name for step in STEPS.values()]  # doctest: +NORMALIZE_WHITESPACE
    ['compact', 'remove_dangling_deletes', 'rewrite_manifests', 'expire_snapshots',
     'remove_orphan_files', 'table_health']
    >>> STEPS["expire_snapshots"].options
    ('expire_older_than_hours', 'retain_last', 'audit_branch_max_age_hours', 'engine')
"""

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from floe_dagster_iceberg.audit import AUDIT_BRANCH_PREFIX
from floe_dagster_iceberg.engine.maintenance import TableHealth
from floe_dagster_iceberg.jobs.options import MaintenanceOptions
from floe_dagster_iceberg.metadata import STORAGE_KIND, readable_size, with_readable_sizes

__all__ = [
    "COMPACTION_STEPS",
    "DEFAULT_MAINTENANCE_STEPS",
    "NIGHTLY_STEPS",
    "STEPS",
    "MaintenanceStep",
    "Step",
    "check_steps",
]

MaintenanceStep = Literal[
    "compact",
    "remove_dangling_deletes",
    "rewrite_manifests",
    "expire_snapshots",
    "remove_orphan_files",
    "table_health",
]


@dataclass(frozen=True)
class Step:
    """One maintenance step: what it runs and how its result is reported."""

    name: MaintenanceStep
    run: Callable[[Any, str, MaintenanceOptions], Any]
    """``(manager, table, options) -> result`` (None: nothing but the observation)."""
    options: tuple[str, ...] = ()
    """The :class:`MaintenanceOptions` fields it reads: its run config."""
    totals: tuple[str, ...] = ()
    """Result metrics summed over the tables in the run metadata (``<step>/<metric>``)."""
    summary: Callable[[Mapping[str, Any]], str] = lambda _: "observed"
    """One line per table from the result's metrics."""

    def describe(self, result: Any) -> str:
        """What the step did to one table, in a few words."""
        return "observed" if result is None else self.summary(result.as_metrics())

    def observation_metadata(self, health: TableHealth, result: Any) -> dict[str, Any]:
        """Metadata of the observation logged on the table's asset after the step.

        ``dagster/row_count`` is the table's rows, net of merge-on-read deletes; it is left out
        when equality deletes apply (the health's rows are then an upper bound:
        ``iceberg/rows_exact`` is false). There is no ``dagster/last_updated_timestamp``:
        maintenance changes no data, and once expiry removed the snapshots of the last data
        commit its time is only bounded, which would make stale data look fresh to freshness
        checks; they read the materializations' commit times. Byte counts come with a readable
        size.
        """
        metadata: dict[str, Any] = {
            f"iceberg/{key}": value
            for key, value in health.as_metrics().items()
            if value is not None
        }
        if health.rows_exact:
            metadata["dagster/row_count"] = health.rows
        metadata["dagster/storage_kind"] = STORAGE_KIND
        metadata["iceberg/maintenance_step"] = self.name
        if result is not None:
            for key, value in result.as_metrics().items():
                if value is not None:
                    metadata[f"iceberg/{self.name}/{key}"] = value
        return with_readable_sizes(metadata)


def _compact(manager: Any, table: str, options: MaintenanceOptions) -> Any:
    return manager.compact(
        table,
        target_file_size_bytes=options.target_file_size_bytes,  # None: the table's
        min_input_files=options.min_input_files,
        engine=options.engine,
    )


def _expire(manager: Any, table: str, options: MaintenanceOptions) -> Any:
    """Remove stale audit branches (their snapshots can then expire), then expire snapshots."""
    removed = manager.remove_stale_branches(
        table, AUDIT_BRANCH_PREFIX, options.audit_branch_max_age
    )
    result = manager.expire_snapshots(
        table,
        older_than=options.expire_older_than,
        retain_last=options.retain_last,
        engine=options.engine,
    )
    return result.model_copy(update={"branches_removed": tuple(removed)})


STEPS: Mapping[MaintenanceStep, Step] = {
    step.name: step
    for step in (
        Step(
            "compact",
            _compact,
            options=("target_file_size_bytes", "min_input_files", "engine"),
            totals=("files_rewritten", "bytes_rewritten", "files_added", "bytes_added"),
            summary=lambda m: (
                f"{m['files_rewritten']} files ({readable_size(m['bytes_rewritten'])}) -> "
                f"{m['files_added']} files in {m['partitions_compacted']} partition(s), "
                f"{m['partitions_skipped']} skipped"
            ),
        ),
        Step(
            "remove_dangling_deletes",
            lambda manager, table, _: manager.remove_dangling_deletes(table),
            totals=("delete_files_removed", "bytes_removed"),
            summary=lambda m: (
                f"{m['delete_files_removed']} of {m['delete_files']} delete files dangled and "
                f"were removed ({readable_size(m['bytes_removed'])})"
            ),
        ),
        Step(
            "rewrite_manifests",
            lambda manager, table, options: manager.rewrite_manifests(table, engine=options.engine),
            options=("engine",),
            totals=("manifests_before", "manifests_after"),
            summary=lambda m: f"{m['manifests_before']} -> {m['manifests_after']} manifests",
        ),
        Step(
            "expire_snapshots",
            _expire,
            options=(
                "expire_older_than_hours",
                "retain_last",
                "audit_branch_max_age_hours",
                "engine",
            ),
            totals=("snapshots_expired", "files_deleted", "bytes_freed"),
            summary=lambda m: (
                f"{m['snapshots_expired']} snapshots expired, {m['files_deleted']} files "
                f"({readable_size(m['bytes_freed'])}) deleted"
                + (
                    f", {m['branches_removed']} stale audit branch(es) removed"
                    if m["branches_removed"]
                    else ""
                )
            ),
        ),
        Step(
            "remove_orphan_files",
            lambda manager, table, options: manager.remove_orphan_files(
                table,
                older_than=options.orphan_older_than,
                dry_run=options.orphan_dry_run,
                engine=options.engine,
            ),
            options=("orphan_older_than_hours", "orphan_dry_run", "engine"),
            totals=("orphan_files", "files_deleted", "bytes_freed"),
            summary=lambda m: (
                f"{m['orphan_files']} orphan files, {m['files_deleted']} deleted "
                f"({readable_size(m['bytes_freed'])})"
            ),
        ),
        # The observation (storage health, logged after every step) is the result.
        Step("table_health", lambda manager, table, options: None),
    )
}

DEFAULT_MAINTENANCE_STEPS: tuple[MaintenanceStep, ...] = (
    "compact",
    "remove_dangling_deletes",
    "rewrite_manifests",
    "expire_snapshots",
    "remove_orphan_files",
)
"""Everything, in the order that frees the most: compaction first, then the delete files that no
longer apply go, then expiry removes the files both replaced."""
NIGHTLY_STEPS: tuple[MaintenanceStep, ...] = ("expire_snapshots", "remove_orphan_files")
COMPACTION_STEPS: tuple[MaintenanceStep, ...] = (
    "compact",
    "remove_dangling_deletes",
    "rewrite_manifests",
)


def check_steps(steps: Sequence[str]) -> tuple[Step, ...]:
    """The registry entries of ``steps``, in order; unknown or no steps are refused.

    Example:
        >>> [step.name for step in check_steps(["expire_snapshots", "table_health"])]
        ['expire_snapshots', 'table_health']
        >>> check_steps(["vacuum"])
        Traceback (most recent call last):
        ...
        ValueError: unknown maintenance step(s) ['vacuum']; use compact, remove_dangling_deletes, rewrite_manifests, expire_snapshots, remove_orphan_files, table_health
    """
    if not steps:
        raise ValueError("steps is empty: name at least one maintenance step")
    unknown = [s for s in steps if s not in STEPS]
    if unknown:
        raise ValueError(f"unknown maintenance step(s) {unknown}; use {', '.join(STEPS)}")
    return tuple(STEPS[s] for s in steps)  # type: ignore[index]
