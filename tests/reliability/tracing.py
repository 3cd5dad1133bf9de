"""An OpenTelemetry SDK tracer provider that keeps every finished span in memory.

The catalog resource's ``tracer_provider`` setting names it by import path
(``reliability.tracing:PROVIDER``), as a project would name its own provider.
"""

from __future__ import annotations

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

EXPORTER = InMemorySpanExporter()
PROVIDER = TracerProvider()
PROVIDER.add_span_processor(SimpleSpanProcessor(EXPORTER))
