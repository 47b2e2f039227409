"""What a process is to the cluster, given to its ``Runtime`` when it is made.

A driver runs the user's program; a worker runs tasks and owns a shared-memory store; an
actor process runs one actor; a task process runs tasks that need an environment of their
own. The role decides where large objects are written (a worker
writes into its own store, others ask a store on their host), how a spilled object is read
back, and what a blocking ``get`` inside a task does to the worker's CPU slots.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class DriverRole:
    """The user's program. Maps the pre-faulted reserve of each store on its host."""


@dataclass(frozen=True)
class ActorRole:
    """One actor's process: asks a store on its host to hold its large results.

    ``request_exit()`` is what ``exit_actor()`` calls: from then on no call starts."""
    request_exit: Callable[[], None] | None = None


@dataclass(frozen=True)
class WorkerRole:
    """A worker process, with its own store.

    ``store`` is the worker's ``SharedMemoryStore`` and ``address`` the address its peers
    fetch from. ``restore_spilled(object_id, path, offset, size)`` reads a spilled
    object back into the store and returns its segment. ``task_blocked()`` is called
    before a task's thread blocks in ``get``/``wait`` and returns a token that
    ``task_unblocked(token)`` takes after: the task's CPUs run other tasks meanwhile
    (nested tasks would deadlock otherwise).
    """
    store: Any
    address: str
    restore_spilled: Callable[[bytes, str, int, int], str]
    task_blocked: Callable[[], Any]
    task_unblocked: Callable[[Any], None]


@dataclass(frozen=True)
class TaskProcessRole:
    """A task process (tasks that need an environment of their own): asks a store on its
    host to hold large results, and lends its task's CPUs out while it blocks in ``get``
    (the hooks are as in ``WorkerRole``)."""
    task_blocked: Callable[[], Any]
    task_unblocked: Callable[[Any], None]


Role = DriverRole | WorkerRole | ActorRole | TaskProcessRole
