"""Turn a results JSON into the markdown table, the target verdicts and the ratio chart.

python -m benchmarks.report benchmarks/results/2026-11-21.json   # re-render .md and .png
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

SYSTEM_ORDER = ["raw_parquet", "pyiceberg", "dagster_iceberg", "floe", "floe_pandas"]
LABELS = {
    "raw_parquet": "raw Parquet",
    "pyiceberg": "PyIceberg",
    "dagster_iceberg": "dagster-iceberg",
    "floe": "floe",
    "floe_pandas": "floe (pandas)",
}
CASE_TITLES = {
    "sequential_writes": "1. sequential partitioned writes",
    "concurrent_writes": "2. concurrent partition writes",
    "upsert": "3. upsert into one partition",
    "partition_read": "4. read one partition",
    "range_backfill": "5. single-run range backfill",
    "compaction": "6. compaction",
}


def _title(case: str) -> str:
    if case.startswith("concurrent_writes_"):
        return f"2. concurrent writes, {case.rsplit('_', 1)[1]} processes"
    if case.startswith("history_growth_"):
        return f"7. write one partition after {int(case.rsplit('_', 1)[1]):,} commits"
    return CASE_TITLES.get(case, case)


def _entry(results: dict[str, Any], case: str, system: str) -> dict[str, Any] | None:
    return results.get("summary", {}).get(case, {}).get(system)


def _median(results: dict[str, Any], case: str, system: str) -> float | None:
    entry = _entry(results, case, system)
    if entry and entry.get("status") == "ok":
        return entry["median"]
    return None


def _extra(results: dict[str, Any], case: str, system: str, key: str) -> float | None:
    entry = _entry(results, case, system)
    if entry and entry.get("status") == "ok":
        value = entry.get("extra", {}).get(key)
        return value if isinstance(value, (int, float)) else None
    return None


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b <= 0:
        return None
    return a / b


def _fmt_ratio(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}x" if value < 10 else f"{value:.0f}x"


def _fmt_seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 0.1:
        return f"{value * 1000:.1f} ms"
    return f"{value:.2f} s"


# ------------------------------------------------------------------------ targets


def evaluate_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target of the issue, with the measured number and met / missed / not measured."""
    targets: list[dict[str, Any]] = []

    def add(name: str, goal: str, met: bool | None, measured: str) -> None:
        verdict = "not measured" if met is None else ("met" if met else "missed")
        targets.append({"target": name, "goal": goal, "verdict": verdict, "measured": measured})

    floe_w = _median(results, "sequential_writes", "floe")
    raw_w = _median(results, "sequential_writes", "raw_parquet")
    di_w = _median(results, "sequential_writes", "dagster_iceberg")
    r = _ratio(floe_w, raw_w)
    inner = _extra(results, "sequential_writes", "floe", "io_manager_seconds")
    pyi_w = _median(results, "sequential_writes", "pyiceberg")
    add(
        "partitioned write vs raw Parquet",
        "floe within 1.3x of raw Parquet",
        None if r is None else r <= 1.3,
        f"{_fmt_ratio(r)} ({_fmt_seconds(floe_w)} vs {_fmt_seconds(raw_w)}); inside the IO manager "
        f"{_fmt_seconds(inner)} = {_fmt_ratio(_ratio(inner, raw_w))}; PyIceberg alone "
        f"{_fmt_ratio(_ratio(pyi_w, raw_w))}",
    )
    add(
        "partitioned write vs dagster-iceberg",
        "floe faster than dagster-iceberg",
        None if floe_w is None or di_w is None else floe_w < di_w,
        f"floe {_fmt_seconds(floe_w)}, dagster-iceberg {_fmt_seconds(di_w)}: dagster-iceberg takes "
        f"{_fmt_ratio(_ratio(di_w, floe_w))} floe's time (fastest repeats: "
        f"{_fmt_ratio(_ratio(_best(results, 'sequential_writes', 'dagster_iceberg'), _best(results, 'sequential_writes', 'floe')))})",
    )

    conc_cases = sorted(c for c in results.get("summary", {}) if c.startswith("concurrent_writes_"))
    parts, all_zero, seen = [], True, False
    for case in conc_cases:
        entry = _entry(results, case, "floe")
        writers = case.rsplit("_", 1)[1]
        if entry and entry.get("status") == "ok":
            seen = True
            worst = max(entry["failures"])
            lost = entry.get("extra", {}).get("rows_lost", 0)
            all_zero = all_zero and worst == 0 and not lost
            parts.append(f"{writers} writers: {worst} failed")
        else:
            all_zero = False
            parts.append(f"{writers} writers: run {entry.get('status') if entry else 'missing'}")
        other = _entry(results, case, "dagster_iceberg")
        if other and other.get("status") == "ok":
            parts[-1] += f" (dagster-iceberg: {max(other['failures'])} of {writers} failed)"
    add(
        "concurrent writes",
        "0 failures at every writer count",
        all_zero if seen else None,
        "; ".join(parts) or "-",
    )

    floe_u = _median(results, "upsert", "floe")
    for other in ("pyiceberg", "dagster_iceberg"):
        theirs = _median(results, "upsert", other)
        r = _ratio(theirs, floe_u)
        add(
            f"upsert vs {LABELS[other]}",
            "floe at least 5x faster",
            None if r is None else r >= 5,
            f"{_fmt_ratio(r)} faster ({_fmt_seconds(floe_u)} vs {_fmt_seconds(theirs)})",
        )

    # The load is what the IO manager does; a Dagster run around it costs the same to every
    # IO manager, so the targets are on the load and the whole run is reported next to it.
    for mode, label, goal in (
        ("cold", "cold, in a fresh process", 2.0),
        ("warm", "warm, repeated in-process", 1.2),
    ):
        floe_r = _extra(results, "partition_read", "floe", f"{mode}_seconds")
        raw_r = _extra(results, "partition_read", "raw_parquet", f"{mode}_seconds")
        inner = _extra(results, "partition_read", "floe", f"io_manager_{mode}_seconds")
        r = _ratio(inner, raw_r)
        add(
            f"partition load vs raw Parquet ({mode})",
            f"floe's load within {goal}x of the filtered Parquet read",
            None if r is None else r <= goal,
            f"{_fmt_ratio(r)} ({_fmt_seconds(inner)} in the IO manager vs {_fmt_seconds(raw_r)}, "
            f"{label}); whole Dagster run {_fmt_seconds(floe_r)} = "
            f"{_fmt_ratio(_ratio(floe_r, raw_r))}",
        )
        di_inner = _extra(
            results, "partition_read", "dagster_iceberg", f"io_manager_{mode}_seconds"
        )
        di_r = _extra(results, "partition_read", "dagster_iceberg", f"{mode}_seconds")
        r = _ratio(di_inner, inner)
        add(
            f"partition load vs dagster-iceberg ({mode})",
            "floe faster than dagster-iceberg",
            None if r is None else r > 1,
            f"dagster-iceberg takes {_fmt_ratio(r)} floe's load ({_fmt_seconds(di_inner)} vs "
            f"{_fmt_seconds(inner)}); whole runs {_fmt_seconds(di_r)} vs {_fmt_seconds(floe_r)}",
        )

    sizes = _history_sizes(results)
    few_reads = (
        _extra(results, f"history_growth_{sizes[0]}", "floe", "read_seconds") if sizes else None
    )
    many_reads = (
        _extra(results, f"history_growth_{sizes[-1]}", "floe", "read_seconds") if sizes else None
    )
    r = _ratio(many_reads, few_reads)
    add(
        "read cost flat in history",
        "read after the most commits within 1.2x of after the fewest",
        None if r is None or len(sizes) < 2 else r <= 1.2,
        f"{_fmt_ratio(r)} ({_fmt_seconds(many_reads)} after {sizes[-1]:,} commits vs "
        f"{_fmt_seconds(few_reads)} after {sizes[0]:,})"
        if sizes
        else "-",
    )

    entry = _entry(results, "range_backfill", "floe")
    di = _entry(results, "range_backfill", "dagster_iceberg")
    measured = (
        f"floe: {entry['status']}"
        + (
            f" in {_fmt_seconds(entry.get('median'))}"
            if entry and entry.get("status") == "ok"
            else f" ({entry.get('reason')})"
            if entry
            else ""
        )
        if entry
        else "floe: not run"
    )
    if di:
        measured += f"; dagster-iceberg: {di['status']}" + (
            f" ({di.get('reason')})" if di.get("reason") else ""
        )
    add(
        "range backfill",
        "works in one run",
        None if entry is None else entry.get("status") == "ok",
        measured,
    )
    return targets


# ------------------------------------------------------------------------ markdown


def _cell(results: dict[str, Any], case: str, system: str) -> str:
    entry = _entry(results, case, system)
    if entry is None:
        return "not run"
    if entry.get("status") == "n/a":
        return "n/a"
    if entry.get("status") == "failed" or not entry.get("ok"):
        return "**failed**"
    text = f"{_fmt_seconds(entry['median'])} ({_fmt_seconds(entry['min'])}-{_fmt_seconds(entry['max'])})"
    failures = entry.get("failures") or []
    if case.startswith("concurrent_writes_"):
        text += f", {max(failures)} failed"
    return text


def markdown(results: dict[str, Any]) -> str:
    systems = [s for s in SYSTEM_ORDER if s in results.get("systems", SYSTEM_ORDER)]
    cases = list(results.get("summary", {}))
    lines: list[str] = []
    m = results.get("machine", {})
    lines.append(
        f"# Benchmark results {results.get('date')}"
        + (" (smoke sizes)" if results.get("smoke") else "")
    )
    lines.append("")
    lines.append(
        f"Machine: {m.get('usable_cpus')} cores ({m.get('cpu_model', '?')}), {m.get('memory_gib', '?')} GiB memory, "
        f"{m.get('platform', '?')}, Python {m.get('python', '?')}. "
        f"{results.get('repeats')} repeats per cell, each in a fresh process with a fresh warehouse; "
        "time is the median (min-max)."
        + (f" Code at commit `{results['commit'][:10]}`." if results.get("commit") else "")
        + (
            f" (package files changed since: {', '.join(results['uncommitted_package_files'])})"
            if results.get("uncommitted_package_files")
            else ""
        )
    )
    lines.append("")
    lines.append("## Ratios")
    lines.append("")
    lines.append(
        "Median time of each system divided by raw Parquet's (the floor) and by floe's; lower is better."
    )
    lines.append("")
    header = "| workload | " + " | ".join(
        f"{LABELS[s]} / raw" for s in systems if s != "raw_parquet"
    )
    if "floe" in systems:
        header += " | " + " | ".join(
            f"{LABELS[s]} / floe" for s in systems if s not in ("floe", "raw_parquet")
        )
    header += " |"
    lines.append(header)
    lines.append("|" + "---|" * (header.count("|") - 1))
    for case in cases:
        row = [_title(case)]
        raw = _median(results, case, "raw_parquet")
        floe = _median(results, case, "floe")
        for s in systems:
            if s != "raw_parquet":
                row.append(_ratio_cell(results, case, s, raw))
        for s in systems:
            if s not in ("floe", "raw_parquet") and "floe" in systems:
                row.append(_ratio_cell(results, case, s, floe))
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    lines.append(
        "Ratios of the fastest repeat of each system (less sensitive to a machine that is busy"
        " with other work during some repeats):"
    )
    lines.append("")
    lines.append(header)
    lines.append("|" + "---|" * (header.count("|") - 1))
    for case in cases:
        row = [_title(case)]
        raw = _best(results, case, "raw_parquet")
        floe = _best(results, case, "floe")
        for s in systems:
            if s != "raw_parquet":
                row.append(_ratio_cell(results, case, s, raw, key="min"))
        for s in systems:
            if s not in ("floe", "raw_parquet") and "floe" in systems:
                row.append(_ratio_cell(results, case, s, floe, key="min"))
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    lines.append("## Times")
    lines.append("")
    lines.append("| workload | " + " | ".join(LABELS[s] for s in systems) + " |")
    lines.append("|" + "---|" * (len(systems) + 1))
    for case in cases:
        lines.append(
            "| " + " | ".join([_title(case)] + [_cell(results, case, s) for s in systems]) + " |"
        )
    lines.append("")
    lines.append("## Details")
    lines.append("")
    for case in cases:
        details = _details(results, case, systems)
        if details:
            lines.append(f"- {_title(case)}: " + "; ".join(details))
    lines.append("")
    lines.extend(history_growth_section(results, systems))
    lines.append("## Targets")
    lines.append("")
    lines.append("| target | goal | verdict | measured |")
    lines.append("|---|---|---|---|")
    for t in results.get("targets") or evaluate_targets(results):
        verdict = t["verdict"] if t["verdict"] != "missed" else "**missed**"
        lines.append(f"| {t['target']} | {t['goal']} | {verdict} | {t['measured']} |")
    lines.append("")
    lines.append("## Peak memory (MiB, largest process of the run)")
    lines.append("")
    lines.append("| workload | " + " | ".join(LABELS[s] for s in systems) + " |")
    lines.append("|" + "---|" * (len(systems) + 1))
    for case in cases:
        cells = []
        for s in systems:
            entry = _entry(results, case, s)
            cells.append(
                f"{entry['peak_rss_mb']:.0f}" if entry and entry.get("peak_rss_mb") else "-"
            )
        lines.append("| " + " | ".join([_title(case), *cells]) + " |")
    lines.append("")
    lines.append("## Versions")
    lines.append("")
    for system, versions in (results.get("versions") or {}).items():
        if versions:
            lines.append(
                f"- {LABELS.get(system, system)}: "
                + ", ".join(f"{k} {v}" for k, v in versions.items())
            )
    lines.append("")
    lines.append("Sizes: " + ", ".join(f"{k}={v}" for k, v in results.get("sizes", {}).items()))
    lines.append("")
    return "\n".join(lines)


def _history_sizes(results: dict[str, Any]) -> list[int]:
    return sorted(
        int(case.rsplit("_", 1)[1])
        for case in results.get("summary", {})
        if case.startswith("history_growth_")
    )


def history_growth_section(results: dict[str, Any], systems: list[str]) -> list[str]:
    """Workload 7: write and read times by history size, their growth, and the ratios."""
    sizes = _history_sizes(results)
    if not sizes:
        return []

    def write(system: str, n: int) -> float | None:  # the ok repeats, also of a partial cell
        entry = _entry(results, f"history_growth_{n}", system)
        return entry.get("median") if entry else None

    def read(system: str, n: int) -> float | None:
        entry = _entry(results, f"history_growth_{n}", system)
        value = (entry or {}).get("extra", {}).get("read_seconds")
        return value if isinstance(value, (int, float)) else None

    def cell(system: str, n: int, value: float | None) -> str:
        entry = _entry(results, f"history_growth_{n}", system)
        if entry is None:
            return "not run"
        if not entry.get("ok"):
            return "**failed**"
        text = _fmt_seconds(value)
        if entry["ok"] < entry["repeats"]:
            text += f" ({entry['repeats'] - entry['ok']} of {entry['repeats']} failed)"
        return text

    few, many = sizes[0], sizes[-1]
    growth = f"{many:,} / {few:,}"
    lines = ["## 7. History growth", ""]
    lines.append(
        "One partition write (a new day) and one read of that partition, on a table that already"
        " has N commits (raw Parquet: the same partitions as files, no commits). Median of the"
        " repeats; the read runs in the same process right after the write."
    )
    lines.append("")
    header = (
        "| system | "
        + " | ".join(f"write after {n:,}" for n in sizes)
        + f" | write {growth} | "
        + " | ".join(f"read after {n:,}" for n in sizes)
        + f" | read {growth} |"
    )
    lines.append(header)
    lines.append("|" + "---|" * (header.count("|") - 1))
    for s in systems:
        lines.append(
            f"| {LABELS[s]} | "
            + " | ".join(cell(s, n, write(s, n)) for n in sizes)
            + f" | {_fmt_ratio(_ratio(write(s, many), write(s, few)))} | "
            + " | ".join(cell(s, n, read(s, n)) for n in sizes)
            + f" | {_fmt_ratio(_ratio(read(s, many), read(s, few)))} |"
        )
    lines.append("")
    bases = [b for b in ("raw_parquet", "floe") if b in systems]
    if bases:
        lines.append(
            "Ratios, write / read, of each system's median to raw Parquet's and to floe's:"
        )
        lines.append("")
        header = (
            "| system | "
            + " | ".join(f"vs {LABELS[b]} after {n:,}" for b in bases for n in sizes)
            + " |"
        )
        lines.append(header)
        lines.append("|" + "---|" * (header.count("|") - 1))
        for s in (s for s in systems if s != "raw_parquet"):
            cells = []
            for b in bases:
                for n in sizes:
                    w = _ratio(write(s, n), write(b, n))
                    r = _ratio(read(s, n), read(b, n))
                    cells.append("-" if s == b else f"{_fmt_ratio(w)} / {_fmt_ratio(r)}")
            lines.append(f"| {LABELS[s]} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def _ratio_cell(
    results: dict[str, Any], case: str, system: str, base: float | None, key: str = "median"
) -> str:
    entry = _entry(results, case, system)
    if entry is None:
        return "not run"
    if entry.get("status") == "n/a":
        return "n/a"
    if entry.get("status") != "ok":
        return "**failed**"
    return _fmt_ratio(_ratio(entry[key], base))


def _best(results: dict[str, Any], case: str, system: str) -> float | None:
    entry = _entry(results, case, system)
    if entry and entry.get("status") == "ok":
        return entry["min"]
    return None


def _details(results: dict[str, Any], case: str, systems: list[str]) -> list[str]:
    out = []
    for s in systems:
        entry = _entry(results, case, s)
        if not entry:
            continue
        label = LABELS[s]
        extra = entry.get("extra", {})
        if entry.get("status") not in ("ok",):
            reason = (entry.get("reason") or "").strip().splitlines()
            out.append(f"{label} {entry.get('status')}: `{reason[0][:240] if reason else '?'}`")
            continue
        if case.startswith("concurrent_writes_"):
            text = f"{label} {max(entry['failures'])} failed, {extra.get('rows_in_table', 0):.0f} rows committed of {extra.get('expected_rows', 0):.0f}"
            if entry.get("errors"):
                text += f" (`{entry['errors'][0][:160]}`)"
            out.append(text)
        elif case == "partition_read":
            text = f"{label} cold {_fmt_seconds(extra.get('cold_seconds'))}, warm {_fmt_seconds(extra.get('warm_seconds'))}"
            if "io_manager_cold_seconds" in extra:
                text += (
                    f" (inside the IO manager's load_input: cold {_fmt_seconds(extra['io_manager_cold_seconds'])},"
                    f" warm {_fmt_seconds(extra.get('io_manager_warm_seconds'))}; Dagster's own cost of a run:"
                    f" {_fmt_seconds(extra.get('dagster_run_overhead_seconds'))})"
                )
            out.append(text)
        elif case.startswith("history_growth_"):
            text = f"{label} write {_fmt_seconds(entry['median'])}"
            if "io_manager_write_seconds" in extra:
                text += f" ({_fmt_seconds(extra['io_manager_write_seconds'])} in the IO manager)"
            text += f", read {_fmt_seconds(extra.get('read_seconds'))}"
            if "io_manager_read_seconds" in extra:
                text += f" ({_fmt_seconds(extra['io_manager_read_seconds'])} in the IO manager)"
            if "metadata_json_bytes" in extra:
                text += (
                    f"; metadata JSON {extra['metadata_json_bytes'] / 1024:.0f} KiB,"
                    f" {extra.get('manifests', 0):.0f} manifests"
                )
            text += f"; history built in {_fmt_seconds(extra.get('history_setup_seconds'))}"
            out.append(text)
        elif "io_manager_seconds" in extra:
            text = (
                f"{label} {_fmt_seconds(extra['io_manager_seconds'])} of it inside the IO manager"
            )
            if "dagster_run_overhead_seconds" in extra:
                text += f" (Dagster's own cost of a run: {_fmt_seconds(extra['dagster_run_overhead_seconds'])})"
            out.append(text)
        elif case == "compaction":
            out.append(
                f"{label} {extra.get('files_before', 0):.0f} -> {extra.get('files_after', 0):.0f} files, full read "
                f"{_fmt_seconds(extra.get('read_before_seconds'))} -> {_fmt_seconds(extra.get('read_after_seconds'))} "
                f"({extra.get('read_speedup', 0):.1f}x faster)"
            )
    return out


# ------------------------------------------------------------------------ chart


def chart(results: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    systems = [s for s in SYSTEM_ORDER if s in results.get("systems", SYSTEM_ORDER)]
    cases = list(results.get("summary", {}))
    colors = {
        "raw_parquet": "#9e9e9e",
        "pyiceberg": "#4c72b0",
        "dagster_iceberg": "#dd8452",
        "floe": "#2ca02c",
        "floe_pandas": "#98df8a",
    }
    fig, axes = plt.subplots(1, 2, figsize=(15, 6.5))
    for ax, base_system, title in (
        (axes[0], "raw_parquet", "time / raw Parquet time (the floor)"),
        (axes[1], "floe", "time / floe time"),
    ):
        shown = [s for s in systems if s != base_system]
        width = 0.8 / max(1, len(shown))
        for i, s in enumerate(shown):
            xs, ys, labels, marks = [], [], [], []
            for j, case in enumerate(cases):
                base = _median(results, case, base_system)
                entry = _entry(results, case, s)
                x = j + (i - (len(shown) - 1) / 2) * width
                value = _ratio(_median(results, case, s), base)
                if value is not None:
                    xs.append(x)
                    ys.append(value)
                    failed = max(entry.get("failures") or [0])
                    writers = (
                        case.rsplit("_", 1)[1] if case.startswith("concurrent_writes_") else ""
                    )
                    labels.append(
                        _fmt_ratio(value) + (f", {failed}/{writers} failed" if failed else "")
                    )
                elif entry is not None and base is not None:
                    marks.append((x, "n/a" if entry.get("status") == "n/a" else "failed"))
            bars = ax.bar(xs, ys, width, label=LABELS[s], color=colors[s])
            for bar, label in zip(bars, labels, strict=True):
                ax.annotate(
                    label,
                    (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center",
                    va="bottom",
                    fontsize=7,
                    rotation=90,
                    xytext=(0, 2),
                    textcoords="offset points",
                )
            for x, text in marks:
                ax.annotate(
                    text, (x, 1), ha="center", va="bottom", fontsize=7, rotation=90, color="#c0392b"
                )
        for j, case in enumerate(cases):
            if _median(results, case, base_system) is None:
                ax.annotate(
                    f"no {LABELS[base_system]} result",
                    (j, 1),
                    ha="center",
                    va="bottom",
                    fontsize=7,
                    rotation=90,
                    color="#555555",
                )
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_yscale("log")
        low, high = ax.get_ylim()
        ax.set_ylim(min(low, 0.5), high * 8)  # room for the rotated labels
        ax.set_xticks(range(len(cases)))
        ax.set_xticklabels(
            [_title(c).split(". ", 1)[-1] for c in cases], rotation=30, ha="right", fontsize=8
        )
        ax.set_title(title)
        ax.set_ylabel("ratio (log scale, lower is better)")
        ax.legend(fontsize=8)
    m = results.get("machine", {})
    fig.suptitle(
        f"floe-dagster-iceberg benchmarks {results.get('date')}: {m.get('usable_cpus')} cores, "
        f"{m.get('memory_gib')} GiB, median of {results.get('repeats')}"
        + (" (smoke sizes)" if results.get("smoke") else "")
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(
    results: dict[str, Any], md_path: Path, png_path: Path
) -> tuple[Path, Path | None]:
    """Write the markdown report and the chart (the chart needs matplotlib: the ``bench`` extra)."""
    md_path.write_text(markdown(results))
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print(
            "matplotlib is not installed (pip install -e .[bench]): no chart written",
            file=sys.stderr,
        )
        return md_path, None
    chart(results, png_path)
    return md_path, png_path


def main(argv: list[str]) -> int:
    path = Path(argv[0])
    results = json.loads(path.read_text())
    results["targets"] = evaluate_targets(results)
    md, _ = write_report(results, path.with_suffix(".md"), path.with_suffix(".png"))
    print(md.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
