"""The example's code location loads the ways users and deployments load it.

- ``dagster definitions validate -w workspace.yaml`` (what ``dagster dev -w workspace.yaml``
  loads), from a directory other than the repository root;
- ``dg check defs`` in the project's folder (component YAML and definitions);
- the module and working directory that ``dagster_cloud.yaml`` declares for Dagster+.

A code location whose Iceberg assets have bad IO-manager metadata fails the same commands, with
a message naming each asset, the key, the bad value and the fix.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
import yaml

from floe_dagster_iceberg import (
    EmbeddedCatalogConfig,
    IcebergCatalogResource,
    IcebergIOManager,
    InvalidInputError,
    validate_iceberg_definitions,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _run(
    command: list[str], cwd: Path, tmp_path: Path, *, succeeds: bool = True
) -> subprocess.CompletedProcess[str]:
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
    assert (completed.returncode == 0) is succeeds, (
        f"{' '.join(command)} exited with code {completed.returncode}:\n"
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


BAD_LOCATION = """
import dagster as dg
import pyarrow as pa
from floe_dagster_iceberg import create_iceberg_resources, validate_iceberg_definitions

daily = dg.DailyPartitionsDefinition(start_date="2024-01-01")


@dg.asset(io_manager_key="iceberg")
def upstream() -> pa.Table:
    return pa.table({"id": [1]})


@dg.asset(io_manager_key="iceberg", partitions_def=daily, deps=[upstream])
def no_partition_expr() -> pa.Table: ...


@dg.asset(io_manager_key="iceberg", metadata={"write_mode": "merge"})
def bad_write_mode() -> pa.Table: ...


@dg.asset(io_manager_key="iceberg", metadata={"schema_update_mode": "loose"})
def bad_schema_mode() -> pa.Table: ...


@dg.asset(io_manager_key="iceberg", metadata={"partition_spec_update_mode": "evolve"})
def bad_spec_mode() -> pa.Table: ...


@dg.asset(
    io_manager_key="iceberg",
    metadata={"write_mode": "upsert", "upsert_options": {"join_cols": ["id"], "scope": "all"}},
)
def bad_scope() -> pa.Table: ...


@dg.asset(io_manager_key="iceberg", metadata={"write_mode": "upsert"})
def upsert_without_keys() -> pa.Table: ...


@dg.asset(
    io_manager_key="iceberg",
    metadata={"write_mode": "upsert", "upsert_options": {"join_cols": ["id"], "on": "id"}},
)
def unknown_upsert_option() -> pa.Table: ...


@dg.asset  # another IO manager: not checked
def elsewhere() -> int:
    return 1


defs = validate_iceberg_definitions(
    dg.Definitions(
        assets=[
            upstream, no_partition_expr, bad_write_mode, bad_schema_mode, bad_spec_mode,
            bad_scope, upsert_without_keys, unknown_upsert_option, elsewhere,
        ],
        resources=create_iceberg_resources(),
    )
)
"""

EXPECTED_PROBLEMS = [
    "- Asset no_partition_expr is partitioned but has no partition_expr metadata naming the "
    'column that holds the partition; add metadata={"partition_expr": "<column>"}.',
    "- Asset bad_write_mode: write_mode='merge' is not valid; use one of 'append', "
    "'overwrite', 'upsert'.",
    "- Asset bad_schema_mode: schema_update_mode='loose' is not valid; use one of 'additive', "
    "'error', 'update'.",
    "- Asset bad_spec_mode: partition_spec_update_mode='evolve' is not valid; use one of "
    "'error', 'update'.",
    "- Asset bad_scope: upsert_options.scope='all' is not valid; use one of 'partition', 'table'.",
    "- Asset upsert_without_keys: write_mode 'upsert' needs the key columns that identify a row; "
    'add them, e.g. metadata={"write_mode": "upsert", "upsert_options": {"join_cols": ["id"]}}.',
    "- Asset unknown_upsert_option: unknown upsert_options key(s) 'on'; the keys are join_cols, "
    "when_matched_update_all, when_not_matched_insert_all, scope, delete_column, delete_values, "
    "version_column, delete_missing.",
]


def _location(tmp_path: Path, source: str) -> Path:
    location = tmp_path / "location"
    location.mkdir()
    (location / "definitions.py").write_text(source)
    (location / "workspace.yaml").write_text(
        "load_from:\n  - python_file:\n      relative_path: definitions.py\n"
        "      location_name: lakehouse\n"
    )
    return location


def test_bad_iceberg_metadata_fails_definitions_validate_naming_every_asset(tmp_path: Path) -> None:
    location = _location(tmp_path, BAD_LOCATION)
    completed = _run(
        [str(BIN / "dagster"), "definitions", "validate", "-w", str(location / "workspace.yaml")],
        cwd=tmp_path,
        tmp_path=tmp_path,
        succeeds=False,
    )
    output = completed.stdout + completed.stderr
    assert "Validation failed for code location lakehouse" in output, output
    assert "Iceberg IO manager metadata is invalid for 7 asset(s):" in output, output
    for problem in EXPECTED_PROBLEMS:
        assert problem in output, f"{problem}\n---\n{output}"
    assert "elsewhere" not in output
    assert not (tmp_path / "floe").exists()  # nothing ran, no table was created


def test_valid_iceberg_metadata_passes_definitions_validate(tmp_path: Path) -> None:
    fixed = BAD_LOCATION.replace(
        "partitions_def=daily, deps=[upstream])",
        'partitions_def=daily, deps=[upstream], metadata={"partition_expr": "ts"})',
    )
    fixed = fixed.split('@dg.asset(io_manager_key="iceberg", metadata={"write_mode": "merge"})')[0]
    fixed += """
defs = validate_iceberg_definitions(
    dg.Definitions(assets=[upstream, no_partition_expr], resources=create_iceberg_resources())
)
"""
    location = _location(tmp_path, fixed)
    completed = _run(
        [str(BIN / "dagster"), "definitions", "validate", "-w", str(location / "workspace.yaml")],
        cwd=tmp_path,
        tmp_path=tmp_path,
    )
    assert (
        "Validation successful for code location lakehouse" in completed.stdout + completed.stderr
    )


def test_bad_iceberg_metadata_fails_dg_check_defs(tmp_path: Path) -> None:
    project = tmp_path / "lakehouse"
    package = project / "lakehouse"
    (package / "defs").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "defs" / "__init__.py").write_text("")
    (package / "definitions.py").write_text(BAD_LOCATION)
    (project / "pyproject.toml").write_text(
        '[project]\nname = "lakehouse"\nversion = "0.1.0"\n\n'
        '[tool.dg]\ndirectory_type = "project"\n\n'
        '[tool.dg.project]\nroot_module = "lakehouse"\n'
        'code_location_target_module = "lakehouse.definitions"\n'
    )
    completed = _run(
        [str(BIN / "dg"), "check", "defs"], cwd=project, tmp_path=tmp_path, succeeds=False
    )
    output = completed.stdout + completed.stderr
    assert "Iceberg IO manager metadata is invalid for 7 asset(s):" in output, output
    for problem in EXPECTED_PROBLEMS:
        assert problem in output, f"{problem}\n---\n{output}"


def test_iceberg_assets_are_labelled_for_the_ui_and_others_are_left_alone(tmp_path: Path) -> None:
    catalog = IcebergCatalogResource(catalog=EmbeddedCatalogConfig(home=str(tmp_path)))

    @dg.asset(key_prefix="sales", io_manager_key="io_manager", metadata={"namespace": "crm"})
    def orders() -> None: ...

    @dg.asset(kinds={"python", "polars", "s3"}, io_manager_key="io_manager")
    def three_kinds() -> None: ...

    @dg.asset(io_manager_key="files")
    def elsewhere() -> None: ...

    defs = validate_iceberg_definitions(
        dg.Definitions(
            assets=[orders, three_kinds, elsewhere],
            resources={
                "io_manager": IcebergIOManager(catalog=catalog),
                "files": dg.FilesystemIOManager(base_dir=str(tmp_path / "files")),
            },
        )
    )
    specs = {spec.key.to_user_string(): spec for spec in defs.resolve_all_asset_specs()}
    assert specs["sales/orders"].kinds == {"iceberg"}
    assert specs["sales/orders"].tags["dagster/storage_kind"] == "iceberg"
    assert specs["sales/orders"].metadata["dagster/table_name"] == "floe.crm.orders"
    assert specs["three_kinds"].kinds == {"python", "polars", "s3"}  # Dagster allows no fourth
    assert specs["three_kinds"].tags["dagster/storage_kind"] == "iceberg"
    assert "dagster/storage_kind" not in specs["elsewhere"].tags
    assert "dagster/table_name" not in specs["elsewhere"].metadata
    dg.Definitions.validate_loadable(defs)


def test_multi_partitions_spec_and_names_are_checked_when_definitions_load(tmp_path: Path) -> None:
    regions = dg.StaticPartitionsDefinition(["eu", "us"])
    multi = dg.MultiPartitionsDefinition(
        {"date": dg.DailyPartitionsDefinition("2024-01-01"), "region": regions}
    )

    @dg.asset(io_manager_key="iceberg", partitions_def=multi, metadata={"partition_expr": "ts"})
    def facts() -> None: ...

    @dg.asset(io_manager_key="iceberg", metadata={"partition_spec": {"ts": "fortnight"}})
    def spec() -> None: ...

    @dg.asset(io_manager_key="iceberg", metadata={"namespace": "a/b"})
    def escaping() -> None: ...

    catalog = IcebergCatalogResource(catalog=EmbeddedCatalogConfig(home=str(tmp_path)))
    with pytest.raises(InvalidInputError) as refused:
        validate_iceberg_definitions(
            dg.Definitions(
                assets=[facts, spec, escaping],
                resources={"iceberg": IcebergIOManager(catalog=catalog)},
            )
        )
    message = str(refused.value)
    assert message.startswith("Iceberg IO manager metadata is invalid for 3 asset(s):\n")
    assert (
        "- Asset facts is multi-partitioned over ['date', 'region'], but partition_expr is 'ts'; "
        'map each dimension to its column: metadata={"partition_expr": '
        '{"date": "<column>", "region": "<column>"}}.'
    ) in message
    assert "- Asset spec: invalid partition_spec metadata:" in message
    assert "fortnight" in message
    assert "- Asset escaping: " in message
    assert not (tmp_path / "catalog.db").exists()  # nothing was created
