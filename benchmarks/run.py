"""Run every benchmark workload for every system and write the results.

    python -m benchmarks.run                    # full size, 3 repeats, all systems (~1 h on 2 cores)
    python -m benchmarks.run --smoke            # tiny sizes, 1 repeat (a minute or two)
    python -m benchmarks.run --workloads upsert,partition_read --systems pyiceberg,floe
    python -m benchmarks.run --workloads history_growth   # write/read after 10, 100, 1,000 commits

Each (workload, system, repeat) runs in a fresh process against a fresh warehouse and a fresh
catalog database under ``benchmarks/.work/``; the dagster-iceberg adapter runs in its own
virtual environment (``benchmarks/.venv-dagster-iceberg/``, created on first use) because that
package pins an older PyIceberg. Results go to ``benchmarks/results/<date>.json`` plus a markdown
table (``.md``) and a chart of the ratios (``.png``); a run of some workloads only writes
``<date>-<workloads>.json`` (and ``.md``, ``.png``).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
if str(REPO_ROOT) not in sys.path:  # `python benchmarks/run.py` works as well as `-m`
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks import report  # noqa: E402
from benchmarks.systems import SYSTEMS  # noqa: E402
from benchmarks.systems.base import RESULT_MARKER  # noqa: E402

WORK_DIR = BENCH_DIR / ".work"
RESULTS_DIR = BENCH_DIR / "results"
DAGSTER_ICEBERG_VENV = BENCH_DIR / ".venv-dagster-iceberg"
DAGSTER_ICEBERG_REQUIREMENTS = [
    "dagster-iceberg[pyarrow]==0.3.14",
    "psycopg2-binary",  # the PostgreSQL catalog of the concurrent-writes workload
    "numpy",  # the data generator
]

WORKLOADS = [
    "sequential_writes",
    "concurrent_writes",
    "upsert",
    "partition_read",
    "range_backfill",
    "compaction",
    "history_growth",
]

FULL_SIZES: dict[str, Any] = {
    "partitions": 10,  # workloads 1 and 5: daily partitions
    "rows": 300_000,  # workloads 1 and 5: rows per partition
    "overwrites": 3,  # workload 1: partitions overwritten after the first pass
    "writers": [8, 16],  # workload 2: concurrent writer processes
    "concurrent_rows": 100_000,  # workload 2: rows per writer
    "table_rows": 1_000_000,  # workloads 3 and 4: table size
    "table_partitions": 10,  # workloads 3 and 4: its partitions
    "upsert_rows": 50_000,  # workload 3: batch size (half matched)
    "warm_reads": 4,  # workload 4: warm repeats after the cold read
    "small_files": 500,  # workload 6: files before compaction
    "compaction_partitions": 10,
    "compaction_rows": 1_000_000,
    "history_commits": [10, 100, 1_000],  # workload 7: commits before the timed write
    "history_commit_rows": 300,  # workload 7: rows of each prior commit
    "history_rows": 100_000,  # workload 7: rows of the timed partition write
}

SMOKE_SIZES: dict[str, Any] = {
    "partitions": 3,
    "rows": 2_000,
    "overwrites": 1,
    "writers": [2, 3],
    "concurrent_rows": 1_000,
    "table_rows": 4_000,
    "table_partitions": 4,
    "upsert_rows": 200,
    "warm_reads": 1,
    "small_files": 12,
    "compaction_partitions": 3,
    "compaction_rows": 1_200,
    "history_commits": [3],
    "history_commit_rows": 50,
    "history_rows": 2_000,
}

# workloads that need a catalog several processes can commit to at once
POSTGRES_WORKLOADS = {"concurrent_writes"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--workloads", default=",".join(WORKLOADS), help="comma-separated, default: all"
    )
    parser.add_argument(
        "--systems", default=",".join(SYSTEMS), help="comma-separated, default: all"
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="runs per workload and system (default 3, smoke 1)",
    )
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, for CI and development")
    parser.add_argument("--rows", type=int, help="rows per partition of workloads 1 and 5")
    parser.add_argument("--partitions", type=int, help="partitions of workloads 1 and 5")
    parser.add_argument(
        "--writers", help="concurrent writer counts, comma-separated (default 8,16)"
    )
    parser.add_argument("--concurrent-rows", type=int, help="rows per concurrent writer")
    parser.add_argument("--table-rows", type=int, help="table size of workloads 3 and 4")
    parser.add_argument("--upsert-rows", type=int, help="upsert batch size")
    parser.add_argument("--small-files", type=int, help="files before compaction")
    parser.add_argument(
        "--history-commits",
        help="prior commit counts of the history-growth workload, comma-separated (default 10,100,1000)",
    )
    parser.add_argument(
        "--history-rows", type=int, help="rows of the history-growth workload's timed write"
    )
    parser.add_argument(
        "--timeout", type=float, default=1800, help="seconds before one run is killed"
    )
    parser.add_argument(
        "--out", type=Path, help="results directory (default benchmarks/results, smoke: .work)"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the warehouses under benchmarks/.work"
    )
    parser.add_argument(
        "--profile", type=Path, help="write a pyinstrument profile of every run into this directory"
    )
    args = parser.parse_args(argv)
    for name in ("workloads", "systems"):
        chosen = [x.strip() for x in getattr(args, name).split(",") if x.strip()]
        known = WORKLOADS if name == "workloads" else list(SYSTEMS)
        unknown = [x for x in chosen if x not in known]
        if unknown:
            parser.error(f"unknown {name} {unknown}; choose from {known}")
        setattr(args, name, [x for x in known if x in chosen])
    return args


def sizes_from(args: argparse.Namespace) -> dict[str, Any]:
    sizes = dict(SMOKE_SIZES if args.smoke else FULL_SIZES)
    overrides = {
        "rows": args.rows,
        "partitions": args.partitions,
        "concurrent_rows": args.concurrent_rows,
        "table_rows": args.table_rows,
        "upsert_rows": args.upsert_rows,
        "small_files": args.small_files,
        "history_rows": args.history_rows,
    }
    sizes.update({k: v for k, v in overrides.items() if v is not None})
    if args.writers:
        sizes["writers"] = [int(x) for x in args.writers.split(",")]
    if args.history_commits:
        sizes["history_commits"] = [int(x) for x in args.history_commits.split(",")]
    return sizes


# ------------------------------------------------------------------------ machine


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cpu_count": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
    }
    try:
        meminfo = Path("/proc/meminfo").read_text()
        kib = int(
            next(line for line in meminfo.splitlines() if line.startswith("MemTotal")).split()[1]
        )
        info["memory_gib"] = round(kib / 1024 / 1024, 1)
        cpuinfo = Path("/proc/cpuinfo").read_text()
        info["cpu_model"] = next(
            (
                line.split(":", 1)[1].strip()
                for line in cpuinfo.splitlines()
                if line.startswith("model name")
            ),
            platform.processor(),
        )
    except (OSError, StopIteration):
        pass
    with contextlib.suppress(OSError):
        info["disk_free_gib"] = round(shutil.disk_usage(BENCH_DIR).free / 2**30, 1)
    return info


def _git_commit() -> dict[str, Any] | None:
    """The commit the run starts from, and the package files that differ from it."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "status", "--porcelain", "--", "floe_dagster_iceberg"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        return None
    return {"commit": head, "uncommitted_package_files": [line[3:] for line in changed]}


# ------------------------------------------------------------------------ environments


def dagster_iceberg_python() -> Path:
    """The interpreter of the dagster-iceberg environment, created on first use."""
    python = DAGSTER_ICEBERG_VENV / "bin" / "python"
    marker = DAGSTER_ICEBERG_VENV / ".requirements"
    wanted = "\n".join(DAGSTER_ICEBERG_REQUIREMENTS)
    if python.exists() and marker.exists() and marker.read_text() == wanted:
        return python
    print(
        f"creating {DAGSTER_ICEBERG_VENV.relative_to(REPO_ROOT)} ({', '.join(DAGSTER_ICEBERG_REQUIREMENTS)})",
        flush=True,
    )
    base = getattr(sys, "_base_executable", sys.executable)
    shutil.rmtree(DAGSTER_ICEBERG_VENV, ignore_errors=True)
    subprocess.run([base, "-m", "venv", str(DAGSTER_ICEBERG_VENV)], check=True)
    subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            *DAGSTER_ICEBERG_REQUIREMENTS,
        ],
        check=True,
    )
    marker.write_text(wanted)
    return python


class Postgres:
    """One PostgreSQL server for the run (via pgserver); a fresh database per benchmark run."""

    def __init__(self, directory: Path) -> None:
        import warnings

        import pgserver

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.server = pgserver.get_server(directory, cleanup_mode="stop")
        self.count = 0
        self.names: dict[str, str] = {}

    def fresh_database(self) -> str:
        self.count += 1
        name = f"bench_{os.getpid()}_{self.count}"
        self.server.psql(f"CREATE DATABASE {name};")
        uri = self.server.get_uri(name).replace("postgresql://", "postgresql+psycopg2://", 1)
        self.names[uri] = name
        return uri

    def drop(self, uri: str) -> None:
        self.server.psql(f"DROP DATABASE IF EXISTS {self.names.pop(uri)} WITH (FORCE);")


# ------------------------------------------------------------------------ running


def run_one(
    *,
    python: Path,
    system: str,
    workload: str,
    params: dict[str, Any],
    workdir: Path,
    catalog_uri: str,
    timeout: float,
    profile: Path | None = None,
) -> dict[str, Any]:
    """One workload of one system in a fresh process; returns its result with peak memory."""
    workdir.mkdir(parents=True, exist_ok=True)
    spec = {
        "system": system,
        "workload": workload,
        "ctx": {"workdir": str(workdir), "catalog_uri": catalog_uri, "params": params},
    }
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env.setdefault("PYTHONWARNINGS", "ignore")
    # the history-growth setup writes through floe's table manager, from this environment
    env["BENCH_HISTORY_PYTHON"] = sys.executable
    if profile is not None:
        profile.mkdir(parents=True, exist_ok=True)
        env["BENCH_PROFILE"] = str(
            profile.resolve() / f"{workdir.parent.parent.name}-{system}-{workdir.name}"
        )
    stdout_path, stderr_path = workdir / "stdout.log", workdir / "stderr.log"
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    started = time.perf_counter()
    with open(stdout_path, "w") as out, open(stderr_path, "w") as err:
        proc = subprocess.Popen(
            [str(python), "-m", "benchmarks.systems.worker", "--spec", json.dumps(spec)],
            stdout=out,
            stderr=err,
            cwd=REPO_ROOT,
            env=env,
            start_new_session=True,
        )
        usage = None
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                proc.returncode = os.waitstatus_to_exitcode(status)
                break
            if time.perf_counter() - started > timeout:
                os.killpg(proc.pid, 9)
                _, status, usage = os.wait4(proc.pid, 0)
                proc.returncode = -9
                break
            time.sleep(0.05)
    wall = time.perf_counter() - started
    result: dict[str, Any] | None = None
    for line in reversed(stdout_path.read_text(errors="replace").splitlines()):
        if line.startswith(RESULT_MARKER):
            result = json.loads(line[len(RESULT_MARKER) :])
            break
    if result is None:
        tail = stderr_path.read_text(errors="replace")[-1500:]
        reason = "timed out" if proc.returncode == -9 else f"worker exited {proc.returncode}"
        result = {
            "system": system,
            "workload": workload,
            "status": "failed",
            "error": f"{reason}: {tail}",
        }
    for key in ("error", "traceback", "reason"):  # keep machine-specific paths out of results
        if isinstance(result.get(key), str):
            result[key] = _relative_paths(result[key])
    result["wall_seconds"] = wall
    # the 1-minute load average before the run: a busy machine explains an outlier
    result["load_average_before"] = load_before
    # ru_maxrss of a reaped child: its peak (or its largest descendant's) resident set, KiB
    result["peak_rss_mb"] = round(usage.ru_maxrss / 1024, 1) if usage else None
    measured = result.pop("measured_peak_rss_mb", None)
    if measured is not None:
        # a workload whose untimed setup ran in helper processes reports the peak of the
        # process that ran the timed operations; the whole tree's peak is kept next to it
        result["process_tree_peak_rss_mb"] = result["peak_rss_mb"]
        result["peak_rss_mb"] = round(measured, 1)
    return result


def _relative_paths(text: str) -> str:
    text = text.replace(str(REPO_ROOT) + os.sep, "")
    return text.replace(sys.base_prefix + os.sep, "<python>" + os.sep)


def cases(workloads: list[str], sizes: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(case name, workload, parameters): the concurrent workload is one case per writer count,
    the history-growth workload one case per history size."""
    out = []
    for workload in workloads:
        if workload == "concurrent_writes":
            for writers in sizes["writers"]:
                out.append(
                    (f"concurrent_writes_{writers}", workload, {**sizes, "writers": writers})
                )
        elif workload == "history_growth":
            for commits in sizes["history_commits"]:
                out.append(
                    (f"history_growth_{commits}", workload, {**sizes, "history_commits": commits})
                )
        else:
            out.append((workload, workload, sizes))
    return out


def summarize(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per case and system: median/min/max seconds over the ok repeats, and what went wrong."""
    summary: dict[str, dict[str, Any]] = {}
    for run in runs:
        summary.setdefault(run["case"], {}).setdefault(run["system"], []).append(run)
    for case, by_system in summary.items():
        for system, group in list(by_system.items()):
            ok = [r for r in group if r.get("status") == "ok"]
            entry: dict[str, Any] = {
                "repeats": len(group),
                "ok": len(ok),
                "status": "ok"
                if len(ok) == len(group)
                else group[-1].get("status", "failed")
                if not ok
                else "partial",
            }
            if ok:
                secs = [r["seconds"] for r in ok]
                entry.update(
                    median=statistics.median(secs),
                    min=min(secs),
                    max=max(secs),
                    rows=ok[0].get("rows"),
                    failures=[r.get("failures", 0) for r in ok],
                    peak_rss_mb=max((r.get("peak_rss_mb") or 0) for r in ok),
                )
                extra_keys = {
                    k
                    for r in ok
                    for k, v in r.get("extra", {}).items()
                    if isinstance(v, (int, float)) and not isinstance(v, bool)
                }
                entry["extra"] = {
                    k: statistics.median(
                        [
                            r["extra"][k]
                            for r in ok
                            if isinstance(r.get("extra", {}).get(k), (int, float))
                        ]
                    )
                    for k in sorted(extra_keys)
                }
                errors = sorted({e for r in ok for e in r.get("extra", {}).get("errors", [])})
                if errors:
                    entry["errors"] = errors
            bad = [r for r in group if r.get("status") != "ok"]
            if bad:
                entry["reason"] = bad[0].get("reason") or bad[0].get("error")
            summary[case][system] = entry
    return summary


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.smoke:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            sys.exit("the benchmark chart needs matplotlib: pip install -e '.[bench]'")
    sizes = sizes_from(args)
    repeats = args.repeats or (1 if args.smoke else 3)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    session_dir = WORK_DIR / stamp
    session_dir.mkdir(parents=True, exist_ok=True)
    out_dir = args.out or (WORK_DIR / "results" if args.smoke else RESULTS_DIR)
    out_dir.mkdir(parents=True, exist_ok=True)

    source = _git_commit()
    pythons = {s: Path(sys.executable) for s in args.systems}
    if "dagster_iceberg" in args.systems:
        pythons["dagster_iceberg"] = dagster_iceberg_python()
    postgres = None
    if POSTGRES_WORKLOADS & set(args.workloads):
        postgres = Postgres(session_dir / "postgres")

    runs: list[dict[str, Any]] = []
    all_cases = cases(args.workloads, sizes)
    total = len(all_cases) * repeats * len(args.systems)
    started = time.perf_counter()
    n = 0
    for case, workload, params in all_cases:
        for repeat in range(repeats):
            # rotate the order every repeat so no system always runs first (or last)
            order = (
                args.systems[repeat % len(args.systems) :]
                + args.systems[: repeat % len(args.systems)]
            )
            for system in order:
                n += 1
                workdir = session_dir / case / system / f"r{repeat + 1}"
                uri = (
                    postgres.fresh_database()
                    if postgres and workload in POSTGRES_WORKLOADS
                    else f"sqlite:///{workdir / 'catalog.db'}"
                )
                result = run_one(
                    python=pythons[system],
                    system=system,
                    workload=workload,
                    params=params,
                    workdir=workdir,
                    catalog_uri=uri,
                    timeout=args.timeout,
                    profile=args.profile,
                )
                result.update(case=case, repeat=repeat + 1)
                runs.append(result)
                if postgres and workload in POSTGRES_WORKLOADS:
                    postgres.drop(uri)
                if not args.keep:
                    shutil.rmtree(workdir / "warehouse", ignore_errors=True)
                    (workdir / "catalog.db").unlink(missing_ok=True)
                shown = (
                    f"{result['seconds']:.3f}s"
                    if result.get("status") == "ok"
                    else result.get("status")
                )
                extra = f" failures={result.get('failures')}" if result.get("failures") else ""
                if result.get("status") == "ok" and "read_seconds" in result.get("extra", {}):
                    extra += f" read={result['extra']['read_seconds']:.3f}s"
                print(
                    f"[{n}/{total} {time.perf_counter() - started:6.0f}s] {case:<22} {system:<16} r{repeat + 1}: {shown}{extra}"
                    f" (peak {result.get('peak_rss_mb')} MiB)",
                    flush=True,
                )

    versions: dict[str, Any] = {}
    for run in runs:
        versions.setdefault(run["system"], run.get("versions"))
        if versions[run["system"]] is None:
            versions[run["system"]] = run.get("versions")
    results = {
        "date": dt.date.today().isoformat(),
        "started": stamp,
        "smoke": args.smoke,
        "command": " ".join(
            ["python -m benchmarks.run", *(argv if argv is not None else sys.argv[1:])]
        ),
        "machine": machine_info(),
        "commit": (source or {}).get("commit"),
        "uncommitted_package_files": (source or {}).get("uncommitted_package_files"),
        "versions": versions,
        "sizes": sizes,
        "repeats": repeats,
        "systems": args.systems,
        "workloads": args.workloads,
        "summary": summarize(runs),
        "runs": runs,
    }
    results["targets"] = report.evaluate_targets(results)
    # a run of some workloads only does not replace the day's full run
    stem = results["date"]
    if args.workloads != WORKLOADS:
        stem += "-" + "-".join(args.workloads)
    json_path = out_dir / f"{stem}.json"
    json_path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    md_path, png_path = report.write_report(
        results, out_dir / f"{stem}.md", out_dir / f"{stem}.png"
    )
    print(f"\nwrote {json_path}, {md_path}, {png_path}\n")
    print(md_path.read_text())
    if postgres is not None:
        postgres.server.cleanup()
    if not args.keep:
        shutil.rmtree(session_dir, ignore_errors=True) if all(
            r.get("status") in ("ok", "n/a") for r in runs
        ) else None
    return 0


if __name__ == "__main__":
    sys.exit(main())
