"""Partition-key scaling: a single-run backfill over N static partition keys, N = 100 ... 10,000.

One Dagster run materializes every key of a ``StaticPartitionsDefinition`` in one commit
(``BackfillPolicy.single_run()``, range tags), then a second run loads that whole slice into a
downstream asset. Each key count runs in a fresh process on a fresh embedded catalog and an
ephemeral Dagster instance under ``benchmarks/.work/``. Reported per key count:

- ``write run``: the whole ``dagster.materialize`` of the backfill, of which ``handle_output``
  (write + output metadata) and, inside it, the output row count (``metadata``);
- ``load run``: the whole run of the downstream asset, of which ``load_input``;
- ``Dagster``: the rest of both runs: Dagster stores a planned and a materialization event for
  every key of a run, whatever the IO manager does;
- ``In() count``: for comparison, the slice's row count the way it was taken before (a scan
  planned with an ``In`` of every key, which PyIceberg binds again for every data file), only
  up to ``--in-count-max`` keys (it grows with keys x files: minutes at 2,000 keys).

Usage::

    python benchmarks/bench_partition_keys.py                  # 100, 1,000 and 10,000 keys
    python benchmarks/bench_partition_keys.py --smoke          # 10, 50 and 100 keys, seconds
    python benchmarks/bench_partition_keys.py --keys 100,2000 --mode append --rows-per-key 5

Results are written to ``benchmarks/results/partition-keys-<date>.json``.
"""

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from datetime import date, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORK = HERE / ".work"
RESULTS = HERE / "results"
DEFAULT_KEYS = (100, 1_000, 10_000)
SMOKE_KEYS = (10, 50, 100)


# --------------------------------------------------------------------------------------------
# Child process: one key count
# --------------------------------------------------------------------------------------------


class _Timers:
    """Wall-clock seconds spent in wrapped functions, summed per name."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def wrap(self, owner: object, attribute: str, name: str) -> None:
        original = getattr(owner, attribute)

        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started

        setattr(owner, attribute, timed)


def child(keys: int, rows_per_key: int, mode: str, in_count_max: int, workdir: Path) -> dict:
    warnings.filterwarnings("ignore")
    import dagster as dg
    import pyarrow as pa

    from floe_dagster_iceberg import (
        EmbeddedCatalogConfig,
        IcebergCatalogResource,
        IcebergIOManager,
        create_iceberg_resources,
    )
    from floe_dagster_iceberg import io_manager as io_manager_module

    timers = _Timers()
    timers.wrap(IcebergIOManager, "handle_output", "handle_output")
    timers.wrap(IcebergIOManager, "load_input", "load_input")
    timers.wrap(io_manager_module, "rows_after_write", "metadata")

    names = [f"key-{i:05d}" for i in range(keys)]
    partitions = dg.StaticPartitionsDefinition(names)
    single_run = dg.BackfillPolicy.single_run()

    @dg.asset(
        partitions_def=partitions,
        io_manager_key="iceberg",
        backfill_policy=single_run,
        metadata={"partition_expr": "key", "write_mode": mode},
    )
    def events(context: dg.AssetExecutionContext) -> pa.Table:
        run_keys = context.partition_keys
        return pa.table(
            {
                "key": [k for k in run_keys for _ in range(rows_per_key)],
                "n": list(range(len(run_keys) * rows_per_key)),
            }
        )

    loaded: dict[str, int] = {}

    @dg.asset(partitions_def=partitions, backfill_policy=single_run)
    def downstream(events: pa.Table) -> None:
        loaded["rows"] = events.num_rows

    catalog = IcebergCatalogResource(catalog=EmbeddedCatalogConfig(home=str(workdir)))
    resources = create_iceberg_resources(catalog)
    instance = dg.DagsterInstance.ephemeral()
    tags = {
        "dagster/asset_partition_range_start": names[0],
        "dagster/asset_partition_range_end": names[-1],
    }

    started = time.perf_counter()
    result = dg.materialize([events], resources=resources, instance=instance, tags=tags)
    write_run = time.perf_counter() - started
    materialization = result.asset_materializations_for_node("events")[-1]
    row_count = materialization.metadata["dagster/row_count"].value

    started = time.perf_counter()
    dg.materialize(
        [events, downstream],
        resources=resources,
        instance=instance,
        tags=tags,
        selection=[downstream],
    )
    load_run = time.perf_counter() - started

    in_count = None
    if keys <= in_count_max:
        from pyiceberg.expressions import In

        manager = catalog.get_manager()
        table = manager.load_table(("public", "events"))
        started = time.perf_counter()
        counted = manager.count(table, In("key", names))
        in_count = time.perf_counter() - started
        assert counted == row_count, (counted, row_count)

    expected = keys * rows_per_key
    if row_count != expected or loaded.get("rows") != expected:
        raise SystemExit(f"wrong rows: metadata {row_count}, loaded {loaded}, want {expected}")
    handle_output = timers.seconds.get("handle_output", 0.0)
    load_input = timers.seconds.get("load_input", 0.0)
    return {
        "keys": keys,
        "rows": expected,
        "mode": mode,
        "write_run_seconds": write_run,
        "handle_output_seconds": handle_output,
        "metadata_seconds": timers.seconds.get("metadata", 0.0),
        "load_run_seconds": load_run,
        "load_input_seconds": load_input,
        "dagster_seconds": write_run + load_run - handle_output - load_input,
        "in_count_seconds": in_count,
        "row_count": row_count,
    }


# --------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------


def _spawn(arguments: list[str]) -> tuple[dict, float]:
    """Run a child, return its JSON answer and its peak RSS in MiB (``wait4`` rusage)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), *arguments],
            stdout=out,
            stderr=err,
            cwd=HERE.parent,
        )
        _, status, usage = os.wait4(process.pid, 0)
        returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if returncode != 0:
        raise RuntimeError(f"child {' '.join(arguments)} failed:\n{stderr[-3000:]}")
    return json.loads(stdout.strip().splitlines()[-1]), usage.ru_maxrss / 1024


def measure(keys: int, args: argparse.Namespace) -> dict:
    workdir = WORK / f"partition-keys-{keys}-{uuid.uuid4().hex[:8]}"
    workdir.mkdir(parents=True)
    try:
        result, peak = _spawn(
            [
                "--child",
                "--keys",
                str(keys),
                "--rows-per-key",
                str(args.rows_per_key),
                "--mode",
                args.mode,
                "--in-count-max",
                str(args.in_count_max),
                "--workdir",
                str(workdir),
            ]
        )
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    return {**result, "peak_rss_mib": peak}


def _markdown(rows: list[dict]) -> str:
    header = [
        "keys",
        "rows",
        "write run (s)",
        "handle_output (s)",
        "metadata (s)",
        "load run (s)",
        "load_input (s)",
        "Dagster (s)",
        "In() count (s)",
        "peak RSS MiB",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---:|" * len(header)]
    for row in rows:
        in_count = row["in_count_seconds"]
        cells = [
            f"{row['keys']:,}",
            f"{row['rows']:,}",
            f"{row['write_run_seconds']:.2f}",
            f"{row['handle_output_seconds']:.2f}",
            f"{row['metadata_seconds']:.3f}",
            f"{row['load_run_seconds']:.2f}",
            f"{row['load_input_seconds']:.2f}",
            f"{row['dagster_seconds']:.2f}",
            "-" if in_count is None else f"{in_count:.2f}",
            f"{row['peak_rss_mib']:.0f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _report(rows: list[dict], args: argparse.Namespace) -> dict:
    import dagster
    import pyarrow
    import pyiceberg

    return {
        "benchmark": "partition-keys",
        "created": datetime.now().isoformat(timespec="seconds"),
        "keys": [row["keys"] for row in rows],
        "rows_per_key": args.rows_per_key,
        "mode": args.mode,
        "smoke": args.smoke,
        "environment": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "dagster": dagster.__version__,
            "pyiceberg": pyiceberg.__version__,
            "pyarrow": pyarrow.__version__,
            "max_rss_unit": "MiB (ru_maxrss of the child)",
        },
        "cases": rows,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help="10, 50 and 100 keys")
    parser.add_argument("--keys", default=None, help="comma-separated key counts")
    parser.add_argument("--rows-per-key", type=int, default=10)
    parser.add_argument("--mode", choices=("overwrite", "append"), default="overwrite")
    parser.add_argument(
        "--in-count-max",
        type=int,
        default=1_000,
        help="largest key count for which the In() count is timed (default 1,000)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the warehouses")
    parser.add_argument("--output", type=Path, default=None, help="JSON path")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        result = child(
            int(args.keys), args.rows_per_key, args.mode, args.in_count_max, args.workdir
        )
        print(json.dumps(result))
        return 0

    counts = (
        [int(k) for k in args.keys.split(",")]
        if args.keys
        else list(SMOKE_KEYS if args.smoke else DEFAULT_KEYS)
    )
    WORK.mkdir(exist_ok=True)
    rows = []
    for keys in counts:
        rows.append(measure(keys, args))
        last = rows[-1]
        print(
            f"{keys:>6} keys: write run {last['write_run_seconds']:.2f} s "
            f"(handle_output {last['handle_output_seconds']:.2f} s), "
            f"load run {last['load_run_seconds']:.2f} s "
            f"(load_input {last['load_input_seconds']:.2f} s)",
            file=sys.stderr,
        )
    print(_markdown(rows))
    output = args.output or RESULTS / f"partition-keys-{date.today().isoformat()}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(_report(rows, args), indent=2, default=str) + "\n")
    print(f"\nwritten {output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
