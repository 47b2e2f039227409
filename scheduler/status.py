"""What the status page and ``graphstore status`` show, built from the scheduler's state.

Pure functions and one accumulator, no I/O: each view reads ``SchedulerState`` (and a
``LiveScan`` of its live objects and tasks) and returns plain dicts ready for JSON or
msgpack (``prometheus.py`` turns the same state into metrics). Every list is capped by a
``limit`` the caller checked, and every long text is cut, so no response grows with the
cluster's history.

Scanning every live object is the only part that grows with the cluster; ``LiveScan``
takes items in slices so the caller can let the event loop run between them (see
``scheduler/snapshots.py``).
"""
from __future__ import annotations

import heapq
import itertools
import time
from typing import TYPE_CHECKING, Iterable

from graphstore.scheduler.graph import describe_where

if TYPE_CHECKING:
    from graphstore.scheduler.entities import ObjectState, TaskState
    from graphstore.scheduler.state import SchedulerState

#: Task states in the order they are shown.
TASK_STATES = ("waiting", "queued", "assigned", "done", "failed")
#: Object states of live objects.
OBJECT_STATES = ("pending", "ready", "error")
#: The longest error text a row carries (tracebacks are cut at the start, keeping the end).
MAX_ERROR_CHARS = 8000
#: The most objects a scan remembers as "largest" (the objects view's maximum limit).
MAX_LARGEST = 1000
#: The most task entries the tasks view reads to fill a filtered page.
MAX_TASK_SCAN = 50_000


def cut(text: str | None, limit: int) -> str | None:
    """``text`` cut to ``limit`` characters, keeping the end (a traceback's last line)."""
    if text is None or len(text) <= limit:
        return text
    return "…" + text[-(limit - 1):]


def last_line(text: str | None) -> str | None:
    if not text:
        return text
    lines = text.strip().splitlines()
    return lines[-1][:300] if lines else ""


class LiveScan:
    """Totals over live objects and tasks, and the largest objects, fed in slices."""

    def __init__(self, largest: int = MAX_LARGEST):
        self.largest = largest
        self.objects = 0
        self.object_states = dict.fromkeys(OBJECT_STATES, 0)
        self.object_bytes = 0
        self.inline_bytes = 0
        self.stored_bytes = 0
        self.spilled_bytes = 0
        self.spilled_objects = 0
        self.task_states = dict.fromkeys(TASK_STATES[:3], 0)
        self._heap: list[tuple[int, int, "ObjectState"]] = []
        self._tie = itertools.count()
        self.finished_at = 0.0

    def add_objects(self, objects: Iterable["ObjectState"]) -> None:
        heap, largest, tie = self._heap, self.largest, self._tie
        states = self.object_states
        for obj in objects:
            size = obj.size
            self.objects += 1
            states[obj.state] = states.get(obj.state, 0) + 1
            self.object_bytes += size
            if obj.payload is not None:
                self.inline_bytes += size
            if obj.locations:
                self.stored_bytes += size
            if obj.spill is not None:
                self.spilled_objects += 1
                self.spilled_bytes += size
            if len(heap) < largest:
                heapq.heappush(heap, (size, next(tie), obj))
            elif size > heap[0][0]:
                heapq.heapreplace(heap, (size, next(tie), obj))

    def add_tasks(self, tasks: Iterable["TaskState"]) -> None:
        states = self.task_states
        for task in tasks:
            states[task.state] = states.get(task.state, 0) + 1

    def largest_objects(self, limit: int) -> list["ObjectState"]:
        return [obj for _, _, obj in heapq.nlargest(limit, self._heap)]


# -- views --------------------------------------------------------------------------------

def store_totals(state: "SchedulerState") -> dict:
    """Store use summed over the workers, from their latest heartbeats: O(workers)."""
    used = capacity = objects = spilled = restored = 0
    for worker in state.workers.values():
        metrics = worker.metrics
        used += metrics.get("store_used", worker.stored_bytes)
        capacity += worker.store_capacity
        objects += metrics.get("store_objects", len(worker.objects))
        spilled += metrics.get("spilled_bytes", 0)
        restored += metrics.get("restored_bytes", 0)
    return {"used": used, "capacity": capacity, "objects": objects,
            "spilled_bytes_total": spilled, "restored_bytes_total": restored}


def overview(state: "SchedulerState", scan: LiveScan, *, address: str = "",
             dashboard_url: str | None = None) -> dict:
    """Workers, CPUs, tasks by state, objects, store use and spilled bytes."""
    now = time.time()
    by_state = dict(scan.task_states)
    by_state["done"] = state.counts["done"]
    by_state["failed"] = state.counts["failed"]
    total = state.cluster_resources()
    return {
        "scheduler": {"address": address, "dashboard_url": dashboard_url,
                      "started_at": state.started_at, "uptime": now - state.started_at},
        "workers": len(state.workers), "nodes": len(state.nodes),
        "drivers": len(state.drivers),
        "resources": {"total": total, "used": state.cluster_resources(used=True)},
        "tasks": {"by_state": by_state, "submitted": state.counts["submitted"],
                  "retried": state.counts["retried"], "live": sum(scan.task_states.values())},
        "objects": {"count": scan.objects, "by_state": dict(scan.object_states),
                    "bytes": scan.object_bytes, "inline_bytes": scan.inline_bytes,
                    "stored_bytes": scan.stored_bytes, "spilled_bytes": scan.spilled_bytes,
                    "spilled_objects": scan.spilled_objects},
        "store": store_totals(state),
        "graph": {"nodes": len(state.graph), "max_finished": state.graph.max_finished},
        "generated_at": now,
    }


def workers(state: "SchedulerState", limit: int) -> dict:
    """One row per worker: resources, tasks, store bars, spilling, last heartbeat."""
    now = time.time()
    rows = []
    for worker in itertools.islice(state.workers.values(), limit):
        metrics = worker.metrics
        rows.append({
            "id": worker.id.hex(), "pid": worker.pid, "hostname": worker.hostname,
            "node": worker.node.id, "address": worker.address,
            "labels": dict(worker.labels),
            "num_cpus": worker.num_cpus, "resources": dict(worker.resources),
            "slots": worker.slots, "running": worker.running,
            "queued": worker.queued_beyond_slots(), "blocked": worker.blocked,
            "store_capacity": worker.store_capacity,
            "store_used": metrics.get("store_used", worker.stored_bytes),
            "store_pooled": metrics.get("store_pooled", 0),
            "store_arena_bytes": metrics.get("store_arena_bytes", 0),
            "store_arena_allocated": metrics.get("store_arena_allocated", 0),
            "store_objects": metrics.get("store_objects", len(worker.objects)),
            "spilled_bytes": metrics.get("spilled_bytes", 0),
            "spilled_objects": metrics.get("spilled_objects", 0),
            "restored_bytes": metrics.get("restored_bytes", 0),
            "last_spill_error": cut(metrics.get("last_spill_error"), 500),
            "rss": metrics.get("rss"),
            "registered_at": worker.registered_at,
            "last_heartbeat": worker.last_heartbeat or None,
            "heartbeat_age": now - worker.last_heartbeat if worker.last_heartbeat else None,
        })
    return {"workers": rows, "total": len(state.workers), "generated_at": now}


def task_row(item: "TaskState") -> dict:
    """A task of the graph as a row."""
    placement = item.placement or {}
    worker, node, pid = placement.get("worker"), placement.get("node"), placement.get("pid")
    error = item.error_text
    started, finished = item.started_at or None, item.finished_at or None
    return {"id": item.id.hex(), "name": item.name, "state": item.state, "worker": worker,
            "node": node, "pid": pid, "submitted_at": item.submitted_at,
            "started_at": started, "finished_at": finished,
            "duration": (finished - started) if started and finished else None,
            "error": last_line(error)}


def tasks(state: "SchedulerState", scan: LiveScan, limit: int, only: str | None,
          failures: int) -> dict:
    """The newest tasks (newest first), optionally of one state, and the newest failures
    with their tracebacks."""
    rows = []
    failed = []
    for count, item in enumerate(state.graph.tasks_newest_first()):
        if count >= MAX_TASK_SCAN or (len(rows) >= limit and len(failed) >= failures):
            break
        if len(rows) < limit and (only is None or item.state == only):
            rows.append(task_row(item))
        if len(failed) < failures and item.state == "failed":
            row = task_row(item)
            row["traceback"] = cut(item.error_text, MAX_ERROR_CHARS)
            failed.append(row)
    by_state = dict(scan.task_states)
    by_state["done"] = state.counts["done"]
    by_state["failed"] = state.counts["failed"]
    return {"tasks": rows, "failures": failed, "by_state": by_state, "state": only,
            "limit": limit, "generated_at": time.time()}


def objects(state: "SchedulerState", scan: LiveScan, limit: int) -> dict:
    """The largest live objects, where they are and whether they spilled."""
    rows = []
    for obj in scan.largest_objects(limit):
        producer = obj.producer
        rows.append({
            "id": obj.id.hex(), "size": obj.size, "state": obj.state,
            "where": describe_where(obj, state.workers),
            "spilled": obj.spill is not None, "inline": obj.payload is not None,
            "producer": producer.name if producer is not None else None,
            "holders": len(obj.holders), "pending_tasks": obj.task_refs,
            "contained_in": obj.container_refs,
            "created_at": obj.created_at,
        })
    return {"objects": rows, "count": scan.objects, "bytes": scan.object_bytes,
            "spilled_bytes": scan.spilled_bytes, "spilled_objects": scan.spilled_objects,
            "limit": limit, "generated_at": time.time()}


def actors(state: "SchedulerState", limit: int) -> dict:
    records = state.actor_records()
    return {"actors": records[:limit], "total": len(records), "generated_at": time.time()}
