"""Lineage follows OpenLineage's standard configuration; the resource's settings override it."""

from pathlib import Path

import dagster as dg
import pytest

from floe_dagster_iceberg import EmbeddedCatalogConfig, IcebergCatalogResource
from floe_dagster_iceberg.lineage import flush_lineage
from floe_dagster_iceberg.lineage.config import LineageConfig, lineage_configured
from lineage.support import (
    FLUSH_SECONDS,
    Receiver,
    customers,
    materialize,
    project_resources,
    validate_event,
)


def test_off_when_nothing_is_configured(tmp_path: Path, no_openlineage_config: Path) -> None:
    resource = IcebergCatalogResource(catalog=EmbeddedCatalogConfig(home=str(tmp_path / "lake")))
    assert not lineage_configured()
    assert not resource.lineage().enabled

    (no_openlineage_config / "openlineage.yml").write_text("transport:\n  type: console\n")
    assert lineage_configured()
    assert resource.lineage().enabled


def test_standard_environment_variables_switch_it_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__TYPE", "console")
    assert lineage_configured()
    monkeypatch.delenv("OPENLINEAGE__TRANSPORT__TYPE")
    monkeypatch.setenv("OPENLINEAGE_URL", "http://127.0.0.1:1")
    assert lineage_configured()
    monkeypatch.setenv("OPENLINEAGE_DISABLED", "true")
    assert not lineage_configured()
    resource = IcebergCatalogResource(
        openlineage=LineageConfig(transport={"type": "http", "url": "http://127.0.0.1:1"})
    )
    assert not resource.lineage().enabled, "OPENLINEAGE_DISABLED beats every other setting"


def test_enabled_false_on_the_resource_beats_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENLINEAGE_URL", "http://127.0.0.1:1")
    resource = IcebergCatalogResource(openlineage=LineageConfig(enabled=False))
    assert not resource.lineage().enabled


def test_resource_override_sets_transport_and_job_namespace(
    tmp_path: Path, receiver: Receiver
) -> None:
    lineage = LineageConfig(transport={"type": "http", "url": receiver.url}, namespace="analytics")
    result = materialize(
        project_resources(tmp_path / "lake", lineage),
        dg.DagsterInstance.ephemeral(),
        [customers],
    )
    assert flush_lineage(FLUSH_SECONDS)
    assert [e["eventType"] for e in receiver.events] == ["START", "COMPLETE"]
    for event in receiver.events:
        validate_event(event)
        assert event["job"]["namespace"] == "analytics"
        assert event["run"]["facets"]["parent"]["job"]["namespace"] == "analytics"
        assert event["run"]["facets"]["parent"]["run"]["runId"] == result.run_id
