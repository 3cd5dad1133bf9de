"""The demo (``python -m example_project.demo``) run twice in a row, once per test session.

Several tests look at what the demo leaves behind: its report, its Dagster instance, its
Iceberg tables, the UI on them. They share one pair of demo runs, made by the first test that
asks, also across pytest-xdist workers: a file lock guards a directory all workers see, and a
JSON file there records both runs (exit codes and output) for the others. A demo run that
fails is recorded too, so every test that needs it fails with its output, none runs it again.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from filelock import FileLock

REPO_ROOT = Path(__file__).resolve().parents[2]
DEMO_TIMEOUT = 400


@dataclass(frozen=True)
class DemoRun:
    """One run of the demo: its exit code, its output and how long it took."""

    returncode: int
    output: str
    seconds: float


@dataclass(frozen=True)
class DemoTwice:
    """Two demo runs in a row on the same homes; the state is the second run's."""

    root: Path
    first: DemoRun
    second: DemoRun

    @property
    def dagster_home(self) -> Path:
        return self.root / "dagster_home"

    @property
    def iceberg_home(self) -> Path:
        return self.root / "iceberg"

    def require_success(self) -> None:
        """Fail the calling test (not skip) unless both runs succeeded."""
        for name, run in (("first", self.first), ("second", self.second)):
            if run.returncode != 0:
                pytest.fail(
                    f"the {name} demo run exited with code {run.returncode}:\n{run.output}",
                    pytrace=False,
                )


def shared_directory(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Path:
    """A directory every xdist worker of this session sees (the session's own without xdist).

    Example:
        >>> shared_directory(tmp_path_factory, "gw0")  # doctest: +SKIP
        PosixPath('/tmp/pytest-of-root/pytest-7')
    """
    base = tmp_path_factory.getbasetemp()
    return base if worker_id == "master" else base.parent


def run_demo(root: Path) -> DemoRun:
    """``python -m example_project.demo`` from the repository root with homes under ``root``.

    Example:
        >>> run_demo(tmp_path).returncode  # doctest: +SKIP
        0
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLOE_", "DAGSTER_"))}
    env.update(FLOE_ICEBERG_HOME=str(root / "iceberg"), DAGSTER_HOME=str(root / "dagster_home"))
    started = time.monotonic()
    try:
        completed = subprocess.run(
            [sys.executable, "-m", "example_project.demo"],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=DEMO_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        output = (error.stdout or b"").decode() if isinstance(error.stdout, bytes) else error.stdout
        return DemoRun(-1, f"timed out after {DEMO_TIMEOUT} s\n{output or ''}", DEMO_TIMEOUT)
    output = completed.stdout + completed.stderr
    return DemoRun(completed.returncode, output, time.monotonic() - started)


def demo_twice(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> DemoTwice:
    """The demo run twice in a row, once per session, shared by every test and worker.

    Example:
        >>> state = demo_twice(tmp_path_factory, worker_id)  # doctest: +SKIP
        >>> state.require_success(); state.dagster_home  # doctest: +SKIP
    """
    root = shared_directory(tmp_path_factory, worker_id) / "demo-twice"
    record = root / "runs.json"
    with FileLock(str(root) + ".lock"):
        if not record.exists():
            root.mkdir(exist_ok=True)
            first = run_demo(root)
            second = run_demo(root) if first.returncode == 0 else DemoRun(-1, "not run", 0.0)
            record.write_text(json.dumps({"first": vars(first), "second": vars(second)}))
    runs = json.loads(record.read_text())
    return DemoTwice(root, DemoRun(**runs["first"]), DemoRun(**runs["second"]))
