"""Ray's semantics of get, wait and cancel (issue 13, items 2.3, 2.4, 2.15), on real local
clusters: a get of a list fails fast, a cancel wakes a task blocked in get/wait, and the
argument checks are Ray's.

Tasks that must stay pending are held behind a file gate (``gate`` fixture), opened at
teardown so that the shared cluster is left with nothing running."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

import graphstore
from graphstore.exceptions import GetTimeoutError, TaskCancelledError
from helpers import Gate, gated, wait_for

#: Seconds within which a fail-fast get or a cancel must be seen: far below the 60 s a
#: gated task holds on, far above a loaded machine's latency.
PROMPT = 20.0


@pytest.fixture
def gate(tmp_path):
    made: list[Gate] = []
    held: list = []

    def new(value=None):
        """A gate and a task held behind it (its ref)."""
        g = Gate(tmp_path / f"gate-{len(made)}")
        made.append(g)
        ref = gated.remote(g.path, value)
        held.append(ref)
        return g, ref

    yield new
    for g in made:        # never leave a task running on the shared cluster
        g.open()
    graphstore.wait(held, num_returns=len(held), timeout=60)


@graphstore.remote
def boom():
    raise ZeroDivisionError("boom")


@graphstore.remote
def bad_value():
    raise ValueError("bad value")


def _started(path) -> None:
    if path is not None:
        Path(path).touch()


@graphstore.remote
def get_inside(refs, timeout=None, started=None):
    """Get the refs in ``refs`` (nested, so they are not resolved before the call);
    touch ``started`` first."""
    _started(started)
    try:
        return graphstore.get(refs, timeout=timeout)
    except ZeroDivisionError as exc:
        return "failed fast: ZeroDivisionError"


@graphstore.remote
def wait_inside(refs, timeout=None, started=None):
    _started(started)
    return graphstore.wait(refs, num_returns=len(refs), timeout=timeout)


@graphstore.remote
def sleeper(seconds, started):
    _started(started)
    time.sleep(seconds)
    return "slept"


@graphstore.remote
class Getter:
    def get(self, refs, timeout=None, started=None):
        _started(started)
        try:
            return graphstore.get(refs, timeout=timeout)
        except ZeroDivisionError:
            return "failed fast: ZeroDivisionError"

    def ping(self):
        return "pong"

    def fail(self):
        raise ZeroDivisionError("boom")


@graphstore.remote
class Slow:
    def hold(self, path):
        wait_for(lambda: Path(path).exists(), timeout=60, interval=0.01)
        return "released"


def _ready(ref) -> bool:
    return bool(graphstore.wait([ref], timeout=0)[0])


# -- 2.3: get of a list fails fast ---------------------------------------------------------

def test_get_of_a_list_raises_an_error_without_waiting_for_the_others(cluster, gate):
    _, pending = gate()
    start = time.monotonic()
    with pytest.raises(ZeroDivisionError, match="boom"):
        graphstore.get([pending, boom.remote()])
    assert time.monotonic() - start < PROMPT
    assert not _ready(pending)          # it really was still running


def test_get_with_a_timeout_raises_the_error_not_a_timeout(cluster, gate):
    _, pending = gate()
    start = time.monotonic()
    with pytest.raises(ZeroDivisionError):
        graphstore.get([boom.remote(), pending], timeout=120)
    assert time.monotonic() - start < PROMPT


def test_an_error_already_here_fails_the_get_at_once(cluster, gate):
    _, pending = gate()
    failed = boom.remote()
    graphstore.wait([failed], timeout=60)
    with pytest.raises(ZeroDivisionError):
        graphstore.get([pending, failed], timeout=0)   # not a GetTimeoutError


def test_the_first_error_in_list_order_is_raised(cluster):
    zero, value = boom.remote(), bad_value.remote()
    graphstore.wait([zero, value], num_returns=2, timeout=60)
    ok = graphstore.put(1)
    with pytest.raises(ZeroDivisionError):
        graphstore.get([ok, zero, value])
    with pytest.raises(ValueError):
        graphstore.get([ok, value, zero])


def test_a_list_of_successes_still_returns_every_value_in_order(cluster):
    refs = [get_inside.remote([graphstore.put(i)]) for i in range(20)]
    refs += [graphstore.put(i) for i in range(20, 40)]
    expected = [[i] for i in range(20)] + list(range(20, 40))
    assert graphstore.get(refs, timeout=60) == expected
    assert graphstore.get(tuple(refs[-3:])) == [37, 38, 39]
    dup = graphstore.put("same")
    assert graphstore.get([dup, dup]) == ["same", "same"]


def test_get_fails_fast_inside_a_task(cluster, gate):
    _, pending = gate()
    ref = get_inside.remote([pending, boom.remote()])
    assert graphstore.get(ref, timeout=PROMPT) == "failed fast: ZeroDivisionError"
    with_timeout = get_inside.remote([pending, boom.remote()], timeout=120)
    assert graphstore.get(with_timeout, timeout=PROMPT) == "failed fast: ZeroDivisionError"
    assert not _ready(pending)


def test_get_fails_fast_inside_an_actor(cluster, gate):
    _, pending = gate()
    actor = Getter.remote()
    assert graphstore.get(actor.get.remote([pending, boom.remote()]),
                          timeout=PROMPT) == "failed fast: ZeroDivisionError"
    assert graphstore.get(actor.get.remote([boom.remote(), pending], timeout=120),
                          timeout=PROMPT) == "failed fast: ZeroDivisionError"


def test_get_fails_fast_on_actor_results(cluster, tmp_path):
    """Actor results come straight from the actor, not via the scheduler."""
    release = tmp_path / "release"
    slow, getter = Slow.remote(), Getter.remote()
    held = slow.hold.remote(str(release))
    try:
        with pytest.raises(ZeroDivisionError):
            graphstore.get([held, getter.fail.remote()], timeout=120)
        assert not _ready(held)
    finally:
        release.touch()
    assert graphstore.get(held, timeout=60) == "released"


def test_get_of_a_list_still_times_out_without_errors(cluster, gate):
    _, pending = gate()
    with pytest.raises(GetTimeoutError):
        graphstore.get([graphstore.put(1), pending], timeout=0.2)


# -- 2.4: cancel wakes a task blocked in get or wait ---------------------------------------

def _wait_started(path: Path) -> None:
    """Until the task that touches ``path`` runs (it then blocks at once)."""
    assert wait_for(path.exists, timeout=60), "the task never started"


@pytest.mark.parametrize("timeout", [None, 600])
def test_cancel_wakes_a_task_blocked_in_get(cluster, gate, tmp_path, timeout):
    _, pending = gate("value")
    started = tmp_path / "started"
    ref = get_inside.remote([pending], timeout=timeout, started=str(started))
    _wait_started(started)
    start = time.monotonic()
    graphstore.cancel(ref)
    with pytest.raises(TaskCancelledError):
        graphstore.get(ref, timeout=PROMPT)
    assert time.monotonic() - start < PROMPT
    assert not _ready(pending)          # only the waiting task was cancelled
    # The worker lives on and its CPU came back: two tasks run side by side again.
    assert graphstore.get([get_inside.remote([graphstore.put(i)]) for i in range(4)],
                          timeout=60) == [[0], [1], [2], [3]]


def test_cancel_wakes_a_task_blocked_in_wait(cluster, gate, tmp_path):
    _, pending = gate()
    started = tmp_path / "started"
    ref = wait_inside.remote([pending], started=str(started))
    _wait_started(started)
    graphstore.cancel(ref)
    with pytest.raises(TaskCancelledError):
        graphstore.get(ref, timeout=PROMPT)


def test_cancel_wakes_a_task_waiting_for_an_actor_result(cluster, tmp_path):
    """Actor results come straight from the actor: another wait path in the runtime."""
    release = tmp_path / "release"
    actor = Slow.remote()
    call = actor.hold.remote(str(release))
    started = tmp_path / "started"
    ref = get_inside.remote([call], started=str(started))
    _wait_started(started)
    graphstore.cancel(ref)
    try:
        with pytest.raises(TaskCancelledError):
            graphstore.get(ref, timeout=PROMPT)
    finally:
        release.touch()
    assert graphstore.get(call, timeout=60) == "released"


@graphstore.remote
def parent_of_gated(path, started):
    """Blocks in get on two children it submitted, held behind the gate ``path``."""
    children = [gated.remote(path, i) for i in range(2)]
    _started(started)
    return graphstore.get(children)


def test_recursive_cancel_of_a_task_blocked_on_its_children(cluster, tmp_path):
    gate_path, started = tmp_path / "gate", tmp_path / "started"
    before = {r["task_id"] for r in graphstore.list_tasks()}
    ref = parent_of_gated.remote(str(gate_path), str(started))
    _wait_started(started)
    try:
        graphstore.cancel(ref, recursive=True)
        with pytest.raises(TaskCancelledError):
            graphstore.get(ref, timeout=PROMPT)
        # The children were cancelled too: none is left waiting for the gate.
        assert wait_for(lambda: not [r for r in graphstore.list_tasks()
                                     if r["name"] == "gated" and r["task_id"] not in before
                                     and r["state"] not in ("done", "failed")],
                        timeout=PROMPT)
    finally:
        gate_path.touch()


@pytest.mark.parametrize("max_concurrency", [None, 2])
def test_cancel_wakes_an_actor_call_blocked_in_get(cluster, gate, tmp_path,
                                                   max_concurrency):
    _, pending = gate()
    actor = Getter.options(max_concurrency=max_concurrency).remote()
    started = tmp_path / "started"
    call = actor.get.remote([pending], started=str(started))
    _wait_started(started)
    graphstore.cancel(call)
    with pytest.raises(TaskCancelledError):
        graphstore.get(call, timeout=PROMPT)
    assert graphstore.get(actor.ping.remote(), timeout=PROMPT) == "pong"


def test_cancel_of_a_sleeping_task_lands_when_the_sleep_returns(cluster, tmp_path):
    """As in Ray (ray-project/ray#32954), a task inside ``time.sleep`` (one C call) is
    not interrupted before the call returns; it is cancelled then, not run on."""
    started = tmp_path / "started"
    ref = sleeper.remote(1.5, str(started))
    _wait_started(started)
    graphstore.cancel(ref)
    with pytest.raises(TaskCancelledError):
        graphstore.get(ref, timeout=PROMPT)


# -- 2.15: argument checks, as Ray's -----------------------------------------------------

def test_wait_of_nothing_returns_two_empty_lists(cluster):
    assert graphstore.wait([]) == ([], [])
    assert graphstore.wait([], num_returns=3, timeout=0) == ([], [])


def test_wait_checks_its_arguments_as_ray_does(cluster):
    a, b = graphstore.put(1), graphstore.put(2)
    with pytest.raises(TypeError, match="single ObjectRef"):
        graphstore.wait(a)
    with pytest.raises(TypeError, match="expected a list"):
        graphstore.wait({a, b})
    with pytest.raises(TypeError, match="containing <class 'int'>"):
        graphstore.wait([a, 1])
    with pytest.raises(ValueError, match="nonnegative"):
        graphstore.wait([a], timeout=-1)
    with pytest.raises(ValueError, match="unique"):
        graphstore.wait([a, a])
    with pytest.raises(ValueError, match="Invalid number of objects to return 0"):
        graphstore.wait([a], num_returns=0)
    with pytest.raises(ValueError, match="num_returns cannot be greater"):
        graphstore.wait([a, b], num_returns=3)
    with pytest.raises(TypeError, match="num_returns"):
        graphstore.wait([a], num_returns="1")
    assert graphstore.wait([a, b], num_returns=2, timeout=0) == ([a, b], [])


def test_wait_counts_errors_as_ready(cluster, gate):
    _, pending = gate()
    failed = boom.remote()
    ready, not_ready = graphstore.wait([pending, failed], num_returns=1, timeout=60)
    assert (ready, not_ready) == ([failed], [pending])


def test_get_checks_its_arguments_as_ray_does(cluster):
    ref = graphstore.put(1)
    with pytest.raises(ValueError, match="must either be an ObjectRef or a list"):
        graphstore.get(1)
    with pytest.raises(ValueError, match="must either be an ObjectRef or a list"):
        graphstore.get({ref})
    with pytest.raises(TypeError, match="'not a ref', which is not an ObjectRef"):
        graphstore.get([ref, "not a ref"])
    with pytest.raises(ValueError, match="nonnegative"):
        graphstore.get(ref, timeout=-0.5)
    with pytest.raises(TypeError, match="timeout"):
        graphstore.get(ref, timeout="soon")
    assert graphstore.get(ref, timeout=-1) == 1        # Ray's "no limit"
    assert graphstore.get([], timeout=0) == []


def test_cancel_force_of_an_actor_call_raises_value_error(cluster, tmp_path):
    release = tmp_path / "release"
    actor = Slow.remote()
    call = actor.hold.remote(str(release))
    with pytest.raises(ValueError, match="force=True is not supported for actor tasks"):
        graphstore.cancel(call, force=True)
    release.touch()
    assert graphstore.get(call, timeout=60) == "released"   # not cancelled
    with pytest.raises(ValueError, match="force=True is not supported for actor tasks"):
        graphstore.cancel(call, force=True)                 # finished: still refused
    graphstore.cancel(call)                                 # no force: nothing to do


def test_cancel_and_kill_name_what_they_take(cluster):
    with pytest.raises(TypeError, match="only supported for object refs"):
        graphstore.cancel("not a ref")
    with pytest.raises(ValueError, match="only supported for actors"):
        graphstore.kill("not a handle")
    with pytest.raises(ValueError, match="only supported for actors"):
        graphstore.kill(graphstore.put(1))
