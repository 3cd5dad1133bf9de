"""The benchmark suite runs end to end at smoke size (never the full size: that is not a test).

Runs ``benchmarks/run.py --smoke`` for raw Parquet (the floor) and floe in a subprocess (it starts
its own PostgreSQL for the concurrent writers) and checks that every workload produced a result
and that none of these systems failed. It does not create the dagster-iceberg environment.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SYSTEMS = ["raw_parquet", "floe"]
CASES = [
    "sequential_writes",
    "concurrent_writes_2",
    "upsert",
    "partition_read",
    "range_backfill",
    "compaction",
    "history_growth_3",
]


@pytest.mark.slow
def test_smoke_run_covers_every_workload_without_errors(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "benchmarks/run.py",
            "--smoke",
            "--systems",
            ",".join(SYSTEMS),
            "--writers",
            "2",
            "--out",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (json_path,) = tmp_path.glob("*.json")
    results = json.loads(json_path.read_text())

    assert results["smoke"] is True
    assert sorted(results["summary"]) == sorted(CASES)
    for case in CASES:
        for system in SYSTEMS:
            entry = results["summary"][case][system]
            if case == "upsert" and system == "raw_parquet":
                assert entry["status"] == "n/a", entry
                continue
            assert entry["status"] == "ok", (case, system, entry.get("reason"))
            assert entry["median"] > 0
            assert entry["peak_rss_mb"] > 0
            assert max(entry["failures"]) == 0, (case, system, entry)
    assert results["machine"]["cpu_count"] >= 1
    assert results["versions"]["floe"]["floe-dagster-iceberg"] != "not installed"
    assert {t["target"] for t in results["targets"]} >= {"concurrent writes", "range backfill"}
    markdown = json_path.with_suffix(".md").read_text()
    assert "| 3. upsert into one partition |" in markdown
    assert "## 7. History growth" in markdown
    extra = results["summary"]["history_growth_3"]["floe"]["extra"]
    assert extra["history_commits"] == 3
    assert extra["read_seconds"] > 0
    assert "dagster_iceberg" not in results["systems"]
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return
    assert json_path.with_suffix(".png").stat().st_size > 10_000
