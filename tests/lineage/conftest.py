"""Every lineage test starts with OpenLineage unconfigured and ends with its events flushed."""

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from floe_dagster_iceberg.lineage import flush_lineage
from lineage.support import FLUSH_SECONDS, Receiver


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(autouse=True)
def no_openlineage_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """Every test starts with OpenLineage unconfigured: no variables, no openlineage.yml."""
    for key in list(os.environ):
        if key.startswith("OPENLINEAGE"):
            monkeypatch.delenv(key)
    workdir = tmp_path / "work"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    yield workdir
    flush_lineage(FLUSH_SECONDS)
