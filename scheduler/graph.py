"""The scheduler's task graph: recent tasks and objects and the edges between them.

``TaskGraph`` is pure bookkeeping (no I/O, no networkx): the state machine tells it when a
task is submitted or finishes and when an object is created or freed, and it answers
snapshots in node-link form, which the client turns into a ``networkx.DiGraph`` and the
status page into a picture.

The graph copies nothing of what is live: it reads the state machine's own tables of live
tasks, actor calls and objects (``SchedulerState.tasks``, ``actor_calls``, ``objects``),
given to it once, and keeps only what left them: the last ``max_finished`` finished
tasks (their ``TaskState``; a finished task has already dropped its arguments) and as
many freed objects (a small ``ObjectRecord`` tuple of where each was). So a task costs
the graph nothing while it is queued or running, whatever the number of them, and memory
stays flat however long the cluster runs. Every entity carries ``seq``, its place in the
order of creation (``entities.next_seq``), by which snapshots pick the newest. The
finished tasks, in the order they finished, are also the scheduler's task records
(``list_tasks``).

Edges all follow the flow of data, each read "source <kind> target":

* ``argument_of``: object -> task (``nested`` is true for a ref passed inside an argument,
  which the task receives unresolved);
* ``produces``: task -> object it returns;
* ``contained_in``: object -> the object whose value holds a ref to it;
* ``next_call``: actor method call -> the next call submitted to the same actor.

So the ancestry of an object (what it was computed from) is its predecessors.
"""
from __future__ import annotations

import heapq
import itertools
import operator
import time
from collections import OrderedDict, deque
from typing import TYPE_CHECKING, Iterable, Iterator, NamedTuple

from graphstore.core.formatting import format_bytes

if TYPE_CHECKING:  # the state machine imports this module, not the other way round
    from graphstore.scheduler.entities import ObjectState, TaskState, WorkerState

#: Edge kinds.
ARGUMENT_OF, PRODUCES, CONTAINED_IN = "argument_of", "produces", "contained_in"
#: Between two calls of one actor, in the order they were submitted (method chains).
NEXT_CALL = "next_call"
#: The state of an object's record once it was freed.
FREED = "freed"


class ObjectRecord(NamedTuple):
    """The fields of what the graph keeps of a freed object (where it was: formatted when
    asked). The graph stores them as a plain tuple of plain values, cheap to make on the
    hot path and dropped by the garbage collector from its tracking, so ten thousand of
    them cost later collections nothing; ``ObjectRecord._make`` names them when read."""
    id: bytes
    size: int
    #: (pid, node id) of each store that held a copy.
    stores: tuple
    spill_path: str | None
    inline: bool
    producer: bytes | None
    contains: tuple
    created_at: float
    #: Its place in the order of creation (``ObjectState.seq``).
    seq: int

    def where(self) -> list[str]:
        return _where(self.stores, self.spill_path, self.inline)


def describe_where(obj: "ObjectState", workers: dict[bytes, "WorkerState"]) -> list[str]:
    """Where a live object's value is: store copies, the spill target, or inline."""
    stores = [(w.pid, w.node.id) for w in map(workers.get, obj.locations) if w is not None]
    return _where(stores, obj.spill[0] if obj.spill is not None else None,
                  obj.payload is not None)


def _where(stores, spill_path: str | None, inline: bool) -> list[str]:
    where = [f"store of pid {pid} on {node}" for pid, node in stores]
    if spill_path is not None:
        where.append(f"spilled to {spill_path}")
    if inline:
        where.append("inline (scheduler)")
    return where


class TaskGraph:
    """Recent tasks and objects, in the order they appeared: the live ones read from the
    state machine's tables, the finished and freed ones kept here, bounded."""

    def __init__(self, max_finished: int = 10_000, live_tasks: tuple[dict, ...] = (),
                 live_objects: dict | None = None):
        self.max_finished = max(0, int(max_finished))
        #: The state machine's tables of live tasks (id -> ``TaskState`` or
        #: ``ActorCallState``), read, never written here.
        self.live_tasks: tuple[dict, ...] = live_tasks or ({},)
        #: The state machine's table of live objects (id -> ``ObjectState``), read only.
        self.live_objects: dict = live_objects if live_objects is not None else {}
        #: Finished tasks and actor calls by id, oldest finished first (O(1) eviction
        #: of the oldest: a dict's first item costs a walk over its deleted slots).
        self.finished: OrderedDict[bytes, "TaskState"] = OrderedDict()
        #: Freed objects' record tuples (``ObjectRecord`` fields) by id, oldest first.
        self.freed: OrderedDict[bytes, tuple] = OrderedDict()

    # -- events from the state machine -------------------------------------------------
    def task_finished(self, task: "TaskState") -> None:
        """``task`` is done or failed (once) and left the live tables: keep it, forget the
        oldest finished task."""
        finished = self.finished
        finished[task.id] = task
        if len(finished) > self.max_finished:
            finished.popitem(last=False)

    def task_restarted(self, task: "TaskState") -> None:
        """A finished task runs again (for a lost result): it is live once more."""
        self.finished.pop(task.id, None)

    def object_freed(self, obj: "ObjectState", workers: dict[bytes, "WorkerState"]) -> None:
        """``obj`` is being freed, once (its copies not yet forgotten): keep a record of
        it, forget the oldest record."""
        locations, spill, producer = obj.locations, obj.spill, obj.producer
        stores = tuple((w.pid, w.node.id) for w in map(workers.get, locations)
                       if w is not None) if locations else ()
        freed = self.freed
        freed[obj.id] = (
            obj.id, obj.size, stores, spill[0] if spill is not None else None,
            obj.payload is not None, producer.id if producer is not None else None,
            tuple(obj.contains) if obj.contains else (), obj.created_at, obj.seq)
        if len(freed) > self.max_finished:
            freed.popitem(last=False)

    def object_revived(self, object_id: bytes) -> None:
        """A freed object is being computed again: it is live once more."""
        self.freed.pop(object_id, None)

    def __len__(self) -> int:
        return (sum(map(len, self.live_tasks)) + len(self.finished)
                + len(self.live_objects) + len(self.freed))

    # -- lookups -----------------------------------------------------------------------
    def task(self, task_id: bytes):
        """The ``TaskState`` (or actor call) of a task the graph holds, else None."""
        for table in self.live_tasks:
            task = table.get(task_id)
            if task is not None:
                return task
        return self.finished.get(task_id)

    def has_task(self, task_id: bytes) -> bool:
        return self.task(task_id) is not None

    def _object(self, object_id: bytes):
        """The live ``ObjectState`` or the freed ``ObjectRecord`` of an id, else None."""
        obj = self.live_objects.get(object_id)
        return obj if obj is not None else self.freed_record(object_id)

    def has_object(self, object_id: bytes) -> bool:
        return object_id in self.live_objects or object_id in self.freed

    def freed_record(self, object_id: bytes) -> ObjectRecord | None:
        """What the graph remembers of a freed object, else None."""
        record = self.freed.get(object_id)
        return ObjectRecord._make(record) if record is not None else None

    def producer_of(self, object_id: bytes) -> bytes | None:
        """The id of the task that made an object the graph holds (None: a put, or an
        object the graph does not hold)."""
        item = self._object(object_id)
        return _producer_id(item) if item is not None else None

    def tasks_newest_first(self) -> Iterator:
        """Every task and actor call the graph holds, newest submitted first: lazily, so
        reading the newest few costs few steps however many are live. (A live table
        is in the order its tasks last entered it; one retried sits with the newest.)"""
        seq = _SEQ
        finished = sorted(self.finished.values(), key=seq, reverse=True)
        return heapq.merge(*(reversed(table.values()) for table in self.live_tasks),
                           finished, key=seq, reverse=True)

    # -- snapshots ---------------------------------------------------------------------
    def snapshot(self, workers: dict[bytes, "WorkerState"], limit: int,
                 roots: Iterable[bytes] | None = None) -> dict:
        """The graph in node-link form: the ``limit`` most recent nodes, or, with
        ``roots`` (object ids), those objects and their ancestry (at most ``limit``
        nodes, nearest first). Edges join nodes of the snapshot only.

        Returns ``{"directed", "multigraph", "graph", "nodes", "edges"}`` where ``graph``
        says whether the snapshot was ``truncated`` and how many nodes the scheduler
        holds (``total_nodes``); JSON- and msgpack-ready.
        """
        limit = max(0, int(limit))
        missing: list[str] = []
        if roots is None:
            chosen, truncated = self._recent(limit)
        else:
            chosen, truncated, missing = self._ancestry(list(roots), limit)
        nodes = []
        for kind, key, item in chosen:
            if kind == "task":
                nodes.append(self._task_node(item, workers))
            else:
                nodes.append(self._object_node(item, workers))
        edges = self._edges(chosen)
        graph = {"truncated": truncated, "total_nodes": len(self), "limit": limit,
                 "created_at": time.time()}
        if roots is not None:
            graph["roots"] = [bytes(r).hex() for r in roots]
            graph["missing_roots"] = missing
        return {"directed": True, "multigraph": False, "graph": graph, "nodes": nodes,
                "edges": edges}

    def _recent(self, limit: int) -> tuple[list, bool]:
        """The newest ``limit`` nodes, oldest first: the newest ``limit`` of each live
        table and every finished and freed entry (bounded) are the candidates;
        O(limit + max_finished)."""
        candidates = []
        for table in self.live_tasks:
            candidates += [(t.seq, "task", t.id, t)
                           for t in itertools.islice(reversed(table.values()), limit)]
        candidates += [(t.seq, "task", t.id, t) for t in self.finished.values()]
        candidates += [(o.seq, "object", o.id, o) for o in
                       itertools.islice(reversed(self.live_objects.values()), limit)]
        live = self.live_objects
        candidates += [(r[8], "object", r[0], r) for r in self.freed.values()
                       if r[0] not in live]
        newest = heapq.nlargest(limit, candidates, key=_FIRST)
        newest.reverse()
        chosen = [(kind, key, _named(item)) for _, kind, key, item in newest]
        return chosen, len(self) > len(chosen)

    def _ancestry(self, roots: list[bytes], limit: int) -> tuple[list, bool, list[str]]:
        """Breadth-first from ``roots`` against the flow of data."""
        seen_tasks: set[bytes] = set()
        seen_objects: set[bytes] = set()
        chosen: list = []
        missing = []
        frontier: deque = deque()
        for root in roots:
            root = bytes(root)
            if self.has_object(root):
                frontier.append(("object", root))
            elif self.has_task(root):
                frontier.append(("task", root))
            else:
                missing.append(root.hex())
        truncated = False
        while frontier:
            kind, key = frontier.popleft()
            seen = seen_tasks if kind == "task" else seen_objects
            if key in seen:
                continue
            item = self.task(key) if kind == "task" else self._object(key)
            if item is None:
                continue
            if len(chosen) >= limit:
                truncated = True
                break
            seen.add(key)
            chosen.append((kind, key, item))
            if kind == "task":
                for object_id in itertools.chain(item.deps, item.nested):
                    frontier.append(("object", object_id))
            else:
                producer = _producer_id(item)
                if producer is not None:
                    frontier.append(("task", producer))
                for inner in item.contains:
                    frontier.append(("object", inner))
        return chosen, truncated, missing

    def _edges(self, chosen: list) -> list[dict]:
        tasks = {key for kind, key, _ in chosen if kind == "task"}
        objects = {key for kind, key, _ in chosen if kind == "object"}
        edges = []
        seen: set[tuple] = set()

        def add(source: bytes, target: bytes, kind: str, **attrs) -> None:
            pair = (source, target)
            if pair in seen:
                return  # the same object passed twice: one edge (a DiGraph has no more)
            seen.add(pair)
            edges.append({"source": source.hex(), "target": target.hex(), "kind": kind,
                          **attrs})

        for kind, key, item in chosen:
            if kind == "task":
                for position, object_id in enumerate(item.deps):
                    if object_id in objects:
                        add(object_id, key, ARGUMENT_OF, nested=False, position=position)
                for object_id in item.nested:
                    if object_id in objects:
                        add(object_id, key, ARGUMENT_OF, nested=True, position=-1)
                for position, object_id in enumerate(item.returns):
                    if object_id in objects:
                        add(key, object_id, PRODUCES, position=position)
                previous = getattr(item, "previous_call", None)
                if previous is not None and previous in tasks:
                    add(previous, key, NEXT_CALL)
            else:
                for inner in item.contains:
                    if inner in objects:
                        add(inner, key, CONTAINED_IN)
                producer = _producer_id(item)
                if producer is not None and producer in tasks:
                    add(producer, key, PRODUCES, position=0)
        return edges

    @staticmethod
    def _task_node(item: "TaskState", workers: dict) -> dict:
        placement = item.placement or {}
        worker, node, pid = placement.get("worker"), placement.get("node"), placement.get("pid")
        error = item.error_text
        started, finished = item.started_at or None, item.finished_at or None
        duration = finished - started if started and finished else None
        node_attrs = {"id": item.id.hex(), "type": "task", "label": item.name,
                      "name": item.name, "state": item.state, "worker": worker, "node": node,
                      "pid": pid, "submitted_at": item.submitted_at, "started_at": started,
                      "finished_at": finished, "duration": duration, "error": error}
        if "actor" in placement:     # an actor method call
            node_attrs["actor"] = placement["actor"]
        return node_attrs

    @staticmethod
    def _object_node(item, workers: dict) -> dict:
        if type(item) is ObjectRecord:
            state, where, inline = FREED, item.where(), item.inline
            spilled = item.spill_path is not None
            producer = item.producer
        else:
            state = item.state
            where = describe_where(item, workers)
            spilled = item.spill is not None
            inline = item.payload is not None
            producer = item.producer.id if item.producer is not None else None
        return {"id": item.id.hex(), "type": "object",
                "label": f"…{item.id.hex()[-6:]} {format_bytes(item.size)}",
                "state": state, "size": item.size, "where": where, "spilled": spilled,
                "inline": inline, "producer": producer.hex() if producer else None,
                "created_at": item.created_at}


_SEQ = operator.attrgetter("seq")
_FIRST = operator.itemgetter(0)


def _named(item):
    """A freed object's record tuple as an ``ObjectRecord``; anything else as it is."""
    return ObjectRecord._make(item) if type(item) is tuple else item


def _producer_id(item) -> bytes | None:
    if type(item) is ObjectRecord:
        return item.producer
    return item.producer.id if item.producer is not None else None
