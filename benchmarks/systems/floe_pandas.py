"""floe with pandas frames: the same assets as ``floe``, returning and taking
``pandas.DataFrame``.

The asset body converts the pre-built Arrow table to pandas (and the reader back to Arrow for
verification), so the whole-run time includes pandas' own conversions; the time inside the IO
manager (``io_manager_seconds``) is what compares with ``floe`` on Arrow.
"""

from typing import Any

import pandas as pd
import pyarrow as pa
from dagster import AssetIn, AssetKey, MaterializeResult, asset

from benchmarks import data
from benchmarks.systems._dagster import _HANDOVER, DAILY, EVENTS
from benchmarks.systems.base import NAMESPACE
from benchmarks.systems.floe import Floe


def _pandas_events_asset(metadata: dict[str, Any]) -> Any:
    @asset(key=EVENTS, partitions_def=DAILY, io_manager_key="iceberg", metadata=metadata)
    def events() -> pd.DataFrame:
        return _HANDOVER["table"].to_pandas()

    return events


@asset(
    key=AssetKey([NAMESPACE, "events_rows"]),
    partitions_def=DAILY,
    ins={"events": AssetIn(key=EVENTS)},
)
def pandas_events_rows(events: pd.DataFrame) -> MaterializeResult:
    _HANDOVER["read"] = pa.Table.from_pandas(events, preserve_index=False)
    return MaterializeResult(metadata={"rows": len(events)})


class FloePandas(Floe):
    name = "floe_pandas"

    def write_partition(self, day: int, table: pa.Table) -> None:
        _HANDOVER["table"] = table
        self._run([_pandas_events_asset(self.write_metadata)], partition_key=data.day_key(day))

    def upsert(self, day: int, table: pa.Table) -> None:
        _HANDOVER["table"] = table
        self._run([_pandas_events_asset(self.upsert_metadata)], partition_key=data.day_key(day))

    def read_partition(self, day: int) -> pa.Table:
        _HANDOVER.pop("read", None)
        self._run(
            [_pandas_events_asset(self.write_metadata), pandas_events_rows],
            selection=[pandas_events_rows],
            partition_key=data.day_key(day),
        )
        return _HANDOVER.pop("read")
