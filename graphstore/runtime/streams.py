"""The caller's side of streaming generators: ``ObjectRefGenerator``, and the table of the
streams this process iterates.

``f.remote()`` of a streaming generator task (or actor method) returns an
``ObjectRefGenerator`` at once. Its stream is opened before the call leaves, so nothing
the scheduler announces can come before it. As the task yields, the scheduler announces
each value (``GeneratorItemReady``, in order, with the value when small); the loop thread
makes a ref of it, held for this process, and wakes whoever waits in ``next``. The
task's own result (the *generator object*, ``completed()``) is the number of values it
yielded, or, when the task could not finish (its worker or actor died, it was cancelled
before it ran), that error: handed out after the values that came, as Ray does.

An error raised inside the generator is a value of its own (its ref raises), after which
the iteration stops. Dropping the generator drops the refs not handed out yet, and the
scheduler hands no more to it.

Thread-safety: the table's methods may be called from any thread, except ``item_ready``
and ``completed``, which the loop thread calls; one (reentrant) lock guards every
stream. Pure: no sockets, no loop; wakers and refs are handed in. A generator
itself, as in Ray, is for one thread (or one event loop) at a time.
"""
from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, Callable, Generic, TypeVar

from graphstore.core.object_ref import ObjectRef
from graphstore.core.serialization import loads
from graphstore.runtime.waiting import Waiter

if TYPE_CHECKING:
    from graphstore.runtime.runtime import Runtime

#: ``poll`` found the stream at its end.
_END = object()


class _Stream:
    __slots__ = ("refs", "next", "count", "failed", "error_given", "wakers")

    def __init__(self) -> None:
        #: Refs that came and were not handed out yet, by index.
        self.refs: dict[int, ObjectRef[Any]] = {}
        #: Index of the next ref to hand out.
        self.next = 0
        #: How many values the task yielded, once it ended; ``failed``: it could not end.
        self.count: int | None = None
        self.failed = False
        self.error_given = False
        #: Called (by the loop thread) at the next change; each one is called once.
        self.wakers: list[Callable[[], None]] = []


class StreamTable:
    """The streams of this process's ``ObjectRefGenerator``s, by generator id."""

    def __init__(self) -> None:
        # Reentrant: a generator's finalizer (``close``) may run in this thread, at a
        # garbage collection, while the lock is held.
        self._lock = threading.RLock()
        #: Open streams by generator id (the runtime reads whether there are any).
        self.by_id: dict[bytes, _Stream] = {}

    def open(self, generator_id: bytes) -> None:
        """Before the call is sent: announcements of it find their stream."""
        with self._lock:
            self.by_id[generator_id] = _Stream()

    def close(self, generator_id: bytes) -> None:
        """The generator is gone: refs not handed out are dropped (outside the lock, as
        dropping a ref reports to the runtime)."""
        with self._lock:
            stream = self.by_id.pop(generator_id, None)
        if stream is not None:
            stream.refs.clear()

    def abort(self) -> None:
        """The connection is gone: every stream ends, with the generator object's error
        (its get raises that the cluster is gone)."""
        with self._lock:
            streams = list(self.by_id.values())
            wakers: list[Callable[[], None]] = []
            for stream in streams:
                if stream.count is None:
                    stream.failed = True
                wakers += stream.wakers
                stream.wakers = []
        for wake in wakers:
            wake()

    # -- the loop thread ------------------------------------------------------------------
    def item_ready(self, generator_id: bytes, index: int, ref: ObjectRef[Any]) -> None:
        """The ``index``-th value came, as ``ref`` (held for this process). A stream
        closed meanwhile drops it, which releases it."""
        with self._lock:
            stream = self.by_id.get(generator_id)
            if stream is None or index < stream.next:
                return
            stream.refs[index] = ref
            wakers, stream.wakers = stream.wakers, []
        for wake in wakers:
            wake()

    def completed(self, generator_id: bytes, payload: Any, error: object) -> None:
        """The task ended (``payload``: how many values it yielded) or failed."""
        with self._lock:
            stream = self.by_id.get(generator_id)
            if stream is None or stream.count is not None or stream.failed:
                return
            if error is not None:
                stream.failed = True
            else:
                try:
                    stream.count = int(loads(payload))
                except Exception:
                    stream.failed = True
            wakers, stream.wakers = stream.wakers, []
        for wake in wakers:
            wake()

    # -- the generator's thread -----------------------------------------------------------
    def poll(self, generator_id: bytes, completion: ObjectRef[Any],
             waker: Callable[[], None] | None = None, take: bool = True) -> Any:
        """The next ref (handed out unless ``take`` is false), ``_END``, or None when it
        has not come yet (then ``waker`` is called at the next change)."""
        with self._lock:
            stream = self.by_id.get(generator_id)
            if stream is None:
                return _END
            ref = stream.refs.get(stream.next)
            if ref is not None:
                if take:
                    del stream.refs[stream.next]
                    stream.next += 1
                return ref
            if stream.count is not None and stream.next >= stream.count:
                return _END
            if stream.failed:
                if stream.error_given:
                    return _END
                stream.error_given = take
                return completion       # its get raises why the task could not end
            if waker is not None:
                stream.wakers.append(waker)
            return None

    def finished(self, generator_id: bytes) -> bool:
        """Whether every value was handed out (``next`` would stop)."""
        with self._lock:
            stream = self.by_id.get(generator_id)
            if stream is None:
                return True
            if stream.count is not None:
                return stream.next >= stream.count and not stream.refs
            return stream.failed and stream.error_given


#: The type of the values a generator yields (``ObjectRefGenerator[int]``).
Y_co = TypeVar("Y_co", covariant=True)


class ObjectRefGenerator(Generic[Y_co]):
    """What ``f.remote()`` returns for a streaming generator: the refs of the values the
    task yields, as it yields them. ``for ref in gen`` / ``next(gen)`` wait for the next
    one; ``async for`` / ``await gen.__anext__()`` too, without blocking the event loop.
    The iteration stops once the task returned; an error raised in the task is the last
    ref (getting it raises). ``completed()`` is a ref that is ready once the task ended.

    Not picklable (as in Ray): iterate it where it was made, and pass the refs on."""

    def __init__(self, generator_ref: ObjectRef[Any], runtime: "Runtime") -> None:
        self._generator_ref = generator_ref
        self._runtime = runtime
        self._table = runtime.streams

    def __iter__(self) -> "ObjectRefGenerator[Y_co]":
        return self

    def __next__(self) -> ObjectRef[Y_co]:
        ref = self._next_sync(None)
        if ref is None:
            raise StopIteration
        return ref

    def _next_sync(self, timeout: float | None) -> ObjectRef[Y_co] | None:
        """The next ref; None at the end; TimeoutError if none came in ``timeout``."""
        generator_id = self._generator_ref._id
        while True:
            waiter = Waiter(1)
            found = self._table.poll(generator_id, self._generator_ref,
                                     lambda: waiter.arrived(None))  # type: ignore[arg-type]
            if found is _END:
                return None
            if found is not None:
                ref: ObjectRef[Y_co] = found
                return ref
            if not self._runtime.wait_blocking(waiter, timeout):
                raise TimeoutError(f"no value of the generator came in {timeout} s")

    def __aiter__(self) -> "ObjectRefGenerator[Y_co]":
        return self

    async def __anext__(self) -> ObjectRef[Y_co]:
        generator_id = self._generator_ref._id
        loop = asyncio.get_running_loop()
        while True:
            future = loop.create_future()

            def wake(future: asyncio.Future[None] = future) -> None:
                loop.call_soon_threadsafe(_resolve, future)
            found = self._table.poll(generator_id, self._generator_ref, wake)
            if found is _END:
                raise StopAsyncIteration
            if found is not None:
                ref: ObjectRef[Y_co] = found
                return ref
            await future

    def completed(self) -> ObjectRef[int]:
        """A ref that is ready once the task ended.

        Returns:
            A ref whose value is how many values the task yielded; ``get`` of it raises if the
            task could not end (its worker died, it was cancelled).
        """
        return self._generator_ref

    def next_ready(self) -> bool:
        """Whether ``next`` would return without waiting.

        Returns:
            ``True`` if a ref (or the end of the stream) is already here.
        """
        return self._table.poll(self._generator_ref._id, self._generator_ref,
                                take=False) is not None

    def is_finished(self) -> bool:
        """Whether every ref was handed out.

        Returns:
            ``True`` once the task ended and iteration has taken its last ref.
        """
        return self._table.finished(self._generator_ref._id)

    def __repr__(self) -> str:
        return f"ObjectRefGenerator({self._generator_ref.hex()})"

    def __reduce__(self) -> Any:
        raise TypeError("an ObjectRefGenerator cannot be pickled or passed to a task: "
                        "iterate it where it was made, and pass the refs it yields")

    def __del__(self) -> None:
        try:
            self._table.close(self._generator_ref._id)
        except Exception:     # interpreter shutdown
            pass


def wait_with_generators(runtime: "Runtime", items: list[Any], num_returns: int,
                         timeout: float | None) -> tuple[list[Any], list[Any]]:
    """``wait`` over refs and ``ObjectRefGenerator``s (as in Ray): a generator is ready
    when ``next`` would not block (a ref came, or the iteration ended). ``(ready,
    not_ready)``, each in the order of ``items``."""
    if not 0 <= num_returns <= len(items):
        raise ValueError(f"num_returns={num_returns} must be between 0 and the number of "
                         f"refs ({len(items)})")
    table = runtime.streams
    deadline = None if timeout is None else time.monotonic() + timeout
    #: Refs not here yet -> a future that says when they come.
    futures: dict[ObjectRef[Any], Future[Any]] = {}
    while True:
        waiter = Waiter(1)

        def wake(waiter: Waiter = waiter) -> None:
            waiter.arrived(None)  # type: ignore[arg-type]  # a lock waiter: no value
        ready: list[Any] = []
        not_ready: list[Any] = []
        for item in items:
            if isinstance(item, ObjectRefGenerator):
                here = table.poll(item._generator_ref._id, item._generator_ref, wake,
                                  take=False) is not None
            else:
                here = not runtime.missing_locally([item._id])
                if not here and item not in futures:
                    futures[item] = future = runtime.future(item)
                    future.add_done_callback(
                        lambda f, wake=wake: wake())  # type: ignore[misc]
                elif not here:
                    futures[item].add_done_callback(
                        lambda f, wake=wake: wake())  # type: ignore[misc]
            (ready if here and len(ready) < num_returns else not_ready).append(item)
        if len(ready) >= num_returns:
            return ready, not_ready
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            return ready, not_ready
        runtime.wait_blocking(waiter, remaining)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
