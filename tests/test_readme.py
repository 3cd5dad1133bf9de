"""Every command and code example of the READMEs runs as written, or is marked as a fragment.

Blocks fenced as ``bash``, ``sh``, ``shell``, ``console`` or ``python`` in ``README.md`` and
``example_project/README.md`` are run:

- a Python block as a script of its own (``__name__ == "__main__"``) in a subprocess, in a
  temporary directory with a temporary ``FLOE_ICEBERG_HOME`` and an absolute ``DAGSTER_HOME``;
  a ``dagster.Definitions`` it leaves at module scope must be the only one and load;
- the shell blocks of one README in document order, with bash (``set -euo pipefail``), in a
  copy of the repository (its project files, the ``.venv`` linked) with the venv's ``bin``
  first on ``PATH``, so ``python3 tasks.py demo`` and the commands after it run as a new user
  runs them after a fresh clone, without touching this checkout's demo state. README.md's run
  in the clone the demo tests share (``infra.demo``): one demo run serves both.

A block that cannot run here is marked, visibly in the README source, by the line directly
before its opening fence being exactly ``<!-- readme-test: fragment (REASON) -->``. A failing
block names its file and line.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from infra.demo import DemoTwice, demo_twice
from infra.readme import (
    EXAMPLE_README,
    README,
    REPO_ROOT,
    SHELL,
    Block,
    copy_repository,
    extract_blocks,
    failure_message,
    marker_problems,
    run_shell_blocks,
    tail,
)
from infra.readme import clean_env as _clean_env

READMES = [README, EXAMPLE_README]
BLOCK_TIMEOUT = 600

# A Python block runs through this wrapper: as __main__, then its module-level Definitions are
# checked the way a code location loads them (one per module, loadable).
PYTHON_RUNNER = """
import runpy, sys
namespace = runpy.run_path(sys.argv[1], run_name="__main__")
if "dagster" in sys.modules:
    import dagster as dg
    found = [name for name, value in namespace.items() if isinstance(value, dg.Definitions)]
    if len(found) > 1:
        sys.exit(f"more than one Definitions at module scope: {found}")
    for name in found:
        dg.Definitions.validate_loadable(namespace[name])
"""

ALL_BLOCKS = [block for path in READMES for block in extract_blocks(path)]
PYTHON_BLOCKS = [b for b in ALL_BLOCKS if b.language == "python" and not b.fragment]


def _unmarked_shell_blocks(path: Path) -> list[Block]:
    return [b for b in ALL_BLOCKS if b.path == path and b.language in SHELL and not b.fragment]


def test_every_readme_has_runnable_blocks_and_well_formed_markers() -> None:
    problems = [problem for path in READMES for problem in marker_problems(path)]
    assert problems == [], "\n".join(problems)
    for path in READMES:
        runnable = [b for b in ALL_BLOCKS if b.path == path and not b.fragment]
        assert runnable, f"{path.relative_to(REPO_ROOT)}: no block runs"


@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=[b.where for b in PYTHON_BLOCKS])
def test_python_block_runs(block: Block, tmp_path: Path) -> None:
    script = tmp_path / "readme_block.py"
    script.write_text(block.code)
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = _clean_env(FLOE_ICEBERG_HOME=str(tmp_path / "floe"), DAGSTER_HOME=str(dagster_home))
    completed = subprocess.run(
        [sys.executable, "-c", PYTHON_RUNNER, str(script)],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=BLOCK_TIMEOUT,
        check=False,
    )
    assert completed.returncode == 0, (
        f"{block.where}: the Python block failed (exit code {completed.returncode}); mark it "
        f"<!-- readme-test: fragment (REASON) --> if it cannot run here\n"
        f"{tail(completed.stdout + completed.stderr)}"
    )


@pytest.fixture(scope="session")
def readme_clone(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> DemoTwice:
    """A fresh clone in which README.md's shell blocks ran (shared with the demo tests)."""
    return demo_twice(tmp_path_factory, worker_id)


@pytest.mark.slow
@pytest.mark.xdist_group("demo")
def test_readme_shell_blocks_run_in_a_fresh_clone(readme_clone: DemoTwice) -> None:
    """``python3 tasks.py demo`` and the commands after it, in order, in one fresh clone."""
    for result in readme_clone.readme:
        assert result.returncode == 0, failure_message(result)
    assert [r.where for r in readme_clone.readme] == [
        b.where for b in _unmarked_shell_blocks(README)
    ]
    _assert_package_still_imported_from_here(readme_clone.clone)


@pytest.mark.slow
def test_example_readme_shell_blocks_run_in_a_fresh_clone(tmp_path: Path) -> None:
    clone = copy_repository(tmp_path / "clone")
    results = run_shell_blocks(EXAMPLE_README, clone)
    for result in results:
        assert result.returncode == 0, failure_message(result)
    assert [r.where for r in results] == [b.where for b in _unmarked_shell_blocks(EXAMPLE_README)]
    _assert_package_still_imported_from_here(tmp_path)


def _assert_package_still_imported_from_here(cwd: Path) -> None:
    """The commands kept to the clone: the venv imports the package from where it did before."""
    import floe_dagster_iceberg

    where = subprocess.run(
        [sys.executable, "-c", "import floe_dagster_iceberg as f; print(f.__file__)"],
        cwd=cwd,
        env=_clean_env(),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert Path(where).resolve() == Path(floe_dagster_iceberg.__file__).resolve(), where
