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
    """What ``get`` raises when the queue has no item to give: a ``queue.Empty``."""
    pass


class Full(_stdlib_queue.Full):
    """What ``put`` raises when the queue has no room: a ``queue.Full``."""
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
    """A FIFO queue usable from any process of the cluster, as Ray's
    ``ray.util.queue.Queue``.

    The items live in an actor (with ``num_cpus=0`` unless ``actor_options`` say), so
    drivers, tasks and actors holding the ``Queue`` (it pickles with its actor handle) put
    and get the same items. A blocked ``put``/``get`` waits inside the actor without
    holding it: other callers go on. Safe to use from several threads and processes at
    once; every method is one call to the actor.

    Args:
        maxsize: the most items it holds; ``<= 0`` means no bound.
        actor_options: options of the actor that holds the items, e.g.
            ``{"num_cpus": 0, "name": "jobs"}``.

    Raises:
        TypeError: ``maxsize`` is not an int.
    """

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
        """The number of items in the queue (it may change at once).

        Returns:
            How many items it holds now.
        """
        size: int = graphstore.get(self.actor.qsize.remote())
        return size

    def qsize(self) -> int:
        """As ``size``, ``queue.Queue``'s name.

        Returns:
            How many items it holds now.
        """
        return self.size()

    def empty(self) -> bool:
        """Whether the queue holds no item now.

        Returns:
            ``True`` if it is empty.
        """
        empty: bool = graphstore.get(self.actor.empty.remote())
        return empty

    def full(self) -> bool:
        """Whether the queue holds ``maxsize`` items now.

        Returns:
            ``True`` if a ``put`` would wait.
        """
        full: bool = graphstore.get(self.actor.full.remote())
        return full

    # -- put ------------------------------------------------------------------------------
    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        """Add ``item`` at the end.

        Args:
            item: any picklable object.
            block: if the queue is full, wait for room (at most ``timeout`` seconds);
                ``False``: raise ``Full`` at once.
            timeout: seconds to wait at most; ``None`` waits for ever.

        Raises:
            Full: no room within ``timeout``, or at once when not ``block``.
                ValueError: ``timeout`` is negative.
        """
        if not block:
            return self.put_nowait(item)
        _check_timeout(timeout)
        if not graphstore.get(self.actor.put.remote(item, timeout)):
            raise Full
        return None

    async def put_async(self, item: Any, block: bool = True,
                        timeout: float | None = None) -> None:
        """``put`` for coroutines: awaits instead of blocking the event loop.

        Args:
            item: any picklable object.
            block: as for ``put``.
            timeout: as for ``put``.

        Raises:
            Full: as for ``put``.
                ValueError: ``timeout`` is negative.
        """
        if not block:
            if not await self.actor.put_nowait.remote(item):
                raise Full
            return None
        _check_timeout(timeout)
        if not await self.actor.put.remote(item, timeout):
            raise Full
        return None

    def put_nowait(self, item: Any) -> None:
        """``put(item, block=False)``: add ``item`` or raise ``Full`` at once.

        Args:
            item: any picklable object.

        Raises:
            Full: the queue is full.
        """
        if not graphstore.get(self.actor.put_nowait.remote(item)):
            raise Full

    def put_nowait_batch(self, items: list[Any] | tuple[Any, ...]) -> None:
        """Add all of ``items`` at once, or none.

        Args:
            items: a list or tuple of items, added in order.

        Raises:
            Full: there is no room for all of them; none was added.
            TypeError: ``items`` is not a list or tuple.
        """
        if not isinstance(items, (list, tuple)):
            raise TypeError(f"items must be a list or tuple, not {type(items).__name__}")
        if not graphstore.get(self.actor.put_nowait_batch.remote(list(items))):
            raise Full(f"cannot add {len(items)} items to a queue of maxsize "
                       f"{self.maxsize}: not enough room")

    # -- get ------------------------------------------------------------------------------
    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        """Take the oldest item.

        Args:
            block: if the queue is empty, wait for an item (at most ``timeout`` seconds);
                ``False``: raise ``Empty`` at once.
            timeout: seconds to wait at most; ``None`` waits for ever.

        Returns:
            The item.

        Raises:
            Empty: no item within ``timeout``, or at once when not ``block``.
                ValueError: ``timeout`` is negative.
        """
        if not block:
            return self.get_nowait()
        _check_timeout(timeout)
        found, item = graphstore.get(self.actor.get.remote(timeout))
        if not found:
            raise Empty
        return item

    async def get_async(self, block: bool = True, timeout: float | None = None) -> Any:
        """``get`` for coroutines: awaits instead of blocking the event loop.

        Args:
            block: as for ``get``.
            timeout: as for ``get``.

        Returns:
            The item.

        Raises:
            Empty: as for ``get``.
                ValueError: ``timeout`` is negative.
        """
        if not block:
            found, item = await self.actor.get_nowait.remote()
        else:
            _check_timeout(timeout)
            found, item = await self.actor.get.remote(timeout)
        if not found:
            raise Empty
        return item

    def get_nowait(self) -> Any:
        """``get(block=False)``: take the oldest item or raise ``Empty`` at once.

        Returns:
            The item.

        Raises:
            Empty: the queue is empty.
        """
        found, item = graphstore.get(self.actor.get_nowait.remote())
        if not found:
            raise Empty
        return item

    def get_nowait_batch(self, num_items: int) -> list[Any]:
        """Take ``num_items`` items at once, or none.

        Args:
            num_items: how many to take.

        Returns:
            The items, oldest first.

        Raises:
            Empty: the queue holds fewer than ``num_items``; none was taken.
            TypeError: ``num_items`` is not an int.
            ValueError: ``num_items`` is negative.
        """
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
        """Stop the queue's actor; its items are gone.

        Args:
            force: kill the actor at once; otherwise it is let go like any actor without
                handles, after the calls already made to it.
            grace_period_s: accepted for Ray's signature.
        """
        if self.actor is None:
            return
        if force:
            graphstore.kill(self.actor, no_restart=True)
        self.actor = None


def _check_timeout(timeout: float | None) -> None:
    if timeout is not None and timeout < 0:
        raise ValueError("'timeout' must be a non-negative number")
