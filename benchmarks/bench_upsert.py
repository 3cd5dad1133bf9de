"""Upsert benchmark: floe-dagster-iceberg's upsert engine against PyIceberg's ``Table.upsert``.

Both engines run the same workloads on identical data (seeded generators). Every measurement
runs in fresh processes on a fresh SQLite catalog and local warehouse under
``benchmarks/.work/``: one process builds the table, a second one loads it, builds the upsert
input and times the upsert alone (wall time, and the process's CPU time, which a busy machine
disturbs less); its peak resident memory (``ru_maxrss`` from the kernel's rusage of that child)
is reported next to the time, and the 1-minute load average before it is recorded.

Workloads:

a. 1M-row table in 10 identity partitions; upsert 50k rows into one partition, half of them
   matching existing keys (with changed values), half new. Ours matches within the run's
   partition (``scope`` = that partition); ``Table.upsert`` has no scope and matches by key.
b. 100k-row unpartitioned table; upsert all 100k rows, every one with changed values.
c. 100k-row unpartitioned table keyed on two columns (long, string); upsert 1k existing keys
   with changed values.
d. Change data capture, next to the plain upsert: case a's table with a version column ``lsn``
   and an operation column ``op``, and one 50k-row change batch into one partition: of its 25k
   matched keys 80% are newer updates, 10% deletes (``op = 'D'``) and 10% late updates older
   than the stored row; 25k inserts. ``floe upsert`` merges the batch as plain rows (every
   matched row replaced, the deletes written as rows); ``floe CDC upsert`` applies it with
   ``ChangeCapture(delete_column="op", version_column="lsn")``: the newest change per key,
   deletes, and the version comparison that leaves the late rows alone. Both take the same
   Arrow table (one change per key, so the plain upsert accepts it too).

Usage::

    python benchmarks/bench_upsert.py            # full size, prints a markdown table
    python benchmarks/bench_upsert.py --smoke    # tiny sizes, seconds
    python benchmarks/bench_upsert.py --cases b,c --repeat 3 --b-rows 200000
    python benchmarks/bench_upsert.py --cases d --repeat 3   # CDC next to the plain upsert

Results are written to ``benchmarks/results/upsert-<date>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import date, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORK = HERE / ".work"
RESULTS = HERE / "results"
ENGINES = ("ours", "pyiceberg", "cdc")
ENGINE_LABELS = {"ours": "floe upsert", "pyiceberg": "Table.upsert", "cdc": "floe CDC upsert"}
CASES = ("a", "b", "c", "d")
CASE_ENGINES = {"a": ("ours", "pyiceberg"), "b": ("ours", "pyiceberg"), "c": ("ours", "pyiceberg")}
CASE_ENGINES["d"] = ("ours", "cdc")
"""The engines a case runs by default: the CDC case compares the two floe upserts."""
PARTITIONED = ("a", "d")
TABLE = ("bench", "target")


@dataclass(frozen=True)
class Sizes:
    a_rows: int = 1_000_000
    a_partitions: int = 10
    a_upsert: int = 50_000
    b_rows: int = 100_000
    c_rows: int = 100_000
    c_upsert: int = 1_000
    seed: int = 7

    @classmethod
    def smoke(cls) -> Sizes:
        return cls(
            a_rows=20_000, a_partitions=10, a_upsert=1_000, b_rows=2_000, c_rows=2_000, c_upsert=100
        )


def describe(case: str, sizes: Sizes) -> str:
    if case == "a":
        return (
            f"{sizes.a_rows:,} rows, {sizes.a_partitions} partitions; {sizes.a_upsert:,} rows into "
            "one partition, half matched"
        )
    if case == "b":
        return f"{sizes.b_rows:,} rows; all {sizes.b_rows:,} matched with changes"
    if case == "d":
        return (
            f"{sizes.a_rows:,} rows, {sizes.a_partitions} partitions; a {sizes.a_upsert:,}-row "
            "change batch into one partition: half matched (80% newer updates, 10% deletes, "
            "10% late updates), half inserts"
        )
    return f"{sizes.c_rows:,} rows; {sizes.c_upsert:,} rows on a two-column key"


# --------------------------------------------------------------------------------------------
# Data (identical for both engines)
# --------------------------------------------------------------------------------------------


def base_table(case: str, sizes: Sizes):
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(sizes.seed)
    n = {"a": sizes.a_rows, "b": sizes.b_rows, "c": sizes.c_rows, "d": sizes.a_rows}[case]
    ids = np.arange(n, dtype=np.int64)
    columns = {}
    if case == "c":
        columns["k1"] = pa.array(ids // 10)
        columns["k2"] = pa.array([f"s{i % 10:02d}" for i in range(n)], pa.string())
    else:
        columns["id"] = pa.array(ids)
    if case in PARTITIONED:
        columns["part"] = pa.array([f"p{i}" for i in ids % sizes.a_partitions], pa.string())
    columns["name"] = pa.array([f"name-{i}" for i in rng.integers(0, 1_000_000, n)], pa.string())
    columns["qty"] = pa.array(rng.integers(0, 1_000, n), pa.int64())
    columns["price"] = pa.array(rng.random(n) * 100, pa.float64())
    columns["updated_at"] = pa.array(
        np.datetime64("2026-01-01T00:00:00", "us")
        + rng.integers(0, 10**12, n).astype("timedelta64[us]")
    )
    if case == "d":
        # Every stored row came from an insert at some position of the source's log.
        columns["lsn"] = pa.array(_LSN_BASE + ids)
        columns["op"] = pa.array(np.full(n, "I", dtype=object), pa.string())
    return pa.table(columns)


_LSN_BASE = 10_000_000
"""Log positions of the table's rows start here; newer changes come after all of them."""


def upsert_input(case: str, sizes: Sizes, base):
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    rng = np.random.default_rng(sizes.seed + 1)
    if case == "d":
        return change_batch(sizes, base)
    if case == "a":
        partition = f"p{sizes.a_partitions // 2 - 2 if sizes.a_partitions > 3 else 0}"
        in_partition = base.filter(pc.equal(base.column("part"), partition))
        matched_n = min(sizes.a_upsert // 2, in_partition.num_rows)
        picks = np.sort(rng.choice(in_partition.num_rows, matched_n, replace=False))
        matched = in_partition.take(pa.array(picks))
        matched = _change(matched, rng)
        new_n = sizes.a_upsert - matched_n
        new_ids = np.arange(sizes.a_rows, sizes.a_rows + new_n, dtype=np.int64)
        fresh = pa.table(
            {
                "id": pa.array(new_ids),
                "part": pa.array([partition] * new_n, pa.string()),
                "name": pa.array([f"new-{i}" for i in new_ids], pa.string()),
                "qty": pa.array(rng.integers(0, 1_000, new_n), pa.int64()),
                "price": pa.array(rng.random(new_n) * 100, pa.float64()),
                "updated_at": pa.array(np.full(new_n, np.datetime64("2026-06-01T00:00:00", "us"))),
            }
        )
        return pa.concat_tables([matched, fresh.cast(matched.schema)]), ["id"], partition
    if case == "b":
        return _change(base, rng), ["id"], None
    picks = np.sort(rng.choice(base.num_rows, sizes.c_upsert, replace=False))
    return _change(base.take(pa.array(picks)), rng), ["k1", "k2"], None


def change_batch(sizes: Sizes, base):
    """Case d's change batch: case a's input with ``op`` and ``lsn``, and the counts each engine
    must report (a run that reports others fails)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    plain = base.drop_columns(["lsn", "op"])
    data, join_cols, partition = upsert_input("a", sizes, plain)
    rng = np.random.default_rng(sizes.seed + 2)
    stored = base.filter(pc.is_in(base.column("id"), value_set=data.column("id")))
    stored_lsn = dict(
        zip(stored.column("id").to_pylist(), stored.column("lsn").to_pylist(), strict=True)
    )
    matched = np.array([i in stored_lsn for i in data.column("id").to_pylist()])
    roles = np.full(data.num_rows, "insert", dtype=object)
    draw = rng.random(data.num_rows)
    roles[matched] = np.where(
        draw[matched] < 0.8, "update", np.where(draw[matched] < 0.9, "delete", "late")
    )
    newer = _LSN_BASE * 2 + np.arange(data.num_rows, dtype=np.int64)
    older = np.array([stored_lsn.get(i, 0) - 1 for i in data.column("id").to_pylist()])
    lsn = np.where(roles == "late", older, newer)
    op = np.where(roles == "delete", "D", np.where(roles == "insert", "I", "U"))
    data = data.append_column("lsn", pa.array(lsn, pa.int64()))
    data = data.append_column("op", pa.array(op.astype(object), pa.string()))
    counts = {role: int((roles == role).sum()) for role in ("insert", "update", "delete", "late")}
    n_matched = int(matched.sum())
    expected = {
        "ours": {"updated": n_matched, "inserted": counts["insert"], "removed": 0},
        "cdc": {
            "updated": counts["update"],
            "inserted": counts["insert"],
            "removed": counts["delete"],
            "unchanged": counts["late"],
        },
    }
    return data, join_cols, partition, expected


def _change(table, rng):
    import pyarrow as pa
    import pyarrow.compute as pc

    bump = pa.array(rng.integers(1, 100, table.num_rows), pa.int64())
    index = table.schema.get_field_index("qty")
    return table.set_column(index, "qty", pc.add(table.column("qty"), bump))


# --------------------------------------------------------------------------------------------
# Child processes
# --------------------------------------------------------------------------------------------


def _catalog(workdir: Path):
    from pyiceberg.catalog import load_catalog

    return load_catalog(
        "bench",
        type="sql",
        uri=f"sqlite:///{workdir}/catalog.db",
        warehouse=f"file://{workdir}/warehouse",
    )


def child_setup(case: str, sizes: Sizes, workdir: Path) -> dict:
    import pyarrow.compute as pc
    from pyiceberg.partitioning import PartitionField, PartitionSpec
    from pyiceberg.transforms import IdentityTransform

    (workdir / "warehouse").mkdir(parents=True, exist_ok=True)
    catalog = _catalog(workdir)
    catalog.create_namespace(TABLE[0])
    base = base_table(case, sizes)
    if case in PARTITIONED:
        from floe_dagster_iceberg.engine.types import arrow_to_iceberg_schema

        schema = arrow_to_iceberg_schema(base.schema)
        source_id = schema.find_field("part").field_id
        spec = PartitionSpec(
            PartitionField(
                source_id=source_id, field_id=1000, transform=IdentityTransform(), name="part"
            )
        )
        table = catalog.create_table(TABLE, schema=schema, partition_spec=spec)
        # One append per partition, the way partitioned runs fill a table.
        for number in range(sizes.a_partitions):
            table.append(base.filter(pc.equal(base.column("part"), f"p{number}")))
    else:
        table = catalog.create_table(TABLE, schema=base.schema)
        table.append(base)
    # The upsert input is built here and handed over as Parquet, so the timing process does
    # not hold the generated base table and its peak memory is the upsert's own.
    import pyarrow.parquet as pq

    data, join_cols, partition, *expected = upsert_input(case, sizes, base)
    table = catalog.load_table(TABLE)
    pq.write_table(data.cast(table.schema().as_arrow()), workdir / "input.parquet")
    (workdir / "input.json").write_text(
        json.dumps(
            {
                "join_cols": join_cols,
                "partition": partition,
                "expected": expected[0] if expected else None,
            }
        )
    )
    return {"rows": table.scan().count(), "files": len(table.inspect.files())}


def child_run(case: str, sizes: Sizes, workdir: Path, engine: str) -> dict:
    import pyarrow.parquet as pq
    from pyiceberg.expressions import EqualTo

    catalog = _catalog(workdir)
    data = pq.read_table(workdir / "input.parquet")
    spec = json.loads((workdir / "input.json").read_text())
    join_cols, partition = spec["join_cols"], spec["partition"]
    table = catalog.load_table(TABLE)
    # Both engines run in processes with the same modules loaded, so peak memory compares.
    from floe_dagster_iceberg.engine.config import ChangeCapture, UpsertScope
    from floe_dagster_iceberg.engine.manager import IcebergTableManager

    baseline_rss = _current_rss_mib()
    if engine in ("ours", "cdc"):
        manager = IcebergTableManager(catalog)
        scope = EqualTo("part", partition) if partition is not None else UpsertScope.TABLE
        cdc = ChangeCapture(delete_column="op", version_column="lsn") if engine == "cdc" else None
        started, cpu_started = time.perf_counter(), time.process_time()
        result = manager.upsert(TABLE, data, join_cols=join_cols, scope=scope, change_capture=cdc)
        seconds = time.perf_counter() - started
        cpu_seconds = time.process_time() - cpu_started
        counts = {
            "updated": result.rows_updated,
            "inserted": result.rows_inserted,
            "removed": result.rows_removed,
            "unchanged": result.rows_unchanged,
        }
    else:
        started, cpu_started = time.perf_counter(), time.process_time()
        result = table.upsert(data, join_cols=join_cols)
        seconds = time.perf_counter() - started
        cpu_seconds = time.process_time() - cpu_started
        counts = {"updated": result.rows_updated, "inserted": result.rows_inserted}
    expected = (spec.get("expected") or {}).get(engine)
    if expected is not None and {k: counts[k] for k in expected} != expected:
        raise SystemExit(f"case {case} {engine}: counted {counts}, expected {expected}")
    final = catalog.load_table(TABLE)
    return {
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "baseline_rss_mib": baseline_rss,
        "rows_after": final.scan().count(),
        "snapshots": len(final.metadata.snapshots),
        **counts,
    }


def _current_rss_mib() -> float:
    with open("/proc/self/statm") as handle:
        pages = int(handle.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _spawn(arguments: list[str]) -> tuple[dict, float]:
    """Run a child, return its JSON answer and its own peak RSS in MiB (``wait4`` rusage)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), *arguments],
            stdout=out,
            stderr=err,
            cwd=HERE.parent,
        )
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if process.returncode != 0:
        raise RuntimeError(f"child {' '.join(arguments)} failed:\n{stderr}")
    # ru_maxrss is in KiB on Linux.
    return json.loads(stdout.strip().splitlines()[-1]), usage.ru_maxrss / 1024


# --------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------


def _size_args(sizes: Sizes) -> list[str]:
    return [
        arg
        for key, value in asdict(sizes).items()
        for arg in (f"--{key.replace('_', '-')}", str(value))
    ]


def measure(case: str, engine: str, sizes: Sizes, keep: bool) -> dict:
    workdir = WORK / f"{case}-{engine}-{uuid.uuid4().hex[:8]}"
    workdir.mkdir(parents=True)
    try:
        setup, _ = _spawn(
            ["--child", "setup", "--case", case, "--workdir", str(workdir), *_size_args(sizes)]
        )
        load = os.getloadavg()[0]
        run, peak = _spawn(
            [
                "--child",
                "run",
                "--case",
                case,
                "--engine",
                engine,
                "--workdir",
                str(workdir),
                *_size_args(sizes),
            ]
        )
    finally:
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
    return {
        **run,
        "peak_rss_mib": peak,
        "table_rows": setup["rows"],
        "table_files": setup["files"],
        "load_average_1m": load,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, for a quick check")
    parser.add_argument("--cases", default="a,b,c,d", help="comma-separated subset of a,b,c,d")
    parser.add_argument(
        "--engines",
        default=None,
        help="comma-separated subset of ours,pyiceberg,cdc (default: ours,pyiceberg for a-c, "
        "ours,cdc for d)",
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs per case and engine (median is reported)"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the warehouses under benchmarks/.work/"
    )
    parser.add_argument(
        "--output", type=Path, default=None, help="JSON path (default results/upsert-<date>.json)"
    )
    defaults = Sizes()
    for key, value in asdict(defaults).items():
        parser.add_argument(
            f"--{key.replace('_', '-')}", type=int, default=None, help=f"default {value:,}"
        )
    parser.add_argument("--child", choices=("setup", "run"), help=argparse.SUPPRESS)
    parser.add_argument("--case", choices=CASES, help=argparse.SUPPRESS)
    parser.add_argument("--engine", choices=ENGINES, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    base = Sizes.smoke() if args.smoke else defaults
    overrides = {k: getattr(args, k) for k in asdict(defaults) if getattr(args, k) is not None}
    sizes = Sizes(**{**asdict(base), **overrides})

    if args.child == "setup":
        print(json.dumps(child_setup(args.case, sizes, args.workdir)))
        return 0
    if args.child == "run":
        print(json.dumps(child_run(args.case, sizes, args.workdir, args.engine)))
        return 0

    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    chosen = [e.strip() for e in args.engines.split(",") if e.strip()] if args.engines else None
    WORK.mkdir(exist_ok=True)
    rows = []
    for case in cases:
        engines = [e for e in (chosen or CASE_ENGINES[case]) if e != "cdc" or case == "d"]
        runs: dict[str, list[dict]] = {engine: [] for engine in engines}
        for repeat in range(args.repeat):
            # The order rotates every repeat, so no engine always runs first.
            shift = repeat % len(engines)
            for engine in engines[shift:] + engines[:shift]:
                runs[engine].append(measure(case, engine, sizes, args.keep))
                last = runs[engine][-1]
                print(
                    f"case {case} {ENGINE_LABELS[engine]:>15}: {last['seconds']:.3f} s, "
                    f"peak RSS {last['peak_rss_mib']:.0f} MiB, updated {last['updated']}, "
                    f"inserted {last['inserted']}, removed {last.get('removed', 0)}",
                    file=sys.stderr,
                )
        summary = {
            engine: {
                "seconds": statistics.median(r["seconds"] for r in results),
                "cpu_seconds": statistics.median(r["cpu_seconds"] for r in results),
                "peak_rss_mib": max(r["peak_rss_mib"] for r in results),
                "baseline_rss_mib": statistics.median(r["baseline_rss_mib"] for r in results),
                **{
                    key: results[-1][key]
                    for key in ("updated", "inserted", "removed", "unchanged", "rows_after")
                    if key in results[-1]
                },
                "runs": results,
            }
            for engine, results in runs.items()
        }
        if "ours" in summary and "pyiceberg" in summary:
            ours, theirs = summary["ours"], summary["pyiceberg"]
            for key in ("updated", "inserted", "rows_after"):
                if ours[key] != theirs[key]:
                    raise SystemExit(
                        f"case {case}: engines disagree on {key}: {ours[key]} vs {theirs[key]}"
                    )
        rows.append({"case": case, "description": describe(case, sizes), **summary})

    print(_markdown(rows))
    output = args.output or RESULTS / f"upsert-{date.today().isoformat()}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(_report(rows, sizes, args), indent=2, default=str) + "\n")
    print(f"\nwritten {output}", file=sys.stderr)
    return 0


def _markdown(rows: list[dict]) -> str:
    """One table per set of engines: floe against ``Table.upsert`` (speed-up), and the CDC
    upsert next to the plain one (its time as a multiple of the plain upsert's)."""
    groups: dict[tuple[str, ...], list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(e for e in ENGINES if e in row), []).append(row)
    tables = [_markdown_table(engines, group) for engines, group in groups.items()]
    return "\n\n".join(tables)


def _markdown_table(engines: tuple[str, ...], rows: list[dict]) -> str:
    ratio = None
    if {"ours", "pyiceberg"} <= set(engines):
        ratio = ("speed-up", "pyiceberg", "ours")
    elif {"ours", "cdc"} <= set(engines):
        ratio = ("CDC / plain", "cdc", "ours")
    header = ["case", "workload"]
    for engine in engines:
        header += [
            f"{ENGINE_LABELS[engine]} (s)",
            f"{ENGINE_LABELS[engine]} peak RSS MiB (+ over start)",
        ]
    if ratio:
        header.append(ratio[0])
    if "cdc" in engines:
        header += ["CDC / plain, CPU time", "CDC rows updated / removed / unchanged / inserted"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row["case"], row["description"]]
        for engine in engines:
            result = row[engine]
            growth = result["peak_rss_mib"] - result["baseline_rss_mib"]
            cells += [f"{result['seconds']:.2f}", f"{result['peak_rss_mib']:.0f} (+{growth:.0f})"]
        if ratio:
            digits = 1 if ratio[1] == "pyiceberg" else 2
            cells.append(f"{row[ratio[1]]['seconds'] / row[ratio[2]]['seconds']:.{digits}f}x")
        if "cdc" in engines:
            cdc = row["cdc"]
            cells.append(f"{cdc['cpu_seconds'] / row['ours']['cpu_seconds']:.2f}x")
            cells.append(
                " / ".join(f"{cdc[k]:,}" for k in ("updated", "removed", "unchanged", "inserted"))
            )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _report(rows: list[dict], sizes: Sizes, args: argparse.Namespace) -> dict:
    import pyarrow
    import pyiceberg

    return {
        "benchmark": "upsert",
        "created": datetime.now().isoformat(timespec="seconds"),
        "sizes": asdict(sizes),
        "repeat": args.repeat,
        "smoke": args.smoke,
        "environment": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "pyiceberg": pyiceberg.__version__,
            "pyarrow": pyarrow.__version__,
            "max_rss_unit": "MiB (ru_maxrss of the timing child)",
        },
        "cases": rows,
    }


if __name__ == "__main__":
    sys.exit(main())
