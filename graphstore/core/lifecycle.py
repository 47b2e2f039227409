"""Process lifetime helpers shared by the scheduler and worker processes."""
from __future__ import annotations

import asyncio
import os
import signal
import sys


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop when installed (several times less overhead per loop iteration), else the
    standard loop. ``GRAPHSTORE_EVENT_LOOP=asyncio`` forces the standard one."""
    if os.environ.get("GRAPHSTORE_EVENT_LOOP", "uvloop") != "asyncio":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def watch_parent_pipe(on_lost) -> None:
    """Call ``on_lost`` when standard input reaches EOF: the process that started us died.

    The local cluster starts the scheduler and workers with a pipe on stdin; the kernel
    closes it when the driver exits for any reason, SIGKILL included.
    """
    loop = asyncio.get_event_loop()
    fd = sys.stdin.fileno()
    os.set_blocking(fd, False)

    def readable():
        try:
            data = os.read(fd, 4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            loop.remove_reader(fd)
            on_lost()

    loop.add_reader(fd, readable)


def run_until_signalled(loop: asyncio.AbstractEventLoop, main) -> None:
    """Run coroutine ``main`` on ``loop`` to its end; SIGTERM and SIGINT cancel it, so
    its ``finally`` blocks (files unlinked, servers stopped) run on the way out rather
    than being abandoned with the loop. Returns normally when a signal ended it; any
    other exception of ``main`` propagates."""
    serving = loop.create_task(main)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, serving.cancel)
    try:
        loop.run_until_complete(serving)
    except asyncio.CancelledError:
        pass  # stopped by a signal


def setup_logging(level: str = "INFO", log_format: str | None = None,
                  log_file=None):
    """The process's logging: stderr and, if given, a rotated ``log_file``, in
    ``log_format`` (default: the ``log_format`` setting as this process's settings say,
    as its worker's did); returns the log file in use (see ``graphstore.core.logs``)."""
    from graphstore.core.config import load_config
    from graphstore.core.logs import configure_process_logging
    if log_format is None:
        try:
            log_format = load_config().log_format
        except (ValueError, TypeError):
            log_format = "text"        # the worker that started us said why already
    return configure_process_logging(level, log_format, log_file)
