"""The one seam to PyIceberg internals (pinned ``pyiceberg>=0.12,<0.13``).

Every private PyIceberg name the package needs is imported here and nowhere else; a test
fails when another module imports one. What is used, and why:

==========================================  =================================================
PyIceberg name                              used for
==========================================  =================================================
``io.pyarrow._get_parquet_writer_kwargs``   the table's Parquet writer properties (codec,
                                            level, page sizes), as PyIceberg applies them
``expressions.visitors._InclusiveMetrics``  whether a data file may hold rows of a slice
``expressions.visitors._StrictMetrics``     whether every row of a data file is in a slice
``Transaction._updates/_requirements``      the schema, spec and property changes a
                                            transaction staged, committed with our snapshot
``Transaction._table``                      the (staged) table a transaction works on
``table.update.snapshot._SnapshotProducer`` the base of the manifest-rewrite snapshot
                                            (maintenance), until it moves to the engine
==========================================  =================================================
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pyiceberg.expressions import BooleanExpression
from pyiceberg.expressions.visitors import _InclusiveMetricsEvaluator, _StrictMetricsEvaluator
from pyiceberg.io.pyarrow import _get_parquet_writer_kwargs
from pyiceberg.manifest import DataFile
from pyiceberg.schema import Schema
from pyiceberg.table import Table, Transaction
from pyiceberg.table.update import TableRequirement, TableUpdate
from pyiceberg.table.update.snapshot import _SnapshotProducer
from pyiceberg.typedef import Properties

SnapshotProducer = _SnapshotProducer
"""PyIceberg's base class of snapshot-producing table updates."""


def parquet_writer_options(properties: Properties) -> dict[str, Any]:
    """``pyarrow.parquet.ParquetWriter`` keyword arguments from the table's properties."""
    return _get_parquet_writer_kwargs(properties)


def file_may_hold(schema: Schema, expression: BooleanExpression) -> Callable[[DataFile], bool]:
    """A test, by column statistics, of whether a data file may hold rows matching ``expression``."""
    return _InclusiveMetricsEvaluator(schema, expression, case_sensitive=True).eval


def file_only_holds(schema: Schema, expression: BooleanExpression) -> Callable[[DataFile], bool]:
    """A test, by column statistics, of whether every row of a data file matches ``expression``."""
    return _StrictMetricsEvaluator(schema, expression, case_sensitive=True).eval


def staged_changes(
    transaction: Transaction,
) -> tuple[tuple[TableUpdate, ...], tuple[TableRequirement, ...]]:
    """The updates and requirements a transaction staged, not yet committed."""
    return transaction._updates, transaction._requirements


def transaction_table(transaction: Transaction) -> Table:
    """The table (a staged one for a create transaction) a transaction works on."""
    return transaction._table
