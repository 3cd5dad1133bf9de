"""OpenTelemetry spans for manager operations (opentelemetry-api only, no SDK at runtime).

Spans follow the database client conventions: kind CLIENT, named ``{operation} {namespace}.{table}``,
with ``db.system.name="iceberg"`` and ``iceberg.*`` attributes for what the operation did.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, TracerProvider

from floe_dagster_iceberg.version import __version__

__all__ = ["Telemetry"]

TRACER_NAME = "floe_dagster_iceberg"


class Telemetry:
    """Creates the spans of one manager; uses the global tracer provider unless given one.

    Example:
        >>> telemetry = Telemetry()
        >>> with telemetry.span("write", ("sales", "orders")) as span:
        ...     span.set_attribute("iceberg.rows", 3)
    """

    def __init__(self, tracer_provider: TracerProvider | None = None) -> None:
        self._tracer = trace.get_tracer(TRACER_NAME, __version__, tracer_provider=tracer_provider)

    @contextmanager
    def span(
        self,
        operation: str,
        identifier: tuple[str, ...] | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> Iterator[Span]:
        """Run the block in a CLIENT span; an exception is recorded and marks the span as failed."""
        span_attributes: dict[str, Any] = {
            "db.system.name": "iceberg",
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
                span.record_exception(error)
                span.set_attribute("error.type", type(error).__qualname__)
                span.set_status(Status(StatusCode.ERROR, type(error).__qualname__))
                raise
