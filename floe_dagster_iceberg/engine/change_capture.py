"""Change batches for an upsert: the newest change of each key, and which changes delete.

Example:
    >>> import pyarrow as pa
    >>> batch = pa.table({"id": [1, 1, 2], "lsn": [5, 7, 1], "op": ["U", "D", "I"]})
    >>> cdc = ChangeCapture(delete_column="op", version_column="lsn")
    >>> latest = latest_changes("crm.users", batch, ["id"], cdc)
    >>> latest.to_pylist(), delete_mask(latest, cdc).tolist()
    ([{'id': 1, 'lsn': 7, 'op': 'D'}, {'id': 2, 'lsn': 1, 'op': 'I'}], [True, False])
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from floe_dagster_iceberg.engine.config import ChangeCapture
from floe_dagster_iceberg.errors import UpsertKeyError

__all__ = ["delete_mask", "latest_changes", "newer_versions"]

_ROW = "__floe_change_row"


def latest_changes(
    table_name: str, data: pa.Table, keys: Sequence[str], cdc: ChangeCapture
) -> pa.Table:
    """``data`` with one row per key: the newest version (input order kept).

    Without a version column the input is returned as it is (duplicate keys are refused later).
    Two different rows of one key with the same newest version are refused: no order says which
    is the change to keep.
    """
    _check_columns(table_name, data, cdc)
    if cdc.version_column is None or data.num_rows < 2:
        return data
    if any(key not in data.column_names for key in keys):
        return data  # the upsert's validation names the missing key columns
    frame = pl.from_arrow(data.select([*keys, cdc.version_column])).with_row_index(_ROW)
    newest = frame.group_by(list(keys)).agg(pl.col(cdc.version_column).max())
    candidates = frame.join(newest, on=[*keys, cdc.version_column], how="inner")
    tied = candidates.group_by(list(keys)).agg(pl.col(_ROW)).filter(pl.col(_ROW).list.len() > 1)
    rows = candidates.group_by(list(keys), maintain_order=True).agg(pl.col(_ROW).first())
    for ties in tied.get_column(_ROW).to_list():
        picked = data.take(pa.array(ties))
        if picked.to_pylist().count(picked.slice(0, 1).to_pylist()[0]) != picked.num_rows:
            example = {k: picked.column(k)[0].as_py() for k in keys}
            raise UpsertKeyError(
                f"Table '{table_name}': the change batch holds different rows for key "
                f"{example} with the same newest {cdc.version_column!r}; give each change of a "
                "key its own version."
            )
    order = np.sort(rows.get_column(_ROW).to_numpy())
    return data.take(pa.array(order))


def delete_mask(data: pa.Table, cdc: ChangeCapture) -> np.ndarray:
    """Per input row, whether it is a delete."""
    if cdc.delete_column is None:
        return np.zeros(data.num_rows, dtype=bool)
    column = data.column(cdc.delete_column)
    values = pa.array(list(cdc.delete_values), type=column.type)
    return pc.fill_null(pc.is_in(column, value_set=values), False).to_numpy(zero_copy_only=False)


def newer_versions(target: pa.Array, source: pa.Array) -> np.ndarray:
    """Per matched pair, whether the change's version is strictly newer than the row's (a row
    without a version is older than any change)."""
    newer = pc.fill_null(pc.greater(source, target), True)
    return np.asarray(newer.to_numpy(zero_copy_only=False), dtype=bool)


def _check_columns(table_name: str, data: pa.Table, cdc: ChangeCapture) -> None:
    for role, name in (
        ("delete column", cdc.delete_column),
        ("version column", cdc.version_column),
    ):
        if name is not None and name not in data.column_names:
            raise UpsertKeyError(
                f"Table '{table_name}': the {role} {name!r} is not in the change batch, which "
                f"has columns {data.column_names}; add it or fix upsert_options."
            )
    if cdc.version_column is not None and data.column(cdc.version_column).null_count:
        raise UpsertKeyError(
            f"Table '{table_name}': the version column {cdc.version_column!r} holds "
            f"{data.column(cdc.version_column).null_count} null(s); every change needs a version."
        )
