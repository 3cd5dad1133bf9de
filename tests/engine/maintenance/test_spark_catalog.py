"""The Spark catalog mapped from the catalog's properties: what Spark cannot reach is refused
with what to do instead."""

import pytest

from floe_dagster_iceberg.engine.maintenance.spark_catalog import (
    spark_catalog_conf,
    spark_catalog_properties,
)
from floe_dagster_iceberg.errors import InvalidInputError


def test_sql_catalogs_map_to_the_jdbc_catalog_on_the_same_database_and_warehouse() -> None:
    sqlite = spark_catalog_properties(
        "floe", {"type": "sql", "uri": "sqlite:////data/catalog.db", "warehouse": "file:///w"}
    )
    assert sqlite == {
        "catalog-impl": "org.apache.iceberg.jdbc.JdbcCatalog",
        "uri": "jdbc:sqlite:/data/catalog.db",
        "warehouse": "file:///w",
    }
    postgres = spark_catalog_properties(
        "floe",
        {
            "type": "sql",
            "uri": "postgresql+psycopg2://app@db/lake?sslmode=require",
            "warehouse": "file:///w",
        },
    )
    assert postgres["uri"] == "jdbc:postgresql://db:5432/lake"
    assert (postgres["jdbc.user"], postgres["jdbc.sslmode"]) == ("app", "require")
    assert "jdbc.password" not in postgres


def test_what_spark_cannot_reach_is_refused_with_the_way_out() -> None:
    socket_uri = "postgresql+psycopg2://postgres@/lake?host=/run/postgresql"
    with pytest.raises(InvalidInputError, match=r"'floe'.*Unix socket.*host and port"):
        spark_catalog_properties(
            "floe", {"type": "sql", "uri": socket_uri, "warehouse": "file:///w"}
        )
    with pytest.raises(InvalidInputError, match=r"'lake'.*'glue'.*catalog_properties"):
        spark_catalog_properties("lake", {"type": "glue", "warehouse": "s3://lake/w"})


def test_rest_catalog_keeps_its_credentials_and_s3_storage_becomes_s3_file_io() -> None:
    properties = spark_catalog_properties(
        "lake",
        {
            "type": "rest",
            "uri": "http://127.0.0.1:8181",
            "warehouse": "warehouse",
            "credential": "id:secret",
            "s3.endpoint": "http://127.0.0.1:9000",
            "s3.region": "us-east-1",
            "s3.access-key-id": "K",
            "s3.secret-access-key": "S",
        },
    )
    assert properties == {
        "type": "rest",
        "uri": "http://127.0.0.1:8181",
        "warehouse": "warehouse",
        "credential": "id:secret",
        "io-impl": "org.apache.iceberg.aws.s3.S3FileIO",
        "s3.endpoint": "http://127.0.0.1:9000",
        "s3.access-key-id": "K",
        "s3.secret-access-key": "S",
        "client.region": "us-east-1",
        "s3.path-style-access": "true",
    }
    conf = spark_catalog_conf("lake", properties)
    assert conf["spark.sql.catalog.lake"] == "org.apache.iceberg.spark.SparkCatalog"
    assert conf["spark.sql.catalog.lake.cache-enabled"] == "false"
    assert conf["spark.sql.catalog.lake.credential"] == "id:secret"
