"""Fixtures of the maintenance-job tests: an embedded catalog and a Dagster instance."""

import dagster as dg
import pytest

from floe_dagster_iceberg import (
    EmbeddedCatalogConfig,
    IcebergCatalogResource,
    create_iceberg_resources,
)


@pytest.fixture
def catalog_resource(tmp_path) -> IcebergCatalogResource:
    return IcebergCatalogResource(catalog=EmbeddedCatalogConfig(home=str(tmp_path)))


@pytest.fixture
def resources(catalog_resource):
    return create_iceberg_resources(catalog_resource)


@pytest.fixture
def instance():
    with dg.instance_for_test() as test_instance:
        yield test_instance
