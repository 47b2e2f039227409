"""``put``, ``get`` and ``wait``: moving objects in and out of the object store."""
from __future__ import annotations

from typing import Any, Sequence

from graphstore import _state
from graphstore.object_ref import ObjectRef


def put(value: Any) -> ObjectRef:
    """Store ``value`` in the object store and return a ref to it.

    The object is immutable from now on: later changes to ``value`` do not reach it.
    """
    return _state.runtime_or_auto_init().put(value)


def get(refs, *, timeout: float | None = None):
    """The value of a ref, or a list of values for a list of refs (in order).

    Raises the task's error (a ``TaskError`` that is also an instance of the original
    exception class) and ``GetTimeoutError`` after ``timeout`` seconds.
    """
    return _state.runtime_or_auto_init().get(refs, timeout)


def wait(refs: Sequence[ObjectRef], *, num_returns: int = 1, timeout: float | None = None,
         fetch_local: bool = True) -> tuple[list[ObjectRef], list[ObjectRef]]:
    """Wait until ``num_returns`` of ``refs`` are ready or ``timeout`` passes.

    Returns ``(ready, not_ready)``, each in the order of ``refs``.
    """
    return _state.runtime_or_auto_init().wait(refs, num_returns, timeout, fetch_local)


def cluster_status() -> dict:
    """The scheduler's summary: workers, nodes, resources, tasks by state, objects."""
    from graphstore import protocol as msg
    return _state.get_runtime().request(msg.GetStatus())


def cluster_resources() -> dict:
    """Total resources of the workers in the cluster, e.g. ``{"CPU": 8.0}``."""
    return cluster_status()["resources"]


def memory_summary() -> dict:
    """Objects by size (where they are, who refers to them) and each store's use, in the
    spirit of ``ray memory``."""
    from graphstore import protocol as msg
    return _state.get_runtime().request(msg.GetMemorySummary())


def list_tasks(limit: int = 1000) -> list[dict]:
    """Recent task records: name, state, times, placement (worker, node, bytes fetched)."""
    from graphstore import protocol as msg
    return _state.get_runtime().request(msg.GetTaskRecords(limit))


def format_memory_summary(summary: dict) -> str:
    """Human-readable text of ``memory_summary()``."""
    def size(n) -> str:
        for unit in ("B", "KiB", "MiB", "GiB"):
            if abs(n) < 1024 or unit == "GiB":
                return f"{n:,.1f} {unit}" if unit != "B" else f"{n} B"
            n /= 1024
        return str(n)

    lines = ["--- object stores ---"]
    for store in summary["stores"]:
        if "capacity" not in store:
            lines.append(f"worker pid={store['pid']} node={store['node']}: "
                         f"{store.get('error', 'no answer')}")
            continue
        used, cap = store["used"], store["capacity"]
        lines.append(f"worker pid={store['pid']} node={store['node']}: "
                     f"{size(used)} / {size(cap)} used ({100 * used / cap:.1f}%), "
                     f"{store['objects']} objects, {store['pinned']} pinned, "
                     f"{size(store['pooled'])} kept for reuse")
        if store.get("spilled_objects") or store.get("restored_objects") or \
                store.get("last_spill_error"):
            lines.append(
                f"    spilled {size(store['spilled_bytes'])} in {store['spilled_objects']} "
                f"objects at {size(store['spill_throughput'])}/s, restored "
                f"{size(store['restored_bytes'])} in {store['restored_objects']} objects "
                f"at {size(store['restore_throughput'])}/s to/from {store['spill_url']}"
                + (f"; last error: {store['last_spill_error']}"
                   if store.get("last_spill_error") else ""))
    lines.append(f"--- objects ({summary['total_objects']} total; "
                 f"{size(summary['stored_bytes'])} in stores, "
                 f"{size(summary['inline_bytes'])} inline, "
                 f"{size(summary.get('spilled_bytes', 0))} spilled) ---")
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
        lines.append(f"{obj['object_id']:34} {size(obj['size']):>12} {obj['state']:8} "
                     f"{where} / {refs}" + (f" ({'; '.join(extra)})" if extra else ""))
    return "\n".join(lines)


def cancel(ref: ObjectRef, *, force: bool = False, recursive: bool = True) -> None:
    """Cancel the task or actor call producing ``ref``. Not started: it never runs.
    Running: ``TaskCancelledError`` is raised inside it (``force=True`` ends the worker
    process running a task; actor calls are always interrupted in place). ``recursive``: tasks it
    submitted are cancelled too. ``get(ref)`` then raises ``TaskCancelledError``."""
    _state.runtime_or_auto_init().cancel(ref, force, recursive)
