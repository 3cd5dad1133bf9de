"""Which tables a maintenance job maintains.

A job is given tables (``"namespace.table"``), whole namespaces (listed at run time), assets
(definitions, specs or keys), or none of them: every asset of the code location stored by the
Iceberg IO manager. Run config can replace the selection (``tables``, ``namespaces``,
``asset_keys``).

Example:
    >>> selection = TableSelection.of(tables=["sales.orders"], assets=["sales/customers"])
    >>> selection.tables, selection.asset_keys, selection.everything
    (('sales.orders',), (AssetKey(['sales', 'customers']),), False)
"""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import dagster as dg

from floe_dagster_iceberg.asset_tables import DEFAULT_NAMESPACE, asset_table_identifier

__all__ = [
    "DEFAULT_IO_MANAGER_KEY",
    "AssetLike",
    "TableSelection",
    "Target",
    "asset_keys",
    "code_location_tables",
    "failure",
    "iceberg_asset_tables",
]

DEFAULT_IO_MANAGER_KEY = "iceberg"

AssetLike = dg.AssetsDefinition | dg.AssetSpec | dg.AssetKey | str | Sequence[str]


def _metadata_value(value: Any) -> Any:
    return value.value if isinstance(value, dg.MetadataValue) else value


def iceberg_asset_tables(
    assets: Iterable[dg.AssetsDefinition | dg.AssetSpec],
    *,
    io_manager_key: str | None = DEFAULT_IO_MANAGER_KEY,
    default_namespace: str = DEFAULT_NAMESPACE,
) -> dict[dg.AssetKey, str]:
    """The Iceberg table (``"namespace.table"``) of every asset stored by the Iceberg IO manager.

    ``io_manager_key=None`` maps every asset, whatever stores it.

    Example:
        >>> import dagster as dg
        >>> @dg.asset(key_prefix="sales", io_manager_key="iceberg")
        ... def orders(): ...
        >>> iceberg_asset_tables([orders])
        {AssetKey(['sales', 'orders']): 'sales.orders'}
    """
    tables: dict[dg.AssetKey, str] = {}
    for definition in assets:
        specs = (
            [definition.get_asset_spec(key) for key in definition.keys]
            if isinstance(definition, dg.AssetsDefinition)
            else [definition]
        )
        for spec in specs:
            if io_manager_key is not None and _io_manager_key(definition, spec) != io_manager_key:
                continue
            metadata = {k: _metadata_value(v) for k, v in (spec.metadata or {}).items()}
            namespace, name = asset_table_identifier(spec.key.path, metadata, default_namespace)
            tables[spec.key] = f"{namespace}.{name}"
    return tables


def _io_manager_key(definition: dg.AssetsDefinition | dg.AssetSpec, spec: dg.AssetSpec) -> str:
    if isinstance(definition, dg.AssetsDefinition):
        try:
            return definition.get_io_manager_key_for_asset_key(spec.key)
        except Exception:
            return "io_manager"
    return str(_metadata_value((spec.metadata or {}).get("dagster/io_manager_key", "io_manager")))


def _asset_key(asset: AssetLike) -> dg.AssetKey:
    if isinstance(asset, dg.AssetKey):
        return asset
    if isinstance(asset, dg.AssetSpec):
        return asset.key
    if isinstance(asset, str):
        return dg.AssetKey.from_user_string(asset)
    return dg.AssetKey(list(asset))


def asset_keys(assets: Sequence[AssetLike] | None) -> list[dg.AssetKey]:
    """The asset keys of ``assets`` (every key of a multi-asset definition).

    Example:
        >>> asset_keys(["sales/orders", ["sales", "customers"]])
        [AssetKey(['sales', 'orders']), AssetKey(['sales', 'customers'])]
    """
    keys: list[dg.AssetKey] = []
    for asset in assets or ():
        if isinstance(asset, dg.AssetsDefinition):
            keys.extend(asset.keys)
        else:
            keys.append(_asset_key(asset))
    return keys


@dataclass(frozen=True)
class Target:
    """A table to maintain, and the asset it stores (None: no asset to observe)."""

    table: str
    asset_key: dg.AssetKey | None


def failure(table: str, step: str, error: BaseException) -> dict:
    """A failed step on a table, as reported in run metadata."""
    return {"table": table, "step": step, "error": f"{type(error).__name__}: {error}"}


@dataclass(frozen=True)
class TableSelection:
    """The tables, namespaces and assets given to a job; none of them: everything."""

    tables: tuple[str, ...] = ()
    namespaces: tuple[str, ...] = ()
    asset_keys: tuple[dg.AssetKey, ...] = ()
    known_assets: tuple[tuple[dg.AssetKey, str], ...] = ()  # from the definitions given
    io_manager_key: str = DEFAULT_IO_MANAGER_KEY
    default_namespace: str = DEFAULT_NAMESPACE

    @property
    def everything(self) -> bool:
        """No selection: every Iceberg asset of the code location."""
        return not (self.tables or self.namespaces or self.asset_keys)

    @classmethod
    def of(
        cls,
        tables: Sequence[str | Sequence[str]] = (),
        namespaces: Sequence[str] = (),
        assets: Sequence[AssetLike] | None = None,
        io_manager_key: str = DEFAULT_IO_MANAGER_KEY,
        default_namespace: str = DEFAULT_NAMESPACE,
    ) -> "TableSelection":
        """The selection of a job's arguments."""
        keys: list[dg.AssetKey] = []
        known: dict[dg.AssetKey, str] = {}
        for asset in assets or ():
            if isinstance(asset, dg.AssetsDefinition | dg.AssetSpec):
                mapped = iceberg_asset_tables(
                    [asset], io_manager_key=None, default_namespace=default_namespace
                )
                known.update(mapped)
                keys.extend(mapped)
            else:
                keys.append(_asset_key(asset))
        return cls(
            tables=tuple(t if isinstance(t, str) else ".".join(t) for t in tables),
            namespaces=tuple(namespaces),
            asset_keys=tuple(keys),
            known_assets=tuple(known.items()),
            io_manager_key=io_manager_key,
            default_namespace=default_namespace,
        )

    def with_run_config(self, config: Mapping[str, Any]) -> "TableSelection":
        """The selection of the run config's ``tables``, ``namespaces``, ``asset_keys`` if it
        has any, else this one."""
        if not any(config.get(k) for k in ("tables", "namespaces", "asset_keys")):
            return self
        return replace(
            self,
            tables=tuple(config.get("tables") or ()),
            namespaces=tuple(config.get("namespaces") or ()),
            asset_keys=tuple(
                dg.AssetKey.from_user_string(k) for k in config.get("asset_keys") or ()
            ),
        )

    def resolve(self, context: Any, catalog: Any) -> tuple[list[Target], list[dict]]:
        """(targets sorted by table, failures): namespaces are listed in ``catalog`` now."""
        location = code_location_tables(context, self)
        if location is None:
            if self.everything:
                raise dg.Failure(
                    description="This run does not know its code location (it was started with "
                    "execute_in_process), so 'every Iceberg asset of the code location' cannot "
                    "be listed: give the job tables=, namespaces= or assets=, or launch it from "
                    "the code location (UI, schedule, sensor, `dagster job execute`)."
                )
            location = {}
        by_table = {table: key for key, table in location.items()}
        targets: dict[str, dg.AssetKey | None] = {}
        failures: list[dict] = []
        if self.everything:
            targets.update(by_table)
        known = dict(self.known_assets)
        for key in self.asset_keys:
            table = known.get(key) or location.get(key)
            if table is None:
                namespace, name = asset_table_identifier(key.path, {}, self.default_namespace)
                table = f"{namespace}.{name}"
            targets[table] = key
        for table in self.tables:
            targets.setdefault(table, by_table.get(table))
        for namespace in self.namespaces:
            try:
                identifiers = catalog.list_tables(namespace)
            except Exception as error:
                failures.append(failure(f"namespace {namespace}", "list_tables", error))
                continue
            for identifier in identifiers:
                table = ".".join(identifier)
                targets.setdefault(table, by_table.get(table))
        return [Target(table, key) for table, key in sorted(targets.items())], failures


def code_location_tables(context: Any, selection: TableSelection) -> dict[dg.AssetKey, str] | None:
    """Iceberg assets of the code location the run or sensor belongs to (None: unknown).

    A run launched from a code location (UI, schedule, sensor, ``dagster job execute``) knows
    its code location; ``execute_in_process`` does not.
    """
    try:
        repository = context.repository_def
    except Exception:
        return None
    if repository is None:
        return None
    definitions = {id(d): d for d in repository.assets_defs_by_key.values()}
    return iceberg_asset_tables(
        definitions.values(),
        io_manager_key=selection.io_manager_key,
        default_namespace=selection.default_namespace,
    )
