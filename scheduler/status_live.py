"""The status page's live views: progress by function, workers' load, the task stream.

Pure functions from the scheduler's state to plain dicts ready for JSON, as in
``status.py``; each reads what the scheduler already keeps up to date (``TaskProgress``
counts, ``WorkerLoadHistory`` rings, the ``TaskStream``), never every task, and each
answer is bounded by a ``limit`` the caller checked.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from graphstore.scheduler.state import SchedulerState

#: What the task stream view says when the scheduler keeps no task stream.
NO_STREAM_NOTE = "this scheduler keeps no task stream (its workers record no profile events)"


def progress(state: "SchedulerState", limit: int) -> dict:
    """One row per task name: waiting, queued, running (``assigned``), done, failed."""
    rows = state.progress.rows(limit)
    return {"functions": rows, "names": len(state.progress), "limit": limit,
            "generated_at": time.time()}


def worker_label(worker) -> dict:
    return {"id": worker.id.hex()[:12], "pid": worker.pid, "hostname": worker.hostname,
            "node": worker.node.id, "num_cpus": worker.num_cpus,
            "store_capacity": worker.store_capacity}


def worker_load(state: "SchedulerState", limit: int, seconds: int) -> dict:
    """Each worker's samples of the last ``seconds``, as columns (times in seconds
    before ``now``)."""
    now = time.time()
    rows = []
    history = state.worker_load
    for worker in list(state.workers.values())[:limit]:
        samples = history.samples(worker.id, since=now - seconds)
        row = worker_label(worker)
        row["samples"] = {
            "age": [round(now - s.time, 2) for s in samples],
            "cpu": [None if s.cpu is None else round(s.cpu, 3) for s in samples],
            "memory": [s.memory for s in samples],
            "store_used": [s.store_used for s in samples],
        }
        rows.append(row)
    return {"workers": rows, "total": len(state.workers), "seconds": seconds,
            "interval": history.interval, "window": history.seconds, "now": now}


def task_stream(state: "SchedulerState", since: int, limit: int) -> dict:
    """Profile events recorded after sequence number ``since``, oldest first: the newest
    ``limit`` of them (``truncated`` says when older new ones were left out). ``seq`` is
    the number to pass as ``since`` next time; a ``seq`` lower than the ``since`` sent
    means the scheduler restarted and the caller should start again from 0."""
    stream = getattr(state, "task_stream", None)
    now = time.time()
    if stream is None:
        return {"entries": [], "seq": 0, "since": since, "truncated": False,
                "workers": {}, "now": now, "note": NO_STREAM_NOTE}
    entries = stream.since(since)
    truncated = len(entries) > limit
    if truncated:
        entries = entries[-limit:]
    workers = {}
    out = []
    for entry in entries:
        worker_id = entry.worker.hex()[:12]
        if worker_id not in workers:
            worker = state.workers.get(entry.worker)
            if worker is not None:
                workers[worker_id] = worker_label(worker)
            else:       # gone; the stream remembers what it was while it keeps its rows
                known = getattr(stream, "workers", {}).get(entry.worker) or {}
                workers[worker_id] = {"id": worker_id, "pid": known.get("pid"),
                                      "hostname": known.get("host"), "departed": True}
        event = entry.event
        out.append({"seq": entry.seq, "worker": worker_id, "pid": event.pid,
                    "kind": event.kind, "name": event.name[:200], "start": event.start,
                    "stop": event.stop, "nbytes": event.nbytes, "peer": event.peer[:200],
                    "task": event.task_id.hex() if event.task_id else None})
    return {"entries": out, "seq": stream.seq, "since": since, "truncated": truncated,
            "workers": workers, "now": now}
