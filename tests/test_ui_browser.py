"""The Dagster UI as a new user meets it after the demo, in a real headless Chromium.

In a fresh clone the README's commands run, then the demo again (``infra.demo``, shared with
``test_example_project.py`` and ``test_readme.py``). One ``dagster-webserver -w workspace.yaml``
for this module serves the demo's Dagster instance and Iceberg home on a free loopback port, and
Playwright opens

- the asset page of a partitioned demo asset: it shows the row count of the Iceberg table as a
  whole (read with the package's table manager) and the table's columns;
- the Backfills tab, the demo's backfill and one of its runs: the backfill is listed, its runs
  belong to the ``daily_events`` job and can be re-executed.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from infra.browser import chromium_page, ensure_chromium
from infra.dagster_dev import DagsterDev, running
from infra.demo import DemoTwice, demo_twice, shared_directory
from infra.ports import DeadlineExceeded, poll_until

from floe_dagster_iceberg import EmbeddedCatalogConfig, IcebergCatalogResource

PAGE_TIMEOUT = 90
# raw/events: daily partitions, one run per day in the demo's backfill, so the latest
# materialization's partition holds a fraction of the table's rows.
ASSET_PATH = ["raw", "events"]
TABLE = "raw.events"

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("demo")]


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> DemoTwice:
    """A fresh clone: the README's demo and commands, then the demo again (shared)."""
    state = demo_twice(tmp_path_factory, worker_id)
    state.require_success()
    return state


@pytest.fixture(scope="module")
def webserver(demo: DemoTwice, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DagsterDev]:
    """``dagster-webserver`` on the demo's instance and tables, stopped after the module."""
    server = DagsterDev(
        tmp_path_factory.mktemp("webserver"),
        dagster_home=demo.dagster_home,
        iceberg_home=demo.iceberg_home,
        daemon=False,
    )
    with running(server):
        yield server


@pytest.fixture(scope="module")
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


def _backfill_and_runs(demo: DemoTwice) -> tuple[str, list[Any]]:
    """The demo's one backfill and its runs, from its Dagster instance."""
    with dg.DagsterInstance.from_config(str(demo.dagster_home)) as instance:
        (backfill,) = instance.get_backfills()
        records = instance.get_run_records(
            dg.RunsFilter(tags={"dagster/backfill": backfill.backfill_id})
        )
    return backfill.backfill_id, [record.dagster_run for record in records]


def _text_shown(page: Any, *texts: str) -> bool:
    body = page.inner_text("body")
    return all(text in body for text in texts)


def test_demo_backfill_is_listed_and_its_runs_can_be_re_executed(
    demo: DemoTwice, webserver: DagsterDev, chromium: Path
) -> None:
    backfill_id, runs = _backfill_and_runs(demo)
    run = runs[0]
    with chromium_page(chromium) as page:
        page.goto(f"{webserver.base_url}/runs?view=backfills")
        listed = page.locator(f'a[href="/runs/b/{backfill_id}"]')
        _wait(lambda: listed.count() > 0, f"backfill {backfill_id} in the Backfills tab", page)

        page.goto(f"{webserver.base_url}/runs/b/{backfill_id}")
        expected = ("daily_events", f"{len(runs)} partitions", "Completed")
        _wait(lambda: _text_shown(page, *expected), f"the backfill page showing {expected}", page)

        page.goto(f"{webserver.base_url}/runs/{run.run_id}")
        _wait(lambda: _text_shown(page, "Run of", "daily_events"), "the run's job", page)
        reexecute = page.get_by_role("button", name=re.compile(r"^Re-execute all"))
        _wait(lambda: reexecute.count() > 0 and reexecute.first.is_enabled(), "Re-execute", page)
