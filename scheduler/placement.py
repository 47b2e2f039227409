"""Indexes that let the scheduler place a task without scanning workers or queues.

``WorkerIndex`` keeps the workers ordered by load in two heaps, those with a free slot
and those that may pipeline, so the least loaded worker with room (or the one with the
shortest queue behind busy slots) is found in O(log W) for W workers instead of a scan.
Entries are versioned: a worker whose load changes gets a new entry, and the old one is
dropped when it reaches the top (lazy deletion); a heap is compacted when stale entries
outnumber live ones, so memory stays O(W). The same questions about one node (where a
task's input bytes are, a node affinity) look at that node's workers only: as many as
the host has CPUs, whatever the size of the cluster.

``CopyIndex`` says which nodes hold a copy of each stored object: whether a node holds
one is O(1), and a decision that weighs the nodes holding a task's inputs takes a few of
them (all when there are few, else the next few in turn) in O(few), however many copies
there are, so a locality decision does not grow with the copies (nor with W).

``ReadyQueue`` holds the tasks of one shape (CPUs, resources, strategy) waiting for a
worker, a FIFO per driver taken in turn (round-robin), so one driver's flood of queued
tasks does not hold back another driver's few: taking the next task is O(1) whatever the
number of drivers or tasks queued.

All three are pure bookkeeping over the scheduler's records (``entities.py``): they
read a worker's ``free_slots()``, ``queued_seconds``, ``slots``, ``long_tasks``,
``queued_beyond_slots()`` and ``node``, and a task's ``driver``; the state machine
(``state.py``) calls ``WorkerIndex.update`` wherever one of those changes, and
``CopyIndex.add`` / ``remove`` / ``forget`` wherever a copy is recorded or dropped.
"""
from __future__ import annotations

from collections import deque
from heapq import heapify, heappop, heappush
from typing import Any, Callable, Iterator

#: A heap is rebuilt from its live entries once it holds this many times more entries
#: than there are workers (plus a constant, so small clusters never bother).
_COMPACT_RATIO = 3
_COMPACT_SLACK = 64
#: ``CopyIndex.node_ids`` of an object with no copy.
_NO_NODES: dict = {}


def free_cost(worker) -> float:
    """The load of a worker with a free slot, as placement compares it: seconds of work
    queued per slot, a free slot more breaking ties."""
    return worker.queued_seconds / worker.slots - worker.free_slots() * 1e-6


def queue_cost(worker) -> float:
    """The load of a worker with no free slot, for pipelining: tasks queued behind its
    busy slots, per slot."""
    return worker.queued_beyond_slots() / worker.slots


def task_fits_now(task) -> Callable[[Any], bool]:
    """Whether a worker's node has room for ``task`` now (its free CPUs, resources)."""
    return lambda worker: worker.node.fits_now(task)


def task_fits_ever(task) -> Callable[[Any], bool]:
    """Whether a worker's node could ever run ``task`` (its total CPUs, resources)."""
    return lambda worker: worker.node.fits_ever(task)


class WorkerIndex:
    """Workers by load: those with a free slot by ``free_cost``, and those without one
    and with only short tasks (the ones that may pipeline) by ``queue_cost``; over the
    whole cluster (heaps) and on one node (its workers)."""

    def __init__(self):
        #: worker id -> [version, registration order]
        self._meta: dict[bytes, list] = {}
        self._order = 0
        #: Versioned entries ``[key, order, version, worker]``, heaps by (key, order).
        self._free: list = []
        self._queued: list = []
        #: A heap holding more entries than this is compacted (set as workers come and go).
        self._compact_above = _COMPACT_SLACK

    def __len__(self) -> int:
        return len(self._meta)

    def __contains__(self, worker) -> bool:
        return worker.id in self._meta

    # -- changes ------------------------------------------------------------------------
    def add(self, worker) -> None:
        """A worker joined."""
        self._order += 1
        self._meta[worker.id] = [0, self._order]
        self._compact_above = _COMPACT_RATIO * len(self._meta) + _COMPACT_SLACK
        self.update(worker)

    def remove(self, worker) -> None:
        """A worker left: its entries are stale from now on."""
        self._meta.pop(worker.id, None)
        self._compact_above = _COMPACT_RATIO * len(self._meta) + _COMPACT_SLACK

    def update(self, worker) -> None:
        """The worker's slots, queue or expected work changed: enter it again."""
        meta = self._meta.get(worker.id)
        if meta is None:
            return
        meta[0] += 1
        version, order = meta
        # Twice a task: ``free_slots``, ``free_cost`` and ``queue_cost`` inline (the
        # ``mismatches`` check compares with the functions).
        free = worker.slots + worker.blocked - worker.running
        if free > 0:
            self._push(self._free, [worker.queued_seconds / worker.slots - free * 1e-6,
                                    order, version, worker])
        elif not worker.long_tasks:
            self._push(self._queued, [(len(worker.assigned) - worker.running) / worker.slots,
                                      order, version, worker])

    def _push(self, entries: list, entry: list) -> None:
        heappush(entries, entry)
        if len(entries) > self._compact_above:
            meta = self._meta
            entries[:] = [e for e in entries if self._live(e, meta)]
            heapify(entries)

    @staticmethod
    def _live(entry: list, meta: dict) -> bool:
        current = meta.get(entry[3].id)
        return current is not None and current[0] == entry[2]

    def mismatches(self, workers) -> list[str]:
        """Workers whose live entry does not say their load now: the index missed an
        update (for ``validate_state``; O(entries))."""
        meta = self._meta
        live = {}
        for heap, entries in (("free", self._free), ("queued", self._queued)):
            for entry in entries:
                if self._live(entry, meta):
                    live[entry[3].id] = (heap, entry[0])
        problems = []
        for worker in workers:
            if worker.id not in meta:
                problems.append(f"worker {worker.id.hex()} is not in the placement index")
                continue
            if worker.free_slots() > 0:
                expected = ("free", free_cost(worker))
            elif not worker.long_tasks:
                expected = ("queued", queue_cost(worker))
            else:
                expected = None
            if live.get(worker.id) != expected:
                problems.append(f"worker {worker.id.hex()} is indexed as "
                                f"{live.get(worker.id)} but its load is {expected}")
        return problems

    # -- questions ----------------------------------------------------------------------
    def order(self, worker) -> int:
        """When the worker joined, relative to the others (ties go to the earliest)."""
        return self._meta[worker.id][1]

    def least_loaded(self, fits: Callable[[Any], bool], node=None):
        """The worker with a free slot and the lowest ``free_cost`` for which
        ``fits(worker)`` (its node has room for the task); on ``node`` (a
        ``NodeState``) if given."""
        if node is not None:
            found = self.best_on_node(node, fits)
            return None if found is None else found[0]
        return self._first(self._free, fits, None)

    def shortest_queue(self, fits: Callable[[Any], bool], depth: int, node=None):
        """The worker with no free slot, only short tasks, fewer than ``depth`` queued
        and the lowest ``queue_cost`` for which ``fits(worker)`` (its node could ever
        run the task): where a task may wait behind busy slots; on ``node`` if given."""
        if depth <= 0:
            return None
        if node is not None:
            found = self.best_on_node(node, fits, depth)
            return None if found is None else found[0]
        return self._first(self._queued, fits, depth, depth)

    def best_on_node(self, node, fits: Callable[[Any], bool], depth: int | None = None):
        """``(worker, cost, order)`` of the indexed worker of ``node`` with the lowest
        (cost, order), or None: with ``depth`` None, the ``least_loaded`` one (a free
        slot, by ``free_cost``), else the ``shortest_queue`` one (by ``queue_cost``).
        ``fits`` says whether a worker's node has room, so it is asked once per node.
        A locality decision asks this of each node it weighs: one pass over the node's
        workers, the two costs written out rather than called."""
        meta = self._meta
        best, best_key, best_order = None, 0.0, 0
        fitting = None
        for worker in node.workers.values():
            current = meta.get(worker.id)
            if current is None:
                continue
            free = worker.slots + worker.blocked - worker.running
            if depth is None:
                if free <= 0:
                    continue
                key = worker.queued_seconds / worker.slots - free * 1e-6
            else:
                if free > 0 or worker.long_tasks:
                    continue
                queued = len(worker.assigned) - worker.running
                if queued >= depth:
                    continue
                key = queued / worker.slots
            if fitting is None:
                fitting = fits(worker)
                if not fitting:
                    return None
            order = current[1]
            if best is None or key < best_key or (key == best_key and order < best_order):
                best, best_key, best_order = worker, key, order
        return None if best is None else (best, best_key, best_order)

    def near_top(self, k: int, depth: int | None = None) -> list:
        """Up to ``k`` live entries ``(worker, cost, order)`` from the top of a heap:
        workers with a free slot (``depth`` None), else those that may pipeline. They
        are the least loaded one and others close to it (the heap's first levels, not
        the ``k`` least loaded in order), found in O(k) without changing the heap; room
        and queue depth are the caller's to check."""
        meta = self._meta
        out = []
        for entry in (self._free if depth is None else self._queued)[:2 * k]:
            current = meta.get(entry[3].id)
            if current is not None and current[0] == entry[2]:
                out.append((entry[3], entry[0], entry[1]))
                if len(out) == k:
                    break
        return out

    def _first(self, entries: list, accept: Callable[[Any], bool], limit: float | None,
               depth: int | None = None):
        """Pop stale entries off the top; return the first live worker ``accept``
        takes (and, with ``depth``, that has fewer than ``depth`` tasks queued behind its
        slots). Live entries refused (a node without room for this task now, a full
        queue) are put back afterwards. ``limit``: no entry with a key at or above it
        can be accepted, so the search stops there."""
        meta = self._meta
        refused = None
        found = None
        while entries:
            entry = entries[0]
            current = meta.get(entry[3].id)
            if current is None or current[0] != entry[2]:
                heappop(entries)
                continue
            if limit is not None and entry[0] >= limit:
                break
            worker = entry[3]
            if (depth is None or worker.queued_beyond_slots() < depth) and accept(worker):
                found = worker
                break
            if refused is None:
                refused = []
            refused.append(heappop(entries))
        if refused:
            for entry in refused:
                heappush(entries, entry)
        return found

    def entries(self) -> int:
        """Entries held, stale ones included (bounded by a multiple of the workers)."""
        return len(self._free) + len(self._queued)


class CopyIndex:
    """The nodes holding a copy of each stored object (in some worker's store there).

    The state machine's ``ObjectState.locations`` (worker id -> segment) says where each
    copy is; this index keeps the same copies by node, for placement: ``holds`` answers
    whether a node has one in O(1), and ``some`` gives a few holder nodes in O(k) —
    all of them when at most k, else the next k in turn, so that successive decisions
    weigh different ones and together spread over them all. The state calls ``add``
    and ``remove`` wherever a copy is recorded or forgotten, ``forget`` when the object
    is freed; ``validate_state`` recounts it from the locations.
    """
    __slots__ = ("_objects",)

    def __init__(self):
        #: object id -> [holder nodes (a list: turns and O(1) removal by swapping),
        #: {node id: [position in that list, copies on the node]}, next turn]
        self._objects: dict[bytes, list] = {}

    def __len__(self) -> int:
        return len(self._objects)

    def add(self, object_id: bytes, node) -> None:
        """A worker of ``node`` (a ``NodeState``) got a copy it did not have."""
        entry = self._objects.get(object_id)
        if entry is None:
            self._objects[object_id] = [[node], {node.id: [0, 1]}, 0]
            return
        where = entry[1].get(node.id)
        if where is None:
            entry[1][node.id] = [len(entry[0]), 1]
            entry[0].append(node)
        else:
            where[1] += 1

    def remove(self, object_id: bytes, node_id: str) -> None:
        """A worker of node ``node_id`` no longer has its copy."""
        entry = self._objects.get(object_id)
        if entry is None:
            return
        nodes, where = entry[0], entry[1]
        here = where.get(node_id)
        if here is None:
            return
        here[1] -= 1
        if here[1] > 0:
            return
        del where[node_id]
        last = nodes.pop()
        if last.id != node_id:
            nodes[here[0]] = last
            where[last.id][0] = here[0]
        if not nodes:
            del self._objects[object_id]

    def forget(self, object_id: bytes) -> None:
        """The object was freed: every copy goes."""
        self._objects.pop(object_id, None)

    def holds(self, object_id: bytes, node_id: str) -> bool:
        entry = self._objects.get(object_id)
        return entry is not None and node_id in entry[1]

    def node_ids(self, object_id: bytes):
        """The ids of the nodes holding a copy, for ``in`` tests (the index's own
        mapping: read it, never change it)."""
        entry = self._objects.get(object_id)
        return _NO_NODES if entry is None else entry[1]

    def copies_by_node(self, object_id: bytes) -> dict[str, int]:
        """Node id -> copies there (for checks)."""
        entry = self._objects.get(object_id)
        return {} if entry is None else {n: w[1] for n, w in entry[1].items()}

    def holder_count(self, object_id: bytes) -> int:
        """How many nodes hold a copy."""
        entry = self._objects.get(object_id)
        return 0 if entry is None else len(entry[0])

    def some(self, object_id: bytes, k: int) -> list:
        """Nodes holding a copy: all of them if at most ``k``, else ``k`` of them, the
        ones after those the previous call gave (round the list)."""
        entry = self._objects.get(object_id)
        if entry is None or k <= 0:
            return []
        nodes = entry[0]
        n = len(nodes)
        if n <= k:
            return nodes
        start = entry[2] % n
        entry[2] = start + k
        end = start + k
        if end <= n:
            return nodes[start:end]
        return nodes[start:] + nodes[:end - n]

    def mismatches(self, objects, nodes: dict) -> list[str]:
        """Where the index and the objects' locations disagree (for ``validate_state``;
        ``objects``: (object id, {node id: copies}) from the locations; ``nodes``: the
        live nodes by id, which the index must name, not a departed namesake)."""
        problems = []
        seen = set()
        for object_id, expected in objects:
            seen.add(object_id)
            have = self.copies_by_node(object_id)
            if have != expected:
                problems.append(f"object {object_id.hex()} is indexed on nodes {have} but "
                                f"its locations give {expected}")
                continue
            entry = self._objects.get(object_id)
            if entry is None:
                continue
            for i, node in enumerate(entry[0]):
                if entry[1][node.id][0] != i or nodes.get(node.id) is not node:
                    problems.append(f"object {object_id.hex()}: node {node.id!r} is at "
                                    f"the wrong place in its holder list, or gone")
                    break
        for object_id in self._objects:
            if object_id not in seen:
                problems.append(f"object {object_id.hex()} is indexed as held but has no "
                                f"copy")
        return problems


class ReadyQueue:
    """The tasks of one shape waiting for a worker: one FIFO per driver, served in turn.

    ``live(task)`` says whether an entry still waits: a task that left the queue by
    another way (failed, cancelled, back to waiting for an argument) stays in its FIFO
    until it reaches the front, where it is dropped, so leaving costs O(1) too.
    """
    __slots__ = ("_by_driver", "_turns", "_live", "entries")

    def __init__(self, live: Callable[[Any], bool]):
        self._by_driver: dict[Any, deque] = {}
        #: Drivers with entries, the next to be served first.
        self._turns: deque = deque()
        self._live = live
        #: Entries held, dead ones included.
        self.entries = 0

    def __bool__(self) -> bool:
        return bool(self._turns)

    def __len__(self) -> int:
        return self.entries

    def append(self, task) -> None:
        """``task`` waits behind its driver's other tasks."""
        fifo = self._by_driver.get(task.driver)
        if fifo is None:
            fifo = self._by_driver[task.driver] = deque()
            self._turns.append(task.driver)
        fifo.append(task)
        self.entries += 1

    def appendleft(self, task) -> None:
        """``task`` goes first among its driver's (a retry of a task that ran)."""
        fifo = self._by_driver.get(task.driver)
        if fifo is None:
            fifo = self._by_driver[task.driver] = deque()
            self._turns.appendleft(task.driver)
        fifo.appendleft(task)
        self.entries += 1

    def peek(self):
        """The next task to place (of the driver whose turn it is), or None."""
        turns = self._turns
        live = self._live
        while turns:
            driver = turns[0]
            fifo = self._by_driver[driver]
            while fifo and not live(fifo[0]):
                fifo.popleft()
                self.entries -= 1
            if fifo:
                return fifo[0]
            del self._by_driver[driver]
            turns.popleft()
        return None

    def popleft(self):
        """Take the task ``peek`` returned; the next driver's turn comes."""
        turns = self._turns
        driver = turns[0]
        fifo = self._by_driver[driver]
        task = fifo.popleft()
        self.entries -= 1
        if len(turns) > 1:
            turns.popleft()
            if fifo:
                turns.append(driver)
            else:
                del self._by_driver[driver]
        elif not fifo:
            turns.popleft()
            del self._by_driver[driver]
        return task

    def __iter__(self) -> Iterator:
        """Entries (dead ones included), driver by driver: for checks, not placement."""
        for fifo in self._by_driver.values():
            yield from fifo
