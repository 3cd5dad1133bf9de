"""Snapshots other engines commit to an asset's table, recorded as asset observations.

A Spark job, a Trino ``INSERT``, a notebook appending with PyIceberg: commits Dagster did not
make still change the asset's data. The sensor of :func:`build_iceberg_observation_sensor`
reads each watched table's history and records one :class:`dagster.AssetObservation` per new
snapshot, with the metadata an IO manager write records (snapshot id, operation, rows, files
and bytes added and deleted, rows of the table, schema, commit time) and the committing engine
when the snapshot's summary names it.

Snapshots already on record are not reported again: commits made for a Dagster run (their
summary carries ``dagster.run-id``: every ``IcebergIOManager`` write, and external jobs that
commit with ``iceberg_snapshot_properties``), this package's maintenance (the maintenance jobs
log their own observations), and snapshots a materialization of the asset already names
(``iceberg/snapshot_id``, e.g. reported through Pipes).

The cursor (:class:`ObservationSensorCursor`, a Dagster serializable record) keeps the last
snapshot seen per asset. The sensor starts from the tables as they are at its first
evaluation: earlier history is not reported.

Example:
    >>> cursor = ObservationSensorCursor(
    ...     seen={"sales/orders": SeenSnapshot(table="sales.orders", snapshot_id=7, timestamp_ms=1)}
    ... )
    >>> ObservationSensorCursor.from_cursor(cursor.to_cursor()) == cursor
    True
"""

from collections.abc import Mapping, Sequence
from typing import Any

import dagster as dg
from dagster_shared.record import record
from dagster_shared.serdes import whitelist_for_serdes
from pyiceberg.table import Table
from pyiceberg.table.snapshots import Snapshot

from floe_dagster_iceberg.asset_tables import DEFAULT_NAMESPACE
from floe_dagster_iceberg.engine.history import SnapshotMark, snapshots_since, write_result
from floe_dagster_iceberg.engine.maintenance.results import MAINTENANCE_PROPERTY
from floe_dagster_iceberg.errors import TableNotFoundError
from floe_dagster_iceberg.jobs.selection import (
    DEFAULT_IO_MANAGER_KEY,
    AssetLike,
    TableSelection,
    Target,
    code_location_tables,
)
from floe_dagster_iceberg.snapshot_metadata import snapshot_metadata
from floe_dagster_iceberg_pipes import RUN_ID_PROPERTY, SNAPSHOT_ID_KEY

__all__ = ["ObservationSensorCursor", "SeenSnapshot", "build_iceberg_observation_sensor"]

_RECORDED_MARKERS = (RUN_ID_PROPERTY, MAINTENANCE_PROPERTY)
"""Summary keys of snapshots Dagster already records (a run's materialization, maintenance)."""
_CLOCK_SKEW_SECONDS = 300.0
"""How much earlier than a snapshot's commit time its materialization is still looked for."""


@whitelist_for_serdes(storage_name="FloeIcebergSeenSnapshot")
@record
class SeenSnapshot:
    """The last snapshot of an asset's table the sensor has seen (``None``: no table yet)."""

    table: str
    snapshot_id: int | None
    timestamp_ms: int

    @classmethod
    def of(cls, table: str, snapshot: Snapshot | None) -> "SeenSnapshot":
        mark = SnapshotMark.of(snapshot)
        return cls(table=table, snapshot_id=mark.snapshot_id, timestamp_ms=mark.timestamp_ms)

    @property
    def mark(self) -> SnapshotMark:
        return SnapshotMark(snapshot_id=self.snapshot_id, timestamp_ms=self.timestamp_ms)


@whitelist_for_serdes(storage_name="FloeIcebergObservationSensorCursor")
@record
class ObservationSensorCursor:
    """State of the observation sensor; keys are asset keys as user strings (``"a/b"``)."""

    seen: Mapping[str, SeenSnapshot]

    @classmethod
    def from_cursor(cls, cursor: str | None) -> "ObservationSensorCursor":
        """The cursor stored by the sensor (none yet: an empty one)."""
        if not cursor:
            return cls(seen={})
        return dg.deserialize_value(cursor, cls)

    def to_cursor(self) -> str:
        """The cursor string to store."""
        return dg.serialize_value(self)


def build_iceberg_observation_sensor(
    assets: Sequence[AssetLike] | None = None,
    *,
    name: str = "iceberg_snapshot_observations",
    resource_key: str = "iceberg_catalog",
    io_manager_key: str = DEFAULT_IO_MANAGER_KEY,
    default_namespace: str = DEFAULT_NAMESPACE,
    max_observations_per_table: int = 100,
    minimum_interval_seconds: int = 60,
    default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.STOPPED,
) -> dg.SensorDefinition:
    """A sensor that records an observation of an asset for every snapshot another engine
    commits to its table.

    Watches the tables of ``assets`` (definitions, specs or keys; an asset's table is named as
    the IO manager names it: key prefix or ``namespace`` metadata, then the key's last part),
    or of every asset of the code location stored by the IO manager ``io_manager_key``. The
    catalog is the resource ``resource_key``. At most ``max_observations_per_table`` snapshots
    of a table are reported per evaluation, oldest first; the rest follow at the next one.
    Created STOPPED.

    Example:
        >>> import dagster as dg
        >>> @dg.asset(key_prefix="sales", io_manager_key="iceberg")
        ... def orders(): ...
        >>> sensor = build_iceberg_observation_sensor([orders])
        >>> sensor.name, sorted(sensor.required_resource_keys)
        ('iceberg_snapshot_observations', ['iceberg_catalog'])
    """
    selection = TableSelection.of(
        assets=assets, io_manager_key=io_manager_key, default_namespace=default_namespace
    )
    if max_observations_per_table < 1:
        raise dg.DagsterInvalidDefinitionError(
            f"Sensor {name}: max_observations_per_table={max_observations_per_table} must be "
            "at least 1."
        )

    @dg.sensor(
        name=name,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=default_status,
        required_resource_keys={resource_key},
        description="Records an observation of an Iceberg asset for every snapshot another "
        "engine commits to its table.",
    )
    def observation_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        catalog = getattr(context.resources, resource_key)
        manager = catalog.get_manager(logger=context.log)
        state = ObservationSensorCursor.from_cursor(context.cursor)
        seen = dict(state.seen)
        events: list[dg.AssetObservation] = []
        for target in _targets(context, selection):
            assert target.asset_key is not None
            user_key = target.asset_key.to_user_string()
            try:
                table = manager.load_table(target.table)
            except TableNotFoundError:
                seen.setdefault(user_key, SeenSnapshot.of(target.table, None))
                continue
            except Exception as error:
                context.log.warning(
                    f"Table '{target.table}' of asset {user_key} could not be read "
                    f"({type(error).__name__}: {error}); it is read again at the next evaluation."
                )
                continue
            previous = seen.get(user_key)
            if previous is None or previous.table != target.table:
                seen[user_key] = SeenSnapshot.of(target.table, table.current_snapshot())
                continue
            observed, last = _observations(
                context, catalog.name, target.asset_key, table, previous, max_observations_per_table
            )
            events.extend(observed)
            seen[user_key] = SeenSnapshot.of(target.table, last)
        cursor = ObservationSensorCursor(seen=seen).to_cursor()
        if not events:
            return dg.SensorResult(skip_reason="no new snapshots from other engines", cursor=cursor)
        return dg.SensorResult(asset_events=events, cursor=cursor)

    return observation_sensor


def _targets(context: dg.SensorEvaluationContext, selection: TableSelection) -> list[Target]:
    """The watched tables that store an asset."""
    if selection.everything and code_location_tables(context, selection) is None:
        raise dg.DagsterInvariantViolationError(
            "The Iceberg observation sensor was evaluated without its code location, so it "
            "cannot list the Iceberg assets to watch: give build_iceberg_observation_sensor "
            "the assets, or evaluate it with the repository (build_sensor_context(repository_def=...))."
        )
    targets, _ = selection.resolve(context, catalog=None)
    return [target for target in targets if target.asset_key is not None]


def _observations(
    context: dg.SensorEvaluationContext,
    catalog_name: str,
    asset_key: dg.AssetKey,
    table: Table,
    previous: SeenSnapshot,
    limit: int,
) -> tuple[list[dg.AssetObservation], Snapshot | None]:
    """Observations of the snapshots after ``previous``, and the last snapshot now seen."""
    new = snapshots_since(table, previous.mark)
    batch = new[:limit]
    last = batch[-1] if len(new) > limit else table.current_snapshot()
    candidates = [s for s in batch if not _already_recorded(s)]
    if not candidates:
        return [], last
    materialized = _materialized_snapshot_ids(context.instance, asset_key, candidates)
    return [
        _observation(catalog_name, asset_key, table, snapshot)
        for snapshot in candidates
        if snapshot.snapshot_id not in materialized
    ], last


def _already_recorded(snapshot: Snapshot) -> bool:
    properties = snapshot.summary.additional_properties if snapshot.summary else {}
    return any(key in properties for key in _RECORDED_MARKERS)


def _materialized_snapshot_ids(
    instance: dg.DagsterInstance, asset_key: dg.AssetKey, snapshots: Sequence[Snapshot]
) -> set[int]:
    """Snapshot ids named by the asset's materializations since the first of ``snapshots``."""
    since = min(s.timestamp_ms for s in snapshots) / 1000 - _CLOCK_SKEW_SECONDS
    found: set[int] = set()
    cursor = None
    while True:
        page = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=asset_key, after_timestamp=since),
            limit=1000,
            cursor=cursor,
        )
        for record_ in page.records:
            materialization = record_.asset_materialization
            value = materialization.metadata.get(SNAPSHOT_ID_KEY) if materialization else None
            if value is not None:
                found.add(int(_value(value)))
        if not page.has_more:
            return found
        cursor = page.cursor


def _value(value: Any) -> Any:
    return value.value if isinstance(value, dg.MetadataValue) else value


def _observation(
    catalog_name: str, asset_key: dg.AssetKey, table: Table, snapshot: Snapshot
) -> dg.AssetObservation:
    metadata = snapshot_metadata(
        catalog_name=catalog_name, table=table, result=write_result(table, snapshot.snapshot_id)
    )
    metadata["iceberg/committed_at"] = dg.MetadataValue.timestamp(snapshot.timestamp_ms / 1000)
    if snapshot.parent_snapshot_id is not None:
        metadata["iceberg/parent_snapshot_id"] = dg.MetadataValue.int(snapshot.parent_snapshot_id)
    operation = snapshot.summary.operation.value if snapshot.summary else "unknown"
    return dg.AssetObservation(
        asset_key=asset_key,
        description=f"Snapshot {snapshot.snapshot_id} ({operation}) committed to "
        f"{'.'.join(table.name())} outside Dagster",
        metadata=metadata,
    )
