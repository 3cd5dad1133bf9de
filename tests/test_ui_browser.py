"""The Dagster UI as a new user meets it after the demo, in a real headless Chromium.

The demo runs (twice in a row, shared with ``test_example_project.py``), then
``dagster-webserver -w workspace.yaml`` serves its Dagster instance and Iceberg home on a free
loopback port, and Playwright opens the asset page of a partitioned demo asset. The page must
show the row count of the Iceberg table as a whole (read with the package's table manager) and
the table's columns.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from infra.browser import chromium_page, ensure_chromium
from infra.dagster_dev import DagsterDev, DagsterDevError
from infra.demo import DemoTwice, demo_twice, shared_directory
from infra.ports import DeadlineExceeded, poll_until

from floe_dagster_iceberg import EmbeddedCatalogConfig, IcebergCatalogResource

PAGE_TIMEOUT = 90
# raw/events: daily partitions, one run per day in the demo's backfill, so the latest
# materialization's partition holds a fraction of the table's rows.
ASSET_PATH = ["raw", "events"]
TABLE = "raw.events"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> DemoTwice:
    """The demo run twice in a row (shared with the other tests that need it)."""
    state = demo_twice(tmp_path_factory, worker_id)
    state.require_success()
    return state


@pytest.fixture
def webserver(demo: DemoTwice, tmp_path: Path) -> Iterator[DagsterDev]:
    """``dagster-webserver`` on the demo's instance and tables, stopped at the end."""
    server = DagsterDev(
        tmp_path, dagster_home=demo.dagster_home, iceberg_home=demo.iceberg_home, daemon=False
    )
    try:
        try:
            server.start()
        except DagsterDevError as error:
            pytest.fail(str(error), pytrace=False)
        yield server
    finally:
        server.stop()


@pytest.fixture
def chromium(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Path:
    return ensure_chromium(shared_directory(tmp_path_factory, worker_id))


def _row_count_shown(page: Any) -> int | None:
    """The number under the asset page's "Row count" heading, once it is rendered."""
    match = re.search(r"Row count\s+([\d,]+)", page.inner_text("body"))
    return int(match.group(1).replace(",", "")) if match else None


def _columns_shown(page: Any) -> list[str]:
    """The names in the asset page's "Columns" table (its first cell per row)."""
    table = page.locator("table").filter(has_text="Column name").first
    return [cell.strip() for cell in table.locator("tbody tr td:first-child").all_inner_texts()]


def _wait(condition: Any, what: str, page: Any) -> Any:
    try:
        return poll_until(condition, timeout=PAGE_TIMEOUT, what=what, interval=0.5)
    except DeadlineExceeded as error:
        text = page.inner_text("body")[:3000]
        pytest.fail(f"{error}\n--- page text ---\n{text}", pytrace=False)


def test_asset_page_shows_the_tables_row_count_and_columns(
    demo: DemoTwice, webserver: DagsterDev, chromium: Path
) -> None:
    manager = IcebergCatalogResource(
        catalog=EmbeddedCatalogConfig(home=str(demo.iceberg_home))
    ).get_manager()
    total_rows = manager.count(TABLE)
    columns = [field.name for field in manager.load_table(TABLE).schema().fields]
    assert total_rows > 0
    assert columns

    with chromium_page(chromium) as page:
        page.goto(f"{webserver.base_url}/assets/{'/'.join(ASSET_PATH)}")
        shown = _wait(lambda: _row_count_shown(page), "the asset page's row count", page)
        assert shown == total_rows, (
            f"the UI shows {shown} rows for {'/'.join(ASSET_PATH)}; the Iceberg table holds "
            f"{total_rows} (dagster/row_count must be the table's total, not the run's slice)"
        )
        shown_columns = _wait(lambda: _columns_shown(page), "the asset page's columns", page)
        assert shown_columns == columns
