"""Actor lifetime as in Ray, on real local clusters (issue 13, items 2.6, 2.7, 2.11 and
the cancelling of calls made before an actor started).

* Calls already submitted complete after the last handle is dropped; the actor is then
  collected. A named actor that is not detached goes with its creator's handles (handles
  from ``get_actor`` do not keep it), and its name is free again. Detached ones stay.
* ``exit_actor()``: no call starts once it is called; calls queued behind it fail with
  ``ActorDiedError`` naming ``exit_actor``; no restart.
* ``kill()`` right after ``Actor.remote()`` ends the actor, its process and its claim on
  resources at once; ``no_restart=False`` restarts it while ``max_restarts`` allows.
* A call cancelled before its actor started never runs and raises
  ``TaskCancelledError``; every call resolves.
"""
from __future__ import annotations

import asyncio
import json
import os
import time
import urllib.request

import psutil
import pytest

import graphstore
from graphstore.actor import exit_actor
from graphstore.exceptions import ActorDiedError, TaskCancelledError
from helpers import gated, wait_for


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _record(path: str, line: str) -> None:
    with open(path, "a") as f:
        f.write(line + "\n")


def _lines(path) -> list[str]:
    return open(path).read().split() if os.path.exists(path) else []


@graphstore.remote
class Keeper:
    """Waits in ``__init__`` until the file ``gate`` exists and while the file ``hold``
    exists (if given); records each call that runs in the file ``log``."""

    def __init__(self, value=0, gate=None, log=None, pid_file=None, hold=None):
        if pid_file:
            _record(pid_file, str(os.getpid()))
        if gate and not wait_for(lambda: os.path.exists(gate), timeout=60, interval=0.01):
            raise TimeoutError(f"gate {gate} never opened")
        if hold and not wait_for(lambda: not os.path.exists(hold), timeout=60,
                                 interval=0.01):
            raise TimeoutError(f"hold {hold} never released")
        self.value = value
        self.log = log

    def get(self):
        return self.value

    def add(self, k=1):
        self.value += k
        return self.value

    def pid(self):
        return os.getpid()

    def work(self, tag, seconds=0.0):
        if self.log:
            _record(self.log, str(tag))
        time.sleep(seconds)
        return tag

    def leave(self):
        exit_actor()


@graphstore.remote
class AsyncKeeper:
    def __init__(self, gate=None, log=None):
        if gate and not wait_for(lambda: os.path.exists(gate), timeout=60, interval=0.01):
            raise TimeoutError(f"gate {gate} never opened")
        self.log = log

    async def work(self, tag, seconds=0.0):
        if self.log:
            _record(self.log, str(tag))
        await asyncio.sleep(seconds)
        return tag

    async def leave(self):
        exit_actor()

    async def pid(self):
        return os.getpid()


@graphstore.remote
def call_through(handle, gate):
    """Wait for ``gate``, then use the handle it was given (a borrowed handle)."""
    if not wait_for(lambda: os.path.exists(gate), timeout=60, interval=0.01):
        raise TimeoutError(f"gate {gate} never opened")
    return graphstore.get(handle.add.remote(10))


def _actor_rows(cluster) -> list[dict]:
    with urllib.request.urlopen(cluster.dashboard_url + "/api/actors?limit=1000",
                                timeout=30) as reply:
        return json.load(reply)["actors"]


def _hosted_actor_processes() -> set[int]:
    """Actor processes of this session's clusters that were given an actor (a process
    started ahead waits on stdin with no socket open)."""
    found = set()
    for proc in psutil.Process().children(recursive=True):
        try:
            if "graphstore.worker.actor_process" in " ".join(proc.cmdline()) \
                    and proc.status() != psutil.STATUS_ZOMBIE and proc.net_connections():
                found.add(proc.pid)
        except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
            continue
    return found


# -- 2.6: lifetime ----------------------------------------------------------------------

def test_a_call_on_a_handle_made_in_the_same_expression_completes(cluster):
    assert graphstore.get(Keeper.remote(5).get.remote(), timeout=60) == 5
    assert graphstore.get(Keeper.remote(5).add.remote(2), timeout=60) == 7


def test_queued_calls_complete_after_the_handle_is_deleted_then_the_actor_goes(cluster,
                                                                               tmp_path):
    gate = str(tmp_path / "gate")
    keeper = Keeper.remote(0, gate=gate)            # still starting while calls queue
    pid_ref = keeper.pid.remote()
    refs = [keeper.add.remote() for _ in range(20)]
    slow = keeper.work.remote("slow", 0.3)
    last = keeper.add.remote(100)
    del keeper                                      # right after submission
    open(gate, "w").close()
    assert graphstore.get(refs, timeout=60) == list(range(1, 21))
    assert graphstore.get([slow, last], timeout=60) == ["slow", 120]
    pid = graphstore.get(pid_ref)
    assert wait_for(lambda: not _alive(pid)), "the actor outlived its handles and calls"


def test_a_named_actor_goes_with_its_creators_handles_not_get_actors(cluster):
    creator = Keeper.options(name="lifetime-named").remote(1)
    pid = graphstore.get(creator.pid.remote())
    found = graphstore.get_actor("lifetime-named")   # does not keep it alive
    assert graphstore.get(found.add.remote(1)) == 2
    del creator
    assert wait_for(lambda: not _alive(pid)), "a get_actor handle kept the actor alive"
    with pytest.raises(ActorDiedError):
        graphstore.get(found.get.remote(), timeout=30)
    with pytest.raises(ValueError, match="lifetime-named"):
        graphstore.get_actor("lifetime-named")
    again = Keeper.options(name="lifetime-named").remote(7)   # the name is free
    assert graphstore.get(graphstore.get_actor("lifetime-named").get.remote()) == 7
    assert graphstore.get(again.get.remote()) == 7


def test_get_if_exists_handles_do_not_keep_the_actor_either(cluster):
    creator = Keeper.options(name="lifetime-gie").remote(3)
    pid = graphstore.get(creator.pid.remote())
    other = Keeper.options(name="lifetime-gie", get_if_exists=True).remote()
    assert graphstore.get(other.get.remote()) == 3
    del creator
    assert wait_for(lambda: not _alive(pid))
    with pytest.raises(ActorDiedError):
        graphstore.get(other.get.remote(), timeout=30)


def test_a_handle_the_creator_passed_to_a_task_keeps_a_named_actor(cluster, tmp_path):
    gate = str(tmp_path / "gate")
    creator = Keeper.options(name="lifetime-borrowed").remote(1)
    pid = graphstore.get(creator.pid.remote())
    result = call_through.remote(creator, gate)
    graphstore.get(creator.get.remote())   # the task's submission reached the scheduler
    del creator
    open(gate, "w").close()
    assert graphstore.get(result, timeout=60) == 11
    del result
    assert wait_for(lambda: not _alive(pid))


def test_a_named_actor_goes_when_its_creator_drops_it_in_another_driver(cluster, run_driver,
                                                                       tmp_path):
    local = graphstore.session.current_local_cluster()
    gate = tmp_path / "drop"
    driver = run_driver.start(f"""
        import os, time, graphstore
        graphstore.init(address="auto")

        @graphstore.remote
        class Named:
            def pid(self):
                return os.getpid()

        named = Named.options(name="lifetime-other-driver").remote()
        print("PID=" + str(graphstore.get(named.pid.remote())), flush=True)
        while not os.path.exists({str(gate)!r}):
            time.sleep(0.01)
        del named
        print("DROPPED", flush=True)
        while True:           # still connected: the handles, not the exit, decide
            time.sleep(1)
    """, env={"GRAPHSTORE_ADDRESS": local.address, "GRAPHSTORE_TOKEN": local.token})
    pid = int(driver.wait_for_line("PID="))
    found = graphstore.get_actor("lifetime-other-driver")
    assert graphstore.get(found.pid.remote()) == pid
    gate.touch()
    driver.wait_for_line("DROPPED")
    assert wait_for(lambda: not _alive(pid)), "the creator's drop did not end the actor"
    with pytest.raises(ActorDiedError):
        graphstore.get(found.pid.remote(), timeout=30)


def test_a_detached_actor_stays_without_handles_until_killed(cluster):
    detached = Keeper.options(name="lifetime-detached", lifetime="detached").remote(4)
    pid = graphstore.get(detached.pid.remote())
    del detached
    # Something that would have collected it did run meanwhile: an anonymous actor.
    anonymous = Keeper.remote()
    anonymous_pid = graphstore.get(anonymous.pid.remote())
    del anonymous
    assert wait_for(lambda: not _alive(anonymous_pid))
    assert _alive(pid)
    found = graphstore.get_actor("lifetime-detached")
    assert graphstore.get(found.get.remote()) == 4
    graphstore.kill(found)
    assert wait_for(lambda: not _alive(pid))


# -- 2.7: exit_actor() ------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["sync", "threaded", "async"])
def test_no_call_starts_after_exit_actor(cluster, tmp_path, kind):
    log = str(tmp_path / "ran")
    if kind == "async":
        actor = AsyncKeeper.options(max_restarts=2).remote(log=log)
    else:
        options = {"max_concurrency": 4} if kind == "threaded" else {}
        actor = Keeper.options(max_restarts=2, **options).remote(log=log)
    pid = graphstore.get(actor.pid.remote())
    leave = actor.leave.remote()
    behind = [actor.work.remote(i) for i in range(2000)]
    with pytest.raises(ActorDiedError, match="exit_actor"):
        graphstore.get(leave, timeout=60)
    for ref in behind:
        try:
            graphstore.get(ref, timeout=60)
        except ActorDiedError as exc:
            assert "exit_actor" in str(exc)
    ran = _lines(log)
    # A threaded actor may have started calls on its other threads before exit_actor().
    assert len(ran) <= (3 if kind == "threaded" else 0), f"{len(ran)} calls ran after it"
    assert wait_for(lambda: not _alive(pid))
    with pytest.raises(ActorDiedError, match="exit_actor"):   # and no restart
        graphstore.get(actor.pid.remote(), timeout=30)


@graphstore.remote
class Tidy:
    def __init__(self, path):
        import atexit
        atexit.register(_record, path, "atexit ran")

    def pid(self):
        return os.getpid()

    def leave(self):
        exit_actor()


def test_exit_actor_runs_atexit_handlers(cluster, tmp_path):
    path = str(tmp_path / "tidy")
    tidy = Tidy.remote(path)
    pid = graphstore.get(tidy.pid.remote())
    with pytest.raises(ActorDiedError, match="exit_actor"):
        graphstore.get(tidy.leave.remote(), timeout=30)
    assert wait_for(lambda: not _alive(pid))
    assert open(path).read() == "atexit ran\n"


def test_exit_actor_outside_an_actor_is_a_type_error(cluster):
    with pytest.raises(TypeError, match="outside an actor"):
        exit_actor()


# -- 2.11: kill() of an actor still starting -------------------------------------------

def test_kill_right_after_remote_ends_the_actor_and_frees_its_resources(cluster):
    before = _hosted_actor_processes()
    handles = []
    for _ in range(6):
        handle = Keeper.options(num_cpus=1).remote()
        graphstore.kill(handle)
        handles.append(handle)
    for handle in handles:
        with pytest.raises(ActorDiedError, match="killed"):
            graphstore.get(handle.get.remote(), timeout=30)
    ids = {h._actor_id.hex() for h in handles}
    rows = [r for r in _actor_rows(cluster) if r["actor_id"] in ids]
    assert [r["state"] for r in rows] == ["dead"] * len(handles)
    assert wait_for(lambda: not (_hosted_actor_processes() - before)), \
        "a killed actor's process is still running"
    # Both CPUs are free again: two one-CPU actors start and answer.
    a, b = Keeper.options(num_cpus=1).remote(1), Keeper.options(num_cpus=1).remote(2)
    assert graphstore.get([a.get.remote(), b.get.remote()], timeout=60) == [1, 2]


def test_kill_while_init_runs_ends_its_process(cluster, tmp_path):
    pid_file = str(tmp_path / "pid")
    handle = Keeper.remote(gate=str(tmp_path / "never"), pid_file=pid_file)
    assert wait_for(lambda: _lines(pid_file))
    pid = int(_lines(pid_file)[0])
    call = handle.get.remote()
    graphstore.kill(handle)
    assert wait_for(lambda: not _alive(pid))
    with pytest.raises(ActorDiedError, match="killed"):
        graphstore.get(call, timeout=30)
    row = [r for r in _actor_rows(cluster) if r["actor_id"] == handle._actor_id.hex()]
    assert row and row[0]["state"] == "dead"


def test_kill_without_no_restart_restarts_an_actor_still_starting(cluster, tmp_path):
    handle = Keeper.options(max_restarts=1, max_task_retries=1).remote(9)
    graphstore.kill(handle, no_restart=False)
    assert graphstore.get(handle.get.remote(), timeout=60) == 9
    pid = graphstore.get(handle.pid.remote())
    graphstore.kill(handle, no_restart=False)     # no restart left now
    assert wait_for(lambda: not _alive(pid))
    with pytest.raises(ActorDiedError):
        graphstore.get(handle.get.remote(), timeout=30)


# -- cancelling calls made before the actor started -------------------------------------

@pytest.mark.parametrize("kind", ["sync", "threaded", "async"])
def test_calls_cancelled_before_the_actor_started_never_run(cluster, tmp_path, kind):
    gate, log = str(tmp_path / "gate"), str(tmp_path / "ran")
    if kind == "async":
        actor = AsyncKeeper.remote(gate=gate, log=log)
    else:
        options = {"max_concurrency": 3} if kind == "threaded" else {}
        actor = Keeper.options(**options).remote(gate=gate, log=log)
    refs = [actor.work.remote(i, 0.01) for i in range(40)]
    cancelled = refs[::2]
    for ref in cancelled[:10]:                      # its process may not exist yet
        graphstore.cancel(ref)
    ids = {actor._actor_id.hex()}                   # its __init__ runs
    assert wait_for(lambda: [r["pid"] for r in _actor_rows(cluster) if r["actor_id"] in ids
                             ] != [0])
    for ref in cancelled[10:]:
        graphstore.cancel(ref)
    for ref in cancelled:                           # resolved before the actor started
        with pytest.raises(TaskCancelledError):
            graphstore.get(ref, timeout=30)
    open(gate, "w").close()
    assert graphstore.get(refs[1::2], timeout=60) == list(range(1, 40, 2))
    assert sorted(int(t) for t in _lines(log)) == list(range(1, 40, 2))


def test_cancelled_calls_of_an_actor_waiting_for_its_argument_resolve(cluster, tmp_path):
    gate, log = str(tmp_path / "gate"), str(tmp_path / "ran")
    argument = gated.remote(gate, 5)
    actor = Keeper.remote(argument, log=log)         # waits for its argument
    refs = [actor.work.remote(i) for i in range(10)]
    for ref in refs[:5]:
        graphstore.cancel(ref)
    ready, _ = graphstore.wait(refs[:5], num_returns=5, timeout=30)
    assert len(ready) == 5
    for ref in refs[:5]:
        with pytest.raises(TaskCancelledError):
            graphstore.get(ref)
    open(gate, "w").close()
    assert graphstore.get(refs[5:], timeout=60) == list(range(5, 10))
    assert graphstore.get(actor.get.remote()) == 5
    assert sorted(int(t) for t in _lines(log)) == list(range(5, 10))


def test_calls_cancelled_while_the_actor_restarts_never_run(cluster, tmp_path):
    hold, log = str(tmp_path / "hold"), str(tmp_path / "ran")
    actor = Keeper.options(max_restarts=1, max_task_retries=1).remote(hold=hold, log=log)
    first = graphstore.get(actor.pid.remote())
    open(hold, "w").close()                        # the next start waits in __init__
    os.kill(first, 9)
    ids = {actor._actor_id.hex()}
    assert wait_for(lambda: [r["state"] for r in _actor_rows(cluster)
                             if r["actor_id"] in ids] == ["restarting"])
    refs = [actor.work.remote(i) for i in range(10)]
    for ref in refs[::2]:
        graphstore.cancel(ref)
    for ref in refs[::2]:
        with pytest.raises(TaskCancelledError):
            graphstore.get(ref, timeout=30)
    os.remove(hold)
    assert graphstore.get(refs[1::2], timeout=60) == [1, 3, 5, 7, 9]
    assert sorted(int(t) for t in _lines(log)) == [1, 3, 5, 7, 9]
