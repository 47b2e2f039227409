"""The progress pane's counts (``scheduler/progress.py``) kept by the scheduler's state
machine through every path a task takes, and the bound on the names they remember.

Each test drives ``SchedulerState`` with plain method calls (the harness of
``test_scheduler_state.py``) and checks the counts against the live tasks themselves.
"""
from __future__ import annotations

import pytest

from graphstore.core import protocol as msg
from graphstore.scheduler.progress import TaskProgress
from test_scheduler_actors import PROCESS2, Actors
from test_scheduler_state import DRIVER, LONG, Harness, oid


def counts(h, name="task") -> dict:
    return h.s.progress.counts(name)


def check_live(h) -> None:
    """The live columns equal the tasks in each state now (what a scan would say)."""
    live: dict[tuple, int] = {}
    for task in h.s.tasks.values():
        live[(task.name, task.state)] = live.get((task.name, task.state), 0) + 1
    for row in h.s.progress.rows(1000):
        for state in ("waiting", "queued", "assigned"):
            assert row[state] == live.get((row["name"], state), 0), (row, state)


@pytest.fixture
def h():
    return Harness()


def test_submit_queue_run_done(h):
    w = h.worker("w1")
    t1, (r1,) = h.submit(fn=LONG)
    t2, _ = h.submit(deps=[r1], fn=LONG)
    t3, _ = h.submit(fn=LONG)
    assert counts(h) == {"waiting": 1, "queued": 2, "assigned": 0, "done": 0, "failed": 0}
    h.s.schedule()
    assert counts(h)["assigned"] == 1 and counts(h)["queued"] == 1
    check_live(h)
    h.done(w, t1)
    h.s.schedule()
    check_live(h)
    assert counts(h)["done"] == 1
    for task_id in (t2, t3):
        if task_id in h.s.tasks and h.s.tasks[task_id].state == "assigned":
            h.done(w, task_id)
            h.s.schedule()
    remaining = [t for t in (t2, t3) if t in h.s.tasks]
    h.done(w, remaining[0])
    assert counts(h) == {"waiting": 0, "queued": 0, "assigned": 0, "done": 3, "failed": 0}


def test_failure_fails_dependents_in_their_own_rows(h):
    w = h.worker("w1")
    t1, (r1,) = h.submit(name="load")
    h.submit(deps=[r1], name="train")
    h.submit(deps=[r1], name="train")
    h.s.schedule()
    h.fail(w, t1)
    assert counts(h, "load")["failed"] == 1
    assert counts(h, "train") == {"waiting": 0, "queued": 0, "assigned": 0, "done": 0,
                                  "failed": 2}
    check_live(h)


def test_cancel_before_start_and_unschedulable(h):
    h.worker("w1")
    _, (r1,) = h.submit(name="busy", fn=LONG)
    _, (r2,) = h.submit(name="later", fn=LONG)
    h.s.schedule()
    assert counts(h, "later")["queued"] == 1
    h.s.cancel(msg.CancelTask(r2, False, False))
    assert counts(h, "later")["queued"] == 0 and counts(h, "later")["failed"] == 1
    h.submit(name="huge", cpus=64)
    assert counts(h, "huge")["failed"] == 1
    check_live(h)


def test_retry_after_a_crash_goes_back_to_queued(h):
    w1 = h.worker("w1")
    t, _ = h.submit(retries=1, name="flaky")
    h.s.schedule()
    assert counts(h, "flaky")["assigned"] == 1
    h.s.remove_peer(w1)
    assert counts(h, "flaky")["queued"] == 1 and counts(h, "flaky")["assigned"] == 0
    w2 = h.worker("w2")
    h.s.schedule()
    assert counts(h, "flaky")["assigned"] == 1
    h.done(w2, t)
    assert counts(h, "flaky") == {"waiting": 0, "queued": 0, "assigned": 0, "done": 1,
                                  "failed": 0}


def test_retry_exceptions_and_lineage_rerun(h):
    w1 = h.worker("w1", node="node-a")
    t, (r,) = h.submit(retries=2, name="rebuild")
    h.s.schedule()
    h.s.task_failed(w1, msg.TaskFailed(t, [b"err"], 0.1, "ValueError: once", retriable=True))
    assert counts(h, "rebuild")["queued"] == 1
    h.s.schedule()
    h.done_stored(w1, t, 10_000_000)
    assert counts(h, "rebuild")["done"] == 1
    h.worker("w2", node="node-b")
    h.s.remove_peer(w1)          # the only copy is lost: the task runs again
    assert counts(h, "rebuild")["done"] == 0
    assert counts(h, "rebuild")["queued"] + counts(h, "rebuild")["assigned"] == 1
    check_live(h)


def test_actor_calls_count_under_their_method_name():
    h = Actors()
    h.worker("w1", cpus=2)
    actor_id, _ = h.create()
    h.start(actor_id)
    call_id, ret = h.call(actor_id)
    assert counts(h, "Counter.add")["assigned"] == 1
    h.call_done(call_id, ret, actor_id)
    _, ret2 = h.call(actor_id)
    h.s.kill_actor(msg.KillActor(actor_id, True))
    assert counts(h, "Counter.add") == {"waiting": 0, "queued": 0, "assigned": 0,
                                        "done": 1, "failed": 1}
    # A result that overtook its submission counts once, as done.
    early_id, early_ret = oid(), oid()
    actor2, _ = h.create()
    h.start(actor2, process=PROCESS2)
    h.call_done(early_id, early_ret, actor2, process=PROCESS2)
    h.s.actor_call_submitted(DRIVER, msg.ActorCallSubmitted(early_id, actor2, "Counter.add",
                                                            [], [], [early_ret]))
    assert counts(h, "Counter.add")["done"] == 2
    assert counts(h, "Counter.add")["assigned"] == 0


def test_names_are_bounded_keeping_live_ones():
    progress = TaskProgress(max_names=3)
    progress.add("live", "queued")
    for name in ("a", "b", "c"):
        progress.add(name, "waiting")
        progress.move(name, "waiting", "done")
    assert len(progress) == 3
    assert [r["name"] for r in progress.rows(10)] == ["live", "b", "c"]
    assert progress.counts("live")["queued"] == 1


def test_rows_prefer_live_names_when_cut():
    progress = TaskProgress()
    progress.add("old-live", "assigned")
    for name in ("x", "y", "z"):
        progress.add(name, "done")
    assert [r["name"] for r in progress.rows(2)] == ["old-live", "z"]
    row = progress.rows(1)[0]
    assert row == {"name": "old-live", "waiting": 0, "queued": 0, "assigned": 1, "done": 0,
                   "failed": 0, "total": 1}
