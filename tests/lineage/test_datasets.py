"""Datasets of Iceberg tables are named like the OpenLineage Spark integration names them."""

import json

import dagster as dg
import pyarrow as pa
import pytest

from floe_dagster_iceberg import IcebergCatalogResource, RestCatalogConfig, create_iceberg_resources
from floe_dagster_iceberg.lineage import LineageConfig, flush_lineage
from floe_dagster_iceberg.lineage.datasets import CatalogIdentity, dataset_identity
from lineage.support import FLUSH_SECONDS, Receiver, lifecycle, validate_event


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        ("s3://lake/warehouse/sales/orders", ("s3://lake", "warehouse/sales/orders")),
        ("s3a://lake/warehouse/sales/orders/", ("s3://lake", "warehouse/sales/orders")),
        ("gs://lake/w/orders", ("gs://lake", "w/orders")),
        ("abfss://c@acct.dfs.core.windows.net/w/t", ("abfss://c@acct.dfs.core.windows.net", "w/t")),
        ("file:///data/warehouse/sales.db/orders", ("file", "/data/warehouse/sales.db/orders")),
        ("/data/warehouse/sales.db/orders/", ("file", "/data/warehouse/sales.db/orders")),
        ("file:///data/my%20lake/t", ("file", "/data/my lake/t")),
        ("hdfs://namenode:8020/warehouse/orders", ("hdfs://namenode:8020", "/warehouse/orders")),
    ],
)
def test_dataset_identity_follows_the_spark_integration(
    location: str, expected: tuple[str, str]
) -> None:
    assert dataset_identity(location) == expected


@pytest.mark.parametrize(
    ("identity", "expected"),
    [
        (
            CatalogIdentity("lake", "rest", uri="http://127.0.0.1:8181/catalog"),
            ("http://127.0.0.1:8181/catalog", "sales.orders"),
        ),
        (
            CatalogIdentity("lake", "sql", uri="postgresql+psycopg2://***@db:5432/iceberg"),
            ("postgresql://db:5432/iceberg", "sales.orders"),
        ),
        (
            CatalogIdentity("lake", "hive", uri="thrift://metastore:9083"),
            ("hive://metastore:9083", "sales.orders"),
        ),
        (
            CatalogIdentity(
                "lake", "glue", glue_region="eu-west-1", glue_catalog_id="123456789012"
            ),
            ("arn:aws:glue:eu-west-1:123456789012", "table/sales/orders"),
        ),
        (CatalogIdentity("lake", "custom"), ("iceberg://lake", "sales.orders")),
    ],
)
def test_catalog_symlink_identity(identity: CatalogIdentity, expected: tuple[str, str]) -> None:
    assert identity.symlink(("sales", "orders")) == expected


def test_rest_catalog_on_s3_is_named_like_spark(
    rest_catalog_properties: dict[str, str], namespace: str, receiver: Receiver
) -> None:
    properties = dict(rest_catalog_properties)
    catalog = IcebergCatalogResource(
        catalog=RestCatalogConfig(
            uri=properties["uri"],
            warehouse=properties["warehouse"],
            credential=properties["credential"],
        ),
        properties={k: v for k, v in properties.items() if k.startswith("s3.")},
        openlineage=LineageConfig(transport={"type": "http", "url": receiver.url}),
    )

    @dg.asset(name="orders", metadata={"namespace": namespace}, io_manager_key="iceberg")
    def rest_orders() -> pa.Table:
        return pa.table({"order_id": [1, 2], "amount": [1.0, 2.0]})

    result = dg.materialize([rest_orders], resources=create_iceberg_resources(catalog))
    assert result.success
    assert flush_lineage(FLUSH_SECONDS)
    assert [e["eventType"] for e in receiver.events] == ["START", "COMPLETE"]
    for event in receiver.events:
        validate_event(event)
    (output,) = receiver.events[1]["outputs"]

    location = catalog.get_manager().load_table((namespace, "orders")).location()
    assert location.startswith("s3://")
    bucket, _, path = location.removeprefix("s3://").partition("/")
    assert output["namespace"] == f"s3://{bucket}"
    assert output["name"] == path.rstrip("/")
    assert not output["name"].startswith("/")
    assert output["facets"]["symlinks"]["identifiers"] == [
        {"namespace": properties["uri"], "name": f"{namespace}.orders", "type": "TABLE"}
    ]
    facet = output["facets"]["catalog"]
    assert (facet["type"], facet["name"], facet["metadataUri"], facet["warehouseUri"]) == (
        "rest",
        "floe",
        properties["uri"],
        properties["warehouse"],
    )
    assert properties["credential"] not in json.dumps(receiver.events)
    assert lifecycle(output) == "CREATE"
