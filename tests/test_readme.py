"""Every command and code example of the READMEs runs as written, or is marked as a fragment.

Blocks fenced as ``bash``, ``sh``, ``shell``, ``console`` or ``python`` in ``README.md`` and
``example_project/README.md`` are run:

- a Python block as a script of its own (``__name__ == "__main__"``) in a subprocess, in a
  temporary directory with a temporary ``FLOE_ICEBERG_HOME`` and an absolute ``DAGSTER_HOME``;
  a ``dagster.Definitions`` it leaves at module scope must be the only one and load;
- the shell blocks of one README in document order, with bash (``set -euo pipefail``), in a
  copy of the repository (its project files, the ``.venv`` linked) with the venv's ``bin``
  first on ``PATH``, so ``python3 tasks.py demo`` and the commands after it run as a new user
  runs them after a fresh clone, without touching this checkout's demo state.

A block that cannot run here is marked, visibly in the README source, by the line directly
before its opening fence being exactly ``<!-- readme-test: fragment (REASON) -->``. A failing
block names its file and line.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
READMES = [REPO_ROOT / "README.md", REPO_ROOT / "example_project" / "README.md"]
SHELL = {"bash", "sh", "shell", "console"}
RUNNABLE = SHELL | {"python"}
FENCE = re.compile(r"^```\s*([\w+-]*)\s*$")
MARKER = re.compile(r"^<!-- readme-test: fragment \((?P<reason>.+)\) -->$")
BLOCK_TIMEOUT = 600
# The project files a user's clone has and the shell blocks use (the package itself is
# imported from the installed, editable checkout).
COPIED = ["README.md", "tasks.py", "pyproject.toml", "workspace.yaml", "dagster_cloud.yaml"]
NOT_COPIED = shutil.ignore_patterns(".floe", ".dagster_home", "__pycache__", "*.egg-info")

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


@dataclass(frozen=True)
class Block:
    """A fenced code block of a README: where it starts, its language, code and marker."""

    path: Path
    line: int
    language: str
    code: str
    fragment: str | None

    @property
    def where(self) -> str:
        """``README.md:42``: the file (relative to the repository) and the fence's line."""
        return f"{self.path.relative_to(REPO_ROOT)}:{self.line}"


def extract_blocks(path: Path) -> list[Block]:
    """Every fenced block of a runnable language in ``path``, with its fragment marker.

    Example:
        >>> blocks = extract_blocks(REPO_ROOT / "README.md")
        >>> {"python", "bash"} <= {block.language for block in blocks}
        True
    """
    lines = path.read_text().splitlines()
    blocks: list[Block] = []
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if not opening:
            index += 1
            continue
        end = next(i for i in range(index + 1, len(lines)) if lines[i].startswith("```"))
        language = opening.group(1).lower()
        if language in RUNNABLE:
            marker = MARKER.match(lines[index - 1]) if index else None
            code = "\n".join(lines[index + 1 : end]) + "\n"
            reason = marker.group("reason") if marker else None
            blocks.append(Block(path, index + 1, language, code, reason))
        index = end + 1
    return blocks


def marker_problems(path: Path) -> list[str]:
    """Markers that are malformed, give no real reason, or mark no runnable block.

    Example:
        >>> marker_problems(REPO_ROOT / "README.md")
        []
    """
    lines = path.read_text().splitlines()
    problems = []
    for number, line in enumerate(lines, start=1):
        if "readme-test" not in line:
            continue
        where = f"{path.relative_to(REPO_ROOT)}:{number}"
        marker = MARKER.match(line)
        following = FENCE.match(lines[number]) if number < len(lines) else None
        if not marker:
            problems.append(f"{where}: write the marker as <!-- readme-test: fragment (REASON) -->")
        elif len(marker.group("reason").split()) < 3:
            problems.append(f"{where}: say why the block cannot run, in a few words")
        elif not following or following.group(1).lower() not in RUNNABLE:
            problems.append(f"{where}: the marker must be the line directly before a code fence")
    return problems


def _clean_env(**extra: str) -> dict[str, str]:
    """This environment without FLOE_/DAGSTER_ settings, the venv's bin first on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLOE_", "DAGSTER_"))}
    env.pop("VIRTUAL_ENV", None)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def _shell_code(block: Block) -> str:
    """The commands of a shell block; a ``console`` block's are its ``$ `` lines."""
    if block.language != "console":
        return block.code
    return "\n".join(line[2:] for line in block.code.splitlines() if line.startswith("$ ")) + "\n"


def _tail(text: str, lines: int = 60) -> str:
    return "\n".join(text.splitlines()[-lines:])


def _copy_repository(target: Path) -> Path:
    """A user's clone: the project files, the example project, and this checkout's venv."""
    target.mkdir()
    for name in COPIED:
        shutil.copy2(REPO_ROOT / name, target / name)
    shutil.copytree(REPO_ROOT / "example_project", target / "example_project", ignore=NOT_COPIED)
    (target / ".venv").symlink_to(REPO_ROOT / ".venv", target_is_directory=True)
    return target


ALL_BLOCKS = [block for path in READMES for block in extract_blocks(path)]
PYTHON_BLOCKS = [b for b in ALL_BLOCKS if b.language == "python" and not b.fragment]


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
        f"{_tail(completed.stdout + completed.stderr)}"
    )


@pytest.mark.slow
@pytest.mark.parametrize("readme", READMES, ids=[str(p.relative_to(REPO_ROOT)) for p in READMES])
def test_shell_blocks_run_in_a_fresh_clone(readme: Path, tmp_path: Path) -> None:
    blocks = [b for b in ALL_BLOCKS if b.path == readme and b.language in SHELL]
    clone = _copy_repository(tmp_path / "clone")
    env = _clean_env()
    for block in blocks:
        if block.fragment:
            continue
        completed = subprocess.run(
            ["bash", "-c", "set -euo pipefail\n" + _shell_code(block)],
            cwd=clone,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=BLOCK_TIMEOUT,
            check=False,
        )
        assert completed.returncode == 0, (
            f"{block.where}: the shell block failed (exit code {completed.returncode}) in a "
            f"fresh clone; mark it <!-- readme-test: fragment (REASON) --> if it cannot run "
            f"here\n$ {block.code}{_tail(completed.stdout + completed.stderr)}"
        )
    # The commands kept to the clone: the venv still imports the package from this checkout.
    where = subprocess.run(
        [sys.executable, "-c", "import floe_dagster_iceberg as f; print(f.__file__)"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert Path(where).resolve().is_relative_to(REPO_ROOT), where
