"""The example lakehouse: a Dagster project (package ``example_project/example_project``) and its demo.

``dagster dev -w workspace.yaml`` and ``dg`` load the project package itself (their working
directory is this folder). From the repository root, ``python -m example_project.demo`` finds
this folder first, so its modules are extended with the project package's: both ways, the
project's modules have the same names (``example_project.definitions``, ``example_project.defs``).
"""

from pathlib import Path

__path__.append(str(Path(__file__).resolve().parent / "example_project"))
