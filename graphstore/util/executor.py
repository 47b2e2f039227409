"""``Executor``: a ``concurrent.futures.Executor`` whose calls run as graphstore tasks.

Libraries that take an executor (``loop.run_in_executor``, ``concurrent.futures.wait``,
code written for ``ProcessPoolExecutor``) run on the cluster with it. ``submit`` returns
a standard ``Future``; its ``ref`` attribute is the task's ``ObjectRef`` once the task
was submitted. ``max_workers`` bounds the tasks in flight (the others wait in this
process, in order); without it the cluster's resources are the only bound.
"""
from __future__ import annotations

import concurrent.futures
import itertools
import threading
from collections import deque
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, ParamSpec, TypeVar

import graphstore

if TYPE_CHECKING:        # graphstore.util is imported while graphstore.actor loads
    from graphstore.remote_function import RemoteCall

__all__ = ["Executor"]

P = ParamSpec("P")
T = TypeVar("T")
#: A submission waiting for a slot: (its future, the task, fn, args, kwargs).
_Waiting = tuple["concurrent.futures.Future[Any]", "RemoteCall[...]", Callable[..., Any],
                 tuple[Any, ...], dict[str, Any]]


def _call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return fn(*args, **kwargs)


def _call_chunk(fn: Callable[..., Any], chunk: list[tuple[Any, ...]]) -> list[Any]:
    return [fn(*args) for args in chunk]


class Executor(concurrent.futures.Executor):
    """A ``concurrent.futures.Executor`` whose calls run as graphstore tasks.

    Futures complete from the driver's I/O thread. Safe to use from several threads at
    once (``submit`` takes a lock), as ``concurrent.futures`` executors are.

    >>> with Executor(max_workers=4) as pool:
    ...     list(pool.map(pow, [2, 3], [5, 2]))
    [32, 9]

    Args:
        max_workers: the most tasks running at once; further calls wait in this process
            for a slot. ``None``: no limit (the cluster's resources limit them).
        **task_options: the options of each task (``num_cpus``, ``max_retries``,
            ``resources``, ...), as for ``f.options(...)``; checked here.

    Raises:
        TypeError: ``max_workers`` is not an int or None.
        ValueError: ``max_workers`` is not positive, or a task option is wrong.
    """

    def __init__(self, max_workers: int | None = None, **task_options: Any) -> None:
        if max_workers is not None:
            if isinstance(max_workers, bool) or not isinstance(max_workers, int):
                raise TypeError(f"max_workers must be an int or None, not "
                                f"{type(max_workers).__name__}")
            if max_workers <= 0:
                raise ValueError("max_workers must be greater than 0")
        self._max_workers = max_workers
        call = graphstore.remote(_call)
        chunk = graphstore.remote(_call_chunk)
        # Options are checked here, at construction, not at the first submit.
        self._call: RemoteCall[...] = call.options(**task_options) if task_options else call
        self._chunk: RemoteCall[...] = (chunk.options(**task_options) if task_options
                                        else chunk)
        self._lock = threading.Condition()
        self._shutdown = False
        self._in_flight = 0
        #: Submissions waiting for a slot (only with ``max_workers``).
        self._queue: deque[_Waiting] = deque()
        self._futures: set[concurrent.futures.Future[Any]] = set()
        self._dispatcher: threading.Thread | None = None

    # -- concurrent.futures.Executor ----------------------------------------------------
    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs
               ) -> concurrent.futures.Future[T]:
        """Run ``fn(*args, **kwargs)`` as a task.

        Args:
            fn: a picklable callable.
            *args: its positional arguments (refs among them are resolved, as for any task).
            **kwargs: its keyword arguments.

        Returns:
            A future of the call's value; its ``result()`` raises the call's error.

        Raises:
            TypeError: ``fn`` is not callable.
            RuntimeError: the executor was shut down.
        """
        future: concurrent.futures.Future[T] = self._submit(self._call, fn, args, kwargs)
        return future

    def map(self, fn: Callable[..., T], *iterables: Iterable[Any],
            timeout: float | None = None, chunksize: int = 1) -> Iterator[T]:
        """As ``concurrent.futures.Executor.map``: ``fn`` over the iterables' items, as tasks.

        Args:
            fn: a picklable callable.
            *iterables: its arguments, one iterable per parameter.
            timeout: seconds after the call after which the iterator raises ``TimeoutError``.
            chunksize: calls per task (fewer, larger tasks for many small calls).

        Returns:
            An iterator of the results in order; it raises a call's error when it reaches it.

        Raises:
            ValueError: ``chunksize`` is less than 1.
            RuntimeError: the executor was shut down.
        """
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        if chunksize == 1:
            return super().map(fn, *iterables, timeout=timeout)
        calls = zip(*iterables)
        chunks = iter(lambda: list(itertools.islice(calls, chunksize)), [])
        futures = [self._submit(self._chunk, fn, (chunk,), {}) for chunk in chunks]
        return _flatten(futures, timeout)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No more submissions.

        Args:
            wait: wait for the calls submitted so far.
            cancel_futures: cancel the calls still waiting for a slot (tasks already submitted
                run to the end).
        """
        with self._lock:
            self._shutdown = True
            if cancel_futures:
                while self._queue:
                    cancelled = self._queue.popleft()[0]
                    cancelled.cancel()
                    self._futures.discard(cancelled)
            self._lock.notify_all()
            futures = list(self._futures)
        if wait:
            concurrent.futures.wait(futures)

    # -- inside -------------------------------------------------------------------------
    def _submit(self, task: RemoteCall[...], fn: Callable[..., Any], args: tuple[Any, ...],
                kwargs: dict[str, Any]) -> concurrent.futures.Future[Any]:
        """A future of ``task.remote(fn, *args, **kwargs)``'s value."""
        if not callable(fn):
            raise TypeError(f"{type(fn).__name__!r} object is not callable")
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            self._futures.add(future)
            now = self._max_workers is None or self._in_flight < self._max_workers
            if now:
                self._in_flight += 1
            else:
                self._queue.append((future, task, fn, args, kwargs))
                if self._dispatcher is None:
                    self._dispatcher = threading.Thread(
                        target=self._dispatch, name="graphstore-executor", daemon=True)
                    self._dispatcher.start()
        if now:
            self._start(future, task, fn, args, kwargs)
        return future

    def _start(self, future: concurrent.futures.Future[Any], task: RemoteCall[...],
               fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
               ) -> None:
        """Submit the task (a slot is taken); the future follows its result."""
        if not future.set_running_or_notify_cancel():     # cancelled while it waited
            self._finished(future)
            return
        try:
            ref = task.remote(fn, *args, **kwargs)
        except BaseException as exc:
            future.set_exception(exc)
            self._finished(future)
            return
        future.ref = ref  # type: ignore[attr-defined]  # documented: the task's ref
        ref.future().add_done_callback(lambda result: self._settle(future, result))

    def _settle(self, future: concurrent.futures.Future[Any],
                result: concurrent.futures.Future[Any]) -> None:
        """The loop thread: the task's outcome is here."""
        error = result.exception()
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result.result())
        self._finished(future)

    def _finished(self, future: concurrent.futures.Future[Any]) -> None:
        with self._lock:
            self._in_flight -= 1
            self._futures.discard(future)
            self._lock.notify_all()

    def _dispatch(self) -> None:
        """Start waiting submissions as slots free up (never on the loop thread: a
        submission may need a round trip that the loop thread serves)."""
        while True:
            with self._lock:
                # The dispatcher runs only with max_workers.
                while (not self._queue
                       or self._in_flight >= self._max_workers):  # type: ignore[operator]
                    if self._shutdown and not self._queue:
                        self._dispatcher = None
                        return
                    self._lock.wait()
                item = self._queue.popleft()
                self._in_flight += 1
            self._start(*item)


def _flatten(futures: list[concurrent.futures.Future[list[T]]], timeout: float | None
             ) -> Iterator[T]:
    """The results of chunk futures in order, within ``timeout`` overall."""
    import time
    end = None if timeout is None else time.monotonic() + timeout
    try:
        for future in futures:
            left = None if end is None else max(0.0, end - time.monotonic())
            yield from future.result(left)
    finally:
        for future in futures:
            future.cancel()
