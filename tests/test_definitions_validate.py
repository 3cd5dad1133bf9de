"""The example's code location loads the ways users and deployments load it.

- ``dagster definitions validate -w workspace.yaml`` (what ``dagster dev -w workspace.yaml``
  loads), from a directory other than the repository root;
- ``dg check defs`` in the project's folder (component YAML and definitions);
- the module and working directory that ``dagster_cloud.yaml`` declares for Dagster+.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _run(command: list[str], cwd: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir(exist_ok=True)
    (dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLOE_", "DAGSTER_"))}
    env.update(DAGSTER_HOME=str(dagster_home), FLOE_ICEBERG_HOME=str(tmp_path / "floe"))
    completed = subprocess.run(
        command,
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert completed.returncode == 0, (
        f"{' '.join(command)} failed with code {completed.returncode}:\n"
        f"{completed.stdout}\n{completed.stderr}"
    )
    return completed


def test_workspace_yaml_validates_from_any_directory(tmp_path: Path) -> None:
    completed = _run(
        [str(BIN / "dagster"), "definitions", "validate", "-w", str(REPO_ROOT / "workspace.yaml")],
        cwd=tmp_path,
        tmp_path=tmp_path,
    )
    output = completed.stdout + completed.stderr
    assert "Validation successful for code location example_project" in output, output


def test_dg_check_defs_in_the_project_folder(tmp_path: Path) -> None:
    completed = _run(
        [str(BIN / "dg"), "check", "defs"], cwd=REPO_ROOT / "example_project", tmp_path=tmp_path
    )
    assert "All definitions loaded successfully" in completed.stdout + completed.stderr


def test_dagster_cloud_yaml_declares_a_loadable_location(tmp_path: Path) -> None:
    config = yaml.safe_load((REPO_ROOT / "dagster_cloud.yaml").read_text())
    (location,) = config["locations"]
    assert location["location_name"] == "example_project"
    build_directory = REPO_ROOT / location["build"]["directory"]
    assert (build_directory / "pyproject.toml").exists()
    working_directory = build_directory / location["working_directory"]
    module = location["code_source"]["module_name"]
    completed = _run(
        [
            str(BIN / "dagster"),
            "definitions",
            "validate",
            "-m",
            module,
            "-d",
            str(working_directory),
        ],
        cwd=tmp_path,
        tmp_path=tmp_path,
    )
    assert "Validation successful" in completed.stdout + completed.stderr


@pytest.mark.parametrize("variable", ["FLOE_CATALOG_URI", "FLOE_S3_ENDPOINT"])
def test_dagster_cloud_yaml_documents_the_catalog_variables(variable: str) -> None:
    readme = (REPO_ROOT / "example_project" / "README.md").read_text()
    assert variable in readme
