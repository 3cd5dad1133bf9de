"""Merge-on-read deletes as Spark writes them, for tests: real delete files, really committed.

PyIceberg 0.12 reads position deletes but never writes them. These helpers write the files an
Iceberg writer (Spark's merge-on-read ``DELETE``/``UPDATE``/``MERGE``) leaves, and commit them
the way it does, as one ``delete`` snapshot through the engine's snapshot producer:

* a position-delete file is Parquet with the reserved columns ``file_path`` (field id
  2147483546) and ``pos`` (2147483545), sorted by path and position, in the partition of the
  data files it deletes from, with full column bounds (as Iceberg's writers keep them, so a file
  that deletes from one data file names it by equal lower and upper ``file_path`` bounds);
* an equality-delete file is Parquet with the table's key columns (their field ids), and its
  ``equality_ids`` name them.

Position deletes apply to data files of the same or an older data sequence number; PyIceberg's
own scan applies them, which is how the tests show these are real deletes.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence

import pyarrow as pa
import pyarrow.parquet as pq
from pyiceberg.catalog import Catalog
from pyiceberg.io.pyarrow import (
    DataFileStatistics,
    compute_statistics_plan,
    data_file_statistics_from_parquet_metadata,
    parquet_path_to_id_mapping,
)
from pyiceberg.manifest import DataFile, DataFileContent, FileFormat
from pyiceberg.schema import Schema
from pyiceberg.table import Table
from pyiceberg.table.snapshots import Operation
from pyiceberg.table.update import AssertTableUUID
from pyiceberg.typedef import Record
from pyiceberg.types import LongType, NestedField, StringType

from floe_dagster_iceberg.engine.attempt import PendingCommit, send
from floe_dagster_iceberg.engine.snapshot import FileChange, produce_snapshot

__all__ = [
    "FILE_PATH_FIELD_ID",
    "POSITION_DELETE_SCHEMA",
    "POS_FIELD_ID",
    "commit_delete_files",
    "data_file_paths",
    "equality_delete_file",
    "ids_at",
    "live_files",
    "position_delete_file",
    "write_equality_deletes",
    "write_position_deletes",
]

FILE_PATH_FIELD_ID = 2147483546
POS_FIELD_ID = 2147483545
POSITION_DELETE_SCHEMA = Schema(
    NestedField(FILE_PATH_FIELD_ID, "file_path", StringType(), required=True),
    NestedField(POS_FIELD_ID, "pos", LongType(), required=True),
)
_FULL_METRICS = {"write.metadata.metrics.default": "full"}


def live_files(table: Table) -> dict[str, DataFile]:
    """Every live data and delete file of the table's current snapshot, by path."""
    snapshot = table.current_snapshot()
    if snapshot is None:
        return {}
    return {
        entry.data_file.file_path: entry.data_file
        for manifest in snapshot.manifests(table.io)
        for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=True)
    }


def data_file_paths(table: Table, partition: object | None = None) -> list[str]:
    """The live data files, oldest first (by sequence number, then path); with ``partition``,
    only those whose first partition value it is."""
    snapshot = table.current_snapshot()
    if snapshot is None:
        return []
    entries = [
        entry
        for manifest in snapshot.manifests(table.io)
        for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=True)
        if entry.data_file.content == DataFileContent.DATA
        and (partition is None or entry.data_file.partition[0] == partition)
    ]
    entries.sort(key=lambda e: (e.sequence_number or 0, e.data_file.file_path))
    return [e.data_file.file_path for e in entries]


def ids_at(table: Table, path: str, positions: Iterable[int] | None = None) -> list[int]:
    """The ``id`` values of the rows at ``positions`` (all rows when None) of one data file,
    read from the file itself (deletes not applied)."""
    with table.io.new_input(path).open() as stream:
        ids = pq.read_table(stream, columns=["id"])["id"].to_pylist()
    return ids if positions is None else [ids[p] for p in positions]


def _write_parquet(
    table: Table, rows: pa.Table, schema: Schema, suffix: str
) -> tuple[str, int, DataFileStatistics]:
    path = f"{table.location()}/data/{uuid.uuid4().hex}-{suffix}.parquet"
    with table.io.new_output(path).create(overwrite=True) as stream:
        writer = pq.ParquetWriter(stream, schema=rows.schema)
        writer.write_table(rows)
        writer.close()
        size = stream.tell()
    statistics = data_file_statistics_from_parquet_metadata(
        parquet_metadata=writer.writer.metadata,
        stats_columns=compute_statistics_plan(schema, _FULL_METRICS),
        parquet_column_mapping=parquet_path_to_id_mapping(schema),
    )
    return path, size, statistics


def _delete_file(
    content: DataFileContent,
    path: str,
    size: int,
    statistics: DataFileStatistics,
    spec_id: int,
    partition: Record,
    *,
    bounds: bool,
    equality_ids: list[int] | None = None,
) -> DataFile:
    stats = statistics.to_serialized_dict()
    if not bounds:
        stats["lower_bounds"], stats["upper_bounds"] = {}, {}
    delete_file = DataFile.from_args(
        content=content,
        file_path=path,
        file_format=FileFormat.PARQUET,
        partition=partition,
        file_size_in_bytes=size,
        sort_order_id=None,
        equality_ids=equality_ids,
        key_metadata=None,
        **stats,
    )
    delete_file.spec_id = spec_id
    return delete_file


def position_delete_file(
    table: Table, positions: Mapping[str, Iterable[int]], *, bounds: bool = True
) -> DataFile:
    """Write (not commit) one position-delete file deleting ``positions`` (data file path ->
    row positions) from data files of one partition.

    ``bounds=False`` leaves out the column bounds, as some writers do: readers must then read
    the file to know which data files it deletes from.
    """
    files = live_files(table)
    targets = [files[path] for path in positions]
    keys = {(f.spec_id, f.partition) for f in targets}
    assert len(keys) == 1, f"position deletes of one file stay in one partition, got {keys}"
    ((spec_id, partition),) = keys
    pairs = sorted((path, int(pos)) for path, rows in positions.items() for pos in rows)
    rows = pa.table(
        {"file_path": [p for p, _ in pairs], "pos": [pos for _, pos in pairs]},
        schema=pa.schema(
            [
                pa.field(
                    "file_path",
                    pa.string(),
                    nullable=False,
                    metadata={b"PARQUET:field_id": str(FILE_PATH_FIELD_ID).encode()},
                ),
                pa.field(
                    "pos",
                    pa.int64(),
                    nullable=False,
                    metadata={b"PARQUET:field_id": str(POS_FIELD_ID).encode()},
                ),
            ]
        ),
    )
    path, size, statistics = _write_parquet(table, rows, POSITION_DELETE_SCHEMA, "deletes")
    return _delete_file(
        DataFileContent.POSITION_DELETES, path, size, statistics, spec_id, partition, bounds=bounds
    )


def equality_delete_file(table: Table, keys: pa.Table, like: str) -> DataFile:
    """Write (not commit) one equality-delete file deleting the rows whose ``keys`` columns
    equal one of its rows, in the partition of the live data file ``like``."""
    schema = table.schema().select(*keys.column_names)
    rows = pa.table(
        {name: keys.column(name) for name in keys.column_names},
        schema=pa.schema(
            [
                keys.schema.field(name).with_metadata(
                    {b"PARQUET:field_id": str(schema.find_field(name).field_id).encode()}
                )
                for name in keys.column_names
            ]
        ),
    )
    template = live_files(table)[like]
    path, size, statistics = _write_parquet(table, rows, schema, "eq-deletes")
    return _delete_file(
        DataFileContent.EQUALITY_DELETES,
        path,
        size,
        statistics,
        template.spec_id,
        template.partition,
        bounds=True,
        equality_ids=[schema.find_field(name).field_id for name in keys.column_names],
    )


def commit_delete_files(catalog: Catalog, table: Table, files: Sequence[DataFile]) -> Table:
    """Commit delete files as one ``delete`` snapshot (a row delta that only deletes)."""
    produced = produce_snapshot(
        table.metadata, table.io, FileChange(Operation.DELETE, added=list(files)), {}
    )
    pending = PendingCommit(
        table,
        produced.updates,
        (AssertTableUUID(uuid=table.metadata.table_uuid), *produced.requirements),
        produced.written,
    )
    send(catalog, pending)
    return catalog.load_table(table.name())


def write_position_deletes(
    catalog: Catalog,
    table: Table,
    positions: Mapping[str, Iterable[int]],
    *,
    bounds: bool = True,
) -> DataFile:
    """Delete rows by position (data file path -> row positions) in one ``delete`` snapshot;
    return the committed position-delete file."""
    delete_file = position_delete_file(table, positions, bounds=bounds)
    commit_delete_files(catalog, table, [delete_file])
    return delete_file


def write_equality_deletes(catalog: Catalog, table: Table, keys: pa.Table, like: str) -> DataFile:
    """Delete rows by key in the partition of data file ``like``, in one ``delete`` snapshot;
    return the committed equality-delete file."""
    delete_file = equality_delete_file(table, keys, like)
    commit_delete_files(catalog, table, [delete_file])
    return delete_file
