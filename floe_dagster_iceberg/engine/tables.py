"""Tables and namespaces: creation, how an existing table differs from a config, schema history."""

from __future__ import annotations

from pyiceberg.catalog import Catalog
from pyiceberg.table import Table

from floe_dagster_iceberg.engine.config import SchemaVersion, TableConfig
from floe_dagster_iceberg.engine.partitioning import partition_fields_of
from floe_dagster_iceberg.engine.types import iceberg_schema_from_columns, type_to_string

__all__ = ["config_differences", "ensure_namespace", "schema_history"]


def ensure_namespace(catalog: Catalog, namespace: str) -> None:
    """Create the namespace (and its parents) if missing."""
    levels = namespace.split(".")
    for depth in range(1, len(levels) + 1):
        level = tuple(levels[:depth])
        try:
            catalog.create_namespace_if_not_exists(level)
        except Exception:
            # Concurrent writers race to create it; a SQL catalog then raises its database's
            # IntegrityError instead of NamespaceAlreadyExistsError. Losing that race is fine.
            if not catalog.namespace_exists(level):
                raise


def config_differences(config: TableConfig, table: Table) -> tuple[str, ...]:
    differences = []
    existing = {f.name: f for f in table.schema().fields}
    wanted = iceberg_schema_from_columns(config.table_schema)
    for field in wanted.fields:
        current = existing.get(field.name)
        if current is None:
            differences.append(f"column {field.name} is not in the table")
        elif type_to_string(current.field_type) != type_to_string(field.field_type):
            differences.append(
                f"column {field.name}: table has {type_to_string(current.field_type)}, "
                f"config has {type_to_string(field.field_type)}"
            )
        elif current.required != field.required:
            differences.append(f"column {field.name}: required={current.required} in the table")
    differences += [
        f"column {n} is not in the config" for n in existing if n not in wanted.column_names
    ]
    have = {
        (f.source_column, f.notation) for f in partition_fields_of(table.schema(), table.spec())
    }
    want = {(f.source_column, f.notation) for f in config.partition_spec}
    if have != want:
        differences.append(f"partition spec: table has {sorted(have)}, config has {sorted(want)}")
    return tuple(differences)


def schema_history(loaded: Table) -> list[SchemaVersion]:
    """Every schema of the table, oldest first, with the first snapshot written with it."""
    first_snapshot: dict[int, int] = {}
    for snapshot in sorted(loaded.metadata.snapshots, key=lambda s: s.timestamp_ms):
        if snapshot.schema_id is not None:
            first_snapshot.setdefault(snapshot.schema_id, snapshot.snapshot_id)
    current_id = loaded.metadata.current_schema_id
    return [
        SchemaVersion(
            schema_id=schema.schema_id,
            columns=tuple(
                f"{f.name} {type_to_string(f.field_type)}{' required' if f.required else ''}"
                for f in schema.fields
            ),
            first_snapshot_id=first_snapshot.get(schema.schema_id),
            is_current=schema.schema_id == current_id,
        )
        for schema in sorted(loaded.metadata.schemas, key=lambda s: s.schema_id)
    ]
