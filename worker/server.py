"""The worker process: registers with the scheduler, runs the tasks it is given.

Tasks run in ``TaskExecutor`` threads; the event loop in the main thread only moves
messages. The worker also hosts a ``Runtime`` so tasks can call ``put``/``get``/``remote``
themselves, over the same connection. The worker exits when the scheduler goes away or,
in a local cluster, when the driver that started it does.
"""
from __future__ import annotations

import asyncio
import logging
import os
import socket

from graphstore import _state
from graphstore import protocol as msg
from graphstore.comm import connect
from graphstore.config import Config
from graphstore.object_ref import new_id
from graphstore.runtime import Runtime
from graphstore.lifecycle import watch_parent_pipe
from graphstore.worker import output
from graphstore.worker.executor import TaskExecutor

logger = logging.getLogger("graphstore.worker")


def default_node_id() -> str:
    """A name for this host that stays the same across its workers."""
    try:
        with open("/etc/machine-id") as f:
            machine = f.read().strip()[:12]
    except OSError:
        machine = ""
    return f"{socket.gethostname()}-{machine}" if machine else socket.gethostname()


class Worker:
    def __init__(self, config: Config, token: bytes, scheduler_address: str,
                 num_cpus: float, resources: dict, node_id: str):
        self.config = config
        self.token = token
        self.scheduler_address = scheduler_address
        self.num_cpus = num_cpus
        self.resources = resources
        self.node_id = node_id
        self.worker_id = new_id()
        self.comm = None
        self.runtime: Runtime | None = None
        self.executor: TaskExecutor | None = None
        self.stopped = asyncio.Event()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.comm = await connect(self.scheduler_address, self.token,
                                  split_bytes=self.config.frame_split_bytes,
                                  timeout=self.config.handshake_timeout)
        self.runtime = Runtime(loop, self.comm, self.config, self.worker_id, is_driver=False)
        self.runtime.install()
        _state.set_worker_runtime(self.runtime)
        streams = output.install(self.runtime.send_from_any_thread)
        self.executor = TaskExecutor(max(1, int(self.num_cpus)),
                                     self.runtime.send_from_any_thread,
                                     self.config.frame_split_bytes, streams)
        self.runtime.on_block = self.executor.task_blocked
        self.runtime.on_unblock = self.executor.task_unblocked
        self.comm.handler = self._on_message
        self.comm.on_close.append(self._on_scheduler_lost)
        asyncio.ensure_future(self.comm.read_loop())
        await self.comm.request(msg.RegisterWorker(
            self.worker_id, os.getpid(), socket.gethostname(), self.node_id,
            float(self.num_cpus), self.resources, ""), timeout=self.config.startup_timeout)

    def _on_message(self, comm, m) -> None:
        cls = type(m)
        if cls is msg.RunTask:
            self.executor.submit(m)
        elif cls is msg.FunctionCode:
            self.executor.add_function(m.function_hash, bytes(m.payload))
        elif not self.runtime.handle(m):
            raise ValueError(f"unexpected message {cls.__name__}")

    def _on_scheduler_lost(self, comm) -> None:
        logger.warning("lost the scheduler at %s; exiting", self.scheduler_address)
        if self.runtime is not None:
            self.runtime.connection_lost()
        self.stop()

    def stop(self) -> None:
        if self.executor is not None:
            self.executor.stop()
        self.stopped.set()


async def serve(config: Config, token: bytes, scheduler_address: str, num_cpus: float,
                resources: dict, node_id: str | None, watch_stdin: bool) -> None:
    worker = Worker(config, token, scheduler_address, num_cpus, resources,
                    node_id or default_node_id())
    if watch_stdin:
        watch_parent_pipe(worker.stop)
    await worker.start()
    await worker.stopped.wait()
    if worker.comm is not None:
        await worker.comm.close()
