"""What ``graphstore list`` and ``graphstore logs`` ask the scheduler, answered from its
state: rows of tasks, actors, objects or workers filtered by state and name, and which
process (a worker, or an actor's process) a ``graphstore logs WORKER`` argument names.

Pure functions over ``SchedulerState``, no I/O. Filters run here, newest first, and stop
at ``limit`` rows (or after ``MAX_SCAN`` entries), so a reply never grows with the
cluster's history. A kind, state or process the scheduler does not know is answered with
an error record naming the choices (``{"error": {"text", "choices"}}``), never an
exception: it is the user's typo, not the scheduler's failure.
"""
from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, NamedTuple

from graphstore.scheduler.entities import (ALIVE, DEAD, PENDING_PLACEMENT, RESTARTING,
                                           STARTING)
from graphstore.scheduler.graph import describe_where
from graphstore.scheduler.status import OBJECT_STATES, TASK_STATES, task_row

if TYPE_CHECKING:
    from graphstore.scheduler.entities import WorkerState
    from graphstore.scheduler.state import SchedulerState

#: The states each kind can be filtered by. Only connected workers are known: "alive".
STATES = {
    "tasks": TASK_STATES,
    "actors": (PENDING_PLACEMENT, STARTING, ALIVE, RESTARTING, DEAD),
    "objects": OBJECT_STATES,
    "workers": ("alive",),
}
#: The most rows one request may ask for, and the most entries it reads to fill them.
MAX_LIMIT = 10_000
MAX_SCAN = 100_000


def error(text: str, choices) -> dict:
    return {"error": {"text": text, "choices": list(choices)}}


def list_state(state: "SchedulerState", kind: str, only: str | None, name: str | None,
               limit: int) -> dict:
    """The newest ``limit`` rows of ``kind`` in state ``only`` named ``name`` (None: any).

    Returns ``{"kind", "rows", "truncated"}`` (``truncated``: more rows matched), or an
    error record for an unknown kind or state or a limit out of range."""
    if kind not in STATES:
        return error(f"unknown kind {kind!r}: choose one of {', '.join(STATES)}", STATES)
    if only is not None and only not in STATES[kind]:
        return error(f"{kind} have no state {only!r}: valid states are "
                     f"{', '.join(STATES[kind])}", STATES[kind])
    if not 1 <= limit <= MAX_LIMIT:
        return error(f"limit must be from 1 to {MAX_LIMIT}, got {limit}", ())
    rows_of = {"tasks": _task_rows, "actors": _actor_rows, "objects": _object_rows,
               "workers": _worker_rows}[kind]
    rows = list(itertools.islice(
        (row for row in rows_of(state)
         if (only is None or row["state"] == only) and (name is None or _named(row, name))),
        limit + 1))
    return {"kind": kind, "rows": rows[:limit], "truncated": len(rows) > limit}


def _named(row: dict, name: str) -> bool:
    return name in (row.get("name"), row.get("class_name"))


def _task_rows(state: "SchedulerState"):
    """Tasks and actor calls, newest submitted first."""
    for task in itertools.islice(state.graph.tasks_newest_first(), MAX_SCAN):
        row = task_row(task)
        actor = (task.placement or {}).get("actor")
        row["type"] = "actor_call" if actor is not None else "task"
        if actor is not None:
            row["actor"] = actor
        yield row


def _actor_rows(state: "SchedulerState"):
    records = state.actor_records()
    for record in reversed(records[-MAX_SCAN:]):
        record = dict(record)
        record["id"] = record.pop("actor_id")
        yield record


def _object_rows(state: "SchedulerState"):
    """Live objects, newest first."""
    workers = state.workers
    for obj in itertools.islice(reversed(state.objects.values()), MAX_SCAN):
        producer = obj.producer
        yield {"id": obj.id.hex(), "state": obj.state, "size": obj.size,
               "name": producer.name if producer is not None else None,
               "where": describe_where(obj, workers), "spilled": obj.spill is not None,
               "holders": len(obj.holders), "pending_tasks": obj.task_refs,
               "created_at": obj.created_at}


def _worker_rows(state: "SchedulerState"):
    for worker in reversed(list(state.workers.values())[-MAX_SCAN:]):
        yield worker_row(worker)


def worker_row(worker: "WorkerState") -> dict:
    metrics = worker.metrics
    return {"id": worker.id.hex(), "state": "alive", "name": worker.hostname,
            "pid": worker.pid, "node": worker.node.id, "address": worker.address,
            "labels": dict(worker.labels),
            "num_cpus": worker.num_cpus, "running": worker.running,
            "store_used": metrics.get("store_used", worker.stored_bytes),
            "store_capacity": worker.store_capacity,
            "registered_at": worker.registered_at, "log_file": metrics.get("log_file")}


class LogSource(NamedTuple):
    """A process whose log ``graphstore logs`` can show: a worker's own (``pid`` 0 in
    ``ReadLog``) or an actor process's, read by the worker that started it."""
    kind: str                 # "worker" or "actor"
    id: bytes
    pid: int
    worker: "WorkerState"

    def describe(self) -> str:
        return f"{self.kind} {self.id.hex()[:12]} (pid {self.pid} on {self.worker.hostname})"


def log_sources(state: "SchedulerState") -> list[LogSource]:
    """Workers, and actors whose process runs (their worker hosts their log file)."""
    sources = [LogSource("worker", w.id, w.pid, w) for w in state.workers.values()]
    for actor in state.actors.values():
        worker = actor.worker
        if worker is not None and actor.pid and worker.id in state.workers \
                and actor.state != DEAD:
            sources.append(LogSource("actor", actor.id, actor.pid, worker))
    return sources


def find_log_source(state: "SchedulerState", text: str) -> "LogSource | dict":
    """The worker or actor ``text`` names: its id, a prefix of its id, or its process's
    pid. An error record listing the choices if none or several match."""
    sources = log_sources(state)
    text = text.strip().lower()
    matches = []
    if text.isdigit():
        matches = [s for s in sources if s.pid == int(text)]
    if not matches and text:
        matches = [s for s in sources if s.id.hex().startswith(text)]
    if len(matches) == 1:
        return matches[0]
    if matches:
        what = f"{text!r} names {len(matches)} processes: give more of the id"
        shown = matches
    else:
        what = f"no worker or actor {text!r}: give a worker's or an actor's id (or its " \
               f"first characters), its pid, or 'scheduler'"
        shown = sources
    return error(what, ["scheduler"] + [s.describe() for s in shown])
