"""The scheduler's state machine, driven with plain method calls (no sockets).

Each test plays the server's part: it hands decoded messages to ``SchedulerState``, calls
``schedule()`` where the server would flush, and reads ``outbox``.
"""
from __future__ import annotations

import pickle

import pytest

from graphstore import protocol as msg
from graphstore.exceptions import (ObjectLostError, TaskError, TaskUnschedulableError,
                                   WorkerCrashedError)
from graphstore.scheduler import state as st
from graphstore.scheduler.state import SchedulerState

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


class Harness:
    """A SchedulerState plus helpers that build protocol messages."""

    def __init__(self, **kwargs):
        self.s = SchedulerState(**kwargs)
        self.s.add_driver(DRIVER)
        for fh in (FN, SHORT, LONG):
            self.s.register_function(msg.RegisterFunction(fh, b"code-" + fh))

    # peers
    def worker(self, name: str, cpus: float = 1, node: str = "node-a",
               resources: dict | None = None) -> bytes:
        w = wid(name)
        self.s.add_worker(msg.RegisterWorker(w, 100, "host", node, float(cpus),
                                             resources or {}, ""))
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
        self.s.put_object(peer, msg.PutObject(object_id, list(payload), list(contained)))
        return object_id

    def done(self, worker: bytes, task_id: bytes, values=None, contained=None,
             duration=0.5):
        task = self.s.tasks[task_id]
        values = values or [b"result-" + r for r in task.returns]
        contained = contained or [[] for _ in task.returns]
        results = [[r, [v], c] for r, v, c in zip(task.returns, values, contained)]
        self.s.task_done(worker, msg.TaskDone(task_id, results, duration))

    def fail(self, worker: bytes, task_id: bytes, error=None, duration=0.1):
        error = error or [pickle.dumps(TaskError("task", "Traceback: boom\n",
                                                 ValueError("boom")))]
        self.s.task_failed(worker, msg.TaskFailed(task_id, error, duration))
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
    assert run.deps == [[r1, [b"v1"]]]
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
    assert run.deps == [[ra, [b"a"]], [ready, [b"p"]], [rb, [b"b"]], [ra, [b"a"]]]


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
    h.worker("w1", cpus=4, resources={"GPU": 1})
    t1, _ = h.submit(resources={"GPU": 1})
    t2, _ = h.submit(resources={"GPU": 1})
    t3, _ = h.submit()
    h.s.schedule()
    assert sorted(h.run_tasks()) == sorted([t1, t3])
    assert h.s.tasks[t2].state == st.QUEUED
    h.done(wid("w1"), t1)
    h.s.schedule()
    assert h.run_tasks() == [t2]


def test_resources_only_on_matching_worker_node(h):
    h.worker("cpu", cpus=4, node="n1")
    gpu = h.worker("gpu", cpus=1, node="n2", resources={"GPU": 1})
    t, _ = h.submit(resources={"GPU": 1})
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
    assert h.s.cluster_resources() == {"CPU": 5.0, "GPU": 1.0}
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


def test_repeated_put_is_ignored(h):
    a = h.put(payload=[b"first"])
    h.s.put_object(DRIVER2, msg.PutObject(a, [b"second"], []))
    assert h.obj(a).payload == [b"first"] and h.obj(a).holders == {DRIVER}


def test_task_refs_never_go_negative(h):
    w = h.worker("w1")
    late = oid()
    t, _ = h.submit(nested=[late])
    h.s.put_object(w, msg.PutObject(late, [b"v"], []))
    h.s.schedule()
    h.done(w, t)
    assert h.obj(late).task_refs == 0


# -- failures ---------------------------------------------------------------------------

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
    h.s.task_done(w1, msg.TaskDone(t, [[r, [b"stale"], []]], 0.1))
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
    assert h.take() == [(DRIVER2, msg.Output("(task pid=1)", "stdout", "hi\n"))]
    # Output of an unknown task goes to every driver.
    h.s.task_output(msg.TaskOutput(oid(), "p", "stderr", "x"))
    assert sorted(p for p, _ in h.take(msg.Output)) == sorted([DRIVER, DRIVER2])
    del w
