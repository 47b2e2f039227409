"""``Queue``: a first-in first-out queue shared by drivers, tasks and actors, as Ray's
``ray.util.queue.Queue``.

The items live in an actor (``async def`` methods over an ``asyncio.Queue``), so any
process holding the ``Queue`` (it pickles with its actor handle) can put and get. A
blocked ``put``/``get`` waits inside the actor without holding it: other callers go on.
``Empty`` and ``Full`` are the standard library's ``queue.Empty``/``queue.Full``
subclasses, raised in the caller as they would be by ``queue.Queue``.
"""
from __future__ import annotations

import asyncio
import queue as _stdlib_queue
from typing import Any

import graphstore

__all__ = ["Queue", "Empty", "Full"]


class Empty(_stdlib_queue.Empty):
    pass


class Full(_stdlib_queue.Full):
    pass


class _QueueActor:
    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self.queue: asyncio.Queue[Any] = asyncio.Queue(maxsize)

    async def qsize(self) -> int:
        return self.queue.qsize()

    async def empty(self) -> bool:
        return self.queue.empty()

    async def full(self) -> bool:
        return self.queue.full()

    async def put(self, item: Any, timeout: float | None = None) -> bool:
        """False: still full after ``timeout`` seconds."""
        try:
            await asyncio.wait_for(self.queue.put(item), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    async def get(self, timeout: float | None = None) -> tuple[bool, Any]:
        """(False, None): still empty after ``timeout`` seconds."""
        try:
            return True, await asyncio.wait_for(self.queue.get(), timeout)
        except asyncio.TimeoutError:
            return False, None

    async def put_nowait(self, item: Any) -> bool:
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            return False
        return True

    async def put_nowait_batch(self, items: list[Any]) -> bool:
        """All of ``items`` or none of them."""
        if self.maxsize > 0 and len(items) + self.queue.qsize() > self.maxsize:
            return False
        for item in items:
            self.queue.put_nowait(item)
        return True

    async def get_nowait(self) -> tuple[bool, Any]:
        try:
            return True, self.queue.get_nowait()
        except asyncio.QueueEmpty:
            return False, None

    async def get_nowait_batch(self, num_items: int) -> tuple[bool, list[Any]]:
        """``num_items`` items or none."""
        if num_items > self.queue.qsize():
            return False, []
        return True, [self.queue.get_nowait() for _ in range(num_items)]


class Queue:
    """A FIFO queue usable from any process of the cluster.

    ``maxsize`` <= 0 means no bound. ``actor_options`` go to the actor that holds the
    items (e.g. ``{"num_cpus": 0, "name": "jobs"}``)."""

    def __init__(self, maxsize: int = 0, actor_options: dict[str, Any] | None = None
                 ) -> None:
        if not isinstance(maxsize, int) or isinstance(maxsize, bool):
            raise TypeError(f"maxsize must be an int, not {type(maxsize).__name__}")
        options = {"num_cpus": 0, **(actor_options or {})}
        self.maxsize = maxsize
        #: The handle of the actor holding the items; None after ``shutdown()``. Typed
        #: Any: its methods' results are Any anyway (``handle.method.remote()``).
        self.actor: Any = graphstore.remote(_QueueActor).options(**options).remote(maxsize)

    def __len__(self) -> int:
        return self.size()

    def size(self) -> int:
        """The number of items in the queue (it may change at once)."""
        size: int = graphstore.get(self.actor.qsize.remote())
        return size

    def qsize(self) -> int:
        return self.size()

    def empty(self) -> bool:
        empty: bool = graphstore.get(self.actor.empty.remote())
        return empty

    def full(self) -> bool:
        full: bool = graphstore.get(self.actor.full.remote())
        return full

    # -- put ------------------------------------------------------------------------------
    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        """Add ``item``; if the queue is full, wait (at most ``timeout`` seconds) when
        ``block``, else raise ``Full`` at once."""
        if not block:
            return self.put_nowait(item)
        _check_timeout(timeout)
        if not graphstore.get(self.actor.put.remote(item, timeout)):
            raise Full
        return None

    async def put_async(self, item: Any, block: bool = True,
                        timeout: float | None = None) -> None:
        """``put`` for coroutines: awaits instead of blocking the event loop."""
        if not block:
            if not await self.actor.put_nowait.remote(item):
                raise Full
            return None
        _check_timeout(timeout)
        if not await self.actor.put.remote(item, timeout):
            raise Full
        return None

    def put_nowait(self, item: Any) -> None:
        if not graphstore.get(self.actor.put_nowait.remote(item)):
            raise Full

    def put_nowait_batch(self, items: list[Any] | tuple[Any, ...]) -> None:
        """Add all of ``items`` at once, or raise ``Full`` and add none."""
        if not isinstance(items, (list, tuple)):
            raise TypeError(f"items must be a list or tuple, not {type(items).__name__}")
        if not graphstore.get(self.actor.put_nowait_batch.remote(list(items))):
            raise Full(f"cannot add {len(items)} items to a queue of maxsize "
                       f"{self.maxsize}: not enough room")

    # -- get ------------------------------------------------------------------------------
    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        """Take the oldest item; if the queue is empty, wait (at most ``timeout``
        seconds) when ``block``, else raise ``Empty`` at once."""
        if not block:
            return self.get_nowait()
        _check_timeout(timeout)
        found, item = graphstore.get(self.actor.get.remote(timeout))
        if not found:
            raise Empty
        return item

    async def get_async(self, block: bool = True, timeout: float | None = None) -> Any:
        """``get`` for coroutines: awaits instead of blocking the event loop."""
        if not block:
            found, item = await self.actor.get_nowait.remote()
        else:
            _check_timeout(timeout)
            found, item = await self.actor.get.remote(timeout)
        if not found:
            raise Empty
        return item

    def get_nowait(self) -> Any:
        found, item = graphstore.get(self.actor.get_nowait.remote())
        if not found:
            raise Empty
        return item

    def get_nowait_batch(self, num_items: int) -> list[Any]:
        """Take ``num_items`` items at once, or raise ``Empty`` and take none."""
        if not isinstance(num_items, int) or isinstance(num_items, bool):
            raise TypeError(f"num_items must be an int, not {type(num_items).__name__}")
        if num_items < 0:
            raise ValueError("'num_items' must be nonnegative")
        found, items = graphstore.get(self.actor.get_nowait_batch.remote(num_items))
        if not found:
            raise Empty(f"cannot get {num_items} items from a queue of fewer")
        taken: list[Any] = items
        return taken

    def shutdown(self, force: bool = False, grace_period_s: int = 5) -> None:
        """Stop the queue's actor (its items are gone). ``force`` kills it at once;
        otherwise it is let go like any actor without handles, after the calls already
        made to it."""
        if self.actor is None:
            return
        if force:
            graphstore.kill(self.actor, no_restart=True)
        self.actor = None


def _check_timeout(timeout: float | None) -> None:
    if timeout is not None and timeout < 0:
        raise ValueError("'timeout' must be a non-negative number")
