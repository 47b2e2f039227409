"""Per-process and per-thread context: the installed runtime and the running task.

A process has at most one installed ``Runtime`` (a driver's while it is connected, a
worker's or actor process's for its whole life); the client API finds it here, and
``ObjectRef`` reports refs to it through ``core.object_ref.ref_tracker``.

Thread-safety: ``install``/``uninstall`` are called by the thread that starts or stops
the process's connection; ``installed()`` may be called from any thread.
"""
from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from graphstore.core import object_ref

if TYPE_CHECKING:
    from graphstore.runtime.runtime import Runtime

#: Per thread: ``(task id, name)`` of the task or actor call it runs, else None.
current_task = threading.local()

_installed: "Runtime | None" = None


def install(runtime: "Runtime") -> None:
    """Make ``runtime`` this process's: refs report to it, the API uses it."""
    global _installed
    _installed = runtime
    object_ref.install_tracker(runtime)


def uninstall(runtime: "Runtime") -> None:
    """Undo ``install`` if ``runtime`` is still the installed one."""
    global _installed
    if _installed is runtime:
        _installed = None
    object_ref.uninstall_tracker(runtime)


def installed() -> "Runtime | None":
    """This process's runtime, or None when it is not connected to a cluster."""
    return _installed
