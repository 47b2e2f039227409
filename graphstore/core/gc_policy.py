"""Garbage collection for a server process that holds millions of long-lived objects.

CPython's cyclic collector traverses every tracked object of the oldest generation in a
full collection, and runs one each time that generation grew by a quarter. A scheduler
with a million queued tasks tracks over ten million objects: full collections then took
about two thirds of its time (300,000 no-op tasks: 27 s, against 17 s with them
throttled), in pauses of seconds during which it answers nobody. Reference counting
frees nearly everything here; the collector only finds cycles.

``throttle_full_collections`` keeps the young generations as they are (cheap, they
find most cycles), makes full collections manual, and runs one from the event loop only
after enough allocation, and never more than ``duty`` of the time: after a collection
that took ``t`` seconds, the next waits at least ``t / duty`` seconds. This is what Dask
does for its workers (``ThrottledGC``), for the same reason.

A driver that submits a million tasks holds a million refs and their results: with
CPython's defaults it ran 40 full collections of about 400 ms each (16 s of an 80 s
run). ``ThrottledCollector`` applies the same policy to a driver for as long as it is
connected (setting ``throttle_driver_gc``), and gives the process its own thresholds back
at ``shutdown()``.

``collector_paused`` holds collections off while a process builds many values at once.
"""
from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import threading
import time

logger = logging.getLogger("graphstore.gc")

#: Young collections every 100,000 net allocations (CPython: 700), the middle one every
#: 50 of them; the oldest never on its own (we run it, below).
_THRESHOLDS = (100_000, 50, 1_000_000)


def throttle_full_collections(duty: float = 0.05, check_every: float = 1.0) -> None:
    """Install the policy in this process for good; its event loop (running) runs the
    full collections."""
    gc.set_threshold(*_THRESHOLDS)
    asyncio.ensure_future(_collect_now_and_then(duty, check_every))


class ThrottledCollector:
    """The policy for a while, in a process that is not ours alone (a driver): ``start``
    from any thread with the loop that will run the full collections, ``stop`` puts the
    thresholds found at ``start`` back (unless someone changed them meanwhile)."""

    def __init__(self, duty: float = 0.05, check_every: float = 1.0):
        self.duty = duty
        self.check_every = check_every
        self._previous: tuple | None = None
        self._task: asyncio.Future | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._previous is not None:
            return
        self._previous = gc.get_threshold()
        gc.set_threshold(*_THRESHOLDS)
        self._loop = loop

        def begin() -> None:
            self._task = asyncio.ensure_future(
                _collect_now_and_then(self.duty, self.check_every))
        loop.call_soon_threadsafe(begin)

    def stop(self) -> None:
        if self._previous is None:
            return
        previous, self._previous = self._previous, None
        task, self._task = self._task, None
        if task is not None and self._loop is not None and not self._loop.is_closed():
            try:
                self._loop.call_soon_threadsafe(task.cancel)
            except RuntimeError:      # closed meanwhile: the task went with it
                pass
        if gc.get_threshold() == _THRESHOLDS:
            gc.set_threshold(*previous)


async def _collect_now_and_then(duty: float, check_every: float) -> None:
    not_before = 0.0
    while True:
        await asyncio.sleep(check_every)
        now = time.monotonic()
        # get_count()[2]: middle-generation collections since the last full one: at
        # least one means some millions of allocations since.
        if now < not_before or gc.get_count()[2] < 1:
            continue
        start = time.perf_counter()
        gc.collect()
        took = time.perf_counter() - start
        not_before = time.monotonic() + took / duty
        if took > 1.0:
            logger.info("a full garbage collection took %.1f s", took)


_pause_lock = threading.Lock()
_pause_depth = 0
_resume = False


@contextlib.contextmanager
def collector_paused():
    """No cyclic collection while building many values at once (a ``get`` of thousands
    of objects): each value allocates a few tracked objects, none of them garbage, and
    the collections that allocation triggers traverse the whole heap again and again (a
    get of 10,000 arrays ran one or two full collections, a third of its time). Threads
    may nest and overlap; the collector runs again when the last of them is done, if it
    was on before the first."""
    global _pause_depth, _resume
    with _pause_lock:
        if _pause_depth == 0:
            _resume = gc.isenabled()
            gc.disable()
        _pause_depth += 1
    try:
        yield
    finally:
        with _pause_lock:
            _pause_depth -= 1
            if _pause_depth == 0 and _resume:
                gc.enable()
