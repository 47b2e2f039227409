"""``graphstore.util.ActorPool`` and ``graphstore.util.queue.Queue`` on a real cluster,
checked against Ray's documented behaviour (``ray.util.ActorPool``, ``ray.util.queue``).
"""
from __future__ import annotations

import asyncio
import os
import time

import pytest

import graphstore
from graphstore.util import ActorPool
from graphstore.util.queue import Empty, Full, Queue
from helpers import wait_for


@graphstore.remote(num_cpus=0)
class Doubler:
    def double(self, v):
        return 2 * v

    def slow_double(self, v, seconds):
        time.sleep(seconds)
        return 2 * v

    def pair(self, v):
        return v, -v

    def pid(self):
        return os.getpid()


# -- ActorPool ---------------------------------------------------------------------------

def test_map_keeps_order_and_uses_every_actor(cluster):
    actors = [Doubler.remote(), Doubler.remote()]
    pool = ActorPool(actors)
    assert list(pool.map(lambda a, v: a.double.remote(v), range(20))) == \
        [2 * v for v in range(20)]
    pids = list(pool.map(lambda a, v: a.pid.remote(), range(10)))
    assert len(set(pids)) == 2
    assert not pool.has_next() and pool.has_free()


def test_map_unordered_yields_the_fast_results_first(cluster):
    pool = ActorPool([Doubler.remote(), Doubler.remote()])
    out = list(pool.map_unordered(lambda a, v: a.slow_double.remote(v[0], v[1]),
                                  [(1, 3.0), (2, 0.0), (3, 0.0), (4, 0.0)]))
    assert sorted(out) == [2, 4, 6, 8]
    assert out[-1] == 2       # the slow one finishes last


def test_submit_beyond_the_actors_waits_for_a_free_one(cluster):
    pool = ActorPool([Doubler.remote()])
    for v in range(5):
        pool.submit(lambda a, v: a.double.remote(v), v)
    assert not pool.has_free() and pool.pop_idle() is None
    assert [pool.get_next() for _ in range(5)] == [0, 2, 4, 6, 8]
    with pytest.raises(StopIteration, match="No more results"):
        pool.get_next()
    assert pool.has_free()


def test_get_next_times_out_and_can_drop_the_call(cluster):
    pool = ActorPool([Doubler.remote()])
    pool.submit(lambda a, v: a.slow_double.remote(v, 5.0), 1)
    with pytest.raises(TimeoutError, match="Timed out waiting for result"):
        pool.get_next(timeout=0.1)
    assert pool.has_next()                      # not dropped: still there
    with pytest.raises(TimeoutError, match="has been ignored"):
        pool.get_next(timeout=0.1, ignore_if_timedout=True)
    assert not pool.has_next() and pool.has_free()


def test_get_next_after_get_next_unordered_is_refused(cluster):
    pool = ActorPool([Doubler.remote(), Doubler.remote()])
    pool.submit(lambda a, v: a.double.remote(v), 1)
    pool.submit(lambda a, v: a.double.remote(v), 2)
    first = pool.get_next_unordered(timeout=30)
    assert first in (2, 4)
    if first == 2:        # in order so far: get_next may go on
        assert pool.get_next() == 4
    else:                 # the later call came back first: order is lost (as in Ray)
        with pytest.raises(ValueError, match="get_next_unordered"):
            pool.get_next()
        assert pool.get_next_unordered() == 2


def test_push_and_pop_idle(cluster):
    a, b = Doubler.remote(), Doubler.remote()
    pool = ActorPool([a])
    with pytest.raises(ValueError, match="already belongs"):
        pool.push(a)
    pool.push(b)
    taken = pool.pop_idle()
    assert taken in (a, b)
    assert list(pool.map(lambda actor, v: actor.double.remote(v), [5])) == [10]
    with pytest.raises(TypeError, match="ObjectRef"):
        pool.submit(lambda actor, v: v, 1)   # not a call on the actor


def test_a_call_with_several_returns_is_one_result(cluster):
    pool = ActorPool([Doubler.remote()])
    pool.submit(lambda a, v: list(a.pair.options(num_returns=2).remote(v)), 3)
    assert pool.get_next() == [3, -3]
    pool.submit(lambda a, v: list(a.pair.options(num_returns=2).remote(v)), 4)
    assert pool.get_next_unordered() == [4, -4]


def test_map_drops_results_left_unread(cluster):
    pool = ActorPool([Doubler.remote()])
    pool.submit(lambda a, v: a.double.remote(v), 100)
    assert list(pool.map(lambda a, v: a.double.remote(v), [1, 2])) == [2, 4]


def test_a_failing_call_raises_and_frees_its_actor(cluster):
    pool = ActorPool([Doubler.remote()])
    pool.submit(lambda a, v: a.double.remote(v), None)   # 2 * None: TypeError
    with pytest.raises(TypeError):
        pool.get_next()
    assert list(pool.map(lambda a, v: a.double.remote(v), [7])) == [14]


# -- Queue ---------------------------------------------------------------------------------

def test_queue_is_fifo_and_counts(cluster):
    q = Queue()
    assert q.empty() and len(q) == 0 and not q.full()
    for i in range(5):
        q.put(i)
    assert q.qsize() == 5 and q.size() == 5 and not q.empty()
    assert [q.get() for _ in range(5)] == [0, 1, 2, 3, 4]
    q.shutdown()


def test_a_bounded_queue_is_full_and_empty_like_the_stdlib(cluster):
    import queue as stdlib
    q = Queue(maxsize=2)
    q.put("a")
    q.put_nowait("b")
    assert q.full()
    with pytest.raises(Full):
        q.put_nowait("c")
    with pytest.raises(stdlib.Full):          # the stdlib's exception, as in Ray
        q.put("c", block=False)
    start = time.monotonic()
    with pytest.raises(Full):
        q.put("c", timeout=0.3)
    assert time.monotonic() - start >= 0.25
    assert q.get_nowait() == "a" and q.get(block=False) == "b"
    with pytest.raises(Empty):
        q.get_nowait()
    with pytest.raises(stdlib.Empty):
        q.get(timeout=0.2)
    with pytest.raises(ValueError, match="non-negative"):
        q.get(timeout=-1)
    with pytest.raises(TypeError, match="maxsize"):
        Queue(maxsize="3")


def test_batches_are_all_or_nothing(cluster):
    q = Queue(maxsize=3)
    q.put_nowait_batch([1, 2])
    with pytest.raises(Full, match="not enough room"):
        q.put_nowait_batch([3, 4])
    assert q.qsize() == 2
    with pytest.raises(Empty):
        q.get_nowait_batch(3)
    assert q.get_nowait_batch(2) == [1, 2]
    assert q.get_nowait_batch(0) == []
    with pytest.raises(ValueError, match="nonnegative"):
        q.get_nowait_batch(-1)


@graphstore.remote
def _producer(q, n):
    for i in range(n):
        q.put(i)
    return "done"


@graphstore.remote
def _consumer(q, n):
    return [q.get(timeout=60) for _ in range(n)]


def test_tasks_share_a_queue_and_a_blocked_get_does_not_block_others(cluster):
    q = Queue(maxsize=4)               # the producer blocks on a full queue meanwhile
    consumed = _consumer.remote(q, 50)
    produced = _producer.remote(q, 50)
    assert graphstore.get(produced, timeout=60) == "done"
    assert graphstore.get(consumed, timeout=60) == list(range(50))
    assert q.empty()


def test_async_put_and_get(cluster):
    q = Queue(maxsize=1)

    async def main():
        await q.put_async("x")
        with pytest.raises(Full):
            await q.put_async("y", timeout=0.1)
        with pytest.raises(Full):
            await q.put_async("y", block=False)
        first = await q.get_async()
        with pytest.raises(Empty):
            await q.get_async(block=False)
        return first

    assert asyncio.run(main()) == "x"


def test_shutdown_with_force_ends_the_queue_actor(cluster):
    q = Queue()
    q.put(1)
    actor = q.actor
    q.shutdown(force=True)
    assert q.actor is None
    assert wait_for(lambda: _dead(actor), timeout=30)
    q.shutdown()          # again: nothing to do


def _dead(actor) -> bool:
    from graphstore.exceptions import ActorDiedError
    try:
        graphstore.get(actor.qsize.remote(), timeout=10)
    except ActorDiedError:
        return True
    return False


def test_the_actor_pool_queue_example_runs(run_driver):
    from helpers import run_example
    run = run_example(run_driver, "actor_pool_queue.py")
    assert "in order:      [0, 10, 20, 30, 40, 50, 60, 70]" in run.stdout
    assert "produced 100 items; consumer summed 4950" in run.stdout
    assert "queue drained" in run.stdout
