"""The Markdown report: one table per suite (absolute numbers per backend,
ratios graphstore/Ray and graphstore/Dask), the targets, notes, workload
descriptions and every sample.

Pure formatting of the ``BackendResult``s the runner collected; nothing here
runs a backend.
"""

from __future__ import annotations

import datetime
import os
import platform

from backends import ALL_BACKENDS, BACKEND_LABELS
from runner import BackendResult
from targets import SUITE_TARGETS, render_targets
from workloads import STARTUP, SUITE_TITLES, SUITES, WORKLOADS, Metric, suite_metrics
from workloads.spill import SPILL_PARENT


def fmt_value(value: float | None, metric: Metric, backend: str | None = None) -> str:
    if backend is not None and not metric.applies(backend):
        return "N/A"
    if value is None:
        return "—"
    if metric.unit == "s":
        return f"{value:.2f} s"
    if metric.unit == "yes/no":
        return "yes" if value >= 0.5 else "no"
    if metric.unit in ("GB/s", "GB"):
        return f"{value:.2f}"
    if metric.unit == "×":
        return f"{value:.2f}×"
    if metric.unit == "ms":
        return f"{value:.3g}" if value < 100 else f"{value:,.0f}"
    return f"{value:,.0f}"


def fmt_ratio(gs: float | None, other: float | None) -> str:
    if gs is None or other is None or other == 0:
        return "n/a"
    return f"{gs / other:.3g}×"


def render_table(results: dict[str, BackendResult], metrics: list[Metric]) -> list[str]:
    shown = [b for b in ALL_BACKENDS if b in results]
    gs = results.get("graphstore")
    ratio_vs = [b for b in ("ray", "dask") if b in results and gs is not None]
    header = ["Workload", "Unit"] + [BACKEND_LABELS[b] for b in shown]
    header += [f"graphstore/{BACKEND_LABELS[b]}" for b in ratio_vs]
    if ratio_vs:
        header.append("Ratio better if")
    lines = ["| " + " | ".join(header) + " |"]
    align = ["---", "---"] + ["---:"] * (len(shown) + len(ratio_vs))
    if ratio_vs:
        align.append(":---:")
    lines.append("|" + "|".join(align) + "|")
    for m in metrics:
        row = [m.label, m.unit]
        row += [fmt_value(results[b].value(m), m, b) for b in shown]
        # No ratio for yes/no rows, ratios of ratios, or rows N/A elsewhere.
        comparable = m.unit not in ("yes/no", "×")
        gs_value = gs.value(m) if gs and comparable else None
        row += [fmt_ratio(gs_value, results[b].value(m)) for b in ratio_vs]
        if ratio_vs:
            if not comparable or not any(m.applies(b) for b in ratio_vs):
                row.append("—")
            else:
                row.append("> 1 (higher is better)" if m.higher_is_better
                           else "< 1 (lower time is better)")
        lines.append("| " + " | ".join(row) + " |")
    return lines


def render_report(results: dict[str, BackendResult], repeat: int,
                  suites: tuple[str, ...] = SUITES, run_notes: list[str] = ()) -> str:
    shown = [b for b in ALL_BACKENDS if b in results]
    gs = results.get("graphstore")
    versions = ", ".join(
        f"{BACKEND_LABELS[b]} {results[b].version or '(unknown)'}"
        for b in shown if results[b].status not in ("skipped", "n/a"))
    method = (f"- Each backend ran in its own fresh process, one at a time. "
              f"Each value is the median of {repeat} run(s) after an untimed warm-up")
    per_process = ([STARTUP.label.split(":")[0].lower()] if "core" in suites else []) + \
        (["the first 200 MB put"] if "objects" in suites else [])
    if per_process:
        method += (f"; {' and '.join(per_process)} "
                   f"{'was' if len(per_process) == 1 else 'were'} "
                   f"measured once in each of {repeat} fresh process(es)")
    method += "."
    lines = [
        "# graphstore benchmarks",
        "",
        f"- Date: {datetime.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}",
        f"- Versions: {versions or 'none ran'}; Python {platform.python_version()}",
        f"- Machine: {platform.system()} {platform.machine()}, {_cpu_model()}"
        f"{os.cpu_count()} CPUs (cores as the OS sees them), {_mem_gib()} GiB RAM",
        method,
    ]
    lines += [f"- Note: {n}" for n in run_notes]
    ratio_vs = [b for b in ("ray", "dask") if b in results and gs is not None]
    if ratio_vs:
        lines.append("- Ratios are graphstore ÷ other. For rates higher is better, so a "
                     "ratio > 1 means graphstore is faster; for times (startup, get) "
                     "lower is better, so a ratio < 1 means graphstore is faster.")
    if "objects" in suites:
        lines.append("- GB/s means 10^9 bytes per second; the large object is 200 MB "
                     "(2×10^8 bytes, 25,000,000 float64s). N/A: the backend has no "
                     "equivalent here.")
    if "spill" in suites:
        lines.append("- Spill suite: 2 GiB = 32 objects of 64 MiB (2^31 bytes) through "
                     "a 512 MiB store, to a directory under "
                     f"{SPILL_PARENT} on the same disk as the plain reference file; "
                     "GB/s means 10^9 bytes per second; GB means 10^9 bytes.")
    suite_list = ",".join(suites) if set(suites) != set(SUITES) else "all"
    lines += [f"- Generated by `python benchmarks/core.py --suite {suite_list} "
              f"--repeat {repeat}`.", ""]
    for suite in SUITES:
        if suite in suites:
            lines += [f"## {SUITE_TITLES[suite]}", ""]
            lines += render_table(results, suite_metrics(suite)) + [""]
            if suite in SUITE_TARGETS:
                issue, targets = SUITE_TARGETS[suite]
                lines += [f"## Targets ({issue}, \"Figures\")", ""]
                lines += render_targets(results, targets) + [""]

    notes = [f"- **{BACKEND_LABELS[b]}**"
             + (f" {results[b].status}" if results[b].status != "ok" else "")
             + f": {n}"
             for b in shown for n in results[b].notes]
    if notes:
        lines += ["## Notes", ""] + notes + [""]

    lines += ["## Workloads", ""]
    if "core" in suites:
        lines.append(
            "- **startup**: from the `init()` call (Ray: `ray.init(num_cpus=cpu_count, "
            "object_store_memory=2 GiB, include_dashboard=False)`; Dask: "
            "`LocalCluster(n_workers=cpu_count, threads_per_worker=1, processes=True)` "
            "+ `Client`) to the first result of a trivial remote task, as the first "
            "thing a fresh process does.")
    lines += [f"- **{w.name}**: {w.description}" for w in WORKLOADS if w.suite in suites]

    lines += ["", "<details><summary>All samples</summary>", "", "```"]
    for b in shown:
        for key, values in results[b].samples.items():
            lines.append(f"{b:<10} {key:<32} " + "  ".join(f"{v:.4g}" for v in values))
    lines += ["```", "", "</details>", ""]
    return "\n".join(lines)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip() + ", "
    except OSError:
        pass
    return ""


def _mem_gib() -> str:
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        return f"{pages / 2**30:.0f}"
    except (ValueError, OSError, AttributeError):
        return "?"
