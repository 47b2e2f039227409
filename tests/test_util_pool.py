"""``graphstore.util.multiprocessing.Pool`` against the standard library's
``multiprocessing.Pool`` behaviour, on a real cluster."""
from __future__ import annotations

import multiprocessing
import os
import time

import pytest

import graphstore

from graphstore.util.multiprocessing import Pool
from helpers import wait_for

_SETTING = None


def _set_up(value):
    global _SETTING
    _SETTING = value


def _with_setting(x):
    return (_SETTING, x)


def _square(x):
    return x * x


def _pid(_):
    return os.getpid()


def _wait_for_file(path):
    while not os.path.exists(path):
        time.sleep(0.01)
    return path


def _fail_on(x):
    if x == 3:
        raise KeyError(f"item {x}")
    return x


def test_the_mapping_calls_match_the_stdlib(cluster):
    items = list(range(23))
    with Pool(2) as pool, multiprocessing.get_context("spawn").Pool(2) as reference:
        assert pool.map(_square, items) == reference.map(_square, items)
        assert pool.map(_square, items, chunksize=5) == [x * x for x in items]
        assert list(pool.imap(_square, items, chunksize=3)) == [x * x for x in items]
        assert sorted(pool.imap_unordered(_square, items)) == [x * x for x in items]
        assert pool.starmap(pow, [(2, 3), (3, 2), (5, 0)]) == [8, 9, 1]
        assert pool.apply(pow, (2, 10)) == 1024
        assert pool.apply(dict, kwds={"a": 1}) == {"a": 1}
        assert pool.map(_square, []) == []


def test_async_results_and_callbacks(cluster, tmp_path):
    gate = str(tmp_path / "gate")
    seen, errors = [], []
    with Pool(2) as pool:
        waiting = pool.apply_async(_wait_for_file, (gate,), callback=seen.append)
        assert not waiting.ready()
        with pytest.raises(ValueError, match="not ready"):
            waiting.successful()
        with pytest.raises(multiprocessing.TimeoutError):
            waiting.get(timeout=0.1)
        open(gate, "w").close()
        assert waiting.get(timeout=60) == gate and waiting.successful()
        mapped = pool.map_async(_square, range(5), callback=seen.append)
        assert mapped.get(timeout=60) == [0, 1, 4, 9, 16]
        failed = pool.map_async(_fail_on, range(5), error_callback=errors.append)
        with pytest.raises(KeyError, match="item 3"):
            failed.get(timeout=60)
        assert not failed.successful()
        pool.close()
        pool.join()                               # callbacks have run by now
    assert seen == [gate, [0, 1, 4, 9, 16]]
    assert len(errors) == 1 and isinstance(errors[0], KeyError)


def test_errors_are_raised_with_their_own_type(cluster):
    with Pool(2) as pool:
        with pytest.raises(KeyError, match="item 3"):
            pool.map(_fail_on, range(6))
        with pytest.raises(KeyError):
            list(pool.imap(_fail_on, range(6)))
        with pytest.raises(ZeroDivisionError):
            pool.apply(divmod, (1, 0))


def test_initializer_runs_in_every_process(cluster):
    with Pool(2, initializer=_set_up, initargs=("ready",)) as pool:
        assert pool.map(_with_setting, range(6)) == [("ready", x) for x in range(6)]


def test_maxtasksperchild_replaces_the_processes(cluster):
    with Pool(1, maxtasksperchild=1) as pool:
        pids = pool.map(_pid, range(4), chunksize=1)
    assert len(set(pids)) == 4
    with Pool(1) as pool:
        assert len(set(pool.map(_pid, range(4), chunksize=1))) == 1


def test_close_join_and_terminate_follow_the_stdlib(cluster):
    pool = Pool(2)
    result = pool.map_async(_square, range(10))
    with pytest.raises(ValueError, match="still running"):
        pool.join()
    pool.close()
    with pytest.raises(ValueError, match="Pool not running"):
        pool.map(_square, [1])
    pool.join()
    assert result.get(timeout=1) == [x * x for x in range(10)]
    # Joined, the processes have ended and their CPUs are free again, even while the
    # pool object lives on (another driver's work would otherwise wait for them).
    assert wait_for(lambda: graphstore.available_resources().get("CPU", 0)
                    == graphstore.cluster_resources()["CPU"], timeout=30)
    pool.terminate()
    with Pool(1) as pool:
        pass
    with pytest.raises(ValueError, match="Pool not running"):
        pool.apply(_square, (2,))


def test_bad_arguments(cluster):
    with pytest.raises(ValueError, match="at least 1"):
        Pool(0)
    with pytest.raises(TypeError, match="processes"):
        Pool("2")
    with pytest.raises(TypeError, match="initializer"):
        Pool(1, initializer=42)
    with pytest.raises(ValueError, match="maxtasksperchild"):
        Pool(1, maxtasksperchild=0)
    with Pool(1) as pool:
        with pytest.raises(ValueError, match="Chunksize"):
            list(pool.imap(_square, [1], chunksize=0))
        with pytest.raises(TypeError, match="not callable"):
            pool.map(42, [1])


def test_the_pool_example_runs(run_driver):
    from helpers import run_example
    run = run_example(run_driver, "pool.py")
    assert "same in both processes: True" in run.stdout
    assert "longest Collatz run below 10,000: 261 steps, from 6171" in run.stdout
    assert "apply_async: 118" in run.stdout
