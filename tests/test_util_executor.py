"""``graphstore.util.Executor`` (a ``concurrent.futures.Executor``) and
``graphstore.as_completed`` on a real cluster."""
from __future__ import annotations

import asyncio
import concurrent.futures
import os
import time

import pytest

import graphstore
from graphstore.exceptions import GetTimeoutError
from graphstore.util import Executor
from helpers import wait_for


def _interval(seconds):
    start = time.time()
    time.sleep(seconds)
    return start, time.time()


def _wait_for_file(path, value):
    while not os.path.exists(path):
        time.sleep(0.01)
    return value


def test_submit_map_and_errors_like_the_stdlib(cluster):
    with Executor() as pool:
        future = pool.submit(pow, 2, 10)
        assert future.result(timeout=60) == 1024
        assert isinstance(future.ref, graphstore.ObjectRef)
        assert list(pool.map(pow, [2, 3, 4], [5, 2, 2])) == [32, 9, 16]
        assert list(pool.map(str, range(25), chunksize=4)) == [str(i) for i in range(25)]
        failing = pool.submit(lambda: 1 / 0)
        with pytest.raises(ZeroDivisionError):
            failing.result(timeout=60)
        assert isinstance(failing.exception(), ZeroDivisionError)
        done, _ = concurrent.futures.wait([future, failing], timeout=60)
        assert done == {future, failing}
    with pytest.raises(RuntimeError, match="after shutdown"):
        pool.submit(pow, 2, 2)


def test_max_workers_bounds_the_tasks_in_flight(cluster):
    with Executor(max_workers=1) as pool:
        intervals = [f.result(timeout=60)
                     for f in [pool.submit(_interval, 0.1) for _ in range(4)]]
    intervals.sort()
    for (_, end), (start, _) in zip(intervals, intervals[1:]):
        assert start >= end - 0.01, "two tasks ran at once with max_workers=1"


def test_map_timeout_raises_timeout_error(cluster, tmp_path):
    gate = str(tmp_path / "gate")
    with Executor() as pool:
        results = pool.map(_wait_for_file, [gate], [1], timeout=0.2)
        with pytest.raises(TimeoutError):
            list(results)
        open(gate, "w").close()


def test_shutdown_cancels_what_still_waits_for_a_slot(cluster, tmp_path):
    gate = str(tmp_path / "gate")
    pool = Executor(max_workers=1)
    running = pool.submit(_wait_for_file, gate, "ran")
    waiting = [pool.submit(_wait_for_file, gate, i) for i in range(3)]
    pool.shutdown(wait=False, cancel_futures=True)
    assert all(f.cancelled() for f in waiting)
    open(gate, "w").close()
    assert running.result(timeout=60) == "ran"
    pool.shutdown(wait=True)


def test_asyncio_run_in_executor(cluster):
    async def main():
        loop = asyncio.get_running_loop()
        with Executor() as pool:
            return await asyncio.gather(*(loop.run_in_executor(pool, pow, i, 2)
                                          for i in range(5)))
    assert asyncio.run(main()) == [0, 1, 4, 9, 16]


def test_bad_arguments_are_refused_at_the_call(cluster):
    with pytest.raises(ValueError, match="greater than 0"):
        Executor(max_workers=0)
    with pytest.raises(TypeError, match="max_workers"):
        Executor(max_workers="2")
    with pytest.raises((TypeError, ValueError), match="num_cpus"):
        Executor(num_cpus="one")
    with Executor() as pool:
        with pytest.raises(TypeError, match="not callable"):
            pool.submit(42)
        with pytest.raises(ValueError, match="chunksize"):
            pool.map(str, [1], chunksize=0)


# -- as_completed ----------------------------------------------------------------------------

@graphstore.remote(num_cpus=0)
def _gated(path, value):
    return _wait_for_file(path, value)


@graphstore.remote(num_cpus=0)
def _fail():
    raise KeyError("no such key")


def test_as_completed_yields_in_the_order_objects_finish(cluster, tmp_path):
    gates = [str(tmp_path / f"gate{i}") for i in range(2)]     # two run at once here
    refs = [_gated.options(num_cpus=1).remote(gate, i) for i, gate in enumerate(gates)]
    finished = graphstore.as_completed(refs + [refs[0]], timeout=60)   # a ref twice
    for i in (1, 0):
        open(gates[i], "w").close()
        ref = next(finished)
        assert ref == refs[i] and graphstore.get(ref) == i
    with pytest.raises(StopIteration):
        next(finished)


def test_as_completed_yields_failed_objects_and_times_out(cluster, tmp_path):
    failed = _fail.remote()
    never = _gated.remote(str(tmp_path / "never"), 0)
    finished = graphstore.as_completed([never, failed], timeout=5)
    assert next(finished) == failed
    with pytest.raises(KeyError):
        graphstore.get(failed)
    start = time.monotonic()
    with pytest.raises(GetTimeoutError, match="1 of 2"):
        next(finished)
    assert time.monotonic() - start < 30
    graphstore.cancel(never)
    assert wait_for(lambda: graphstore.wait([never], timeout=1)[0], timeout=30)


def test_as_completed_checks_its_arguments(cluster):
    with pytest.raises(TypeError, match="ObjectRef"):
        graphstore.as_completed([1, 2])
    with pytest.raises(ValueError, match="timeout"):
        graphstore.as_completed([graphstore.put(1)], timeout=-1)
    assert list(graphstore.as_completed([])) == []
    ref = graphstore.put("here")
    assert list(graphstore.as_completed([ref])) == [ref]


def test_the_executor_example_runs(run_driver):
    from helpers import run_example
    run = run_example(run_driver, "executor.py")
    assert "run_in_executor: [1, 2, 4, 8, 16]" in run.stdout
    assert "finished in order: [0.05, 0.3, 0.6]" in run.stdout
    assert run.stdout.count("seed ") == 6
