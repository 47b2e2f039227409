"""A task process: runs, one at a time, the tasks that need an environment of their own.

A worker starts it (``task_host.py``) with its environment already set (``runtime_env``
variables, ``CUDA_VISIBLE_DEVICES``) and hands it its assignment as one JSON line on
stdin; the pipe then ties the process's life to the worker's. It registers with the
scheduler, which sends it tasks (``RunTask``) and counts them on its worker's books; it
runs each in a ``TaskExecutor`` thread, as a worker does, and reports the outcome on its
own connection, in order with its reference events. Tasks may call the whole API.

After ``max_calls`` tasks (when set) it exits once the last outcome is sent: this is what
"the worker process is replaced" means for graphstore, whose workers run tasks in
threads of a process that lives on.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import sys

from graphstore.core import protocol as msg
from graphstore.core.comm import connect
from graphstore.core.config import load_config
from graphstore.core import logs
from graphstore.core.lifecycle import new_event_loop, setup_logging, watch_parent_pipe
from graphstore.core.tls import tls_from_spec
from graphstore.runtime import Runtime, TaskProcessRole
from graphstore.worker import output
from graphstore.worker.executor import TaskExecutor
from graphstore.worker.runtime_env import apply_placement

logger = logging.getLogger("graphstore.task_process")


class TaskProcess:
    def __init__(self, spec: dict):
        self.spec = spec
        self.config = load_config()
        self.token = bytes.fromhex(spec["token"])
        self.tls = tls_from_spec(spec.get("tls"))
        self.process_id = bytes.fromhex(spec["process_id"])
        self.worker_id = bytes.fromhex(spec["worker_id"])
        self.max_calls = int(spec.get("max_calls") or 0)
        self.calls = 0
        self.loop = asyncio.get_event_loop()
        self.stopped = asyncio.Event()
        self.comm = None
        self.runtime: Runtime | None = None
        self.executor: TaskExecutor | None = None

    async def start(self) -> None:
        self.comm = await connect(self.spec["scheduler"], self.token, tls=self.tls,
                                  split_bytes=self.config.frame_split_bytes,
                                  timeout=self.config.handshake_timeout)
        role = TaskProcessRole(task_blocked=lambda: self.executor.task_blocked(),
                               task_unblocked=lambda t: self.executor.task_unblocked(t))
        runtime = Runtime(self.loop, self.comm, self.config, self.process_id, role,
                          node_id=self.spec["node_id"], token=self.token, tls=self.tls)
        # Tasks it submits inherit its variables, as in Ray; its GPUs are its own.
        runtime.inherited_env_vars = dict(self.spec.get("env_vars") or {})
        runtime.runtime_envs.inherited = dict(self.spec.get("runtime_env") or {})
        runtime.context["gpu_ids"] = list(self.spec.get("gpu_ids") or [])
        runtime.context["worker_id"] = self.process_id
        self.runtime = runtime
        runtime.install()
        logs.set_process_ids(worker_id=self.worker_id, node_id=self.spec.get("node_id"))
        logs.set_task_id_source(output.running_task_id)
        streams = output.install(runtime.send_from_any_thread)
        self.executor = TaskExecutor(1, runtime, self.config.frame_split_bytes, streams,
                                     after_task=self._after_task)
        self.comm.handler = self._on_message
        self.comm.on_close.append(lambda c: self._lost_scheduler())
        asyncio.ensure_future(self.comm.read_loop())
        reply = await self.comm.request(msg.RegisterTaskProcess(
            self.process_id, self.worker_id, os.getpid(), socket.gethostname()),
            timeout=self.config.startup_timeout)
        runtime.cluster_info = {"num_workers": reply["num_workers"],
                                "resources": reply["resources"],
                                "workers": reply["workers"]}

    def _on_message(self, comm, m):
        cls = type(m)
        if cls is msg.RunTask:
            self.executor.submit(m)
        elif cls is msg.FunctionCode:
            self.executor.add_function(m.function_hash, bytes(m.payload))
        elif cls is msg.CancelRunning:
            self.executor.cancel(m.task_id, m.force)     # force: this process exits
        elif not self.runtime.handle(m):
            raise ValueError(f"unexpected message {cls.__name__}")

    def _after_task(self) -> None:
        """A task thread sent an outcome: after ``max_calls`` of them, leave."""
        self.calls += 1
        if self.max_calls and self.calls >= self.max_calls:
            self.loop.call_soon_threadsafe(lambda: asyncio.ensure_future(self._exit()))

    async def _exit(self) -> None:
        await asyncio.sleep(0)            # let the outcome be queued first
        self.runtime.flush()
        await self.comm.close()
        self.stop()

    def _lost_scheduler(self) -> None:
        if not self.stopped.is_set():
            logger.info("the scheduler connection closed; the task process exits")
        self.stop()

    def stop(self) -> None:
        if self.executor is not None:
            self.executor.stop()
        self.stopped.set()


def main() -> int:
    line = sys.stdin.readline()
    if not line:
        return 0
    spec = json.loads(line)
    apply_placement(spec)
    setup_logging(os.environ.get("GRAPHSTORE_LOG_LEVEL", "INFO"))
    loop = new_event_loop()
    asyncio.set_event_loop(loop)
    process = TaskProcess(spec)
    watch_parent_pipe(process.stop)

    async def run():
        try:
            await process.start()
        except Exception as exc:
            logger.error("task process failed to start: %s", exc)
            process.stop()
        await process.stopped.wait()
    try:
        loop.run_until_complete(run())
    finally:
        # A task thread may still run user code: leave without waiting for it.
        os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
