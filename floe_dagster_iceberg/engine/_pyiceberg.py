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
``io.pyarrow.ArrowProjectionVisitor``       patched: its ``list``/``map`` rebuild nested
                                            arrays without their null mask, so a NULL
                                            ``list<struct>`` or ``map<_, struct>`` is read
                                            back as empty; the patch restores the mask
``serializers.FromInputFile/ToOutputFile``  wrapped: table metadata JSON read or written by
                                            this process is kept by location (the files are
                                            immutable), so loading a table whose metadata
                                            did not move parses nothing
``io.pyarrow._read_deletes``               the rows of a position-delete file (Parquet, ORC
                                            or a Puffin deletion vector) per data file, as
                                            PyIceberg's scan reads them
``manifest.ManifestWriterV2._meta``         extended: PyIceberg 0.12 writes data manifests
                                            only; a delete manifest is the same file with
                                            ``content`` ``deletes`` in its Avro metadata and
                                            manifest-list entry
==========================================  =================================================
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyarrow as pa
from pyiceberg.expressions import BooleanExpression
from pyiceberg.expressions.visitors import _InclusiveMetricsEvaluator, _StrictMetricsEvaluator
from pyiceberg.io import FileIO, OutputFile
from pyiceberg.io.pyarrow import ArrowProjectionVisitor, _get_parquet_writer_kwargs, _read_deletes
from pyiceberg.manifest import DataFile, ManifestContent, ManifestWriter, ManifestWriterV2
from pyiceberg.partitioning import PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.serializers import FromInputFile, ToOutputFile
from pyiceberg.table import Table, Transaction
from pyiceberg.table.update import TableRequirement, TableUpdate
from pyiceberg.table.update.snapshot import _SnapshotProducer
from pyiceberg.typedef import Properties

from floe_dagster_iceberg.engine.file_cache import METADATA_FILES

SnapshotProducer = _SnapshotProducer
"""PyIceberg's base class of snapshot-producing table updates."""


def parquet_writer_options(properties: Properties) -> dict[str, Any]:
    """``pyarrow.parquet.ParquetWriter`` keyword arguments from the table's properties."""
    return _get_parquet_writer_kwargs(properties)


class _DeleteManifestWriter(ManifestWriterV2):
    """A format-version 2 manifest of delete files (position or equality)."""

    def content(self) -> ManifestContent:
        return ManifestContent.DELETES

    @property
    def _meta(self) -> dict[str, str]:
        return {**super()._meta, "content": "deletes"}


def write_delete_manifest(
    format_version: int,
    spec: PartitionSpec,
    schema: Schema,
    output_file: OutputFile,
    snapshot_id: int,
    avro_compression: Any,
) -> ManifestWriter:
    """A writer of a delete manifest, as ``pyiceberg.manifest.write_manifest`` is of a data one.

    Delete files exist from format version 2 on; PyIceberg 0.12 writes manifests of version 2
    at most, so any other version is refused.
    """
    if format_version != 2:
        raise ValueError(f"Cannot write a delete manifest for table version: {format_version}")
    return _DeleteManifestWriter(spec, schema, output_file, snapshot_id, avro_compression)


def read_position_deletes(io: FileIO, delete_file: DataFile) -> dict[str, pa.ChunkedArray]:
    """The deleted row positions of a position-delete file, per data file path."""
    return _read_deletes(io, delete_file)


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


def _keep_nulls(rebuilt: Any, original: Any) -> Any:
    """``rebuilt`` (a list or map array) with the null entries of ``original`` restored."""
    if rebuilt is None or original is None or not original.null_count:
        return rebuilt
    if rebuilt.null_count == original.null_count:
        return rebuilt
    mask = original.is_null()
    if isinstance(rebuilt, pa.MapArray):
        return pa.MapArray.from_arrays(
            rebuilt.offsets, rebuilt.keys, rebuilt.items, type=rebuilt.type, mask=mask
        )
    return type(rebuilt).from_arrays(rebuilt.offsets, rebuilt.values, type=rebuilt.type, mask=mask)


def _patch_nested_null_reads() -> None:
    """Make PyIceberg's Arrow reader keep NULL lists and maps of structs (0.12 drops them)."""
    if getattr(ArrowProjectionVisitor, "_floe_keeps_nested_nulls", False):
        return
    original_list = ArrowProjectionVisitor.list
    original_map = ArrowProjectionVisitor.map

    def list_keeping_nulls(self: Any, list_type: Any, list_array: Any, value_array: Any) -> Any:
        return _keep_nulls(original_list(self, list_type, list_array, value_array), list_array)

    def map_keeping_nulls(
        self: Any, map_type: Any, map_array: Any, key_result: Any, value_result: Any
    ) -> Any:
        rebuilt = original_map(self, map_type, map_array, key_result, value_result)
        return _keep_nulls(rebuilt, map_array)

    ArrowProjectionVisitor.list = list_keeping_nulls  # type: ignore[method-assign]
    ArrowProjectionVisitor.map = map_keeping_nulls  # type: ignore[method-assign]
    ArrowProjectionVisitor._floe_keeps_nested_nulls = True  # type: ignore[attr-defined]


_patch_nested_null_reads()


def _cache_metadata_files() -> None:
    """Keep every table metadata file this process reads or writes, by location."""
    if getattr(FromInputFile, "_floe_cached", False):
        return
    read = FromInputFile.table_metadata
    write = ToOutputFile.table_metadata

    def cached_read(input_file: Any, *args: Any, **kwargs: Any) -> Any:
        return METADATA_FILES.get_or_load(
            input_file.location, lambda: read(input_file, *args, **kwargs)
        )

    def caching_write(metadata: Any, output_file: Any, *args: Any, **kwargs: Any) -> None:
        write(metadata, output_file, *args, **kwargs)
        METADATA_FILES.put(output_file.location, metadata)

    FromInputFile.table_metadata = staticmethod(cached_read)  # type: ignore[method-assign]
    ToOutputFile.table_metadata = staticmethod(caching_write)  # type: ignore[method-assign]
    FromInputFile._floe_cached = True  # type: ignore[attr-defined]


_cache_metadata_files()
