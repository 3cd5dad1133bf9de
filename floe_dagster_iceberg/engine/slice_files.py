"""Which live data files a slice of the table covers, wholly or in part."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
from pyiceberg.expressions import AlwaysTrue, BooleanExpression
from pyiceberg.expressions.visitors import (
    bind,
    expression_evaluator,
    inclusive_projection,
    manifest_evaluator,
    strict_projection,
)
from pyiceberg.io import FileIO
from pyiceberg.io.pyarrow import ArrowScan, expression_to_pyarrow, schema_to_pyarrow
from pyiceberg.manifest import DataFile, ManifestContent, ManifestEntry, ManifestFile
from pyiceberg.schema import Schema
from pyiceberg.table import DataScan, FileScanTask
from pyiceberg.table.metadata import TableMetadata
from pyiceberg.table.snapshots import Snapshot

from floe_dagster_iceberg.engine._pyiceberg import file_may_hold, file_only_holds
from floe_dagster_iceberg.engine.file_cache import live_entries, partition_table, snapshot_manifests


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

    The filter is bound once per partition spec, never per file, so a slice of many keys
    (an ``In`` of thousands of values) costs the same per file as a slice of one.

    Example:
        >>> import pyarrow as pa, tempfile
        >>> from pyiceberg.catalog.sql import SqlCatalog
        >>> tmp = tempfile.mkdtemp()
        >>> catalog = SqlCatalog("doc", uri=f"sqlite:///{tmp}/c.db", warehouse=f"file://{tmp}")
        >>> catalog.create_namespace("sales")
        >>> from pyiceberg.expressions import EqualTo
        >>> rows = pa.table({"day": ["a", "b"], "n": [1, 2]})
        >>> table = catalog.create_table("sales.orders", rows.schema)
        >>> with table.update_spec() as spec:
        ...     _ = spec.add_identity("day")
        >>> table.append(rows)
        >>> found = files_in_slice(table.metadata, table.io, EqualTo("day", "a"))
        >>> [f.record_count for f in found.whole], found.partial
        ([1], [])
    """
    found = SliceFiles()
    partial: list[DataFile] = []
    only_holds = file_only_holds(metadata.schema(), row_filter)
    strict = _PartitionTest(metadata, row_filter, strict_projection)
    for data_file in candidate_files(metadata, io, row_filter):
        if strict(data_file) or only_holds(data_file):
            found.whole.append(data_file)
        else:
            partial.append(data_file)
    if partial:
        found.partial = _scan_tasks(metadata, io, row_filter, partial)
    return found


def live_paths(metadata: TableMetadata, io: FileIO, scope: BooleanExpression) -> frozenset[str]:
    """The paths of the live data files that may hold rows of ``scope``."""
    return frozenset(f.file_path for f in candidate_files(metadata, io, scope))


class _PartitionTest:
    """Whether a data file's partition matches a projection of a row filter (per spec, bound
    once)."""

    def __init__(
        self, metadata: TableMetadata, row_filter: BooleanExpression, projection: Callable
    ) -> None:
        self._schema = metadata.schema()
        self._specs = metadata.specs()
        self._row_filter = row_filter
        self._projection = projection
        self._tests: dict[int, Callable[[Any], bool]] = {}

    def __call__(self, data_file: DataFile) -> bool:
        spec_id = data_file.spec_id
        if spec_id not in self._tests:
            spec = self._specs[spec_id]
            projected = self._projection(self._schema, spec, True)(self._row_filter)
            partition_schema = Schema(*spec.partition_type(self._schema).fields)
            self._tests[spec_id] = expression_evaluator(partition_schema, projected, True)
        return self._tests[spec_id](data_file.partition)


def candidate_files(
    metadata: TableMetadata,
    io: FileIO,
    row_filter: BooleanExpression,
    snapshot: Snapshot | None = None,
    cached: bool = False,
) -> Iterator[DataFile]:
    """Live data files of ``snapshot`` (default: the current one) whose manifest, partition
    and column statistics allow ``row_filter``.

    ``cached`` reuses the manifests this process already read; their entries are shared, so
    only readers that never change them ask for it.
    """
    snapshot = snapshot if snapshot is not None else metadata.current_snapshot()
    if snapshot is None:
        return
    manifests = snapshot_manifests(snapshot, io) if cached else snapshot.manifests(io)
    read_entries = live_entries if cached else _fetch_live_entries
    schema = metadata.schema()
    specs = metadata.specs()
    metrics_may_hold = file_may_hold(schema, row_filter)
    partition_may_hold = _PartitionTest(metadata, row_filter, inclusive_projection)
    partition_masks = _PartitionMasks(metadata, row_filter) if cached else None
    manifest_tests: dict[int, Callable[[ManifestFile], bool]] = {}
    for manifest in manifests:
        if manifest.content != ManifestContent.DATA:
            continue
        spec_id = manifest.partition_spec_id
        if spec_id not in manifest_tests:
            spec = specs[spec_id]
            projected = inclusive_projection(schema, spec, True)(row_filter)
            manifest_tests[spec_id] = manifest_evaluator(spec, schema, projected, True)
        if not manifest_tests[spec_id](manifest):
            continue
        entries = read_entries(manifest, io)
        mask = partition_masks.mask(manifest, io) if partition_masks else None
        for index, entry in enumerate(entries):
            data_file = entry.data_file
            inside = mask[index] if mask is not None else partition_may_hold(data_file)
            if inside and metrics_may_hold(data_file):
                yield data_file


_POSITION = "__floe_position"


class _PartitionMasks:
    """The partition test of a whole manifest at once, vectorized over its cached partition
    values: planning cost stays flat when a table holds thousands of small files."""

    def __init__(self, metadata: TableMetadata, row_filter: BooleanExpression) -> None:
        self._schema = metadata.schema()
        self._specs = metadata.specs()
        self._row_filter = row_filter
        self._by_spec: dict[int, tuple[pa.Schema, Any] | None] = {}

    def mask(self, manifest: ManifestFile, io: FileIO) -> np.ndarray | None:
        prepared = self._prepare(manifest.partition_spec_id)
        if prepared is None:
            return None
        arrow_schema, expression = prepared
        if len(arrow_schema) == 0:  # unpartitioned: every file passes
            return None
        values = partition_table(manifest, io, arrow_schema)
        if values is None:
            return None
        mask = np.zeros(values.num_rows, dtype=bool)
        if expression is None:
            mask[:] = True
            return mask
        positions = pa.array(np.arange(values.num_rows, dtype=np.int64))
        kept = values.append_column(_POSITION, positions).filter(expression)
        mask[kept.column(_POSITION).to_numpy()] = True
        return mask

    def _prepare(self, spec_id: int) -> tuple[pa.Schema, Any] | None:
        if spec_id not in self._by_spec:
            spec = self._specs[spec_id]
            partition_schema = Schema(*spec.partition_type(self._schema).fields)
            projected = inclusive_projection(self._schema, spec, True)(self._row_filter)
            try:
                arrow_schema = schema_to_pyarrow(partition_schema, include_field_ids=False)
                expression = (
                    None
                    if isinstance(projected, AlwaysTrue)
                    else expression_to_pyarrow(
                        bind(partition_schema, projected, True), partition_schema
                    )
                )
                self._by_spec[spec_id] = (arrow_schema, expression)
            except Exception:  # an expression Arrow cannot evaluate: test file by file
                self._by_spec[spec_id] = None
        return self._by_spec[spec_id]


def may_hold_rows(
    metadata: TableMetadata, row_filter: BooleanExpression
) -> Callable[[DataFile], bool]:
    """A test, by partition and column statistics, of whether a data file may hold rows of
    ``row_filter``."""
    partition_may_hold = _PartitionTest(metadata, row_filter, inclusive_projection)
    may_hold = file_may_hold(metadata.schema(), row_filter)
    return lambda data_file: partition_may_hold(data_file) and may_hold(data_file)


def _fetch_live_entries(manifest: ManifestFile, io: FileIO) -> list[ManifestEntry]:
    return manifest.fetch_manifest_entry(io, discard_deleted=True)


def _scan_tasks(
    metadata: TableMetadata, io: FileIO, row_filter: BooleanExpression, files: list[DataFile]
) -> list[FileScanTask]:
    """Read tasks of partly covered files, with the delete files that apply to them."""
    summary = metadata.current_snapshot().summary  # type: ignore[union-attr]
    if not summary or int(summary.get("total-delete-files") or 0) == 0:
        return [FileScanTask(data_file) for data_file in files]
    wanted = {f.file_path for f in files}
    scan = DataScan(table_metadata=metadata, io=io, row_filter=row_filter, case_sensitive=True)
    return [task for task in scan.plan_files() if task.file.file_path in wanted]


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
