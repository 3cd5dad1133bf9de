"""The external side of Pipes reports: cheap to import, and refusing what it cannot report.

The reports themselves, sent from a real Pipes subprocess, are tested in ``test_pipes.py``.
"""

import doctest
import subprocess
import sys

import pytest

import floe_dagster_iceberg_pipes
from floe_dagster_iceberg_pipes import report_iceberg_snapshot


def test_importing_it_imports_neither_dagster_nor_the_package_nor_pyiceberg() -> None:
    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, floe_dagster_iceberg_pipes; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & "
            "{'dagster', 'floe_dagster_iceberg', 'pyiceberg', 'pyarrow'}))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert loaded.stdout.strip() == "[]"


def test_docstring_examples() -> None:
    result = doctest.testmod(floe_dagster_iceberg_pipes, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0


@pytest.mark.parametrize(
    ("table", "snapshot_id", "error", "message"),
    [
        ("orders", 1, ValueError, "Table 'orders': name the table with its namespace"),
        (42, 1, TypeError, "table=42 is not an Iceberg table"),
        ("sales.orders", None, ValueError, "Table 'sales.orders' is given by name.*snapshot_id="),
        ("sales.orders", "7", TypeError, "Table 'sales.orders': snapshot_id='7' is not"),
    ],
)
def test_what_cannot_be_reported_is_refused_before_anything_is_sent(
    table, snapshot_id, error, message
) -> None:
    # No Pipes context is touched: the error comes before anything is sent to Dagster.
    with pytest.raises(error, match=message):
        report_iceberg_snapshot(None, table, snapshot_id)  # type: ignore[arg-type]
