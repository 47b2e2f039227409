"""A task whose code crashes its process loses only its own result (issue 13, 2.5).

Tasks run in worker processes that also hold an object store. When a task ends its
process (``os._exit``, a segfault, ``cancel(force=True)``), the objects that process
stored live on in shared memory and another worker of the host takes them over, and
actors started by that worker keep running.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

import graphstore
from graphstore.exceptions import TaskCancelledError, WorkerCrashedError
from helpers import process_alive, wait_for

BIG = 2_000_000          # int64s: 16 MB, well above the inline threshold


@graphstore.remote
def make_big(seed):
    """A large object put() in this worker's store: no lineage can rebuild it."""
    return os.getpid(), graphstore.put(np.full(BIG, seed, dtype=np.int64))


@graphstore.remote(max_retries=0)
def exit_if_on(pid, how):
    if os.getpid() != pid:
        return "elsewhere"
    if how == "exit":
        os._exit(3)
    import ctypes
    ctypes.string_at(0)      # a segfault
    return "unreachable"


@graphstore.remote(max_retries=0)
def hang_if_on(pid):
    if os.getpid() != pid:
        return "elsewhere"
    import time
    while True:
        time.sleep(0.01)


def _crash_worker(pid: int, how: str) -> None:
    """Send crashing tasks until one lands on worker ``pid`` (two workers: about half
    of them do) and reports the crash."""
    for _ in range(60):
        try:
            if how == "force":
                ref = hang_if_on.remote(pid)
                ready, _ = graphstore.wait([ref], timeout=0.5)
                if ready:
                    continue
                graphstore.cancel(ref, force=True)
                with pytest.raises(TaskCancelledError):
                    graphstore.get(ref, timeout=30)
                return
            if graphstore.get(exit_if_on.remote(pid, how), timeout=30) == "elsewhere":
                continue
        except WorkerCrashedError:
            return
    raise AssertionError(f"no crashing task reached worker pid {pid}")


@pytest.mark.parametrize("how", ["exit", "segfault", "force"])
def test_objects_of_a_crashed_worker_survive(fresh_cluster, how):
    fresh_cluster(num_cpus=2)
    pid, big_ref = graphstore.get(make_big.remote(7), timeout=30)
    assert graphstore.get(big_ref, timeout=30)[-1] == 7
    _crash_worker(pid, how)
    value = graphstore.get(big_ref, timeout=30)
    assert value.shape == (BIG,) and int(value[0]) == 7 and int(value[-1]) == 7
    # A task elsewhere reads it too, and the directory has it in a live worker's store.

    @graphstore.remote
    def total(array):
        return int(array.sum())
    assert graphstore.get(total.remote(big_ref), timeout=30) == 7 * BIG
    summary = graphstore.memory_summary()
    rows = [o for o in summary["objects"] if o["object_id"] == big_ref.hex()]
    assert rows and rows[0]["where"] != "inline (scheduler)"
    del value
    # Freeing it later removes the adopted segment like any other.
    big_hex = big_ref.hex()
    del big_ref
    assert wait_for(lambda: big_hex not in {o["object_id"] for o in
                                            graphstore.memory_summary()["objects"]})


@graphstore.remote
class Counter:
    def __init__(self):
        self.n = 0

    def add(self):
        self.n += 1
        return self.n

    def pids(self):
        return os.getpid(), os.getppid()   # its own, and the worker that started it


@pytest.mark.parametrize("how", ["exit", "force"])
def test_actors_outlive_the_worker_that_started_them(fresh_cluster, how):
    fresh_cluster(num_cpus=2)
    counter = Counter.remote()
    assert graphstore.get(counter.add.remote(), timeout=30) == 1
    actor_pid, worker_pid = graphstore.get(counter.pids.remote(), timeout=30)
    _crash_worker(worker_pid, how)
    # The same process, with its state, still answers.
    assert graphstore.get(counter.pids.remote(), timeout=30)[0] == actor_pid
    assert graphstore.get(counter.add.remote(), timeout=30) == 2
    # And it can still be killed, though the worker that started it is gone.
    graphstore.kill(counter)
    assert wait_for(lambda: not process_alive(actor_pid), timeout=20)

