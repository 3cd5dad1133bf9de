"""Latency of the engine's basic operations against the seeds' floors.

Times table creation, a single-partition write (100k rows, overwrite of one day) and a schema
evolution, on the embedded SQLite catalog and, with ``--postgres``, on a PostgreSQL catalog
started with pgserver. Floors from the original plan: creation < 5 s, single-partition write
< 5 s, schema evolution < 2 s.

Usage::

    python benchmarks/bench_manager.py [--repeat 5] [--rows 100000] [--postgres]

Prints a markdown table and writes ``benchmarks/results/manager-<date>.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import pyarrow as pa
from pyiceberg.catalog import load_catalog
from pyiceberg.expressions import And, GreaterThanOrEqual, LessThan

from floe_dagster_iceberg import (
    ColumnSpec,
    IcebergTableManager,
    PartitionField,
    SchemaChange,
    TableConfig,
    TableSchema,
    WriteConfig,
)

FLOORS = {"create_table": 5.0, "write_partition": 5.0, "evolve_schema": 2.0}
DAY = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


def _rows(count: int) -> pa.Table:
    return pa.table(
        {
            "id": pa.array(range(count), pa.int64()),
            "ts": pa.array(
                [DAY + dt.timedelta(seconds=i % 86_400) for i in range(count)],
                pa.timestamp("us", "UTC"),
            ),
            "amount": pa.array([float(i % 1000) for i in range(count)]),
        }
    )


def _config(namespace: str) -> TableConfig:
    return TableConfig(
        namespace=namespace,
        name=f"t_{uuid.uuid4().hex[:8]}",
        schema=TableSchema(
            columns=[
                ColumnSpec(name="id", type="long"),
                ColumnSpec(name="ts", type="timestamptz"),
                ColumnSpec(name="amount", type="double"),
            ]
        ),
        partition_spec=[PartitionField(source_column="ts", transform="day")],
    )


def measure(manager: IcebergTableManager, data: pa.Table, repeat: int) -> dict[str, list[float]]:
    timings: dict[str, list[float]] = {name: [] for name in FLOORS}
    day_filter = And(
        GreaterThanOrEqual("ts", DAY.isoformat()),
        LessThan("ts", (DAY + dt.timedelta(days=1)).isoformat()),
    )
    for _ in range(repeat):
        config = _config("bench")
        start = time.perf_counter()
        manager.create_table(config)
        timings["create_table"].append(time.perf_counter() - start)

        start = time.perf_counter()
        manager.write(config.identifier, data, WriteConfig(mode="overwrite", row_filter=day_filter))
        timings["write_partition"].append(time.perf_counter() - start)

        start = time.perf_counter()
        manager.evolve_schema(config.identifier, [SchemaChange.add_column("note", "string")])
        timings["evolve_schema"].append(time.perf_counter() - start)
    return timings


def _catalogs(use_postgres: bool, workdir: Path):
    yield (
        "sqlite",
        {
            "type": "sql",
            "uri": f"sqlite:///{workdir}/catalog.db",
            "warehouse": (workdir / "warehouse").as_uri(),
        },
    )
    if use_postgres:
        import pgserver

        server = pgserver.get_server(workdir / "pg", cleanup_mode="stop")
        uri = server.get_uri().replace("postgresql://", "postgresql+psycopg2://")
        yield (
            "postgres",
            {"type": "sql", "uri": uri, "warehouse": (workdir / "pg-warehouse").as_uri()},
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--postgres", action="store_true")
    args = parser.parse_args()
    data = _rows(args.rows)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind, properties in _catalogs(args.postgres, Path(tmp)):
            manager = IcebergTableManager(load_catalog("floe", **properties))
            for operation, values in measure(manager, data, args.repeat).items():
                results.append(
                    {
                        "catalog": kind,
                        "operation": operation,
                        "median_s": statistics.median(values),
                        "min_s": min(values),
                        "max_s": max(values),
                        "floor_s": FLOORS[operation],
                    }
                )
    print("| catalog | operation | median s | min s | max s | floor s | floor / median |")
    print("|---|---|---|---|---|---|---|")
    for row in results:
        print(
            f"| {row['catalog']} | {row['operation']} | {row['median_s']:.3f} | {row['min_s']:.3f} | "
            f"{row['max_s']:.3f} | {row['floor_s']:.0f} | {row['floor_s'] / row['median_s']:.0f}x |"
        )
    out = Path(__file__).parent / "results" / f"manager-{dt.date.today().isoformat()}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(
        json.dumps({"rows": args.rows, "repeat": args.repeat, "results": results}, indent=2)
    )
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()
