"""Which live data files a slice of the table covers, wholly or in part."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pyarrow as pa
from pyiceberg.expressions import AlwaysTrue, BooleanExpression
from pyiceberg.expressions.visitors import bind, expression_evaluator, strict_projection
from pyiceberg.io import FileIO
from pyiceberg.io.pyarrow import ArrowScan, expression_to_pyarrow
from pyiceberg.manifest import DataFile
from pyiceberg.schema import Schema
from pyiceberg.table import DataScan, FileScanTask
from pyiceberg.table.metadata import TableMetadata

from floe_dagster_iceberg.engine._pyiceberg import file_only_holds


@dataclass
class SliceFiles:
    """The live data files with rows in a slice.

    ``whole`` hold only rows of the slice (by partition or column statistics); ``partial`` may
    also hold rows outside it, so replacing the slice rewrites them without its rows.
    """

    whole: list[DataFile] = field(default_factory=list)
    partial: list[FileScanTask] = field(default_factory=list)


def files_in_slice(
    metadata: TableMetadata, io: FileIO, row_filter: BooleanExpression
) -> SliceFiles:
    """Plan the files of ``metadata``'s current snapshot that hold rows of ``row_filter``.

    Example:
        >>> # files_in_slice(table.metadata, table.io, EqualTo("day", "2024-01-01")).whole
    """
    found = SliceFiles()
    if metadata.current_snapshot() is None:
        return found
    schema = metadata.schema()
    specs = metadata.specs()
    only_holds = file_only_holds(schema, row_filter)
    partition_only_holds = {}
    scan = DataScan(table_metadata=metadata, io=io, row_filter=row_filter, case_sensitive=True)
    for task in scan.plan_files():
        data_file = task.file
        spec_id = data_file.spec_id
        if spec_id not in partition_only_holds:
            spec = specs[spec_id]
            partition_schema = spec.partition_type(schema)
            projected = strict_projection(schema, spec, True)(row_filter)
            partition_only_holds[spec_id] = expression_evaluator(
                Schema(*partition_schema.fields), projected, True
            )
        if partition_only_holds[spec_id](data_file.partition) or only_holds(data_file):
            found.whole.append(data_file)
        else:
            found.partial.append(task)
    return found


def rows_outside(
    metadata: TableMetadata,
    io: FileIO,
    tasks: Sequence[FileScanTask],
    row_filter: BooleanExpression,
) -> list[tuple[DataFile, pa.Table | None]]:
    """For each partly covered file, its rows outside the slice, or ``None`` when it holds no
    row of the slice at all (then it is left as it is)."""
    schema = metadata.schema()
    scan = ArrowScan(
        table_metadata=metadata, io=io, projected_schema=schema, row_filter=AlwaysTrue()
    )
    inside = expression_to_pyarrow(bind(schema, row_filter, case_sensitive=True), schema)
    # A row whose slice columns are null is outside every slice: it is kept.
    outside = ~inside | inside.is_null()
    results: list[tuple[DataFile, pa.Table | None]] = []
    for task in tasks:
        rows = scan.to_table([task])
        if rows.filter(inside).num_rows == 0:
            results.append((task.file, None))
        else:
            results.append((task.file, rows.filter(outside)))
    return results


def live_paths(metadata: TableMetadata, io: FileIO, scope: BooleanExpression) -> frozenset[str]:
    """The paths of the live data files that may hold rows of ``scope``."""
    if metadata.current_snapshot() is None:
        return frozenset()
    scan = DataScan(table_metadata=metadata, io=io, row_filter=scope, case_sensitive=True)
    return frozenset(task.file.file_path for task in scan.plan_files())
