"""An asyncio event loop running in a daemon thread, for drivers.

The driver's own code stays synchronous (as in Ray); all socket work happens here.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import threading

from graphstore.core.lifecycle import new_event_loop


def call_on_loop(loop: asyncio.AbstractEventLoop, async_fn, *args) -> concurrent.futures.Future:
    """Run ``async_fn(*args)`` on ``loop`` from another thread; a future of its result.

    Unlike ``run_coroutine_threadsafe`` the coroutine is made on the loop's own thread,
    so a loop that stops or closes before the call starts leaves no coroutine that was
    never awaited (a warning at garbage collection, long after the cause). A loop
    already closed raises RuntimeError here, at once."""
    future: concurrent.futures.Future = concurrent.futures.Future()

    def start() -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            task = loop.create_task(async_fn(*args))
        except BaseException as exc:
            future.set_exception(exc)
            return
        task.add_done_callback(lambda done: _copy_outcome(done, future))

    loop.call_soon_threadsafe(start)
    return future


def _copy_outcome(task: asyncio.Task, future: concurrent.futures.Future) -> None:
    if task.cancelled():
        future.set_exception(concurrent.futures.CancelledError())
    elif task.exception() is not None:
        future.set_exception(task.exception())
    else:
        future.set_result(task.result())


class LoopThread:
    def __init__(self, name: str = "graphstore-io"):
        self.loop = new_event_loop()
        self._started = threading.Event()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()
        self._started.wait()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._started.set)
        try:
            self.loop.run_forever()
        finally:
            try:
                pending = asyncio.all_tasks(self.loop)
                for task in pending:
                    task.cancel()
                if pending:
                    self.loop.run_until_complete(
                        asyncio.gather(*pending, return_exceptions=True))
            finally:
                self.loop.close()

    def run(self, coro, timeout: float | None = None):
        """Run a coroutine on the loop and wait for its result from this thread."""
        future: concurrent.futures.Future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise

    def stop(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        if threading.current_thread() is not self.thread:
            self.thread.join(timeout=5)
