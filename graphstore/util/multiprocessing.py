"""``Pool``: a drop-in for ``multiprocessing.Pool`` whose processes are graphstore actors,
as Ray's ``ray.util.multiprocessing.Pool``.

Each of the pool's ``processes`` is an actor: ``initializer(*initargs)`` runs once in it,
so state it sets up (globals, connections) is there for every call it serves, as in a
process of the standard library's pool. The function is put in the object store once
per call of ``map`` (each actor keeps the last few it used); work goes to the actors in
chunks, round robin, queued in each actor; results come back in order (``map``, ``imap``) or as they finish
(``imap_unordered``). Errors are raised as the standard library raises them: the first
failing item's exception, of its own type. ``maxtasksperchild``: an actor that was given
that many chunks is let go once it has served them, and a fresh one takes its place.
"""
from __future__ import annotations

import itertools
import multiprocessing as _stdlib_mp
import os
import queue as _queue
import threading
from typing import Any, Callable, Generic, Iterable, Iterator, TypeVar

import graphstore
from graphstore.core.object_ref import ObjectRef

__all__ = ["Pool", "AsyncResult", "TimeoutError"]

TimeoutError = _stdlib_mp.TimeoutError

T = TypeVar("T")
S = TypeVar("S")
#: ``callback`` / ``error_callback`` of the ``*_async`` methods.
_Callback = Callable[[Any], object]
_ErrorCallback = Callable[[BaseException], object]


class _PoolProcess:
    """One process of the pool."""

    def __init__(self, initializer: Callable[..., object] | None,
                 initargs: tuple[Any, ...]) -> None:
        if initializer is not None:
            initializer(*initargs)
        #: Functions by the ref they were put under (the pool puts each once, so a
        #: chunk carries a ref, not the pickled function): the last few used.
        self._functions: dict[ObjectRef[Any], Callable[..., Any]] = {}

    def run(self, boxed_function: list[ObjectRef[Any]], chunk: list[Any], star: bool
            ) -> list[Any]:
        func = self._function(boxed_function[0])
        if star:
            return [func(*args) for args in chunk]
        return [func(arg) for arg in chunk]

    def _function(self, ref: ObjectRef[Any]) -> Callable[..., Any]:
        func = self._functions.pop(ref, None)
        if func is None:
            func = graphstore.get(ref)
            if len(self._functions) >= 8:
                del self._functions[next(iter(self._functions))]
        self._functions[ref] = func          # most recently used last
        return func

    def pid(self) -> int:
        return os.getpid()

    def stop(self) -> None:
        """Queued behind the calls the actor was given: it ends once it served them,
        and its CPU goes back to the cluster."""
        graphstore.actor.exit_actor()


class AsyncResult(Generic[T]):
    """The result of ``apply_async``/``map_async``/``starmap_async``, as the standard
    library's ``AsyncResult``.
    """

    def __init__(self, refs: list[ObjectRef[list[Any]]], single: bool,
                 callback: _Callback | None = None,
                 error_callback: _ErrorCallback | None = None) -> None:
        self._refs = refs
        self._single = single
        self._callback = callback
        self._error_callback = error_callback
        self._done = threading.Event()
        self._value: Any = None
        self._error: BaseException | None = None

    def ready(self) -> bool:
        """Whether the call (every chunk of it) is done.

        Returns:
            ``True`` once every chunk finished, with a value or an error.
        """
        if not self._done.is_set():
            ready, _ = graphstore.wait(self._refs, num_returns=len(self._refs), timeout=0)
            if len(ready) == len(self._refs):
                self._settle()
        return self._done.is_set()

    def successful(self) -> bool:
        """Whether the call finished without an error.

        Returns:
            ``True`` if no chunk raised.

        Raises:
            ValueError: the call is not done yet.
        """
        if not self.ready():
            raise ValueError(f"{self!r} not ready")
        return self._error is None

    def wait(self, timeout: float | None = None) -> None:
        """Wait until the call is done or ``timeout`` passes.

        Args:
            timeout: seconds to wait at most; ``None`` waits for ever.
        """
        if not self._done.is_set():
            graphstore.wait(self._refs, num_returns=len(self._refs), timeout=timeout)
            self.ready()

    def get(self, timeout: float | None = None) -> T:
        """The call's value, once it is done.

        Args:
            timeout: seconds to wait at most; ``None`` waits for ever.

        Returns:
            The function's value for ``apply_async``; the list of values, in order, for the
            maps.

        Raises:
            multiprocessing.TimeoutError: not done within ``timeout``.
            Exception: the first failing item's exception, of its own type.
        """
        self.wait(timeout)
        if not self._done.is_set():
            raise TimeoutError
        if self._error is not None:
            raise self._error
        value: T = self._value
        return value

    def _settle(self) -> None:
        """All chunks are done: take the value (or the first error), once."""
        if self._done.is_set():
            return
        try:
            chunks = graphstore.get(self._refs)
            values = [value for chunk in chunks for value in chunk]
            self._value = values[0] if self._single else values
        except Exception as exc:
            self._error = exc
        self._done.set()

    def _run_callbacks(self) -> None:
        """The pool's result thread: once done, call the callback (or error_callback)."""
        self.wait()
        if self._error is None and self._callback is not None:
            self._callback(self._value)
        elif self._error is not None and self._error_callback is not None:
            self._error_callback(self._error)


class Pool:
    """A drop-in ``multiprocessing.Pool`` whose processes are graphstore actors, as Ray's
    ``ray.util.multiprocessing.Pool``.

    Each process is an actor: ``initializer(*initargs)`` runs once in it. Without a
    cluster, it starts a local one, as Ray's does. A pool may be used from several threads;
    submissions take a lock.

    Args:
        processes: how many actors; default: the cluster's CPUs.
        initializer: run once in each actor, before any work.
        initargs: ``initializer``'s arguments.
        maxtasksperchild: an actor given that many chunks is replaced by a fresh one once
            it has served them; ``None``: never.
        context: accepted for compatibility and ignored.
        ray_remote_args: the options of each actor (Ray's name), e.g. ``{"num_cpus": 1}``
            (the default: each process holds one CPU, as a process would).

    Raises:
        TypeError: ``processes`` is not an int, or ``initializer`` is not callable.
        ValueError: ``processes`` is less than 1, or ``maxtasksperchild`` is not a
            positive int or None.
    """

    def __init__(self, processes: int | None = None,
                 initializer: Callable[..., object] | None = None,
                 initargs: Iterable[Any] = (), maxtasksperchild: int | None = None,
                 context: Any = None, ray_remote_args: dict[str, Any] | None = None
                 ) -> None:
        from graphstore import session
        session.runtime_or_auto_init()           # as Ray's Pool: starts a local cluster
        if processes is None:
            processes = max(1, int(graphstore.cluster_resources().get("CPU", 1)))
        if isinstance(processes, bool) or not isinstance(processes, int):
            raise TypeError(f"processes must be an int, not {type(processes).__name__}")
        if processes < 1:
            raise ValueError("Number of processes must be at least 1")
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        if maxtasksperchild is not None and (isinstance(maxtasksperchild, bool)
                                             or not isinstance(maxtasksperchild, int)
                                             or maxtasksperchild < 1):
            raise ValueError("maxtasksperchild must be a positive int or None")
        self._processes = processes
        self._initializer = initializer
        self._initargs = tuple(initargs)
        self._maxtasksperchild = maxtasksperchild
        options = {"num_cpus": 1, **(ray_remote_args or {})}
        self._actor_class = graphstore.remote(_PoolProcess).options(**options)
        self._actors = [self._new_actor() for _ in range(processes)]
        self._given = [0] * processes          # chunks given to each actor
        #: The last chunk's ref, per actor.
        self._last: list[ObjectRef[list[Any]] | None] = [None] * processes
        #: The last chunk given to each actor replaced after ``maxtasksperchild`` chunks
        #: (an actor serves its calls in order), and after ``close`` each actor's
        #: ``stop``: what ``join`` waits for. Not a replaced actor's handle: without
        #: handles it goes, and frees its CPU, once it has served them.
        self._retired: list[ObjectRef[Any]] = []
        self._next = itertools.count()
        self._state = "running"
        self._lock = threading.Lock()
        self._callbacks: _queue.Queue[AsyncResult[Any] | None] | None = None
        self._result_thread: threading.Thread | None = None

    def _new_actor(self) -> graphstore.ActorHandle[_PoolProcess]:
        return self._actor_class.remote(self._initializer, self._initargs)

    # -- the standard library's interface ---------------------------------------------
    def apply(self, func: Callable[..., T], args: Iterable[Any] = (),
              kwds: dict[str, Any] | None = None) -> T:
        """``func(*args, **kwds)`` in one of the processes; waits for it.

        Args:
            func: a picklable callable.
            args: its positional arguments.
            kwds: its keyword arguments.

        Returns:
            Its value.

        Raises:
            ValueError: the pool was closed or terminated.
            Exception: what ``func`` raised, of its own type.
        """
        return self.apply_async(func, args, kwds).get()

    def apply_async(self, func: Callable[..., T], args: Iterable[Any] = (),
                    kwds: dict[str, Any] | None = None,
                    callback: Callable[[T], object] | None = None,
                    error_callback: _ErrorCallback | None = None) -> AsyncResult[T]:
        """``func(*args, **kwds)`` in one of the processes, without waiting.

        Args:
            func: a picklable callable.
            args: its positional arguments.
            kwds: its keyword arguments.
            callback: called with the value once it is there (in the pool's result thread).
            error_callback: called with the error instead, if it raised.

        Returns:
            The call's ``AsyncResult``.

        Raises:
            ValueError: the pool was closed or terminated.
        """
        self._check_running()
        call = _Call(func, tuple(args), dict(kwds or {}))
        return self._async([self._submit([graphstore.put(call)], [()], star=True)], True,
                           callback, error_callback)

    def map(self, func: Callable[[S], T], iterable: Iterable[S],
            chunksize: int | None = None) -> list[T]:
        """``func`` over the items of ``iterable``, in chunks spread over the processes; waits.

        Args:
            func: a picklable callable of one argument.
            iterable: the items (read at once).
            chunksize: items per chunk; default as the standard library's.

        Returns:
            The values, in the order of the items.

        Raises:
            ValueError: the pool was closed or terminated.
            TypeError: ``func`` is not callable.
            Exception: the first failing item's exception, of its own type.
        """
        return self.map_async(func, iterable, chunksize).get()

    def map_async(self, func: Callable[[S], T], iterable: Iterable[S],
                  chunksize: int | None = None,
                  callback: Callable[[list[T]], object] | None = None,
                  error_callback: _ErrorCallback | None = None) -> AsyncResult[list[T]]:
        """``map`` without waiting.

        Args:
            func: a picklable callable of one argument.
            iterable: the items (read at once).
            chunksize: items per chunk; default as the standard library's.
            callback: called with the list of values once all are there.
            error_callback: called with the error instead, if an item failed.

        Returns:
            The call's ``AsyncResult``.

        Raises:
            ValueError: the pool was closed or terminated.
            TypeError: ``func`` is not callable.
        """
        return self._map_async(func, iterable, chunksize, False, callback, error_callback)

    def starmap(self, func: Callable[..., T], iterable: Iterable[Iterable[Any]],
                chunksize: int | None = None) -> list[T]:
        """As ``map``, with each item unpacked as ``func``'s arguments.

        Args:
            func: a picklable callable.
            iterable: tuples of arguments (read at once).
            chunksize: items per chunk; default as the standard library's.

        Returns:
            The values, in the order of the items.

        Raises:
            ValueError: the pool was closed or terminated.
            TypeError: ``func`` is not callable.
            Exception: the first failing item's exception, of its own type.
        """
        return self.starmap_async(func, iterable, chunksize).get()

    def starmap_async(self, func: Callable[..., T], iterable: Iterable[Iterable[Any]],
                      chunksize: int | None = None,
                      callback: Callable[[list[T]], object] | None = None,
                      error_callback: _ErrorCallback | None = None
                      ) -> AsyncResult[list[T]]:
        """``starmap`` without waiting.

        Args:
            func: a picklable callable.
            iterable: tuples of arguments (read at once).
            chunksize: items per chunk; default as the standard library's.
            callback: called with the list of values once all are there.
            error_callback: called with the error instead, if an item failed.

        Returns:
            The call's ``AsyncResult``.

        Raises:
            ValueError: the pool was closed or terminated.
            TypeError: ``func`` is not callable.
        """
        return self._map_async(func, iterable, chunksize, True, callback, error_callback)

    def imap(self, func: Callable[[S], T], iterable: Iterable[S], chunksize: int = 1
             ) -> Iterator[T]:
        """Results in order, each as soon as it and those before it are ready.

        Args:
            func: a picklable callable of one argument.
            iterable: the items.
            chunksize: items per chunk.

        Returns:
            An iterator of the values in the order of the items; it raises an item's error
            when it reaches it.

        Raises:
            ValueError: the pool was closed or terminated.
            TypeError: ``func`` is not callable.
            ValueError: ``chunksize`` is less than 1.
        """
        refs = self._submit_chunks(func, iterable, chunksize, star=False)

        def results() -> Iterator[T]:
            for ref in refs:
                yield from graphstore.get(ref)
        return results()

    def imap_unordered(self, func: Callable[[S], T], iterable: Iterable[S],
                       chunksize: int = 1) -> Iterator[T]:
        """Results as they finish (a chunk's results together).

        Args:
            func: a picklable callable of one argument.
            iterable: the items.
            chunksize: items per chunk.

        Returns:
            An iterator of the values in the order they finish.

        Raises:
            ValueError: the pool was closed or terminated.
            TypeError: ``func`` is not callable.
            ValueError: ``chunksize`` is less than 1.
        """
        refs = self._submit_chunks(func, iterable, chunksize, star=False)

        def results() -> Iterator[T]:
            for ref in graphstore.as_completed(refs):
                yield from graphstore.get(ref)
        return results()

    def close(self) -> None:
        """No more work: each process ends once it has done what it was given (as in
        the standard library, and Ray), freeing its CPU; ``join`` waits for that."""
        with self._lock:
            if self._state != "running":
                return
            self._state = "closed"
            self._retired += [actor.stop.remote() for actor in self._actors]

    def terminate(self) -> None:
        """Stop the processes at once; work not finished is lost."""
        self._state = "terminated"
        for actor in self._actors:
            graphstore.kill(actor)
        self._retired = []

    def join(self) -> None:
        """Wait until every process has ended, after ``close`` or ``terminate``.

        Raises:
            ValueError: the pool is still running (call ``close`` first).
        """
        if self._state == "running":
            raise ValueError("Pool is still running")
        if self._state == "closed":       # every actor has served what it was given
            graphstore.wait(self._retired, num_returns=len(self._retired))
            self._retired = []
        if self._result_thread is not None:
            self._callbacks.put(None)  # type: ignore[union-attr]  # made with the thread
            self._result_thread.join()
            self._result_thread = None

    def __enter__(self) -> "Pool":
        self._check_running()
        return self

    def __exit__(self, *exc: object) -> None:
        self.terminate()

    # -- inside ---------------------------------------------------------------------------
    def _check_running(self) -> None:
        if self._state != "running":
            raise ValueError("Pool not running")

    def _map_async(self, func: Callable[..., Any], iterable: Iterable[Any],
                   chunksize: int | None, star: bool, callback: _Callback | None,
                   error_callback: _ErrorCallback | None) -> AsyncResult[Any]:
        items = list(iterable)
        if chunksize is None:            # the standard library's default
            chunksize, extra = divmod(len(items), self._processes * 4)
            if extra:
                chunksize += 1
        refs = self._submit_chunks(func, items, max(1, chunksize), star)
        return self._async(refs, False, callback, error_callback)

    def _submit_chunks(self, func: Callable[..., Any], iterable: Iterable[Any],
                       chunksize: int, star: bool) -> list[ObjectRef[list[Any]]]:
        self._check_running()
        if not callable(func):
            raise TypeError(f"{type(func).__name__!r} object is not callable")
        if isinstance(chunksize, bool) or not isinstance(chunksize, int) or chunksize < 1:
            raise ValueError(f"Chunksize must be 1+, not {chunksize!r}")
        items = iter(iterable)
        chunks = iter(lambda: list(itertools.islice(items, chunksize)), [])
        boxed = [graphstore.put(func)]      # in a list: the actor gets the ref itself
        return [self._submit(boxed, chunk, star) for chunk in chunks]

    def _submit(self, boxed_function: list[ObjectRef[Any]], chunk: list[Any], star: bool
                ) -> ObjectRef[list[Any]]:
        """One chunk to the next actor (round robin), replaced after
        ``maxtasksperchild`` chunks (the old one goes once it has served them)."""
        with self._lock:
            i = next(self._next) % self._processes
            if self._maxtasksperchild is not None and \
                    self._given[i] >= self._maxtasksperchild:
                self._retired.append(self._last[i])  # type: ignore[arg-type]  # given: set
                self._actors[i] = self._new_actor()
                self._given[i] = 0
            self._given[i] += 1
            ref: ObjectRef[list[Any]] = self._actors[i].run.remote(boxed_function, chunk,
                                                                   star)
            self._last[i] = ref
        return ref

    def _async(self, refs: list[ObjectRef[list[Any]]], single: bool,
               callback: _Callback | None, error_callback: _ErrorCallback | None
               ) -> AsyncResult[Any]:
        result: AsyncResult[Any] = AsyncResult(refs, single, callback, error_callback)
        if callback is not None or error_callback is not None:
            with self._lock:
                if self._result_thread is None:
                    self._callbacks = _queue.Queue()
                    self._result_thread = threading.Thread(
                        target=_call_back, args=(self._callbacks,),
                        name="graphstore-pool-results", daemon=True)
                    self._result_thread.start()
            self._callbacks.put(result)  # type: ignore[union-attr]  # made above
        return result


class _Call:
    """``func(*args, **kwds)`` as a one-item chunk's function (``apply``)."""

    def __init__(self, func: Callable[..., Any], args: tuple[Any, ...],
                 kwds: dict[str, Any]) -> None:
        self.func, self.args, self.kwds = func, args, kwds

    def __call__(self) -> Any:
        return self.func(*self.args, **self.kwds)


def _call_back(results: _queue.Queue[AsyncResult[Any] | None]) -> None:
    while (result := results.get()) is not None:
        try:
            result._run_callbacks()
        except Exception:      # a failing callback must not stop the others
            import logging
            logging.getLogger("graphstore.pool").exception("a Pool callback failed")
