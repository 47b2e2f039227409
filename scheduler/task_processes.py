"""Tasks that need a process of their own, in the scheduler's state machine. No I/O.

Most tasks run in threads of a worker process, which share its environment. A task that
needs an environment of its own runs in a *task process* a worker starts for it: one
with ``runtime_env={"env_vars": ...}`` (the variables are set in that process only), one
holding GPUs (``CUDA_VISIBLE_DEVICES`` names its devices, as in Ray), one with a
``runtime_env`` that ships packages or pip requirements (its worker sets them up first,
``worker/runtime_env.py``; a failure fails the tasks waiting, ``RuntimeEnvSetupError``), and one with
``max_calls`` (the process is replaced after that many calls: GPU memory and leaks go with
it). The worker stays the task's host for the books: the task takes the worker's slot and
its node's CPUs and GPUs as any task does; only ``RunTask`` goes to the process, which
reports the outcome on its own connection, in order with its reference events.

A process serves one task at a time and is kept for the next task with the same *key*
(environment variables, the hash of its packages and requirements, GPU devices, and for
``max_calls`` the function and its limit): different environments never share a process. When a
worker needs a new process it ends an idle one of another key, so a worker keeps about as
many task processes as it runs tasks at once.

Mixed into ``SchedulerState`` (``state.py``), whose tasks, workers and outbox it shares.
"""
from __future__ import annotations

from collections import deque

from graphstore.core import protocol as msg
from graphstore.core.packages import environment_hash
from graphstore.core.object_ref import new_id
from graphstore.scheduler.instructions import Send
from graphstore.scheduler.entities import ASSIGNED, TaskState, WorkerState


class TaskProcessState:
    """A task process: its key, the task it runs, how many it was given."""
    __slots__ = ("id", "worker", "key", "environment", "max_calls", "calls", "task",
                 "registered", "known_functions", "pid")

    def __init__(self, worker: WorkerState, key: tuple, environment: dict, max_calls: int):
        self.id = new_id()
        self.worker = worker
        self.key = key
        self.environment = environment
        self.max_calls = max_calls
        self.calls = 0
        self.task: TaskState | None = None
        self.registered = False
        self.known_functions: set[bytes] = set()
        self.pid = 0

    def spent(self) -> bool:
        """It ran its ``max_calls`` tasks: it exits by itself and takes no more."""
        return bool(self.max_calls) and self.calls >= self.max_calls

    def idle(self) -> bool:
        return self.registered and self.task is None and not self.spent()


def process_key(task: TaskState) -> tuple | None:
    """What a process must offer to run ``task``; None: a worker's thread will do."""
    if not task.env_vars and not task.gpus and not task.max_calls and not task.runtime_env:
        return None
    env = tuple(sorted(task.env_vars.items())) if task.env_vars else ()
    if task.runtime_env:
        env += (("", environment_hash(task.runtime_env)),)
    gpus = tuple(task.gpus) if task.gpus else ()
    if task.max_calls:
        return env, gpus, task.function_hash, task.max_calls
    return env, gpus, None, 0


class TaskProcessesMixin:
    """Task-process handlers of ``SchedulerState``."""

    def _init_task_processes(self) -> None:
        #: Every task process started and not yet gone, by its id (its peer id).
        self.task_processes: dict[bytes, TaskProcessState] = {}

    # -- running a task in a process ------------------------------------------------------
    def _run_in_process(self, task: TaskState, worker: WorkerState, key: tuple) -> None:
        """``task`` is assigned to ``worker`` and needs a process: an idle one of its key,
        else it waits for one the worker starts."""
        for proc in worker.processes.values():
            if proc.key == key and proc.idle():
                self._send_to_process(proc, task)
                return
        worker.process_waiting.setdefault(key, deque()).append(task)
        self._start_processes(worker, key)

    def _start_processes(self, worker: WorkerState, key: tuple) -> None:
        """Start processes for ``key`` until every waiting task has one coming."""
        waiting = worker.process_waiting.get(key)
        if not waiting:
            worker.process_waiting.pop(key, None)
            return
        coming = sum(1 for p in worker.processes.values()
                     if p.key == key and (not p.registered or p.idle()))
        for _ in range(len(waiting) - coming):
            self._evict_idle(worker, key)
            task = waiting[-1]
            environment = {}
            if task.env_vars:
                environment["env_vars"] = dict(task.env_vars)
            if task.gpus:
                environment["gpus"] = list(task.gpus)
            if task.runtime_env:
                environment["runtime_env"] = task.runtime_env
            proc = TaskProcessState(worker, key, environment, task.max_calls)
            worker.processes[proc.id] = proc
            self.task_processes[proc.id] = proc
            self.outbox.append(Send(worker.id, msg.StartTaskProcess(proc.id, environment,
                                                                task.max_calls)))

    def _evict_idle(self, worker: WorkerState, key: tuple) -> None:
        """Make room for a new process: end an idle one of another key once the worker
        has as many processes as slots."""
        if len(worker.processes) < worker.slots:
            return
        for proc in list(worker.processes.values()):
            if proc.key != key and proc.idle():
                self._forget_process(proc)
                self.outbox.append(Send(worker.id, msg.StopTaskProcess(proc.id)))
                return

    def _send_to_process(self, proc: TaskProcessState, task: TaskState) -> None:
        proc.task = task
        proc.calls += 1
        task.process = proc
        if task.function_hash not in proc.known_functions:
            proc.known_functions.add(task.function_hash)
            self.outbox.append(Send(proc.id, msg.FunctionCode(
                task.function_hash, self.functions[task.function_hash])))
        self.outbox.append(Send(proc.id, self._run_task_message(task)))

    def _next_for_process(self, proc: TaskProcessState) -> None:
        """``proc`` is free: give it the next task waiting for its key on its worker."""
        worker = proc.worker
        waiting = worker.process_waiting.get(proc.key)
        while waiting and proc.idle():
            task = waiting.popleft()
            if task.state == ASSIGNED and task.worker is worker and task.process is None:
                self._send_to_process(proc, task)
        if not waiting:
            worker.process_waiting.pop(proc.key, None)
        elif proc.spent():
            self._start_processes(worker, proc.key)

    def _forget_process(self, proc: TaskProcessState) -> None:
        self.task_processes.pop(proc.id, None)
        proc.worker.processes.pop(proc.id, None)

    # -- messages from processes and workers ----------------------------------------------
    def register_task_process(self, peer_id: bytes, m: msg.RegisterTaskProcess) -> None:
        proc = self.task_processes.get(m.process_id)
        if proc is None or proc.registered or proc.worker.id != m.worker_id \
                or peer_id != m.process_id:
            raise ValueError("no task process of that id is expected (its worker left, "
                             "or it was stopped meanwhile)")
        proc.registered = True
        proc.pid = m.pid
        self.peer_holds.setdefault(peer_id, set())
        self._next_for_process(proc)     # else it is kept for the next task of its key

    def process_host(self, peer_id: bytes, task_id: bytes) -> bytes | None:
        """The worker on whose books a task reported by ``peer_id`` runs: ``peer_id``
        itself for a worker; for a task process its worker, if the task is the one it
        runs (None for a stale report)."""
        proc = self.task_processes.get(peer_id)
        if proc is None:
            return peer_id
        task = proc.task
        if task is None or task.id != task_id:
            return None
        return proc.worker.id

    def process_task_finished(self, peer_id: bytes, task_id: bytes) -> None:
        """A task process reported its task's outcome: it is free again."""
        proc = self.task_processes.get(peer_id)
        if proc is None or proc.task is None or proc.task.id != task_id:
            return
        proc.task.process = None
        proc.task = None
        if proc.spent():
            self._forget_process(proc)       # it exits on its own; its tasks go on
            self._start_processes(proc.worker, proc.key)
        else:
            self._next_for_process(proc)

    def task_process_lost(self, peer_id: bytes) -> None:
        """A task process disconnected: its running task counts as crashed."""
        proc = self.task_processes.get(peer_id)
        if proc is None:
            return
        self._forget_process(proc)
        task = proc.task
        if task is not None and task.process is proc:
            task.process = None
            if task.state == ASSIGNED and task.worker is proc.worker:
                self._task_crashed(task, f"the process running task {task.name} (pid "
                                         f"{proc.pid}) died")
        self._start_processes(proc.worker, proc.key)

    def task_process_exited(self, worker_id: bytes, m: msg.TaskProcessExited) -> None:
        """A worker saw a task process exit. One that registered is handled when its
        connection closes (after everything it sent); one that never did failed to start:
        a task waiting for its key counts that as a crash, so nothing waits forever."""
        proc = self.task_processes.get(m.process_id)
        if proc is None or proc.registered or proc.worker.id != worker_id:
            return
        self._forget_process(proc)
        waiting = proc.worker.process_waiting.get(proc.key)
        while waiting:
            task = waiting.popleft()
            if task.state == ASSIGNED and task.worker is proc.worker and task.process is None:
                self._task_crashed(task, f"the process started for task {task.name} exited "
                                         f"with code {m.returncode} before it could run it "
                                         f"(see the worker's log)")
                break
        self._start_processes(proc.worker, proc.key)

    def task_process_setup_failed(self, worker_id: bytes,
                                  m: msg.TaskProcessSetupFailed) -> None:
        """A worker could not set up the environment of a process it was asked for: the
        tasks waiting for that key on that worker fail with the error (a
        ``RuntimeEnvSetupError``; not retried: the next task of that environment tries
        the set-up again)."""
        proc = self.task_processes.get(m.process_id)
        if proc is None or proc.registered or proc.worker.id != worker_id:
            return
        self._forget_process(proc)
        waiting = proc.worker.process_waiting.pop(proc.key, None)
        while waiting:
            task = waiting.popleft()
            if task.state == ASSIGNED and task.worker is proc.worker and task.process is None:
                self._fail_task(task, list(m.error),
                                f"the runtime_env of task {task.name} could not be set up")
        # Other processes of this key still starting get their own answer.
        self._start_processes(proc.worker, proc.key)

    def worker_processes_lost(self, worker: WorkerState) -> None:
        """A worker left: its task processes die with it (their tasks are retried as the
        worker's own)."""
        for proc in list(worker.processes.values()):
            self._forget_process(proc)
            if proc.task is not None:
                proc.task.process = None
        worker.process_waiting.clear()

    def cancel_waiting_for_process(self, task: TaskState) -> bool:
        """Drop ``task`` from its worker's queue for a process; True if it was there (it
        has not started)."""
        worker = task.worker
        if worker is None or task.process is not None:
            return False
        for key, waiting in list(worker.process_waiting.items()):
            if task in waiting:
                waiting.remove(task)
                if not waiting:
                    del worker.process_waiting[key]
                return True
        return False
