"""A deployment's own connection to the scheduler it started: how many workers joined,
which job each belongs to, how much work waits.

It is a client connection apart from the user's driver (``graphstore.init``), with its
own event-loop thread, so a cluster object can watch and scale its cluster whether or
not this process is also a driver of it. It asks what ``graphstore status`` asks
(``GetClusterOverview``), and retires workers before their jobs are cancelled
(``RetireWorkers``).
"""
from __future__ import annotations

import asyncio
import os
import socket

from graphstore.core import protocol as msg
from graphstore.core.comm import connect
from graphstore.core.loop_thread import LoopThread
from graphstore.core.object_ref import new_id
from graphstore.core.tls import TLSConfig


class SchedulerLink:
    """A registered client connection to one scheduler, usable from any thread."""

    def __init__(self, address: str, token: bytes, tls: TLSConfig | None = None,
                 timeout: float = 30.0):
        self.address = address
        self._loop = LoopThread(name="graphstore-deploy")
        self._comm = None

        async def open_link():
            comm = await connect(address, token, tls=tls, timeout=timeout)
            comm.handler = lambda c, m: None      # cluster-info pushes: not needed here
            asyncio.ensure_future(comm.read_loop())
            reply = await comm.request(msg.RegisterClient(new_id(), os.getpid(),
                                                          socket.gethostname()),
                                       timeout=timeout)
            return comm, reply

        try:
            self._comm, reply = self._loop.run(open_link(), timeout=timeout + 5)
        except BaseException:
            self._loop.stop()
            raise
        #: The scheduler's status page, or None if it has none.
        self.dashboard_url: str | None = reply.get("dashboard_url")

    def request(self, message, timeout: float = 30.0):
        """Send a request and wait for its reply (any thread)."""
        return self._loop.run(self._comm.request(message, timeout=timeout),
                              timeout=timeout + 5)

    def overview(self) -> dict:
        """``{"overview": ..., "workers": [row, ...]}``, as ``graphstore status --json``."""
        return self.request(msg.GetClusterOverview())

    def retire(self, worker_ids: list[bytes]) -> dict:
        """Ask the scheduler to retire workers (``RetireWorkers``): what is left to do
        before they may stop without losing an object."""
        return self.request(msg.RetireWorkers(list(worker_ids)))

    def close(self) -> None:
        if self._comm is not None:
            comm, self._comm = self._comm, None
            try:
                self._loop.run(comm.close(timeout=2), timeout=5)
            except Exception:
                comm.abort()
        self._loop.stop()
