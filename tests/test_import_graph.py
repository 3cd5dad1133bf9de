"""The package's layering: the engine knows nothing of Dagster, and PyIceberg's private names
are used in one module only."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "floe_dagster_iceberg"
SEAM = PACKAGE / "engine" / "_pyiceberg.py"


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """``(module, names)`` for every import statement of a module, nested ones included."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, [alias.name for alias in node.names]))
        elif isinstance(node, ast.Import):
            found.extend((alias.name, []) for alias in node.names)
    return found


def _is_private(module: str, names: list[str]) -> bool:
    return any(part.startswith("_") for part in module.split(".")) or any(
        name.startswith("_") for name in names
    )


def test_private_pyiceberg_names_only_in_the_seam() -> None:
    offenders = [
        f"{path.relative_to(PACKAGE.parent)}: {module} {names}"
        for path in _modules()
        if path != SEAM
        for module, names in _imports(path)
        if module.split(".")[0] == "pyiceberg" and _is_private(module, names)
    ]
    assert offenders == []


def test_the_seam_uses_private_names() -> None:
    """The seam is where they are; if it has none left, this test and the seam can go."""
    assert any(
        module.split(".")[0] == "pyiceberg" and _is_private(module, names)
        for module, names in _imports(SEAM)
    )


def test_engine_never_imports_dagster() -> None:
    offenders = [
        f"{path.relative_to(PACKAGE.parent)}: {module}"
        for path in sorted((PACKAGE / "engine").rglob("*.py"))
        for module, _ in _imports(path)
        if module.split(".")[0] in {"dagster", "dagster_graphql", "dagster_webserver"}
        or (
            module.startswith("floe_dagster_iceberg.")
            and not module.startswith(
                ("floe_dagster_iceberg.engine", "floe_dagster_iceberg.errors")
            )
        )
    ]
    assert offenders == []
