"""The IO manager's asset metadata, read and checked in one place.

The same reading serves two moments: when definitions load
(:func:`~floe_dagster_iceberg.validation.validate_iceberg_definitions`, so ``dagster
definitions validate`` and ``dg check defs`` fail on a mistake) and when an output is written
(the IO manager), so a mistake gives the same message, naming the asset, the key, the bad value
and the fix, whenever it is found.

Example:
    >>> settings = output_settings({"write_mode": "upsert", "upsert_options": {"join_cols": "id"}},
    ...                            OutputDefaults(), "sales/orders")
    >>> settings.mode.value, settings.upsert.join_cols
    ('upsert', ('id',))
    >>> output_settings({"write_mode": "merge"}, OutputDefaults(), "sales/orders")
    Traceback (most recent call last):
    ...
    floe_dagster_iceberg.errors.InvalidInputError: Asset sales/orders: write_mode='merge' is not valid; use one of 'append', 'overwrite', 'upsert'.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, TypeVar

from floe_dagster_iceberg.engine.config import (
    ChangeCapture,
    PartitionField,
    PartitionSpecUpdateMode,
    SchemaUpdateMode,
    UpsertScope,
    WriteMode,
)
from floe_dagster_iceberg.errors import InvalidInputError
from floe_dagster_iceberg.slices import parse_partition_spec_metadata

__all__ = [
    "UPSERT_EXAMPLE",
    "UPSERT_OPTION_KEYS",
    "OutputDefaults",
    "OutputSettings",
    "UpsertSettings",
    "output_settings",
]

UPSERT_OPTION_KEYS = (
    "join_cols",
    "when_matched_update_all",
    "when_not_matched_insert_all",
    "scope",
    "delete_column",
    "delete_values",
    "version_column",
    "delete_missing",
)
UPSERT_EXAMPLE = 'metadata={"write_mode": "upsert", "upsert_options": {"join_cols": ["id"]}}'

_Enum = TypeVar("_Enum", bound=Enum)


@dataclass(frozen=True)
class OutputDefaults:
    """What the IO manager uses where the asset's metadata says nothing."""

    write_mode: WriteMode = WriteMode.OVERWRITE
    schema_update_mode: SchemaUpdateMode = SchemaUpdateMode.ADDITIVE
    partition_spec_update_mode: PartitionSpecUpdateMode = PartitionSpecUpdateMode.UPDATE
    upsert_scope: UpsertScope = UpsertScope.PARTITION
    write_audit_publish: bool = False


@dataclass(frozen=True)
class UpsertSettings:
    """``upsert_options``, checked: the key columns, what happens to matched and new rows, and
    where keys are matched."""

    join_cols: tuple[str, ...] = ()
    when_matched_update_all: bool = True
    when_not_matched_insert_all: bool = True
    scope: UpsertScope = UpsertScope.PARTITION
    change_capture: ChangeCapture = field(default_factory=ChangeCapture)


@dataclass(frozen=True)
class OutputSettings:
    """How an asset's output is written, from its metadata over the IO manager's defaults."""

    mode: WriteMode
    schema_update_mode: SchemaUpdateMode
    partition_spec_update_mode: PartitionSpecUpdateMode
    upsert: UpsertSettings
    partition_spec: tuple[PartitionField, ...] | None = None
    table_properties: dict[str, str] = field(default_factory=dict)
    write_audit_publish: bool = False


def output_settings(
    metadata: Mapping[str, Any], defaults: OutputDefaults, asset: str
) -> OutputSettings:
    """The write settings in ``metadata`` (plain values), or an error naming ``asset``, the key,
    the bad value and the fix."""
    return OutputSettings(
        mode=_enum(WriteMode, metadata.get("write_mode", defaults.write_mode), "write_mode", asset),
        schema_update_mode=_enum(
            SchemaUpdateMode,
            metadata.get("schema_update_mode", defaults.schema_update_mode),
            "schema_update_mode",
            asset,
        ),
        partition_spec_update_mode=_enum(
            PartitionSpecUpdateMode,
            metadata.get("partition_spec_update_mode", defaults.partition_spec_update_mode),
            "partition_spec_update_mode",
            asset,
        ),
        upsert=_upsert_settings(metadata, defaults, asset),
        partition_spec=(
            parse_partition_spec_metadata(metadata["partition_spec"], asset)
            if metadata.get("partition_spec") is not None
            else None
        ),
        table_properties=_table_properties(metadata.get("table_properties"), asset),
        write_audit_publish=_audited(metadata, defaults, asset),
    )


def _audited(metadata: Mapping[str, Any], defaults: OutputDefaults, asset: str) -> bool:
    value = metadata.get("write_audit_publish", defaults.write_audit_publish)
    if not isinstance(value, bool):
        raise InvalidInputError(
            f"Asset {asset}: write_audit_publish={value!r} is not valid; use True or False."
        )
    return value


def _enum(enum_type: type[_Enum], value: Any, key: str, asset: str) -> _Enum:
    try:
        return enum_type(value)
    except ValueError:
        allowed = ", ".join(repr(m.value) for m in enum_type)
        raise InvalidInputError(
            f"Asset {asset}: {key}={value!r} is not valid; use one of {allowed}."
        ) from None


def _upsert_settings(
    metadata: Mapping[str, Any], defaults: OutputDefaults, asset: str
) -> UpsertSettings:
    options = metadata.get("upsert_options") or {}
    if not isinstance(options, Mapping):
        raise InvalidInputError(
            f"Asset {asset}: upsert_options={options!r} is not a mapping; use {UPSERT_EXAMPLE}."
        )
    unknown = sorted(str(k) for k in options if k not in UPSERT_OPTION_KEYS)
    if unknown:
        raise InvalidInputError(
            f"Asset {asset}: unknown upsert_options key(s) {', '.join(map(repr, unknown))}; "
            f"the keys are {', '.join(UPSERT_OPTION_KEYS)}."
        )
    settings = UpsertSettings(
        join_cols=_join_cols(options.get("join_cols"), asset),
        when_matched_update_all=_flag(options, "when_matched_update_all", asset),
        when_not_matched_insert_all=_flag(options, "when_not_matched_insert_all", asset),
        scope=_enum(
            UpsertScope, options.get("scope", defaults.upsert_scope), "upsert_options.scope", asset
        ),
        change_capture=_change_capture(options, asset),
    )
    mode = metadata.get("write_mode", defaults.write_mode)
    if mode == WriteMode.UPSERT and not settings.join_cols:
        raise InvalidInputError(
            f"Asset {asset}: write_mode 'upsert' needs the key columns that identify a row; "
            f"add them, e.g. {UPSERT_EXAMPLE}."
        )
    return settings


def _change_capture(options: Mapping[str, Any], asset: str) -> ChangeCapture:
    """The change-data-capture options: a delete marker, a version column, a full sync."""
    for key in ("delete_column", "version_column"):
        value = options.get(key)
        if value is not None and not (isinstance(value, str) and value):
            raise InvalidInputError(
                f"Asset {asset}: upsert_options.{key}={value!r} is not a column name; "
                f'use e.g. {{"{key}": "op"}}.'
            )
    values = options.get("delete_values", ("D",))
    values = (values,) if isinstance(values, str | int | bool) else values
    if not isinstance(values, list | tuple) or not values:
        raise InvalidInputError(
            f"Asset {asset}: upsert_options.delete_values={options['delete_values']!r} is not a "
            'list of marker values; use e.g. {"delete_values": ["D"]}.'
        )
    return ChangeCapture(
        delete_column=options.get("delete_column"),
        delete_values=tuple(values),
        version_column=options.get("version_column"),
        delete_missing=_flag(options, "delete_missing", asset, default=False),
    )


def _join_cols(value: Any, asset: str) -> tuple[str, ...]:
    """``join_cols`` as a list of column names, or one column name as a plain string."""
    if value is None:
        return ()
    columns = (value,) if isinstance(value, str) else value
    if not isinstance(columns, list | tuple) or not all(isinstance(c, str) and c for c in columns):
        raise InvalidInputError(
            f"Asset {asset}: upsert_options.join_cols={value!r} is not a list of column names; "
            f"use {UPSERT_EXAMPLE}."
        )
    return tuple(columns)


def _flag(options: Mapping[str, Any], key: str, asset: str, default: bool = True) -> bool:
    value = options.get(key, default)
    if not isinstance(value, bool):
        raise InvalidInputError(
            f"Asset {asset}: upsert_options.{key}={value!r} is not valid; use True or False."
        )
    return value


def _table_properties(value: Any, asset: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidInputError(
            f"Asset {asset}: table_properties={value!r} is not a mapping; use e.g. "
            'metadata={"table_properties": {"write.parquet.compression-codec": "zstd"}}.'
        )
    return {str(k): str(v) for k, v in value.items()}
