"""Fault tolerance on real clusters: lost workers (SIGKILL, or silent: SIGSTOP stands in
for a cut network, which closes no connection), lineage reconstruction of lost objects,
retried application errors, workers joining mid-run, drivers and schedulers going away.

Clusters here are ``graphstore scheduler`` and ``graphstore worker`` processes started by
hand (``cli_cluster``), with short heartbeats so that a silent worker is noticed in about
two seconds.
"""
from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest

import graphstore
from graphstore.exceptions import ConnectionLostError, ObjectLostError, TaskError
from helpers import run_example, wait_for

#: Heartbeats every 0.25 s; 2 s of silence counts a worker (or the scheduler) as lost.
FAST_FAILURE_ENV = {"GRAPHSTORE_HEARTBEAT_INTERVAL": "0.25", "GRAPHSTORE_WORKER_TIMEOUT": "2"}
MB = 1024 * 1024


@graphstore.remote
def block(seed: int, mb: int = 4):
    """A large (stored) array, the same for the same seed."""
    return np.random.default_rng(seed).integers(0, 1000, mb * MB // 8, dtype=np.int64)


@graphstore.remote
def plus(array, k: int):
    return array + k


@graphstore.remote
def block_plus(seed: int, k: int):
    """``block(seed) + k`` in one task: a stored result from two inline arguments."""
    return np.random.default_rng(seed).integers(0, 1000, 4 * MB // 8, dtype=np.int64) + k


@graphstore.remote
def small(n: int) -> int:
    return n


@graphstore.remote
def total(*arrays) -> int:
    return int(sum(int(a.sum()) for a in arrays))


@graphstore.remote
def pid_after(seconds: float = 0.0) -> int:
    time.sleep(seconds)
    return os.getpid()


@graphstore.remote
def put_inside(mb: int = 2) -> list:
    """A ref made by put() in a task: its only copy is in that worker's store."""
    return [graphstore.put(np.ones(mb * MB // 8))]


@graphstore.remote
def flaky(directory: str, failures: int, error: str):
    """Fails with ``error`` the first ``failures`` times it runs."""
    marker = os.path.join(directory, "attempts")
    with open(marker, "a") as f:
        f.write("x")
    attempts = len(open(marker).read())
    if attempts <= failures:
        raise {"ValueError": ValueError, "KeyError": KeyError}[error](f"attempt {attempts}")
    return attempts


def _connect(cli, node_id: str | None = None) -> None:
    graphstore.shutdown()
    graphstore.init(address=cli.address, token=cli.token, node_id=node_id)


def _workers(n: int, timeout: float = 30) -> None:
    assert wait_for(lambda: graphstore.cluster_status()["workers"] == n, timeout), \
        f"expected {n} workers, have {graphstore.cluster_status()['workers']}"


def _kill(popen, sig=signal.SIGKILL) -> None:
    popen.send_signal(sig)
    if sig == signal.SIGKILL:
        popen.wait(10)


def expected_block(seed: int, mb: int = 4):
    return np.random.default_rng(seed).integers(0, 1000, mb * MB // 8, dtype=np.int64)


# == lost workers and lineage ================================================================


def _two_sites(cli_cluster):
    """Workers on "hosts" a (resource site_a) and b (site_b), a driver on a third: objects
    cross between them over TCP, as on separate machines."""
    cli = cli_cluster(num_workers=1, env=FAST_FAILURE_ENV,
                      worker_args=("--resource", "site_a=1", "--node-id", "host-a"))
    cli.add_worker("--resource", "site_b=1", "--node-id", "host-b")
    _connect(cli, node_id="driver-host")
    try:
        _workers(2)
    except BaseException:
        graphstore.shutdown()
        raise
    return cli


def test_objects_lost_with_a_killed_worker_are_computed_again(cli_cluster):
    cli = _two_sites(cli_cluster)
    try:
        on_a = {"resources": {"site_a": 1}}
        x = block.options(**on_a).remote(1)
        y = plus.options(**on_a).remote(x, 5)     # y's only copy is on worker a
        del x                                     # x is freed; its lineage stays
        held = graphstore.get(put_inside.options(**on_a).remote(), timeout=60)[0]
        assert graphstore.get(y, timeout=60)[0] == expected_block(1)[0] + 5
        before = graphstore.cluster_status()["counts"]

        _kill(cli.workers[0])
        cli.add_worker("--resource", "site_a=1", "--node-id", "host-c")  # replacement
        value = graphstore.get(y, timeout=60)
        np.testing.assert_array_equal(value, expected_block(1) + 5)
        counts = graphstore.cluster_status()["counts"]
        assert counts["reconstructed"] - before["reconstructed"] == 2   # plus, then block
        assert counts["objects_rebuilt"] - before["objects_rebuilt"] >= 2

        # An object made by put() has no lineage: the error names it and why.
        with pytest.raises(ObjectLostError) as info:
            graphstore.get(held, timeout=60)
        text = str(info.value)
        assert held.hex() in text and "put()" in text and "died" in text
        # The cluster keeps serving.
        assert graphstore.get(total.remote(block.remote(2, 1)), timeout=60) == \
            int(expected_block(2, 1).sum())
    finally:
        graphstore.shutdown()


def test_a_lost_result_is_computed_again_from_the_inline_arguments_its_task_kept(
        cli_cluster):
    """Inline values are never lost, so the task making one keeps no lineage; a task
    with a stored result keeps the inline arguments that nothing else can make again
    (a small task's result, a put()), as Ray's task spec inlines them."""
    cli = _two_sites(cli_cluster)
    try:
        seed, k = small.remote(3), graphstore.put(7)
        y = block_plus.options(resources={"site_a": 1}).remote(seed, k)  # stored on a
        assert graphstore.get(y, timeout=60)[0] == expected_block(3)[0] + 7
        del seed, k                  # freed: only y's task keeps their values
        assert wait_for(lambda: graphstore.cluster_status()["objects"] == 1, 10)
        before = graphstore.cluster_status()["counts"]

        _kill(cli.workers[0])
        cli.add_worker("--resource", "site_a=1", "--node-id", "host-c")  # replacement
        np.testing.assert_array_equal(graphstore.get(y, timeout=60), expected_block(3) + 7)
        counts = graphstore.cluster_status()["counts"]
        assert counts["reconstructed"] - before["reconstructed"] == 1   # block_plus only
    finally:
        graphstore.shutdown()


def test_a_silent_worker_is_counted_lost_and_its_task_runs_elsewhere(cli_cluster):
    """SIGSTOP: the connection stays open, only the heartbeats stop (as with a cut
    network). The scheduler must notice by itself; the worker, resumed, must leave."""
    cli = cli_cluster(num_workers=2, env=FAST_FAILURE_ENV)
    _connect(cli)
    try:
        _workers(2)
        pids = {w.pid for w in cli.workers}
        ref = pid_after.options(name="sleeper").remote(3.0)
        first = wait_for(lambda: _assigned_pid("sleeper"), 20)
        assert first in pids, "the task never started"
        victim = next(w for w in cli.workers if w.pid == first)
        start = time.monotonic()
        _kill(victim, signal.SIGSTOP)
        try:
            assert graphstore.get(ref, timeout=60) != victim.pid
            assert wait_for(lambda: graphstore.cluster_status()["workers"] == 1, 10)
            noticed = time.monotonic() - start
            assert noticed < 10, f"the silent worker was noticed after {noticed:.1f} s"
        finally:
            victim.send_signal(signal.SIGCONT)
        # Resumed, it finds its scheduler gone (the connection was closed) and exits.
        victim.wait(15)
        assert graphstore.get(pid_after.remote(), timeout=30) != victim.pid
    finally:
        graphstore.shutdown()


def _assigned_pid(name: str) -> int | None:
    """The pid of the worker a task named ``name`` is assigned to, from task records."""
    for record in graphstore.list_tasks():
        if record["name"] == name and record["state"] == "assigned" and record["placement"]:
            return record["placement"]["pid"]
    return None


# == retried application errors ==============================================================


def test_retry_exceptions_retries_listed_errors_only(cli_cluster, tmp_path):
    cli = cli_cluster(num_workers=1)
    _connect(cli)
    try:
        _workers(1)
        listed = tmp_path / "listed"
        listed.mkdir()
        ref = flaky.options(max_retries=3, retry_exceptions=[ValueError]).remote(
            str(listed), 2, "ValueError")
        assert graphstore.get(ref, timeout=60) == 3
        other = tmp_path / "other"
        other.mkdir()
        with pytest.raises(TaskError) as info:
            graphstore.get(flaky.options(max_retries=3, retry_exceptions=[ValueError])
                           .remote(str(other), 1, "KeyError"), timeout=60)
        assert isinstance(info.value.cause, KeyError)
        assert (other / "attempts").read_text() == "x"          # not retried
        anything = tmp_path / "anything"
        anything.mkdir()
        assert graphstore.get(flaky.options(retry_exceptions=True).remote(
            str(anything), 3, "KeyError"), timeout=60) == 4      # default max_retries=3
        exhausted = tmp_path / "exhausted"
        exhausted.mkdir()
        with pytest.raises(TaskError):
            graphstore.get(flaky.options(max_retries=1, retry_exceptions=True).remote(
                str(exhausted), 5, "ValueError"), timeout=60)
        assert (exhausted / "attempts").read_text() == "xx"
        plain = tmp_path / "plain"
        plain.mkdir()
        with pytest.raises(TaskError):
            graphstore.get(flaky.remote(str(plain), 1, "ValueError"), timeout=60)
        assert (plain / "attempts").read_text() == "x"          # off by default, as Ray
        with pytest.raises(ValueError, match="retry_exceptions"):
            flaky.options(retry_exceptions=["ValueError"])
    finally:
        graphstore.shutdown()


# == the cluster changing under a running job ================================================


def test_a_worker_joining_mid_run_takes_work_at_once(cli_cluster):
    cli = cli_cluster(num_workers=1)
    _connect(cli)
    try:
        _workers(1)
        first = cli.workers[0].pid
        refs = [pid_after.remote(0.4) for _ in range(12)]
        time.sleep(0.6)
        joined = time.monotonic()
        second = cli.add_worker().pid
        _workers(2)
        done = []
        for ref in refs:
            done.append((graphstore.get(ref, timeout=60), time.monotonic()))
        on_second = [t for pid, t in done if pid == second]
        assert on_second, "the new worker took none of the queued tasks"
        assert len(on_second) >= 3
        assert {pid for pid, _ in done} == {first, second}
        assert min(on_second) - joined < 8      # its start-up, then the first task
    finally:
        graphstore.shutdown()


def test_a_killed_driver_releases_its_objects_but_not_its_detached_actor(cli_cluster,
                                                                          run_driver):
    cli = cli_cluster(num_workers=1)
    driver = run_driver.start(f"""
        import time, numpy as np, graphstore
        graphstore.init(address={cli.address!r}, token={cli.token!r})

        @graphstore.remote
        class Keeper:
            def ping(self):
                return "still here"

        keep = Keeper.options(name="keeper", lifetime="detached").remote()
        assert graphstore.get(keep.ping.remote(), timeout=60) == "still here"
        held = [graphstore.put(np.ones(1024 * 1024)) for _ in range(3)]
        small = graphstore.put("small")
        print("READY", flush=True)
        time.sleep(600)
    """, ready_line="READY", timeout=60)
    _connect(cli)
    try:
        # Bookkeeping of small puts reaches the scheduler within a few milliseconds.
        assert wait_for(lambda: graphstore.cluster_status()["objects"] >= 4, 20)
        os.kill(driver.pid, signal.SIGKILL)
        assert wait_for(lambda: graphstore.cluster_status()["drivers"] == 1, 20)
        # Only the detached actor's creation object is left.
        assert wait_for(lambda: graphstore.cluster_status()["objects"] <= 1, 20), \
            graphstore.memory_summary()["objects"]
        keeper = graphstore.get_actor("keeper")
        assert graphstore.get(keeper.ping.remote(), timeout=60) == "still here"
        graphstore.kill(keeper)
    finally:
        graphstore.shutdown()


def test_a_lost_scheduler_fails_every_call_clearly(cli_cluster):
    cli = cli_cluster(num_workers=1, env=FAST_FAILURE_ENV)
    _connect(cli)
    try:
        _workers(1)
        ref = pid_after.remote(30)
        other = pid_after.remote(30)
        _kill(cli.scheduler)
        start = time.monotonic()
        with pytest.raises(ConnectionLostError, match="scheduler"):
            graphstore.get(ref)                             # no timeout: must still end
        with pytest.raises(ConnectionLostError, match="scheduler"):
            pid_after.remote()
        with pytest.raises(ConnectionLostError, match="scheduler"):
            graphstore.put(1)
        with pytest.raises(ConnectionLostError):
            graphstore.wait([other], timeout=None)      # (ref's error is here: ready)
        assert time.monotonic() - start < 10
        cli.workers[0].wait(15)                            # the worker leaves too
    finally:
        graphstore.shutdown()


def test_the_fault_tolerance_example_runs(run_driver):
    run = run_example(run_driver, "fault_tolerance.py")
    assert "downloaded on attempt 3" in run.stdout
    assert "2 tasks ran again, 2 objects rebuilt" in run.stdout
    assert "ObjectLostError: object" in run.stdout and "put()" in run.stdout
    assert "after the faults: [ 94 102 150]" in run.stdout
