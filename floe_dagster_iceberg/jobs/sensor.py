"""Compaction after backfills: a sensor with a typed cursor.

The cursor (:class:`CompactionSensorCursor`, a Dagster serializable record) remembers, per
asset, the last materialization read and the burst of materializations not compacted yet.

Example:
    >>> cursor = CompactionSensorCursor(
    ...     after_storage_ids={"lake/events": 42},
    ...     pending={"lake/events": PendingMaterializations(count=3, latest_timestamp=1.0)},
    ... )
    >>> CompactionSensorCursor.from_cursor(cursor.to_cursor()) == cursor
    True
"""

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta

import dagster as dg
from dagster_shared.record import record
from dagster_shared.serdes import whitelist_for_serdes

from floe_dagster_iceberg.jobs.job import maintain_op_name
from floe_dagster_iceberg.jobs.selection import (
    DEFAULT_IO_MANAGER_KEY,
    AssetLike,
    TableSelection,
    asset_keys,
    code_location_tables,
)

__all__ = ["CompactionSensorCursor", "PendingMaterializations", "build_iceberg_compaction_sensor"]


@whitelist_for_serdes(storage_name="FloeIcebergPendingMaterializations")
@record
class PendingMaterializations:
    """Materializations of an asset since its table was last compacted."""

    count: int
    latest_timestamp: float


@whitelist_for_serdes(storage_name="FloeIcebergCompactionSensorCursor")
@record
class CompactionSensorCursor:
    """State of the compaction sensor; keys are asset keys as user strings (``"a/b"``)."""

    after_storage_ids: Mapping[str, int]
    """The last materialization read, per asset."""
    pending: Mapping[str, PendingMaterializations]
    """Materializations not compacted yet, per asset."""

    @classmethod
    def from_cursor(cls, cursor: str | None) -> "CompactionSensorCursor":
        """The cursor stored by the sensor (none yet: an empty one).

        Cursors written as plain JSON (``{"after": ..., "pending": {key: [count, latest]}}``)
        are read too.
        """
        if not cursor:
            return cls(after_storage_ids={}, pending={})
        state = json.loads(cursor)
        if "__class__" in state:
            return dg.deserialize_value(cursor, cls)
        return cls(
            after_storage_ids=state["after"],
            pending={
                key: PendingMaterializations(count=count, latest_timestamp=latest)
                for key, (count, latest) in state["pending"].items()
            },
        )

    def to_cursor(self) -> str:
        """The cursor string to store."""
        return dg.serialize_value(self)


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
    :func:`~floe_dagster_iceberg.jobs.job.build_iceberg_maintenance_job`) for the tables of
    assets that received at least ``min_materializations`` materializations (a backfill writes
    one small file per partition) and none for ``quiet_period`` (the backfill is over). Watches
    ``assets``, or every Iceberg asset of the code location. Created STOPPED.

    Example:
        >>> from floe_dagster_iceberg.jobs import build_iceberg_maintenance_job
        >>> job = build_iceberg_maintenance_job("compaction", steps=["compact"])
        >>> build_iceberg_compaction_sensor(job).name
        'compaction_after_backfills'
    """
    op_name = maintain_op_name(job.name)
    explicit = asset_keys(assets)

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
        state = CompactionSensorCursor.from_cursor(context.cursor)
        after = dict(state.after_storage_ids)
        pending = dict(state.pending)
        keys = explicit or list(
            code_location_tables(context, TableSelection(io_manager_key=io_manager_key)) or {}
        )
        if not keys:
            return dg.SkipReason("no Iceberg assets to watch")
        for key in keys:
            user_key = key.to_user_string()
            storage_id = after.get(user_key)
            while True:
                result = context.instance.fetch_materializations(
                    dg.AssetRecordsFilter(asset_key=key, after_storage_id=storage_id),
                    limit=1000,
                    ascending=True,
                )
                for materialization in result.records:
                    burst = pending.get(user_key)
                    pending[user_key] = PendingMaterializations(
                        count=(burst.count if burst else 0) + 1,
                        latest_timestamp=max(
                            burst.latest_timestamp if burst else 0.0, materialization.timestamp
                        ),
                    )
                    storage_id = materialization.storage_id
                if not result.has_more:
                    break
            if storage_id is not None:
                after[user_key] = storage_id
        now = datetime.now(UTC).timestamp()
        ready = sorted(
            key
            for key, burst in pending.items()
            if burst.count >= min_materializations
            and now - burst.latest_timestamp >= quiet_period.total_seconds()
        )
        for key in ready:
            del pending[key]
        context.update_cursor(
            CompactionSensorCursor(after_storage_ids=after, pending=pending).to_cursor()
        )
        if not ready:
            waiting = {key: burst.count for key, burst in pending.items()}
            return dg.SkipReason(f"no backfill finished; pending materializations: {waiting}")
        marker = ",".join(f"{key}@{after.get(key)}" for key in ready)
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
