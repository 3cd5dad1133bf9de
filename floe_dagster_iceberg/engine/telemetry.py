"""OpenTelemetry spans for manager operations (opentelemetry-api only, no SDK at runtime).

Spans follow the database client conventions: kind CLIENT, named ``{operation} {namespace}.{table}``,
with ``db.system.name="iceberg"``, ``db.namespace``, ``db.collection.name``,
``db.operation.name`` and ``iceberg.*`` attributes for what the operation did (snapshot id, rows,
files, bytes, commit attempts). Each commit attempt is a child span named
``commit {namespace}.{table}``; a failed attempt carries the exception and an error status.

Which tracer provider is used, first match wins:

1. the one given to :class:`Telemetry` (``IcebergTableManager(tracer_provider=...)``);
2. the one named by the catalog resource's ``tracer_provider`` (an import path, see
   :func:`resolve_tracer_provider`);
3. the package default set with :func:`set_tracer_provider`;
4. OpenTelemetry's global provider (a no-op until the application installs an SDK).
"""

from __future__ import annotations

import importlib
import threading
import traceback
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, TracerProvider

from floe_dagster_iceberg.errors import InvalidInputError
from floe_dagster_iceberg.redaction import redact
from floe_dagster_iceberg.version import __version__

__all__ = [
    "DB_SYSTEM",
    "TRACER_NAME",
    "Telemetry",
    "record_error",
    "resolve_tracer_provider",
    "set_tracer_provider",
]

TRACER_NAME = "floe_dagster_iceberg"
DB_SYSTEM = "iceberg"

_package_provider: TracerProvider | None = None
_resolved: dict[str, TracerProvider] = {}
_resolved_lock = threading.Lock()


def set_tracer_provider(provider: TracerProvider | None) -> None:
    """Route this package's spans to ``provider`` (``None``: back to OpenTelemetry's global one).

    Use it when the application keeps a dedicated provider for data-platform spans and does not
    want to install it globally.

    Example:
        >>> set_tracer_provider(None)
    """
    global _package_provider
    _package_provider = provider


def resolve_tracer_provider(path: str) -> TracerProvider:
    """Import a tracer provider from ``"package.module:attribute"`` (or ``package.module.attribute``).

    The attribute is a ``TracerProvider`` or a callable without arguments returning one; the
    result is cached per process, so a factory runs once. This is how the catalog resource's
    ``tracer_provider`` setting, a plain string that survives Dagster's run and step processes,
    becomes a provider object.

    Example:
        >>> type(resolve_tracer_provider("opentelemetry.trace:get_tracer_provider")).__name__
        'ProxyTracerProvider'
    """
    with _resolved_lock:
        if path in _resolved:
            return _resolved[path]
        module_name, sep, attribute = path.partition(":")
        if not sep:
            module_name, _, attribute = path.rpartition(".")
        if not module_name or not attribute:
            raise InvalidInputError(
                f"tracer_provider {path!r} is not an import path; write it as "
                "'my_project.telemetry:tracer_provider'."
            )
        try:
            target: Any = importlib.import_module(module_name)
            for part in attribute.split("."):
                target = getattr(target, part)
        except (ImportError, AttributeError) as error:
            raise InvalidInputError(
                f"tracer_provider {path!r} could not be imported: {type(error).__name__}: {error}."
            ) from None
        provider = target
        if not hasattr(target, "get_tracer") and callable(target):
            provider = target()
        if not hasattr(provider, "get_tracer"):
            raise InvalidInputError(
                f"tracer_provider {path!r} gave a {type(provider).__name__}, not an OpenTelemetry "
                "TracerProvider (or a function returning one)."
            )
        _resolved[path] = provider
        return provider


def record_error(span: Span, error: BaseException) -> None:
    """Mark ``span`` as failed by ``error``: exception event, ``error.type`` and ERROR status.

    The message and stack trace are redacted like every other surface.
    """
    message = redact(str(error))
    stacktrace = redact("".join(traceback.format_exception(error)))
    span.record_exception(
        error, attributes={"exception.message": message, "exception.stacktrace": stacktrace}
    )
    span.set_attribute("error.type", type(error).__qualname__)
    span.set_status(Status(StatusCode.ERROR, f"{type(error).__qualname__}: {message}"[:500]))


class Telemetry:
    """Creates the spans of one manager; uses the package or global tracer provider unless given one.

    Example:
        >>> telemetry = Telemetry()
        >>> with telemetry.span("write", ("sales", "orders")) as span:
        ...     span.set_attribute("iceberg.rows", 3)
    """

    def __init__(self, tracer_provider: TracerProvider | None = None) -> None:
        provider = tracer_provider or _package_provider
        self._tracer = trace.get_tracer(TRACER_NAME, __version__, tracer_provider=provider)

    @contextmanager
    def span(
        self,
        operation: str,
        identifier: tuple[str, ...] | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> Iterator[Span]:
        """Run the block in a CLIENT span; an exception is recorded and marks the span as failed."""
        span_attributes: dict[str, Any] = {
            "db.system.name": DB_SYSTEM,
            "db.operation.name": operation,
        }
        name = operation
        if identifier:
            *namespace, table = identifier
            span_attributes["db.namespace"] = ".".join(namespace)
            span_attributes["db.collection.name"] = table
            name = f"{operation} {'.'.join(identifier)}"
        span_attributes.update({k: v for k, v in (attributes or {}).items() if v is not None})
        with self._tracer.start_as_current_span(
            name,
            kind=SpanKind.CLIENT,
            attributes=span_attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                yield span
            except BaseException as error:
                record_error(span, error)
                raise
