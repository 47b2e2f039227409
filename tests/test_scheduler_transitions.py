"""The transition tables (``scheduler/transitions.py``): every pair they define, driven
once with its bookkeeping checked, and what an undefined pair does."""
from __future__ import annotations

import pytest

from graphstore.core import protocol as msg
from graphstore.scheduler import entities as st
from graphstore.scheduler.transitions import (ACTOR_TRANSITIONS, CALL_TRANSITIONS,
                                              OBJECT_TRANSITIONS, TASK_TRANSITIONS,
                                              InvalidTransition, SchedulerError)

from test_scheduler_state import DRIVER, Harness, oid

#: What a transition adds to ``counts`` beyond the state change.
TASK_COUNTS = {
    (st.ASSIGNED, st.DONE): {"done": 1},
    (st.ASSIGNED, st.QUEUED): {"retried": 1},
    (st.DONE, st.WAITING): {"reconstructed": 1},
    (st.WAITING, st.FAILED): {"failed": 1},
    (st.QUEUED, st.FAILED): {"failed": 1},
    (st.ASSIGNED, st.FAILED): {"failed": 1},
}


def _task_in(h: Harness, state: str, retries: int = 2) -> st.TaskState:
    """A live task put in ``state`` (its progress row moved with it)."""
    task_id, _ = h.submit(retries=retries, name=f"t-{state}")    # no worker: it waits
    task = h.s.tasks[task_id]
    h.s.progress.move(task.name, task.state, state)
    task.state = state
    return task


@pytest.mark.parametrize("start,finish", sorted(TASK_TRANSITIONS))
def test_every_task_transition(start, finish):
    h = Harness()
    task = _task_in(h, start)
    counts = dict(h.s.counts)
    retries = task.retries_left
    h.s.transition(task, finish, "TestEvent-7")
    assert task.state == finish and task.stimulus_id == "TestEvent-7"
    progress = h.s.progress.counts(task.name)
    assert progress[finish] == 1 and (start == finish or progress[start] == 0)
    changed = {k: h.s.counts[k] - counts[k] for k in counts if h.s.counts[k] != counts[k]}
    assert changed == TASK_COUNTS.get((start, finish), {})
    spends_retry = (start, finish) in ((st.ASSIGNED, st.QUEUED), (st.DONE, st.WAITING))
    assert task.retries_left == retries - spends_retry
    if finish == st.QUEUED:
        assert task.queued_at > 0
    if finish == st.ASSIGNED:
        assert task.started_at > 0
    if finish == st.FAILED:
        assert task.finished_at > 0


@pytest.mark.parametrize("start,finish", sorted(OBJECT_TRANSITIONS))
def test_every_object_transition(start, finish):
    h = Harness()
    obj = st.ObjectState(oid(), start)
    counts = dict(h.s.counts)
    h.s.transition(obj, finish, "TestEvent-8")
    assert obj.state == finish
    changed = {k: h.s.counts[k] - counts[k] for k in counts if h.s.counts[k] != counts[k]}
    assert changed == {(st.READY, st.PENDING): {"objects_rebuilt": 1},
                       (st.READY, st.ERROR): {"objects_lost": 1}}.get((start, finish), {})


def _actor(h: Harness) -> st.ActorState:
    return st.ActorState(msg.CreateActor(oid(), oid(), b"C" * 16, "Counter", None, [], [],
                                         {"max_restarts": 5}, {}), DRIVER)


@pytest.mark.parametrize("start,finish", sorted(ACTOR_TRANSITIONS))
def test_every_actor_transition(start, finish):
    h = Harness()
    actor = _actor(h)
    actor.state = start
    h.s.transition(actor, finish, "TestEvent-9")
    assert actor.state == finish and actor.stimulus_id == "TestEvent-9"
    assert actor.restarts == (finish == st.RESTARTING)


@pytest.mark.parametrize("start,finish", sorted(CALL_TRANSITIONS))
def test_every_actor_call_transition(start, finish):
    h = Harness()
    actor = _actor(h)
    call = st.ActorCallState(msg.ActorCallSubmitted(oid(), actor.id, "incr", [], [],
                                                    [oid()]), actor, DRIVER)
    h.s.progress.add(call.name, call.state)
    counts = dict(h.s.counts)
    h.s.transition(call, finish, "TestEvent-10")
    assert call.state == finish and call.finished_at > 0
    assert h.s.progress.counts("incr")[finish] == 1
    assert h.s.counts[finish] == counts[finish] + 1


def test_an_undefined_transition_raises_naming_kind_id_and_states():
    h = Harness()
    task = _task_in(h, st.DONE)
    with pytest.raises(InvalidTransition) as info:
        h.s.transition(task, st.ASSIGNED, "TaskDone-3")
    assert isinstance(info.value, SchedulerError)
    assert str(info.value) == (f"invalid transition of task {task.id.hex()}: 'done' -> "
                               f"'assigned' (stimulus TaskDone-3)")
    assert task.state == st.DONE            # nothing changed
    obj = st.ObjectState(oid(), st.ERROR)
    with pytest.raises(InvalidTransition, match=f"object {obj.id.hex()}: 'error' -> "
                                                f"'ready'"):
        h.s.transition(obj, st.READY)
    actor = _actor(h)
    actor.state = st.DEAD
    with pytest.raises(InvalidTransition, match=f"actor {actor.id.hex()}: 'dead' -> "
                                                f"'alive'"):
        h.s.transition(actor, st.ALIVE)


def test_handlers_take_only_transitions_of_the_tables():
    """A run through submit, retry after a worker's death, failure, cancel and lineage
    rebuild: every change goes through ``transition`` with a pair of its table, and each
    task keeps the stimulus id of the event that changed it last."""
    h = Harness()
    seen = set()
    original = h.s.transition

    def recording(entity, finish, stimulus_id=None):
        seen.add((type(entity).__name__, entity.state, finish))
        return original(entity, finish, stimulus_id)

    h.s.transition = recording
    w1 = h.worker("w1")
    h.s.stimulus_id = "SubmitTask-1"
    t1, (r1,) = h.submit(retries=1)
    h.s.schedule()
    assert h.s.tasks[t1].stimulus_id == "SubmitTask-1"
    h.s.stimulus_id = "Closed-2"
    w2 = h.worker("w2")
    h.s.remove_peer(w1)                       # retried on w2
    assert h.s.tasks[t1].state == st.ASSIGNED and h.s.tasks[t1].worker.id == w2
    h.done_stored(w2, t1, 1000)
    t2, (r2,) = h.submit(deps=[r1])
    h.s.schedule()
    h.fail(w2, t2)
    h.s.cancel(msg.CancelTask(h.submit(deps=[oid()])[1][0], False, False))
    assert {("TaskState", "waiting", "queued"), ("TaskState", "queued", "assigned"),
            ("TaskState", "assigned", "queued"), ("TaskState", "assigned", "done"),
            ("TaskState", "assigned", "failed"), ("TaskState", "waiting", "failed"),
            ("ObjectState", "pending", "ready"), ("ObjectState", "pending", "error")} <= seen
    tables = {"TaskState": TASK_TRANSITIONS, "ObjectState": OBJECT_TRANSITIONS,
              "ActorState": ACTOR_TRANSITIONS, "ActorCallState": CALL_TRANSITIONS}
    assert all((start, finish) in tables[kind] for kind, start, finish in seen)
