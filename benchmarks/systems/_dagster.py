"""What the two Dagster-based adapters share: the assets, and running them like a user does.

Every write is one ``dagster.materialize`` run of a daily-partitioned asset whose IO manager is
the system under test; every read is a run of a downstream asset that takes the partition as
input. The asset bodies only hand over pre-built Arrow tables, so the measured time is Dagster
plus the IO manager, never data generation.

Two numbers are recorded next to each end-to-end time so the cost can be attributed:

- ``io_manager_seconds``: time spent inside the IO manager's ``handle_output`` / ``load_input``;
- ``dagster_run_overhead_seconds``: one run of a partitioned asset that stores nothing, i.e. what
  Dagster itself costs per run on this machine whatever the IO manager.
"""

# No ``from __future__ import annotations``: Dagster reads the asset functions' annotations.

import functools
import statistics
import time
from typing import Any, ClassVar

import pyarrow as pa
from dagster import (
    AssetIn,
    AssetKey,
    BackfillPolicy,
    DagsterInstance,
    DailyPartitionsDefinition,
    MaterializeResult,
    asset,
    materialize,
)

from benchmarks import data
from benchmarks.systems import _iceberg
from benchmarks.systems.base import NAMESPACE, TABLE, System

DAILY = DailyPartitionsDefinition(start_date=data.FIRST_DAY.isoformat(), end_date="2024-03-01")
EVENTS = AssetKey([NAMESPACE, TABLE])
_HANDOVER: dict[str, Any] = {}
_INNER: dict[str, float] = {"seconds": 0.0}


def events_asset(metadata: dict[str, Any], single_run: bool = False) -> Any:
    @asset(
        key=EVENTS,
        partitions_def=DAILY,
        io_manager_key="iceberg",
        metadata=metadata,
        backfill_policy=BackfillPolicy.single_run() if single_run else None,
    )
    def events() -> pa.Table:
        return _HANDOVER["table"]

    return events


@asset(
    key=AssetKey([NAMESPACE, "events_rows"]),
    partitions_def=DAILY,
    ins={"events": AssetIn(key=EVENTS)},
)
def events_rows(events: pa.Table) -> MaterializeResult:
    _HANDOVER["read"] = events
    return MaterializeResult(metadata={"rows": events.num_rows})


@asset(key=AssetKey([NAMESPACE, "nothing"]), partitions_def=DAILY)
def nothing() -> MaterializeResult:
    return MaterializeResult()


def instrument(cls: type, *methods: str) -> None:
    """Accumulate the time spent in ``cls.<method>`` (the IO manager's own work)."""
    for name in methods:
        original = getattr(cls, name)
        if getattr(original, "_bench_timed", False):
            continue

        @functools.wraps(original)
        def timed(self: Any, *args: Any, __original: Any = original, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return __original(self, *args, **kwargs)
            finally:
                _INNER["seconds"] += time.perf_counter() - t0

        timed._bench_timed = True  # type: ignore[attr-defined]
        setattr(cls, name, timed)


class DagsterSystem(System):
    """A system used through ``dagster.materialize`` with an IO manager under the key ``iceberg``."""

    distributions: ClassVar[tuple[str, ...]] = ("dagster", "pyiceberg", "pyarrow")
    #: asset metadata of plain (overwrite) partition writes
    write_metadata: ClassVar[dict[str, Any]] = {"partition_expr": "ts"}
    upsert_metadata: ClassVar[dict[str, Any]] = {
        "partition_expr": "ts",
        "write_mode": "upsert",
        "upsert_options": {"join_cols": ["id"]},
    }

    _instance: DagsterInstance | None = None
    _resources: dict[str, Any] | None = None
    _overhead: float | None = None

    def make_resources(self) -> dict[str, Any]:
        raise NotImplementedError

    def instrument_io_manager(self) -> None:
        """Wrap the IO manager's handle_output/load_input with :func:`instrument`."""

    # ------------------------------------------------------------------ plumbing

    @property
    def instance(self) -> DagsterInstance:
        if self._instance is None:
            self._instance = DagsterInstance.ephemeral()
        return self._instance

    @property
    def resources(self) -> dict[str, Any]:
        if self._resources is None:
            self.instrument_io_manager()
            self._resources = self.make_resources()
        return self._resources

    def _run(self, assets: list[Any], **kwargs: Any) -> Any:
        result = materialize(assets, resources=self.resources, instance=self.instance, **kwargs)
        if not result.success:  # materialize raises by default; this is a second guard
            raise RuntimeError("run failed")
        return result

    def prepare(self) -> None:
        self.resources  # noqa: B018  (build and instrument once, outside the timing)
        if self._overhead is None:
            materialize([nothing], partition_key=data.day_key(0), instance=self.instance)
            samples = []
            for _ in range(3):
                t0 = time.perf_counter()
                materialize([nothing], partition_key=data.day_key(0), instance=self.instance)
                samples.append(time.perf_counter() - t0)
            self._overhead = statistics.median(samples)

    def reset_inner(self) -> None:
        _INNER["seconds"] = 0.0

    def inner_seconds(self) -> float | None:
        return _INNER["seconds"]

    def overheads(self) -> dict[str, Any]:
        return (
            {"dagster_run_overhead_seconds": self._overhead} if self._overhead is not None else {}
        )

    # ------------------------------------------------------------------ primitives

    def write_partition(self, day: int, table: pa.Table) -> None:
        _HANDOVER["table"] = table
        self._run([events_asset(self.write_metadata)], partition_key=data.day_key(day))

    def write_range(self, first_day: int, days: int, table: pa.Table) -> None:
        _HANDOVER["table"] = table
        self._run(
            [events_asset(self.write_metadata, single_run=True)],
            tags={
                "dagster/asset_partition_range_start": data.day_key(first_day),
                "dagster/asset_partition_range_end": data.day_key(first_day + days - 1),
            },
        )

    def upsert(self, day: int, table: pa.Table) -> None:
        _HANDOVER["table"] = table
        self._run([events_asset(self.upsert_metadata)], partition_key=data.day_key(day))

    def read_partition(self, day: int) -> pa.Table:
        _HANDOVER.pop("read", None)
        self._run(
            [events_asset(self.write_metadata), events_rows],
            selection=[events_rows],
            partition_key=data.day_key(day),
        )
        return _HANDOVER.pop("read")

    def read_all(self) -> pa.Table:
        return _iceberg.open_catalog(self.ctx).load_table(self.ctx.identifier).scan().to_arrow()

    def count_rows(self) -> int:
        return _iceberg.count_rows(self.ctx)

    def data_file_count(self) -> int:
        return _iceberg.live_data_files(self.ctx)

    def snapshot_count(self) -> int:
        return _iceberg.snapshot_count(self.ctx)

    def build_small_files(self, days: int, batches: int, rows_per_file: int) -> None:
        _iceberg.build_small_files(self.ctx, days, batches, rows_per_file)
