"""Compaction here against compaction on Spark: the same table, the same API, two engines.

For each table size (default: 500 small files in 5 daily partitions, at 200, 2,000, 8,000 and
32,000 rows per file), one table is built on a PostgreSQL SQL catalog (pgserver) with a local warehouse, and
compacted twice from the same state: by the local engine (``manager.compact(table)``) and by
Spark's ``rewrite_data_files`` on a ``local[2]`` session (``manager.compact(table,
engine=SparkEngineConfig(...))``); between the two the table is rolled back to its
small-files snapshot, so both rewrite the same files. The order alternates across repeats.
Both results are verified (same row count and sum of ids as before).

Reported per size: MB rewritten, seconds and MB/s of each engine, the Spark/local time ratio,
and, once per Spark session, its start (JVM, jars, catalog) and its first procedure call (class
loading), which a job starting Spark for one run pays on top.

Spark needs Java 17 and the jars the test suite prepares (``tests/infra/spark.py``: Iceberg
runtime from PyPI, relocated Jackson, Debian's PostgreSQL JDBC driver); they are made ready
here the same way.

Usage::

    python benchmarks/bench_spark_compaction.py                 # 3 sizes, prints a markdown table
    python benchmarks/bench_spark_compaction.py --smoke         # 20 tiny files, one size
    python benchmarks/bench_spark_compaction.py --rows-per-file 2000 --repeat 3

Results are written to ``benchmarks/results/spark-compaction-<date>.json`` (``-smoke`` added
for the smoke size).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
TESTS = HERE.parent / "tests"
ENGINES = ("local", "spark")
NAMESPACE = "bench"


@dataclass(frozen=True)
class Sizes:
    files: int = 500
    rows_per_file: tuple[int, ...] = (200, 2_000, 8_000, 32_000)
    partitions: int = 5

    @classmethod
    def smoke(cls) -> Sizes:
        return cls(files=20, rows_per_file=(50,), partitions=2)


# `benchmarks.data` also when run as a script; the test suite's PostgreSQL, Unix-socket forward
# and Spark jars (`infra`).
for _path in (HERE.parent, TESTS):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))


def _build(manager, table: str, files: int, rows_per_file: int, partitions: int) -> None:
    """One append per file, as a streaming job or a partition-by-partition backfill leaves it;
    rows from the house's deterministic events (``benchmarks/data.py``), ids made unique."""
    import numpy as np
    import pyarrow as pa

    from benchmarks.data import partition_table
    from floe_dagster_iceberg import PartitionField, WriteConfig

    config = WriteConfig(
        mode="append", partition_spec=[PartitionField(source_column="ts", transform="day")]
    )
    for number in range(files):
        rows = partition_table(number % partitions, rows_per_file, version=number)
        ids = number * rows_per_file + np.arange(rows_per_file, dtype=np.int64)
        manager.write(table, rows.set_column(0, "id", pa.array(ids)), config)


def _fingerprint(manager, table: str) -> tuple[int, int]:
    import pyarrow.compute as pc

    ids = manager.scan(table, columns=["id"])["id"]
    return len(ids), pc.sum(ids).as_py()


def _rollback(manager, table: str, snapshot_id: int) -> None:
    loaded = manager.load_table(table)
    with loaded.manage_snapshots() as manage:
        manage.set_current_snapshot(snapshot_id)


def _compact(manager, table: str, engine) -> dict:
    fingerprint = _fingerprint(manager, table)
    started = time.perf_counter()
    result = manager.compact(table, engine=engine)
    seconds = time.perf_counter() - started
    if _fingerprint(manager, table) != fingerprint:
        raise RuntimeError(f"{table}: rows changed by compaction")
    return {
        "seconds": seconds,
        "files_before": result.files_rewritten,
        "files_after": result.files_added,
        "bytes_rewritten": result.bytes_rewritten,
        "mb_per_s": result.bytes_rewritten / 1e6 / seconds,
    }


def run(sizes: Sizes, repeat: int) -> dict:
    from infra.forward import UnixSocketForward
    from infra.postgres import PostgresServer
    from infra.spark import spark_jars
    from pyiceberg.catalog import load_catalog

    from floe_dagster_iceberg import IcebergTableManager, SparkEngineConfig
    from floe_dagster_iceberg.engine.maintenance.spark import spark_session

    jars = spark_jars()
    server = PostgresServer().start()
    forward = UnixSocketForward(server.socket_path).start()
    workdir = Path(tempfile.mkdtemp(prefix="floe-bench-spark-"))
    try:
        database = server.create_database()
        properties = {
            "type": "sql",
            "uri": f"postgresql+psycopg2://postgres@127.0.0.1:{forward.port}/{database}",
            "warehouse": (workdir / "warehouse").as_uri(),
        }
        catalog = load_catalog("floe", **properties)
        manager = IcebergTableManager(catalog)
        engine = SparkEngineConfig(
            master="local[2]",
            jars=jars,
            conf={
                "spark.driver.memory": "2g",
                "spark.ui.enabled": "false",
                "spark.driver.host": "127.0.0.1",
                "spark.driver.bindAddress": "127.0.0.1",
            },
        )
        started = time.perf_counter()
        session = spark_session(engine, catalog)
        session_start = time.perf_counter() - started
        session.sparkContext.setLogLevel("ERROR")
        # The first procedure call of a JVM loads and compiles Spark's and Iceberg's classes:
        # paid once per session, reported apart.
        _build(manager, f"{NAMESPACE}.warm_up", 4, 10, 2)
        started = time.perf_counter()
        manager.compact(f"{NAMESPACE}.warm_up", engine=engine)
        first_call = time.perf_counter() - started

        cases = []
        for rows_per_file in sizes.rows_per_file:
            table = f"{NAMESPACE}.events_{rows_per_file}"
            print(f"building {table}: {sizes.files} files ...", file=sys.stderr, flush=True)
            _build(manager, table, sizes.files, rows_per_file, sizes.partitions)
            small_files = manager.load_table(table).current_snapshot().snapshot_id
            runs: dict[str, list[dict]] = {name: [] for name in ENGINES}
            for index in range(repeat):
                order = ENGINES if index % 2 == 0 else tuple(reversed(ENGINES))
                for name in order:
                    print(f"  {name} compaction ({index + 1}/{repeat}) ...", file=sys.stderr)
                    _rollback(manager, table, small_files)
                    runs[name].append(_compact(manager, table, engine if name == "spark" else None))
            cases.append({"rows_per_file": rows_per_file, "runs": runs})
        session.stop()
        return {"session_start_s": session_start, "first_call_s": first_call, "cases": cases}
    finally:
        forward.stop()
        server.stop()


def _median(runs: list[dict], key: str) -> float:
    return statistics.median(run[key] for run in runs)


def markdown(summary: dict) -> str:
    sizes = summary["sizes"]
    lines = [
        f"Compaction of {sizes['files']} small files in {sizes['partitions']} daily partitions, "
        f"local engine vs Spark local[2] (warm session), same table state; median of "
        f"{summary['repeat']} run(s). Once per Spark session: start (JVM, jars, catalog) "
        f"{summary['session_start_s']:.1f} s, first procedure call (class loading, on a "
        f"4-file table) {summary['first_call_s']:.1f} s.",
        "",
        "| rows per file | MB rewritten | files before -> after | local s | local MB/s | Spark s | Spark MB/s | Spark / local time | Spark cold (+ start + first call) / local |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    cold = summary["session_start_s"] + summary["first_call_s"]
    for case in summary["cases"]:
        local, spark = case["runs"]["local"], case["runs"]["spark"]
        local_s, spark_s = _median(local, "seconds"), _median(spark, "seconds")
        lines.append(
            f"| {case['rows_per_file']:,} | {_median(local, 'bytes_rewritten') / 1e6:.1f} | "
            f"{local[0]['files_before']} -> {local[0]['files_after']} | {local_s:.2f} | "
            f"{_median(local, 'mb_per_s'):.1f} | {spark_s:.2f} | {_median(spark, 'mb_per_s'):.1f} | "
            f"{spark_s / local_s:.2f}x | {(spark_s + cold) / local_s:.2f}x |"
        )
    return "\n".join(lines)


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in ("pyiceberg", "pyarrow", "pyspark", "floe-dagster-iceberg"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "not installed"
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (about a minute)")
    parser.add_argument("--files", type=int, help="small files before compaction")
    parser.add_argument("--rows-per-file", help="comma-separated table sizes, e.g. 200,2000")
    parser.add_argument("--partitions", type=int)
    parser.add_argument("--repeat", type=int, default=1, help="runs per engine (median kept)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="directory of the JSON result")
    args = parser.parse_args(argv)

    sizes = Sizes.smoke() if args.smoke else Sizes()
    overrides = {
        "files": args.files,
        "rows_per_file": tuple(int(n) for n in args.rows_per_file.split(","))
        if args.rows_per_file
        else None,
        "partitions": args.partitions,
    }
    sizes = Sizes(**{**asdict(sizes), **{k: v for k, v in overrides.items() if v is not None}})
    measured = run(sizes, args.repeat)
    summary = {
        "benchmark": "spark-compaction",
        "date": dt.date.today().isoformat(),
        "sizes": asdict(sizes),
        "smoke": args.smoke,
        "repeat": args.repeat,
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "load_average_at_end": os.getloadavg(),
        },
        "versions": _versions(),
        **measured,
    }
    text = markdown(summary)
    summary["markdown"] = text
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    suffix = "-smoke" if args.smoke else ""
    path = args.out / f"spark-compaction-{summary['date']}{suffix}.json"
    path.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"\nwritten: {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
