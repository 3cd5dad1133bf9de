"""Compaction benchmark: floe-dagster-iceberg's ``compact`` against a PyIceberg rewrite.

A table of many small files (default: 500 files of 2,000 rows, in 5 daily partitions, one
append each, as a streaming job or a partition-by-partition backfill leaves it) is compacted
two ways, each in a fresh process on a fresh SQLite catalog and local warehouse under
``benchmarks/.work/``:

- ``floe compact``: :func:`floe_dagster_iceberg.engine.maintenance.compact`: bin-packs the small files
  per partition and commits one ``replace`` snapshot;
- ``PyIceberg rewrite``: what PyIceberg 0.12 offers: read the whole table and ``overwrite`` it.

For each: compaction time and throughput (MB of input data files per second), and the time of
a full-table read and of a one-partition read before and after (best of ``--reads``), so the
read speed-up compaction brings is shown. Both results are verified: same row count and same
sum of ids before and after.

Usage::

    python benchmarks/bench_compaction.py            # 500 small files, prints a markdown table
    python benchmarks/bench_compaction.py --smoke    # 20 tiny files, seconds
    python benchmarks/bench_compaction.py --files 1000 --rows-per-file 500 --repeat 3

Results are written to ``benchmarks/results/compaction-<date>.json`` (``-smoke`` added for the
smoke size, so a smoke run never replaces a real result).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORK = HERE / ".work"
RESULTS = HERE / "results"
ENGINES = ("floe", "pyiceberg")
ENGINE_LABELS = {"floe": "floe compact", "pyiceberg": "PyIceberg rewrite (read all + overwrite)"}
TABLE = ("bench", "events")
FIRST_DAY = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
COUNTRIES = ["US", "DE", "FR", "GB", "IN", "BR", "JP", "CA", "AU", "ES"]


@dataclass(frozen=True)
class Sizes:
    files: int = 500
    rows_per_file: int = 2_000
    partitions: int = 5
    reads: int = 3
    seed: int = 11

    @classmethod
    def smoke(cls) -> Sizes:
        return cls(files=20, rows_per_file=50, partitions=2, reads=1)


# -------------------------------------------------------------------------------- child side


def _catalog(workdir: Path):
    from pyiceberg.catalog.sql import SqlCatalog

    return SqlCatalog(
        "bench",
        uri=f"sqlite:///{workdir / 'catalog.db'}",
        warehouse=(workdir / "warehouse").as_uri(),
        init_catalog_tables="true",
    )


def _batch(sizes: Sizes, file_number: int, rng: random.Random):
    import pyarrow as pa

    day = file_number % sizes.partitions
    start = file_number * sizes.rows_per_file
    n = sizes.rows_per_file
    base = FIRST_DAY + dt.timedelta(days=day)
    return pa.table(
        {
            "id": pa.array(range(start, start + n), pa.int64()),
            "ts": pa.array(
                [base + dt.timedelta(seconds=rng.randrange(86_400)) for _ in range(n)],
                pa.timestamp("us", "UTC"),
            ),
            "user_id": pa.array([rng.randrange(1_000_000) for _ in range(n)], pa.int64()),
            "amount": pa.array([round(rng.gammavariate(2.0, 20.0), 2) for _ in range(n)]),
            "country": pa.array([rng.choice(COUNTRIES) for _ in range(n)]),
            "payload": pa.array([f"{rng.getrandbits(128):032x}" for _ in range(n)]),
        }
    )


def child_setup(sizes: Sizes, workdir: Path) -> dict:
    """Build the small-files table: one append per file."""
    from pyiceberg.partitioning import PartitionField, PartitionSpec
    from pyiceberg.schema import Schema
    from pyiceberg.transforms import DayTransform
    from pyiceberg.types import (
        DoubleType,
        LongType,
        NestedField,
        StringType,
        TimestamptzType,
    )

    catalog = _catalog(workdir)
    catalog.create_namespace(TABLE[0])
    schema = Schema(
        NestedField(1, "id", LongType(), required=False),
        NestedField(2, "ts", TimestamptzType(), required=False),
        NestedField(3, "user_id", LongType(), required=False),
        NestedField(4, "amount", DoubleType(), required=False),
        NestedField(5, "country", StringType(), required=False),
        NestedField(6, "payload", StringType(), required=False),
    )
    spec = PartitionSpec(PartitionField(2, 1000, DayTransform(), "ts_day"))
    table = catalog.create_table(TABLE, schema, partition_spec=spec)
    rng = random.Random(sizes.seed)
    for number in range(sizes.files):
        table.append(_batch(sizes, number, rng))
    return {"files": len(catalog.load_table(TABLE).inspect.data_files())}


def _timed_reads(table, sizes: Sizes) -> dict:
    from pyiceberg.expressions import And, GreaterThanOrEqual, LessThan

    one_day = And(
        GreaterThanOrEqual("ts", FIRST_DAY.isoformat()),
        LessThan("ts", (FIRST_DAY + dt.timedelta(days=1)).isoformat()),
    )
    full, partition = [], []
    rows = 0
    for _ in range(sizes.reads):
        started = time.perf_counter()
        rows = table.scan().to_arrow().num_rows
        full.append(time.perf_counter() - started)
        started = time.perf_counter()
        table.scan(row_filter=one_day).to_arrow()
        partition.append(time.perf_counter() - started)
    return {"full_read_s": min(full), "partition_read_s": min(partition), "rows": rows}


def _fingerprint(table) -> tuple[int, int]:
    import pyarrow.compute as pc

    ids = table.scan(selected_fields=("id",)).to_arrow()["id"]
    return len(ids), pc.sum(ids).as_py()


def child_run(engine: str, sizes: Sizes, workdir: Path) -> dict:
    """Time one compaction of the prepared table (setup excluded)."""
    import pyarrow.compute as pc

    catalog = _catalog(workdir)
    table = catalog.load_table(TABLE)
    files_before = table.inspect.data_files()
    bytes_before = pc.sum(files_before["file_size_in_bytes"]).as_py()
    before = _timed_reads(table, sizes)
    fingerprint = _fingerprint(table)

    if engine == "floe":  # imports before the clock starts
        from floe_dagster_iceberg.engine.maintenance import compact
    started = time.perf_counter()
    if engine == "floe":
        result = compact(catalog, table)
        rewritten = result.bytes_rewritten
    else:
        table.overwrite(table.scan().to_arrow())
        rewritten = bytes_before
    seconds = time.perf_counter() - started

    table = catalog.load_table(TABLE)
    files_after = table.inspect.data_files()
    after = _timed_reads(table, sizes)
    if _fingerprint(table) != fingerprint:
        raise RuntimeError(
            f"{engine}: rows changed by compaction: {fingerprint} -> {_fingerprint(table)}"
        )
    return {
        "files_before": files_before.num_rows,
        "files_after": files_after.num_rows,
        "bytes_before": bytes_before,
        "bytes_after": pc.sum(files_after["file_size_in_bytes"]).as_py(),
        "bytes_rewritten": rewritten,
        "seconds": seconds,
        "mb_per_s": rewritten / 1e6 / seconds,
        "rows": after["rows"],
        "full_read_before_s": before["full_read_s"],
        "full_read_after_s": after["full_read_s"],
        "partition_read_before_s": before["partition_read_s"],
        "partition_read_after_s": after["partition_read_s"],
        "snapshot_operation": table.current_snapshot().summary.operation.value,
    }


# -------------------------------------------------------------------------------- parent side


def _run_child(args: list[str]) -> dict:
    process = subprocess.run(
        [sys.executable, __file__, *args], capture_output=True, text=True, check=False
    )
    if process.returncode != 0:
        raise RuntimeError(f"child {args[:2]} failed:\n{process.stderr[-4000:]}")
    return json.loads(process.stdout.strip().splitlines()[-1])


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def measure(engine: str, sizes: Sizes, keep: bool) -> dict:
    workdir = WORK / f"compaction-{engine}-{uuid.uuid4().hex[:8]}"
    workdir.mkdir(parents=True)
    try:
        setup = _run_child(
            ["--child", "setup", "--workdir", str(workdir), "--sizes", json.dumps(asdict(sizes))]
        )
        result = _run_child(
            ["--child", engine, "--workdir", str(workdir), "--sizes", json.dumps(asdict(sizes))]
        )
        result["setup_files"] = setup["files"]
        return result
    finally:
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)


def _median(runs: list[dict], key: str) -> float:
    return statistics.median(run[key] for run in runs)


def markdown(summary: dict) -> str:
    sizes = summary["sizes"]
    lines = [
        f"Compaction of {sizes['files']} small files ({sizes['rows_per_file']:,} rows each, "
        f"{sizes['partitions']} daily partitions); median of {summary['repeat']} run(s), "
        f"reads best of {sizes['reads']}.",
        "",
        "| engine | files before -> after | MB rewritten | compaction s | MB/s | full read before -> after (s) | speed-up | one-partition read before -> after (s) | speed-up |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for engine in ENGINES:
        runs = summary["runs"].get(engine)
        if not runs:
            continue
        full_before, full_after = (
            _median(runs, "full_read_before_s"),
            _median(runs, "full_read_after_s"),
        )
        part_before = _median(runs, "partition_read_before_s")
        part_after = _median(runs, "partition_read_after_s")
        lines.append(
            f"| {ENGINE_LABELS[engine]} | {runs[0]['files_before']} -> {runs[0]['files_after']} | "
            f"{_median(runs, 'bytes_rewritten') / 1e6:.1f} | {_median(runs, 'seconds'):.2f} | "
            f"{_median(runs, 'mb_per_s'):.1f} | {full_before:.3f} -> {full_after:.3f} | "
            f"{full_before / full_after:.1f}x | {part_before:.3f} -> {part_after:.3f} | "
            f"{part_before / part_after:.1f}x |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (seconds)")
    parser.add_argument("--files", type=int, help="small files before compaction")
    parser.add_argument("--rows-per-file", type=int)
    parser.add_argument("--partitions", type=int)
    parser.add_argument("--reads", type=int, help="reads per measurement (best is kept)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per engine (median kept)")
    parser.add_argument("--engines", default=",".join(ENGINES), help="floe,pyiceberg")
    parser.add_argument("--keep", action="store_true", help="keep warehouses under .work/")
    parser.add_argument("--out", type=Path, default=RESULTS, help="directory of the JSON result")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--sizes", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        sizes = Sizes(**json.loads(args.sizes))
        if args.child == "setup":
            result = child_setup(sizes, args.workdir)
        else:
            result = child_run(args.child, sizes, args.workdir)
        print(json.dumps(result))
        return 0

    sizes = Sizes.smoke() if args.smoke else Sizes()
    overrides = {
        "files": args.files,
        "rows_per_file": args.rows_per_file,
        "partitions": args.partitions,
        "reads": args.reads,
    }
    sizes = Sizes(**{**asdict(sizes), **{k: v for k, v in overrides.items() if v is not None}})
    engines = [e for e in args.engines.split(",") if e]
    unknown = set(engines) - set(ENGINES)
    if unknown:
        parser.error(f"unknown engine(s) {sorted(unknown)}; use {','.join(ENGINES)}")

    runs: dict[str, list[dict]] = {engine: [] for engine in engines}
    for repeat in range(args.repeat):
        order = engines[repeat % len(engines) :] + engines[: repeat % len(engines)]
        for engine in order:
            print(
                f"run {repeat + 1}/{args.repeat}: {ENGINE_LABELS[engine]} ...",
                file=sys.stderr,
                flush=True,
            )
            runs[engine].append(measure(engine, sizes, args.keep))

    summary = {
        "benchmark": "compaction",
        "date": dt.date.today().isoformat(),
        "sizes": asdict(sizes),
        "smoke": args.smoke,
        "repeat": args.repeat,
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
        },
        "versions": _versions(),
        "peak_child_rss_mb": round(_peak_rss_mb(), 1),
        "runs": runs,
    }
    text = markdown(summary)
    summary["markdown"] = text
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    suffix = "-smoke" if args.smoke else ""
    path = args.out / f"compaction-{summary['date']}{suffix}.json"
    path.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"\nwritten: {path}", file=sys.stderr)
    return 0


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in ("pyiceberg", "pyarrow", "floe-dagster-iceberg"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "not installed"
    return found


if __name__ == "__main__":
    sys.exit(main())
