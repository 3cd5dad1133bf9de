"""OpenLineage settings: the resource's :class:`LineageConfig` and the standard configuration.

The standard configuration is OpenLineage's own: ``openlineage.yml`` (``$OPENLINEAGE_CONFIG``,
the working directory or ``~/.openlineage``), ``OPENLINEAGE_URL`` or
``OPENLINEAGE__TRANSPORT__*``; ``OPENLINEAGE_DISABLED=true`` switches everything off. A
:class:`LineageConfig` can override the transport, the job namespace or switch emission off.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from dagster import Config
from pydantic import Field

from floe_dagster_iceberg.redaction import RedactedRepr

__all__ = [
    "DEFAULT_JOB_NAMESPACE",
    "LineageConfig",
    "emission_off",
    "environment_signature",
    "job_namespace",
    "lineage_configured",
]

DEFAULT_JOB_NAMESPACE = "dagster"
"""Job namespace when neither the config nor ``$OPENLINEAGE_NAMESPACE`` names one."""

_ALIAS_PREFIX = "OPENLINEAGE__TRANSPORT__TRANSPORTS__DEFAULT_HTTP"


class LineageConfig(RedactedRepr, Config):
    """OpenLineage settings of a catalog resource; every field is optional.

    With no settings, events go where OpenLineage's standard configuration says
    (``openlineage.yml``, ``OPENLINEAGE_URL``, ``OPENLINEAGE__TRANSPORT__*``) and nowhere when
    nothing is configured.

    Example:
        >>> LineageConfig(transport={"type": "http", "url": "http://marquez:5000"}).namespace is None
        True
    """

    enabled: bool | None = Field(
        default=None,
        description="None: emit when OpenLineage is configured; False: never; True: always "
        "(the client's console transport when nothing is configured)",
    )
    transport: dict[str, Any] | None = Field(
        default=None,
        description="Transport as in openlineage.yml, e.g. {'type': 'http', 'url': "
        "'http://marquez:5000'}; replaces the transport of the standard configuration",
    )
    namespace: str | None = Field(
        default=None,
        description="Job namespace (default: $OPENLINEAGE_NAMESPACE or 'dagster')",
    )
    flush_timeout_seconds: float = Field(
        default=5.0, ge=0, description="How long a process waits at exit for queued events"
    )
    retry_after_seconds: float = Field(
        default=30.0, ge=0, description="How long events are dropped after a failed send"
    )
    max_queued_events: int = Field(
        default=10_000, ge=1, description="Events beyond this many waiting are dropped"
    )


def _config_file() -> Path | None:
    candidates = [
        os.environ.get("OPENLINEAGE_CONFIG"),
        str(Path.cwd() / "openlineage.yml"),
        str(Path.home() / ".openlineage" / "openlineage.yml"),
    ]
    for candidate in candidates:
        if candidate and os.path.isfile(candidate):
            return Path(candidate)
    return None


def _disabled_by_environment() -> bool:
    return os.environ.get("OPENLINEAGE_DISABLED", "").strip().lower() == "true"


def lineage_configured() -> bool:
    """Whether OpenLineage is configured the standard ways (and not disabled).

    True when ``OPENLINEAGE_URL`` or an ``OPENLINEAGE__TRANSPORT__*`` variable is set, or an
    ``openlineage.yml`` exists at ``$OPENLINEAGE_CONFIG``, in the working directory or in
    ``~/.openlineage``; always False when ``OPENLINEAGE_DISABLED=true``.
    """
    if _disabled_by_environment():
        return False
    if os.environ.get("OPENLINEAGE_URL"):
        return True
    if any(key.startswith("OPENLINEAGE__TRANSPORT") for key in os.environ):
        return True
    return _config_file() is not None


def emission_off(settings: LineageConfig) -> bool:
    """Whether ``settings`` and the environment say no event is to be built.

    Off when ``enabled=False``, when ``OPENLINEAGE_DISABLED=true``, or when ``enabled`` is
    unset and neither ``settings`` nor the standard configuration names a transport.

    Example:
        >>> emission_off(LineageConfig(enabled=False, transport={"type": "console"}))
        True
    """
    return (
        settings.enabled is False
        or _disabled_by_environment()
        or (settings.enabled is None and not settings.transport and not lineage_configured())
    )


def job_namespace(settings: LineageConfig) -> str:
    """The job namespace: the config's, else ``$OPENLINEAGE_NAMESPACE``, else ``"dagster"``.

    Example:
        >>> job_namespace(LineageConfig(namespace="analytics"))
        'analytics'
    """
    return settings.namespace or os.environ.get("OPENLINEAGE_NAMESPACE") or DEFAULT_JOB_NAMESPACE


def environment_signature() -> tuple[Any, ...]:
    """What of the environment decides the standard configuration: variables, file, directory.

    The client copies ``OPENLINEAGE_URL`` into ``DEFAULT_HTTP`` variables when it starts: they
    are ignored, so the same configuration keeps the same signature.
    """
    variables = tuple(
        sorted(
            (key, value)
            for key, value in os.environ.items()
            if key.startswith("OPENLINEAGE") and not key.startswith(_ALIAS_PREFIX)
        )
    )
    path = _config_file()
    return variables, str(path) if path else None, str(Path.cwd())
