"""The scheduler's memory of recent work: profile events per worker, bounded.

Each worker gets a ring of its most recent events, so one busy worker cannot push the
others' history out and memory stays bounded whatever the run's length (Dask's task
stream keeps a deque of recent ``startstops``; Ray's timeline a bounded buffer of profile
events). The rings share a total bound too: each holds at most ``per_worker`` events and
at most its share of ``total``, so a cluster of a thousand workers keeps no more than
one of ten (the rings are remade, newest events kept, when a ring comes or goes: rare,
and off the per-task path). A sequence number per event lets the status page ask for what is new since its
last poll. Pure bookkeeping, no I/O.

A ring holds one flat plain tuple per event, ``(seq, *event fields, inputs)``, made
into ``StreamEntry`` and ``ProfileEvent`` only when read: recording runs once per task on
the scheduler's hot path, so it makes one tuple (and the float of its end) and reuses
the values the scheduler already holds (the task's name, id and argument ids, the
worker's pid); and plain tuples of plain values are dropped from the garbage collector's
tracking, so tens of thousands of them cost later collections nothing. Which tasks made
the inputs (the trace's arrows) is looked up when the trace is read, not per task.
"""
from __future__ import annotations

from collections import deque
from typing import Iterable, NamedTuple

from graphstore.core.profile_events import ProfileEvent


class StreamEntry(NamedTuple):
    seq: int                  # increases by one per event recorded, cluster-wide
    worker: bytes             # the worker whose host did the work
    event: ProfileEvent
    inputs: tuple             # ids of the objects the run read as arguments (the
                              # trace's arrows come from the tasks that made them)


class TaskStream:
    def __init__(self, per_worker: int = 10_000, retired_workers: int = 64,
                 total: int = 200_000):
        if per_worker < 1:
            raise ValueError(f"per_worker must be at least 1, got {per_worker}")
        if total < 1:
            raise ValueError(f"total must be at least 1, got {total}")
        self.per_worker = per_worker
        self.total = total
        #: Events each ring holds now: ``per_worker``, or the rings' share of ``total``.
        self.capacity = per_worker
        self.retired_workers = retired_workers
        self._rings: dict[bytes, deque[tuple]] = {}
        self._retired: deque[bytes] = deque()
        #: What the timeline says of each worker (pid, host, node, address), kept as
        #: long as its history is.
        self.workers: dict[bytes, dict] = {}
        self.seq = 0

    def name_worker(self, worker: bytes, info: dict) -> None:
        """Remember what ``worker`` is, for the rows of the timeline."""
        self.workers[worker] = info

    def _ring(self, worker: bytes) -> deque:
        ring = self._rings.get(worker)
        if ring is None:
            self._rings[worker] = deque(maxlen=self.capacity)
            self._share()
            ring = self._rings[worker]
        return ring

    def _share(self) -> None:
        """Give each ring its share of ``total`` (at most ``per_worker``, at least one):
        after a ring came or went. A ring whose size changes is remade with its newest
        events."""
        capacity = max(1, min(self.per_worker, self.total // max(1, len(self._rings))))
        if capacity == self.capacity:
            return
        self.capacity = capacity
        for worker, ring in self._rings.items():
            if ring.maxlen != capacity:
                self._rings[worker] = deque(ring, maxlen=capacity)

    def record(self, worker: bytes, events: Iterable[tuple], inputs: tuple = ()) -> None:
        """Keep ``events`` of ``worker`` (``ProfileEvent``s, or their fields as plain
        tuples: ``profile_events.checked_fields``); ``inputs`` are the ids of the
        arguments of the task these events belong to."""
        ring = self._ring(worker)
        seq = self.seq
        for event in events:
            seq += 1
            ring.append((seq, *event, inputs))
        self.seq = seq

    def record_run(self, worker: bytes, kind: str, name: str, start: float, stop: float,
                   pid: int, task_id: bytes, inputs: tuple = ()) -> None:
        """Keep the run of a task or actor call (``kind`` "task" or "actor-call") on
        ``worker``: the same as ``record`` of its event, with no event made first (the
        caller checked the values)."""
        ring = self._rings.get(worker)
        if ring is None:
            ring = self._ring(worker)
        self.seq = seq = self.seq + 1
        ring.append((seq, kind, name, start, stop, pid, task_id, 0, "", inputs))

    def retire(self, worker: bytes) -> None:
        """A worker left: its history stays for the timeline until ``retired_workers``
        newer departures push it out."""
        if worker not in self._rings:
            self.workers.pop(worker, None)     # nothing recorded: nothing to keep
        elif worker not in self._retired:
            self._retired.append(worker)
            dropped = False
            while len(self._retired) > self.retired_workers:
                gone = self._retired.popleft()
                dropped = self._rings.pop(gone, None) is not None or dropped
                self.workers.pop(gone, None)
            if dropped:
                self._share()

    def since(self, seq: int = 0, limit: int | None = None) -> list[StreamEntry]:
        """Entries recorded after ``seq``, oldest first; with ``limit``, the newest
        ``limit`` of them."""
        found = []
        for worker, ring in self._rings.items():
            if ring and ring[-1][0] > seq:
                # Rings are in seq order: walk back from the newest until seq is reached.
                for index in range(len(ring) - 1, -1, -1):
                    entry = ring[index]
                    if entry[0] <= seq:
                        break
                    found.append((entry, worker))
        found.sort(key=lambda pair: pair[0][0])
        if limit is not None:
            found = found[-limit:] if limit > 0 else []
        make = ProfileEvent._make
        return [StreamEntry(entry[0], worker, make(entry[1:9]), entry[9])
                for entry, worker in found]

    def events(self):
        """Every event kept, as (worker, event fields) pairs in no particular order: for
        a scan of the whole stream, without the objects ``since`` makes."""
        for worker, ring in self._rings.items():
            for entry in ring:
                yield worker, entry[1:9]

    def __len__(self) -> int:
        return sum(len(ring) for ring in self._rings.values())
