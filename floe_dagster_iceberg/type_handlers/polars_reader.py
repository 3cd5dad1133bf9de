"""The reader of ``polars.LazyFrame`` inputs."""

from __future__ import annotations

from enum import Enum

__all__ = ["PolarsReader"]


class PolarsReader(str, Enum):
    """How ``polars.LazyFrame`` inputs read their files.

    ``native`` (the default) is Polars' own Iceberg reader; ``pyiceberg`` reads through
    PyIceberg, the choice where the native reader leaves threads hanging (reported in Kubernetes
    pods).

    Example:
        >>> PolarsReader("pyiceberg").value
        'pyiceberg'
    """

    NATIVE = "native"
    PYICEBERG = "pyiceberg"
