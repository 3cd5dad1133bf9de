"""Ready-made maintenance definitions: jobs, schedules and sensor, all STOPPED."""

import datetime as dt
import re

import dagster as dg

from floe_dagster_iceberg import build_iceberg_health_checks
from floe_dagster_iceberg.components import IcebergMaintenanceComponent
from floe_dagster_iceberg.jobs import build_iceberg_maintenance_definitions, maintain_op_name

from .support import append_times, appending_asset, output_metadata


def test_schedules_are_stopped_and_evaluate(resources, catalog_resource, instance):
    events = appending_asset("events")
    append_times(catalog_resource, [events], 2)
    maintenance = build_iceberg_maintenance_definitions(
        assets=[events], compaction_cron="0 4 * * 0", execution_timezone="Europe/Paris"
    )
    defs = dg.Definitions.merge(maintenance, dg.Definitions(assets=[events], resources=resources))
    dg.Definitions.validate_loadable(defs)
    nightly = defs.get_schedule_def("iceberg_nightly_maintenance_schedule")
    compaction = defs.get_schedule_def("iceberg_compaction_schedule")
    sensor = defs.get_sensor_def("iceberg_compaction_after_backfills")
    assert nightly.cron_schedule == "0 3 * * *"
    assert compaction.cron_schedule == "0 4 * * 0"
    assert nightly.execution_timezone == "Europe/Paris"
    for definition in (nightly, compaction):
        assert definition.default_status == dg.DefaultScheduleStatus.STOPPED
    assert sensor.default_status == dg.DefaultSensorStatus.STOPPED

    context = dg.build_schedule_context(
        instance=instance, scheduled_execution_time=dt.datetime(2025, 1, 2, 3, tzinfo=dt.UTC)
    )
    (request,) = nightly.evaluate_tick(context).run_requests
    job = defs.get_job_def(nightly.job_name)
    assert job.name == "iceberg_nightly_maintenance"
    result = job.execute_in_process(
        run_config=request.run_config, instance=instance, tags=request.tags
    )
    assert result.success
    metadata = output_metadata(result, maintain_op_name(job.name))
    assert metadata["tables"] == ["lake.events"]
    assert metadata["remove_orphan_files/orphan_files"] == 0


def _ui_descriptions(defs: dg.Definitions) -> dict[str, str]:
    """Every description the Dagster UI shows for the package's definitions, by where it shows."""
    repository = defs.get_repository_def()
    shown: dict[str, str | None] = {}
    for key, resource in repository.get_top_level_resources().items():
        shown[f"resource {key}"] = resource.description
    for job in repository.get_all_jobs():
        shown[f"job {job.name}"] = job.description
        for node in job.graph.node_defs:
            shown[f"op {node.name}"] = node.description
    for schedule in repository.schedule_defs:
        shown[f"schedule {schedule.name}"] = schedule.description
    for sensor in repository.sensor_defs:
        shown[f"sensor {sensor.name}"] = sensor.description
    for checks in repository.asset_checks_defs_by_key.values():
        for spec in checks.check_specs:
            shown[f"check {spec.name}"] = spec.description
    shown["component"] = IcebergMaintenanceComponent.get_description()
    for key, resource in repository.get_top_level_resources().items():
        shown.update(_config_descriptions(resource.config_schema.config_type, f"config {key}"))
    for job in repository.get_all_jobs():
        for node in job.graph.node_defs:
            if node.config_schema:
                where = f"config {node.name}"
                shown.update(_config_descriptions(node.config_schema.config_type, where))
    return {where: text for where, text in shown.items() if text}


def _config_descriptions(config_type, where: str) -> dict[str, str | None]:
    """The descriptions of every config field (nested ones too) the launchpad shows."""
    found: dict[str, str | None] = {}
    for name, field in (getattr(config_type, "fields", None) or {}).items():
        found[f"{where}.{name}"] = field.description
        found.update(_config_descriptions(field.config_type, f"{where}.{name}"))
    inner = [
        getattr(config_type, "inner_type", None),
        *(getattr(config_type, "type_params", None) or []),
    ]
    for nested in inner:
        if nested is not None:
            found.update(_config_descriptions(nested, where))
    return found


def test_ui_descriptions_are_plain_markdown_without_doctests(resources):
    events = appending_asset("events")
    defs = dg.Definitions.merge(
        build_iceberg_maintenance_definitions(),
        dg.Definitions(
            assets=[events],
            asset_checks=build_iceberg_health_checks(
                [events], max_staleness=dt.timedelta(hours=36)
            ),
            resources=resources,
        ),
    )
    descriptions = _ui_descriptions(defs)
    assert {"resource iceberg", "resource iceberg_catalog", "component"} <= set(descriptions)
    assert "config iceberg_catalog.catalog.rest" in descriptions
    for where, text in descriptions.items():
        prose = re.sub(r"```.*?```", "", text, flags=re.DOTALL)  # fenced examples are markdown
        assert "``" not in prose, f"{where}: {text}"
        # After a blank line, an indented line is a code block in markdown.
        assert not re.search(r"\n[ \t]*\n {4}", prose), f"{where}: indented: {text}"
        assert ">>>" not in text, f"{where}: {text}"
        assert ":func:" not in text, f"{where}: {text}"
        assert ":class:" not in text, f"{where}: {text}"
    assert descriptions["check iceberg_staleness"] == "Data changed within the last 36 hours."
