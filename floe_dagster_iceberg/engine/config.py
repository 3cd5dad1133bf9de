"""Pydantic models describing tables, schema changes, writes and snapshots.

Every model is frozen and refuses unknown fields, so a typo in a config fails loudly with the
field's name instead of being ignored.
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import Enum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "ArrowStringType",
    "ChangeCapture",
    "ColumnSpec",
    "NullOrder",
    "PartitionField",
    "PartitionSpecUpdateMode",
    "PartitionTransform",
    "RetryPolicy",
    "SchemaChange",
    "SchemaChangeKind",
    "SchemaUpdateMode",
    "SchemaVersion",
    "SnapshotInfo",
    "SortDirection",
    "SortField",
    "TableConfig",
    "TableSchema",
    "UpsertScope",
    "WriteConfig",
    "WriteMode",
    "WriteResult",
]

_FROZEN = ConfigDict(frozen=True, extra="forbid")


class _Model(BaseModel):
    model_config = _FROZEN


class WriteMode(str, Enum):
    """How a write combines its rows with the table.

    Example:
        >>> WriteMode("upsert") is WriteMode.UPSERT
        True
    """

    APPEND = "append"
    OVERWRITE = "overwrite"
    UPSERT = "upsert"


class SchemaUpdateMode(str, Enum):
    """What a write does when the data's schema differs from the table's.

    ``additive`` adds new nullable columns and widens types, ``error`` refuses any difference and
    ``update`` also drops columns missing from the data (destructive, opt-in).
    """

    ADDITIVE = "additive"
    ERROR = "error"
    UPDATE = "update"


class PartitionSpecUpdateMode(str, Enum):
    """What a write does when the table's partition spec differs from the asset's partitioning.

    ``update`` evolves the spec (metadata only: old files keep their layout), ``error`` refuses.
    """

    ERROR = "error"
    UPDATE = "update"


class UpsertScope(str, Enum):
    """Which rows an upsert matches against: the run's partition slice, or the whole table."""

    PARTITION = "partition"
    TABLE = "table"


class ArrowStringType(str, Enum):
    """The Arrow type strings and binary columns are read as, whoever wrote the files.

    ``large_string`` (the default; ``large_binary`` for binary) has 64-bit offsets: no column
    is too big for it, and it is Polars' own type. ``string`` (``binary``) is what pandas,
    DuckDB and Spark produce.
    """

    LARGE_STRING = "large_string"
    STRING = "string"


class PartitionTransform(str, Enum):
    """Iceberg partition transforms; ``bucket`` and ``truncate`` take a width."""

    IDENTITY = "identity"
    YEAR = "year"
    MONTH = "month"
    DAY = "day"
    HOUR = "hour"
    BUCKET = "bucket"
    TRUNCATE = "truncate"


_TRANSFORM_PATTERN = re.compile(r"^\s*(?P<name>[a-z]+)\s*(?:\[\s*(?P<width>\d+)\s*\])?\s*$")


class PartitionField(_Model):
    """One field of a partition spec: a source column and a transform.

    The transform is given as in Iceberg's own notation: ``identity``, ``year``, ``month``, ``day``,
    ``hour``, ``bucket[N]`` or ``truncate[W]``.

    Example:
        >>> PartitionField(source_column="user_id", transform="bucket[16]").width
        16
        >>> PartitionField(source_column="ts", transform="day").field_name
        'ts_day'
    """

    source_column: str = Field(min_length=1)
    transform: PartitionTransform = PartitionTransform.IDENTITY
    width: int | None = Field(default=None, gt=0)
    name: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _parse_transform_notation(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not isinstance(data.get("transform"), str):
            return data
        match = _TRANSFORM_PATTERN.match(data["transform"].lower())
        if match is None or match["name"] not in PartitionTransform._value2member_map_:
            raise ValueError(
                f"transform {data['transform']!r} is not an Iceberg transform; use one of "
                "identity, year, month, day, hour, bucket[N], truncate[W]"
            )
        parsed = dict(data, transform=match["name"])
        if match["width"] is not None:
            parsed["width"] = int(match["width"])
        return parsed

    @model_validator(mode="after")
    def _check_width(self) -> PartitionField:
        needs_width = self.transform in (PartitionTransform.BUCKET, PartitionTransform.TRUNCATE)
        if needs_width and self.width is None:
            raise ValueError(
                f"transform {self.transform.value!r} on column {self.source_column!r} needs a "
                f"width: write it as '{self.transform.value}[16]'"
            )
        if not needs_width and self.width is not None:
            raise ValueError(
                f"transform {self.transform.value!r} on column {self.source_column!r} takes no "
                "width; only bucket[N] and truncate[W] do"
            )
        return self

    @property
    def notation(self) -> str:
        """The transform in Iceberg notation, e.g. ``bucket[16]``."""
        if self.width is None:
            return self.transform.value
        return f"{self.transform.value}[{self.width}]"

    @property
    def field_name(self) -> str:
        """The partition field's name: the explicit one, else Iceberg's usual default."""
        if self.name:
            return self.name
        if self.transform is PartitionTransform.IDENTITY:
            return self.source_column
        suffix = (
            self.transform.value if self.width is None else f"{self.transform.value}_{self.width}"
        )
        return f"{self.source_column}_{suffix}"


class SortDirection(str, Enum):
    ASC = "asc"
    DESC = "desc"


class NullOrder(str, Enum):
    NULLS_FIRST = "nulls-first"
    NULLS_LAST = "nulls-last"


class SortField(_Model):
    """One field of a table's sort order.

    Example:
        >>> SortField(source_column="ts", direction="desc").direction
        <SortDirection.DESC: 'desc'>
    """

    source_column: str = Field(min_length=1)
    direction: SortDirection = SortDirection.ASC
    null_order: NullOrder = NullOrder.NULLS_FIRST


class ColumnSpec(_Model):
    """A column: a name, an Iceberg type and whether it is required.

    Types use Iceberg's notation: ``boolean``, ``int``, ``long``, ``float``, ``double``,
    ``decimal(P,S)``, ``date``, ``time``, ``timestamp``, ``timestamptz``, ``string``, ``uuid``,
    ``binary``, ``fixed[N]``, and nested ``list<T>``, ``map<K, V>``, ``struct<a: T, b: U>``.

    Example:
        >>> ColumnSpec(name="amount", type="decimal(10, 2)").type
        'decimal(10,2)'
    """

    name: str = Field(min_length=1)
    type: str
    required: bool = False
    doc: str | None = None

    @field_validator("type")
    @classmethod
    def _check_type(cls, value: str) -> str:
        from floe_dagster_iceberg.engine.types import parse_iceberg_type, type_to_string

        return type_to_string(parse_iceberg_type(value))


class TableSchema(_Model):
    """An ordered list of columns.

    Example:
        >>> schema = TableSchema(columns=[ColumnSpec(name="id", type="long", required=True)])
        >>> schema.column_names
        ('id',)
    """

    columns: tuple[ColumnSpec, ...] = Field(min_length=1)

    @field_validator("columns")
    @classmethod
    def _unique_names(cls, columns: tuple[ColumnSpec, ...]) -> tuple[ColumnSpec, ...]:
        seen: set[str] = set()
        for column in columns:
            if column.name in seen:
                raise ValueError(f"column {column.name!r} appears twice; give each column one name")
            seen.add(column.name)
        return columns

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(column.name for column in self.columns)


class TableConfig(_Model):
    """Everything needed to create a table.

    Example:
        >>> config = TableConfig(
        ...     namespace="sales",
        ...     name="orders",
        ...     schema=TableSchema(columns=[
        ...         ColumnSpec(name="id", type="long", required=True),
        ...         ColumnSpec(name="ts", type="timestamptz"),
        ...     ]),
        ...     partition_spec=[PartitionField(source_column="ts", transform="day")],
        ... )
        >>> config.identifier
        ('sales', 'orders')
    """

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    namespace: str = Field(min_length=1)
    name: str = Field(min_length=1)
    table_schema: TableSchema = Field(alias="schema")
    partition_spec: tuple[PartitionField, ...] = ()
    sort_order: tuple[SortField, ...] = ()
    properties: dict[str, str] = Field(default_factory=dict)
    location: str | None = None

    @field_validator("namespace", "name")
    @classmethod
    def _safe_identifier(cls, value: str) -> str:
        from floe_dagster_iceberg.engine.identifiers import validate_identifier_part

        return validate_identifier_part(value)

    @model_validator(mode="after")
    def _fields_reference_columns(self) -> TableConfig:
        names = set(self.table_schema.column_names)
        for field in (*self.partition_spec, *self.sort_order):
            if field.source_column.split(".")[0] not in names:
                raise ValueError(
                    f"column {field.source_column!r} used in the partition spec or sort order of "
                    f"table '{self.namespace}.{self.name}' is not in its schema; add it to the "
                    f"schema or use one of {sorted(names)}"
                )
        return self

    @property
    def identifier(self) -> tuple[str, str]:
        return (self.namespace, self.name)


class SchemaChangeKind(str, Enum):
    ADD_COLUMN = "add_column"
    WIDEN_TYPE = "widen_type"
    RENAME = "rename"
    MAKE_OPTIONAL = "make_optional"
    SET_DOC = "set_doc"


_CHANGE_REQUIREMENTS: dict[SchemaChangeKind, tuple[str, ...]] = {
    SchemaChangeKind.ADD_COLUMN: ("new_type",),
    SchemaChangeKind.WIDEN_TYPE: ("new_type",),
    SchemaChangeKind.RENAME: ("new_name",),
    SchemaChangeKind.MAKE_OPTIONAL: (),
    SchemaChangeKind.SET_DOC: ("doc",),
}


class SchemaChange(_Model):
    """One safe change to a table's schema; build it with the class methods.

    Example:
        >>> SchemaChange.add_column("email", "string").kind
        <SchemaChangeKind.ADD_COLUMN: 'add_column'>
        >>> SchemaChange.widen_type("count", "long").new_type
        'long'
    """

    kind: SchemaChangeKind
    column: str = Field(min_length=1)
    new_type: str | None = None
    new_name: str | None = None
    doc: str | None = None
    required: bool = False

    @field_validator("new_type")
    @classmethod
    def _check_type(cls, value: str | None) -> str | None:
        if value is None:
            return None
        from floe_dagster_iceberg.engine.types import parse_iceberg_type, type_to_string

        return type_to_string(parse_iceberg_type(value))

    @model_validator(mode="after")
    def _check_fields_for_kind(self) -> SchemaChange:
        for needed in _CHANGE_REQUIREMENTS[self.kind]:
            if getattr(self, needed) is None:
                raise ValueError(
                    f"a {self.kind.value} change of column {self.column!r} needs {needed!r}; "
                    f"use SchemaChange.{self.kind.value}(...)"
                )
        return self

    @classmethod
    def add_column(cls, column: str, new_type: str, doc: str | None = None) -> SchemaChange:
        return cls(kind=SchemaChangeKind.ADD_COLUMN, column=column, new_type=new_type, doc=doc)

    @classmethod
    def widen_type(cls, column: str, new_type: str) -> SchemaChange:
        return cls(kind=SchemaChangeKind.WIDEN_TYPE, column=column, new_type=new_type)

    @classmethod
    def rename(cls, column: str, new_name: str) -> SchemaChange:
        return cls(kind=SchemaChangeKind.RENAME, column=column, new_name=new_name)

    @classmethod
    def make_optional(cls, column: str) -> SchemaChange:
        return cls(kind=SchemaChangeKind.MAKE_OPTIONAL, column=column)

    @classmethod
    def set_doc(cls, column: str, doc: str) -> SchemaChange:
        return cls(kind=SchemaChangeKind.SET_DOC, column=column, doc=doc)


class RetryPolicy(_Model):
    """How often and how patiently a conflicting commit is retried (jittered exponential backoff).

    A field left ``None`` takes the table's Iceberg property (``commit.retry.num-retries`` + 1,
    ``commit.retry.min-wait-ms``, ``commit.retry.max-wait-ms``,
    ``commit.retry.total-timeout-ms``), else floe's default: 8 attempts, 0.05 s doubling up to
    5 s, 10 minutes in all. Set a field to override the table.

    Example:
        >>> RetryPolicy(max_attempts=10).max_attempts
        10
    """

    max_attempts: int | None = Field(default=None, ge=1, le=100)
    initial_backoff_seconds: float | None = Field(default=None, gt=0)
    max_backoff_seconds: float | None = Field(default=None, gt=0)
    total_timeout_seconds: float | None = Field(default=None, gt=0)


class ChangeCapture(_Model):
    """How an upsert applies a batch of changes (change data capture).

    ``delete_column`` / ``delete_values``: input rows whose marker is one of the values delete
    the matching row instead of writing it (``op = 'D'``). ``version_column``: a matched row is
    changed only by a strictly newer version, so late and out-of-order batches are applied
    correctly and replaying a batch changes nothing; within one batch the newest version of
    each key wins. ``delete_missing``: rows of the run's slice whose key is not in the input
    are deleted (a full sync of the slice).

    Example:
        >>> ChangeCapture(delete_column="op", version_column="lsn").delete_values
        ('D',)
    """

    delete_column: str | None = None
    delete_values: tuple[Any, ...] = ("D",)
    version_column: str | None = None
    delete_missing: bool = False

    @property
    def active(self) -> bool:
        return bool(self.delete_column or self.version_column or self.delete_missing)


class WriteConfig(_Model):
    """How one write is applied.

    ``row_filter`` is a PyIceberg expression for the slice of the table this write owns (the
    run's partitions): ``overwrite`` replaces exactly that slice (the whole table when ``None``),
    every mode refuses rows outside it, and ``upsert`` matches keys inside it unless
    ``upsert_scope`` is ``table``. ``partition_spec`` and ``sort_order`` are used when the write
    creates the table; ``partition_spec`` also evolves an existing table's spec according to
    ``partition_spec_update_mode``. ``idempotency_key`` makes an append safe to retry: if a
    snapshot with the same key is already in the table, the append is not applied again (the IO
    manager uses the Dagster run, asset and partition keys). ``branch`` commits to that branch
    instead of ``main``: the slice is planned against the branch head, and a branch that does
    not exist yet is created from the first existing one of ``fork_from`` (then ``main``).

    Example:
        >>> from pyiceberg.expressions import EqualTo
        >>> WriteConfig(mode="overwrite", row_filter=EqualTo("region", "eu")).mode
        <WriteMode.OVERWRITE: 'overwrite'>
    """

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    mode: WriteMode = WriteMode.APPEND
    row_filter: Any = None
    row_filter_description: str | None = None
    """``row_filter`` as people read it (e.g. ``ts >= 2024-01-01 and ts < 2024-01-02``), for
    messages; ``None``: the expression itself."""
    schema_update_mode: SchemaUpdateMode = SchemaUpdateMode.ADDITIVE
    partition_spec: tuple[PartitionField, ...] | None = None
    partition_spec_update_mode: PartitionSpecUpdateMode = PartitionSpecUpdateMode.UPDATE
    sort_order: tuple[SortField, ...] = ()
    table_properties: dict[str, str] = Field(default_factory=dict)
    snapshot_properties: dict[str, str] = Field(default_factory=dict)
    idempotency_key: str | None = None
    join_cols: tuple[str, ...] = ()
    when_matched_update_all: bool = True
    when_not_matched_insert_all: bool = True
    upsert_scope: UpsertScope = UpsertScope.PARTITION
    change_capture: ChangeCapture = Field(default_factory=ChangeCapture)
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    branch: str | None = None
    fork_from: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _upsert_needs_keys(self) -> WriteConfig:
        if self.mode is WriteMode.UPSERT and not self.join_cols:
            raise ValueError(
                "write mode 'upsert' needs join_cols, e.g. "
                "upsert_options={'join_cols': ['id']} or WriteConfig(join_cols=('id',))"
            )
        return self


class SchemaVersion(_Model):
    """One schema of a table's history and the first snapshot written with it.

    Example:
        >>> SchemaVersion(schema_id=0, columns=("id long",)).schema_id
        0
    """

    schema_id: int
    columns: tuple[str, ...]
    first_snapshot_id: int | None = None
    is_current: bool = False


class SnapshotInfo(_Model):
    """One entry of a table's history.

    Example:
        >>> info = SnapshotInfo(snapshot_id=1, timestamp_ms=0, operation="append")
        >>> info.timestamp.year
        1970
    """

    snapshot_id: int
    parent_id: int | None = None
    timestamp_ms: int
    operation: str | None = None
    summary: dict[str, str] = Field(default_factory=dict)
    schema_id: int | None = None

    @property
    def timestamp(self) -> datetime:
        from datetime import UTC

        return datetime.fromtimestamp(self.timestamp_ms / 1000, tz=UTC)


class WriteResult(_Model):
    """What one committed write did.

    ``rows_added`` / ``rows_deleted`` count rows in the data files added and removed (an
    upsert rewrites whole files); ``rows_updated``, ``rows_inserted``, ``rows_unchanged`` and
    ``rows_removed`` (deletes of a change batch, rows missing from a full sync) count an
    upsert's rows as the merge saw them.

    Example:
        >>> WriteResult(table="sales.orders", snapshot_id=None, operation=None).committed
        False
    """

    table: str
    snapshot_id: int | None
    operation: str | None
    rows_added: int = 0
    rows_deleted: int = 0
    rows_updated: int = 0
    rows_inserted: int = 0
    rows_unchanged: int = 0
    rows_removed: int = 0
    files_added: int = 0
    files_deleted: int = 0
    files_rewritten: int = 0
    bytes_added: int = 0
    bytes_deleted: int = 0
    commit_attempts: int = 0
    schema_changes: tuple[str, ...] = ()
    created_table: bool = False

    @property
    def committed(self) -> bool:
        return self.snapshot_id is not None
