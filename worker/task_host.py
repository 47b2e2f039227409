"""Starting and stopping the task processes a worker hosts, and what they see.

A task that needs an environment of its own (``runtime_env`` variables, GPUs, or
``max_calls``) runs in a task process (``task_process.py``), not in one of the worker's
threads: environment variables are process-wide, so setting them around a call in a
shared process would leak them into every other task running there at that moment. The
scheduler asks for a process (``StartTaskProcess``) and sends it its tasks itself; this
module starts it with its environment in place from the first instruction, tells the
scheduler when one exits, and kills them all with the worker. Every process's stdin is a
pipe from this worker, so they also exit when the worker dies.

``environment_for`` is shared with actor processes: the variables a task or actor sees,
``CUDA_VISIBLE_DEVICES`` included.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
from typing import Callable

from graphstore.core.node import physical_gpu_ids
from graphstore.worker.actor_host import close_stdin, kill_child

logger = logging.getLogger("graphstore.worker.tasks")


def environment_for(environment: dict | None) -> tuple[dict, list[str]]:
    """The variables to set for ``environment`` ({"env_vars", "gpus"}) and the GPU ids
    it holds: GPU indices on the node become this host's device ids (through the
    worker's own ``CUDA_VISIBLE_DEVICES``), and ``CUDA_VISIBLE_DEVICES`` names only them,
    as Ray sets it."""
    if not environment:
        return {}, []
    env = dict(environment.get("env_vars") or {})
    gpu_ids = physical_gpu_ids(environment.get("gpus") or [])
    if gpu_ids:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(gpu_ids)
    return env, gpu_ids


class TaskProcesses:
    def __init__(self, assignment: dict, report_exit: Callable[[bytes, int], None]):
        #: What every task process is told: scheduler, token, node, host, its worker.
        self.assignment = assignment
        self._report_exit = report_exit
        self._running: dict[bytes, subprocess.Popen] = {}
        self._lock = threading.Lock()
        self._closed = False

    def start(self, process_id: bytes, environment: dict, max_calls: int,
              prepared=None) -> None:
        """Start a task process (call off the event loop: it forks). ``prepared``: the
        ``runtime_env.PreparedEnv`` of its packages and pip venv, if it has any."""
        env, gpu_ids = environment_for(environment)
        python, cwd, extra_env, placed = sys.executable, None, {}, {}
        if prepared is not None:
            python, cwd, extra_env, placed = (prepared.python, prepared.cwd, prepared.env,
                                              prepared.spec())
        line = json.dumps({**self.assignment, "process_id": process_id.hex(),
                           "env_vars": env, "gpu_ids": gpu_ids,
                           "runtime_env": (environment or {}).get("runtime_env"),
                           **placed, "max_calls": max_calls}) + "\n"
        with self._lock:
            if self._closed:
                return
        try:
            # Output goes where the worker's goes (its log file in a local cluster).
            proc = subprocess.Popen([python, "-m", "graphstore.worker.task_process"],
                                    stdin=subprocess.PIPE, close_fds=True, cwd=cwd,
                                    env={**os.environ, **extra_env, **env})
            proc.stdin.write(line.encode())
            proc.stdin.flush()
        except OSError as exc:
            logger.warning("could not start a task process: %s", exc)
            self._report_exit(process_id, -1)
            return
        with self._lock:
            closed = self._closed
            if not closed:
                self._running[process_id] = proc
        if closed:
            kill_child(proc)
            return
        threading.Thread(target=self._watch, args=(process_id, proc), daemon=True,
                         name="graphstore-task-process").start()

    def _watch(self, process_id: bytes, proc: subprocess.Popen) -> None:
        code = proc.wait()
        with self._lock:
            self._running.pop(process_id, None)
            closed = self._closed
        close_stdin(proc)
        if not closed:
            self._report_exit(process_id, code)

    def pids(self) -> list[int]:
        """Process ids of the task processes running now (any thread)."""
        with self._lock:
            return [proc.pid for proc in self._running.values()]

    def stop(self, process_id: bytes) -> None:
        with self._lock:
            proc = self._running.get(process_id)
        if proc is not None:
            kill_child(proc)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            procs = list(self._running.values())
            self._running.clear()
        for proc in procs:
            kill_child(proc)
