"""One partition run of ``reliability_defs.events``, started like a backfill's run launcher does.

:func:`run_partition` runs in a worker process of :mod:`reliability.processes`: it points the
process at the test's Dagster instance and catalog, then executes the job for one partition
with the backfill's tags. The job's executor is the multiprocess executor, so the step (the
Iceberg write of the partition) runs in a process of its own.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import reliability_defs
from dagster import DagsterInstance, execute_job, reconstructable


def run_partition(
    environment: Mapping[str, str], key: str, backfill_id: str, *, start: Callable[[], Any]
) -> dict[str, Any]:
    os.environ.update(environment)  # DAGSTER_HOME and FLOE_TEST_*; inherited by the step process
    # The code location's working directory: step processes import ``reliability_defs`` from it.
    os.chdir(Path(reliability_defs.__file__).parent)
    start()
    with DagsterInstance.get() as instance:
        result = execute_job(
            reconstructable(reliability_defs.events_backfill_job),
            instance=instance,
            tags={"dagster/partition": key, "dagster/backfill": backfill_id},
            run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
        )
        errors = [
            f"{event.event_type_value}: {event.message} {getattr(event.event_specific_data, 'error', '')}"
            for event in result.all_events
            if event.is_failure
            or (event.event_type_value == "ENGINE_EVENT" and "rror" in (event.message or ""))
        ]
        return {
            "errors": errors,
            "partition": key,
            "run_id": result.run_id,
            "success": result.success,
            "pid": os.getpid(),
        }
