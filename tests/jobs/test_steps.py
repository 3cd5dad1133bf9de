"""The step registry: every step named once, with the options it reads."""

import pytest

from floe_dagster_iceberg.jobs import (
    COMPACTION_STEPS,
    DEFAULT_MAINTENANCE_STEPS,
    NIGHTLY_STEPS,
    STEPS,
    MaintenanceOptions,
    MaintenanceStep,
    build_iceberg_maintenance_job,
)


def test_unknown_steps_are_refused():
    with pytest.raises(ValueError, match="unknown maintenance step"):
        build_iceberg_maintenance_job("bad", steps=["vacuum"])
    with pytest.raises(ValueError, match="steps is empty"):
        build_iceberg_maintenance_job("bad", steps=[])


def test_the_registry_covers_every_step_and_option():
    assert tuple(STEPS) == MaintenanceStep.__args__
    assert set(DEFAULT_MAINTENANCE_STEPS + NIGHTLY_STEPS + COMPACTION_STEPS) <= set(STEPS)
    read = [option for step in STEPS.values() for option in step.options]
    assert sorted(read) == sorted(MaintenanceOptions.model_fields)  # each read by one step
    assert STEPS["table_health"].describe(None) == "observed"
