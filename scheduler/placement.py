"""Indexes that let the scheduler place a task without scanning workers or queues.

``WorkerIndex`` keeps the workers ordered by load in two heaps, those with a free slot
and those that may pipeline, so the least loaded worker with room (or the one with the
shortest queue behind busy slots) is found in O(log W) for W workers instead of a scan.
Entries are versioned: a worker whose load changes gets a new entry, and the old one is
dropped when it reaches the top (lazy deletion); a heap is compacted when stale entries
outnumber live ones, so memory stays O(W). The same questions about one node (where a
task's input bytes are, a node affinity) look at that node's workers only: as many as
the host has CPUs, whatever the size of the cluster.

``ReadyQueue`` holds the tasks of one shape (CPUs, resources, strategy) waiting for a
worker, a FIFO per driver taken in turn (round-robin), so one driver's flood of queued
tasks does not hold back another driver's few: taking the next task is O(1) whatever the
number of drivers or tasks queued.

Both are pure bookkeeping over the scheduler's records (``entities.py``): they read a
worker's ``free_slots()``, ``queued_seconds``, ``slots``, ``long_tasks``,
``queued_beyond_slots()`` and ``node``, and a task's ``driver``; the state machine
(``state.py``) calls ``WorkerIndex.update`` wherever one of those changes.
"""
from __future__ import annotations

from collections import deque
from heapq import heapify, heappop, heappush
from typing import Any, Callable, Iterator

#: A heap is rebuilt from its live entries once it holds this many times more entries
#: than there are workers (plus a constant, so small clusters never bother).
_COMPACT_RATIO = 3
_COMPACT_SLACK = 64


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

    def __len__(self) -> int:
        return len(self._meta)

    def __contains__(self, worker) -> bool:
        return worker.id in self._meta

    # -- changes ------------------------------------------------------------------------
    def add(self, worker) -> None:
        """A worker joined."""
        self._order += 1
        self._meta[worker.id] = [0, self._order]
        self.update(worker)

    def remove(self, worker) -> None:
        """A worker left: its entries are stale from now on."""
        self._meta.pop(worker.id, None)

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
        if len(entries) > _COMPACT_RATIO * len(self._meta) + _COMPACT_SLACK:
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
            return self._best_of(node, lambda w: w.free_slots() > 0 and fits(w),
                                 free_cost)
        return self._first(self._free, fits, None)

    def shortest_queue(self, fits: Callable[[Any], bool], depth: int, node=None):
        """The worker with no free slot, only short tasks, fewer than ``depth`` queued
        and the lowest ``queue_cost`` for which ``fits(worker)`` (its node could ever
        run the task): where a task may wait behind busy slots; on ``node`` if given."""
        if depth <= 0:
            return None
        if node is not None:
            return self._best_of(node, lambda w: (
                w.free_slots() <= 0 and not w.long_tasks
                and w.queued_beyond_slots() < depth and fits(w)), queue_cost)
        return self._first(self._queued,
                           lambda w: w.queued_beyond_slots() < depth and fits(w), depth)

    def _best_of(self, node, accept: Callable[[Any], bool], cost: Callable[[Any], float]):
        """The accepted worker of ``node`` with the lowest (cost, order)."""
        meta = self._meta
        best, best_key = None, None
        for worker in node.workers.values():
            if worker.id not in meta or not accept(worker):
                continue
            key = (cost(worker), meta[worker.id][1])
            if best_key is None or key < best_key:
                best, best_key = worker, key
        return best

    def _first(self, entries: list, accept: Callable[[Any], bool], limit: float | None):
        """Pop stale entries off the top; return the first live worker ``accept``
        takes. Live entries it refuses (a node without room for this task now) are put
        back afterwards. ``limit``: no entry with a key at or above it can be accepted,
        so the search stops there."""
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
            if accept(entry[3]):
                found = entry[3]
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
