"""A thread (or a future) waiting for objects to arrive.

A ``get``/``wait`` registers one ``Waiter`` under each id it lacks; the loop thread calls
``arrived`` as each object comes, and the ``needed``-th arrival wakes the waiting thread
(or completes the future with the object's value).

Thread-safety: ``arrived`` and ``fail`` are called by the loop thread (or by ``uninstall``
at shutdown), ``wait`` by the one thread that made the waiter; the runtime's lock guards
the table of waiters, not the waiter itself.
"""
from __future__ import annotations

import concurrent.futures
import threading
import time
from typing import Any, Callable


class Waiter:
    """Woken by the loop thread as objects arrive; ``needed`` of them complete it."""
    __slots__ = ("needed", "lock", "future", "ref_id")

    def __init__(self, needed: int, future: concurrent.futures.Future | None = None,
                 ref_id: bytes | None = None):
        self.needed = needed
        self.future = future
        self.ref_id = ref_id
        self.lock = None
        if future is None:
            self.lock = threading.Lock()
            self.lock.acquire()

    def arrived(self, value_of: Callable[[bytes], Any]) -> None:
        """One awaited object is here; ``value_of(id)`` gives a future its value."""
        self.needed -= 1
        if self.needed == 0:
            if self.future is not None:
                if not self.future.done():
                    try:
                        self.future.set_result(value_of(self.ref_id))
                    except BaseException as exc:  # the object is an error
                        self.future.set_exception(exc)
            else:
                self.lock.release()
                # Hand the GIL to the woken thread now: this (loop) thread would keep it
                # until it next waits for I/O, tens of microseconds later.
                time.sleep(0)

    def fail(self, exc: BaseException) -> None:
        """Nothing will arrive (shutdown): a future gets ``exc``; a thread wakes."""
        if self.future is not None:
            if not self.future.done():
                self.future.set_exception(exc)
        else:
            try:
                self.lock.release()
            except RuntimeError:
                pass

    def wait(self, timeout: float | None) -> bool:
        return self.lock.acquire(timeout=-1 if timeout is None else max(timeout, 0))
