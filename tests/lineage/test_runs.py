"""A run is START, then COMPLETE or FAIL; a failure carries its error message."""

import datetime as dt
from pathlib import Path

import dagster as dg
import pyarrow as pa

from floe_dagster_iceberg.lineage import LineageConfig, flush_lineage
from lineage.support import DAYS, FLUSH_SECONDS, Receiver, project_resources, validate_event


def test_failed_write_emits_fail_with_error_message(tmp_path: Path, receiver: Receiver) -> None:
    @dg.asset(
        key_prefix=["sales"],
        name="orders",
        partitions_def=DAYS,
        metadata={"partition_expr": "day"},
        io_manager_key="iceberg",
    )
    def wrong_day_orders() -> pa.Table:
        # rows of 2024-01-02 returned for partition 2024-01-01: refused by the IO manager
        return pa.table({"day": [dt.date(2024, 1, 2)], "order_id": [1], "amount": [1.0]})

    lineage = LineageConfig(transport={"type": "http", "url": receiver.url})
    result = dg.materialize(
        [wrong_day_orders],
        partition_key="2024-01-01",
        resources=project_resources(tmp_path / "lake", lineage),
        raise_on_error=False,
    )
    assert not result.success
    assert flush_lineage(FLUSH_SECONDS)
    assert [e["eventType"] for e in receiver.events] == ["START", "FAIL"]
    for event in receiver.events:
        validate_event(event)
    error = receiver.events[1]["run"]["facets"]["errorMessage"]
    assert error["message"].startswith("PartitionMismatchError:")
    assert error["programmingLanguage"] == "python"
    assert "PartitionMismatchError" in error["stackTrace"]
