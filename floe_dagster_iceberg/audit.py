"""Write-audit-publish: an asset's write lands on an audit branch, its checks read it there, and
it is published when every blocking check passed.

The IO manager writes an audited asset (metadata ``write_audit_publish=True``, or the IO
manager's ``write_audit_publish``) to the branch ``audit-<run id>`` of its table, forked from
the code location's branch (``main`` by default). Asset checks that take the asset as a
parameter load it from that branch. Publication, one atomic ref update of the target branch
that also removes the audit branch, happens at the first of:

* the write itself, when the run plans no check of the asset;
* a load of the asset by a downstream asset of the same run (Dagster runs it only once the
  blocking checks passed);
* the end of the step (or run) that evaluated the asset's last planned check, when no
  blocking check failed.

A failed blocking check fails the run as Dagster does, and the target branch is untouched: the
staged data stays readable on the audit branch (named in the materialization's
``iceberg/audit_branch`` metadata) until maintenance removes audit branches older than its
limit.

Example:
    >>> import dagster as dg, pyarrow as pa
    >>> @dg.asset(io_manager_key="iceberg", metadata={"write_audit_publish": True})
    ... def orders() -> pa.Table:
    ...     return pa.table({"id": [1, 2]})
    >>> @dg.asset_check(asset=orders, blocking=True)
    ... def ids_are_unique(orders: pa.Table) -> dg.AssetCheckResult:
    ...     ids = orders.column("id")
    ...     return dg.AssetCheckResult(passed=len(ids.unique()) == len(ids))
    >>> audit_branch_name("6f1c3c4e-0000-4000-8000-000000000000")
    'audit-6f1c3c4e-0000-4000-8000-000000000000'
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from dagster import AssetCheckSeverity, AssetKey, DagsterEventType, DagsterInstance
from pyiceberg.table.refs import MAIN_BRANCH

from floe_dagster_iceberg.engine.branches import PublishResult
from floe_dagster_iceberg.engine.manager import IcebergTableManager

__all__ = [
    "AUDIT_BRANCH_METADATA",
    "AUDIT_BRANCH_PREFIX",
    "AuditState",
    "PendingAudit",
    "audit_branch_name",
    "audit_state",
]

AUDIT_BRANCH_PREFIX = "audit-"
AUDIT_BRANCH_METADATA = "iceberg/audit_branch"
"""Materialization metadata of an audited write: the branch its data was staged on."""


def audit_branch_name(run_id: str) -> str:
    """The branch a run stages its audited writes on."""
    return f"{AUDIT_BRANCH_PREFIX}{run_id}"


class AuditState(str, Enum):
    """Where the checks of an audited asset stand in a run."""

    NO_CHECKS = "no_checks"
    RUNNING = "running"
    PASSED = "passed"
    FAILED = "failed"


@dataclass(frozen=True)
class PendingAudit:
    """An audited write of this process that is not published yet."""

    run_id: str
    asset_key: AssetKey
    identifier: tuple[str, str]
    branch: str
    into: str
    fork_from: tuple[str, ...] = ()
    staged_snapshot_id: int | None = None

    @classmethod
    def of_run(
        cls,
        run_id: str,
        asset_key: AssetKey,
        identifier: tuple[str, str],
        target: str | None,
        staged_snapshot_id: int | None = None,
    ) -> PendingAudit:
        """The run's audit of a table, published into ``target`` (None: ``main``)."""
        return cls(
            run_id=run_id,
            asset_key=asset_key,
            identifier=identifier,
            branch=audit_branch_name(run_id),
            into=target or MAIN_BRANCH,
            fork_from=(target,) if target else (),
            staged_snapshot_id=staged_snapshot_id,
        )

    def publish(self, manager: IcebergTableManager) -> PublishResult:
        return manager.publish_branch(
            self.identifier, self.branch, self.into, self.fork_from, self.staged_snapshot_id
        )


def audit_state(instance: DagsterInstance, run_id: str, asset_key: AssetKey) -> AuditState:
    """Whether the checks the run planned for ``asset_key`` passed, failed or still run.

    Failed means a blocking check failed with severity ERROR; other failures do not hold the
    data back.
    """
    planned = {
        data.check_name
        for data in _event_data(instance, run_id, DagsterEventType.ASSET_CHECK_EVALUATION_PLANNED)
        if data.asset_key == asset_key
    }
    if not planned:
        return AuditState.NO_CHECKS
    evaluated = {
        data.check_name: data
        for data in _event_data(instance, run_id, DagsterEventType.ASSET_CHECK_EVALUATION)
        if data.asset_key == asset_key
    }
    if any(
        not e.passed and e.blocking and e.severity == AssetCheckSeverity.ERROR
        for e in evaluated.values()
    ):
        return AuditState.FAILED
    return AuditState.RUNNING if planned - evaluated.keys() else AuditState.PASSED


def staged_audits(
    instance: DagsterInstance, run_id: str, catalog_name: str, target: str | None
) -> list[PendingAudit]:
    """The audited writes of the run that have checks: from the run's planned checks and the
    materializations of their assets (whichever process wrote them)."""
    checked = {
        data.asset_key
        for data in _event_data(instance, run_id, DagsterEventType.ASSET_CHECK_EVALUATION_PLANNED)
    }
    audits = []
    for asset_key in checked:
        event = instance.get_latest_materialization_event(asset_key)
        if event is None or event.run_id != run_id or event.asset_materialization is None:
            continue
        metadata = event.asset_materialization.metadata
        if AUDIT_BRANCH_METADATA not in metadata:
            continue
        table = str(metadata["dagster/table_name"].value).removeprefix(f"{catalog_name}.")
        namespace, name = table.rsplit(".", 1)
        staged = int(metadata["iceberg/snapshot_id"].value)
        audits.append(PendingAudit.of_run(run_id, asset_key, (namespace, name), target, staged))
    return audits


def _event_data(
    instance: DagsterInstance, run_id: str, event_type: DagsterEventType
) -> Iterable[Any]:
    records = instance.get_records_for_run(run_id=run_id, of_type=event_type).records
    for record in records:
        event = record.event_log_entry.dagster_event
        if event is not None:
            yield event.event_specific_data


def failed_checks_message(audit: PendingAudit) -> str:
    table = ".".join(audit.identifier)
    return (
        f"Table {table}: a blocking check of {audit.asset_key.to_user_string()} failed, so its "
        f"write was not published; {audit.into!r} is unchanged. The staged data stays on branch "
        f"{audit.branch!r} (read it with AssetIn(metadata={{'ref': '{audit.branch}'}}) or "
        f"IcebergTableManager.scan(..., ref='{audit.branch}')) until maintenance removes it."
    )


def unpublished_message(audit: PendingAudit, error: Exception) -> str:
    table = ".".join(audit.identifier)
    return (
        f"Table {table}: the checks of {audit.asset_key.to_user_string()} passed but its write "
        f"could not be published into {audit.into!r} ({error}). {audit.into!r} is unchanged and "
        f"the data stays on branch {audit.branch!r}: re-run the asset, or publish the branch "
        f"with IcebergTableManager.publish_branch('{table}', '{audit.branch}')."
    )
