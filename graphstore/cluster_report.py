"""The text ``graphstore status`` prints, in the spirit of ``ray status``.

It formats the scheduler's answer to ``GetClusterOverview`` (the status page's overview
and workers table): workers, resources, tasks by state and object store use.
"""
from __future__ import annotations

import time


def _size(n) -> str:
    n = float(n or 0)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{int(n)} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"


def _amount(x: float) -> str:
    return f"{x:.1f}" if x == int(x) else f"{x:g}"


def format_cluster_status(report: dict) -> str:
    overview, workers = report["overview"], report["workers"]
    scheduler = overview["scheduler"]
    rule = "-" * 72
    lines = [f"======== graphstore status: {scheduler['address']} ========"]
    lines.append(f"Status page: {scheduler.get('dashboard_url') or 'disabled'}")
    lines.append(f"Up {_duration(scheduler['uptime'])}; {overview['nodes']} node(s), "
                 f"{overview['workers']} worker(s), {overview['drivers']} driver(s)")

    lines += ["", "Resources", rule, " Usage:"]
    total, used = overview["resources"]["total"], overview["resources"]["used"]
    names = sorted((n for n in total if not n.startswith("node:")),
                   key=lambda n: (n != "CPU", n))
    for name in names:
        lines.append(f"  {_amount(used.get(name, 0.0))}/{_amount(total[name])} {name}")

    tasks = overview["tasks"]
    by_state = tasks["by_state"]
    lines += ["", "Tasks", rule]
    lines.append("  " + "   ".join(
        f"{label} {by_state.get(state, 0):,}" for state, label in
        (("waiting", "waiting"), ("queued", "queued"), ("assigned", "running"),
         ("done", "done"), ("failed", "failed"))))
    lines.append(f"  ({tasks['submitted']:,} submitted, {tasks['retried']:,} retried since "
                 f"the scheduler started)")

    objects, store = overview["objects"], overview["store"]
    lines += ["", "Object store", rule]
    lines.append(f"  {objects['count']:,} live objects, {_size(objects['bytes'])}: "
                 f"{_size(objects['stored_bytes'])} in stores, "
                 f"{_size(objects['inline_bytes'])} inline, "
                 f"{_size(objects['spilled_bytes'])} spilled")
    capacity = store["capacity"]
    share = f" ({100 * store['used'] / capacity:.1f}%)" if capacity else ""
    lines.append(f"  stores: {_size(store['used'])} / {_size(capacity)} used{share} across "
                 f"{len(workers)} worker(s); {_size(store['spilled_bytes_total'])} spilled "
                 f"and {_size(store['restored_bytes_total'])} restored since they started")

    lines += ["", "Workers", rule]
    if not workers:
        lines.append("  (no workers)")
    else:
        lines.append(f"  {'PID':>7}  {'NODE':<24} {'CPUS':>5} {'RUNNING':>7} {'QUEUED':>6}  "
                     f"{'STORE USED / CAPACITY':<26} {'SPILLED':>10}  HEARTBEAT")
        now = time.time()
        for w in workers:
            store_text = f"{_size(w['store_used'])} / {_size(w['store_capacity'])}"
            beat = (f"{now - w['last_heartbeat']:.1f}s ago" if w.get("last_heartbeat")
                    else "none yet")
            lines.append(f"  {w['pid']:>7}  {w['node'][:24]:<24} {_amount(w['num_cpus']):>5} "
                         f"{w['running']:>7} {w['queued']:>6}  {store_text:<26} "
                         f"{_size(w['spilled_bytes']):>10}  {beat}")
    return "\n".join(lines)
