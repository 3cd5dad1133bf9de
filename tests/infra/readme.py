"""The code blocks of the READMEs, fragment markers, and running shell blocks in a clone.

Blocks fenced as ``bash``, ``sh``, ``shell``, ``console`` or ``python`` are runnable. A block
that cannot run in the tests is marked, visibly in the README source, by the line directly
before its opening fence being exactly ``<!-- readme-test: fragment (REASON) -->``.

Shell blocks run with bash (``set -euo pipefail``) in a copy of the repository (its project
files and the example project, with this checkout's ``.venv`` linked) and the venv's ``bin``
first on ``PATH``: as a new user runs them after a fresh clone, without touching this
checkout's demo state. The package itself is imported from the venv's (editable) install.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
README = REPO_ROOT / "README.md"
EXAMPLE_README = REPO_ROOT / "example_project" / "README.md"
SHELL = {"bash", "sh", "shell", "console"}
RUNNABLE = SHELL | {"python"}
FENCE = re.compile(r"^```\s*([\w+-]*)\s*$")
MARKER = re.compile(r"^<!-- readme-test: fragment \((?P<reason>.+)\) -->$")
BLOCK_TIMEOUT = 600
COPIED = ["README.md", "tasks.py", "pyproject.toml", "workspace.yaml", "dagster_cloud.yaml"]
NOT_COPIED = shutil.ignore_patterns(".floe", ".dagster_home", "__pycache__", "*.egg-info")


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


@dataclass(frozen=True)
class BlockResult:
    """How a shell block ended: where it is, its exit code and the tail of its output."""

    where: str
    code: str
    returncode: int
    output: str


def extract_blocks(path: Path) -> list[Block]:
    """Every fenced block of a runnable language in ``path``, with its fragment marker.

    Example:
        >>> blocks = extract_blocks(README)
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
        >>> marker_problems(README)
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


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without FLOE_/DAGSTER_ settings, the venv's bin first on PATH.

    Example:
        >>> clean_env(DAGSTER_HOME="/tmp/dh")["DAGSTER_HOME"]
        '/tmp/dh'
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLOE_", "DAGSTER_"))}
    env.pop("VIRTUAL_ENV", None)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def copy_repository(target: Path) -> Path:
    """A user's clone at ``target``: the project files, the example project, the venv linked.

    Example:
        >>> (copy_repository(tmp_path / "clone") / "tasks.py").exists()  # doctest: +SKIP
        True
    """
    target.mkdir(parents=True)
    for name in COPIED:
        shutil.copy2(REPO_ROOT / name, target / name)
    shutil.copytree(REPO_ROOT / "example_project", target / "example_project", ignore=NOT_COPIED)
    (target / ".venv").symlink_to(REPO_ROOT / ".venv", target_is_directory=True)
    return target


def shell_code(block: Block) -> str:
    """The commands of a shell block; a ``console`` block's are its ``$ `` lines."""
    if block.language != "console":
        return block.code
    return "\n".join(line[2:] for line in block.code.splitlines() if line.startswith("$ ")) + "\n"


def run_shell(code: str, where: str, clone: Path) -> BlockResult:
    """Run shell ``code`` with bash in ``clone``; the result keeps the output's last lines.

    Example:
        >>> run_shell("echo hi", "README.md:1", tmp_path).returncode  # doctest: +SKIP
        0
    """
    try:
        completed = subprocess.run(
            ["bash", "-c", "set -euo pipefail\n" + code],
            cwd=clone,
            env=clean_env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=BLOCK_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return BlockResult(where, code, -1, f"timed out after {BLOCK_TIMEOUT} s")
    output = completed.stdout + completed.stderr
    return BlockResult(where, code, completed.returncode, tail(output, 200))


def run_shell_blocks(path: Path, clone: Path) -> list[BlockResult]:
    """Run the unmarked shell blocks of ``path`` in order in ``clone``, up to the first failure.

    Example:
        >>> results = run_shell_blocks(README, copy_repository(tmp_path / "c"))  # doctest: +SKIP
        >>> all(r.returncode == 0 for r in results)  # doctest: +SKIP
        True
    """
    results = []
    for block in extract_blocks(path):
        if block.language in SHELL and not block.fragment:
            results.append(run_shell(shell_code(block), block.where, clone))
            if results[-1].returncode != 0:
                break
    return results


def failure_message(result: BlockResult) -> str:
    """What a failed block tells the reader: file and line, the commands, the output's end."""
    return (
        f"{result.where}: the shell block failed (exit code {result.returncode}) in a fresh "
        "clone; mark it <!-- readme-test: fragment (REASON) --> if it cannot run here\n"
        f"$ {result.code}{result.output}"
    )


def tail(text: str, lines: int = 60) -> str:
    return "\n".join(text.splitlines()[-lines:])
