"""Dask collections on graphstore (``graphstore.dask.get``), run on a real cluster and
checked against Dask's own synchronous scheduler."""
from __future__ import annotations

import io
import os
import threading
import time

import numpy as np
import pytest

dask = pytest.importorskip("dask")
import dask.array as da                                    # noqa: E402
import dask.bag as db                                      # noqa: E402
import dask.dataframe as dd                                # noqa: E402
import pandas as pd                                        # noqa: E402
from dask._task_spec import List, Task, TaskRef            # noqa: E402

import graphstore                                          # noqa: E402
import graphstore.dask as gd                               # noqa: E402
from helpers import wait_for                               # noqa: E402

MB = 1024 * 1024


def _names(tasks) -> list[str]:
    return [t["name"] for t in tasks]


def _new_tasks(before: int) -> list[dict]:
    tasks = graphstore.list_tasks(limit=100_000)
    return tasks[before:] if len(tasks) >= before else tasks


def _object_count(min_size: int = 0) -> int:
    """Objects with a value (pending results of queued tasks are not counted)."""
    return sum(o["state"] == "ready" and o["size"] >= min_size
               for o in graphstore.memory_summary()["objects"])


def test_array_reduction_equals_dask_and_runs_as_named_tasks(cluster):
    x = da.random.random((600, 600), chunks=(150, 150))
    y = (x + x.T).mean(axis=0)
    before = len(graphstore.list_tasks(limit=100_000))
    got = y.compute(scheduler=gd.get)
    np.testing.assert_allclose(got, y.compute(scheduler="sync"))
    names = _names(_new_tasks(before))
    # One graphstore task per Dask task, named after the Dask key's prefix.
    assert sum(n.startswith("random_sample") for n in names) == 16, names
    assert any(n.startswith("mean") for n in names), names


def test_array_from_numpy_is_put_once_and_read_zero_copy_in_tasks(cluster):
    source = np.arange(4 * MB // 8, dtype=np.float64)
    x = da.from_array(source, chunks=source.size // 4)

    def inspect(block):
        # A chunk a task reads is a read-only view of shared memory, not a copy.
        return np.array([block.sum(), float(block.flags.writeable), os.getpid()])

    out = x.map_blocks(inspect, chunks=(3,), dtype=float).compute(scheduler=gd.get)
    sums, writeable, pids = out[0::3], out[1::3], out[2::3]
    np.testing.assert_allclose(sums.sum(), source.sum())
    assert not writeable.any()
    assert os.getpid() not in pids.astype(int)


def test_dataframe_groupby_equals_dask(cluster):
    frame = pd.DataFrame({"key": np.arange(10_000) % 17, "x": np.arange(10_000) * 0.5,
                          "y": np.ones(10_000)})
    df = dd.from_pandas(frame, npartitions=8)
    query = df.groupby("key").agg(x=("x", "mean"), y=("y", "sum"), n=("x", "count"))
    got = query.compute(scheduler=gd.get).sort_index()
    expected = query.compute(scheduler="sync").sort_index()
    pd.testing.assert_frame_equal(got, expected)
    assert (got["n"] > 0).all() and got["y"].sum() == 10_000
    # Column arithmetic and a filter through the same scheduler.
    total = df[df.x > 100].x.sum().compute(scheduler=gd.get)
    assert total == frame[frame.x > 100].x.sum()


def test_bag_fold_and_foldby_equal_dask(cluster):
    bag = db.from_sequence(range(1000), npartitions=7)
    assert bag.map(lambda v: v * 3).fold(lambda a, b: a + b).compute(scheduler=gd.get) \
        == sum(v * 3 for v in range(1000))
    by = bag.foldby(lambda v: v % 5, lambda total, v: total + v, 0).compute(scheduler=gd.get)
    assert sorted(by) == sorted(bag.foldby(lambda v: v % 5, lambda total, v: total + v, 0)
                                .compute(scheduler="sync"))
    assert bag.filter(lambda v: v % 2).count().compute(scheduler=gd.get) == 500


def test_delayed_graph_with_a_failure_raises_its_type(cluster):
    @dask.delayed
    def load(i):
        return list(range(i))

    @dask.delayed
    def check(values):
        if len(values) == 3:
            raise ValueError(f"bad partition of {len(values)}")
        return sum(values)

    @dask.delayed
    def total(parts):
        return sum(parts)

    good = total([check(load(i)) for i in (1, 2, 4)])
    assert good.compute(scheduler=gd.get) == 0 + 1 + 6
    bad = total([check(load(i)) for i in (1, 3, 4)])
    with pytest.raises(ValueError, match="bad partition of 3"):
        bad.compute(scheduler=gd.get)
    # The cluster still works after the failure, and the same graph works on good input.
    assert good.compute(scheduler=gd.get) == 7


def test_config_set_scheduler_and_compute_many(cluster):
    a = dask.delayed(os.getpid)()
    x = da.ones((100,), chunks=10)
    with dask.config.set(scheduler=gd.get):
        pid, s, (m,) = dask.compute(a, x.sum(), [x.max()])
    assert pid != os.getpid()
    assert s == 100 and m == 1
    with gd.enable():
        assert dask.config.get("scheduler") is gd.get
        assert dask.delayed(os.getpid)().compute() != os.getpid()
    assert dask.config.get("scheduler", None) is not gd.get
    gd.enable()
    try:
        assert dask.config.get("scheduler") is gd.get
    finally:
        gd.disable()
    assert dask.config.get("scheduler", None) is None


def test_persist_keeps_chunks_in_the_store_and_reuses_them(cluster):
    x = da.random.random((400, 400), chunks=(100, 100))
    (persisted,) = gd.persist(x)
    values = list(dict(persisted.__dask_graph__()).values())
    assert values and all(isinstance(v, graphstore.ObjectRef) for v in values)
    refs = set(values)
    summary = {o["object_id"] for o in graphstore.memory_summary()["objects"]}
    assert {ref.hex() for ref in refs} <= summary
    before = len(graphstore.list_tasks(limit=100_000))
    total = persisted.sum().compute(scheduler=gd.get)
    again = (persisted * 2).sum().compute(scheduler=gd.get)
    names = _names(_new_tasks(before))
    # Computing the persisted array reads the stored chunks; nothing is generated again,
    # even in tasks where Dask fused the chunk into its reader.
    assert not any("random_sample" == n for n in names), names
    local = persisted.compute(scheduler=gd.get)
    assert isinstance(local, np.ndarray) and local.shape == (400, 400)
    np.testing.assert_allclose(total, local.sum())
    np.testing.assert_allclose(again, 2 * local.sum())
    # Ray's spelling works too.
    (also,) = dask.persist(x, scheduler=gd.get, ray_persist=True)
    assert all(isinstance(v, graphstore.ObjectRef)
               for v in dict(also.__dask_graph__()).values())


def test_intermediates_are_freed_once_their_readers_ran(cluster):
    baseline = _object_count(MB)

    @dask.delayed
    def step(previous, i):
        time.sleep(0.05)
        # 2 MB per step: each result lives in a store.
        return np.full(2 * MB // 8, float(i)) + (previous[:1] if previous is not None else 0)

    @dask.delayed
    def head(array):
        return float(array[0])

    # Each step is read by the next step and by a small summary, so the chain is not
    # fused into one task: every step's 2 MB result goes through a store.
    value, heads = None, []
    for i in range(30):
        value = step(value, i)
        heads.append(head(value))
    total = dask.delayed(sum)(heads)
    expected, running = 0.0, 0.0
    for i in range(30):
        running += i
        expected += running
    counts: list[int] = []
    done = threading.Event()

    def sample():
        while not done.is_set():
            counts.append(_object_count(MB) - baseline)
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        assert total.compute(scheduler=gd.get) == expected
    finally:
        done.set()
        sampler.join()
    # A chain holds a few results at a time, not all thirty.
    assert len(counts) >= 10 and max(counts) <= 4, counts
    assert wait_for(lambda: _object_count(MB) <= baseline, timeout=30)


def test_a_linear_chain_runs_as_one_task(cluster):
    @dask.delayed
    def grow(values):
        return values + [os.getpid()]

    chain = []
    for _ in range(5):
        chain = grow(chain)
    before = len(graphstore.list_tasks(limit=100_000))
    pids = chain.compute(scheduler=gd.get)
    assert len(pids) == 5 and len(set(pids)) == 1 and pids[0] != os.getpid()
    assert len(_new_tasks(before)) == 1, _names(_new_tasks(before))


def test_bad_input_gets_a_clear_error(cluster):
    with pytest.raises(KeyError, match="not in the graph"):
        gd.get({"a": 1}, ["b"])
    with pytest.raises(KeyError, match="depends on 'missing'"):
        gd.get({"a": Task("a", sum, List(TaskRef("missing"), 1))}, "a")
    # A legacy tuple task: a string that is not a key is a literal, as in Dask.
    with pytest.raises(TypeError):
        gd.get({"a": (sum, ["missing", 1])}, "a")
    assert gd.get({"a": 1, "b": (sum, ["a", "a"])}, ["b", ["a"]]) == [2, [1]]
    with pytest.raises((TypeError, AttributeError)):
        gd.get(42, ["a"])


def test_the_dask_example_runs(run_driver):
    from helpers import run_example
    run = run_example(run_driver, "dask_on_graphstore.py")
    assert "delayed failure is a ZeroDivisionError: True" in run.stdout
    assert "persisted chunks are refs: True" in run.stdout
    assert "bag frequencies: [('a', 3), ('b', 1), ('c', 1)]" in run.stdout


def test_dask_callbacks_progress_bar_and_profiler(cluster):
    from dask.diagnostics import ProgressBar, Profiler
    x = da.random.random((400, 400), chunks=(100, 100))
    out = io.StringIO()
    with ProgressBar(out=out, minimum=0, dt=0.01), Profiler() as profile:
        total = x.sum().compute(scheduler=gd.get)
    np.testing.assert_allclose(total, x.sum().compute(scheduler="sync"))
    assert "100% Completed" in out.getvalue()
    # One record per graphstore task, with the keys Dask knows them by.
    assert len(profile.results) >= 16
    assert all(start <= end for _, _, start, end, _ in profile.results)

    @dask.delayed
    def broken():
        raise ValueError("no")

    out = io.StringIO()
    with pytest.raises(ValueError), ProgressBar(out=out, minimum=0, dt=0.01):
        broken().compute(scheduler=gd.get)
    assert "100% Completed" not in out.getvalue()
    # Callbacks given to compute itself, as Dask's local schedulers take them.
    seen = []
    dask.delayed(sum)([1, 2]).compute(scheduler=gd.get, callbacks=[
        (None, None, None, lambda key, result, dsk, state, worker: seen.append(key), None)])
    assert len(seen) == 1
