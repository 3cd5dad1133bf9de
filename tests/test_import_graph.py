"""The package's layering: the engine knows nothing of Dagster, and PyIceberg's private names
are used in one module only."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "floe_dagster_iceberg"
SEAM = PACKAGE / "engine" / "_pyiceberg.py"
CROSS_CUTTING = (
    "floe_dagster_iceberg.errors",
    "floe_dagster_iceberg.redaction",
    "floe_dagster_iceberg.version",
)
"""Modules without Dagster that the engine may use."""


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
            and not module.startswith(("floe_dagster_iceberg.engine", *CROSS_CUTTING))
        )
    ]
    assert offenders == []


def test_cross_cutting_modules_never_import_dagster_or_the_face() -> None:
    offenders = [
        f"{name}: {module}"
        for name in CROSS_CUTTING
        for module, _ in _imports(PACKAGE.parent / (name.replace(".", "/") + ".py"))
        if module.split(".")[0] == "dagster"
        or (module.startswith("floe_dagster_iceberg.") and not module.startswith(CROSS_CUTTING))
    ]
    assert offenders == []


def test_no_import_cycles() -> None:
    """Module-level imports between the package's modules form no cycle."""
    graph: dict[str, set[str]] = {}
    for path in _modules():
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        name = name.removesuffix(".__init__")
        tree = ast.parse(path.read_text())
        graph[name] = {
            node.module
            for node in tree.body
            if isinstance(node, ast.ImportFrom)
            and node.module
            and node.module.startswith("floe_dagster_iceberg")
        }
    cycles = []
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for target in graph.get(node, ()):
            if state.get(target) == 1:
                cycles.append(
                    [*trail[trail.index(target) :], target] if target in trail else [node, target]
                )
            elif target in graph and state.get(target) is None:
                visit(target, [*trail, target])
        state[node] = 2

    for node in sorted(graph):
        if state.get(node) is None:
            visit(node, [node])
    assert cycles == []
