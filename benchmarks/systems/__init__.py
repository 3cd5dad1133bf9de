"""System adapters: one module per benchmarked system, all with the :class:`System` interface.

Modules are imported lazily by name, so a worker running in the separate dagster-iceberg
environment never imports floe-dagster-iceberg (and the other way round).
"""

from __future__ import annotations

import importlib

SYSTEMS: dict[str, str] = {
    "raw_parquet": "benchmarks.systems.raw_parquet:RawParquet",
    "pyiceberg": "benchmarks.systems.pyiceberg_direct:PyIcebergDirect",
    "dagster_iceberg": "benchmarks.systems.dagster_iceberg:DagsterIceberg",
    "floe": "benchmarks.systems.floe:Floe",
    "floe_pandas": "benchmarks.systems.floe_pandas:FloePandas",
}


def load_system(name: str) -> type:
    """The adapter class of system ``name``."""
    module_name, _, class_name = SYSTEMS[name].partition(":")
    return getattr(importlib.import_module(module_name), class_name)
