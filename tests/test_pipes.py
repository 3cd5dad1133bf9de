"""External jobs launched through Dagster Pipes report their Iceberg snapshot: the asset gets the
metadata, OpenLineage events and checks of an IO manager write.

The external job is a real subprocess (``PipesSubprocessClient``) that writes with plain
PyIceberg and reports with ``floe_dagster_iceberg_pipes``.
"""

import datetime as dt
import json
import logging
import sys
import textwrap
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow as pa
from lineage.support import FLUSH_SECONDS, validate_event

from floe_dagster_iceberg import (
    EmbeddedCatalogConfig,
    IcebergCatalogResource,
    build_iceberg_health_checks,
    create_iceberg_resources,
    iceberg_pipes_result,
    iceberg_pipes_results,
)
from floe_dagster_iceberg.checks import SNAPSHOT_COUNT_CHECK
from floe_dagster_iceberg.lineage import LineageConfig, flush_lineage

# The external job: plain PyIceberg and dagster-pipes, nothing of Dagster or this package.
JOB = textwrap.dedent(
    """
    import datetime as dt

    import pyarrow as pa
    from dagster_pipes import open_dagster_pipes
    from pyiceberg.catalog import load_catalog
    from pyiceberg.expressions import EqualTo

    from floe_dagster_iceberg_pipes import iceberg_snapshot_properties, report_iceberg_snapshot

    with open_dagster_pipes() as context:
        catalog = load_catalog(context.get_extra("catalog_name"), **context.get_extra("catalog"))
        name = context.get_extra("table")
        catalog.create_namespace_if_not_exists(name.split(".")[0])
        if context.is_partition_step:
            day = dt.date.fromisoformat(context.partition_key)
            rows = pa.table({
                "day": pa.array([day] * context.get_extra("rows"), pa.date32()),
                "id": pa.array(range(context.get_extra("rows")), pa.int64()),
            })
        else:
            rows = pa.table({"id": pa.array(range(context.get_extra("rows")), pa.int64())})
        table = catalog.create_table_if_not_exists(name, rows.schema)
        before = table.current_snapshot()
        properties = iceberg_snapshot_properties(context)
        if context.is_partition_step:  # a delete and an append snapshot
            day_filter = EqualTo("day", context.partition_key)
            table.overwrite(rows, overwrite_filter=day_filter, snapshot_properties=properties)
        else:
            table.append(rows, snapshot_properties=properties)
        report_iceberg_snapshot(
            context,
            context.get_extra("reported_table") or table,
            context.get_extra("snapshot_id"),
            previous_snapshot_id=before.snapshot_id if before else None,
            metadata={"job/rows_written": rows.num_rows},
        )
    """
)


def _catalog(home: Path, events: Path | None = None) -> IcebergCatalogResource:
    lineage = (
        LineageConfig(transport={"type": "file", "log_file_path": str(events), "append": True})
        if events
        else None
    )
    catalog = IcebergCatalogResource(
        catalog=EmbeddedCatalogConfig(home=str(home)), openlineage=lineage
    )
    catalog.load_catalog()  # the embedded catalog's database, which the external job opens
    return catalog


def _pipes_asset(
    script: Path,
    table: str,
    rows: int = 3,
    *,
    key_prefix: str = "sales",
    name: str = "orders",
    snapshot_id: int | None = None,
    reported_table: str | None = None,
    **asset_args: Any,
) -> dg.AssetsDefinition:
    @dg.asset(key_prefix=key_prefix, name=name, kinds={"iceberg"}, **asset_args)
    def external(
        context: dg.AssetExecutionContext,
        pipes_subprocess_client: dg.PipesSubprocessClient,
        iceberg_catalog: IcebergCatalogResource,
    ):
        invocation = pipes_subprocess_client.run(
            context=context,
            command=[sys.executable, str(script)],
            extras={
                "catalog_name": iceberg_catalog.name,
                "catalog": iceberg_catalog.catalog_properties(),
                "table": table,
                "rows": rows,
                "snapshot_id": snapshot_id,
                "reported_table": reported_table,
            },
        )
        if context.has_partition_key:  # one path yields every result, the other returns one
            yield from iceberg_pipes_results(context, invocation, iceberg_catalog)
        else:
            yield iceberg_pipes_result(context, invocation, iceberg_catalog)

    return external


def _resources(catalog: IcebergCatalogResource) -> dict[str, Any]:
    return {
        **create_iceberg_resources(catalog),
        "pipes_subprocess_client": dg.PipesSubprocessClient(),
    }


def _materialization(
    instance: dg.DagsterInstance, key: str, partition: str | None = None
) -> dg.AssetMaterialization:
    asset_key = dg.AssetKey.from_user_string(key)
    if partition is None:
        event = instance.get_latest_materialization_event(asset_key)
        assert event is not None
        assert event.asset_materialization is not None
        return event.asset_materialization
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=asset_key, asset_partitions=[partition]), limit=1
    ).records
    assert records
    assert records[0].asset_materialization is not None
    return records[0].asset_materialization


def _values(materialization: dg.AssetMaterialization) -> dict[str, Any]:
    return {key: value.value for key, value in materialization.metadata.items()}


def _events(path: Path) -> list[dict[str, Any]]:
    assert flush_lineage(FLUSH_SECONDS)
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_pipes_write_gets_the_metadata_lineage_and_checks_of_an_io_manager_write(
    tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    script = tmp_path / "job.py"
    script.write_text(JOB)
    events_file = tmp_path / "lineage.jsonl"
    catalog = _catalog(tmp_path / "lake", events_file)
    external = _pipes_asset(script, "sales.orders")

    @dg.asset(key_prefix="sales", io_manager_key="iceberg")
    def written_here() -> pa.Table:
        return pa.table({"id": pa.array(range(3), pa.int64())})

    checks = build_iceberg_health_checks([external], io_manager_key=None)
    (bounds,) = dg.build_metadata_bounds_checks(
        assets=[external], metadata_key="dagster/row_count", min_value=1, max_value=3
    )
    result = dg.materialize(
        [external, written_here, *checks, bounds],
        resources=_resources(catalog),
        instance=instance,
    )
    assert result.success

    table = catalog.get_manager().load_table("sales.orders")
    snapshot = table.current_snapshot()
    assert snapshot is not None
    reported = _materialization(instance, "sales/orders")
    values = _values(reported)
    ours = _materialization(instance, "sales/written_here")
    # The IO manager's keys, except the commit attempts only the external engine knew; and
    # what the job reported itself.
    assert set(values) == (set(ours.metadata) - {"iceberg/commit_attempts"}) | {"job/rows_written"}
    assert values["iceberg/snapshot_id"] == snapshot.snapshot_id
    assert values["iceberg/operation"] == "append"
    assert values["dagster/table_name"] == "floe.sales.orders"
    assert values["dagster/row_count"] == 3
    assert values["iceberg/rows_added"] == 3
    assert values["iceberg/files_added"] == 1
    assert values["dagster/storage_kind"] == "iceberg"
    assert values["dagster/uri"] == table.location()
    assert [c.name for c in values["dagster/column_schema"].columns] == ["id"]
    assert values["dagster/last_updated_timestamp"] == snapshot.timestamp_ms / 1000
    assert values["job/rows_written"] == 3
    # The job marked its commit as this run's: the observation sensor does not report it again.
    assert snapshot.summary["dagster.run-id"] == result.run_id
    assert snapshot.summary["dagster.asset-key"] == "sales/orders"

    evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert evaluations[SNAPSHOT_COUNT_CHECK].asset_key == external.key
    assert evaluations[SNAPSHOT_COUNT_CHECK].passed
    assert evaluations["dagster_row_count_bounds_check"].passed

    run_id = result.run_id
    lineage = [e for e in _events(events_file) if e["job"]["name"] == "sales/orders"]
    assert [e["eventType"] for e in lineage] == ["START", "COMPLETE"]
    for event in lineage:
        validate_event(event)
        assert event["run"]["facets"]["parent"]["run"]["runId"] == run_id
    (output,) = lineage[1]["outputs"]
    assert output["facets"]["version"]["datasetVersion"] == str(snapshot.snapshot_id)
    assert output["facets"]["lifecycleStateChange"]["lifecycleStateChange"] == "CREATE"
    assert output["facets"]["symlinks"]["identifiers"][0]["name"] == "sales.orders"
    assert output["outputFacets"]["outputStatistics"]["rowCount"] == 3


def test_a_partition_overwrite_of_two_snapshots_counts_the_partition(
    tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    script = tmp_path / "job.py"
    script.write_text(JOB)
    catalog = _catalog(tmp_path / "lake")
    # Two days already in the table: 3 rows on 2024-01-01, 4 on 2024-01-02.
    catalog.load_catalog().create_namespace("sales")
    existing = catalog.load_catalog().create_table(
        "sales.daily", pa.schema([("day", pa.date32()), ("id", pa.int64())])
    )
    for day, rows in ((dt.date(2024, 1, 1), 3), (dt.date(2024, 1, 2), 4)):
        existing.append(
            pa.table({"day": pa.array([day] * rows, pa.date32()), "id": pa.array(range(rows))})
        )
    days = dg.DailyPartitionsDefinition(start_date="2024-01-01", end_date="2024-01-03")
    external = _pipes_asset(
        script, "sales.daily", 2, name="daily", partitions_def=days,
        metadata={"partition_expr": "day"},
    )  # fmt: skip

    # The job replaces the 3 rows of 2024-01-01 by 2: a delete and an append snapshot.
    result = dg.materialize(
        [external], partition_key="2024-01-01", resources=_resources(catalog), instance=instance
    )

    assert result.success
    values = _values(_materialization(instance, "sales/daily", "2024-01-01"))
    assert values["dagster/partition_row_count"] == 2
    assert values["dagster/row_count"] == 6
    assert values["iceberg/partition_filter"] == "day >= 2024-01-01 and day < 2024-01-02"
    assert values["iceberg/operation"] == "overwrite"
    assert values["iceberg/rows_added"] == 2
    assert values["iceberg/rows_deleted"] == 3
    assert values["iceberg/files_deleted"] == 1
    table = catalog.get_manager().load_table("sales.daily")
    assert table.current_snapshot().summary["dagster.partition-keys"] == "2024-01-01"


def test_a_snapshot_the_catalog_does_not_have_fails_the_step_naming_the_table(
    tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    script = tmp_path / "job.py"
    script.write_text(JOB)
    events_file = tmp_path / "lineage.jsonl"
    catalog = _catalog(tmp_path / "lake", events_file)
    external = _pipes_asset(script, "sales.orders", snapshot_id=4815162342)

    result = dg.materialize(
        [external], resources=_resources(catalog), instance=instance, raise_on_error=False
    )

    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    error = failure.step_failure_data.error
    assert error is not None
    message = str(error.cause.message if error.cause else error.message)
    assert "Table 'sales.orders' has no snapshot 4815162342" in message
    assert "same catalog" in message
    assert instance.get_latest_materialization_event(external.key) is None
    lineage = [e for e in _events(events_file) if e["job"]["name"] == "sales/orders"]
    assert [e["eventType"] for e in lineage] == ["START", "FAIL"]
    assert lineage[1]["run"]["facets"]["errorMessage"]["message"].startswith("TableNotFoundError")


def test_a_report_on_another_table_than_the_assets_warns(
    tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    script = tmp_path / "job.py"
    script.write_text(JOB)
    catalog = _catalog(tmp_path / "lake")
    external = _pipes_asset(script, "raw.orders")

    result = dg.materialize([external], resources=_resources(catalog), instance=instance)

    assert result.success
    warnings = [
        entry.user_message
        for entry in instance.all_logs(result.run_id)
        if entry.level == logging.WARNING
    ]
    assert any(
        "reported a snapshot of table 'raw.orders'" in line
        and "read table 'sales.orders'" in line
        and "metadata={'namespace': 'raw'}" in line
        for line in warnings
    ), warnings
    values = _values(_materialization(instance, "sales/orders"))
    assert values["dagster/table_name"] == "floe.raw.orders"
