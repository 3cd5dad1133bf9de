"""Every example in the docstrings of the lineage modules runs and shows what it says."""

import doctest
import importlib
import pkgutil

import pytest

import floe_dagster_iceberg.lineage

MODULES = sorted(
    name
    for _, name, _ in pkgutil.iter_modules(
        floe_dagster_iceberg.lineage.__path__, "floe_dagster_iceberg.lineage."
    )
)


@pytest.mark.parametrize("module_name", MODULES)
def test_docstring_examples(module_name: str) -> None:
    module = importlib.import_module(module_name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{module_name} shows no example"
    assert result.failed == 0
