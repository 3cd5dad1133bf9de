"""Models validate eagerly and their errors name the field and the fix."""

import pytest
from pydantic import ValidationError

from floe_dagster_iceberg import (
    ColumnSpec,
    PartitionField,
    PartitionTransform,
    SchemaChange,
    TableConfig,
    TableSchema,
    WriteConfig,
    WriteMode,
)


def _schema(*names: str) -> TableSchema:
    return TableSchema(columns=[ColumnSpec(name=n, type="string") for n in names])


@pytest.mark.parametrize(
    ("notation", "transform", "width", "field_name"),
    [
        ("identity", PartitionTransform.IDENTITY, None, "c"),
        ("day", PartitionTransform.DAY, None, "c_day"),
        ("bucket[16]", PartitionTransform.BUCKET, 16, "c_bucket_16"),
        ("Truncate[ 4 ]", PartitionTransform.TRUNCATE, 4, "c_truncate_4"),
    ],
)
def test_partition_field_reads_iceberg_notation(notation, transform, width, field_name):
    field = PartitionField(source_column="c", transform=notation)
    assert (field.transform, field.width, field.field_name) == (transform, width, field_name)


@pytest.mark.parametrize(
    ("notation", "message"),
    [
        ("bucket", r"needs a width: write it as 'bucket\[16\]'"),
        ("day[3]", "takes no width"),
        ("weekly", "not an Iceberg transform"),
    ],
)
def test_partition_field_errors_name_the_fix(notation, message):
    with pytest.raises(ValidationError, match=message):
        PartitionField(source_column="c", transform=notation)


def test_models_are_frozen_and_refuse_unknown_fields():
    field = PartitionField(source_column="c")
    with pytest.raises(ValidationError):
        field.source_column = "d"
    with pytest.raises(ValidationError, match="tranform"):
        PartitionField(source_column="c", tranform="day")


def test_table_config_checks_columns_names_and_references():
    with pytest.raises(ValidationError, match="appears twice"):
        _schema("a", "a")
    with pytest.raises(ValidationError, match="'ts' used in the partition spec"):
        TableConfig(
            namespace="n",
            name="t",
            schema=_schema("a"),
            partition_spec=[PartitionField(source_column="ts")],
        )
    with pytest.raises(ValidationError, match="path traversal"):
        TableConfig(namespace="..", name="t", schema=_schema("a"))
    with pytest.raises(ValidationError, match="not an Iceberg type"):
        ColumnSpec(name="a", type="varchar")


def test_schema_change_constructors_and_requirements():
    assert SchemaChange.rename("a", "b").new_name == "b"
    assert SchemaChange.widen_type("a", "DECIMAL(10, 2)").new_type == "decimal(10,2)"
    with pytest.raises(ValidationError, match="needs 'new_type'"):
        SchemaChange(kind="add_column", column="x")


def test_write_config_upsert_needs_join_cols():
    assert WriteConfig(mode="append").mode is WriteMode.APPEND
    with pytest.raises(ValidationError, match="join_cols"):
        WriteConfig(mode="upsert")
