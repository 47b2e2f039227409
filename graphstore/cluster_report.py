"""The text ``graphstore status`` and ``graphstore memory`` print, in the spirit of
``ray status`` and ``ray memory``.

``format_cluster_status`` formats the scheduler's answer to ``GetClusterOverview`` (the
status page's overview and workers table): workers, resources, tasks by state and object
store use. ``format_memory_summary`` formats ``memory_summary()``: each store's use and
every object by size, where it lives and who refers to it.
"""
from __future__ import annotations

import time

from graphstore.core.formatting import format_bytes


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
    lines.append(f"  {objects['count']:,} live objects, {format_bytes(objects['bytes'])}: "
                 f"{format_bytes(objects['stored_bytes'])} in stores, "
                 f"{format_bytes(objects['inline_bytes'])} inline, "
                 f"{format_bytes(objects['spilled_bytes'])} spilled")
    capacity = store["capacity"]
    share = f" ({100 * store['used'] / capacity:.1f}%)" if capacity else ""
    lines.append(f"  stores: {format_bytes(store['used'])} / {format_bytes(capacity)} used"
                 f"{share} across {len(workers)} worker(s); "
                 f"{format_bytes(store['spilled_bytes_total'])} spilled and "
                 f"{format_bytes(store['restored_bytes_total'])} restored since they started")

    lines += ["", "Workers", rule]
    if not workers:
        lines.append("  (no workers)")
    else:
        lines.append(f"  {'PID':>7}  {'NODE':<24} {'CPUS':>5} {'RUNNING':>7} {'QUEUED':>6}  "
                     f"{'STORE USED / CAPACITY':<26} {'SPILLED':>10}  HEARTBEAT")
        now = time.time()
        for w in workers:
            store_text = f"{format_bytes(w['store_used'])} / {format_bytes(w['store_capacity'])}"
            beat = (f"{now - w['last_heartbeat']:.1f}s ago" if w.get("last_heartbeat")
                    else "none yet")
            lines.append(f"  {w['pid']:>7}  {w['node'][:24]:<24} {_amount(w['num_cpus']):>5} "
                         f"{w['running']:>7} {w['queued']:>6}  {store_text:<26} "
                         f"{format_bytes(w['spilled_bytes']):>10}  {beat}")
    return "\n".join(lines)


def format_memory_summary(summary: dict) -> str:
    """Human-readable text of ``memory_summary()``."""
    lines = ["--- object stores ---"]
    for store in summary["stores"]:
        if "capacity" not in store:
            lines.append(f"worker pid={store['pid']} node={store['node']}: "
                         f"{store.get('error', 'no answer')}")
            continue
        used, cap = store["used"], store["capacity"]
        lines.append(f"worker pid={store['pid']} node={store['node']}: "
                     f"{format_bytes(used)} / {format_bytes(cap)} used ({100 * used / cap:.1f}%), "
                     f"{store['objects']} objects, {store['pinned']} pinned, "
                     f"{format_bytes(store['pooled'])} kept for reuse")
        if "arenas" in store:
            lines.append(
                f"    arenas: {format_bytes(store['arena_allocated'])} allocated of "
                f"{format_bytes(store['arena_bytes'])} in {store['arenas']} arena(s) "
                f"(largest free block {format_bytes(store['arena_largest_free'])}); "
                f"{format_bytes(store['dedicated_bytes'])} in dedicated segments"
                + (f"; {store['held']} freed object(s) still viewed "
                   f"({format_bytes(store['held_bytes'])})" if store.get("held") else ""))
        if store.get("spilled_objects") or store.get("restored_objects") or \
                store.get("last_spill_error"):
            lines.append(
                f"    spilled {format_bytes(store['spilled_bytes'])} in {store['spilled_objects']} "
                f"objects at {format_bytes(store['spill_throughput'])}/s, restored "
                f"{format_bytes(store['restored_bytes'])} in {store['restored_objects']} objects "
                f"at {format_bytes(store['restore_throughput'])}/s to/from {store['spill_url']}"
                + (f"; last error: {store['last_spill_error']}"
                   if store.get("last_spill_error") else ""))
    lines.append(f"--- objects ({summary['total_objects']} total; "
                 f"{format_bytes(summary['stored_bytes'])} in stores, "
                 f"{format_bytes(summary['inline_bytes'])} inline, "
                 f"{format_bytes(summary.get('spilled_bytes', 0))} spilled) ---")
    lines.append(f"{'object id':34} {'size':>12} {'state':8} where / referenced by")
    for obj in summary["objects"]:
        where = obj["where"] if isinstance(obj["where"], str) else ", ".join(obj["where"])
        refs = ", ".join(obj["holders"]) or "-"
        extra = []
        if obj["pending_tasks"]:
            extra.append(f"{obj['pending_tasks']} pending task(s)")
        if obj["contained_in"]:
            extra.append(f"inside {obj['contained_in']} object(s)")
        if obj["pinned_by"]:
            extra.append(f"mapped by {obj['pinned_by']} process(es)")
        lines.append(f"{obj['object_id']:34} {format_bytes(obj['size']):>12} {obj['state']:8} "
                     f"{where} / {refs}" + (f" ({'; '.join(extra)})" if extra else ""))
    return "\n".join(lines)
