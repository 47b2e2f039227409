"""Integration tests of the user API on real local clusters (issue 2).

Every test here talks to real scheduler and worker subprocesses over TCP. Most share one
``init(num_cpus=2)`` cluster (the ``cluster`` fixture); tests that need a particular set-up
start a private one (``fresh_cluster``), and behaviour seen from outside a process (output,
auto-init) runs in driver scripts (``run_driver``).

Tasks that must stay pending are held behind a file "gate" (``gate`` fixture), never
behind a timer, so the tests do not depend on the machine's speed.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import gc
import os
import pickle
import re
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import graphstore
from helpers import Gate, gated, wait_for
from graphstore.core.serialization import dumps, loads
from graphstore.exceptions import (GetTimeoutError, GraphstoreError, SerializationError,
                                   TaskError, TaskUnschedulableError)

# -- remote functions used by the tests ---------------------------------------------------


@graphstore.remote
def echo(x):
    return x


@graphstore.remote
def add(x, y=0):
    return x + y


@graphstore.remote
def pid_of(x=None):
    return os.getpid()


@graphstore.remote(num_returns=2)
def pair(x):
    return x, x * 2


@graphstore.remote
def fail(message):
    raise ValueError(message)


@graphstore.remote
def describe(x):
    """What the task received: type names of the value and of its elements."""
    if isinstance(x, dict):
        return {k: type(v).__name__ for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [type(v).__name__ for v in x]
    return type(x).__name__


@graphstore.remote
def deref_first(items):
    """A task that gets a ref it received nested in a list."""
    return graphstore.get(items[0])




@graphstore.remote
def gated_fail(path, message):
    if not wait_for(lambda: os.path.exists(path), timeout=60, interval=0.005):
        raise TimeoutError(f"gate {path} never opened")
    raise ValueError(message)


@graphstore.remote
def finished_at(seconds):
    time.sleep(seconds)
    return time.time()


@graphstore.remote
def started_at(x):
    return time.time(), x


@graphstore.remote
def interval(seconds):
    """(start, end) wall-clock times of a task that sleeps ``seconds``."""
    start = time.time()
    time.sleep(seconds)
    return start, time.time()


@graphstore.remote
def returns_lock():
    return threading.Lock()


@graphstore.remote
def put_inside_and_return_nested():
    return [graphstore.put("made inside a task")]


@graphstore.remote
def submit_inside_and_return_nested():
    ref = echo.remote("result of a sub-task")
    graphstore.wait([ref])
    return [ref]


@graphstore.remote
def inner_task(x):
    return x + 1


@graphstore.remote
def outer_task(x):
    a = graphstore.get(inner_task.remote(x))
    b = graphstore.get([inner_task.remote(a), inner_task.remote(a)])
    ready, _ = graphstore.wait([inner_task.remote(x)], num_returns=1, timeout=30)
    return a + sum(b) + graphstore.get(ready[0])


@graphstore.remote
def fib(n):
    if n < 2:
        return n
    return sum(graphstore.get([fib.remote(n - 1), fib.remote(n - 2)]))


class CustomError(Exception):
    def __init__(self, message, code=0):
        super().__init__(message)
        self.code = code


class TwoArgumentError(Exception):
    """Cannot be rebuilt from its args: pickling it round-trip fails."""

    def __init__(self, a, b):
        super().__init__(f"{a}/{b}")


@graphstore.remote
def raise_custom(code):
    raise CustomError("custom failure", code=code)


@graphstore.remote
def raise_two_argument():
    raise TwoArgumentError("left", "right")


@dataclasses.dataclass
class Box:
    ref: object
    label: str = "box"


# -- helpers ------------------------------------------------------------------------------


@pytest.fixture
def gate(tmp_path):
    made = []

    def new(name="gate") -> Gate:
        g = Gate(tmp_path / f"{name}-{len(made)}")
        made.append(g)
        return g

    yield new
    for g in made:  # never leave a task blocked on the shared cluster
        g.open()


def user_resources(resources: dict) -> dict:
    """Resources without the per-node ``node:<id>`` entries (as in Ray)."""
    return {k: v for k, v in resources.items() if not k.startswith("node:")}


def objects_count() -> int:
    return graphstore.cluster_status()["objects"]


def wait_for_objects(expected: int, timeout: float = 10.0) -> int:
    """Poll the scheduler's object count until it equals ``expected`` (releases are
    batched and asynchronous); return the last count seen."""
    seen = []

    def reached() -> bool:
        gc.collect()
        seen.append(objects_count())
        return seen[-1] == expected
    wait_for(reached, timeout, interval=0.02)
    return seen[-1]


def stays(expected: int, seconds: float = 0.4) -> bool:
    """True if the object count is ``expected`` throughout ``seconds``."""
    def changed() -> bool:
        gc.collect()
        return objects_count() != expected
    return not wait_for(changed, seconds, interval=0.05)


# == remote functions and options ===========================================================


def test_remote_returns_ref_and_get_returns_value(cluster):
    ref = add.remote(2, 3)
    assert isinstance(ref, graphstore.ObjectRef)
    assert graphstore.get(ref, timeout=30) == 5


def test_calling_remote_function_directly_raises_typeerror_pointing_to_remote(cluster):
    with pytest.raises(TypeError, match=r"echo\.remote\("):
        echo(1)


def test_num_returns_in_decorator_and_options(cluster):
    refs = pair.remote(21)
    assert isinstance(refs, list) and len(refs) == 2
    assert all(isinstance(r, graphstore.ObjectRef) for r in refs)
    assert refs[0] != refs[1]
    assert graphstore.get(refs, timeout=30) == [21, 42]

    three = echo.options(num_returns=3).remote(("a", "b", "c"))
    assert len(three) == 3
    assert graphstore.get(three, timeout=30) == ["a", "b", "c"]
    # .options() does not change the function itself.
    single = echo.remote(("a", "b", "c"))
    assert isinstance(single, graphstore.ObjectRef)
    assert graphstore.get(single, timeout=30) == ("a", "b", "c")
    # And overriding back to one return works too.
    one = pair.options(num_returns=1).remote(5)
    assert graphstore.get(one, timeout=30) == (5, 10)


def test_num_returns_mismatch_is_a_clear_task_error(cluster):
    refs = echo.options(num_returns=2).remote((1, 2, 3))
    for ref in refs:
        with pytest.raises(ValueError, match="num_returns=2") as info:
            graphstore.get(ref, timeout=30)
        assert isinstance(info.value, TaskError)


def test_invalid_options_are_rejected_at_the_call_site(cluster):
    with pytest.raises(ValueError, match="unknown option 'bogus'"):
        echo.options(bogus=1)
    with pytest.raises(ValueError, match="num_returns"):
        echo.options(num_returns=0)
    with pytest.raises(ValueError, match="max_retries"):
        echo.options(max_retries=-5)
    with pytest.raises(ValueError, match="resource names"):
        echo.options(resources={"CPU": 1})
    with pytest.raises(ValueError, match="num_cpus"):
        graphstore.remote(num_cpus=-1)(lambda: None)
    with pytest.raises(TypeError):
        graphstore.remote(3)


def test_num_cpus_option_up_to_node_capacity(cluster):
    # The node has 2 CPUs (two one-CPU workers): a 2-CPU task fits, and so does 0.5.
    assert graphstore.get(echo.options(num_cpus=2).remote("two"), timeout=30) == "two"
    assert graphstore.get(echo.options(num_cpus=0.5).remote("half"), timeout=30) == "half"

    @graphstore.remote(num_cpus=2)
    def decorated(x):
        return x * 3

    assert graphstore.get(decorated.remote(4), timeout=30) == 12


def test_task_using_all_cpus_runs_alone(cluster):
    """While a num_cpus=2 task holds both CPUs of the node, no other task may run."""
    # Warm up: make the scheduler measure ``interval`` as a very short function, the case
    # where it pipelines tasks to workers ahead of time.
    graphstore.get([interval.remote(0) for _ in range(20)], timeout=30)
    big = interval.options(num_cpus=2).remote(0.6)
    time.sleep(0.1)  # let the big task start first
    small = [interval.remote(0) for _ in range(5)]
    big_start, big_end = graphstore.get(big, timeout=30)
    for start, end in graphstore.get(small, timeout=30):
        assert not (big_start < start < big_end), (
            "a 1-CPU task ran while a 2-CPU task held every CPU of the node")


def test_name_option_names_the_task_in_errors(cluster):
    ref = fail.options(name="custom_task_name").remote("named failure")
    with pytest.raises(ValueError) as info:
        graphstore.get(ref, timeout=30)
    assert "custom_task_name" in str(info.value)
    assert info.value.function_name == "custom_task_name"

    @graphstore.remote(name="decorator_name")
    def failing():
        raise KeyError("k")

    with pytest.raises(KeyError) as info:
        graphstore.get(failing.remote(), timeout=30)
    assert "decorator_name" in str(info.value)


def test_max_retries_option_is_accepted(cluster):
    # Retries themselves are exercised by killing workers (test_integration_lifecycle).
    assert graphstore.get(echo.options(max_retries=0).remote(1), timeout=30) == 1
    assert graphstore.get(echo.options(max_retries=-1).remote(2), timeout=30) == 2

    @graphstore.remote(max_retries=5, num_cpus=1, num_returns=1, name="all_options",
                       resources={})
    def all_options(x):
        return x

    assert graphstore.get(all_options.remote(3), timeout=30) == 3


# == arguments ==============================================================================


def test_top_level_refs_are_resolved_positional_and_keyword(cluster):
    a = graphstore.put(10)
    b = add.remote(1, 2)                # a task's result as an argument
    assert graphstore.get(add.remote(a, y=b), timeout=30) == 13
    assert graphstore.get(add.remote(x=b, y=a), timeout=30) == 13
    assert graphstore.get(add.remote(b, b), timeout=30) == 6   # the same ref twice
    # A chain of tasks: each waits for the one before.
    ref = graphstore.put(0)
    for _ in range(10):
        ref = add.remote(ref, y=1)
    assert graphstore.get(ref, timeout=30) == 10


def test_task_waits_for_its_dependency_to_finish(cluster):
    slow = finished_at.remote(0.3)
    start, slow_end = graphstore.get(started_at.remote(slow), timeout=30)
    assert start >= slow_end


def test_nested_refs_reach_the_task_as_refs(cluster):
    ref = graphstore.put("payload")
    out = graphstore.get(echo.remote({"obj": ref}), timeout=30)
    assert isinstance(out, dict) and set(out) == {"obj"}
    assert isinstance(out["obj"], graphstore.ObjectRef)
    assert out["obj"] == ref
    assert graphstore.get(out["obj"], timeout=30) == "payload"

    out = graphstore.get(echo.remote([ref]), timeout=30)
    assert isinstance(out, list) and out == [ref]
    assert graphstore.get(out[0], timeout=30) == "payload"

    # Inside the task they are refs, not values; the task can get them itself.
    assert graphstore.get(describe.remote({"obj": ref}), timeout=30) == {"obj": "ObjectRef"}
    assert graphstore.get(describe.remote([ref, 1]), timeout=30) == ["ObjectRef", "int"]
    assert graphstore.get(describe.remote(ref), timeout=30) == "str"   # top level: value
    assert graphstore.get(deref_first.remote([ref]), timeout=30) == "payload"

    # Refs inside arbitrary objects stay refs too.
    box = graphstore.get(echo.remote(Box(ref, "label")), timeout=30)
    assert isinstance(box, Box) and box.label == "label" and box.ref == ref
    assert graphstore.get(box.ref, timeout=30) == "payload"


def test_nested_refs_are_not_waited_for(cluster, gate):
    g = gate()
    pending = gated.remote(g.path, "late value")
    # The nested ref is pending: the task must run anyway and return it unresolved.
    out = graphstore.get(echo.remote([pending]), timeout=30)
    assert out == [pending]
    ready, not_ready = graphstore.wait([pending], timeout=0)
    assert not ready and not_ready == [pending]
    # A top-level ref, on the contrary, holds the task back.
    dependent = echo.remote(pending)
    ready, _ = graphstore.wait([dependent], timeout=0.3)
    assert ready == []
    g.open()
    assert graphstore.get(out[0], timeout=30) == "late value"
    assert graphstore.get(dependent, timeout=30) == "late value"


def test_large_objects_round_trip_through_tasks(cluster):
    array = np.arange(300_000, dtype=np.float64)       # 2.4 MB, beyond the inline limit
    ref = graphstore.put(array)
    back = graphstore.get(ref, timeout=30)
    np.testing.assert_array_equal(back, array)
    doubled = graphstore.get(add.remote(ref, y=ref), timeout=30)
    np.testing.assert_array_equal(doubled, array * 2)
    # A large argument passed by value, and a large return value.
    echoed = graphstore.get(echo.remote(array), timeout=30)
    np.testing.assert_array_equal(echoed, array)


# == ObjectRef ==============================================================================


def test_objectref_repr_hash_equality_and_pickling(cluster):
    ref = graphstore.put("value")
    assert re.fullmatch(r"ObjectRef\([0-9a-f]{32}\)", repr(ref))
    assert ref.hex() in repr(ref)

    copy = pickle.loads(pickle.dumps(ref))
    assert copy is not ref
    assert copy == ref and hash(copy) == hash(ref)
    assert {ref: 1}[copy] == 1
    assert len({ref, copy}) == 1
    assert graphstore.ObjectRef(ref.hex()) == ref

    other = graphstore.put("value")
    assert other != ref
    assert ref != ref.hex() and ref != "value"

    # Pickled inside another object it stays a ref, and still names the same object.
    nested = pickle.loads(pickle.dumps({"k": [ref, (other,)]}))
    assert nested["k"][0] == ref and nested["k"][1][0] == other
    assert graphstore.get(nested["k"][0], timeout=30) == "value"


def test_await_ref_in_asyncio(cluster):
    async def main():
        a = await add.remote(1, 2)
        b, c = await asyncio.gather(graphstore.put("x"), echo.remote("y"))
        with pytest.raises(ValueError, match="awaited failure"):
            await fail.remote("awaited failure")
        return a, b, c

    assert asyncio.run(main()) == (3, "x", "y")


def test_ref_future_is_a_concurrent_future(cluster, gate):
    g = gate()
    future = gated.remote(g.path, "done").future()
    assert isinstance(future, concurrent.futures.Future)
    assert not future.done()
    g.open()
    assert future.result(timeout=30) == "done"

    ready_future = graphstore.put(7).future()
    assert ready_future.result(timeout=30) == 7

    error_future = fail.remote("future failure").future()
    error = error_future.exception(timeout=30)
    assert isinstance(error, ValueError) and isinstance(error, TaskError)
    assert "future failure" in str(error)


# == put / get / wait =======================================================================


def test_put_get_and_get_list_in_order(cluster):
    values = [1, "two", 3.0, None, {"k": [1, 2]}, b"bytes", np.arange(5)]
    refs = [graphstore.put(v) for v in values]
    got = graphstore.get(refs, timeout=30)
    for value, back in zip(values, got):
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(back, value)
        else:
            assert back == value
    # Mixed put and task refs, repeated refs, tuples: order is kept.
    task_refs = [add.remote(i, 100) for i in range(20)]
    mixed = [refs[0], *task_refs, refs[0]]
    assert graphstore.get(mixed, timeout=30) == [1, *range(100, 120), 1]
    assert graphstore.get(tuple(refs[:2]), timeout=30) == [1, "two"]
    assert graphstore.get([], timeout=30) == []


def test_put_stores_an_immutable_snapshot(cluster):
    value = [1, 2]
    ref = graphstore.put(value)
    value.append(3)
    assert graphstore.get(ref, timeout=30) == [1, 2]
    assert graphstore.get(echo.remote(ref), timeout=30) == [1, 2]


def test_put_of_an_objectref_raises_typeerror(cluster):
    ref = graphstore.put(1)
    with pytest.raises(TypeError, match="ObjectRef"):
        graphstore.put(ref)
    with pytest.raises(TypeError):
        graphstore.put(echo.remote(1))


def test_get_rejects_what_is_not_a_ref(cluster):
    with pytest.raises(ValueError):     # as in Ray
        graphstore.get(1)
    with pytest.raises(TypeError):
        graphstore.get([graphstore.put(1), "not a ref"])


def test_get_timeout_raises_get_timeout_error_which_is_a_timeout_error(cluster, gate):
    g = gate()
    ref = gated.remote(g.path, "eventually")
    start = time.monotonic()
    with pytest.raises(GetTimeoutError) as info:
        graphstore.get(ref, timeout=0.2)
    elapsed = time.monotonic() - start
    assert isinstance(info.value, TimeoutError)
    assert isinstance(info.value, GraphstoreError)
    assert 0.15 <= elapsed < 5
    # ``except TimeoutError`` is enough, as with Ray.
    try:
        graphstore.get([ref, graphstore.put(1)], timeout=0.05)
    except TimeoutError:
        pass
    else:
        pytest.fail("get() of a pending object did not time out")
    # The ref is still good after a timeout.
    g.open()
    assert graphstore.get(ref, timeout=30) == "eventually"
    # A ready object does not need time at all.
    assert graphstore.get(graphstore.put(5), timeout=0) == 5


def test_wait_returns_ready_and_not_ready_in_input_order(cluster, gate):
    g = gate()
    first = echo.remote("first")
    pending = gated.remote(g.path, "gated")
    last = echo.remote("last")
    refs = [first, pending, last]

    ready, not_ready = graphstore.wait(refs, num_returns=2, timeout=30)
    assert ready == [first, last]
    assert not_ready == [pending]

    start = time.monotonic()
    ready, not_ready = graphstore.wait(refs, num_returns=3, timeout=0.3)
    assert time.monotonic() - start < 5
    assert ready == [first, last] and not_ready == [pending]

    ready, not_ready = graphstore.wait(refs)  # num_returns=1 by default
    assert len(ready) == 1 and ready[0] in (first, last)
    assert ready + not_ready != [] and set(ready + not_ready) == set(refs)
    assert not_ready == [r for r in refs if r not in ready]

    ready, not_ready = graphstore.wait(refs, num_returns=3, timeout=0)
    assert pending in not_ready

    g.open()
    ready, not_ready = graphstore.wait(refs, num_returns=3, timeout=30)
    assert ready == refs and not_ready == []
    assert graphstore.get(ready, timeout=30) == ["first", "gated", "last"]


def test_wait_argument_checks(cluster):
    ref = graphstore.put(1)
    with pytest.raises(TypeError):
        graphstore.wait(ref)
    with pytest.raises(ValueError):
        graphstore.wait([ref, ref])
    with pytest.raises(ValueError):
        graphstore.wait([ref], num_returns=2)


# == reference counting ======================================================================


def test_refcount_put_then_drop_frees_the_object(fresh_cluster):
    fresh_cluster()
    assert wait_for_objects(0) == 0
    ref = graphstore.put("x" * 1000)
    assert wait_for_objects(1) == 1
    del ref
    assert wait_for_objects(0) == 0

    refs = [graphstore.put(i) for i in range(300)]
    assert wait_for_objects(300) == 300
    del refs[:150]
    assert wait_for_objects(150) == 150
    # A copy of a ref (here through graphstore's pickling, as an argument or a put value
    # is pickled) keeps the object alive on its own. (A ref the user pickles is pinned
    # for good: tests/test_ray_pickling.py.)
    keep = loads(dumps(refs[0])[0])
    del refs
    assert wait_for_objects(1) == 1
    assert graphstore.get(keep, timeout=30) == 150
    del keep
    assert wait_for_objects(0) == 0


def test_refcount_task_results_are_freed_when_dropped(fresh_cluster):
    fresh_cluster()
    ref = echo.remote("result")
    assert graphstore.get(ref, timeout=30) == "result"
    assert wait_for_objects(1) == 1
    del ref
    assert wait_for_objects(0) == 0

    a, b = pair.remote(1)
    graphstore.get([a, b], timeout=30)
    del a
    assert wait_for_objects(1) == 1
    assert graphstore.get(b, timeout=30) == 2
    del b
    assert wait_for_objects(0) == 0

    # Refs never fetched by the driver are freed as well, and so are failed results.
    refs = [add.remote(i, 1) for i in range(50)] + [fail.remote("x")]
    graphstore.wait(refs, num_returns=len(refs), timeout=30)
    del refs
    assert wait_for_objects(0) == 0


def test_refcount_pending_task_keeps_its_arguments_alive(fresh_cluster, gate):
    fresh_cluster()
    g = gate()
    top = graphstore.put("top-level argument")
    nested = graphstore.put("nested argument")
    out = gated.remote(g.path, {"top": top, "nested": [nested]})
    out2 = echo.remote(top)
    graphstore.get(out2, timeout=30)
    del out2
    del top, nested
    # The driver dropped both refs, but the pending task still needs them.
    assert wait_for_objects(3) == 3          # top, nested, out
    assert stays(3)
    g.open()
    result = graphstore.get(out, timeout=30)
    assert graphstore.get(result["top"], timeout=30) == "top-level argument"
    assert graphstore.get(result["nested"][0], timeout=30) == "nested argument"
    del result
    # Now only the result holds them (as contained refs); dropping it frees everything.
    del out
    assert wait_for_objects(0) == 0


def test_refcount_task_with_dropped_top_level_argument_still_runs(fresh_cluster, gate):
    fresh_cluster()
    g = gate()
    arg = graphstore.put("argument value")
    out = gated.remote(g.path, arg)       # top level: resolved to its value
    del arg
    assert stays(2)                       # arg and out
    g.open()
    assert graphstore.get(out, timeout=30) == "argument value"
    assert wait_for_objects(1) == 1       # the task finished: arg is released
    del out
    assert wait_for_objects(0) == 0


def test_refcount_objects_contained_in_objects_live_while_the_container_does(fresh_cluster):
    fresh_cluster()
    inner = graphstore.put("inner value")
    outer = graphstore.put([inner, {"again": inner}])
    del inner
    assert wait_for_objects(2) == 2
    assert stays(2)
    value = graphstore.get(outer, timeout=30)
    assert graphstore.get(value[0], timeout=30) == "inner value"
    del value
    del outer
    assert wait_for_objects(0) == 0

    # Two levels deep, freed from the top.
    a = graphstore.put("a")
    b = graphstore.put([a])
    c = graphstore.put([b])
    del a, b
    assert wait_for_objects(3) == 3
    del c
    assert wait_for_objects(0) == 0


def test_refcount_refs_returned_nested_in_task_results(fresh_cluster):
    fresh_cluster()
    inner = graphstore.put("passed in, returned nested")
    out = echo.remote([inner])
    del inner
    value = graphstore.get(out, timeout=30)
    assert graphstore.get(value[0], timeout=30) == "passed in, returned nested"
    del value, out
    assert wait_for_objects(0) == 0


def test_refcount_object_put_inside_a_task_and_returned_nested(cluster):
    value = graphstore.get(put_inside_and_return_nested.remote(), timeout=30)
    assert isinstance(value[0], graphstore.ObjectRef)
    assert graphstore.get(value[0], timeout=30) == "made inside a task"


def test_refcount_subtask_result_returned_nested(cluster):
    value = graphstore.get(submit_inside_and_return_nested.remote(), timeout=30)
    assert graphstore.get(value[0], timeout=30) == "result of a sub-task"


# == errors ====================================================================================


def test_task_error_is_an_instance_of_the_original_class_with_remote_traceback(cluster):
    ref = fail.remote("something broke")
    with pytest.raises(ValueError) as info:
        graphstore.get(ref, timeout=30)
    error = info.value
    assert isinstance(error, TaskError) and isinstance(error, GraphstoreError)
    text = str(error)
    assert "something broke" in text
    assert "Traceback" in text
    assert "in fail" in text and "ValueError" in text   # the remote frame
    assert error.function_name == "fail"
    assert re.search(r"pid=\d+", text)
    # Plain ``except ValueError`` works, as with Ray.
    try:
        graphstore.get(ref)
    except ValueError as caught:
        assert "something broke" in str(caught)
    # The same error again on a second get.
    with pytest.raises(ValueError):
        graphstore.get(ref)


def test_remote_traceback_names_the_file_and_source_line(cluster):
    with pytest.raises(ValueError) as info:
        graphstore.get(fail.remote("where did it break?"), timeout=30)
    text = str(info.value)
    assert "test_integration_api.py" in text
    assert "raise ValueError(message)" in text


def test_task_error_keeps_custom_exception_class_and_attributes(cluster):
    with pytest.raises(CustomError) as info:
        graphstore.get(raise_custom.remote(42), timeout=30)
    assert isinstance(info.value, TaskError)
    assert isinstance(info.value.cause, CustomError)
    assert info.value.cause.code == 42
    assert "custom failure" in str(info.value)

    # An exception that cannot be rebuilt still gives a TaskError naming it.
    with pytest.raises(TaskError) as info:
        graphstore.get(raise_two_argument.remote(), timeout=30)
    assert "TwoArgumentError" in str(info.value)
    assert "left/right" in str(info.value)


def test_dependents_of_a_failed_task_fail_with_the_same_error(cluster, gate):
    root = fail.remote("root cause")
    child = add.remote(root, y=1)
    grandchild = add.remote(1, y=child)          # keyword dependency
    for ref in (root, child, grandchild):
        with pytest.raises(ValueError, match="root cause") as info:
            graphstore.get(ref, timeout=30)
        assert info.value.function_name == "fail"
        assert "in fail" in str(info.value) and "Traceback" in str(info.value)

    # Dependents submitted before the failure happens fail too.
    g = gate()
    late = gated_fail.remote(g.path, "late failure")
    dependents = [echo.remote(late), add.remote(1, y=late), echo.remote(echo.remote(late))]
    g.open()
    for ref in dependents:
        with pytest.raises(ValueError, match="late failure") as info:
            graphstore.get(ref, timeout=30)
        assert info.value.function_name == "gated_fail"


def test_nested_ref_to_a_failed_object_does_not_fail_the_task(cluster):
    failed = fail.remote("nested failure")
    out = graphstore.get(echo.remote([failed]), timeout=30)
    assert out == [failed]
    with pytest.raises(ValueError, match="nested failure"):
        graphstore.get(out[0], timeout=30)


def test_unpicklable_argument_error_names_type_and_argument(cluster):
    lock = threading.Lock()
    with pytest.raises(SerializationError) as info:
        echo.remote(lock)
    text = str(info.value)
    assert isinstance(info.value, TypeError)
    assert "argument 0" in text and "lock" in text and "echo" in text

    with pytest.raises(TypeError) as info:
        add.remote(1, y=lock)
    text = str(info.value)
    assert "keyword argument 'y'" in text and "lock" in text

    with pytest.raises(TypeError) as info:
        graphstore.put(lock)
    assert "lock" in str(info.value) and "put()" in str(info.value)
    # The cluster is unaffected.
    assert graphstore.get(echo.remote(1), timeout=30) == 1


def test_unpicklable_return_value_error_names_type_and_function(cluster):
    with pytest.raises(TypeError) as info:
        graphstore.get(returns_lock.remote(), timeout=30)
    text = str(info.value)
    assert isinstance(info.value, TaskError)
    assert "return value of returns_lock" in text
    assert "lock" in text
    # The worker survived and serves the next task.
    assert graphstore.get(echo.remote("still here"), timeout=30) == "still here"


@pytest.mark.parametrize("options, words", [
    ({"num_cpus": 3}, ["num_cpus=3"]),
    ({"num_cpus": 1000}, ["num_cpus=1000"]),
    ({"resources": {"GPU": 1}}, ["GPU"]),
    ({"num_cpus": 1, "resources": {"special": 0.5}}, ["special"]),
])
def test_impossible_resource_request_fails_at_once(cluster, options, words):
    start = time.monotonic()
    ref = echo.options(**options).remote(1)
    dependent = echo.remote(ref)
    with pytest.raises(TaskUnschedulableError) as info:
        graphstore.get(ref, timeout=30)
    assert time.monotonic() - start < 5
    for word in words:
        assert word in str(info.value)
    assert isinstance(info.value, ValueError)
    with pytest.raises(TaskUnschedulableError):
        graphstore.get(dependent, timeout=30)
    # The cluster still runs feasible tasks.
    assert graphstore.get(echo.remote("ok"), timeout=30) == "ok"


# == custom resources ==========================================================================


def test_custom_resources(fresh_cluster):
    fresh_cluster(num_cpus=2, resources={"GPU": 1})
    assert user_resources(graphstore.cluster_resources()) == {"CPU": 2.0, "GPU": 1.0}

    assert graphstore.get(echo.options(resources={"GPU": 1}).remote("on gpu"),
                          timeout=30) == "on gpu"

    @graphstore.remote(resources={"GPU": 1})
    def gpu_interval(seconds):
        start = time.time()
        time.sleep(seconds)
        return start, time.time()

    # One GPU: two GPU tasks never overlap, although two CPUs are free.
    a, b = graphstore.get([gpu_interval.remote(0.4), gpu_interval.remote(0.4)], timeout=30)
    (s1, e1), (s2, e2) = sorted([a, b])
    assert s2 >= e1 - 0.01, "two tasks each needing the only GPU ran at the same time"

    # Half a GPU each: two can share it.
    halves = [gpu_interval.options(resources={"GPU": 0.5}).remote(0.05) for _ in range(2)]
    assert len(graphstore.get(halves, timeout=30)) == 2

    start = time.monotonic()
    with pytest.raises(TaskUnschedulableError, match="GPU"):
        graphstore.get(echo.options(resources={"GPU": 2}).remote(1), timeout=30)
    assert time.monotonic() - start < 5


# == nested tasks ==============================================================================


def test_nested_tasks_do_not_deadlock_on_a_one_cpu_cluster(fresh_cluster):
    fresh_cluster(num_cpus=1)
    # outer_task holds the only CPU while it waits for its sub-tasks.
    # outer_task(x) = (x+1) + 2*(x+2) + (x+1) = 4x + 6
    assert graphstore.get(outer_task.remote(1), timeout=60) == 10
    assert graphstore.get(fib.remote(7), timeout=60) == 13
    # Several nested tasks at once.
    assert graphstore.get([outer_task.remote(i) for i in range(4)], timeout=60) == \
        [4 * i + 6 for i in range(4)]


# == output to the driver ======================================================================

OUTPUT_DRIVER = """
import sys, time, graphstore

graphstore.init(num_cpus=2{init_args})

@graphstore.remote
def echo(x):
    import os
    print("current value of argument x:", x)
    return os.getpid()

@graphstore.remote
def multi():
    import os, sys
    print("line one\\nline two")
    print("to stderr", file=sys.stderr)
    print("no newline at the end", end="")
    return os.getpid()

pid = graphstore.get(echo.remote([0, 1, 2, 3, 4]))
print("ECHO_PID=%d" % pid, flush=True)
pid = graphstore.get(multi.remote())
print("MULTI_PID=%d" % pid, flush=True)
pid = graphstore.get(echo.options(name="renamed").remote("x"))
print("RENAMED_PID=%d" % pid, flush=True)
time.sleep(0.3)
graphstore.shutdown()
print("DRIVER_DONE", flush=True)
"""


def test_task_output_reaches_the_driver_with_a_prefix(run_driver):
    run = run_driver(OUTPUT_DRIVER.format(init_args=""))
    assert run.returncode == 0, run.stderr
    out, err = run.stdout, run.stderr
    echo_pid = run.value("ECHO_PID")
    multi_pid = run.value("MULTI_PID")
    renamed_pid = run.value("RENAMED_PID")
    assert f"(echo pid={echo_pid}) current value of argument x: [0, 1, 2, 3, 4]\n" in out
    assert f"(multi pid={multi_pid}) line one\n" in out
    assert f"(multi pid={multi_pid}) line two\n" in out
    assert f"(multi pid={multi_pid}) no newline at the end\n" in out
    assert f"(multi pid={multi_pid}) to stderr\n" in err
    assert "to stderr" not in out
    assert f"(renamed pid={renamed_pid}) current value of argument x: x\n" in out
    assert "DRIVER_DONE" in out


def test_log_to_driver_false_silences_task_output(run_driver):
    run = run_driver(OUTPUT_DRIVER.format(init_args=", log_to_driver=False"))
    assert run.returncode == 0, run.stderr
    assert run.value("ECHO_PID") and run.value("MULTI_PID")
    for text in (run.stdout, run.stderr):
        assert "current value of argument x" not in text
        assert "line one" not in text and "to stderr" not in text
        assert " pid=" not in text
    assert "DRIVER_DONE" in run.stdout


def test_logging_inside_tasks_reaches_the_driver(run_driver):
    run = run_driver("""
        import logging, time, graphstore
        graphstore.init(num_cpus=1)

        @graphstore.remote
        def log_something():
            import os
            logging.getLogger("user.task").warning("a warning logged in a task")
            return os.getpid()

        pid = graphstore.get(log_something.remote())
        time.sleep(0.3)
        print("PID=%d" % pid, flush=True)
        graphstore.shutdown()
    """)
    assert run.returncode == 0, run.stderr
    pid = run.value("PID")
    combined = run.stdout + run.stderr
    assert "a warning logged in a task" in combined
    assert f"(log_something pid={pid})" in combined


# == init, is_initialized, shutdown ============================================================


def test_second_init_raises_unless_ignore_reinit_error(cluster):
    assert graphstore.is_initialized()
    with pytest.raises(GraphstoreError, match="ignore_reinit_error"):
        graphstore.init()
    with pytest.raises(GraphstoreError):
        graphstore.init(num_cpus=1)
    ctx = graphstore.init(ignore_reinit_error=True)
    assert ctx.address == cluster.address
    assert graphstore.is_initialized()
    # Still the same, working cluster.
    assert graphstore.get(echo.remote("same"), timeout=30) == "same"


def test_init_sees_every_worker_join_when_the_driver_is_busy(run_driver):
    # A driver whose own threads keep the GIL busy (a realistic driver) starts local
    # clusters over and over; every init() must see both workers join, also when newer
    # ClusterInfo messages arrive in the same batch as the RegisterClient reply. (A lost
    # join never arrives: the 10 s limit only leaves room for a loaded machine, where
    # starting two worker processes beside the busy thread took over 2 s.)
    run = run_driver("""
        import sys, threading, time, graphstore

        def busy():
            while True:
                sum(range(1000))

        threading.Thread(target=busy, daemon=True).start()
        for i in range(25):
            start = time.monotonic()
            try:
                graphstore.init(num_cpus=2, startup_timeout=10)
            except graphstore.exceptions.GraphstoreError as exc:
                print("FAILED_AT=%d after %.1f s: %s" % (i, time.monotonic() - start, exc),
                      flush=True)
                break
            finally:
                graphstore.shutdown()
        print("DONE", flush=True)
    """, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "DONE" in run.stdout
    assert "FAILED_AT=" not in run.stdout, run.stdout


def test_init_returns_a_context_describing_the_local_cluster(cluster):
    assert re.fullmatch(r"tcp://127\.0\.0\.1:\d+", cluster.address)
    assert cluster.num_workers == 2
    assert cluster.session_dir      # (its logs are checked on a fresh cluster, below)
    assert cluster.address_info["address"] == cluster.address
    status = graphstore.cluster_status()
    assert status["workers"] == 2
    assert user_resources(graphstore.cluster_resources()) == {"CPU": 2.0}
    # The two workers are distinct processes and both run tasks.
    pids = set()

    def both_seen() -> bool:
        pids.update(graphstore.get([pid_of.remote(i) for i in range(8)], timeout=30))
        return len(pids) >= 2
    wait_for(both_seen, timeout=30, interval=0)
    assert len(pids) == 2


def test_is_initialized_and_shutdown(fresh_cluster):
    graphstore.shutdown()
    assert not graphstore.is_initialized()
    graphstore.shutdown()                    # a second shutdown is harmless
    with pytest.raises(ValueError):
        graphstore.init(num_cpus=-1)
    assert not graphstore.is_initialized()
    with pytest.raises(ValueError):
        graphstore.init(address="tcp://127.0.0.1:1", num_cpus=2)
    assert not graphstore.is_initialized()
    ctx = fresh_cluster(num_cpus=1)
    assert graphstore.is_initialized()
    assert ctx.num_workers == 1
    logs = Path(ctx.session_dir) / "logs"
    assert (logs / "scheduler.log").is_file()
    assert "listening at " + ctx.address in (logs / "scheduler.log").read_text()
    graphstore.shutdown()
    assert not graphstore.is_initialized()


def test_init_as_a_context_manager(fresh_cluster, init_cluster):
    graphstore.shutdown()
    with init_cluster(num_cpus=1) as ctx:
        assert graphstore.is_initialized()
        assert graphstore.get(echo.remote(ctx.address), timeout=30) == ctx.address
    assert not graphstore.is_initialized()


def test_remote_before_init_starts_a_local_cluster(run_driver, procs):
    run = run_driver("""
        import graphstore
        from graphstore import session

        @graphstore.remote
        def square(x):
            return x * x

        assert not graphstore.is_initialized()
        ref = square.remote(7)
        assert graphstore.is_initialized()
        print("SESSION=" + session.current_local_cluster().session_name, flush=True)
        print("RESULT=%d" % graphstore.get(ref), flush=True)
        print("WORKERS=%d" % graphstore.cluster_status()["workers"], flush=True)
        # no shutdown(): the cluster must go away at exit anyway
    """)
    assert run.returncode == 0, run.stderr
    assert run.value("RESULT") == "49"
    assert int(run.value("WORKERS")) == (os.cpu_count() or 1)
    left = procs.wait_gone(procs.session_processes(session_name=run.value("SESSION")), 5)
    assert not left, f"auto-started cluster left processes: {[p.pid for p in left]}"


def test_put_before_init_starts_a_local_cluster(run_driver, procs):
    run = run_driver("""
        import graphstore
        from graphstore import session

        ref = graphstore.put({"answer": 42})
        assert graphstore.is_initialized()
        print("SESSION=" + session.current_local_cluster().session_name, flush=True)
        print("VALUE=%s" % graphstore.get(ref)["answer"], flush=True)
        ready, _ = graphstore.wait([ref])
        print("READY=%d" % len(ready), flush=True)
    """)
    assert run.returncode == 0, run.stderr
    assert run.value("VALUE") == "42" and run.value("READY") == "1"
    left = procs.wait_gone(procs.session_processes(session_name=run.value("SESSION")), 5)
    assert not left


# == joining a running cluster =================================================================


def _wait_workers(n: int, timeout: float = 30.0) -> None:
    if not wait_for(lambda: graphstore.cluster_status()["workers"] == n, timeout):
        raise AssertionError(f"expected {n} workers, have "
                             f"{graphstore.cluster_status()['workers']}")


def test_init_address_joins_a_cluster_started_from_the_cli(cli_cluster, monkeypatch):
    graphstore.shutdown()                    # leave the shared cluster for this test
    cli = cli_cluster(num_workers=1, worker_args=("--resource", "GPU=1"))
    worker_pid = cli.workers[0].pid

    # 1. Token passed explicitly.
    ctx = graphstore.init(address=cli.address, token=cli.token)
    try:
        assert ctx.address == cli.address
        assert ctx.session_dir is None       # nothing local was started
        _wait_workers(1)
        assert user_resources(graphstore.cluster_resources()) == {"CPU": 1.0, "GPU": 1.0}
        assert graphstore.get(pid_of.remote(), timeout=30) == worker_pid
        assert graphstore.get(echo.options(resources={"GPU": 1}).remote("gpu"),
                              timeout=30) == "gpu"
        held = graphstore.put("held by the first driver")
        assert wait_for_objects(1) == 1
        with pytest.raises(TaskUnschedulableError):
            graphstore.get(echo.options(num_cpus=2).remote(1), timeout=30)
    finally:
        graphstore.shutdown()
    del held
    # Disconnecting from a cluster we did not start leaves it running.
    time.sleep(0.3)
    assert cli.scheduler.poll() is None and cli.workers[0].poll() is None

    # 2. Token from GRAPHSTORE_TOKEN, address from GRAPHSTORE_ADDRESS ("auto").
    monkeypatch.setenv("GRAPHSTORE_TOKEN", cli.token)
    monkeypatch.setenv("GRAPHSTORE_ADDRESS", cli.address)
    graphstore.init(address="auto")
    try:
        # The first driver's refs were released when it disconnected.
        assert wait_for_objects(0) == 0
        assert graphstore.get(add.remote(graphstore.put(1), 2), timeout=30) == 3
        assert graphstore.cluster_status()["drivers"] == 1
    finally:
        graphstore.shutdown()

    # 3. Token from the token file (GRAPHSTORE_TOKEN_FILE).
    monkeypatch.delenv("GRAPHSTORE_TOKEN")
    monkeypatch.setenv("GRAPHSTORE_TOKEN_FILE", str(cli.token_file))
    graphstore.init(address=cli.address)
    try:
        assert graphstore.get(echo.remote("via token file"), timeout=30) == "via token file"
    finally:
        graphstore.shutdown()

    # num_cpus/resources describe a new cluster: refused with an address.
    with pytest.raises(ValueError):
        graphstore.init(address=cli.address, num_cpus=1)
    assert not graphstore.is_initialized()
