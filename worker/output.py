"""Sending what tasks print to the driver's terminal.

``sys.stdout``/``sys.stderr`` are replaced by streams that, in a thread running a task,
collect whole lines and send them to the scheduler tagged ``(function pid=N)``; anywhere else
they write to the worker's own log.
"""
from __future__ import annotations

import io
import logging
import os
import sys
import threading

from graphstore.core import protocol as msg

from graphstore.runtime import current_task  # noqa: E402  (the running task, per thread)


class TaskOutputStream(io.TextIOBase):
    def __init__(self, name: str, fallback, send):
        self.name = name
        self._fallback = fallback
        self._send = send
        self._pid = os.getpid()
        self._local = threading.local()

    def _buffer(self) -> list:
        buffer = getattr(self._local, "buffer", None)
        if buffer is None:
            buffer = self._local.buffer = []
        return buffer

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        task = getattr(current_task, "task", None)
        if task is None:
            return self._fallback.write(text)
        buffer = self._buffer()
        buffer.append(text)
        if "\n" in text:
            self._emit(task, buffer)
        return len(text)

    def _emit(self, task, buffer) -> None:
        task_id, name = task
        text = "".join(buffer)
        buffer.clear()
        complete, _, rest = text.rpartition("\n")
        if rest:
            buffer.append(rest)
        if complete:
            self._send(msg.TaskOutput(task_id, f"({name} pid={self._pid})", self.name,
                                      complete + "\n"))

    def flush(self) -> None:
        task = getattr(current_task, "task", None)
        if task is None:
            self._fallback.flush()

    def finish_task(self, task) -> None:
        """Send a last unterminated line when the task ends."""
        buffer = self._buffer()
        if buffer:
            buffer.append("\n")
            self._emit(task, buffer)

    def fileno(self) -> int:
        return self._fallback.fileno()

    def isatty(self) -> bool:
        return False


def install(send) -> tuple[TaskOutputStream, TaskOutputStream]:
    """Route ``sys.stdout``/``sys.stderr`` and logging handlers through task streams."""
    original_stdout, original_stderr = sys.stdout, sys.stderr
    stdout = TaskOutputStream("stdout", original_stdout, send)
    stderr = TaskOutputStream("stderr", original_stderr, send)
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
