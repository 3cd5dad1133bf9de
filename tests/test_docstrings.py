"""Every example in the public docstrings runs and shows what it says."""

import doctest
import importlib
import pkgutil

import pytest

import floe_dagster_iceberg

MODULES = sorted(
    name
    for _, name, _ in pkgutil.walk_packages(floe_dagster_iceberg.__path__, "floe_dagster_iceberg.")
)


@pytest.mark.parametrize("module_name", ["floe_dagster_iceberg", *MODULES])
def test_docstring_examples(module_name: str, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # examples using the embedded default write under ./.floe
    module = importlib.import_module(module_name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
