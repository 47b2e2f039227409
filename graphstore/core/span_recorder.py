"""Recording spans of work in the process that does them, cheaply.

A task thread calls ``begin`` before a task and ``end`` after it: the spans recorded in
between (argument fetches, transfers, restores) are the task's, and travel with its
outcome message, as Dask's ``startstops`` travel with ``task-finished``. The run itself
is not a span here: its outcome carries when it started and how long it took, and the
scheduler knows the rest. Spans recorded outside a task (a spill, a restore a peer asked
for) go to a small bounded buffer the worker drains into its heartbeat; what does not
fit is dropped, oldest first, so memory stays bounded whatever the load.

A span is a plain list in ``ProfileEvent`` field order: one list append per span, no
object built, so recording stays a small fraction of a no-op task's cost.

Thread-safety: every method may be called from any thread; spans of a task are kept per
thread.
"""
from __future__ import annotations

import os
import threading
from collections import deque


class SpanRecorder:
    """Spans of this process: per task thread while a task runs, else a bounded buffer."""

    def __init__(self, enabled: bool = True, buffer_size: int = 0):
        #: False: every method is a no-op (``record_timeline=False``, or a driver).
        self.enabled = enabled
        self.pid = os.getpid()
        self._local = threading.local()
        #: Spans outside any task; 0 keeps none (a process with no heartbeat to send them).
        self._loose: deque = deque(maxlen=buffer_size)

    def begin(self, task_id: bytes) -> None:
        """The calling thread starts work for ``task_id``: collect its spans."""
        # Most tasks record no span of their own: the list is made by the first one.
        self._local.task = [task_id]

    def end(self) -> list | None:
        """The calling thread's spans since ``begin`` (None if there were none, or it
        did not begin)."""
        local = self._local
        task = getattr(local, "task", None)
        local.task = None
        return task[1:] if task is not None and len(task) > 1 else None

    def add(self, kind: str, name: str, start: float, stop: float, nbytes: int = 0,
            peer: str = "") -> None:
        """Record one span: the current task's if this thread runs one, else loose."""
        if not self.enabled:
            return
        task = getattr(self._local, "task", None)
        if task is not None:
            task.append([kind, name, start, stop, self.pid, task[0], nbytes, peer])
        else:
            self._loose.append([kind, name, start, stop, self.pid, b"", nbytes, peer])

    def drain(self) -> list:
        """Take the loose spans recorded so far, oldest first."""
        out = []
        loose = self._loose
        while True:
            try:
                out.append(loose.popleft())
            except IndexError:
                return out
