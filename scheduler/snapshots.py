"""Scans of the scheduler's live objects and tasks for the status views, off the hot path.

A scan touches every live object, so it is the one part of the status page whose cost
grows with the cluster. ``LiveScans`` makes it cheap for the scheduler: the scan runs in
slices with the event loop free between them (messages keep flowing), at most one runs at
a time, and its result serves every request for ``max_age`` seconds, however many
browsers poll.
"""
from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from graphstore.scheduler.status import LiveScan

if TYPE_CHECKING:
    from graphstore.scheduler.state import SchedulerState

#: Items handled between two returns to the event loop (well under a millisecond each).
SLICE = 5000


class LiveScans:
    def __init__(self, state: "SchedulerState", max_age: float = 0.5):
        self.state = state
        self.max_age = max_age
        self._last: LiveScan | None = None
        self._running: asyncio.Future | None = None

    async def get(self) -> LiveScan:
        """A scan at most ``max_age`` seconds old (waits for one if needed)."""
        last = self._last
        if last is not None and time.monotonic() - last.finished_at < self.max_age:
            return last
        if self._running is None:
            self._running = asyncio.ensure_future(self._scan())
        running = self._running
        try:
            return await asyncio.shield(running)
        finally:
            if running.done() and self._running is running:
                self._running = None

    async def _scan(self) -> LiveScan:
        state = self.state
        scan = LiveScan()
        # Copies of the tables (fast, in C): the state may change between slices, and a
        # status page may be that much out of date.
        objects = list(state.objects.values())
        tasks = list(state.tasks.values())
        for start in range(0, len(objects), SLICE):
            scan.add_objects(objects[start:start + SLICE])
            if start + SLICE < len(objects):
                await asyncio.sleep(0)
        for start in range(0, len(tasks), SLICE):
            scan.add_tasks(tasks[start:start + SLICE])
            if start + SLICE < len(tasks):
                await asyncio.sleep(0)
        scan.finished_at = time.monotonic()
        self._last = scan
        return scan
