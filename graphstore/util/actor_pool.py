"""``ActorPool``: spread calls over a fixed set of actors, as Ray's ``ray.util.ActorPool``.

A call is made with ``fn(actor, value)`` on an idle actor, or waits in the pool until one
is free (an actor is free again once its result has been taken with ``get_next`` or
``get_next_unordered``). Results come back in submission order (``get_next``, ``map``)
or as they finish (``get_next_unordered``, ``map_unordered``). Built on the public API
only: ``wait`` and ``get``.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator, Union

import graphstore
from graphstore.core.object_ref import ObjectRef

__all__ = ["ActorPool"]

_TIMED_OUT = "Timed out waiting for result"

#: What ``fn(actor, value)`` returns: a ref, or the refs of a multi-result call.
_Future = Union[ObjectRef[Any], list[ObjectRef[Any]]]
#: A future as a dict key: a ref, or a tuple of refs.
_Key = Union[ObjectRef[Any], tuple[ObjectRef[Any], ...]]
#: ``fn(actor, value)``: makes one call on ``actor`` (typically ``actor.method.remote``).
_CallFn = Callable[[Any, Any], Any]


class ActorPool:
    """A pool of actors to run ``fn(actor, value)`` calls on, one call per actor at a time,
    as Ray's ``ray.util.ActorPool``.

    The pool is driven by one thread: its methods keep unlocked bookkeeping, so do not
    share one pool between threads.

    >>> pool = ActorPool([Worker.remote(), Worker.remote()])
    >>> list(pool.map(lambda a, v: a.double.remote(v), [1, 2, 3, 4]))
    [2, 4, 6, 8]

    Args:
        actors: the actors' handles; the pool owns them while it holds them.
    """

    def __init__(self, actors: Iterable[Any]) -> None:
        self._idle_actors: list[Any] = list(actors)
        #: Key of a result's ref -> (submission index, the actor running it).
        self._future_to_actor: dict[_Key, tuple[int, Any]] = {}
        #: Submission index -> ref(s), for results not taken yet.
        self._index_to_future: dict[int, _Future] = {}
        self._next_task_index = 0
        self._next_return_index = 0
        #: (fn, value) submitted while every actor was busy, in order.
        self._pending_submits: list[tuple[_CallFn, Any]] = []

    # -- submitting ---------------------------------------------------------------------
    def map(self, fn: _CallFn, values: Iterable[Any]) -> Iterator[Any]:
        """Run ``fn(actor, v)`` for each ``v`` and yield the results in the order of
        ``values``.

        Results of earlier submissions not taken yet are dropped first.

        Args:
            fn: called as ``fn(actor, value)``; must return the ref (or list of refs) of an
                actor call.
            values: the values, read as actors become free.

        Returns:
            An iterator of the results' values, in the order of ``values``; it raises a call's
            error when it reaches that call.
        """
        return self._map(fn, values, self.get_next)

    def map_unordered(self, fn: _CallFn, values: Iterable[Any]) -> Iterator[Any]:
        """As ``map``, yielding each result as soon as it is ready.

        Args:
            fn: as for ``map``.
            values: as for ``map``.

        Returns:
            An iterator of the results' values, in the order they finish.
        """
        return self._map(fn, values, self.get_next_unordered)

    def _map(self, fn: _CallFn, values: Iterable[Any], take: Callable[[], Any]
             ) -> Iterator[Any]:
        self._drop_unread()
        for value in values:
            self.submit(fn, value)

        def results() -> Iterator[Any]:
            while self.has_next():
                yield take()
        return results()

    def submit(self, fn: _CallFn, value: Any) -> None:
        """Call ``fn(actor, value)`` on an idle actor, or queue the call until an actor is free.

        Args:
            fn: called as ``fn(actor, value)``; must return the ref (or list of refs) of an
                actor call.
            value: the value to pass.

        Raises:
            TypeError: ``fn`` is not callable, or did not return a ref or a list of refs.
        """
        if not callable(fn):
            raise TypeError(f"fn must be callable as fn(actor, value), not "
                            f"{type(fn).__name__}")
        if self._idle_actors:
            actor = self._idle_actors.pop()
            future = fn(actor, value)
            _check_refs(future)
            self._future_to_actor[_key(future)] = (self._next_task_index, actor)
            self._index_to_future[self._next_task_index] = future
            self._next_task_index += 1
        else:
            self._pending_submits.append((fn, value))

    # -- results ------------------------------------------------------------------------
    def has_next(self) -> bool:
        """Whether a submitted call's result has not been taken yet.

        Returns:
            ``True`` if ``get_next`` has a result to give.
        """
        return bool(self._future_to_actor)

    def get_next(self, timeout: float | None = None,
                 ignore_if_timedout: bool = False) -> Any:
        """The next result in submission order, once it is ready.

        Args:
            timeout: seconds to wait at most; ``None`` waits for ever.
            ignore_if_timedout: on a timeout, drop that result (its actor goes back to the
                pool) before raising.

        Returns:
            The value of the next submitted call.

        Raises:
            StopIteration: no result is left to get.
            ValueError: the pending results were taken by ``get_next_unordered`` already.
            TimeoutError: the result was not ready within ``timeout``.
            TaskError: the call raised (as ``graphstore.get`` raises it).
        """
        if not self.has_next():
            raise StopIteration("No more results to get")
        if self._next_return_index >= self._next_task_index:
            raise ValueError("It is not allowed to call get_next() after "
                             "get_next_unordered().")
        future = self._index_to_future[self._next_return_index]
        ignored = False
        if timeout is not None:
            refs = _as_list(future)
            ready, _ = graphstore.wait(refs, num_returns=len(refs), timeout=timeout)
            if len(ready) < len(refs):
                if not ignore_if_timedout:
                    raise TimeoutError(_TIMED_OUT)
                ignored = True
        del self._index_to_future[self._next_return_index]
        self._next_return_index += 1
        _, actor = self._future_to_actor.pop(_key(future))
        self._return_actor(actor)
        if ignored:
            raise TimeoutError(f"{_TIMED_OUT}. The task {future} has been ignored.")
        return graphstore.get(future)

    def get_next_unordered(self, timeout: float | None = None,
                           ignore_if_timedout: bool = False) -> Any:
        """Any next result, the first to be ready.

        Args:
            timeout: seconds to wait at most; ``None`` waits for ever.
            ignore_if_timedout: accepted for Ray's signature.

        Returns:
            The value of whichever pending call finished first.

        Raises:
            StopIteration: no result is left to get.
            TimeoutError: no result was ready within ``timeout``.
            TaskError: the call raised (as ``graphstore.get`` raises it).
        """
        if not self.has_next():
            raise StopIteration("No more results to get")
        refs = [ref for key in self._future_to_actor for ref in _refs_of(key)]
        ready, _ = graphstore.wait(refs, num_returns=1, timeout=timeout)
        if not ready:
            raise TimeoutError(_TIMED_OUT)
        key = next(k for k in self._future_to_actor if ready[0] in _refs_of(k))
        future = _from_key(key)
        if isinstance(future, list):     # every ref of a multi-result call
            graphstore.wait(future, num_returns=len(future), timeout=timeout)
        index, actor = self._future_to_actor.pop(key)
        self._return_actor(actor)
        del self._index_to_future[index]
        self._next_return_index = max(self._next_return_index, index + 1)
        return graphstore.get(future)

    # -- the actors -----------------------------------------------------------------------
    def has_free(self) -> bool:
        """Whether an actor is idle and no call waits for one.

        Returns:
            ``True`` if a ``submit`` would start at once.
        """
        return bool(self._idle_actors) and not self._pending_submits

    def pop_idle(self) -> Any:
        """Take an idle actor out of the pool.

        Returns:
            The actor's handle; None if none is free.
        """
        return self._idle_actors.pop() if self.has_free() else None

    def push(self, actor: Any) -> None:
        """Add an actor to the pool; it takes a waiting call at once, if any.

        Args:
            actor: the actor's handle.

        Raises:
            ValueError: the actor is in the pool already.
        """
        busy = [entry[1] for entry in self._future_to_actor.values()]
        if any(actor is a or actor == a for a in self._idle_actors + busy):
            raise ValueError("Actor already belongs to current ActorPool")
        self._return_actor(actor)

    def _return_actor(self, actor: Any) -> None:
        self._idle_actors.append(actor)
        if self._pending_submits:
            self.submit(*self._pending_submits.pop(0))

    def _drop_unread(self) -> None:
        """Forget results of earlier submissions nobody took (their actors are freed)."""
        while self.has_next():
            try:
                self.get_next(timeout=0, ignore_if_timedout=True)
            except TimeoutError:
                pass


def _check_refs(future: object) -> None:
    refs = future if isinstance(future, list) else [future]
    if not refs or not all(isinstance(r, ObjectRef) for r in refs):
        raise TypeError(f"fn(actor, value) must return an ObjectRef (e.g. "
                        f"actor.method.remote(value)) or a list of them, not "
                        f"{type(future).__name__}")


def _key(future: _Future) -> _Key:
    return tuple(future) if isinstance(future, list) else future


def _from_key(key: _Key) -> _Future:
    return list(key) if isinstance(key, tuple) else key


def _refs_of(key: _Key) -> tuple[ObjectRef[Any], ...]:
    return key if isinstance(key, tuple) else (key,)


def _as_list(future: _Future) -> list[ObjectRef[Any]]:
    return future if isinstance(future, list) else [future]
