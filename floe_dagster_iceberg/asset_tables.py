"""Which Iceberg table an asset is stored in: the one place that maps asset keys to tables."""

from __future__ import annotations

from floe_dagster_iceberg.engine.identifiers import table_identifier

__all__ = ["DEFAULT_NAMESPACE", "asset_table_identifier"]

DEFAULT_NAMESPACE = "public"


def asset_table_identifier(
    asset_key_path: list[str] | tuple[str, ...],
    metadata: dict | None = None,
    default_namespace: str = DEFAULT_NAMESPACE,
) -> tuple[str, str]:
    """The table an asset is stored in.

    Namespace: metadata ``namespace`` (or ``schema``, as the community package calls it), else
    the asset key prefix joined with dots, else ``default_namespace``. Table name: the last part
    of the asset key.

    Example:
        >>> asset_table_identifier(["sales", "orders"])
        ('sales', 'orders')
        >>> asset_table_identifier(["orders"], {"schema": "raw"})
        ('raw', 'orders')
        >>> asset_table_identifier(["orders"])
        ('public', 'orders')
    """
    metadata = metadata or {}
    *prefix, name = asset_key_path
    namespace = metadata.get("namespace") or metadata.get("schema")
    if not namespace:
        namespace = ".".join(prefix) if prefix else default_namespace
    return table_identifier(str(namespace), name)
