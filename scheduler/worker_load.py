"""Each worker's recent load: CPU, memory and store use over the last minutes.

Workers report their figures in every heartbeat (``WorkerHeartbeat.metrics``: ``cpu``,
``memory``, ``store_used``, from ``worker/process_load.py`` and the store). The scheduler
keeps a bounded ring of samples per worker, at most one per ``interval`` seconds and
``seconds`` of them, which the status page draws as small line charts (as Dask's
``SystemMonitor`` keeps a bounded deque per worker). Pure bookkeeping, no I/O.
"""
from __future__ import annotations

import math
from collections import deque
from typing import NamedTuple


class LoadSample(NamedTuple):
    time: float                 # the scheduler's clock (time.time()) when it arrived
    cpu: float | None           # CPUs busy (1.0: one CPU fully used) since the last one
    memory: int | None          # resident bytes of its processes, shared memory aside
    store_used: int | None      # bytes used in its object store


def _number(value, integer: bool):
    """A finite non-negative figure from a peer, or None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if not math.isfinite(value) or value < 0:
        return None
    return int(value) if integer else float(value)


class WorkerLoadHistory:
    def __init__(self, seconds: float = 300.0, interval: float = 1.0):
        if seconds <= 0 or interval <= 0:
            raise ValueError(f"seconds and interval must be positive, got {seconds} and "
                             f"{interval}")
        self.seconds = seconds
        self.interval = interval
        #: The most samples kept per worker.
        self.per_worker = max(1, math.ceil(seconds / interval))
        self._rings: dict[bytes, deque[LoadSample]] = {}

    def record(self, worker: bytes, now: float, metrics: dict) -> None:
        """Keep a sample of ``metrics`` unless the last one is younger than
        ``interval`` (a short heartbeat interval does not shorten the window)."""
        ring = self._rings.get(worker)
        if ring is None:
            ring = self._rings[worker] = deque(maxlen=self.per_worker)
        elif now - ring[-1].time < self.interval * 0.9:   # heartbeats jitter a little
            return
        ring.append(LoadSample(now, _number(metrics.get("cpu"), False),
                               _number(metrics.get("memory"), True),
                               _number(metrics.get("store_used"), True)))

    def forget(self, worker: bytes) -> None:
        self._rings.pop(worker, None)

    def samples(self, worker: bytes, since: float = 0.0) -> list[LoadSample]:
        """The worker's samples newer than ``since``, oldest first."""
        ring = self._rings.get(worker)
        if not ring:
            return []
        return [s for s in ring if s.time > since]

    def __len__(self) -> int:
        return sum(len(ring) for ring in self._rings.values())
