"""``graphstore.progress``: a tqdm bar that advances as refs finish, on a real cluster.

The bar writes to an ``io.StringIO`` (tqdm's ``file=``) with a plain ``bar_format``, so
its states can be read back: each redraw starts with ``"\\r"``.
"""
from __future__ import annotations

import io
import os
import time

import pytest

import graphstore
from graphstore.exceptions import GetTimeoutError
from helpers import wait_for


def _states(file: io.StringIO) -> list[str]:
    """Every state the bar was drawn in, in order."""
    return [s.strip() for s in file.getvalue().split("\r") if s.strip()]


def _bar(**kwargs) -> tuple[io.StringIO, dict]:
    file = io.StringIO()
    return file, dict(file=file, mininterval=0, bar_format="{desc}{n}/{total}", **kwargs)


def _wait_for_file(path) -> None:
    while not os.path.exists(path):
        time.sleep(0.01)


@graphstore.remote(num_cpus=0)
def _square(x, gate=None):
    if gate is not None:
        _wait_for_file(gate)
    return x * x


@graphstore.remote(num_cpus=0)
def _fail():
    raise KeyError("no such key")


@graphstore.remote(num_cpus=0)
def _count(n):
    for i in range(n):
        yield i


@graphstore.remote(num_cpus=0)
def _yield_then_wait(gate):
    yield 1
    _wait_for_file(gate)
    yield 2


@graphstore.remote(num_cpus=0)
class _Counter:
    def __init__(self):
        self.n = 0

    def add(self, k):
        self.n += k
        return self.n


def test_returns_the_same_list_in_order_once_the_bar_reached_its_total(cluster, tmp_path):
    gate = str(tmp_path / "gate")
    refs = [_square.remote(3), _square.remote(2, gate), _square.remote(1)]
    opened = []

    def open_gate():     # the gated task finishes last, after the bar counted the others
        if not opened:
            opened.append(True)
            open(gate, "w").close()

    file, kwargs = _bar(desc="squares: ")
    # tqdm calls the file's flush() after each redraw: open the gate once two are done.
    file.flush = lambda: "squares: 2/3" in file.getvalue() and open_gate()
    returned = graphstore.progress(refs, timeout=60, **kwargs)
    assert returned is refs
    assert graphstore.get(returned) == [9, 4, 1]
    states = _states(file)
    assert states[0] == "squares: 0/3" and states[-1] == "squares: 3/3"
    assert "squares: 2/3" in states          # counted while the gated one still ran
    assert opened


def test_a_failed_ref_counts_as_done(cluster):
    refs = [_square.remote(2), _fail.remote()]
    file, kwargs = _bar()
    assert graphstore.progress(refs, timeout=60, **kwargs) is refs
    assert _states(file)[-1] == "2/2"
    assert graphstore.get(refs[0]) == 4
    with pytest.raises(KeyError):
        graphstore.get(refs[1])


def test_single_refs_tuples_iterables_duplicates_and_actor_calls(cluster):
    file, kwargs = _bar()
    ref = _square.remote(5)
    assert graphstore.progress(ref, **kwargs) is ref
    assert _states(file)[-1] == "1/1"

    pair = (_square.remote(1), _square.remote(2))
    assert graphstore.progress(pair, file=io.StringIO()) is pair

    counter = _Counter.remote()
    calls = [counter.add.remote(k) for k in (1, 2, 3)]
    lazy = (r for r in calls + [calls[0]])        # an iterator, a ref twice
    file, kwargs = _bar()
    assert graphstore.progress(lazy, timeout=60, **kwargs) == calls + [calls[0]]
    assert _states(file)[-1] == "4/4"            # total learnt when the iterator ended
    assert graphstore.get(calls) == [1, 3, 6]


def test_a_streaming_generator_is_counted_as_it_yields(cluster):
    file, kwargs = _bar()
    refs = graphstore.progress(_count.remote(4), timeout=60, **kwargs)
    assert [graphstore.get(r) for r in refs] == [0, 1, 2, 3]
    assert _states(file)[-1] == "4/4"


def test_times_out_and_checks_its_arguments(cluster, tmp_path):
    never = _square.remote(1, str(tmp_path / "never"))
    with pytest.raises(GetTimeoutError, match="1 of 2"):
        graphstore.progress([graphstore.put(0), never], timeout=0.5, file=io.StringIO())
    # Once it gave up, progress() no longer waits for (nor holds) what it was given.
    assert never._id not in graphstore.session.get_runtime()._waiters
    graphstore.cancel(never)
    assert wait_for(lambda: graphstore.wait([never], timeout=1)[0], timeout=30)
    with pytest.raises(TypeError, match="ObjectRef"):
        graphstore.progress([1, 2], file=io.StringIO())
    with pytest.raises(TypeError, match="iterable"):
        graphstore.progress(42)
    with pytest.raises(ValueError, match="timeout"):
        graphstore.progress([], timeout=-1)
    assert graphstore.progress([], file=io.StringIO()) == []


def test_the_timeout_covers_a_generator_that_stops_yielding(cluster, tmp_path):
    gate = tmp_path / "gate"
    generator = _yield_then_wait.remote(str(gate))
    start = time.monotonic()
    with pytest.raises(GetTimeoutError, match="next ref"):
        graphstore.progress(generator, timeout=1, file=io.StringIO())
    assert time.monotonic() - start < 30     # not until the generator yields again
    gate.write_text("go")
    assert [graphstore.get(ref) for ref in generator] == [2]


def test_as_completed_stops_waiting_when_its_consumer_does(cluster, tmp_path):
    never = _square.remote(1, str(tmp_path / "never"))
    ready = graphstore.put(5)
    stream = graphstore.as_completed([ready, never])
    assert next(stream) == ready
    stream.close()                           # the consumer stopped early
    assert never._id not in graphstore.session.get_runtime()._waiters
    (tmp_path / "never").write_text("go")
    assert graphstore.get(never, timeout=60) == 1
