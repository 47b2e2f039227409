"""Starting and stopping the processes of the actors a worker hosts.

Each actor gets a process of its own, so a crash, ``os._exit()`` or a CPU-bound loop in
one actor touches nothing else. Starting Python and importing graphstore takes a few
hundred milliseconds; once a worker has hosted an actor it keeps one process started
ahead, waiting on stdin for its assignment, so the next actor starts at once. Every
process's stdin stays a pipe from this worker: when the worker dies, they all exit.

Starts and stops run on threads of their own and may overtake each other: a stop that
comes before (or while) its start is remembered, and the start then kills what it spawned,
so ``kill()`` right after ``Actor.remote()`` always ends the process.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
from collections import OrderedDict

logger = logging.getLogger("graphstore.worker.actors")

#: Stopped actors remembered, in case their start comes after the stop.
_STOPPED_KEPT = 10_000


class ActorProcesses:
    def __init__(self, assignment: dict):
        #: What every actor process is told besides its actor: scheduler, token, node.
        self.assignment = assignment
        self._running: dict[bytes, tuple[int, subprocess.Popen]] = {}
        self._spare: subprocess.Popen | None = None
        #: Actor id -> the newest incarnation stopped (its start may still be on its way).
        self._stopped: OrderedDict[bytes, int] = OrderedDict()
        self._lock = threading.Lock()
        self._closed = False

    @staticmethod
    def _spawn(python: str = sys.executable, cwd: str | None = None,
               env: dict | None = None) -> subprocess.Popen:
        # Output goes where the worker's goes (its log file in a local cluster).
        return subprocess.Popen([python, "-m", "graphstore.worker.actor_process"],
                                stdin=subprocess.PIPE, close_fds=True, cwd=cwd,
                                env={**os.environ, **env} if env else None)

    def start(self, actor_id: bytes, incarnation: int, env: dict | None = None,
              gpu_ids: list | None = None, prepared=None,
              runtime_env: dict | None = None) -> None:
        """Start (or hand a ready process) the actor's ``incarnation``-th process;
        ``env``: variables it sets before it loads the actor's class (its
        ``runtime_env`` variables and ``CUDA_VISIBLE_DEVICES``), ``gpu_ids`` its GPUs;
        ``prepared``: the ``runtime_env.PreparedEnv`` of its packages and pip venv
        (a venv's Python needs a process of its own; other actors take the spare one,
        which moves into its working_dir itself); ``runtime_env``: the resolved
        environment its own calls inherit."""
        placed = prepared.spec() if prepared is not None else {}
        placement_env = dict(prepared.env) if prepared is not None else {}
        own_python = prepared is not None and prepared.python != sys.executable
        with self._lock:
            if self._closed or self._was_stopped(actor_id, incarnation):
                return
            proc = None
            if not own_python:
                proc, self._spare = self._spare, None
        if own_python:
            proc = self._spawn(prepared.python, prepared.cwd, placement_env)
        elif proc is None or proc.poll() is not None:
            proc = self._spawn()
        line = json.dumps({**self.assignment, "actor_id": actor_id.hex(),
                           "incarnation": incarnation,
                           "env": {**placement_env, **(env or {})},
                           "placement_env": sorted(placement_env), **placed,
                           "runtime_env": runtime_env,
                           "gpu_ids": gpu_ids or []}) + "\n"
        try:
            proc.stdin.write(line.encode())
            proc.stdin.flush()
        except OSError as exc:   # it died meanwhile: the scheduler sees no registration
            logger.warning("could not start a process for actor %s: %s", actor_id.hex(), exc)
        with self._lock:
            if self._was_stopped(actor_id, incarnation):   # stopped while it was spawned
                old = (incarnation, proc)
            else:
                old = self._running.pop(actor_id, None)
                self._running[actor_id] = (incarnation, proc)
        if old is not None:
            self._kill(old[1])
        self.reap()

    def _was_stopped(self, actor_id: bytes, incarnation: int) -> bool:
        """(Lock held.)"""
        stopped = self._stopped.get(actor_id)
        return stopped is not None and stopped >= incarnation

    def prepare_spare(self) -> None:
        """Start a process ahead of the next actor (call off the event loop)."""
        with self._lock:
            if self._closed or (self._spare is not None and self._spare.poll() is None):
                return
        proc = self._spawn()
        with self._lock:
            if self._closed or self._spare is not None:
                spare_taken = True
            else:
                self._spare, spare_taken = proc, False
        if spare_taken:
            self._kill(proc)

    def stop(self, actor_id: bytes, incarnation: int) -> None:
        with self._lock:
            if self._stopped.get(actor_id, -1) < incarnation:
                self._stopped[actor_id] = incarnation
                self._stopped.move_to_end(actor_id)
                if len(self._stopped) > _STOPPED_KEPT:
                    self._stopped.popitem(last=False)
            entry = self._running.get(actor_id)
            if entry is None or entry[0] > incarnation:
                return
            del self._running[actor_id]
        self._kill(entry[1])

    def pids(self) -> list[int]:
        """Process ids of the actors' processes (not the spare one), any thread."""
        with self._lock:
            return [proc.pid for _, proc in self._running.values()]

    def reap(self) -> None:
        """Forget processes that ended (their exit status is collected)."""
        with self._lock:
            ended = [a for a, (_, p) in self._running.items() if p.poll() is not None]
            for actor_id in ended:
                proc = self._running.pop(actor_id)[1]
                close_stdin(proc)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            procs = [p for _, p in self._running.values()]
            if self._spare is not None:
                procs.append(self._spare)
            self._running.clear()
            self._spare = None
        for proc in procs:
            self._kill(proc)

    @staticmethod
    def _kill(proc: subprocess.Popen) -> None:
        kill_child(proc)


def kill_child(proc: subprocess.Popen) -> None:
    """SIGKILL a process this worker started, close its stdin and reap it."""
    try:
        proc.send_signal(signal.SIGKILL)
    except OSError:
        pass
    close_stdin(proc)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


def close_stdin(proc: subprocess.Popen) -> None:
    try:
        if proc.stdin is not None:
            proc.stdin.close()
    except OSError:
        pass
