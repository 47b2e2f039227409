"""CPU and memory of a worker's processes, sampled for its heartbeats.

The status page draws each worker's load over the last minutes from these figures. A
worker's work runs in its own process (task threads) and in the task and actor processes
it started, so a sample sums all of them. CPU is the processes' CPU time (user + system,
``/proc/<pid>/stat``) used since the previous sample, divided by the wall time between
the two: 1.0 means one CPU fully busy, as ``top`` shows 100%. Memory is each process's
resident memory without its shared memory (``RssAnon + RssFile`` of ``/proc/<pid>/status``,
leaving out ``RssShmem``): the object store's pages are left out, since the store's use
is reported on its own.

The standard library only (Linux ``/proc``; elsewhere the worker's own CPU time from
``os.times()`` and no memory figure), as Dask's ``SystemMonitor`` needs psutil for the same.
"""
from __future__ import annotations

import os
import time
from typing import Iterable

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid``, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            text = f.read()
    except OSError:
        if pid == os.getpid():
            times = os.times()
            return times.user + times.system
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ")".
    fields = text[text.rfind(b")") + 2:].split()
    try:
        return (int(fields[11]) + int(fields[12])) / _TICKS
    except (IndexError, ValueError):
        return None


def resident_memory(pid: int) -> int | None:
    """Resident bytes of ``pid`` other than shared memory, or None if unknown."""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            text = f.read()
    except OSError:
        return None
    total = None
    for line in text.splitlines():
        if line.startswith((b"RssAnon:", b"RssFile:")):
            try:
                total = (total or 0) + int(line.split()[1]) * 1024
            except (IndexError, ValueError):
                return None
    return total


class ProcessLoad:
    """CPU use between calls, and memory now, of a changing set of processes."""

    def __init__(self, clock=time.monotonic):
        self._clock = clock
        self._previous: dict[int, float] = {}
        self._previous_time: float | None = None

    def sample(self, pids: Iterable[int]) -> dict:
        """``cpu`` (CPUs busy since the last sample; None on the first), ``memory``
        (resident bytes without shared memory, now) and ``processes`` (how many were read)."""
        now = self._clock()
        current: dict[int, float] = {}
        memory = None
        for pid in dict.fromkeys(pids):
            used = cpu_seconds(pid)
            if used is None:
                continue
            current[pid] = used
            resident = resident_memory(pid)
            if resident is not None:
                memory = (memory or 0) + resident
        cpu = None
        if self._previous_time is not None and now > self._previous_time:
            # A process new since the last sample counts from its start (mostly just now).
            busy = sum(max(0.0, used - self._previous.get(pid, 0.0))
                       for pid, used in current.items())
            cpu = busy / (now - self._previous_time)
        self._previous, self._previous_time = current, now
        return {"cpu": cpu, "memory": memory, "processes": len(current)}
