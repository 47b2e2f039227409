"""Ray's resource options and placement, as Ray programs use them (issue 13, items 12-13).

* zero-CPU nodes: ``init(num_cpus=0)`` holds objects and runs zero-CPU work, while CPU
  work waits (not an error) for a worker with CPUs;
* GPUs: counted from ``CUDA_VISIBLE_DEVICES`` or ``nvidia-smi -L``; each task or actor
  holds particular devices and sees them in ``CUDA_VISIBLE_DEVICES`` and
  ``get_gpu_ids()``; fractions share a device;
* ``max_calls``: the process that ran a function that many times is replaced;
* ``runtime_env={"env_vars": ...}`` on ``init``, ``@remote`` and ``.options``: the task or
  actor sees the variables, no other task does;
* ``scheduling_strategy``: ``"SPREAD"`` and ``NodeAffinitySchedulingStrategy``;
* ``cluster_resources()``, ``available_resources()`` and ``nodes()`` in Ray's shapes.

The first part drives the scheduler's state machine with plain calls (task processes,
GPU devices); the rest runs real local clusters. This machine has no GPU: GPUs are
declared (``init(num_gpus=2)``, ``CUDA_VISIBLE_DEVICES`` in a driver's environment) and
what each task sees is checked.
"""
from __future__ import annotations

import os
import stat

import pytest

import graphstore
from graphstore.core import protocol as msg
from graphstore.core.node import detect_gpus
from graphstore.exceptions import TaskUnschedulableError, WorkerCrashedError
from graphstore.scheduler import entities as st
from graphstore.scheduler.state import SchedulerState
from graphstore.util.scheduling_strategies import NodeAffinitySchedulingStrategy
from helpers import gated, wait_for
from test_scheduler_state import DRIVER, FN, Harness, oid


# == the state machine =========================================================================

def submit(h: Harness, cpus=1.0, resources=None, retries=0, **extra):
    task_id, ret = oid(), [oid()]
    h.s.submit(DRIVER, msg.SubmitTask(task_id, FN, "task", None, [], [], ret, float(cpus),
                                      resources, retries, None, None,
                                      extra=extra or None))
    return task_id, ret


def started(h: Harness) -> list:
    """The task processes the scheduler asked for: (worker, StartTaskProcess)."""
    return h.take(msg.StartTaskProcess)


def register(h: Harness, worker: bytes, start: msg.StartTaskProcess) -> bytes:
    h.s.register_task_process(start.process_id, msg.RegisterTaskProcess(
        start.process_id, worker, 4242, "host"))
    return start.process_id


def test_gpu_tasks_hold_distinct_devices_and_run_in_processes_of_their_own():
    h = Harness()
    w = h.worker("w1", cpus=4, resources={"GPU": 2})
    t1, _ = submit(h, resources={"GPU": 1}, max_calls=1)
    t2, _ = submit(h, resources={"GPU": 1}, max_calls=1)
    t3, _ = submit(h, resources={"GPU": 1}, max_calls=1)
    h.s.schedule()
    starts = started(h)
    assert [peer for peer, _ in starts] == [w, w]
    assert sorted(m.environment["gpus"] for _, m in starts) == [[0], [1]]
    assert all(m.max_calls == 1 for _, m in starts)
    assert h.s.tasks[t3].state == st.QUEUED          # both devices are held
    # Nothing runs in the worker's own threads: RunTask goes to the processes.
    assert h.run_tasks(w) == []
    procs = [register(h, w, m) for _, m in starts]
    ran = {peer: m.task_id for peer, m in h.take(msg.RunTask)}
    assert set(ran) == set(procs) and sorted(ran.values()) == sorted([t1, t2])
    # A process reports its task done on its own connection; the device is free again
    # and, max_calls=1, the next task gets a new process.
    first = procs[0]
    h.done(first, ran[first])
    h.s.schedule()
    (_, again), = started(h)
    assert again.environment["gpus"] == [h.s.tasks[t3].gpus[0]]
    assert h.s.nodes["node-a"].gpu_free.count(0.0) == 2


def test_fractional_gpus_share_the_fullest_device_that_fits():
    h = Harness()
    h.worker("w1", cpus=4, resources={"GPU": 2})
    node = h.s.nodes["node-a"]
    assert node.take_gpus(0.5) == [0]
    assert node.take_gpus(0.25) == [0]                # best fit: the device in use
    assert node.take_gpus(0.5) == [1]
    assert node.take_gpus(1) is None or node.gpu_free == [0.25, 0.5]
    node.give_gpus([0], 0.5)
    assert node.gpu_free == [0.75, 0.5]


def test_a_process_that_dies_with_its_task_retries_it_then_fails_it():
    h = Harness()
    w = h.worker("w1", cpus=2)
    t, (r,) = submit(h, retries=1, env_vars={"A": "1"})
    h.s.schedule()
    (_, start), = started(h)
    assert start.environment == {"env_vars": {"A": "1"}}
    proc = register(h, w, start)
    assert h.run_tasks(proc) == [t]
    h.s.remove_peer(proc)                             # it died mid-task: retried
    h.s.schedule()
    (_, start), = started(h)
    proc = register(h, w, start)
    assert h.run_tasks(proc) == [t]
    h.s.remove_peer(proc)                             # again: no retries left
    err = h.error_of(r)
    assert isinstance(err, WorkerCrashedError) and "process running task" in str(err)


def test_a_process_that_never_registers_does_not_leave_its_task_waiting():
    h = Harness()
    w = h.worker("w1", cpus=2)
    t, (r,) = submit(h, env_vars={"A": "1"})
    h.s.schedule()
    (_, start), = started(h)
    h.s.task_process_exited(w, msg.TaskProcessExited(start.process_id, 1))
    assert "exited with code 1" in str(h.error_of(r))
    assert not h.s.workers[w].assigned


def test_idle_processes_are_reused_per_environment_and_stale_reports_ignored():
    h = Harness()
    w = h.worker("w1", cpus=1)
    t1, (r1,) = submit(h, env_vars={"A": "1"})
    h.s.schedule()
    (_, start), = started(h)
    proc = register(h, w, start)
    assert h.run_tasks(proc) == [t1]
    h.done(proc, t1)
    # A repeated report, as from a process the scheduler gave up on: ignored.
    h.s.task_done(proc, msg.TaskDone(t1, [[r1, [b"other"], [], 5, None]], 0.1))
    assert h.s.objects[r1].payload == [b"result-" + r1]
    t2, _ = submit(h, env_vars={"A": "1"})            # same variables: same process
    h.s.schedule()
    out = h.take()
    assert [(peer, type(m)) for peer, m in out] == [(proc, msg.RunTask)]
    assert out[0][1].task_id == t2
    h.done(proc, t2)
    t3, _ = submit(h, env_vars={"A": "2"})            # others: the idle one is replaced
    h.s.schedule()
    out = h.take()
    assert [type(m) for _, m in out] == [msg.StopTaskProcess, msg.StartTaskProcess]
    assert out[0][1].process_id == proc and out[1][1].environment["env_vars"] == {"A": "2"}
    assert h.s.tasks[t3].worker.id == w


def test_cancel_of_a_task_waiting_for_its_process_fails_it_at_once():
    h = Harness()
    h.worker("w1", cpus=1)
    t, (r,) = submit(h, env_vars={"A": "1"})
    h.s.schedule()
    h.take()
    h.s.cancel(msg.CancelTask(r, False, True))
    assert "cancelled before it started" in str(h.error_of(r))


def test_cpu_work_waits_on_a_cluster_without_cpus_and_runs_when_one_joins():
    h = Harness()
    h.worker("head", cpus=0, node="head")
    t0, _ = submit(h, cpus=0)
    t1, (r1,) = submit(h, cpus=1)
    note = [m.text for peer, m in h.s.outbox if type(m) is msg.Output and peer == DRIVER]
    assert note and "waits until a worker with CPUs joins" in note[0]
    h.s.schedule()
    assert h.run_tasks() == [t0]
    assert h.s.tasks[t1].state == st.QUEUED           # pending, not an error
    w = h.worker("cpu", cpus=1, node="other")
    h.s.schedule()
    assert h.run_tasks(w) == [t1]
    # Still an error where CPUs exist but the request is beyond every node.
    t2, (r2,) = submit(h, cpus=8)
    assert isinstance(h.error_of(r2), TaskUnschedulableError)


def test_a_worker_offering_part_of_a_gpu_is_refused():
    with pytest.raises(ValueError, match="whole GPUs"):
        SchedulerState.validate_worker(msg.RegisterWorker(
            oid(), 1, "h", "n", 1.0, {"GPU": 0.5}, "tcp://h:1", 10**9))


def test_hard_affinity_fails_when_its_node_leaves_while_it_waits():
    h = Harness()
    a = h.worker("a", cpus=1, node="n1")
    h.worker("b", cpus=1, node="n2")
    busy, _ = submit(h, strategy=["node", "n1", False])
    t, (r,) = submit(h, strategy=["node", "n1", False])
    h.s.schedule()
    assert h.run_tasks(a) == [busy]
    assert h.s.tasks[t].state == st.QUEUED            # n2 is free, but not its node
    h.s.remove_peer(a)
    h.s.schedule()
    err = h.error_of(r)
    assert isinstance(err, TaskUnschedulableError) and "n1" in str(err)


# == zero-CPU nodes ===========================================================================

@graphstore.remote(num_cpus=0)
def zero_cpu_pid():
    return os.getpid()


@graphstore.remote
def needs_a_cpu():
    return "ran"


def test_zero_cpu_cluster_holds_objects_runs_zero_cpu_work_and_keeps_cpu_work_pending(
        fresh_cluster):
    import numpy as np
    ctx = fresh_cluster(num_cpus=0)
    assert ctx.num_workers == 1
    assert graphstore.cluster_resources()["CPU"] == 0
    small = graphstore.put({"a": 1})
    large = graphstore.put(np.arange(1_000_000))       # in the worker's store
    assert graphstore.get(small) == {"a": 1}
    assert int(graphstore.get(large).sum()) == 499999500000
    assert graphstore.get(zero_cpu_pid.remote(), timeout=30) > 0

    pending = needs_a_cpu.remote()
    ready, not_ready = graphstore.wait([pending], timeout=1.5)
    assert ready == [] and not_ready == [pending]
    assert graphstore.cluster_status()["tasks"] == {st.QUEUED: 1}
    with pytest.raises(graphstore.exceptions.GetTimeoutError):
        graphstore.get(pending, timeout=0.5)

    @graphstore.remote
    class Holder:
        def __init__(self, ref_list):
            self.refs = ref_list

        def total(self):
            return int(graphstore.get(self.refs[0]).sum())

    # An actor that does not say num_cpus needs a node with a CPU, as in Ray ...
    waiting = Holder.remote([large])
    assert graphstore.wait([waiting.total.remote()], timeout=1)[0] == []
    # ... one with num_cpus=0 runs here, and holds refs to objects in the store.
    holder = Holder.options(num_cpus=0).remote([large])
    assert graphstore.get(holder.total.remote(), timeout=30) == 499999500000
    # One that needs a CPU waits too (it is not refused as impossible).
    cpu_actor = Holder.options(num_cpus=1).remote([large])
    ready, _ = graphstore.wait([cpu_actor.total.remote()], timeout=1)
    assert ready == []


# == GPUs =====================================================================================

@graphstore.remote(num_gpus=1)
def gpu_task(seconds=0.0):
    import time
    start = time.time()
    time.sleep(seconds)
    return {"visible": os.environ.get("CUDA_VISIBLE_DEVICES"), "ids": graphstore.get_gpu_ids(),
            "pid": os.getpid(), "start": start, "end": time.time(),
            "held": graphstore.get_runtime_context().get_assigned_resources()}


@graphstore.remote
def cpu_task_env():
    return os.environ.get("CUDA_VISIBLE_DEVICES"), graphstore.get_gpu_ids(), os.getpid()


def test_gpu_tasks_see_their_own_devices(fresh_cluster):
    fresh_cluster(num_cpus=2, num_gpus=2)
    assert graphstore.cluster_resources()["GPU"] == 2
    results = graphstore.get([gpu_task.remote(0.5) for _ in range(2)], timeout=60)
    visible = sorted(r["visible"] for r in results)
    assert visible == ["0", "1"], results            # one device each, at the same time
    assert sorted(r["ids"][0] for r in results) == [0, 1]
    assert all(r["held"] == {"CPU": 1.0, "GPU": 1.0} for r in results)
    # max_calls defaults to 1 for GPU functions (as in Ray): a new process per task.
    pids = {r["pid"] for r in results}
    pids |= {r["pid"] for r in graphstore.get([gpu_task.remote() for _ in range(2)],
                                              timeout=60)}
    assert len(pids) == 4
    # Tasks without GPUs see none, and run in the workers' own processes.
    visible, ids, pid = graphstore.get(cpu_task_env.remote(), timeout=30)
    assert visible is None and ids == [] and pid not in pids


def test_gpu_count_limits_concurrency_and_fractions_share(fresh_cluster):
    fresh_cluster(num_cpus=3, num_gpus=1)
    a, b = graphstore.get([gpu_task.remote(0.3), gpu_task.remote(0.3)], timeout=60)
    first, second = sorted([a, b], key=lambda r: r["start"])
    assert second["start"] >= first["end"] - 0.01
    halves = graphstore.get([gpu_task.options(num_gpus=0.5).remote(0.5)
                             for _ in range(2)], timeout=60)
    assert [r["visible"] for r in halves] == ["0", "0"]
    assert all(r["held"]["GPU"] == 0.5 for r in halves)
    with pytest.raises(TaskUnschedulableError, match="GPU"):
        graphstore.get(gpu_task.options(num_gpus=2).remote(), timeout=30)
    with pytest.raises(ValueError, match="whole number"):
        gpu_task.options(num_gpus=1.5)


def test_gpus_are_counted_from_cuda_visible_devices(run_driver):
    run = run_driver("""
        import os, graphstore
        graphstore.init(num_cpus=2, include_dashboard=False)
        @graphstore.remote(num_gpus=1)
        def where():
            return os.environ["CUDA_VISIBLE_DEVICES"], graphstore.get_gpu_ids()
        print("GPUS=%g" % graphstore.cluster_resources()["GPU"])
        print("SEEN=" + repr(sorted(graphstore.get([where.remote() for _ in range(3)]))))
        graphstore.shutdown()
    """, env={"CUDA_VISIBLE_DEVICES": "3,5"})
    assert run.returncode == 0, run.stderr
    assert run.value("GPUS") == "2"
    seen = eval(run.value("SEEN"))
    # Indices map to the devices the driver's environment names, as Ray maps them.
    assert {visible for visible, _ in seen} == {"3", "5"}
    assert all(ids == [int(visible)] for visible, ids in seen)


def test_gpus_are_counted_with_nvidia_smi_when_cuda_visible_devices_is_unset(
        tmp_path, monkeypatch):
    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\n[ \"$1\" = -L ] || exit 2\n"
                    "echo 'GPU 0: Fake GPU (UUID: GPU-0)'\n"
                    "echo 'GPU 1: Fake GPU (UUID: GPU-1)'\n"
                    "echo 'GPU 2: Fake GPU (UUID: GPU-2)'\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert detect_gpus() == 3
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert detect_gpus() == 0
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert detect_gpus() == 1
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    monkeypatch.setenv("PATH", str(tmp_path / "none"))
    assert detect_gpus() == 0


def test_actor_with_gpus_sees_its_devices(fresh_cluster):
    fresh_cluster(num_cpus=2, num_gpus=2)

    @graphstore.remote(num_gpus=1)
    class Model:
        def devices(self):
            context = graphstore.get_runtime_context()
            return (os.environ.get("CUDA_VISIBLE_DEVICES"), graphstore.get_gpu_ids(),
                    context.get_assigned_resources(), context.get_accelerator_ids())

    a, b = Model.remote(), Model.remote()
    seen = graphstore.get([a.devices.remote(), b.devices.remote()], timeout=60)
    assert sorted(s[0] for s in seen) == ["0", "1"]
    assert all(s[1] == [int(s[0])] and s[2] == {"GPU": 1.0} for s in seen)
    assert all(s[3] == {"GPU": [s[0]]} for s in seen)
    # Both devices are held by the actors: a GPU task waits until one is killed.
    pending = gpu_task.remote()
    assert graphstore.wait([pending], timeout=1)[0] == []
    graphstore.kill(a)
    assert graphstore.get(pending, timeout=60)["visible"] in ("0", "1")


# == max_calls ==================================================================================

@graphstore.remote(max_calls=2)
def pid_twice():
    return os.getpid()


def test_max_calls_replaces_the_process_after_that_many_calls(fresh_cluster, local):
    fresh_cluster(num_cpus=1)
    worker_pids = set(local().pids())
    pids = [graphstore.get(pid_twice.remote(), timeout=30) for _ in range(6)]
    assert pids[0] == pids[1] and pids[2] == pids[3] and pids[4] == pids[5]
    assert len(set(pids)) == 3 and not set(pids) & worker_pids
    # A process that exited after its calls is gone.
    assert wait_for(lambda: not _alive(pids[0]), timeout=10)
    # Without max_calls, a task runs in the worker's process.
    assert graphstore.get(zero_cpu_pid.remote(), timeout=30) in worker_pids
    with pytest.raises(ValueError, match="max_calls"):
        pid_twice.options(max_calls=-1)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False


# == runtime_env ================================================================================

@graphstore.remote(runtime_env={"env_vars": {"GS_TEST_A": "from-decorator"}})
def env_of_decorated(*names):
    return {n: os.environ.get(n) for n in names}


@graphstore.remote
def env_of(*names):
    return {n: os.environ.get(n) for n in names}


@graphstore.remote(runtime_env={"env_vars": {"GS_TEST_A": "outer"}})
def env_nested():
    return graphstore.get(env_of.remote("GS_TEST_A"))


def test_runtime_env_vars_reach_only_their_tasks(cluster):
    assert graphstore.get(env_of_decorated.remote("GS_TEST_A"), timeout=60) == \
        {"GS_TEST_A": "from-decorator"}
    got = graphstore.get(env_of.options(
        runtime_env={"env_vars": {"GS_TEST_A": "x", "GS_TEST_B": "y"}}).remote(
            "GS_TEST_A", "GS_TEST_B"), timeout=60)
    assert got == {"GS_TEST_A": "x", "GS_TEST_B": "y"}
    # .options overrides the decorator's; tasks without runtime_env see nothing.
    assert graphstore.get(env_of_decorated.options(
        runtime_env={"env_vars": {"GS_TEST_A": "override"}}).remote("GS_TEST_A"),
        timeout=60) == {"GS_TEST_A": "override"}
    plain = graphstore.get([env_of.remote("GS_TEST_A") for _ in range(4)], timeout=60)
    assert plain == [{"GS_TEST_A": None}] * 4
    # Tasks submitted inside inherit the variables, as in Ray.
    assert graphstore.get(env_nested.remote(), timeout=60) == {"GS_TEST_A": "outer"}


def test_runtime_env_vars_of_actors(cluster):
    @graphstore.remote(runtime_env={"env_vars": {"GS_TEST_A": "actor"}})
    class Env:
        def get(self, name):
            return os.environ.get(name)

        def nested(self, name):
            return graphstore.get(env_of.remote(name))[name]

    e = Env.remote()
    assert graphstore.get(e.get.remote("GS_TEST_A"), timeout=60) == "actor"
    assert graphstore.get(e.nested.remote("GS_TEST_A"), timeout=60) == "actor"
    other = Env.options(runtime_env={"env_vars": {"GS_TEST_B": "b"}}).remote()
    assert graphstore.get(other.get.remote("GS_TEST_B"), timeout=60) == "b"
    assert graphstore.get(other.get.remote("GS_TEST_A"), timeout=60) is None


def test_task_process_results_live_in_a_store_and_its_output_reaches_the_driver(
        cluster, capfd):
    import numpy as np

    @graphstore.remote(runtime_env={"env_vars": {"GS_TEST_A": "big"}})
    def big(n):
        print("made in a task process:", os.environ["GS_TEST_A"], flush=True)
        return np.ones(n)

    ref = big.remote(1_000_000)
    value = graphstore.get(ref, timeout=60)
    assert value.sum() == 1_000_000 and not value.flags.writeable    # a view of a store
    where = {o["object_id"]: o["where"] for o in graphstore.memory_summary()["objects"]}
    assert where[ref.hex()][0].startswith("worker pid=")
    assert wait_for(lambda: "made in a task process: big" in capfd.readouterr().out)
    del value


def test_runtime_env_checks_its_keys_and_values(cluster):
    with pytest.raises(NotImplementedError, match="'conda'"):
        env_of.options(runtime_env={"conda": "myenv"})
    with pytest.raises(NotImplementedError, match="'container'"):
        graphstore.remote(runtime_env={"container": {"image": "x"}})(lambda: 1)
    with pytest.raises(TypeError, match="py_modules"):
        env_of.options(runtime_env={"py_modules": "not-a-list"})
    with pytest.raises(TypeError, match="env_vars"):
        env_of.options(runtime_env={"env_vars": {"A": 1}})
    with pytest.raises(TypeError, match="runtime_env must be a dict"):
        env_of.options(runtime_env=["env_vars"])


def test_init_runtime_env_reaches_every_task_and_actor(fresh_cluster):
    fresh_cluster(num_cpus=2, runtime_env={"env_vars": {"GS_TEST_JOB": "job"}})

    @graphstore.remote
    class Env:
        def get(self, name):
            return os.environ.get(name)

    assert graphstore.get(env_of.remote("GS_TEST_JOB"), timeout=30) == {"GS_TEST_JOB": "job"}
    assert graphstore.get(Env.remote().get.remote("GS_TEST_JOB"), timeout=60) == "job"
    # A task's own variables add to the job's.
    got = graphstore.get(env_of_decorated.remote("GS_TEST_JOB", "GS_TEST_A"), timeout=60)
    assert got == {"GS_TEST_JOB": "job", "GS_TEST_A": "from-decorator"}
    assert "GS_TEST_JOB" not in os.environ            # not the driver's own


def test_init_runtime_env_of_a_driver_joining_a_cluster(cluster, run_driver, local):
    run = run_driver(f"""
        import os, graphstore
        graphstore.init(address={cluster.address!r},
                        runtime_env={{"env_vars": {{"GS_TEST_JOB": "joined"}}}})
        @graphstore.remote
        def env():
            return os.environ.get("GS_TEST_JOB")
        print("SEEN=" + graphstore.get(env.remote(), timeout=60))
        graphstore.shutdown()
    """, env={"GRAPHSTORE_TOKEN": local().token})
    assert run.returncode == 0, run.stderr
    assert run.value("SEEN") == "joined"
    # Tasks of other jobs on the same workers do not see it.
    assert graphstore.get(env_of.remote("GS_TEST_JOB"), timeout=30) == {"GS_TEST_JOB": None}


# == scheduling_strategy ========================================================================

@graphstore.remote
def node_of(seconds=0.0):
    import time
    time.sleep(seconds)
    return graphstore.get_runtime_context().get_node_id()


def test_spread_and_node_affinity(fresh_cluster):
    fresh_cluster(num_cpus=2, worker_node_ids=["node-a", "node-b"])
    spread = graphstore.get([node_of.options(scheduling_strategy="SPREAD").remote(0.2)
                             for _ in range(2)], timeout=60)
    assert sorted(spread) == ["node-a", "node-b"]
    pinned = NodeAffinitySchedulingStrategy("node-b", soft=False)
    assert set(graphstore.get([node_of.options(scheduling_strategy=pinned).remote()
                               for _ in range(4)], timeout=60)) == {"node-b"}
    assert graphstore.get(node_of.options(scheduling_strategy="DEFAULT").remote(),
                          timeout=30) in ("node-a", "node-b")
    gone = NodeAffinitySchedulingStrategy("no-such-node", soft=False)
    with pytest.raises(TaskUnschedulableError, match="no-such-node"):
        graphstore.get(node_of.options(scheduling_strategy=gone).remote(), timeout=30)
    anywhere = NodeAffinitySchedulingStrategy("no-such-node", soft=True)
    assert graphstore.get(node_of.options(scheduling_strategy=anywhere).remote(),
                          timeout=30) in ("node-a", "node-b")

    @graphstore.remote(scheduling_strategy=NodeAffinitySchedulingStrategy("node-a", False))
    class Where:
        def node(self):
            return graphstore.get_runtime_context().get_node_id()

    actors = [Where.remote() for _ in range(2)]
    assert graphstore.get([a.node.remote() for a in actors],
                          timeout=60) == ["node-a", "node-a"]
    with pytest.raises(ValueError, match="scheduling_strategy"):
        node_of.options(scheduling_strategy="PACK")


# == resources and nodes ========================================================================

def test_cluster_and_available_resources_and_nodes(fresh_cluster, tmp_path):
    fresh_cluster(num_cpus=2, num_gpus=1, resources={"special": 2},
                  worker_node_ids=["node-a", "node-b"])
    total = graphstore.cluster_resources()
    assert total == {"CPU": 2.0, "GPU": 1.0, "special": 2.0, "node:node-a": 1.0,
                     "node:node-b": 1.0}
    assert graphstore.available_resources() == total
    gate = str(tmp_path / "gate")
    held = gated.options(resources={"special": 2}).remote(gate)
    assert wait_for(lambda: graphstore.available_resources().get("CPU") == 1.0)
    free = graphstore.available_resources()
    assert "special" not in free                      # all of it is in use: left out
    assert free["GPU"] == 1.0
    open(gate, "w").close()
    graphstore.get(held, timeout=30)
    assert wait_for(lambda: graphstore.available_resources() == total)

    nodes = graphstore.nodes()
    assert sorted(n["NodeID"] for n in nodes) == ["node-a", "node-b"]
    for node in nodes:
        assert node["Alive"] is True and node["alive"] is True
        assert node["NodeManagerAddress"] == "127.0.0.1"
        assert isinstance(node["NodeManagerPort"], int) and node["NodeManagerPort"] > 0
        assert node["Resources"]["CPU"] == 1.0
        assert node["Resources"][f"node:{node['NodeID']}"] == 1.0
    by_id = {n["NodeID"]: n for n in nodes}
    assert by_id["node-a"]["Resources"]["GPU"] == 1.0     # the first worker's node
    assert graphstore.get(node_of.remote(), timeout=30) in by_id


def test_nodes_lists_a_departed_node_as_not_alive(cli_cluster, monkeypatch):
    cli = cli_cluster(num_workers=1)
    extra = cli.add_worker("--node-id", "leaving-node")
    monkeypatch.setenv("GRAPHSTORE_TOKEN", cli.token)
    graphstore.shutdown()
    graphstore.init(address=cli.address)
    try:
        assert wait_for(lambda: any(n["NodeID"] == "leaving-node" and n["Alive"]
                                    for n in graphstore.nodes()), timeout=30)
        extra.kill()
        extra.wait()
        assert wait_for(lambda: any(n["NodeID"] == "leaving-node" and not n["Alive"]
                                    for n in graphstore.nodes()), timeout=30)
        gone = next(n for n in graphstore.nodes() if n["NodeID"] == "leaving-node")
        assert gone["Resources"] == {} and gone["alive"] is False
        assert "node:leaving-node" not in graphstore.cluster_resources()
    finally:
        graphstore.shutdown()


def test_gpu_option_checks():
    with pytest.raises(ValueError, match="num_gpus"):
        graphstore.remote(num_gpus=-1)(lambda: 1)
    with pytest.raises(ValueError, match="not both"):
        graphstore.remote(num_gpus=1, resources={"GPU": 1})(lambda: 1)
    with pytest.raises(ValueError, match="max_calls"):
        graphstore.remote(max_calls=2)(type("A", (), {}))


def test_task_process_error_message_names_the_process(fresh_cluster):
    fresh_cluster(num_cpus=1)

    @graphstore.remote(max_calls=1, max_retries=0)
    def dies():
        os._exit(3)

    with pytest.raises(WorkerCrashedError, match="process running task dies"):
        graphstore.get(dies.remote(), timeout=60)
    assert graphstore.get(zero_cpu_pid.remote(), timeout=30) > 0

