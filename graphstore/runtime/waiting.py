"""A thread (or a future) waiting for objects to arrive.

A ``get``/``wait`` registers one ``Waiter`` under each id it lacks; the loop thread calls
``arrived`` as each object comes, and the ``needed``-th arrival wakes the waiting thread
(or completes the future with the object's value). A ``get`` of several objects fails
fast, as Ray's does: its waiter (``fail_fast``) also wakes at the first object that is an
error, without waiting for the others. ``cancel`` wakes a waiting thread whose task was
cancelled: a thread blocked on a lock never reaches the next bytecode, where an injected
exception would land.

Thread-safety: ``arrived`` and ``cancel`` are called by the loop thread, ``fail`` by the
loop thread or by ``uninstall`` at shutdown, ``wait`` by the one thread that made the
waiter; the runtime's lock guards the table of waiters, not the waiter itself. A
thread's waiter is woken at most once (``woken``), whatever wakes it.
"""
from __future__ import annotations

import concurrent.futures
import threading
import time
from typing import Any, Callable


class Waiter:
    """Woken by the loop thread as objects arrive; ``needed`` of them complete it."""
    __slots__ = ("needed", "lock", "future", "ref_id", "fail_fast", "woken", "errored",
                 "cancelled", "value_wanted")

    def __init__(self, needed: int, future: concurrent.futures.Future | None = None,
                 ref_id: bytes | None = None, fail_fast: bool = False,
                 value_wanted: bool = True):
        self.needed = needed
        self.future = future
        self.ref_id = ref_id
        #: A future completes with the object's value; else with its id, once it is here
        #: (value or error), without building the value.
        self.value_wanted = value_wanted
        #: Wake at the first object that is an error (``get``), not only at ``needed``.
        self.fail_fast = fail_fast
        self.woken = False
        #: An error arrived (the reason a fail-fast waiter may wake early).
        self.errored = False
        #: Woken by ``cancel``: the waiting thread's task was cancelled.
        self.cancelled = False
        self.lock = None
        if future is None:
            self.lock = threading.Lock()
            self.lock.acquire()

    def arrived(self, value_of: Callable[[bytes], Any], error: bool = False) -> None:
        """One awaited object is here (``error``: it is an error); ``value_of(id)`` gives
        a future its value."""
        self.needed -= 1
        if error:
            self.errored = True
        if self.needed == 0 or (error and self.fail_fast):
            if self.future is not None:
                if self.future.done():
                    pass
                elif not self.value_wanted:
                    self.future.set_result(self.ref_id)
                else:
                    try:
                        self.future.set_result(value_of(self.ref_id))
                    except BaseException as exc:  # the object is an error
                        self.future.set_exception(exc)
            elif not self.woken:
                self.woken = True
                self.lock.release()
                # Hand the GIL to the woken thread now: this (loop) thread would keep it
                # until it next waits for I/O, tens of microseconds later.
                time.sleep(0)

    def cancel(self) -> None:
        """The waiting thread's task was cancelled: wake it (it raises)."""
        self.cancelled = True
        if self.future is None and not self.woken:
            self.woken = True
            self.lock.release()

    def fail(self, exc: BaseException) -> None:
        """Nothing will arrive (shutdown): a future gets ``exc``; a thread wakes."""
        if self.future is not None:
            if not self.future.done():
                self.future.set_exception(exc)
        else:
            self.woken = True
            try:
                self.lock.release()
            except RuntimeError:
                pass

    def wait(self, timeout: float | None) -> bool:
        return self.lock.acquire(timeout=-1 if timeout is None else max(timeout, 0))
