"""IcebergCatalogResource: embedded default, typed configs, secrets, errors, caching."""

import os
from pathlib import Path

import dagster as dg
import pytest

from floe_dagster_iceberg import (
    HOME_ENV_VAR,
    CatalogConnectionError,
    CustomCatalogConfig,
    IcebergCatalogResource,
    IcebergError,
    RestCatalogConfig,
    S3StorageConfig,
    SqlCatalogConfig,
)


def test_embedded_default_lives_under_the_home_variable(tmp_path, monkeypatch):
    monkeypatch.setenv(HOME_ENV_VAR, str(tmp_path))
    resource = IcebergCatalogResource()
    manager = resource.get_manager()
    import pyarrow as pa

    manager.write("demo.numbers", pa.table({"n": [1, 2]}))

    assert (tmp_path / "catalog.db").is_file()
    assert any((tmp_path / "warehouse" / "demo" / "numbers").rglob("*.parquet"))
    assert resource.load_catalog() is resource.load_catalog()


def test_typed_configs_build_pyiceberg_properties(sqlite_catalog_properties):
    sql = IcebergCatalogResource(
        catalog=SqlCatalogConfig(
            uri=sqlite_catalog_properties["uri"], warehouse=sqlite_catalog_properties["warehouse"]
        ),
        storage=S3StorageConfig(
            endpoint="http://127.0.0.1:1", region="us-east-1", path_style_access=True
        ),
        properties={"py-io-impl": "pyiceberg.io.pyarrow.PyArrowFileIO"},
    )
    properties = sql.catalog_properties()
    assert properties["type"] == "sql"
    assert properties["s3.endpoint"] == "http://127.0.0.1:1"
    assert properties["s3.force-virtual-addressing"] == "false"
    assert properties["py-io-impl"].endswith("PyArrowFileIO")
    rest = RestCatalogConfig(
        uri="http://catalog", warehouse="lake", token="t0k3n", scope="PRINCIPAL_ROLE:ALL"
    )
    assert rest.to_properties() == {
        "type": "rest",
        "uri": "http://catalog",
        "warehouse": "lake",
        "token": "t0k3n",
        "scope": "PRINCIPAL_ROLE:ALL",
    }


def test_rest_catalog_on_seaweedfs(rest_catalog_properties, namespace):
    p = rest_catalog_properties
    resource = IcebergCatalogResource(
        catalog=RestCatalogConfig(
            uri=p["uri"], warehouse=p["warehouse"], credential=p["credential"]
        ),
        storage=S3StorageConfig(
            endpoint=p["s3.endpoint"],
            region=p["s3.region"],
            access_key_id=p["s3.access-key-id"],
            secret_access_key=p["s3.secret-access-key"],
        ),
    )
    import pyarrow as pa

    manager = resource.get_manager()
    manager.write(f"{namespace}.t", pa.table({"n": [1, 2, 3]}))
    assert manager.scan(f"{namespace}.t").num_rows == 3
    assert resource.catalog_type == "rest"


def test_secrets_from_envvar_are_not_in_repr(monkeypatch):
    monkeypatch.setenv("TEST_ICEBERG_CREDENTIAL", "client:very-secret-value")
    resource = IcebergCatalogResource(
        catalog=RestCatalogConfig(
            uri="http://127.0.0.1:1", credential=dg.EnvVar("TEST_ICEBERG_CREDENTIAL")
        )
    )
    initialized = resource.process_config_and_initialize()
    assert initialized.catalog_properties()["credential"] == "client:very-secret-value"
    assert "very-secret-value" not in repr(initialized)
    assert "very-secret-value" not in str(initialized)


def test_unknown_catalog_type_and_unreachable_catalog_errors(monkeypatch):
    with pytest.raises(IcebergError, match="'nope'"):
        IcebergCatalogResource(
            catalog=CustomCatalogConfig(properties={"type": "nope"})
        ).load_catalog()
    monkeypatch.setenv("TEST_ICEBERG_CREDENTIAL", "client:very-secret-value")
    resource = IcebergCatalogResource(
        catalog=RestCatalogConfig(
            uri="http://127.0.0.1:9", credential=dg.EnvVar("TEST_ICEBERG_CREDENTIAL")
        )
    ).process_config_and_initialize()
    with pytest.raises(CatalogConnectionError, match=r"127\.0\.0\.1:9") as error:
        resource.load_catalog()
    assert "very-secret-value" not in str(error.value)


def test_default_home_is_project_local(tmp_path, monkeypatch):
    monkeypatch.delenv(HOME_ENV_VAR, raising=False)
    monkeypatch.chdir(tmp_path)
    properties = IcebergCatalogResource().catalog_properties()
    assert properties["uri"] == f"sqlite:///{Path(os.getcwd()) / '.floe' / 'catalog.db'}"
