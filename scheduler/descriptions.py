"""One thing at a time, described: the cluster, an object, an actor (notebook reprs).

Pure functions over ``SchedulerState``, no I/O. Unlike the status views (``status.py``),
none of them scans the live objects or tasks: describing the cluster costs O(workers +
nodes), an object or an actor O(its copies), so a notebook may ask each time it draws
one. Answers are plain dicts of plain values, ready for msgpack.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from graphstore.scheduler.graph import FREED
from graphstore.scheduler.status import last_line, store_totals

if TYPE_CHECKING:
    from graphstore.scheduler.state import SchedulerState


def describe_cluster(state: "SchedulerState", *, address: str = "",
                     dashboard_url: str | None = None) -> dict:
    """Workers, nodes, resources (total and in use), store use and task counts."""
    return {
        "address": address, "dashboard_url": dashboard_url,
        "workers": len(state.workers), "nodes": len(state.nodes),
        "drivers": len(state.drivers),
        "resources": {"total": state.cluster_resources(),
                      "used": state.cluster_resources(used=True)},
        "store": store_totals(state),
        "objects": len(state.objects),
        "tasks": {"live": len(state.tasks), "done": state.counts["done"],
                  "failed": state.counts["failed"]},
    }


def _stores(location_ids, workers) -> list[dict]:
    rows = []
    for worker_id in location_ids:
        worker = workers.get(worker_id)
        if worker is not None:
            rows.append({"worker": worker.id.hex(), "pid": worker.pid,
                         "node": worker.node.id, "address": worker.address})
    return rows


def describe_object(state: "SchedulerState", object_id: bytes) -> dict:
    """An object's state (pending, ready, error; freed if the graph still remembers it;
    else unknown), its size, where its value is and the task that made it."""
    obj = state.objects.get(object_id)
    if obj is None:
        record = state.graph.freed_record(object_id)
        if record is not None:
            return {"id": object_id.hex(), "state": FREED, "size": record.size,
                    "inline": False, "stores": [], "spilled": None,
                    "producer": None, "producer_state": None, "error": None}
        return {"id": object_id.hex(), "state": "unknown"}
    producer = obj.producer
    error = None
    if obj.state == "error" and producer is not None:
        error = last_line(getattr(producer, "error_text", None))
    return {
        "id": object_id.hex(), "state": obj.state, "size": obj.size,
        "inline": obj.payload is not None,
        "stores": _stores(obj.locations, state.workers),
        "spilled": obj.spill[0] if obj.spill is not None else None,
        "producer": getattr(producer, "name", None),
        "producer_state": getattr(producer, "state", None),
        "error": error,
    }


def describe_actor(state: "SchedulerState", actor_id: bytes) -> dict:
    """An actor's class, name, state, restarts and the process it runs in."""
    actor = state.actors.get(actor_id)
    if actor is None:
        return {"id": actor_id.hex(), "state": "unknown"}
    worker = actor.worker
    return {
        "id": actor_id.hex(), "state": actor.state, "class_name": actor.class_name,
        "name": actor.name, "namespace": actor.namespace, "detached": actor.detached,
        "worker": worker.id.hex() if worker is not None else None,
        "node": worker.node.id if worker is not None else None,
        "pid": actor.pid or None, "address": actor.address or None,
        "restarts": actor.restarts, "max_restarts": actor.max_restarts,
        "pending_calls": len(actor.calls),
    }
