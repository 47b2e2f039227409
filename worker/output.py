"""Sending what tasks print to the driver's terminal.

``sys.stdout``/``sys.stderr`` are replaced by streams that, in a thread running a task,
send what the task writes to the scheduler tagged ``(function pid=N)``; anywhere else
they write to the worker's own log.

Each running task has a ``LineScreen`` per stream (``graphstore.core.terminal``): whole
lines go out as they are written (``TaskOutput.text``), the rest of a line when the task
calls ``flush()``, and the rows a progress bar redraws in place (tqdm's ``"\\r"``) as
their latest state (``TaskOutput.live``), at most every ``LIVE_INTERVAL`` seconds per
task and stream, however fast the bar. The last state always goes out: a ``Ticker``
thread sends what the interval held back, and a bar's final line is finished text.
"""
from __future__ import annotations

import io
import logging
import os
import sys
import threading
import time

from graphstore.core import protocol as msg
from graphstore.core.terminal import LineScreen

from graphstore.runtime import current_task  # noqa: E402  (the running task, per thread)

def running_task_id() -> bytes | None:
    """The id of the task the calling thread runs, or None (for log lines' ids)."""
    task = getattr(current_task, "task", None)
    return task[0] if task is not None else None


#: Seconds between two live updates of one task's bars (at most ~10 a second).
LIVE_INTERVAL = 0.1


class _TaskScreen:
    """One running task's output on one stream."""
    __slots__ = ("task_id", "prefix", "screen", "live", "live_at")

    def __init__(self, task_id: bytes, prefix: str):
        self.task_id = task_id
        self.prefix = prefix
        self.screen = LineScreen()
        self.live: list[str] = []          # the live rows the driver was last sent
        self.live_at = -LIVE_INTERVAL      # when they were sent


class TaskOutputStream(io.TextIOBase):
    """``sys.stdout`` or ``sys.stderr`` of a worker, actor or task process.

    Thread-safe: tasks write from their threads, the ticker from its own."""

    def __init__(self, name: str, fallback, send, ticker: "Ticker | None" = None):
        self.name = name
        self._fallback = fallback
        self._send = send
        self._pid = os.getpid()
        self._ticker = ticker or Ticker()
        self._lock = threading.Lock()
        self._screens: dict[bytes, _TaskScreen] = {}
        #: The process's other task stream (stdout's is stderr's and the reverse).
        self.sibling: TaskOutputStream | None = None

    @property
    def encoding(self) -> str:
        return "utf-8"                     # what the driver prints (tqdm draws blocks)

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        task = getattr(current_task, "task", None)
        if task is None:
            return self._fallback.write(text)
        task_id = task[0]
        with self._lock:
            screen = self._screens.get(task_id)
            if screen is None:
                screen = self._screens[task_id] = _TaskScreen(
                    task_id, f"({task[1]} pid={self._pid})")
            finished = None if screen.live else screen.screen.write_fast(text)
            if finished is not None:       # plain text, no bar shown: lines go out
                if finished:
                    self._send(msg.TaskOutput(task_id, screen.prefix, self.name, finished))
            else:
                now = time.monotonic()
                screen.screen.write(text, now)
                self._send_changes(screen, now)
        sibling = self.sibling
        if sibling is not None:
            other = sibling._screens.get(task_id)
            if other is not None and other.screen.pending_since is not None:
                sibling.wrote_elsewhere(task_id)
        return len(text)

    def wrote_elsewhere(self, task_id: bytes) -> None:
        """The task wrote to the other stream: a newline it left pending here was a real
        one (tqdm's moves never write elsewhere in between)."""
        with self._lock:
            screen = self._screens.get(task_id)
            now = time.monotonic()
            if screen is not None and screen.screen.settle(now, force=True):
                self._send_changes(screen, now)

    def flush(self) -> None:
        task = getattr(current_task, "task", None)
        if task is None:
            self._fallback.flush()
            return
        with self._lock:
            screen = self._screens.get(task[0])
            if screen is not None:
                screen.screen.flush()
                self._send_changes(screen, time.monotonic())

    def finish_task(self, task) -> None:
        """The task ended: what it left unfinished (a last line without a newline, a
        bar never closed) goes out as finished lines, its live rows are cleared."""
        with self._lock:
            screen = self._screens.pop(task[0], None)
        if screen is not None:
            text = screen.screen.finish()
            live = [] if screen.live else None
            if text or live is not None:
                self._send(msg.TaskOutput(screen.task_id, screen.prefix, self.name, text,
                                          live))

    def tick(self, now: float) -> float | None:
        """The ticker's call: send held-back states and newlines that settled; returns
        when to be called again (None: nothing is waiting)."""
        again = None
        with self._lock:
            for screen in self._screens.values():
                screen.screen.settle(now)
                due = self._send_changes(screen, now, arm=False)
                if due is not None and (again is None or due < again):
                    again = due
        return again

    def _send_changes(self, screen: _TaskScreen, now: float, arm: bool = True
                      ) -> float | None:
        """Send what changed on ``screen``: finished text at once, live rows at most
        every LIVE_INTERVAL. Returns when something held back is due (and with
        ``arm``, asks the ticker for a call then)."""
        text = screen.screen.take()
        pending_since = screen.screen.pending_since
        due = None
        live = None
        if pending_since is not None:
            # Maybe in the middle of tqdm's move to a lower bar: show nothing until it
            # is back (or the newline settles).
            due = pending_since + screen.screen.settle_seconds
        else:
            rows = screen.screen.live()
            if rows != screen.live:
                if text or now >= screen.live_at + LIVE_INTERVAL:
                    live = screen.live = rows
                    screen.live_at = now
                else:                      # held back: the ticker sends the latest
                    due = screen.live_at + LIVE_INTERVAL
        if text or live is not None:
            self._send(msg.TaskOutput(screen.task_id, screen.prefix, self.name, text, live))
        if due is not None and arm:
            self._ticker.call_at(self, due)
        return due

    def fileno(self) -> int:
        return self._fallback.fileno()

    def isatty(self) -> bool:
        return False


class Ticker:
    """A daemon thread that calls streams' ``tick`` when they asked to be called: one per
    process, started at the first request."""

    def __init__(self):
        self._cond = threading.Condition()
        self._due: dict[TaskOutputStream, float] = {}
        self._thread: threading.Thread | None = None

    def call_at(self, stream: TaskOutputStream, when: float) -> None:
        with self._cond:
            current = self._due.get(stream)
            if current is not None and current <= when:
                return
            self._due[stream] = when
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, daemon=True,
                                                name="graphstore-output")
                self._thread.start()
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._due:
                    self._cond.wait()
                stream, when = min(self._due.items(), key=lambda item: item[1])
                delay = when - time.monotonic()
                if delay > 0:
                    self._cond.wait(delay)
                    continue
                del self._due[stream]
            try:
                again = stream.tick(time.monotonic())
            except Exception:               # never lose the thread to one bad stream
                logging.getLogger(__name__).exception("sending task output failed")
                again = None
            if again is not None:
                self.call_at(stream, again)


def install(send) -> tuple[TaskOutputStream, TaskOutputStream]:
    """Route ``sys.stdout``/``sys.stderr`` and logging handlers through task streams."""
    original_stdout, original_stderr = sys.stdout, sys.stderr
    ticker = Ticker()
    stdout = TaskOutputStream("stdout", original_stdout, send, ticker)
    stderr = TaskOutputStream("stderr", original_stderr, send, ticker)
    stdout.sibling, stderr.sibling = stderr, stdout

    def after_fork() -> None:
        # A task that forks (multiprocessing's "fork") leaves the ticker thread behind
        # and maybe a lock held by it: the child starts with fresh ones.
        ticker.__init__()
        for stream in (stdout, stderr):
            stream._lock = threading.Lock()
    os.register_at_fork(after_in_child=after_fork)
    sys.stdout, sys.stderr = stdout, stderr
    # Handlers made before this point hold the original streams: logging calls made in a
    # task must reach the driver like print() does.
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler):
            if handler.stream is original_stderr:
                handler.setStream(stderr)
            elif handler.stream is original_stdout:
                handler.setStream(stdout)
    return stdout, stderr
