"""Definitions checked when they load: a mistake in an Iceberg asset's metadata fails
``dagster definitions validate``, ``dg check defs`` and the code location's load, before any
run, instead of failing a run after its upstream assets committed.

Dagster runs no resource or IO-manager code when definitions load, so the check is one call
around the project's definitions. It also labels every Iceberg asset for the UI: the
``iceberg`` kind (with its icon), the storage kind and the table name in the asset's
"Storage" panel.

Example:
    >>> import dagster as dg
    >>> from floe_dagster_iceberg import create_iceberg_resources
    >>> @dg.asset(io_manager_key="iceberg", key_prefix="sales")
    ... def orders(): ...
    >>> defs = validate_iceberg_definitions(
    ...     dg.Definitions(assets=[orders], resources=create_iceberg_resources())
    ... )
    >>> spec = defs.resolve_all_asset_specs()[0]
    >>> spec.kinds, spec.tags["dagster/storage_kind"], spec.metadata["dagster/table_name"]
    ({'iceberg'}, 'iceberg', 'floe.sales.orders')
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping
from typing import Any

import dagster as dg

from floe_dagster_iceberg.asset_metadata import output_settings
from floe_dagster_iceberg.asset_tables import asset_table_identifier
from floe_dagster_iceberg.errors import IcebergError, InvalidInputError
from floe_dagster_iceberg.io_manager import IcebergIOManager
from floe_dagster_iceberg.metadata import STORAGE_KIND
from floe_dagster_iceberg.slices import check_partition_expr

__all__ = ["validate_iceberg_definitions"]

_MAX_KINDS = 3  # Dagster refuses a fourth kind on an asset
_STORAGE_KIND_TAG = "dagster/storage_kind"
_TABLE_NAME_KEY = "dagster/table_name"


def validate_iceberg_definitions(defs: dg.Definitions) -> dg.Definitions:
    """``defs``, checked and labelled: every asset stored by an :class:`IcebergIOManager` of
    ``defs.resources`` has valid IO-manager metadata, and carries the ``iceberg`` kind, the
    ``dagster/storage_kind`` tag and its ``dagster/table_name``.

    Refused, with one line per asset naming the key, the bad value and the fix: a partitioned
    asset without ``partition_expr`` (or, multi-partitioned, without a column for each
    dimension); an unknown ``write_mode``, ``schema_update_mode``,
    ``partition_spec_update_mode`` or ``upsert_options.scope``; an upsert without
    ``join_cols``; unknown ``upsert_options`` keys; a bad ``partition_spec`` or table name.
    Columns are checked against the data when it is written. Kinds, tags and table names the
    asset already has are kept; an asset with three kinds gets no fourth.

    Example:
        >>> import dagster as dg
        >>> from floe_dagster_iceberg import create_iceberg_resources
        >>> @dg.asset(io_manager_key="iceberg",
        ...           partitions_def=dg.DailyPartitionsDefinition("2024-01-01"))
        ... def events(): ...
        >>> validate_iceberg_definitions(
        ...     dg.Definitions(assets=[events], resources=create_iceberg_resources())
        ... )
        Traceback (most recent call last):
        ...
        floe_dagster_iceberg.errors.InvalidInputError: Iceberg IO manager metadata is invalid for 1 asset(s):
        - Asset events is partitioned but has no partition_expr metadata naming the column that holds the partition; add metadata={"partition_expr": "<column>"}.
    """
    io_managers = _iceberg_io_managers(defs)
    if not io_managers:
        return defs
    tables: dict[dg.AssetKey, str] = {}
    problems: list[str] = []
    for spec, io_manager in _iceberg_specs(defs, io_managers):
        try:
            tables[spec.key] = _checked_table_name(spec, io_manager)
        except IcebergError as error:
            problems.append(str(error))
    if problems:
        listing = "\n".join(f"- {problem}" for problem in problems)
        raise InvalidInputError(
            f"Iceberg IO manager metadata is invalid for {len(problems)} asset(s):\n{listing}"
        )
    return _labelled(defs, tables)


def _iceberg_io_managers(defs: dg.Definitions) -> dict[str, IcebergIOManager]:
    return {
        key: resource
        for key, resource in (defs.resources or {}).items()
        if isinstance(resource, IcebergIOManager)
    }


def _iceberg_specs(
    defs: dg.Definitions, io_managers: Mapping[str, IcebergIOManager]
) -> Iterator[tuple[dg.AssetSpec, IcebergIOManager]]:
    """The specs of the materializable assets whose IO manager is one of ``io_managers``."""
    for definition in defs.assets or ():
        if not isinstance(definition, dg.AssetsDefinition) or not definition.is_materializable:
            continue
        for key in definition.keys:
            io_manager = io_managers.get(definition.get_io_manager_key_for_asset_key(key))
            if io_manager is not None:
                yield definition.get_asset_spec(key), io_manager


def _plain(metadata: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v.value if isinstance(v, dg.MetadataValue) else v for k, v in metadata.items()}


def _checked_table_name(spec: dg.AssetSpec, io_manager: IcebergIOManager) -> str:
    """The asset's ``catalog.namespace.table``, once its IO-manager metadata is checked."""
    asset = spec.key.to_user_string()
    metadata = _plain(spec.metadata or {})
    output_settings(metadata, io_manager.output_defaults(), asset)
    if spec.partitions_def is not None:
        check_partition_expr(asset, spec.partitions_def, metadata.get("partition_expr"))
    try:
        namespace, name = asset_table_identifier(spec.key.path, metadata, io_manager.namespace)
    except IcebergError as error:
        raise InvalidInputError(f"Asset {asset}: {error}") from None
    return f"{io_manager.catalog.name}.{namespace}.{name}"


def _labelled(defs: dg.Definitions, tables: Mapping[dg.AssetKey, str]) -> dg.Definitions:
    """``defs`` with the Iceberg assets' kind, storage kind and table name, for the UI.

    Dagster maps specs of asset definitions and specs only; definitions holding other kinds of
    assets are returned unlabelled.
    """
    if not tables or any(
        not isinstance(a, dg.AssetsDefinition | dg.AssetSpec) for a in defs.assets or ()
    ):
        return defs

    def label(spec: dg.AssetSpec) -> dg.AssetSpec:
        table = tables.get(spec.key)
        if table is None:
            return spec
        kinds = {STORAGE_KIND} if len(spec.kinds) < _MAX_KINDS else set()
        tags = {} if _STORAGE_KIND_TAG in spec.tags else {_STORAGE_KIND_TAG: STORAGE_KIND}
        metadata = {} if _TABLE_NAME_KEY in spec.metadata else {_TABLE_NAME_KEY: table}
        return spec.merge_attributes(kinds=kinds, tags=tags, metadata=metadata)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return defs.map_asset_specs(func=label)
