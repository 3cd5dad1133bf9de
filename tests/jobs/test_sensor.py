"""The compaction-after-backfills sensor and its typed cursor."""

import datetime as dt
import json

import dagster as dg

from floe_dagster_iceberg.jobs import (
    CompactionSensorCursor,
    build_iceberg_compaction_sensor,
    build_iceberg_maintenance_definitions,
    maintain_op_name,
)
from floe_dagster_iceberg.jobs.sensor import PendingMaterializations

from .support import appending_asset, materialize_times


def test_compaction_sensor_runs_compaction_after_a_backfill(resources, catalog_resource, instance):
    events, quiet = appending_asset("events"), appending_asset("quiet")
    materialize_times([quiet], 1, resources, instance)
    materialize_times([events], 3, resources, instance)  # a burst: the backfill
    maintenance = build_iceberg_maintenance_definitions(
        min_materializations=3, quiet_period=dt.timedelta(0)
    )
    defs = dg.Definitions.merge(
        maintenance, dg.Definitions(assets=[events, quiet], resources=resources)
    )
    sensor = defs.get_sensor_def("iceberg_compaction_after_backfills")
    repository = defs.get_repository_def()

    tick = sensor.evaluate_tick(
        dg.build_sensor_context(instance=instance, repository_def=repository)
    )
    (request,) = tick.run_requests
    op_config = request.run_config["ops"][maintain_op_name("iceberg_compaction")]["config"]
    assert op_config == {"asset_keys": ["lake/events"]}
    result = defs.get_job_def("iceberg_compaction").execute_in_process(
        run_config=request.run_config, instance=instance
    )
    assert result.success
    manager = catalog_resource.get_manager()
    assert len(manager.load_table("lake.events").inspect.data_files()) == 1
    assert len(manager.load_table("lake.quiet").inspect.data_files()) == 1

    cursor = CompactionSensorCursor.from_cursor(tick.cursor)
    assert set(cursor.after_storage_ids) == {"lake/events", "lake/quiet"}
    assert cursor.pending == {
        "lake/quiet": PendingMaterializations(
            count=1, latest_timestamp=cursor.pending["lake/quiet"].latest_timestamp
        )
    }

    # Nothing new: the next tick skips; a later burst still waiting for quiet does too.
    again = sensor.evaluate_tick(
        dg.build_sensor_context(instance=instance, repository_def=repository, cursor=tick.cursor)
    )
    assert again.run_requests == []
    materialize_times([events], 3, resources, instance)
    patient = build_iceberg_compaction_sensor(
        defs.get_job_def("iceberg_compaction"),
        name="patient",
        min_materializations=3,
        quiet_period=dt.timedelta(hours=1),
    )
    waiting = patient.evaluate_tick(
        dg.build_sensor_context(instance=instance, repository_def=repository)
    )
    assert waiting.run_requests == []
    assert "pending" in waiting.skip_message


def test_cursor_round_trips_and_reads_plain_json_cursors():
    assert CompactionSensorCursor.from_cursor(None) == CompactionSensorCursor(
        after_storage_ids={}, pending={}
    )
    cursor = CompactionSensorCursor(
        after_storage_ids={"lake/events": 7},
        pending={"lake/events": PendingMaterializations(count=2, latest_timestamp=1.5)},
    )
    stored = cursor.to_cursor()
    assert json.loads(stored)["__class__"] == "FloeIcebergCompactionSensorCursor"
    assert CompactionSensorCursor.from_cursor(stored) == cursor
    plain = json.dumps({"after": {"lake/events": 7}, "pending": {"lake/events": [2, 1.5]}})
    assert CompactionSensorCursor.from_cursor(plain) == cursor
