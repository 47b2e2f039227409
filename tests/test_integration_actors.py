"""Actors on real local clusters (issue 4): each actor is a process of its own, calls go
straight from the caller to it, and every error path ends in a clear exception."""
from __future__ import annotations

import asyncio
import os
import signal
import threading
import time

import numpy as np
import pytest

import graphstore
from graphstore.exceptions import ActorDiedError, TaskError
from helpers import process_alive as _alive, wait_for


@graphstore.remote
class Counter:
    def __init__(self, start=0):
        self.value = start
        self.log = []

    def add(self, k=1):
        self.value += k
        return self.value

    def append(self, item):
        self.log.append(item)
        return len(self.log)

    def items(self):
        return self.log

    def get(self):
        return self.value

    def pid(self):
        return os.getpid()

    def fail(self):
        raise KeyError("no such key")

    def crash(self):
        os._exit(3)

    def sleep_then_get(self, seconds):
        time.sleep(seconds)
        return self.value

    def leave(self):
        graphstore.actor.exit_actor()

    def call_other(self, other):
        return graphstore.get(other.add.remote(100))

    @graphstore.method(num_returns=2)
    def pair(self):
        return self.value, -self.value

    def big(self, n):
        return np.arange(n, dtype=np.float64)

    def total(self, array):
        return float(array.sum()), bool(array.flags.writeable)


@graphstore.remote
class FailsInInit:
    def __init__(self):
        raise ValueError("bad configuration")

    def anything(self):
        return 1


@graphstore.remote(max_concurrency=4)
class Threaded:
    def __init__(self):
        self.lock = threading.Lock()
        self.now = 0
        self.peak = 0

    def work(self, seconds):
        with self.lock:
            self.now += 1
            self.peak = max(self.peak, self.now)
        time.sleep(seconds)
        with self.lock:
            self.now -= 1
        return self.peak


@graphstore.remote
class AsyncWorker:
    def __init__(self):
        self.running = 0
        self.peak = 0

    async def wait(self, seconds):
        self.running += 1
        self.peak = max(self.peak, self.running)
        await asyncio.sleep(seconds)
        self.running -= 1
        return self.peak


@graphstore.remote
def use_handle(counter, k):
    return graphstore.get(counter.add.remote(k))


@graphstore.remote
def slow_square(x, seconds):
    time.sleep(seconds)
    return x * x


# -- calls --------------------------------------------------------------------------------

def test_calls_run_in_submission_order_under_thousands_of_calls(cluster):
    counter = Counter.remote()
    refs = [counter.append.remote(i) for i in range(3000)]
    assert graphstore.get(refs, timeout=60) == list(range(1, 3001))
    assert graphstore.get(counter.items.remote()) == list(range(3000))


def test_state_lives_in_the_actor_process(cluster):
    counter = Counter.remote(10)
    pid = graphstore.get(counter.pid.remote())
    assert pid != os.getpid()
    assert pid not in [w.pid for w in graphstore.session.current_local_cluster().workers]
    assert graphstore.get([counter.add.remote(5), counter.add.remote(5)]) == [15, 20]


def test_a_method_error_raises_task_error_and_the_actor_keeps_serving(cluster):
    counter = Counter.remote(1)
    with pytest.raises(TaskError) as info:
        graphstore.get(counter.fail.remote())
    assert isinstance(info.value, KeyError)
    assert "no such key" in str(info.value) and "Counter.fail" in str(info.value)
    assert "test_integration_actors.py" in str(info.value)  # the user's traceback
    assert graphstore.get(counter.add.remote()) == 2


def test_object_ref_arguments_are_resolved_like_task_arguments(cluster):
    counter = Counter.remote()
    assert graphstore.get(counter.add.remote(graphstore.put(7))) == 7
    assert graphstore.get(counter.add.remote(slow_square.remote(3, 0.2))) == 16


@graphstore.remote
def read_then_report(counter, seed):
    """A task that calls the actor, whose result is then passed to the same actor."""
    return graphstore.get(counter.get.remote()) + seed


def test_a_call_waiting_for_its_arguments_does_not_block_the_actor(cluster):
    """The argument is a task that itself calls the actor: the actor must serve that
    call while the first one waits (a deadlock otherwise)."""
    counter = Counter.remote(1)
    results = graphstore.get([counter.add.remote(read_then_report.remote(counter, k))
                              for k in range(5)], timeout=60)
    assert len(results) == 5 and results == sorted(results)
    # A caller's own calls still run in its order behind a waiting one.
    gate = slow_square.remote(2, 0.5)
    refs = [counter.append.remote(gate), counter.append.remote("after")]
    graphstore.get(refs, timeout=30)
    assert graphstore.get(counter.items.remote())[-2:] == [4, "after"]


def test_num_returns_from_the_method_decorator_and_options(cluster):
    counter = Counter.remote(4)
    a, b = counter.pair.remote()
    assert graphstore.get([a, b]) == [4, -4]
    whole = counter.pair.options(num_returns=1).remote()
    assert graphstore.get(whole) == (4, -4)


def test_large_arguments_and_results_go_through_shared_memory(cluster):
    counter = Counter.remote()
    array = np.arange(4_000_000, dtype=np.float64)        # 32 MB, far above inline
    total, writeable = graphstore.get(counter.total.remote(graphstore.put(array)))
    assert total == float(array.sum()) and writeable is False
    ref = counter.big.remote(3_000_000)
    result = graphstore.get(ref)
    assert result.flags.writeable is False and result[-1] == 2_999_999
    # The scheduler's directory has the result in a store (its record of the call can
    # come a moment after the caller got the result straight from the actor).
    assert wait_for(lambda: any(o["size"] >= 24_000_000 and o["where"] != "inline (scheduler)"
                                for o in graphstore.memory_summary()["objects"]))


# -- concurrency --------------------------------------------------------------------------

def test_threaded_actor_runs_up_to_max_concurrency_calls_at_once(cluster):
    actor = Threaded.remote()
    start = time.monotonic()
    peaks = graphstore.get([actor.work.remote(0.5) for _ in range(8)], timeout=30)
    assert max(peaks) == 4
    assert time.monotonic() - start < 2.5        # two waves of four, not eight calls


def test_async_actor_runs_coroutines_concurrently(cluster):
    actor = AsyncWorker.remote()
    graphstore.get(actor.wait.remote(0))
    start = time.monotonic()
    peaks = graphstore.get([actor.wait.remote(0.5) for _ in range(50)], timeout=30)
    assert max(peaks) == 50
    assert time.monotonic() - start < 3.0


def test_a_cpu_bound_actor_does_not_stall_tasks_or_other_actors(cluster):
    busy = Counter.remote()
    other = Counter.remote()
    busy.sleep_then_get.remote(3)
    start = time.monotonic()
    assert graphstore.get(other.add.remote(), timeout=10) == 1
    assert graphstore.get(slow_square.remote(4, 0), timeout=10) == 16
    assert time.monotonic() - start < 2.0


# -- handles ------------------------------------------------------------------------------

def test_handles_passed_to_tasks_and_to_other_actors_work_there(cluster):
    counter = Counter.remote()
    assert graphstore.get(use_handle.remote(counter, 5)) == 5
    caller = Counter.remote()
    assert graphstore.get(caller.call_other.remote(counter)) == 105
    assert graphstore.get(counter.get.remote()) == 105


def test_named_actor_is_found_from_a_second_driver(cluster, run_driver):
    local = graphstore.session.current_local_cluster()
    named = Counter.options(name="shared-counter").remote(40)
    try:
        assert graphstore.get(named.add.remote(1)) == 41
        run = run_driver(
            "import graphstore\n"
            "graphstore.init(address='auto')\n"
            "c = graphstore.get_actor('shared-counter')\n"
            "print('VALUE=' + str(graphstore.get(c.add.remote(1))))\n"
            "try:\n"
            "    graphstore.get_actor('missing-counter')\n"
            "except ValueError as e:\n"
            "    print('ERROR=' + str(e))\n"
            "graphstore.shutdown()\n",
            env={"GRAPHSTORE_ADDRESS": local.address, "GRAPHSTORE_TOKEN": local.token})
        assert run.value("VALUE") == "42", run.stderr
        assert "missing-counter" in run.value("ERROR")
        assert graphstore.get(named.get.remote()) == 42
    finally:
        graphstore.kill(named)


def test_get_if_exists_returns_the_existing_actor_and_duplicate_names_fail(cluster):
    first = Counter.options(name="unique", namespace="tests").remote(1)
    try:
        again = Counter.options(name="unique", namespace="tests", get_if_exists=True).remote()
        assert graphstore.get(again.add.remote()) == 2
        with pytest.raises(ValueError, match="unique"):
            Counter.options(name="unique", namespace="tests").remote()
        assert graphstore.get(graphstore.get_actor("unique", namespace="tests").get.remote()) == 2
        with pytest.raises(ValueError, match="no actor named 'unique'"):
            graphstore.get_actor("unique")                 # another namespace
    finally:
        graphstore.kill(first)


def test_anonymous_actor_stops_when_its_last_handle_is_gone(cluster):
    counter = Counter.remote()
    pid = graphstore.get(counter.pid.remote())
    del counter
    assert wait_for(lambda: not _alive(pid)), "the actor's process outlived its handles"


def test_detached_actors_outlive_their_handles(cluster):
    """(Named actors that are not detached go with their creator's handles, as in Ray:
    see test_ray_actor_lifetime.py.)"""
    detached = Counter.options(name="keeper", lifetime="detached").remote(8)
    pid = graphstore.get(detached.pid.remote())
    del detached
    anonymous = Counter.remote()
    anonymous_pid = graphstore.get(anonymous.pid.remote())
    del anonymous
    assert wait_for(lambda: not _alive(anonymous_pid))   # collected meanwhile
    assert _alive(pid)
    again = graphstore.get_actor("keeper")
    assert graphstore.get(again.get.remote()) == 8
    graphstore.kill(again)
    assert wait_for(lambda: not _alive(pid))


# -- failures -----------------------------------------------------------------------------

def test_exception_in_init_fails_every_call_with_actor_died_error_and_cause(cluster):
    actor = FailsInInit.remote()
    for _ in range(2):
        with pytest.raises(ActorDiedError) as info:
            graphstore.get(actor.anything.remote(), timeout=30)
        assert "bad configuration" in str(info.value) and "__init__" in str(info.value)


def test_sigkill_of_the_actor_process_without_restarts_fails_calls(cluster):
    counter = Counter.remote()
    pid = graphstore.get(counter.pid.remote())
    pending = counter.sleep_then_get.remote(30)
    time.sleep(0.3)
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(ActorDiedError):
        graphstore.get(pending, timeout=30)
    with pytest.raises(ActorDiedError):
        graphstore.get(counter.get.remote(), timeout=30)


def test_sigkill_with_restarts_rebuilds_state_and_retries_calls(cluster):
    counter = Counter.options(max_restarts=1, max_task_retries=1).remote(5)
    assert graphstore.get(counter.add.remote(10)) == 15
    pid = graphstore.get(counter.pid.remote())
    in_flight = counter.sleep_then_get.remote(1.0)
    time.sleep(0.3)
    os.kill(pid, signal.SIGKILL)
    assert graphstore.get(in_flight, timeout=30) == 5     # retried on the new process
    new_pid = graphstore.get(counter.pid.remote())
    assert new_pid != pid
    assert graphstore.get(counter.add.remote(1)) == 6     # state rebuilt by __init__
    os.kill(new_pid, signal.SIGKILL)                        # no restarts left
    with pytest.raises(ActorDiedError, match="max_restarts"):
        graphstore.get(counter.sleep_then_get.remote(0), timeout=30)


def test_a_crash_in_one_actor_leaves_others_and_running_tasks_alone(cluster):
    victim = Counter.remote()
    bystander = Counter.remote(1)
    running = slow_square.remote(5, 1.0)
    with pytest.raises(ActorDiedError):
        graphstore.get(victim.crash.remote(), timeout=30)
    assert graphstore.get(bystander.add.remote(), timeout=10) == 2
    assert graphstore.get(running, timeout=30) == 25


def test_kill_stops_the_actor_and_later_calls_fail(cluster):
    counter = Counter.options(max_restarts=3).remote()
    pid = graphstore.get(counter.pid.remote())
    graphstore.kill(counter)                       # no_restart=True by default
    assert wait_for(lambda: not _alive(pid))
    with pytest.raises(ActorDiedError):
        graphstore.get(counter.get.remote(), timeout=30)


def test_kill_with_no_restart_false_restarts_the_actor(cluster):
    # One retry: the next call may leave before this driver notices the old process is
    # gone; it is then sent again to the new one.
    counter = Counter.options(max_restarts=1, max_task_retries=1).remote(3)
    pid = graphstore.get(counter.pid.remote())
    graphstore.kill(counter, no_restart=False)
    assert wait_for(lambda: not _alive(pid))
    assert graphstore.get(counter.get.remote(), timeout=30) == 3
    assert graphstore.get(counter.pid.remote()) != pid


def test_exit_actor_ends_the_actor_from_inside(cluster):
    counter = Counter.options(max_restarts=2).remote()
    pid = graphstore.get(counter.pid.remote())
    with pytest.raises(ActorDiedError, match="exit_actor"):
        graphstore.get(counter.leave.remote(), timeout=30)
    assert wait_for(lambda: not _alive(pid))
    with pytest.raises(ActorDiedError, match="exit"):
        graphstore.get(counter.get.remote(), timeout=30)


# -- bad input ----------------------------------------------------------------------------

def test_bad_input_gets_clear_errors(cluster):
    with pytest.raises(TypeError, match="remote"):
        Counter()
    with pytest.raises(ValueError, match="unknown actor option 'colour'"):
        Counter.options(colour="red")
    with pytest.raises(ValueError, match="max_restarts"):
        Counter.options(max_restarts="many")
    with pytest.raises(ValueError, match="max_concurrency"):
        Counter.options(max_concurrency=0)
    counter = Counter.remote()
    with pytest.raises(AttributeError, match="no method 'missing'"):
        counter.missing.remote()
    with pytest.raises(TypeError, match="remote"):
        counter.add(1)
    with pytest.raises(ValueError, match="ActorHandle"):     # as in Ray
        graphstore.kill("not a handle")
    with pytest.raises(ValueError, match="non-empty string"):
        graphstore.get_actor("")
    assert graphstore.get(counter.add.remote()) == 1


# -- cancel -------------------------------------------------------------------------------

@graphstore.remote
def spin(seconds):
    """Busy in Python (not in one C call), so an interrupt lands at once."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        time.sleep(0.01)
    return "finished"


@graphstore.remote
def parent_of_spinners(n, seconds):
    children = [spin.remote(seconds) for _ in range(n)]
    return graphstore.get(children)


@graphstore.remote
class Spinner:
    def spin(self, seconds):
        deadline = time.time() + seconds
        while time.time() < deadline:
            time.sleep(0.01)
        return "finished"

    def ping(self):
        return "pong"


def test_cancel_a_pending_task_before_it_runs(cluster, tmp_path):
    from helpers import gated
    from graphstore.exceptions import TaskCancelledError
    gate = tmp_path / "gate"
    blocker = gated.remote(str(gate), 1)
    waiting = spin.remote(0)
    dependent = slow_square.remote(blocker, 0)     # waits on the gated task
    graphstore.cancel(dependent)
    gate.touch()
    with pytest.raises(TaskCancelledError):
        graphstore.get(dependent, timeout=30)
    assert graphstore.get([blocker, waiting], timeout=30) == [1, "finished"]


def test_cancel_a_running_task_interrupts_it(cluster):
    from graphstore.exceptions import TaskCancelledError
    ref = spin.remote(60)
    time.sleep(0.5)
    start = time.monotonic()
    graphstore.cancel(ref)
    with pytest.raises(TaskCancelledError):
        graphstore.get(ref, timeout=30)
    assert time.monotonic() - start < 10
    assert graphstore.get(spin.remote(0), timeout=30) == "finished"   # the worker lives


def test_cancel_recursive_cancels_the_tasks_it_submitted(cluster):
    from graphstore.exceptions import TaskCancelledError
    before = {r["task_id"] for r in graphstore.list_tasks()}
    ref = parent_of_spinners.remote(2, 60)
    time.sleep(1.0)
    graphstore.cancel(ref, recursive=True)
    with pytest.raises(TaskCancelledError):
        graphstore.get(ref, timeout=30)
    # Its children ended too (cancelled, not left spinning for a minute).
    assert wait_for(lambda: not [r for r in graphstore.list_tasks()
                                 if r["name"] == "spin" and r["task_id"] not in before
                                 and r["state"] not in ("done", "failed")], timeout=20)


def test_cancel_force_ends_the_worker_running_the_task(fresh_cluster):
    from graphstore.exceptions import TaskCancelledError
    fresh_cluster(num_cpus=1)
    local = graphstore.session.current_local_cluster()
    worker_pid = local.workers[0].pid
    ref = spin.remote(60)
    time.sleep(0.5)
    graphstore.cancel(ref, force=True)
    with pytest.raises(TaskCancelledError):
        graphstore.get(ref, timeout=30)
    assert wait_for(lambda: not _alive(worker_pid))
    assert graphstore.get(spin.remote(0), timeout=60) == "finished"   # a replacement


def test_cancel_actor_calls_queued_and_running(cluster):
    from graphstore.exceptions import TaskCancelledError
    actor = Spinner.remote()
    running = actor.spin.remote(60)
    queued = actor.spin.remote(60)
    time.sleep(0.5)
    graphstore.cancel(queued)
    graphstore.cancel(running)
    for ref in (running, queued):
        with pytest.raises(TaskCancelledError):
            graphstore.get(ref, timeout=30)
    assert graphstore.get(actor.ping.remote(), timeout=10) == "pong"


def test_cancel_takes_an_object_ref(cluster):
    with pytest.raises(TypeError, match="ObjectRef"):
        graphstore.cancel("not a ref")


def test_results_of_calls_whose_refs_were_dropped_are_not_kept(cluster):
    """A call's result can reach the caller before its ref is counted there (calls are
    written straight to the actor; ref events are drained lazily): kept then, but never
    once the ref is gone."""
    runtime = graphstore.session.get_runtime()
    counter = Counter.remote()
    graphstore.get(counter.get.remote())
    before = len(runtime._local)
    for _ in range(500):
        counter.add.remote()                   # each ref dropped at once
    assert graphstore.get(counter.get.remote(), timeout=30) == 500
    assert wait_for(lambda: len(runtime._local) <= before), \
        f"{len(runtime._local) - before} results of dropped calls are still kept"
    assert wait_for(lambda: not runtime._direct)


def test_calls_from_several_threads_all_complete_in_each_threads_order(cluster):
    counter = Counter.remote()
    errors = []

    def caller(tag):
        try:
            refs = [counter.append.remote((tag, i)) for i in range(300)]
            graphstore.get(refs, timeout=60)
        except Exception as exc:   # reported below
            errors.append(exc)
    threads = [threading.Thread(target=caller, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    items = graphstore.get(counter.items.remote())
    assert len(items) == 1200
    for tag in range(4):
        assert [i for t, i in items if t == tag] == list(range(300))


def test_a_burst_of_calls_submitted_then_gathered(cluster):
    """Results arrive while the calls are still being made (before their refs are
    counted here): none may be lost."""
    counter = Counter.remote()
    graphstore.get(counter.get.remote())
    for _ in range(2):
        refs = [counter.add.remote() for _ in range(5000)]
        results = graphstore.get(refs, timeout=60)
        assert results == list(range(results[0], results[0] + 5000))


def test_the_actors_example_runs(run_driver):
    from helpers import run_example
    run = run_example(run_driver, "actors.py")
    assert "observed 4,000,000 values" in run.stdout
    assert "after 20 updates the weights are near 1" in run.stdout
