"""Which state may follow which, for every kind of entity the scheduler keeps, and the
bookkeeping each change carries. Pure: no I/O.

Every state change of a task, object, actor or actor call goes through
``SchedulerState.transition(entity, finish, stimulus_id)``, which looks up
``(entity.state, finish)`` in its kind's table, as Dask's ``_TRANSITIONS_TABLE`` does:

- a pair that is not in the table raises ``InvalidTransition`` (naming the kind, the id
  and both states) and changes nothing;
- a pair mapped to ``None`` changes only the state (and the counts and stimulus id every
  change of that kind moves);
- a pair mapped to a function also runs it, after the state changed: the counters, the
  queue-wait clock and the retry budget that follow that change live there, nowhere else.

The handlers (``state.py``, ``actors.py``) still decide *when* a change happens and do the
work around it (queues, slots, messages); this module only says what is allowed and keeps
the books that follow. Mixed into ``SchedulerState``.
"""
from __future__ import annotations

import logging
import time
from typing import Callable

from graphstore.exceptions import GraphstoreError
from graphstore.scheduler.progress import LIVE_STATES, STATE_INDEX
from graphstore.scheduler.entities import (ALIVE, ASSIGNED, DEAD, DONE, ERROR, FAILED,
                                           PENDING, PENDING_PLACEMENT, QUEUED, READY,
                                           RESTARTING, STARTING, WAITING, ActorCallState,
                                           ActorState, ObjectState, TaskState)

logger = logging.getLogger("graphstore.scheduler")


class SchedulerError(GraphstoreError):
    """The scheduler's own bookkeeping went wrong: a bug in graphstore, not in user code."""


class InvalidTransition(SchedulerError):
    """A state change that the transition table does not allow."""

    def __init__(self, kind: str, entity_id: bytes, start: str, finish: str,
                 stimulus_id: str = ""):
        self.kind, self.entity_id, self.start, self.finish = kind, entity_id, start, finish
        self.stimulus_id = stimulus_id
        super().__init__(f"invalid transition of {kind} {entity_id.hex()}: {start!r} -> "
                         f"{finish!r}" + (f" (stimulus {stimulus_id})" if stimulus_id
                                          else ""))


class StateInvariantError(SchedulerError):
    """``validate_state()`` found bookkeeping that disagrees with a recount."""


#: Kind of entity -> the name used in errors and logs.
KIND_NAMES: dict[type, str] = {TaskState: "task", ObjectState: "object",
                               ActorState: "actor", ActorCallState: "actor call"}

Action = Callable[..., None] | None


class TransitionsMixin:
    """``transition()`` and the bookkeeping of each change, for ``SchedulerState``."""

    #: The stimulus id of the event being handled: the server sets it for each message
    #: (``"<message type>-<n>"``), tests and simulations set their own.
    stimulus_id: str = "init"
    #: Whether the scheduler's logger takes debug lines, as of the last scheduling pass
    #: (``schedule`` asks the logger once, not each task twice).
    debug_log: bool = False

    def transition(self, entity, finish: str, stimulus_id: str | None = None) -> None:
        """Move ``entity`` to ``finish`` through its kind's table (see the module)."""
        kind = type(entity)
        start = entity.state
        try:
            action, books = _STEPS[kind][start][finish]
        except KeyError:
            raise InvalidTransition(KIND_NAMES[kind], entity.id, start, finish,
                                    stimulus_id or self.stimulus_id) from None
        if stimulus_id is None:
            stimulus_id = self.stimulus_id
        entity.state = finish
        if books is not None:           # tasks, actor calls, actors
            entity.stimulus_id = stimulus_id
            if books is not _STIMULUS_ONLY:
                row = entity.progress_row
                if row is not None and books is not _BY_NAME:
                    # Its row, kept since it was submitted: live, so never forgotten.
                    index, to = books
                    if row[index] > 0:
                        row[index] -= 1
                    row[to] += 1
                else:
                    entity.progress_row = self.progress.move(entity.name, start, finish)
        if action is not None:
            action(self, entity, stimulus_id)

    # -- tasks ------------------------------------------------------------------------
    def _task_queued(self, task: TaskState, stimulus_id: str) -> None:
        task.queued_at = time.monotonic()     # queue wait, for /metrics

    def _task_retried(self, task: TaskState, stimulus_id: str) -> None:
        """A task whose run ended (its process died, or it raised one of its
        ``retry_exceptions``) runs again, spending one retry."""
        task.retries_left -= 1
        self.counts["retried"] += 1
        task.queued_at = time.monotonic()
        logger.info("task %s %s is retried (%d retries left)", task.name, task.id.hex(),
                    task.retries_left, extra={"stimulus_id": stimulus_id})

    def _task_assigned(self, task: TaskState, stimulus_id: str) -> None:
        task.started_at = time.time()
        if task.queued_at:
            self.task_metrics.task_assigned(time.monotonic() - task.queued_at)
            task.queued_at = 0.0      # read only here: its float goes now, not with the task
        if self.debug_log and task.worker is not None:
            logger.debug("task %s %s placed on worker %s (node %s)", task.name,
                         task.id.hex(), task.worker.id.hex(), task.worker.node.id,
                         extra={"stimulus_id": stimulus_id})

    def _task_done(self, task: TaskState, stimulus_id: str) -> None:
        self.counts["done"] += 1
        self.task_metrics.task_finished(task.name, failed=False)

    def _task_failed(self, task: TaskState, stimulus_id: str) -> None:
        task.finished_at = time.time()
        self.counts["failed"] += 1
        self.task_metrics.task_finished(task.name, failed=True)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("task %s %s failed: %s", task.name, task.id.hex(),
                         (task.error_text or "").strip()[-300:],
                         extra={"stimulus_id": stimulus_id})

    def _task_rerun(self, task: TaskState, stimulus_id: str) -> None:
        """A finished task runs again to compute a lost result (lineage)."""
        task.retries_left -= 1
        self.counts["reconstructed"] += 1
        logger.info("task %s %s runs again to rebuild a lost result (%d retries left)",
                    task.name, task.id.hex(), task.retries_left,
                    extra={"stimulus_id": stimulus_id})

    # -- objects ----------------------------------------------------------------------
    def _object_rebuilding(self, obj: ObjectState, stimulus_id: str) -> None:
        self.counts["objects_rebuilt"] += 1

    def _object_lost(self, obj: ObjectState, stimulus_id: str) -> None:
        self.counts["objects_lost"] += 1

    # -- actors -----------------------------------------------------------------------
    def _actor_restarting(self, actor: ActorState, stimulus_id: str) -> None:
        actor.restarts += 1
        logger.info("actor %s %s restarts (%d of max_restarts=%d)", actor.class_name,
                    actor.id.hex(), actor.restarts, actor.max_restarts,
                    extra={"stimulus_id": stimulus_id})

    # -- actor calls ------------------------------------------------------------------
    def _call_done(self, call: ActorCallState, stimulus_id: str) -> None:
        call.finished_at = time.time()
        self.counts["done"] += 1

    def _call_failed(self, call: ActorCallState, stimulus_id: str) -> None:
        call.finished_at = time.time()
        self.counts["failed"] += 1


_M = TransitionsMixin

#: Tasks: waiting (arguments pending) -> queued -> assigned -> done / failed; back to
#: queued for a retry, to waiting when an argument is being rebuilt or a finished task
#: runs again for a lost result.
TASK_TRANSITIONS: dict[tuple[str, str], Action] = {
    (WAITING, QUEUED): _M._task_queued,
    (WAITING, FAILED): _M._task_failed,
    (QUEUED, ASSIGNED): _M._task_assigned,
    (QUEUED, WAITING): None,             # an argument is being computed again
    (QUEUED, FAILED): _M._task_failed,
    (ASSIGNED, DONE): _M._task_done,
    (ASSIGNED, FAILED): _M._task_failed,
    (ASSIGNED, QUEUED): _M._task_retried,
    (DONE, WAITING): _M._task_rerun,
}

#: Objects: pending -> ready / error; a ready one whose every copy is lost goes back to
#: pending (its task runs again) or becomes an error. Freeing removes an object from the
#: directory; that is not a state.
OBJECT_TRANSITIONS: dict[tuple[str, str], Action] = {
    (PENDING, READY): None,
    (PENDING, ERROR): None,
    (READY, PENDING): _M._object_rebuilding,
    (READY, ERROR): _M._object_lost,
}

#: Actors: pending -> starting -> alive (-> restarting -> alive ...) -> dead.
ACTOR_TRANSITIONS: dict[tuple[str, str], Action] = {
    (PENDING_PLACEMENT, STARTING): None,
    (PENDING_PLACEMENT, DEAD): None,
    (STARTING, ALIVE): None,
    (STARTING, RESTARTING): _M._actor_restarting,
    (STARTING, DEAD): None,
    (ALIVE, RESTARTING): _M._actor_restarting,
    (ALIVE, DEAD): None,
    (RESTARTING, ALIVE): None,
    (RESTARTING, RESTARTING): _M._actor_restarting,   # its new process died too
    (RESTARTING, DEAD): None,
}

#: Actor calls: assigned (sent to the actor) -> done / failed.
CALL_TRANSITIONS: dict[tuple[str, str], Action] = {
    (ASSIGNED, DONE): _M._call_done,
    (ASSIGNED, FAILED): _M._call_failed,
}

TABLES: dict[type, dict[tuple[str, str], Action]] = {
    TaskState: TASK_TRANSITIONS, ObjectState: OBJECT_TRANSITIONS,
    ActorState: ACTOR_TRANSITIONS, ActorCallState: CALL_TRANSITIONS}

#: What a change of an entity's state moves besides its state: nothing (objects); its
#: stimulus id only (actors); its stimulus id and its name's progress counts (tasks and
#: actor calls): the (from, to) indexes in its row when the change starts from a live
#: state (the row is its own since it was submitted), else ``_BY_NAME``: looked up by
#: name (``TaskProgress.move``).
_STIMULUS_ONLY = ("stimulus",)
_BY_NAME = ("by name",)


def _books(kind: type, start: str, finish: str) -> tuple | None:
    if kind is ObjectState:
        return None
    if kind is ActorState:
        return _STIMULUS_ONLY
    if start in LIVE_STATES:
        return (STATE_INDEX[start], STATE_INDEX[finish])
    return _BY_NAME


#: The same tables nested, kind -> start -> finish -> (action, books), built once here:
#: one lookup with no ``(start, finish)`` tuple to build and hash, three to four times a
#: task, says all a change does.
_STEPS: dict[type, dict[str, dict[str, tuple[Action, tuple | None]]]] = {}
for _kind, _table in TABLES.items():
    for (_start, _finish), _action in _table.items():
        _STEPS.setdefault(_kind, {}).setdefault(_start, {})[_finish] = (
            _action, _books(_kind, _start, _finish))
del _kind, _table, _start, _finish, _action
