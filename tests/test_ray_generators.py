"""Generator tasks and actor methods, as in Ray (issue 13, 2.13), on real local clusters.

A generator function streams its values (``num_returns="streaming"``, Ray's default for
generators): ``f.remote()`` returns an ``ObjectRefGenerator`` at once, which hands out a ref
per yielded value while the task still runs. ``num_returns="dynamic"`` gives one ref whose
value iterates the refs; ``num_returns=N`` takes exactly N yielded values. Each value is an
object of its own, stored as it is yielded.
"""
from __future__ import annotations

import asyncio
import os
import pickle
import time

import numpy as np
import pytest

import graphstore
from graphstore import DynamicObjectRefGenerator, ObjectRefGenerator
from graphstore.exceptions import (ActorDiedError, TaskCancelledError, TaskError,
                                   WorkerCrashedError)
from helpers import wait_for

MB = 1024 * 1024


def _open(path) -> None:
    with open(path, "w"):
        pass


@graphstore.remote
def count_to(n):
    for i in range(n):
        yield i


@graphstore.remote
def gated_values(gate):
    """Yields 0, then waits for the file ``gate`` before yielding 1."""
    yield 0
    if not wait_for(lambda: os.path.exists(gate), timeout=60, interval=0.005):
        raise TimeoutError("the gate never opened")
    yield 1


@graphstore.remote
def arrays(n, size=MB):
    for i in range(n):
        yield np.full(size, i, dtype=np.uint8)


@graphstore.remote
def fails_after(n):
    for i in range(n):
        yield i
    raise KeyError(f"no value {n}")


@graphstore.remote
def endless(step=0.005):
    i = 0
    while True:
        yield i
        i += 1
        time.sleep(step)


@graphstore.remote
def plain(x):
    return x


@graphstore.remote
class Source:
    def __init__(self):
        self.calls = 0

    def count_to(self, n):
        for i in range(n):
            yield i

    def arrays(self, n):
        for i in range(n):
            yield np.full(MB, i, dtype=np.uint8)

    def fails_after(self, n):
        yield from range(n)
        raise KeyError(f"no value {n}")

    def gated(self, gate):
        yield 0
        if not wait_for(lambda: os.path.exists(gate), timeout=60, interval=0.005):
            raise TimeoutError("the gate never opened")
        yield 1

    def endless(self):
        i = 0
        while True:
            yield i
            i += 1
            time.sleep(0.005)

    @graphstore.method(num_returns=2)
    def pair(self):
        yield "a"
        yield "b"

    def ping(self):
        return "pong"


@graphstore.remote
class AsyncSource:
    async def count_to(self, n):
        for i in range(n):
            await asyncio.sleep(0)
            yield i

    async def fails_after(self, n):
        for i in range(n):
            yield i
        raise KeyError(f"no value {n}")

    def plain_generator(self, n):
        yield from range(n)

    async def gated(self, gate):
        yield 0
        while not os.path.exists(gate):
            await asyncio.sleep(0.005)
        yield 1

    async def endless(self):
        i = 0
        while True:
            yield i
            i += 1
            await asyncio.sleep(0.005)

    async def ping(self):
        return "pong"


def _big_objects() -> list[dict]:
    """Objects of at least a megabyte in the scheduler's directory."""
    return [o for o in graphstore.memory_summary()["objects"] if o["size"] >= MB]


# -- streaming tasks ------------------------------------------------------------------------

def test_generator_function_streams_by_default(cluster):
    gen = count_to.remote(5)
    assert isinstance(gen, ObjectRefGenerator)
    assert [graphstore.get(ref) for ref in gen] == [0, 1, 2, 3, 4]
    with pytest.raises(StopIteration):
        next(gen)
    explicit = count_to.options(num_returns="streaming").remote(3)
    assert [graphstore.get(ref) for ref in explicit] == [0, 1, 2]
    assert graphstore.get(count_to.remote(0).completed()) == 0


def test_refs_come_while_the_task_still_runs(cluster, tmp_path):
    gate = tmp_path / "gate"
    gen = gated_values.remote(str(gate))
    first = next(gen)                       # the task now waits for the gate
    assert graphstore.get(first) == 0
    assert not gen.next_ready() and not gen.is_finished()
    ready, _ = graphstore.wait([gen.completed()], timeout=0)
    assert ready == []                      # the task has not ended
    _open(gate)
    assert graphstore.get(next(gen)) == 1
    with pytest.raises(StopIteration):
        next(gen)
    assert gen.is_finished()
    assert graphstore.get(gen.completed()) == 2


def test_wait_takes_generators(cluster, tmp_path):
    gate = tmp_path / "gate"
    gen = gated_values.remote(str(gate))
    assert graphstore.get(next(gen)) == 0
    assert graphstore.wait([gen], timeout=0) == ([], [gen])   # the task waits for the gate
    done = plain.remote(7)
    ready, not_ready = graphstore.wait([gen, done], num_returns=1, timeout=30)
    assert ready == [done] and not_ready == [gen]
    _open(gate)
    assert graphstore.wait([gen, done], num_returns=2, timeout=30) == ([gen, done], [])
    assert graphstore.get(next(gen)) == 1
    assert graphstore.wait([gen], timeout=30) == ([gen], [])  # next() would not block:
    with pytest.raises(StopIteration):                         # it ends the iteration
        next(gen)


def test_error_midway_is_the_next_ref_then_the_iteration_stops(cluster):
    gen = fails_after.remote(2)
    assert graphstore.get(next(gen)) == 0
    assert graphstore.get(next(gen)) == 1
    bad = next(gen)
    with pytest.raises(KeyError, match="no value 2") as info:
        graphstore.get(bad)
    assert isinstance(info.value, TaskError)
    for _ in range(3):
        with pytest.raises(StopIteration):
            next(gen)
    # An error before any value: the first ref raises.
    gen = fails_after.remote(0)
    with pytest.raises(KeyError):
        graphstore.get(next(gen))
    assert list(gen) == []


def test_large_values_are_stored_in_shared_memory_as_they_are_yielded(cluster):
    gen = arrays.remote(4, 2 * MB)
    for i, ref in enumerate(gen):
        value = graphstore.get(ref)
        assert value.shape == (2 * MB,) and value[0] == i and value[-1] == i
        assert value.flags.writeable is False       # a view of the store, no copy
        (entry,) = [o for o in graphstore.memory_summary()["objects"]
                    if o["object_id"] == ref.hex()]
        assert entry["where"][0].startswith("worker pid=")  # in a store, not inline


def test_async_iteration(cluster):
    async def collect():
        values = []
        async for ref in count_to.remote(4):
            values.append(await ref)
        gen = fails_after.remote(1)
        assert await (await gen.__anext__()) == 0
        with pytest.raises(KeyError):
            await (await gen.__anext__())
        with pytest.raises(StopAsyncIteration):
            await gen.__anext__()
        return values
    assert asyncio.run(collect()) == [0, 1, 2, 3]


@graphstore.remote(num_cpus=2)
def consume_inside(n):
    """Holds every CPU of the shared cluster while it waits for the values of a nested
    generator task: waiting must lend its CPUs out, as get() does."""
    return [graphstore.get(ref) for ref in count_to.remote(n)]


def test_tasks_iterate_generators_of_other_tasks(cluster):
    assert graphstore.get(consume_inside.remote(5), timeout=60) == [0, 1, 2, 3, 4]


@graphstore.remote
def sum_refs(refs):
    return sum(graphstore.get(list(refs)))


def test_refs_from_a_generator_are_ordinary_refs(cluster):
    refs = list(count_to.remote(4))
    assert graphstore.get(plain.remote(refs[3])) == 3
    assert graphstore.get(sum_refs.remote(refs)) == 6
    ready, not_ready = graphstore.wait(refs, num_returns=4, timeout=10)
    assert len(ready) == 4 and not not_ready


def test_a_generator_cannot_be_pickled_or_passed_to_a_task(cluster):
    gen = count_to.remote(1)
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(gen)
    with pytest.raises(TypeError):
        plain.remote(gen)
    with pytest.raises(ValueError, match="ObjectRefGenerator"):    # not a ref: Ray's class
        graphstore.get(gen)
    assert [graphstore.get(r) for r in gen] == [0]


def test_a_retried_generator_hands_out_each_value_once(cluster, tmp_path):
    marker = tmp_path / "failed-once"

    @graphstore.remote(retry_exceptions=[ValueError], max_retries=2)
    def flaky(marker):
        for i in range(5):
            if i == 3 and not os.path.exists(marker):
                _open(marker)
                raise ValueError("first attempt fails at 3")
            yield i
    assert [graphstore.get(ref) for ref in flaky.remote(str(marker))] == [0, 1, 2, 3, 4]
    assert marker.exists()


@graphstore.remote
def dies_once(marker, n=4):
    """Its first run ends its worker's process after two values."""
    for i in range(n):
        if i == 2 and not os.path.exists(marker):
            _open(marker)
            os._exit(1)
        yield i


def test_a_generator_whose_worker_dies_is_retried_or_ends_with_the_crash(fresh_cluster,
                                                                          tmp_path):
    fresh_cluster(num_cpus=2)
    gen = dies_once.options(max_retries=1).remote(str(tmp_path / "a"))
    assert [graphstore.get(ref, timeout=60) for ref in gen] == [0, 1, 2, 3]
    # Without retries: the values that reached the scheduler before the process died
    # (as in Ray, a crash has no ordering guarantee), then the crash, then the end.
    gen = dies_once.options(max_retries=0).remote(str(tmp_path / "b"))
    values = []
    for ref in gen:
        try:
            values.append(graphstore.get(ref, timeout=60))
        except WorkerCrashedError:
            break
    else:
        pytest.fail("the generator ended without the crash")
    assert values == [0, 1][:len(values)]
    with pytest.raises(StopIteration):
        next(gen)


@graphstore.remote(max_restarts=1, max_task_retries=1)
class DiesOnce:
    def values(self, marker):
        for i in range(4):
            if i == 2 and not os.path.exists(marker):
                _open(marker)
                os._exit(1)
            yield i


def test_an_actor_generator_is_retried_on_the_restarted_actor(cluster, tmp_path):
    actor = DiesOnce.remote()
    gen = actor.values.remote(str(tmp_path / "marker"))
    assert [graphstore.get(ref, timeout=60) for ref in gen] == [0, 1, 2, 3]


# -- dropping and freeing -------------------------------------------------------------------

def test_dropping_the_generator_frees_values_not_handed_out(fresh_cluster, tmp_path):
    fresh_cluster(num_cpus=2)
    gate = tmp_path / "gate"

    @graphstore.remote
    def values_then_gate(gate):
        for i in range(6):
            yield np.full(MB, i, dtype=np.uint8)
        if not wait_for(lambda: os.path.exists(gate), timeout=60, interval=0.005):
            raise TimeoutError("the gate never opened")
        for i in range(6, 10):
            yield np.full(MB, i, dtype=np.uint8)

    gen = values_then_gate.remote(str(gate))
    kept = next(gen)
    assert graphstore.get(next(gen))[0] == 1          # taken and dropped at once
    assert wait_for(lambda: len(_big_objects()) == 5, timeout=20)  # 0, and 2..5 waiting
    done = gen.completed()
    del gen                                   # 2..5 are dropped; 6..9 go nowhere
    assert wait_for(lambda: [o["object_id"] for o in _big_objects()] == [kept.hex()],
                    timeout=20)
    _open(gate)
    assert graphstore.get(done, timeout=30) == 10
    assert wait_for(lambda: [o["object_id"] for o in _big_objects()] == [kept.hex()],
                    timeout=20)
    assert graphstore.get(kept)[0] == 0
    del kept, done
    assert wait_for(lambda: graphstore.memory_summary()["total_objects"] == 0, timeout=20)
    assert wait_for(lambda: all(s["used"] == 0 for s in graphstore.memory_summary()["stores"]),
                    timeout=20)


def test_values_handed_out_live_while_their_refs_do(fresh_cluster):
    fresh_cluster(num_cpus=2)
    refs = list(arrays.remote(3))
    assert wait_for(lambda: len(_big_objects()) == 3, timeout=20)
    del refs[1]
    assert wait_for(lambda: len(_big_objects()) == 2, timeout=20)
    assert [graphstore.get(r)[0] for r in refs] == [0, 2]
    del refs
    assert wait_for(lambda: graphstore.memory_summary()["total_objects"] == 0, timeout=20)


# -- cancelling -----------------------------------------------------------------------------

def _drain_after_cancel(gen) -> tuple[int, BaseException | None]:
    """Values handed out after a cancel, and the error of the ref that raised."""
    taken, error = 0, None
    for ref in gen:
        taken += 1
        try:
            graphstore.get(ref, timeout=30)
        except TaskCancelledError as exc:
            error = exc
    return taken, error


def test_cancelling_a_streaming_task_stops_it(cluster):
    gen = endless.remote()
    assert [graphstore.get(next(gen)) for _ in range(3)] == [0, 1, 2]
    graphstore.cancel(gen)
    taken, error = _drain_after_cancel(gen)
    assert error is not None and "cancelled" in str(error)
    assert taken < 1000                      # the task stopped: it never ends by itself
    with pytest.raises(StopIteration):
        next(gen)
    # Its worker runs other tasks again.
    assert graphstore.get([plain.remote(i) for i in range(4)], timeout=30) == [0, 1, 2, 3]


def test_cancelling_a_streaming_actor_call_stops_it(cluster):
    for actor in (Source.remote(), AsyncSource.remote()):
        gen = actor.endless.remote()
        assert graphstore.get(next(gen)) == 0
        graphstore.cancel(gen)
        taken, error = _drain_after_cancel(gen)
        assert error is not None and taken < 1000
        assert graphstore.get(actor.ping.remote(), timeout=30) == "pong"


# -- actors ---------------------------------------------------------------------------------

def test_sync_actor_generator_methods(cluster, tmp_path):
    source = Source.remote()
    gen = source.count_to.remote(4)
    assert isinstance(gen, ObjectRefGenerator)
    assert [graphstore.get(r) for r in gen] == [0, 1, 2, 3]
    gate = tmp_path / "gate"
    gen = source.gated.remote(str(gate))
    assert graphstore.get(next(gen)) == 0           # while the call still runs
    assert not gen.next_ready()
    _open(gate)
    assert [graphstore.get(r) for r in gen] == [1]
    for i, ref in enumerate(source.arrays.remote(3)):
        value = graphstore.get(ref)
        assert value[0] == i and value.nbytes == MB


def test_async_actor_generator_methods(cluster, tmp_path):
    source = AsyncSource.remote()
    assert [graphstore.get(r) for r in source.count_to.remote(5)] == [0, 1, 2, 3, 4]
    assert [graphstore.get(r) for r in source.plain_generator.remote(3)] == [0, 1, 2]
    gate = tmp_path / "gate"
    gen = source.gated.remote(str(gate))
    assert graphstore.get(next(gen)) == 0
    assert graphstore.get(source.ping.remote()) == "pong"   # the actor is not blocked
    _open(gate)
    assert [graphstore.get(r) for r in gen] == [1]

    async def collect():
        return [await ref async for ref in source.count_to.remote(3)]
    assert asyncio.run(collect()) == [0, 1, 2]


def test_actor_generator_errors_midway(cluster):
    for actor in (Source.remote(), AsyncSource.remote()):
        gen = actor.fails_after.remote(2)
        assert [graphstore.get(next(gen)) for _ in range(2)] == [0, 1]
        with pytest.raises(KeyError, match="no value 2"):
            graphstore.get(next(gen))
        with pytest.raises(StopIteration):
            next(gen)
        assert graphstore.get(actor.ping.remote()) == "pong"


def test_killed_actor_ends_its_generator_with_the_error(cluster, tmp_path):
    source = Source.remote()
    gen = source.gated.remote(str(tmp_path / "never"))
    assert graphstore.get(next(gen)) == 0
    graphstore.kill(source)
    with pytest.raises(ActorDiedError):
        graphstore.get(next(gen), timeout=30)
    with pytest.raises(StopIteration):
        next(gen)


@graphstore.remote
def first_of(gen):
    return graphstore.get(next(iter(gen)))


def test_actor_generators_from_tasks_and_other_actors(cluster):
    source = Source.remote()

    @graphstore.remote
    class Relay:
        def __init__(self, source):
            self.source = source

        def relay(self, n):
            for ref in self.source.count_to.remote(n):
                yield graphstore.get(ref) * 10

    @graphstore.remote
    def read(source, n):
        return [graphstore.get(r) for r in source.count_to.remote(n)]

    assert graphstore.get(read.remote(source, 3), timeout=30) == [0, 1, 2]
    relay = Relay.remote(source)
    assert [graphstore.get(r) for r in relay.relay.remote(3)] == [0, 10, 20]


# -- num_returns="dynamic" ------------------------------------------------------------------

def test_dynamic_returns_one_ref_to_a_generator_of_refs(cluster):
    ref = count_to.options(num_returns="dynamic").remote(4)
    assert isinstance(ref, graphstore.ObjectRef)
    gen = graphstore.get(ref)
    assert isinstance(gen, DynamicObjectRefGenerator) and len(gen) == 4
    assert [graphstore.get(r) for r in gen] == [0, 1, 2, 3]
    assert len(graphstore.get(count_to.options(num_returns="dynamic").remote(0))) == 0
    # Passed on: the ref resolves to the generator; the generator travels with its refs.
    assert graphstore.get(first_of.remote(ref)) == 0
    assert graphstore.get(first_of.remote(gen)) == 0
    source = Source.remote()
    gen = graphstore.get(source.count_to.options(num_returns="dynamic").remote(3))
    assert [graphstore.get(r) for r in gen] == [0, 1, 2]


def test_dynamic_error_is_the_last_ref(cluster):
    gen = graphstore.get(fails_after.options(num_returns="dynamic").remote(2))
    first, second, last = gen
    assert graphstore.get([first, second]) == [0, 1]
    with pytest.raises(KeyError):
        graphstore.get(last)


def test_dynamic_values_live_as_long_as_the_generator(fresh_cluster):
    fresh_cluster(num_cpus=2)
    ref = arrays.options(num_returns="dynamic").remote(3)
    gen = graphstore.get(ref)
    del ref                                   # the generator holds its refs
    assert [graphstore.get(r)[0] for r in gen] == [0, 1, 2]
    assert len(_big_objects()) == 3
    del gen
    assert wait_for(lambda: graphstore.memory_summary()["total_objects"] == 0, timeout=20)


# -- num_returns=N ----------------------------------------------------------------------------

def test_fixed_num_returns_takes_exactly_n_yielded_values(cluster):
    a, b = count_to.options(num_returns=2).remote(2)
    assert graphstore.get([a, b]) == [0, 1]
    assert graphstore.get(count_to.options(num_returns=1).remote(1)) == 0
    a, b, c = count_to.options(num_returns=3).remote(2)
    assert graphstore.get([a, b]) == [0, 1]
    with pytest.raises(ValueError, match="yielded only 2"):
        graphstore.get(c)
    first, second = fails_after.options(num_returns=2).remote(1)
    assert graphstore.get(first) == 0         # stored before the error: still good
    with pytest.raises(KeyError):
        graphstore.get(second)
    a, b = count_to.options(num_returns=2).remote(3)
    assert graphstore.get([a, b]) == [0, 1]   # the extra value is an error of the task
    (record,) = [t for t in graphstore.list_tasks() if t["returns"] == [a.hex(), b.hex()]]
    assert "yielded more than 2" in record["error"]
    source = Source.remote()
    assert graphstore.get(source.pair.remote()) == ["a", "b"]
    first, second = source.fails_after.options(num_returns=2).remote(1)
    assert graphstore.get(first) == 0
    with pytest.raises(KeyError):
        graphstore.get(second)
    async_source = AsyncSource.remote()
    assert graphstore.get(async_source.count_to.options(num_returns=2).remote(2)) == [0, 1]
    big_a, big_b = arrays.options(num_returns=2).remote(2)
    assert graphstore.get(big_b)[0] == 1


# -- checks ---------------------------------------------------------------------------------

def test_generator_modes_need_a_generator_function():
    with pytest.raises(ValueError, match="can only be used with generator"):
        @graphstore.remote(num_returns="streaming")
        def not_a_generator():
            return 1
    with pytest.raises(ValueError, match="can only be used with generator"):
        plain.options(num_returns="dynamic")
    with pytest.raises(ValueError, match="num_returns"):
        count_to.options(num_returns="lots")
    with pytest.raises(ValueError, match="can only be used with generator"):
        @graphstore.remote
        class Wrong:
            @graphstore.method(num_returns="streaming")
            def f(self):
                return 1
