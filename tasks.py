"""Two commands for a fresh machine with Python 3.11 and pip: ``demo`` and ``test``.

    python3 tasks.py demo   # venv + install + materialize the example project, print a report
    python3 tasks.py test   # venv + install test extras + run the whole test suite

Both create ``.venv`` next to this file on first use and reuse it afterwards.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
PYTHON = VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


# Run by the venv's Python: exit code 0 when the project and every requirement of the given
# extras (nested ones too, read from pyproject.toml) are installed in versions that fit.
_SATISFIED = """
import sys, tomllib
from importlib import metadata
from packaging.requirements import Requirement

project = tomllib.load(open(sys.argv[1], "rb"))["project"]
optional = project.get("optional-dependencies", {})
todo, seen, needed = [e for e in sys.argv[2].split(",") if e], set(), []
requirements = [Requirement(text) for text in project["dependencies"]]
while todo:
    extra = todo.pop()
    if extra not in seen:
        seen.add(extra)
        requirements += [Requirement(text) for text in optional[extra]]
    for requirement in requirements:
        if requirement.name == project["name"]:
            todo += sorted(requirement.extras - seen)
metadata.version(project["name"])
for requirement in requirements:
    if requirement.name == project["name"]:
        continue
    if requirement.marker and not requirement.marker.evaluate():
        continue
    if not requirement.specifier.contains(metadata.version(requirement.name), prereleases=True):
        sys.exit(1)
"""


def _installed(extras: str) -> bool:
    """True when the venv already holds the project and every requirement of ``extras``."""
    check = [str(PYTHON), "-c", _SATISFIED, str(ROOT / "pyproject.toml"), extras]
    return subprocess.run(check, capture_output=True, check=False).returncode == 0


def _ensure_venv(extras: str) -> None:
    if sys.version_info < (3, 11):  # noqa: UP036 - runs before the venv exists
        sys.exit(f"Python 3.11 or newer is needed, this is {sys.version.split()[0]}.")
    if not PYTHON.exists():
        print(f"Creating {VENV} ...", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    fingerprint = hashlib.sha256(
        (ROOT / "pyproject.toml").read_bytes() + extras.encode()
    ).hexdigest()
    stamp = VENV / f".installed-{extras or 'base'}"
    if stamp.exists() and stamp.read_text() == fingerprint:
        return
    if _installed(extras):  # e.g. the demo's packages, already there from the test extras
        stamp.write_text(fingerprint)
        return
    print(f"Installing floe-dagster-iceberg[{extras}] into {VENV} ...", flush=True)
    pip = [str(PYTHON), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "-e", f".[{extras}]" if extras else "."], check=True, cwd=ROOT)
    stamp.write_text(fingerprint)


def demo() -> int:
    _ensure_venv("demo")
    return subprocess.call([str(PYTHON), "-m", "example_project.demo"], cwd=ROOT)


def test(pytest_args: list[str]) -> int:
    _ensure_venv("test")
    # Two workers: many tests wait on servers and subprocesses, so this halves the wall time.
    workers = [] if any(arg.startswith("-n") for arg in pytest_args) else ["-n", "2"]
    return subprocess.call([str(PYTHON), "-m", "pytest", *workers, *pytest_args], cwd=ROOT)


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in ("demo", "test"):
        print(__doc__)
        return 2
    return demo() if sys.argv[1] == "demo" else test(sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
