"""Partition specs and sort orders: building them from models and evolving them safely."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from pyiceberg.partitioning import PartitionField as IcebergPartitionField
from pyiceberg.partitioning import PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.table.sorting import NullOrder as IcebergNullOrder
from pyiceberg.table.sorting import SortDirection as IcebergSortDirection
from pyiceberg.table.sorting import SortField as IcebergSortField
from pyiceberg.table.sorting import SortOrder
from pyiceberg.table.update.spec import UpdateSpec
from pyiceberg.transforms import (
    BucketTransform,
    DayTransform,
    HourTransform,
    IdentityTransform,
    MonthTransform,
    Transform,
    TruncateTransform,
    YearTransform,
)

from floe_dagster_iceberg.engine.config import (
    NullOrder,
    PartitionField,
    PartitionSpecUpdateMode,
    PartitionTransform,
    SortDirection,
    SortField,
)
from floe_dagster_iceberg.errors import IcebergError, InvalidInputError

__all__ = [
    "SpecPlan",
    "build_partition_spec",
    "build_sort_order",
    "partition_fields_of",
    "plan_spec_update",
    "to_transform",
]

_SIMPLE_TRANSFORMS: dict[PartitionTransform, Transform] = {
    PartitionTransform.IDENTITY: IdentityTransform(),
    PartitionTransform.YEAR: YearTransform(),
    PartitionTransform.MONTH: MonthTransform(),
    PartitionTransform.DAY: DayTransform(),
    PartitionTransform.HOUR: HourTransform(),
}


def to_transform(partition_field: PartitionField) -> Transform:
    """The PyIceberg transform of a partition field.

    Example:
        >>> to_transform(PartitionField(source_column="id", transform="bucket[8]"))
        BucketTransform(num_buckets=8)
    """
    if partition_field.transform is PartitionTransform.BUCKET:
        return BucketTransform(partition_field.width or 0)
    if partition_field.transform is PartitionTransform.TRUNCATE:
        return TruncateTransform(partition_field.width or 0)
    return _SIMPLE_TRANSFORMS[partition_field.transform]


def _source_id(schema: Schema, column: str, purpose: str) -> int:
    try:
        return schema.find_field(column, case_sensitive=True).field_id
    except ValueError:
        raise InvalidInputError(
            f"Column {column!r} used in the {purpose} is not in the table's schema "
            f"(columns: {schema.column_names}); fix the column name."
        ) from None


def build_partition_spec(schema: Schema, fields: Sequence[PartitionField]) -> PartitionSpec:
    """A partition spec over ``schema`` (field ids resolved by column name)."""
    iceberg_fields = []
    for position, partition_field in enumerate(fields):
        source_id = _source_id(schema, partition_field.source_column, "partition spec")
        transform = to_transform(partition_field)
        source_type = schema.find_type(source_id)
        if not transform.can_transform(source_type):
            raise InvalidInputError(
                f"Partition transform {partition_field.notation!r} cannot apply to column "
                f"{partition_field.source_column!r} of type {source_type}; use identity, "
                "bucket[N] or truncate[W] for non-temporal columns."
            )
        iceberg_fields.append(
            IcebergPartitionField(
                source_id=source_id,
                field_id=1000 + position,
                transform=transform,
                name=partition_field.field_name,
            )
        )
    return PartitionSpec(*iceberg_fields)


def build_sort_order(schema: Schema, fields: Sequence[SortField]) -> SortOrder:
    """A sort order over ``schema``; an empty sequence means unsorted."""
    if not fields:
        return SortOrder()
    return SortOrder(
        *(
            IcebergSortField(
                source_id=_source_id(schema, sort_field.source_column, "sort order"),
                transform=IdentityTransform(),
                direction=IcebergSortDirection.ASC
                if sort_field.direction is SortDirection.ASC
                else IcebergSortDirection.DESC,
                null_order=IcebergNullOrder.NULLS_FIRST
                if sort_field.null_order is NullOrder.NULLS_FIRST
                else IcebergNullOrder.NULLS_LAST,
            )
            for sort_field in fields
        )
    )


def _transform_notation(transform: Transform) -> str:
    if isinstance(transform, BucketTransform):
        return f"bucket[{transform.num_buckets}]"
    if isinstance(transform, TruncateTransform):
        return f"truncate[{transform.width}]"
    return str(transform)


def partition_fields_of(schema: Schema, spec: PartitionSpec) -> list[PartitionField]:
    """The live (non-void) fields of a spec as models."""
    fields = []
    for iceberg_field in spec.fields:
        notation = _transform_notation(iceberg_field.transform)
        if notation == "void":
            continue
        fields.append(
            PartitionField(
                source_column=schema.find_column_name(iceberg_field.source_id) or "",
                transform=notation,
                name=iceberg_field.name,
            )
        )
    return fields


@dataclass
class SpecPlan:
    """Partition fields to remove and to add so a table follows its asset's partitioning."""

    remove: list[str] = field(default_factory=list)
    add: list[PartitionField] = field(default_factory=list)

    @property
    def is_empty(self) -> bool:
        return not (self.remove or self.add)

    def describe(self) -> list[str]:
        return [f"remove partition field {name}" for name in self.remove] + [
            f"add partition field {f.field_name} = {f.notation}({f.source_column})"
            for f in self.add
        ]

    def apply(self, update: UpdateSpec) -> None:
        for name in self.remove:
            update.remove_field(name)
        for partition_field in self.add:
            update.add_field(
                partition_field.source_column,
                to_transform(partition_field),
                partition_field.field_name,
            )


def plan_spec_update(
    table_name: str,
    schema: Schema,
    spec: PartitionSpec,
    desired: Sequence[PartitionField],
    mode: PartitionSpecUpdateMode,
) -> SpecPlan:
    """Plan how the table's spec follows ``desired``.

    Only fields on the desired source columns are owned by the caller: fields on other columns
    (added by another engine, say) are kept untouched.
    """
    current = partition_fields_of(schema, spec)
    owned_columns = {f.source_column for f in desired}
    wanted = {(f.source_column, f.notation) for f in desired}
    have = {(f.source_column, f.notation) for f in current}
    plan = SpecPlan(
        remove=[
            f.field_name
            for f in current
            if f.source_column in owned_columns and (f.source_column, f.notation) not in wanted
        ],
        add=[f for f in desired if (f.source_column, f.notation) not in have],
    )
    current_names = {f.field_name for f in current} - set(plan.remove)
    plan.add = [
        f
        if f.field_name not in current_names
        else f.model_copy(update={"name": f"{f.field_name}_{len(current)}"})
        for f in plan.add
    ]
    if not plan.is_empty and mode is PartitionSpecUpdateMode.ERROR:
        raise IcebergError(
            f"Table '{table_name}': the partition spec differs from the asset's partitioning "
            f"({'; '.join(plan.describe())}) and partition_spec_update_mode='error'. Set "
            "partition_spec_update_mode='update' to evolve the spec (old files keep their layout)."
        )
    return plan
