"""A fresh clone after the README's commands and the demo run again: one per test session.

The first test that asks makes a copy of the repository (``infra.readme``) and in it

1. runs the shell blocks of ``README.md`` in order, as a new user does: ``python3 tasks.py
   demo``, then the commands that materialize one partition and a range of partitions into the
   demo's Dagster instance;
2. runs ``python3 tasks.py demo`` a second time, which rebuilds the tables and the run history.

Several tests look at the result (the README's blocks, the re-run's report, its Dagster
instance and Iceberg tables, the UI on them) and share it, also across pytest-xdist workers:
a file lock guards a directory all workers see, and a JSON file there records what ran. A
failure is recorded too, so every test that needs the state fails with it and none runs it
again.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import pytest
from filelock import FileLock

from infra.readme import (
    README,
    BlockResult,
    copy_repository,
    failure_message,
    run_shell,
    run_shell_blocks,
)

DEMO_COMMAND = "python3 tasks.py demo"
REPORTED_RUNS = re.compile(r"Done in [0-9.]+ s: (\d+) Dagster runs")


@dataclass(frozen=True)
class DemoTwice:
    """The clone after the README's shell blocks and a second demo run."""

    clone: Path
    readme: list[BlockResult]
    rerun: BlockResult | None
    seconds: float

    @property
    def dagster_home(self) -> Path:
        """The demo's Dagster instance (the README's commands use the same)."""
        return self.clone / ".dagster_home"

    @property
    def iceberg_home(self) -> Path:
        """The example's embedded catalog and warehouse."""
        return self.clone / "example_project" / ".floe"

    def require_success(self) -> None:
        """Fail the calling test (not skip) unless every block and the re-run succeeded."""
        for result in self.readme:
            if result.returncode != 0:
                pytest.fail(failure_message(result), pytrace=False)
        if self.rerun is None or self.rerun.returncode != 0:
            output = self.rerun.output if self.rerun else "the README's blocks did not finish"
            pytest.fail(f"the second `{DEMO_COMMAND}` failed:\n{output}", pytrace=False)

    def reported_runs(self) -> list[int]:
        """The runs each demo run says it made, first run first ("... s: 20 Dagster runs")."""
        outputs = [r.output for r in self.readme] + [self.rerun.output if self.rerun else ""]
        return [int(m.group(1)) for out in outputs for m in REPORTED_RUNS.finditer(out)]


def shared_directory(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Path:
    """A directory every xdist worker of this session sees (the session's own without xdist).

    Example:
        >>> shared_directory(tmp_path_factory, "gw0")  # doctest: +SKIP
        PosixPath('/tmp/pytest-of-root/pytest-7')
    """
    base = tmp_path_factory.getbasetemp()
    return base if worker_id == "master" else base.parent


def demo_twice(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> DemoTwice:
    """The README's commands then the demo again in a fresh clone, once per session.

    Example:
        >>> state = demo_twice(tmp_path_factory, worker_id)  # doctest: +SKIP
        >>> state.require_success(); state.dagster_home  # doctest: +SKIP
    """
    root = shared_directory(tmp_path_factory, worker_id) / "readme-demo"
    record = root / "record.json"
    with FileLock(str(root) + ".lock"):
        if not record.exists():
            started = time.monotonic()
            clone = copy_repository(root / "clone")
            readme = run_shell_blocks(README, clone)
            ok = all(r.returncode == 0 for r in readme)
            rerun = run_shell(DEMO_COMMAND, "the second demo run", clone) if ok else None
            state = DemoTwice(clone, readme, rerun, time.monotonic() - started)
            record.write_text(json.dumps(asdict(state), default=str))
    data = json.loads(record.read_text())
    return DemoTwice(
        clone=Path(data["clone"]),
        readme=[BlockResult(**r) for r in data["readme"]],
        rerun=BlockResult(**data["rerun"]) if data["rerun"] else None,
        seconds=data["seconds"],
    )
