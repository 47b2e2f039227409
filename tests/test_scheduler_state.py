"""The scheduler's state machine, driven with plain method calls (no sockets).

Each test plays the server's part: it hands decoded messages to ``SchedulerState``, calls
``schedule()`` where the server would flush, and reads ``outbox``. The harness checks
``validate_state()`` after every event, in every test that uses it.
"""
from __future__ import annotations

import contextlib
import pickle

import pytest

from graphstore.core import protocol as msg
from graphstore.exceptions import (ObjectLostError, ObjectReconstructionFailedError,
                                   ObjectReconstructionFailedLineageEvictedError,
                                   ObjectReconstructionFailedMaxAttemptsExceededError,
                                   TaskError, TaskUnschedulableError, WorkerCrashedError)
from graphstore.scheduler import entities as st
from graphstore.scheduler.state import EVENT_HANDLERS, SchedulerState
from graphstore.scheduler.transitions import StateInvariantError

DRIVER = b"D" * 16
DRIVER2 = b"E" * 16
FN = b"F" * 16            # an unmeasured function
SHORT = b"S" * 16         # measured, fast
LONG = b"L" * 16          # measured, slow

_counter = iter(range(1, 10**9))


def oid() -> bytes:
    return next(_counter).to_bytes(16, "big")


def wid(name: str) -> bytes:
    return name.encode().ljust(16, b".")


def validate_after_each_event(state: SchedulerState, depth: list) -> SchedulerState:
    """Make every event handler of ``state`` end with ``validate_state()`` (once per
    event: not after handlers that another handler calls, nor inside ``depth[0] > 0``)."""

    def wrap(method):
        def handle(*args, **kwargs):
            depth[0] += 1
            try:
                return method(*args, **kwargs)
            finally:
                depth[0] -= 1
                if depth[0] == 0:
                    state.validate_state()
        return handle

    for name in EVENT_HANDLERS:
        setattr(state, name, wrap(getattr(state, name)))
    return state


class Harness:
    """A SchedulerState (validated after every event) plus helpers that build protocol
    messages."""

    def __init__(self, **kwargs):
        self._depth = [0]
        self.s = validate_after_each_event(SchedulerState(**kwargs), self._depth)
        self.s.add_driver(DRIVER)
        for fh in (FN, SHORT, LONG):
            self.s.register_function(msg.RegisterFunction(fh, b"code-" + fh))

    @contextlib.contextmanager
    def batch(self):
        """Validate the events inside once, at the end (for thousands of setup events:
        ``validate_state`` is O(state))."""
        self._depth[0] += 1
        try:
            yield
        finally:
            self._depth[0] -= 1
        self.s.validate_state()

    # peers
    def worker(self, name: str, cpus: float = 1, node: str = "node-a",
               resources: dict | None = None, capacity: int = 10**9) -> bytes:
        w = wid(name)
        self.s.add_worker(msg.RegisterWorker(w, 100, "host", node, float(cpus),
                                             resources or {}, f"tcp://{name}:1", capacity))
        return w

    # messages
    def submit(self, deps=(), nested=(), returns=1, cpus=1.0, resources=None, retries=0,
               fn=FN, peer=DRIVER, args=(b"args",), name="task"):
        task_id = oid()
        ret = [oid() for _ in range(returns)]
        self.s.submit(peer, msg.SubmitTask(task_id, fn, name, list(args) if args else None,
                                           list(deps), list(nested), ret, float(cpus),
                                           resources, retries))
        return task_id, ret

    def put(self, payload=(b"value",), contained=(), peer=DRIVER) -> bytes:
        object_id = oid()
        self.s.put_object(peer, msg.PutObject(object_id, list(payload), list(contained),
                                              None))
        return object_id

    def put_stored(self, worker: bytes, size: int, contained=(), peer=DRIVER,
                   segment=None) -> bytes:
        """A large object a driver wrote into ``worker``'s store."""
        object_id = oid()
        segment = segment or f"gs-test-{object_id.hex()[-6:]}"
        self.s.put_object(peer, msg.PutObject(object_id, None, list(contained),
                                              [worker, segment, size]))
        return object_id

    def done(self, worker: bytes, task_id: bytes, values=None, contained=None,
             duration=0.5):
        task = self.s.tasks[task_id]
        values = values or [b"result-" + r for r in task.returns]
        contained = contained or [[] for _ in task.returns]
        results = [[r, [v], c, len(v), None]
                   for r, v, c in zip(task.returns, values, contained)]
        self.s.task_done(worker, msg.TaskDone(task_id, results, duration))

    def done_stored(self, worker: bytes, task_id: bytes, size: int, duration=0.5) -> list:
        """The task's single result stayed in ``worker``'s store; returns its segment."""
        task = self.s.tasks[task_id]
        (r,) = task.returns
        segment = f"gs-test-{r.hex()[-6:]}"
        self.s.task_done(worker, msg.TaskDone(task_id, [[r, None, [], size, segment]],
                                              duration))
        return segment

    def fail(self, worker: bytes, task_id: bytes, error=None, duration=0.1):
        error = error or [pickle.dumps(TaskError("task", "Traceback: boom\n",
                                                 ValueError("boom")))]
        self.s.task_failed(worker, msg.TaskFailed(task_id, error, duration,
                                                  "ValueError: boom"))
        return error

    def measure(self, worker: bytes, fn: bytes, duration: float):
        """Run one task of ``fn`` to teach the scheduler its duration."""
        t, _ = self.submit(fn=fn)
        self.s.schedule()
        assert self.s.tasks[t].worker.id == worker
        self.done(worker, t, duration=duration)
        self.take()

    # outbox
    def take(self, kind=None, peer=None) -> list:
        """Pop the outbox; return the messages of ``kind`` (to ``peer``)."""
        out, self.s.outbox = self.s.outbox, []
        return [(p, m) for p, m in out
                if (kind is None or type(m) is kind) and (peer is None or p == peer)]

    def run_tasks(self, peer=None) -> list[bytes]:
        return [m.task_id for _, m in self.take(msg.RunTask, peer)]

    def obj(self, object_id):
        return self.s.objects.get(object_id)

    def error_of(self, object_id) -> BaseException:
        self.take()
        self.s.want(DRIVER, [object_id])
        ((_, note),) = self.take(msg.ObjectReady)
        assert note.object_id == object_id and note.payload is None
        return pickle.loads(note.error[0])


@pytest.fixture
def h():
    return Harness()


# -- dependencies and assignment --------------------------------------------------------

def test_task_waits_for_deps_then_runs_with_inlined_payloads(h):
    w = h.worker("w1", cpus=2)
    t1, (r1,) = h.submit()
    t2, (r2,) = h.submit(deps=[r1])
    h.s.schedule()
    assert h.run_tasks() == [t1]
    assert h.s.tasks[t2].state == st.WAITING and h.s.tasks[t2].waiting_on == 1

    h.done(w, t1, values=[b"v1"])
    assert h.obj(r1).state == st.READY and h.obj(r1).payload == [b"v1"]
    h.s.schedule()
    ((peer, run),) = h.take(msg.RunTask)
    assert peer == w and run.task_id == t2
    assert run.deps == [[r1, [b"v1"], None]]
    assert run.returns == [r2] and run.args == [b"args"] and run.function_hash == FN


def test_task_with_several_deps_waits_for_all(h):
    w = h.worker("w1", cpus=4)
    ta, (ra,) = h.submit()
    tb, (rb,) = h.submit()
    ready = h.put(payload=[b"p"])
    t, _ = h.submit(deps=[ra, ready, rb, ra])
    h.s.schedule()
    h.take()
    h.done(w, ta, values=[b"a"])
    h.s.schedule()
    assert h.run_tasks() == []
    h.done(w, tb, values=[b"b"])
    h.s.schedule()
    ((_, run),) = h.take(msg.RunTask)
    assert run.task_id == t
    assert run.deps == [[ra, [b"a"], None], [ready, [b"p"], None], [rb, [b"b"], None],
                        [ra, [b"a"], None]]


def test_ready_deps_run_at_once(h):
    w = h.worker("w1")
    a = h.put(payload=[b"x", msg.Frame(b"y" * 100_000)])
    t, _ = h.submit(deps=[a])
    h.s.schedule()
    ((peer, run),) = h.take(msg.RunTask)
    assert peer == w and run.deps[0][0] == a
    assert run.deps[0][1][0] == b"x" and bytes(run.deps[0][1][1].buffer) == b"y" * 100_000


def test_function_code_sent_once_per_worker():
    h = Harness()
    w1 = h.worker("w1", cpus=1)
    w2 = h.worker("w2", cpus=1)
    h.submit()
    h.submit()
    h.s.schedule()
    out = h.take()
    codes = [(p, m) for p, m in out if type(m) is msg.FunctionCode]
    assert sorted(p for p, _ in codes) == sorted([w1, w2])
    assert all(m.function_hash == FN and m.payload == b"code-" + FN for _, m in codes)
    # Each worker got its FunctionCode before its first RunTask.
    for w in (w1, w2):
        kinds = [type(m) for p, m in out if p == w]
        assert kinds == [msg.FunctionCode, msg.RunTask]
    for t in list(h.s.tasks):
        h.done(h.s.tasks[t].worker.id, t)
    h.submit()
    h.submit()
    h.s.schedule()
    out = h.take()
    assert [type(m) for _, m in out] == [msg.RunTask, msg.RunTask]


def test_unknown_function_fails_the_task(h):
    h.worker("w1")
    t, (r,) = h.submit(fn=b"?" * 16)
    assert t not in h.s.tasks
    assert isinstance(h.error_of(r), ObjectLostError)


def test_missing_dependency_fails_the_task(h):
    h.worker("w1")
    t, (r,) = h.submit(deps=[oid()])
    assert isinstance(h.error_of(r), ObjectLostError)


def test_tasks_wait_for_the_first_worker(h):
    t, _ = h.submit(cpus=3)
    h.s.schedule()
    assert h.run_tasks() == [] and h.s.tasks[t].state == st.QUEUED
    w = h.worker("w1", cpus=4)          # add_worker schedules
    assert h.run_tasks(w) == [t]


# -- resources --------------------------------------------------------------------------

@pytest.mark.parametrize("cpus, resources", [(5, None), (1, {"TPU": 1}), (1, {"GPU": 3})])
def test_impossible_request_is_unschedulable(cpus, resources):
    h = Harness()
    h.worker("w1", cpus=4, resources={"GPU": 2})
    t, (r,) = h.submit(cpus=cpus, resources=resources)
    assert t not in h.s.tasks
    err = h.error_of(r)
    assert isinstance(err, TaskUnschedulableError)
    assert "task" in str(err) and "CPU=4" in str(err)
    assert "start a worker with enough resources" in str(err)


def test_custom_resources_limit_concurrency(h):
    h.worker("w1", cpus=4, resources={"special": 1})
    t1, _ = h.submit(resources={"special": 1})
    t2, _ = h.submit(resources={"special": 1})
    t3, _ = h.submit()
    h.s.schedule()
    assert sorted(h.run_tasks()) == sorted([t1, t3])
    assert h.s.tasks[t2].state == st.QUEUED
    h.done(wid("w1"), t1)
    h.s.schedule()
    assert h.run_tasks() == [t2]


def test_resources_only_on_matching_worker_node(h):
    h.worker("cpu", cpus=4, node="n1")
    gpu = h.worker("gpu", cpus=1, node="n2", resources={"special": 1})
    t, _ = h.submit(resources={"special": 1})
    h.s.schedule()
    assert h.run_tasks(gpu) == [t]


def test_node_cpus_are_shared_by_its_workers():
    h = Harness()
    a = h.worker("a", cpus=1, node="n")
    b = h.worker("b", cpus=1, node="n")
    node = h.s.nodes["n"]
    assert node.num_cpus == 2 and set(node.workers) == {a, b}
    t1, _ = h.submit(cpus=1.5)
    t2, _ = h.submit(cpus=1.5)
    h.s.schedule()
    assert h.run_tasks() == [t1]
    # Worker b has a free slot, but its node has only 0.5 CPU left.
    assert h.s.tasks[t2].state == st.QUEUED and node.cpus_used == pytest.approx(1.5)
    h.done(h.s.tasks[t1].worker.id, t1)
    assert node.cpus_used == 0
    h.s.schedule()
    assert h.run_tasks() == [t2]


def test_separate_nodes_do_not_share_cpus():
    h = Harness()
    h.worker("a", cpus=1, node="n1")
    h.worker("b", cpus=1, node="n2")
    t1, _ = h.submit(cpus=1)
    t2, _ = h.submit(cpus=1)
    h.s.schedule()
    assert sorted(h.run_tasks()) == sorted([t1, t2])
    # A two-CPU task fits no node.
    t3, (r3,) = h.submit(cpus=2)
    assert isinstance(h.error_of(r3), TaskUnschedulableError)


def test_least_loaded_worker_is_chosen():
    h = Harness()
    a = h.worker("a", cpus=2, node="n1")
    b = h.worker("b", cpus=2, node="n2")
    tasks = [h.submit()[0] for _ in range(4)]
    h.s.schedule()
    placed = [h.s.tasks[t].worker.id for t in tasks]
    assert placed.count(a) == 2 and placed.count(b) == 2


def test_cluster_resources_and_summary(h):
    h.worker("a", cpus=2, node="n1", resources={"GPU": 1})
    h.worker("b", cpus=3, node="n2")
    # As in Ray, each node also offers a "node:<id>" resource of 1.
    assert h.s.cluster_resources() == {"CPU": 5.0, "GPU": 1.0, "node:n1": 1.0,
                                       "node:n2": 1.0}
    h.submit()
    h.s.schedule()
    summary = h.s.summary()
    assert summary["workers"] == 2 and summary["nodes"] == 2 and summary["drivers"] == 1
    assert summary["tasks"] == {st.ASSIGNED: 1}
    assert summary["counts"]["submitted"] == 1


# -- reference counting -----------------------------------------------------------------

def test_put_object_freed_when_holder_drops(h):
    a = h.put()
    assert h.obj(a).holders == {DRIVER}
    h.s.decref(DRIVER, [a])
    assert h.obj(a) is None


def test_object_lives_while_any_holder_holds_it(h):
    a = h.put()
    w = h.worker("w1")
    h.s.incref(w, [a])
    h.s.decref(DRIVER, [a])
    assert h.obj(a) is not None
    h.s.decref(w, [a])
    assert h.obj(a) is None


def test_want_on_freed_object_reports_object_lost(h):
    a = h.put()
    h.s.decref(DRIVER, [a])
    assert isinstance(h.error_of(a), ObjectLostError)


def test_task_refs_keep_dependencies_alive(h):
    w = h.worker("w1")
    a = h.put()
    nested = h.put()
    t, (r,) = h.submit(deps=[a], nested=[nested])
    h.s.decref(DRIVER, [a, nested])
    assert h.obj(a).task_refs == 1 and h.obj(nested).task_refs == 1
    h.s.schedule()
    h.take()
    h.done(w, t)
    assert h.obj(a) is None and h.obj(nested) is None
    assert h.obj(r).state == st.READY


def test_contained_ids_cascade(h):
    x = h.put()
    y = h.put(contained=[x])
    z = h.put(contained=[y])
    h.s.decref(DRIVER, [x, y])
    assert h.obj(x).container_refs == 1 and h.obj(y).container_refs == 1
    h.s.decref(DRIVER, [z])
    assert h.obj(x) is None and h.obj(y) is None and h.obj(z) is None
    assert h.s.objects == {}


def test_contained_object_with_its_own_holder_survives_cascade(h):
    x = h.put()
    y = h.put(contained=[x])
    h.s.decref(DRIVER, [y])
    assert h.obj(y) is None
    assert h.obj(x) is not None and h.obj(x).container_refs == 0
    h.s.decref(DRIVER, [x])
    assert h.obj(x) is None


def test_pending_result_without_holders_is_freed_on_completion(h):
    w = h.worker("w1")
    x = h.put()
    t, (r,) = h.submit()
    h.s.schedule()
    h.s.decref(DRIVER, [r, x])
    assert h.obj(r).state == st.PENDING          # still wanted by its producer
    assert h.obj(x) is None
    y = h.put()
    h.s.want(DRIVER2, [r])                        # a waiter that holds no ref
    h.done(w, t, contained=[[y]])
    ((peer, note),) = h.take(msg.ObjectReady)
    assert peer == DRIVER2 and note.payload == [b"result-" + r]
    assert h.obj(r) is None                        # freed once delivered
    assert h.obj(y).container_refs == 0           # the cascade released y


def test_result_containing_a_ref_keeps_it_alive(h):
    w = h.worker("w1")
    inner = h.put(peer=w)
    t, (r,) = h.submit()
    h.s.schedule()
    h.done(w, t, contained=[[inner]])
    h.s.decref(w, [inner])                       # the task's own ref is gone
    assert h.obj(inner).container_refs == 1
    h.s.decref(DRIVER, [r])
    assert h.obj(r) is None and h.obj(inner) is None


def test_driver_disconnect_releases_its_refs(h):
    a = h.put()
    b = h.put(contained=[a])
    w = h.worker("w1")
    t, (r,) = h.submit()
    h.s.schedule()
    h.s.remove_peer(DRIVER)
    assert h.obj(a) is None and h.obj(b) is None
    assert h.obj(r).state == st.PENDING
    h.done(w, t)
    assert h.obj(r) is None
    assert h.s.objects == {}


def test_a_departed_drivers_many_refs_are_released_in_shares(h, monkeypatch):
    """A driver leaving with many refs: each ``schedule()`` pass releases a share (the
    server flushes again while some are left, serving other peers in between); the
    books stay consistent at every step and everything is freed in the end."""
    import graphstore.scheduler.state as state_module
    monkeypatch.setattr(state_module, "_DEPARTED_RELEASES", 40)
    other = b"other-driver".ljust(16, b".")
    h.s.add_driver(other)
    with h.batch():
        mine = [h.put() for _ in range(100)]
        kept = h.put(peer=other)
    h.s.remove_peer(DRIVER)                      # one pass ran: 40 released
    assert sum(h.obj(i) is None for i in mine) == 40 and h.s.departed_holds
    h.s.schedule()
    assert sum(h.obj(i) is None for i in mine) == 80
    h.s.schedule()
    assert all(h.obj(i) is None for i in mine) and not h.s.departed_holds
    assert h.obj(kept) is not None               # another driver's object stays


def test_repeated_put_is_ignored(h):
    a = h.put(payload=[b"first"])
    h.s.put_object(DRIVER2, msg.PutObject(a, [b"second"], [], None))
    assert h.obj(a).payload == [b"first"] and h.obj(a).holders == {DRIVER}


def test_task_refs_never_go_negative(h):
    w = h.worker("w1")
    late = oid()
    t, _ = h.submit(nested=[late])
    h.s.put_object(w, msg.PutObject(late, [b"v"], [], None))
    h.s.schedule()
    h.done(w, t)
    assert h.obj(late).task_refs == 0


# -- failures ---------------------------------------------------------------------------

def test_failure_propagates_to_dependents_without_waiters(h):
    w = h.worker("w1", cpus=2)
    t1, (r1,) = h.submit()
    side = h.put()
    t2, (r2,) = h.submit(deps=[r1, side])
    t3, (r3,) = h.submit(deps=[r2])
    other, (ro,) = h.submit()
    h.s.decref(DRIVER, [side])
    h.s.schedule()
    h.take()
    err = h.fail(w, t1)
    assert h.obj(side) is None
    for r in (r1, r2, r3):
        assert h.obj(r).state == st.ERROR and h.obj(r).error is err
    assert t2 not in h.s.tasks and t3 not in h.s.tasks and other in h.s.tasks
    assert h.s.counts["failed"] == 3
    t4, (r4,) = h.submit(deps=[r2])
    assert h.obj(r4).error is err and t4 not in h.s.tasks


def test_failure_propagates_to_dependents_with_the_same_error(h):
    w = h.worker("w1", cpus=2)
    t1, (r1,) = h.submit()
    side = h.put()
    t2, (r2,) = h.submit(deps=[r1, side])
    t3, (r3,) = h.submit(deps=[r2])
    other, (ro,) = h.submit()
    h.s.decref(DRIVER, [side])
    h.s.schedule()
    h.take()
    h.s.want(DRIVER, [r3])
    err = h.fail(w, t1)
    assert h.obj(side) is None                     # t2's refs were released
    ((peer, note),) = h.take(msg.ObjectReady)
    assert peer == DRIVER and note.object_id == r3 and note.error is err
    for r in (r1, r2, r3):
        assert h.obj(r).state == st.ERROR and h.obj(r).error is err
    assert t2 not in h.s.tasks and t3 not in h.s.tasks and other in h.s.tasks
    assert h.s.counts["failed"] == 3
    cause = pickle.loads(err[0])
    assert isinstance(cause, ValueError)
    # A later task on a failed object fails at once with the same error.
    t4, (r4,) = h.submit(deps=[r2])
    assert h.obj(r4).error is err and t4 not in h.s.tasks


def test_failed_task_releases_its_refs_and_slot(h):
    w = h.worker("w1")
    a = h.put()
    t, (r,) = h.submit(deps=[a])
    h.s.decref(DRIVER, [a])
    h.s.schedule()
    h.fail(w, t)
    assert h.obj(a) is None
    assert h.s.workers[w].assigned == {} and h.s.nodes["node-a"].cpus_used == 0
    h.s.decref(DRIVER, [r])
    assert h.obj(r) is None


def test_worker_loss_retries_then_fails_with_worker_crashed(h):
    w1 = h.worker("w1", node="n1")
    t, (r,) = h.submit(retries=1)
    h.s.schedule()
    assert h.run_tasks(w1) == [t]
    h.s.remove_peer(w1)
    task = h.s.tasks[t]
    assert task.retries_left == 0 and task.state == st.QUEUED and task.worker is None
    assert h.s.counts["retried"] == 1
    assert "n1" not in h.s.nodes

    w2 = h.worker("w2", node="n2")
    out = h.take()
    assert [(p, type(m)) for p, m in out] == [(w2, msg.FunctionCode), (w2, msg.RunTask)]
    assert out[1][1].task_id == t and out[1][1].args == [b"args"]

    h.s.remove_peer(w2)
    assert t not in h.s.tasks
    err = h.error_of(r)
    assert isinstance(err, WorkerCrashedError)
    assert "task" in str(err) and "max_retries" in str(err)


def test_stale_report_from_a_lost_worker_is_ignored(h):
    w1 = h.worker("w1")
    t, (r,) = h.submit(retries=2)
    h.s.schedule()
    h.s.remove_peer(w1)
    w2 = h.worker("w2")
    h.take()
    h.s.task_done(w1, msg.TaskDone(t, [[r, [b"stale"], [], 5, None]], 0.1))
    assert h.obj(r).state == st.PENDING and h.s.tasks[t].worker.id == w2
    h.done(w2, t, values=[b"fresh"])
    assert h.obj(r).payload == [b"fresh"]


def test_worker_loss_releases_the_workers_refs(h):
    w = h.worker("w1")
    a = h.put(peer=w)
    h.s.remove_peer(w)
    assert h.obj(a) is None


# -- blocked tasks ----------------------------------------------------------------------

def test_blocked_task_lends_its_cpu(h):
    w = h.worker("w1", cpus=1)
    node = h.s.nodes["node-a"]
    t1, _ = h.submit()
    t2, _ = h.submit()
    h.s.schedule()
    assert h.run_tasks() == [t1]
    h.s.task_blocked(w, t1)
    assert node.cpus_used == 0 and h.s.workers[w].free_slots() == 1
    h.s.task_blocked(w, t1)                       # repeated: no double lending
    assert h.s.workers[w].free_slots() == 1
    h.s.schedule()
    assert h.run_tasks() == [t2]
    assert node.cpus_used == 1
    h.s.task_unblocked(w, t1)
    assert node.cpus_used == 2                    # briefly oversubscribed, as in Ray
    h.s.task_unblocked(w, t1)
    assert node.cpus_used == 2
    h.done(w, t1)
    h.done(w, t2)
    assert node.cpus_used == 0 and h.s.workers[w].free_slots() == 1


def test_task_finishing_while_blocked_releases_once(h):
    w = h.worker("w1", cpus=1)
    node = h.s.nodes["node-a"]
    t1, _ = h.submit()
    h.s.schedule()
    h.s.task_blocked(w, t1)
    h.done(w, t1)
    worker = h.s.workers[w]
    assert node.cpus_used == 0 and worker.blocked == 0 and worker.free_slots() == 1


def test_worker_lost_while_a_task_is_blocked(h):
    w1 = h.worker("w1", node="n1")
    t, _ = h.submit(retries=1)
    h.s.schedule()
    h.s.task_blocked(w1, t)
    h.s.remove_peer(w1)
    w2 = h.worker("w2", node="n2")
    assert h.run_tasks(w2) == [t]
    task = h.s.tasks[t]
    assert not task.blocked and h.s.workers[w2].blocked == 0
    assert h.s.nodes["n2"].cpus_used == 1
    h.done(w2, t)
    assert h.s.nodes["n2"].cpus_used == 0 and h.s.workers[w2].free_slots() == 1


def test_block_reports_for_unknown_tasks_are_ignored(h):
    w = h.worker("w1")
    h.s.task_blocked(w, oid())
    h.s.task_blocked(wid("nobody"), oid())
    h.s.task_unblocked(w, oid())
    assert h.s.workers[w].blocked == 0 and h.s.nodes["node-a"].cpus_used == 0


# -- pipelining -------------------------------------------------------------------------

def test_short_functions_are_queued_beyond_slots():
    h = Harness(pipeline_seconds=0.02)
    w = h.worker("w1", cpus=1)
    h.measure(w, SHORT, 0.001)                    # depth = 0.02 / 0.001 = 20
    tasks = [h.submit(fn=SHORT)[0] for _ in range(30)]
    h.s.schedule()
    assert h.run_tasks(w) == tasks[:21]           # 1 running + 20 queued
    assert all(h.s.tasks[t].state == st.QUEUED for t in tasks[21:])


def test_pipeline_depth_is_capped():
    h = Harness(pipeline_seconds=0.02, max_queued_per_worker=3)
    w = h.worker("w1", cpus=2)
    h.measure(w, SHORT, 0.0001)
    tasks = [h.submit(fn=SHORT)[0] for _ in range(10)]
    h.s.schedule()
    assert len(h.run_tasks(w)) == 2 + 3
    assert sum(h.s.tasks[t].state == st.QUEUED for t in tasks) == 10 - 5


@pytest.mark.parametrize("fn", [FN, LONG], ids=["unknown", "long"])
def test_long_or_unknown_functions_are_not_pipelined(fn):
    h = Harness(pipeline_seconds=0.02)
    w = h.worker("w1", cpus=2)
    h.measure(w, LONG, 1.0)
    tasks = [h.submit(fn=fn)[0] for _ in range(5)]
    h.s.schedule()
    assert h.run_tasks(w) == tasks[:2]
    assert all(h.s.tasks[t].state == st.QUEUED for t in tasks[2:])


def test_tasks_with_custom_resources_are_not_pipelined():
    h = Harness(pipeline_seconds=0.02)
    w = h.worker("w1", cpus=1, resources={"R": 10})
    h.measure(w, SHORT, 0.001)
    tasks = [h.submit(fn=SHORT, resources={"R": 1})[0] for _ in range(3)]
    h.s.schedule()
    assert h.run_tasks(w) == tasks[:1]


def test_nothing_is_pipelined_behind_a_long_task():
    h = Harness(pipeline_seconds=0.02)
    a = h.worker("a", cpus=1, node="n1")
    b = h.worker("b", cpus=1, node="n2")
    h.measure(a, SHORT, 0.001)
    h.measure(a, LONG, 5.0)
    long_task, _ = h.submit(fn=LONG)
    h.s.schedule()
    (long_worker,) = [p for p, _ in h.take(msg.RunTask)]
    other = b if long_worker == a else a
    shorts = [h.submit(fn=SHORT)[0] for _ in range(25)]
    h.s.schedule()
    placed = {t: h.s.tasks[t].worker.id for t in shorts if h.s.tasks[t].worker}
    assert set(placed.values()) == {other}
    assert len(placed) == 21
    assert {p for p, _ in h.take(msg.RunTask)} == {other}
    # When the long task ends, its worker takes short tasks again.
    h.done(long_worker, long_task, duration=5.0)
    h.s.schedule()
    assert {p for p, _ in h.take(msg.RunTask)} == {long_worker}


def test_unknown_task_does_not_go_behind_pipelined_queue():
    h = Harness(pipeline_seconds=0.02)
    a = h.worker("a", cpus=1, node="n1")
    b = h.worker("b", cpus=1, node="n2")
    h.measure(a, SHORT, 0.001)
    for _ in range(10):
        h.submit(fn=SHORT)
    h.s.schedule()
    h.take()
    u, _ = h.submit(fn=FN)
    h.s.schedule()
    assert h.run_tasks() == []                    # both busy: u waits at the scheduler
    assert h.s.tasks[u].state == st.QUEUED
    # Once b has drained its queue, u is placed there.
    for t in [t for t in h.s.workers[b].assigned]:
        h.done(b, t, duration=0.001)
    h.s.schedule()
    assert u in h.run_tasks(b)


def test_idle_worker_on_a_shared_node_is_not_starved_by_another_workers_queue():
    h = Harness(pipeline_seconds=0.02)
    a = h.worker("a", cpus=1, node="n")
    b = h.worker("b", cpus=1, node="n")
    h.measure(a, SHORT, 0.001)
    for _ in range(30):
        h.submit(fn=SHORT)
    h.s.schedule()
    h.take()
    assert len(h.s.workers[a].assigned) > 1 and len(h.s.workers[b].assigned) > 1
    # a drains its queue and goes idle, while b still has a queue of short tasks.
    while h.s.workers[a].assigned:
        for t in list(h.s.workers[a].assigned):
            h.done(a, t, duration=0.001)
        h.s.schedule()
        h.take()
    assert len(h.s.workers[b].assigned) > 1
    u, _ = h.submit(fn=FN)
    h.s.schedule()
    assert h.run_tasks(a) == [u]


# -- output -----------------------------------------------------------------------------

def test_task_output_goes_to_the_submitting_driver(h):
    h.s.add_driver(DRIVER2)
    w = h.worker("w1")
    t, _ = h.submit(peer=DRIVER2)
    h.s.schedule()
    h.take()
    h.s.task_output(msg.TaskOutput(t, "(task pid=1)", "stdout", "hi\n"))
    assert h.take() == [(DRIVER2, msg.Output("(task pid=1)", "stdout", "hi\n", t))]
    # Live rows (a progress bar) travel with the task's id, so the driver keeps each
    # task's apart.
    h.s.task_output(msg.TaskOutput(t, "(task pid=1)", "stderr", "", ["bar:  50%"]))
    assert h.take() == [(DRIVER2, msg.Output("(task pid=1)", "stderr", "", t,
                                             ["bar:  50%"]))]
    # Output of an unknown task goes to every driver.
    h.s.task_output(msg.TaskOutput(oid(), "p", "stderr", "x"))
    assert sorted(p for p, _ in h.take(msg.Output)) == sorted([DRIVER, DRIVER2])
    del w


def test_waiter_of_a_failed_task_gets_the_error(h):
    w = h.worker("w1")
    t, (r,) = h.submit()
    h.s.schedule()
    h.s.want(DRIVER2, [r])
    err = h.fail(w, t)
    ((peer, note),) = h.take(msg.ObjectReady)
    assert peer == DRIVER2 and note == msg.ObjectReady(r, None, err, None)


# -- stored (shared-memory) objects ---------------------------------------------------------

MB = 1024 * 1024


def frees(h, peer=None) -> list:
    """The [id, reusable] entries of FreeObjects in the outbox (to ``peer``)."""
    return [e for _, m in h.take(msg.FreeObjects, peer) for e in m.entries]


def test_put_with_a_location_records_the_copy_and_seals_it(h):
    w = h.worker("w1", node="n1")
    x = h.put_stored(w, 50 * MB, segment="gs-c-w1-1")
    obj, worker = h.obj(x), h.s.workers[w]
    assert obj.state == st.READY and obj.payload is None and obj.size == 50 * MB
    assert obj.locations == {w: "gs-c-w1-1"} and obj.holders == {DRIVER}
    assert worker.objects == {x} and worker.stored_bytes == 50 * MB
    assert h.take() == [(w, msg.SealObjects([x]))]
    # Readers are told where it is: [[node, worker address, segment, size]].
    h.s.want(DRIVER2, [x])
    assert h.take() == [(DRIVER2, msg.ObjectReady(
        x, None, None, [["n1", "tcp://w1:1", "gs-c-w1-1", 50 * MB]]))]
    assert h.s.locations_of(obj) == [["n1", "tcp://w1:1", "gs-c-w1-1", 50 * MB]]


def test_inline_put_has_no_location(h):
    h.worker("w1")
    a = h.put(payload=[b"abc", b"de"])
    assert h.obj(a).locations == {} and h.obj(a).size == 5
    assert h.s.locations_of(h.obj(a)) is None
    assert h.take(msg.SealObjects) == []


def test_put_into_a_dead_workers_store_is_an_error(h):
    x = h.put_stored(wid("gone"), MB)
    err = h.error_of(x)
    assert isinstance(err, ObjectLostError) and "died" in str(err)
    assert h.obj(x).locations == {}


def test_free_of_a_stored_object_releases_it_for_reuse(h):
    w = h.worker("w1")
    x = h.put_stored(w, 10 * MB)
    h.take()
    h.s.decref(DRIVER, [x])
    assert h.obj(x) is None
    assert frees(h, w) == [[x, True]]
    assert h.s.workers[w].objects == set() and h.s.workers[w].stored_bytes == 0


def test_every_copy_is_freed(h):
    a = h.worker("a", node="n1")
    b = h.worker("b", node="n2")
    x = h.put_stored(a, MB)
    h.s.object_added(b, msg.ObjectAdded(x, "gs-c-b-7"))
    h.take()
    h.s.decref(DRIVER, [x])
    out = h.take(msg.FreeObjects)
    assert sorted(out) == sorted([(a, msg.FreeObjects([[x, True]])),
                                  (b, msg.FreeObjects([[x, True]]))])
    assert h.s.workers[a].stored_bytes == 0 and h.s.workers[b].stored_bytes == 0


def test_task_result_stored_on_its_worker(h):
    w = h.worker("w1", node="n1")
    t, (r,) = h.submit()
    h.s.schedule()
    h.s.want(DRIVER2, [r])
    h.take()
    segment = h.done_stored(w, t, 20 * MB)
    obj = h.obj(r)
    assert obj.state == st.READY and obj.size == 20 * MB and obj.locations == {w: segment}
    assert h.s.workers[w].objects == {r} and h.s.workers[w].stored_bytes == 20 * MB
    ((peer, note),) = h.take(msg.ObjectReady)
    assert peer == DRIVER2
    assert note == msg.ObjectReady(r, None, None, [["n1", "tcp://w1:1", segment, 20 * MB]])
    # A task reading it is told where it is.
    t2, _ = h.submit(deps=[r])
    h.s.schedule()
    ((_, run),) = h.take(msg.RunTask)
    assert run.task_id == t2
    assert run.deps == [[r, None, [["n1", "tcp://w1:1", segment, 20 * MB]]]]


def test_stored_result_nobody_wants_is_freed_at_once(h):
    w = h.worker("w1")
    t, (r,) = h.submit()
    h.s.schedule()
    h.s.decref(DRIVER, [r])
    h.take()
    h.done_stored(w, t, 5 * MB)
    assert h.obj(r) is None
    assert frees(h, w) == [[r, True]]
    assert h.s.workers[w].stored_bytes == 0


# -- losing a store's copies ------------------------------------------------------------------

def test_worker_loss_loses_objects_whose_only_copy_was_there(h):
    a = h.worker("a", node="n1")
    b = h.worker("b", node="n2")
    only_a = h.put_stored(a, 30 * MB)
    both = h.put_stored(a, MB)
    h.s.object_added(b, msg.ObjectAdded(both, "gs-c-b-1"))
    only_b = h.put_stored(b, MB)
    inline = h.put(peer=a)
    h.s.incref(DRIVER, [inline])
    h.take()
    h.s.remove_peer(a)

    err = h.error_of(only_a)
    assert isinstance(err, ObjectLostError)
    assert only_a.hex() in str(err) and "31,457,280 bytes" in str(err) and "died" in str(err)
    assert h.obj(only_a).state == st.ERROR and h.obj(only_a).locations == {}
    assert h.obj(both).state == st.READY and h.obj(both).locations == {b: "gs-c-b-1"}
    assert h.obj(only_b).state == st.READY
    assert h.obj(inline).state == st.READY        # inline objects live in the scheduler
    assert h.s.workers[b].objects == {both, only_b}
    assert h.s.workers[b].stored_bytes == 2 * MB
    # Tasks submitted later on the lost object fail at once with that error.
    t, (r,) = h.submit(deps=[only_a])
    assert t not in h.s.tasks and isinstance(h.error_of(r), ObjectLostError)
    # Freeing the lost object sends nothing to anyone.
    h.s.decref(DRIVER, [only_a])
    assert h.obj(only_a) is None and frees(h) == []


def test_waiting_task_whose_ready_argument_is_lost_fails(h):
    a = h.worker("a", node="n1")
    b = h.worker("b", node="n2", resources={"only_b": 1})
    x = h.put_stored(a, 10 * MB)
    producer, (y,) = h.submit(resources={"only_b": 1})       # runs on b
    h.s.schedule()
    assert h.s.tasks[producer].worker.id == b
    consumer, (r,) = h.submit(deps=[y, x])                   # waits on y; x is ready
    assert h.s.tasks[consumer].state == st.WAITING
    h.take()
    h.s.remove_peer(a)                                       # x's only copy is gone
    h.done(b, producer)
    h.s.schedule()
    runs = [m for _, m in h.take(msg.RunTask) if m.task_id == consumer]
    assert runs == []                                        # never sent without x
    assert consumer not in h.s.tasks
    assert isinstance(h.error_of(r), ObjectLostError)


def test_retried_task_whose_argument_was_lost_fails_with_object_lost(h):
    a = h.worker("a", node="n1")
    x = h.put_stored(a, 10 * MB)
    t, (r,) = h.submit(deps=[x], retries=1)
    h.s.schedule()
    assert h.run_tasks(a) == [t]                  # locality: it runs where x is
    h.s.remove_peer(a)                            # the task is retried; x is lost
    h.worker("b", node="n2")
    runs = h.take(msg.RunTask)
    assert [m.deps for _, m in runs if m.task_id == t] == []   # not sent without its data
    assert t not in h.s.tasks
    assert isinstance(h.error_of(r), ObjectLostError)


# -- copies made by transfers -------------------------------------------------------------------

def test_object_added_records_a_second_copy(h):
    a = h.worker("a", node="n1")
    b = h.worker("b", node="n2")
    x = h.put_stored(a, 7 * MB, segment="gs-c-a-1")
    h.take()
    h.s.object_added(b, msg.ObjectAdded(x, "gs-c-b-1"))
    h.s.object_added(b, msg.ObjectAdded(x, "gs-c-b-1"))    # reported twice: counted once
    assert h.obj(x).locations == {a: "gs-c-a-1", b: "gs-c-b-1"}
    assert h.s.workers[b].objects == {x} and h.s.workers[b].stored_bytes == 7 * MB
    assert h.take() == []
    assert h.s.locations_of(h.obj(x)) == [["n1", "tcp://a:1", "gs-c-a-1", 7 * MB],
                                          ["n2", "tcp://b:1", "gs-c-b-1", 7 * MB]]


def test_object_added_for_a_freed_object_frees_the_copy(h):
    a = h.worker("a", node="n1")
    b = h.worker("b", node="n2")
    x = h.put_stored(a, MB)
    h.s.decref(DRIVER, [x])
    h.take()
    h.s.object_added(b, msg.ObjectAdded(x, "gs-c-b-1"))
    assert h.take() == [(b, msg.FreeObjects([[x, False]]))]
    assert h.s.workers[b].objects == set() and h.s.workers[b].stored_bytes == 0
    # Also for an id never seen, and for a lost object.
    ghost = oid()
    h.s.object_added(b, msg.ObjectAdded(ghost, "gs-c-b-2"))
    assert h.take() == [(b, msg.FreeObjects([[ghost, False]]))]
    lost = h.put_stored(a, MB)
    h.s.remove_peer(a)
    h.take()
    h.s.object_added(b, msg.ObjectAdded(lost, "gs-c-b-3"))
    assert h.take() == [(b, msg.FreeObjects([[lost, False]]))]
    assert h.obj(lost).locations == {}


def test_object_added_by_an_unknown_worker_is_ignored(h):
    a = h.worker("a")
    x = h.put_stored(a, MB)
    h.take()
    h.s.object_added(wid("stranger"), msg.ObjectAdded(x, "gs-c-s-1"))
    assert h.obj(x).locations == {a: h.obj(x).locations[a]} and h.take() == []


# -- placement by locality ----------------------------------------------------------------------

@pytest.mark.parametrize("holder", ["a", "b"])
def test_consumer_runs_on_the_node_holding_its_large_argument(holder):
    h = Harness()
    workers = {"a": h.worker("a", node="nA"), "b": h.worker("b", node="nB")}
    x = h.put_stored(workers[holder], 50 * MB)
    t, _ = h.submit(deps=[x])
    h.s.schedule()
    assert h.run_tasks(workers[holder]) == [t]
    placement = h.s.tasks[t].placement
    assert placement == {"worker": workers[holder].hex(), "node": f"n{holder.upper()}",
                         "pid": 100, "missing_bytes": 0}


def test_consumer_goes_elsewhere_when_the_holding_node_is_saturated():
    h = Harness()
    a = h.worker("a", node="nA")
    b = h.worker("b", node="nB")
    x = h.put_stored(b, 50 * MB)
    first, _ = h.submit(deps=[x])
    second, _ = h.submit(deps=[x])
    h.s.schedule()
    assert h.s.tasks[first].worker.id == b
    assert h.s.tasks[first].placement["missing_bytes"] == 0
    assert h.s.tasks[second].worker.id == a        # b's one slot is taken
    assert h.s.tasks[second].placement["node"] == "nA"
    assert h.s.tasks[second].placement["missing_bytes"] == 50 * MB


def test_another_worker_on_the_holding_node_is_preferred():
    h = Harness()
    h.worker("a", node="nA")
    b1 = h.worker("b1", node="nB")
    b2 = h.worker("b2", node="nB")
    x = h.put_stored(b1, 50 * MB)
    first, _ = h.submit(deps=[x])
    second, _ = h.submit(deps=[x])
    h.s.schedule()
    assert h.s.tasks[first].worker.id == b1
    assert h.s.tasks[second].worker.id == b2       # same host: nothing to fetch
    assert h.s.tasks[second].placement["missing_bytes"] == 0


def test_missing_bytes_weigh_against_queued_work():
    """cost = missing bytes / bandwidth + queued seconds per slot (0.5 s per unknown task)."""
    for size, expected in ((50 * MB, "a"), (500 * MB, "b")):
        h = Harness(bandwidth=1e9)
        a = h.worker("a", cpus=4, node="nA")
        b = h.worker("b", cpus=4, node="nB", resources={"only_b": 3})
        for _ in range(3):
            h.submit(resources={"only_b": 1})
        h.s.schedule()
        assert h.s.workers[b].queued_seconds == pytest.approx(1.5)   # 0.375 s per slot
        x = h.put_stored(b, size)
        t, _ = h.submit(deps=[x])
        h.s.schedule()
        chosen = h.s.tasks[t].worker.id
        assert chosen == {"a": a, "b": b}[expected], (size, chosen)


def test_the_largest_argument_decides():
    h = Harness()
    a = h.worker("a", node="nA")
    b = h.worker("b", node="nB")
    big = h.put_stored(b, 80 * MB)
    small = h.put_stored(a, 5 * MB)
    inline = h.put(payload=[b"x" * 1000])
    t, _ = h.submit(deps=[small, inline, big])
    h.s.schedule()
    assert h.s.tasks[t].worker.id == b
    assert h.s.tasks[t].placement["missing_bytes"] == 5 * MB
    del a


def test_inline_arguments_do_not_affect_placement():
    h = Harness()
    a = h.worker("a", node="nA")
    h.worker("b", node="nB")
    inline = h.put(payload=[b"x" * 90_000], peer=DRIVER)
    t, _ = h.submit(deps=[inline])
    h.s.schedule()
    assert h.s.tasks[t].worker.id == a             # the first idle worker, as before
    assert h.s.tasks[t].placement["missing_bytes"] == 0


# -- stores per node ------------------------------------------------------------------------------

def test_stores_on_node_orders_by_free_store_memory(h):
    w1 = h.worker("w1", node="n", capacity=1000 * MB)
    w2 = h.worker("w2", node="n", capacity=2000 * MB)
    w3 = h.worker("w3", node="n", capacity=1500 * MB)
    h.worker("other", node="m", capacity=9000 * MB)
    assert [w.id for w in h.s.stores_on_node("n")] == [w2, w3, w1]
    x = h.put_stored(w2, 1200 * MB)                  # w2: 800 MB free
    assert [w.id for w in h.s.stores_on_node("n")] == [w3, w1, w2]
    h.s.decref(DRIVER, [x])
    assert [w.id for w in h.s.stores_on_node("n")] == [w2, w3, w1]
    assert h.s.stores_on_node("nowhere") == []
    h.s.remove_peer(w2)
    assert [w.id for w in h.s.stores_on_node("n")] == [w3, w1]


# -- task records --------------------------------------------------------------------------------

def test_task_records_include_finished_tasks_with_placement(h):
    w = h.worker("w1", cpus=2, node="n1")
    x = h.put_stored(w, 3 * MB)
    ok, (ok_ret,) = h.submit(deps=[x], name="reader")
    bad, _ = h.submit(name="breaker")
    h.s.schedule()
    h.done(w, ok)
    h.fail(w, bad)
    running, _ = h.submit(name="still-running")
    h.s.schedule()
    records = h.s.task_records()
    by_id = {r["task_id"]: r for r in records}
    assert [r["task_id"] for r in records] == [ok.hex(), bad.hex(), running.hex()]
    rec = by_id[ok.hex()]
    assert rec["name"] == "reader" and rec["state"] == st.DONE and rec["error"] is None
    assert rec["placement"] == {"worker": w.hex(), "node": "n1", "pid": 100,
                                "missing_bytes": 0}
    assert rec["submitted_at"] <= rec["started_at"] <= rec["finished_at"]
    assert rec["returns"] == [ok_ret.hex()]
    rec = by_id[bad.hex()]
    assert rec["state"] == st.FAILED and rec["error"] == "ValueError: boom"
    assert rec["placement"]["node"] == "n1"
    rec = by_id[running.hex()]
    assert rec["state"] == st.ASSIGNED and rec["finished_at"] == 0.0
    assert rec["placement"]["worker"] == w.hex()


def test_task_history_is_bounded():
    h = Harness(history_size=3)
    w = h.worker("w1")
    tasks = []
    for i in range(5):
        t, _ = h.submit(name=f"t{i}")
        h.s.schedule()
        h.done(w, t)
        tasks.append(t)
    assert [r["task_id"] for r in h.s.task_records()] == [t.hex() for t in tasks[2:]]
    assert [r["name"] for r in h.s.task_records(limit=2)] == ["t3", "t4"]


def test_unschedulable_task_is_recorded_without_placement(h):
    h.worker("w1", cpus=1)
    t, _ = h.submit(cpus=8, name="too-big")
    (rec,) = h.s.task_records()
    assert rec["task_id"] == t.hex() and rec["state"] == st.FAILED
    assert rec["placement"] is None


# -- lineage: lost objects computed again ------------------------------------------------------

def test_lost_task_result_is_computed_again_elsewhere(h):
    a = h.worker("a", node="n1")
    t, (r,) = h.submit(retries=2)
    h.s.schedule()
    assert h.run_tasks(a) == [t]
    h.done_stored(a, t, 5 * MB)
    assert h.obj(r).state == st.READY and t in h.s.lineage
    b = h.worker("b", node="n2")
    h.take()
    h.s.remove_peer(a)
    assert h.obj(r).state == st.PENDING
    h.s.schedule()
    assert h.run_tasks(b) == [t]
    h.done_stored(b, t, 5 * MB)
    assert h.obj(r).state == st.READY and h.obj(r).locations == {b: f"gs-test-{r.hex()[-6:]}"}
    assert h.s.counts["reconstructed"] == 1 and h.s.counts["objects_rebuilt"] == 1
    assert h.s.tasks == {} and h.s.lineage[t].retries_left == 1
    # A driver waiting on it meanwhile is answered once it is back.
    h.s.remove_peer(b)
    h.s.want(DRIVER, [r])
    c = h.worker("c", node="n3")
    assert h.run_tasks(c) == [t]
    h.done_stored(c, t, 5 * MB)
    (note,) = [m for _, m in h.take(msg.ObjectReady)]
    assert note.object_id == r and note.error is None and note.location[0][1] == "tcp://c:1"


def test_freed_arguments_are_revived_through_their_own_lineage(h):
    a = h.worker("a", node="n1")
    t1, (x,) = h.submit(retries=1, name="make_x")
    h.s.schedule()
    assert h.run_tasks(a) == [t1]
    h.done_stored(a, t1, 2 * MB)
    t2, (y,) = h.submit(deps=[x], retries=1, name="make_y")
    h.s.decref(DRIVER, [x])                    # the driver keeps only y
    h.s.schedule()
    assert h.run_tasks(a) == [t2]
    h.done_stored(a, t2, 3 * MB)
    assert h.obj(x) is None                    # freed: nothing needs its value
    assert set(h.s.lineage) == {t1, t2}        # but y's lineage needs its task
    b = h.worker("b", node="n2")
    h.take()
    h.s.remove_peer(a)
    h.s.schedule()
    assert h.run_tasks(b) == [t1]              # x first; make_y waits for it
    assert h.obj(x).state == st.PENDING and h.s.tasks[t2].state == st.WAITING
    h.done_stored(b, t1, 2 * MB)
    h.s.schedule()
    assert h.run_tasks(b) == [t2]
    h.done_stored(b, t2, 3 * MB)
    assert h.obj(y).state == st.READY
    assert h.obj(x) is None                    # freed again once make_y had it
    assert h.s.counts["objects_rebuilt"] == 2 and h.s.counts["reconstructed"] == 2
    # Dropping y lets all of its lineage go.
    h.s.decref(DRIVER, [y])
    assert h.s.lineage == {} and h.s.lineage_producer == {} and h.s.lineage_bytes == 0


def test_lost_objects_that_cannot_be_computed_again_name_the_reason(h):
    a = h.worker("a", node="n1")
    put = h.put_stored(a, MB)
    t0, (no_retry,) = h.submit(retries=0, name="once")
    h.s.schedule()
    h.done_stored(a, t0, MB)
    h.take()
    h.s.remove_peer(a)
    err = h.error_of(put)
    assert isinstance(err, ObjectLostError) and "put()" in str(err) and put.hex() in str(err)
    assert type(err) is ObjectReconstructionFailedError         # Ray's names for the cases
    err = h.error_of(no_retry)
    assert "max_retries" in str(err) and "once" in str(err)
    assert type(err) is ObjectReconstructionFailedMaxAttemptsExceededError
    assert h.s.counts["objects_lost"] == 2


def test_lineage_past_its_byte_budget_is_dropped_oldest_first():
    h = Harness(max_lineage_bytes=5000)       # two entries of 1 KiB + 1,000 bytes
    a = h.worker("a", node="n1")
    results = []
    for _ in range(4):
        t, (r,) = h.submit(retries=1, args=(b"x" * 1000,))
        h.s.schedule()
        h.done_stored(a, t, MB)
        results.append(r)
    assert h.s.lineage_bytes <= 5000 and len(h.s.lineage) == 2
    h.worker("b", node="n2")
    h.take()
    h.s.remove_peer(a)
    assert "max_lineage_bytes" in str(h.error_of(results[0]))
    assert type(h.error_of(results[0])) is ObjectReconstructionFailedLineageEvictedError
    assert h.obj(results[-1]).state == st.PENDING


# -- lineage of inline values (Ray's inlined arguments) ---------------------------------------

def _worker_dies(h, dead: bytes, node: str = "n2") -> bytes:
    """``dead`` leaves and a worker on another node joins; returns the new one."""
    b = h.worker("b", node=node)
    h.take()
    h.s.remove_peer(dead)
    return b


def test_a_task_whose_results_are_all_inline_keeps_no_lineage(h):
    a = h.worker("a", node="n1")
    t, (r,) = h.submit(retries=3, name="noop")
    h.s.schedule()
    h.done(a, t)
    assert h.obj(r).state == st.READY                     # live, yet nothing is kept:
    assert h.s.lineage == {} and h.s.lineage_producer == {} and h.s.lineage_bytes == 0
    h.s.decref(DRIVER, [r])
    assert h.obj(r) is None and h.s.lineage == {}


def test_a_task_with_an_inline_result_holding_refs_is_kept(h):
    a = h.worker("a", node="n1")
    inner = h.put()
    t, (r,) = h.submit(retries=1)
    h.s.schedule()
    h.done(a, t, contained=[[inner]])
    assert t in h.s.lineage and h.s.lineage_producer == {r: h.s.lineage[t]}


def test_a_mixed_task_is_kept_and_its_inline_result_revives_through_it(h):
    """One stored and one inline result: kept as before. A dependent taking the inline
    one pins it (no value kept), and a rerun revives the argument by running it."""
    a = h.worker("a", node="n1")
    t1, (big, small) = h.submit(retries=2, returns=2, name="mixed")
    h.s.schedule()
    h.s.task_done(a, msg.TaskDone(t1, [[big, None, [], MB, "gs-test-big"],
                                       [small, [b"small"], [], 5, None]], 0.5))
    assert set(h.s.lineage) == {t1} and h.s.lineage[t1].lineage_refs == 2
    u, (y,) = h.submit(deps=[small], retries=1, name="use_small")
    h.s.decref(DRIVER, [small])
    h.s.schedule()
    h.done_stored(a, u, MB)
    assert h.obj(small) is None and h.s.lineage[u].lineage_values is None
    assert h.s.lineage[t1].lineage_refs == 2            # big, and u's argument
    b = _worker_dies(h, a)
    h.s.schedule()
    assert set(h.run_tasks(b)) == {t1}                   # small again, by its task
    assert h.obj(small).state == st.PENDING and h.s.tasks[u].state == st.WAITING


def test_a_freed_inline_argument_is_recreated_from_the_value_its_dependent_kept(h):
    a = h.worker("a", node="n1")
    t1, (x,) = h.submit(retries=1, name="make_x")
    h.s.schedule()
    h.done(a, t1, values=[b"x-value"])
    h.take()
    assert t1 not in h.s.lineage                         # inline: nothing kept
    u, (y,) = h.submit(deps=[x], retries=1, args=(b"u-args",), name="use_x")
    h.s.decref(DRIVER, [x])
    h.s.schedule()
    assert h.run_tasks(a) == [u]
    h.done_stored(a, u, 3 * MB)
    assert h.obj(x) is None                              # freed: only u's record has it
    kept = h.s.lineage[u].lineage_values
    assert set(kept) == {x} and kept[x].payload == [b"x-value"]
    assert h.s.lineage_bytes == 1024 + len(b"u-args") + len(b"x-value")
    b = _worker_dies(h, a)
    assert h.obj(x).state == st.READY and h.obj(x).payload == [b"x-value"]
    assert h.obj(x).task_refs == 1 and not h.obj(x).holders
    assert h.obj(x).producer is not None and h.obj(x).producer.id == t1
    h.s.schedule()
    ((_, run),) = h.take(msg.RunTask)
    assert run.task_id == u and run.deps == [[x, [b"x-value"], None]]
    h.done_stored(b, u, 3 * MB)
    assert h.obj(y).state == st.READY and h.obj(y).locations == {b: f"gs-test-{y.hex()[-6:]}"}
    assert h.obj(x) is None                              # freed again once u had it
    assert h.s.counts["reconstructed"] == 1              # u only: make_x never ran again
    assert h.s.counts["objects_rebuilt"] == 2            # y, and x from u's record
    # Dropping y drops u's lineage and the value it kept.
    task = h.s.lineage[u]
    h.s.decref(DRIVER, [y])
    assert h.s.lineage == {} and h.s.lineage_bytes == 0 and task.lineage_values is None


def test_freed_put_arguments_are_recreated_from_the_values_kept(h):
    """put() leaves no lineage: before the kept values, rerunning a task whose put()
    arguments were freed failed with "no lineage is kept"."""
    a = h.worker("a", node="n1")
    dep, nested = h.put(payload=(b"dep-value",)), h.put(payload=(b"nested-value",))
    u, (y,) = h.submit(deps=[dep, dep], nested=[nested], retries=1)
    h.s.decref(DRIVER, [dep, nested])
    h.s.schedule()
    h.done_stored(a, u, MB)
    assert h.obj(dep) is None and h.obj(nested) is None
    assert set(h.s.lineage[u].lineage_values) == {dep, nested}
    assert h.s.lineage_bytes == 1024 + len(b"args") + len(b"dep-value") + len(b"nested-value")
    b = _worker_dies(h, a)
    assert h.obj(dep).payload == [b"dep-value"] and h.obj(dep).task_refs == 2
    assert h.obj(nested).payload == [b"nested-value"] and h.obj(nested).producer is None
    h.s.schedule()
    ((_, run),) = h.take(msg.RunTask)
    assert run.deps == [[dep, [b"dep-value"], None]] * 2
    h.done_stored(b, u, MB)
    assert h.obj(y).state == st.READY and h.obj(dep) is None and h.obj(nested) is None


def test_a_kept_error_argument_is_recreated_as_the_same_error(h):
    a = h.worker("a", node="n1")
    bad, (e,) = h.submit(name="bad")
    h.s.schedule()
    error = h.fail(a, bad)
    u, (y,) = h.submit(nested=[e], retries=1)          # nested: passed, not resolved
    h.s.decref(DRIVER, [e])
    h.s.schedule()
    h.done_stored(a, u, MB)
    assert h.s.lineage[u].lineage_values[e].error == error
    b = _worker_dies(h, a)
    assert h.obj(e).state == st.ERROR and h.obj(e).error == error
    assert h.s.tasks[u].worker.id == b                   # a nested error fails nothing


def test_kept_values_count_against_max_lineage_bytes():
    h = Harness(max_lineage_bytes=3000)
    a = h.worker("a", node="n1")
    t, (r,) = h.submit(retries=1, args=None)
    h.s.schedule()
    h.done_stored(a, t, MB)
    big = h.put(payload=(b"v" * 1500,))
    u, (y,) = h.submit(deps=[big], retries=1, args=None)
    h.s.schedule()
    h.done_stored(a, u, MB)
    assert h.s.lineage_bytes == 1024 + 1500 and set(h.s.lineage) == {u}   # t went first
    assert "max_lineage_bytes" in (h.s.graph.task(t).lineage_note or "")


def test_a_kept_task_pins_the_task_of_a_nested_argument_that_finishes_after_it(h):
    """A nested argument is passed unresolved, so its task may finish after the task
    taking it: the pin is taken ahead and counted once that task is kept (it was
    taken back for nothing before, dropping the other's lineage early)."""
    a = h.worker("a", node="n1", cpus=2)
    p, (x,) = h.submit(retries=1, name="slow")
    u, (y,) = h.submit(nested=[x], retries=1, name="takes_x")
    h.s.schedule()
    h.done_stored(a, u, MB)                  # x still pending
    h.done_stored(a, p, MB)
    assert h.s.lineage[p].lineage_refs == 2  # x, and u's argument
    h.s.decref(DRIVER, [x])
    assert set(h.s.lineage) == {p, u}        # u may need x made again
    h.s.decref(DRIVER, [y])
    assert h.s.lineage == {} and h.s.lineage_bytes == 0


def test_an_inline_result_a_kept_task_took_before_it_was_made_keeps_its_lineage(h):
    """The kept task could not keep the value (there was none yet): the task making it
    is kept though its result is inline, so a rerun can make the argument again."""
    a = h.worker("a", node="n1", cpus=2)
    p, (x,) = h.submit(retries=1, name="slow_small")
    u, (y,) = h.submit(nested=[x], retries=1, name="takes_x")
    h.s.schedule()
    h.done_stored(a, u, MB)                  # x pending: no value to keep
    h.done(a, p, values=[b"x-value"])
    assert set(h.s.lineage) == {p, u} and h.s.lineage[p].lineage_refs == 2
    h.s.decref(DRIVER, [x])
    assert h.obj(x) is None and p in h.s.lineage
    b = _worker_dies(h, a)                   # y lost: u runs again, and p for x
    assert h.obj(x).state == st.PENDING and h.s.tasks[p].state in (st.QUEUED, st.ASSIGNED)
    while h.s.tasks:                         # b runs them one at a time
        h.s.schedule()
        for task_id in h.run_tasks(b):
            if task_id == p:
                h.done(b, p, values=[b"x-value"])
            else:
                h.done_stored(b, u, MB)
    assert h.obj(y).state == st.READY and h.s.counts["reconstructed"] == 2
    assert h.obj(x) is None                  # made again for u, freed once u ran
    h.s.decref(DRIVER, [y])
    assert h.s.lineage == {} and h.s.objects == {}


def test_a_pin_ahead_is_taken_back_when_the_dependent_goes_first(h):
    a = h.worker("a", node="n1", cpus=2)
    p, (x,) = h.submit(retries=1, name="slow")
    u, (y,) = h.submit(nested=[x], retries=1, name="takes_x")
    h.s.schedule()
    h.done_stored(a, u, MB)
    h.s.decref(DRIVER, [y])                  # u's lineage goes while p still runs
    h.done_stored(a, p, MB)
    assert h.s.lineage[p].lineage_refs == 1
    h.s.decref(DRIVER, [x])
    assert h.s.lineage == {}


def test_a_freed_argument_whose_task_already_runs_again_is_revived_whatever_its_retries(h):
    """Its task, running again for another lost result with its last retry, makes it
    anyway: it is not lost for want of retries."""
    a1 = h.worker("a1", node="n1", resources={"one": 1})
    a2 = h.worker("a2", node="n2", resources={"two": 1})
    p, (big, small) = h.submit(retries=1, returns=2, resources={"one": 1}, name="mixed")
    h.s.schedule()
    h.s.task_done(a1, msg.TaskDone(p, [[big, None, [], MB, "gs-test-big"],
                                       [small, [b"small"], [], 5, None]], 0.5))
    u, (y,) = h.submit(deps=[small], retries=1, resources={"two": 1}, name="use_small")
    h.s.decref(DRIVER, [small])
    h.s.schedule()
    h.done_stored(a2, u, MB)
    h.worker("c", node="n3", resources={"one": 1, "two": 1}, cpus=2)
    h.take()
    h.s.remove_peer(a1)                      # big lost: p runs again, its last retry
    assert h.s.tasks[p].retries_left == 0
    h.s.remove_peer(a2)                      # y lost: u needs small, which p makes
    assert h.obj(small).state == st.PENDING and h.s.tasks[u].state == st.WAITING


def test_validate_state_recounts_what_lineage_holds(h):
    a = h.worker("a", node="n1")
    x = h.put(payload=(b"x",))
    u, _ = h.submit(deps=[x], retries=1)
    h.s.schedule()
    h.done_stored(a, u, MB)
    h.s.lineage_bytes += 1
    with pytest.raises(StateInvariantError, match="lineage_bytes"):
        h.s.validate_state()
    h.s.lineage_bytes -= 1
    h.s.lineage[u].lineage_refs += 1
    with pytest.raises(StateInvariantError, match="lineage refs"):
        h.s.validate_state()


def test_queued_task_whose_argument_is_being_rebuilt_waits_for_it(h):
    a = h.worker("a", node="n1")
    b = h.worker("b", node="n2", resources={"gate": 1})
    t, (x,) = h.submit(retries=1)
    h.s.schedule()
    assert h.run_tasks(a) == [t]
    h.done_stored(a, t, MB)
    blocker, _ = h.submit(resources={"gate": 1})           # holds b's "gate"
    consumer, (r,) = h.submit(deps=[x], resources={"gate": 1})
    h.s.schedule()
    assert h.s.tasks[consumer].state == st.QUEUED
    h.take()
    h.s.remove_peer(a)
    h.done(b, blocker)
    h.s.schedule()
    assert h.run_tasks(b) == [t]                           # the rebuild, not the consumer
    assert h.s.tasks[consumer].state == st.WAITING
    h.done_stored(b, t, MB)
    h.s.schedule()
    assert h.run_tasks(b) == [consumer]


def test_application_error_is_retried_when_the_task_asks(h):
    w = h.worker("w")
    t, (r,) = h.submit(retries=1)
    h.s.schedule()
    assert h.run_tasks(w) == [t]
    error = [pickle.dumps(TaskError("task", "tb", ValueError("flaky")))]
    h.s.task_failed(w, msg.TaskFailed(t, error, 0.1, "ValueError: flaky", True))
    h.s.schedule()
    assert h.run_tasks(w) == [t] and h.s.counts["retried"] == 1
    h.s.task_failed(w, msg.TaskFailed(t, error, 0.1, "ValueError: flaky", True))
    assert t not in h.s.tasks                              # no retries left: it fails
    assert isinstance(h.error_of(r), TaskError)


def test_spill_files_on_a_gone_hosts_disk_are_lost_with_it(h):
    a = h.worker("a", node="n1")
    h.worker("b", node="n2")
    t, (local,) = h.submit(retries=1, resources={"node:n1": 1})
    h.s.schedule()
    h.done_stored(a, t, MB)
    on_s3 = h.put_stored(a, MB)
    h.s.objects_spilled(a, msg.ObjectsSpilled("/tmp/spill/a-1", [[local, 0, MB]], True))
    h.s.objects_spilled(a, msg.ObjectsSpilled("bucket/c/a-2", [[on_s3, 0, MB]], False))
    assert h.obj(local).locations == {} and h.obj(local).spill is not None
    h.take()
    h.s.remove_peer(a)                        # n1's only worker: its disk is gone too
    assert h.obj(local).state == st.PENDING  # computed again from lineage
    assert h.obj(on_s3).state == st.READY and h.obj(on_s3).spill[0] == "bucket/c/a-2"
    assert "/tmp/spill/a-1" not in h.s.spill_files and h.s.spill_file_node == {}


# -- actor results that overtake their submission -----------------------------------------

def test_early_actor_result_holds_the_refs_inside_it(h):
    """An actor's ActorCallDone may come before the caller's ActorCallSubmitted; the
    refs inside it must survive the actor's own DecRef that follows it."""
    actor_peer = wid("actor-proc")
    h.s.add_driver(actor_peer)    # a connected peer: its refs are counted
    inner = h.put(peer=actor_peer)
    call_id, ret = oid(), oid()
    h.s.actor_call_done(actor_peer, msg.ActorCallDone(
        call_id, oid(), [[ret, [b"list"], [inner], 0, None, None]], 0.01, None))
    h.s.decref(actor_peer, [inner])
    assert h.obj(inner) is not None
    # Its caller died before submitting: the hold ends with the wait.
    h.s.expire_early_results(float("inf"))
    assert h.obj(inner) is None and not h.s.early_results


# -- a dead worker's objects taken over by its host -----------------------------------------

def test_dead_workers_objects_are_adopted_by_a_worker_of_its_host(h):
    w1, w2 = h.worker("w1"), h.worker("w2")
    far = h.worker("w3", node="node-b")
    a = h.put_stored(w1, 4096, segment="gs-c-w1-1")
    h.take()
    h.s.remove_peer(w1)
    assert h.obj(a).locations == {w2: "gs-c-w1-1"} and h.obj(a).state == st.READY
    assert h.take(msg.AdoptSegments) == [(w2, msg.AdoptSegments([[a, "gs-c-w1-1", 4096]]))]
    assert far not in h.obj(a).locations
    # The segment was gone after all: a put cannot be rebuilt, so it is lost.
    h.s.adoption_failed(w2, msg.AdoptionFailed([a]))
    assert isinstance(h.error_of(a), ObjectLostError)


def test_last_worker_of_a_host_has_no_heir(h):
    w1 = h.worker("w1")
    h.worker("w3", node="node-b")
    a = h.put_stored(w1, 4096, segment="gs-c-w1-1")
    h.s.remove_peer(w1)
    assert h.take(msg.AdoptSegments) == []
    assert isinstance(h.error_of(a), ObjectLostError)


# -- generator tasks ----------------------------------------------------------------------

def _streaming_task(h, worker):
    task_id = oid()
    generator = oid()
    h.s.submit(DRIVER, msg.SubmitTask(task_id, FN, "gen", None, [], [], [generator], 1.0,
                                      None, 1, None, None, 2))
    h.s.schedule()
    ((_, run),) = h.take(msg.RunTask, worker)
    assert run.mode == 2
    return task_id, generator


def _yield(h, worker, generator, index, payload=b"v"):
    """The worker puts a value and reports it, then drops its own ref."""
    object_id = h.put((payload,), peer=worker)
    h.s.generator_item(worker, msg.GeneratorItem(generator, index, object_id, None, True, b""))
    h.s.decref(worker, [object_id])
    return object_id


def test_streamed_values_are_held_for_the_caller_and_announced_in_order(h):
    w = h.worker("w1")
    task_id, generator = _streaming_task(h, w)
    first = _yield(h, w, generator, 0)
    second = _yield(h, w, generator, 1)
    notes = [m for _, m in h.take(msg.GeneratorItemReady, DRIVER)]
    assert [(n.index, n.object_id, n.payload) for n in notes] == [(0, first, [b"v"]),
                                                                   (1, second, [b"v"])]
    assert h.obj(first).holders == {DRIVER} and h.obj(second).holders == {DRIVER}
    h.s.task_done(w, msg.TaskDone(task_id, [[generator, [b"2"], [], 1, None]], 0.1))
    h.s.decref(DRIVER, [first, generator])
    assert h.obj(first) is None and h.obj(generator) is None
    assert generator not in h.s.streams


def test_a_retry_repeating_values_hands_out_only_new_ones(h):
    w = h.worker("w1")
    task_id, generator = _streaming_task(h, w)
    _yield(h, w, generator, 0)
    again = _yield(h, w, generator, 0)        # the retry's first value: a repeat
    new = _yield(h, w, generator, 1)
    notes = [m for _, m in h.take(msg.GeneratorItemReady, DRIVER)]
    assert [n.index for n in notes] == [0, 1] and notes[1].object_id == new
    assert h.obj(again) is None               # its producer's ref was its only hold


def test_values_of_a_dropped_generator_are_freed_at_once(h):
    w = h.worker("w1")
    task_id, generator = _streaming_task(h, w)
    h.s.decref(DRIVER, [generator])           # the caller dropped the generator
    value = _yield(h, w, generator, 0)
    assert h.take(msg.GeneratorItemReady) == [] and h.obj(value) is None


def test_an_error_raised_in_a_generator_is_an_object_the_sender_holds(h):
    w = h.worker("w1")
    task_id, generator = _streaming_task(h, w)
    error = [pickle.dumps(ValueError("boom"))]
    h.s.generator_item(w, msg.GeneratorItem(generator, 0, b"e" * 16, error, True, b""))
    obj = h.obj(b"e" * 16)
    assert obj.state == st.ERROR and obj.holders == {w, DRIVER}
    ((_, note),) = h.take(msg.GeneratorItemReady, DRIVER)
    assert note.error == error
    # Reports from a worker the task is not on are ignored.
    h.s.generator_item(wid("other"), msg.GeneratorItem(generator, 1, b"f" * 16, error,
                                                       True, b""))
    assert h.obj(b"f" * 16) is None


def test_partial_results_of_a_failed_task_stay_good(h):
    w = h.worker("w1")
    t, (a, b) = h.submit(returns=2)
    h.s.schedule()
    h.take()
    error = [pickle.dumps(ValueError("boom"))]
    h.s.task_failed(w, msg.TaskFailed(t, error, 0.1, "ValueError: boom", False,
                                      [[a, [b"first"], [], 5, None]]))
    assert h.obj(a).state == st.READY and h.obj(a).payload == [b"first"]
    assert h.obj(b).state == st.ERROR


# -- decisions the server asks of the state ------------------------------------------------

def test_silent_workers_are_those_not_heard_from_within_the_timeout(h):
    w1, w2 = h.worker("w1"), h.worker("w2")
    heard = {w1: 100.0, w2: 109.5, wid("gone"): 0.0}   # a worker that left is not named
    assert h.s.silent_workers(heard, 110.0, 10.0) == []
    assert h.s.silent_workers(heard, 110.5, 10.0) == [w1]


def test_restore_plan_prefers_a_copy_on_the_node_then_its_stores(h):
    w1 = h.worker("w1", node="node-a")
    w2 = h.worker("w2", node="node-b")
    w3 = h.worker("w3", node="node-b", capacity=10**10)
    a = h.put_stored(w1, 100)
    h.s.objects_spilled(w1, msg.ObjectsSpilled("/spill/f1", [[a, 0, 100]], False))
    spill, ask = h.s.restore_plan(a, "node-b")
    assert spill == ["/spill/f1", 0, 100] and [w.id for w in ask] == [w3, w2]
    h.s.object_added(w2, msg.ObjectAdded(a, "gs-restored"))
    assert h.s.restore_plan(a, "node-b") == [w2, "tcp://w2:1", "gs-restored", "node-b"]
    b = h.put()
    with pytest.raises(LookupError, match="is not spilled"):
        h.s.restore_plan(b, "node-b")
    with pytest.raises(LookupError, match="is gone"):
        h.s.restore_plan(oid(), "node-b")


# -- retiring workers (a deployment scaling down) ----------------------------------------

def test_retiring_worker_gets_no_new_task_and_its_only_copies_move_away(h):
    w1 = h.worker("w1", node="node-a", capacity=10**9)
    w2 = h.worker("w2", node="node-b", capacity=10**9)
    w3 = h.worker("w3", node="node-c", capacity=5 * 10**8)
    only_here = h.put_stored(w1, 1000)
    also_on_w2 = h.put_stored(w1, 2000)
    h.s.object_added(w2, msg.ObjectAdded(also_on_w2, "gs-copy"))
    h.take()

    reply = h.s.retire_workers([w1], now=100.0)
    assert reply == {"workers": 1, "objects": 1, "stuck": 0, "tasks": 0}
    # One copy is asked for, of the only object w1 alone holds, from the staying worker
    # with the most free store memory, with its current locations.
    ((peer, ask),) = h.take(msg.ReplicateObjects)
    assert peer == w2
    assert ask.entries == [[only_here, [["node-a", "tcp://w1:1", h.obj(only_here)
                                          .locations[w1], 1000]]]]
    # Asked again before the copy arrived: not asked twice (until resend_after).
    assert h.s.retire_workers([w1], now=101.0)["objects"] == 1
    assert h.take(msg.ReplicateObjects) == []
    assert h.s.retire_workers([w1], now=111.0)["objects"] == 1
    assert len(h.take(msg.ReplicateObjects)) == 1

    # No new task goes to the retiring worker, by load or by strategy.
    tasks = [h.submit()[0] for _ in range(4)]
    h.s.schedule()
    assert {h.s.tasks[t].worker.id for t in tasks if h.s.tasks[t].worker} <= {w2, w3}

    h.s.object_added(w2, msg.ObjectAdded(only_here, "gs-copy-2"))
    assert h.s.retire_workers([w1], now=112.0) == {"workers": 1, "objects": 0, "stuck": 0,
                                                   "tasks": 0}
    # Leaving now loses nothing: every object still has a copy.
    h.s.remove_peer(w1)
    assert h.obj(only_here).state == st.READY and w2 in h.obj(only_here).locations
    assert h.obj(also_on_w2).state == st.READY


def test_retiring_worker_counts_its_tasks_and_objects_with_nowhere_to_go(h):
    w1 = h.worker("w1", cpus=1)
    t, _ = h.submit()
    h.s.schedule()
    assert h.s.tasks[t].worker.id == w1
    stored = h.put_stored(w1, 10)
    reply = h.s.retire_workers([w1, wid("gone")])
    assert reply == {"workers": 1, "objects": 0, "stuck": 1, "tasks": 1}
    assert h.take(msg.ReplicateObjects) == []
    h.done(w1, t)
    assert h.s.retire_workers([w1])["tasks"] == 0
    # A new worker joins: the object has somewhere to go now.
    w2 = h.worker("w2", node="node-b")
    h.take()
    assert h.s.retire_workers([w1])["objects"] == 1
    ((peer, ask),) = h.take(msg.ReplicateObjects)
    assert peer == w2 and ask.entries[0][0] == stored
