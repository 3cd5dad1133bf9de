"""The observation sensor: snapshots other engines commit become observations of the asset."""

import dagster as dg
import pyarrow as pa
import pytest

from floe_dagster_iceberg.jobs import ObservationSensorCursor, build_iceberg_observation_sensor
from floe_dagster_iceberg.jobs.observation_sensor import SeenSnapshot

from .support import appending_asset, materialize_times


def _tick(sensor, instance, resources, cursor=None, repository=None):
    """One evaluation, its observations recorded in the instance as the sensor daemon does."""
    with dg.build_sensor_context(
        instance=instance, cursor=cursor, resources=resources, repository_def=repository
    ) as context:
        result = sensor.evaluate_tick(context)
    for event in result.asset_events:
        instance.report_runless_asset_event(event)
    return result


def _observations(instance: dg.DagsterInstance, key: dg.AssetKey) -> list[dg.AssetObservation]:
    records = instance.fetch_observations(key, limit=100, ascending=True).records
    return [r.asset_observation for r in records if r.asset_observation is not None]


def _other_engine_append(catalog_resource, table_name: str, ids: list[int]) -> int:
    """An append by plain PyIceberg, as another engine commits: no Dagster run id."""
    table = catalog_resource.load_catalog().load_table(table_name)
    table.append(pa.table({"id": pa.array(ids, pa.int64()), "name": ["other"] * len(ids)}))
    return table.current_snapshot().snapshot_id


def test_other_engines_snapshots_become_observations_and_ours_do_not(
    resources, catalog_resource, instance
):
    events = appending_asset("events")
    sensor = build_iceberg_observation_sensor([events])
    materialize_times([events], 1, resources, instance)

    first = _tick(sensor, instance, resources)  # starts from the table as it is
    assert first.asset_events == []
    start = ObservationSensorCursor.from_cursor(first.cursor).seen["lake/events"]
    table = catalog_resource.get_manager().load_table("lake.events")
    assert start.snapshot_id == table.current_snapshot().snapshot_id

    theirs = _other_engine_append(catalog_resource, "lake.events", [100, 101])
    second = _tick(sensor, instance, resources, first.cursor)

    (observation,) = _observations(instance, events.key)
    values = {key: value.value for key, value in observation.metadata.items()}
    assert values["iceberg/snapshot_id"] == theirs
    assert values["iceberg/parent_snapshot_id"] == start.snapshot_id
    assert values["iceberg/operation"] == "append"
    assert values["iceberg/rows_added"] == 2
    assert values["iceberg/files_added"] == 1
    assert values["dagster/row_count"] == 5  # 3 written by the asset, 2 by the other engine
    assert values["dagster/table_name"] == "floe.lake.events"
    assert "iceberg/engine" not in values  # PyIceberg does not sign its snapshots
    assert ObservationSensorCursor.from_cursor(second.cursor).seen["lake/events"].snapshot_id == (
        theirs
    )

    # Our own write is a materialization already: no observation, but the cursor moves on.
    materialize_times([events], 1, resources, instance)
    third = _tick(sensor, instance, resources, second.cursor)
    assert third.asset_events == []
    assert len(_observations(instance, events.key)) == 1
    ours = catalog_resource.get_manager().load_table("lake.events").current_snapshot()
    assert ObservationSensorCursor.from_cursor(third.cursor).seen["lake/events"] == SeenSnapshot(
        table="lake.events", snapshot_id=ours.snapshot_id, timestamp_ms=ours.timestamp_ms
    )
    assert _tick(sensor, instance, resources, third.cursor).asset_events == []


def test_a_burst_is_reported_oldest_first_in_batches_and_spark_is_named(
    resources, catalog_resource, instance
):
    events = appending_asset("events")
    sensor = build_iceberg_observation_sensor([events], max_observations_per_table=2)
    materialize_times([events], 1, resources, instance)
    cursor = _tick(sensor, instance, resources).cursor
    table = catalog_resource.load_catalog().load_table("lake.events")
    appended = []
    for n in range(3):
        rows = pa.table({"id": pa.array([n], pa.int64()), "name": ["spark"]})
        # Spark's Iceberg library signs its commits with the engine's name and version.
        table.append(rows, snapshot_properties={"engine-name": "spark", "engine-version": "3.5.9"})
        appended.append(table.current_snapshot().snapshot_id)

    first = _tick(sensor, instance, resources, cursor)
    second = _tick(sensor, instance, resources, first.cursor)

    assert [len(first.asset_events), len(second.asset_events)] == [2, 1]
    observed = _observations(instance, events.key)
    assert [o.metadata["iceberg/snapshot_id"].value for o in observed] == appended
    assert {o.metadata["iceberg/engine"].value for o in observed} == {"spark 3.5.9"}


def test_a_snapshot_already_materialized_is_not_observed(resources, catalog_resource, instance):
    """A Pipes job that reported its snapshot without marking the commit as the run's."""
    events = appending_asset("events")
    sensor = build_iceberg_observation_sensor([events])
    materialize_times([events], 1, resources, instance)
    cursor = _tick(sensor, instance, resources).cursor
    reported = _other_engine_append(catalog_resource, "lake.events", [7])
    instance.report_runless_asset_event(
        dg.AssetMaterialization(events.key, metadata={"iceberg/snapshot_id": reported})
    )
    unreported = _other_engine_append(catalog_resource, "lake.events", [8])

    result = _tick(sensor, instance, resources, cursor)

    assert [e.metadata["iceberg/snapshot_id"].value for e in result.asset_events] == [unreported]


def test_a_table_created_after_the_first_evaluation_is_reported_from_its_first_snapshot(
    resources, catalog_resource, instance
):
    events = appending_asset("events")
    defs = dg.Definitions(assets=[events], resources=resources)
    sensor = build_iceberg_observation_sensor()  # every Iceberg asset of the code location
    repository = defs.get_repository_def()
    first = _tick(sensor, instance, resources, repository=repository)
    assert ObservationSensorCursor.from_cursor(first.cursor).seen == {
        "lake/events": SeenSnapshot(table="lake.events", snapshot_id=None, timestamp_ms=0)
    }
    manager = catalog_resource.get_manager()
    manager.ensure_namespace("lake")
    catalog_resource.load_catalog().create_table(
        "lake.events", pa.schema([("id", pa.int64()), ("name", pa.string())])
    )
    theirs = _other_engine_append(catalog_resource, "lake.events", [1])

    second = _tick(sensor, instance, resources, first.cursor, repository)

    (observation,) = second.asset_events
    assert observation.asset_key == events.key
    assert observation.metadata["iceberg/snapshot_id"].value == theirs
    assert "iceberg/parent_snapshot_id" not in observation.metadata


def test_without_assets_or_code_location_the_sensor_says_what_to_give(resources, instance):
    sensor = build_iceberg_observation_sensor()
    with pytest.raises(Exception, match="give build_iceberg_observation_sensor the assets"):
        _tick(sensor, instance, resources)
