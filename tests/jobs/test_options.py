"""The maintenance options: one model, parsed the same from Python, run config and YAML."""

import datetime as dt

import dagster as dg
import pytest
from pydantic import ValidationError

from floe_dagster_iceberg.jobs import MaintenanceOptions
from floe_dagster_iceberg.jobs.options import maintenance_options, option_config_fields


def test_durations_and_sizes_have_one_spelling_and_units():
    options = MaintenanceOptions(
        expire_older_than_hours=dt.timedelta(days=2),
        orphan_older_than_hours=6,
        target_file_size_bytes="128MiB",
    )
    assert options.expire_older_than_hours == 48.0
    assert options.expire_older_than == dt.timedelta(days=2)
    assert options.orphan_older_than == dt.timedelta(hours=6)
    assert options.target_file_size_bytes == 128 * 1024 * 1024
    assert MaintenanceOptions().expire_older_than is None
    assert MaintenanceOptions().orphan_older_than == dt.timedelta(days=3)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"retain_last": 0}, "retain_last must be at least 1"),
        ({"expire_older_than_hours": -1}, "expire_older_than_hours must not be negative"),
        ({"target_file_size_bytes": 0}, "target_file_size_bytes must be positive"),
        ({"min_input_files": 0}, "min_input_files"),
        ({"orphan_older_than_hours": -1}, "orphan_older_than_hours"),
        ({"retain_lst": 3}, "retain_lst"),
    ],
)
def test_wrong_options_are_refused_with_their_name(values, message):
    with pytest.raises(ValidationError, match=message):
        MaintenanceOptions(**values)


def test_values_go_on_top_of_options():
    base = MaintenanceOptions(retain_last=5, orphan_dry_run=True)
    assert maintenance_options(base, {}) is base
    assert maintenance_options(None, None) == MaintenanceOptions()
    merged = maintenance_options(base, {"retain_last": 2})
    assert (merged.retain_last, merged.orphan_dry_run) == (2, True)


def test_op_config_fields_follow_the_model():
    fields = option_config_fields(
        MaintenanceOptions.model_fields, MaintenanceOptions(expire_older_than_hours=1.5)
    )
    assert fields["expire_older_than_hours"].default_value == 1.5
    assert fields["orphan_older_than_hours"].default_value == 72.0
    assert fields["target_file_size_bytes"].default_value is None
    assert isinstance(fields["retain_last"].config_type, dg.Noneable)
    for name, field in fields.items():
        assert field.description == MaintenanceOptions.model_fields[name].description
