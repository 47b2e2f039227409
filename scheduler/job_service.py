"""The scheduler's answers to job requests (``SubmitJob``, ``GetJob``, ``ListJobs``,
``StopJob``, ``DeleteJob``, ``ReadJobLog``), over the same token-checked connections as
everything else: there is no separate job server or port.

A refused request is answered with a record, ``{"error": {"kind", "text"}}``, that the
client turns into its exception; a user's typo never raises inside the scheduler.
``ReadJobLog`` with ``wait`` is a long poll: the reply waits until the log grows, the
job ends, the asker disconnects or ``wait`` runs out, checking every
``LOG_POLL_SECONDS``.
"""
from __future__ import annotations

import asyncio
import os
from typing import Callable

from graphstore.core import logs
from graphstore.core import protocol as msg
from graphstore.scheduler.job_processes import JobProcesses
from graphstore.scheduler.jobs import TERMINAL, JobRequestError, JobTable

#: How often a long-polled job log is looked at for new output.
LOG_POLL_SECONDS = 0.02
#: The longest a ``ReadJobLog`` may wait.
MAX_WAIT = 60.0


def _refused(exc: JobRequestError) -> dict:
    return {"error": {"kind": exc.kind, "text": exc.text}}


class JobService:
    """Job requests answered from the ``JobTable``; processes through ``JobProcesses``."""

    def __init__(self, table: JobTable, processes: JobProcesses,
                 connected: Callable[[bytes], bool]):
        self.table = table
        self.processes = processes
        #: Whether a peer is still connected (a long poll stops for a peer gone).
        self.connected = connected

    def submit(self, m: msg.SubmitJob) -> dict:
        try:
            record = self.table.submit(m.submission_id, m.entrypoint, m.runtime_env,
                                       m.metadata, m.entrypoint_num_cpus,
                                       str(self.processes.log_dir))
        except JobRequestError as exc:
            return _refused(exc)
        self.processes.start(record)
        return {"submission_id": record.submission_id}

    def get(self, m: msg.GetJob) -> dict:
        try:
            return {"job": self.table.get(m.submission_id).info()}
        except JobRequestError as exc:
            return _refused(exc)

    def list(self, m: msg.ListJobs) -> dict:
        return {"jobs": [record.info() for record in self.table.jobs.values()]}

    def stop(self, m: msg.StopJob) -> dict:
        try:
            return {"stopped": self.processes.stop(m.submission_id)}
        except JobRequestError as exc:
            return _refused(exc)

    def delete(self, m: msg.DeleteJob) -> dict:
        try:
            self.table.delete(m.submission_id)
        except JobRequestError as exc:
            return _refused(exc)
        return {"deleted": True}

    async def read_log(self, peer_id: bytes, m: msg.ReadJobLog) -> dict:
        try:
            record = self.table.get(m.submission_id)
        except JobRequestError as exc:
            return _refused(exc)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(float(m.wait), MAX_WAIT)
        while True:
            ended = record.status in TERMINAL
            if not (m.tail or ended) and loop.time() < deadline and \
                    self.connected(peer_id) and _size(record.log_path) <= m.offset:
                await asyncio.sleep(LOG_POLL_SECONDS)      # nothing new: look again
                continue
            try:
                part = await loop.run_in_executor(None, _read, record.log_path, m.offset,
                                                  m.tail, ended)
            except OSError as exc:
                return {"error": {"kind": "not_found",
                                  "text": f"cannot read the log of job "
                                          f"{record.submission_id}: {exc}"}}
            if (part["data"] or m.tail or ended or loop.time() >= deadline
                    or not self.connected(peer_id)):
                return {**part, "status": record.status}
            await asyncio.sleep(LOG_POLL_SECONDS)


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def _read(path: str, offset: int, tail: int, ended: bool) -> dict:
    return logs.read_log(path, offset, tail, whole_lines=not ended)
