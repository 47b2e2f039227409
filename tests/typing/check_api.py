"""What users get from graphstore's types: checked by mypy (tests/test_typing.py), never
run, and not collected by pytest (no ``test_`` prefix).

``assert_type`` lines say what a type checker infers; lines marked ``# type: ignore[...]``
must be errors: mypy runs with ``warn_unused_ignores``, so a line that stops being an
error fails the check.
"""
from __future__ import annotations

from typing import Any, Iterator

from typing_extensions import assert_type

import graphstore
from graphstore import ActorHandle, ObjectRef, ObjectRefGenerator
from graphstore.actor import ActorClass
from graphstore.remote_function import RemoteFunction


@graphstore.remote
def add_one(x: int) -> int:
    return x + 1


@graphstore.remote(num_cpus=2, max_retries=1)
def greet(name: str, *, punctuation: str = "!") -> str:
    return f"hello {name}{punctuation}"


@graphstore.remote
def count_to(n: int) -> Iterator[int]:
    yield from range(n)


@graphstore.remote
def untyped(x):  # type: ignore[no-untyped-def]
    return x


@graphstore.remote(num_returns=2)
def pair(x: int) -> tuple[int, int]:
    return x, x


class _Counter:
    def __init__(self, start: int = 0) -> None:
        self.value = start

    def increment(self, by: int = 1) -> int:
        self.value += by
        return self.value


# mypy keeps a decorated class's own type (it does not apply class decorators), so a
# typed actor class is made by a call: ``Counter = graphstore.remote(_Counter)``.
Counter = graphstore.remote(_Counter)


@graphstore.remote
class Decorated:
    def ping(self) -> str:
        return "pong"


def remote_functions() -> None:
    typed: RemoteFunction[[int], int] = add_one
    wrong: RemoteFunction[[str], int] = add_one  # type: ignore[assignment]
    ref = add_one.remote(1)
    assert_type(ref, ObjectRef[int])
    assert_type(graphstore.get(ref), int)
    assert_type(graphstore.get([ref, ref]), list[int])
    assert_type(graphstore.get((ref, ref), timeout=1.0), list[int])
    assert_type(greet.remote("you", punctuation="?"), ObjectRef[str])
    assert_type(add_one.options(num_cpus=2).remote(1), ObjectRef[int])
    assert_type(count_to.options(num_cpus=1).remote(3), ObjectRefGenerator[int])
    count_to.remote("3")  # type: ignore[arg-type]
    assert_type(count_to.remote(3), ObjectRefGenerator[int])
    for item in count_to.remote(3):
        assert_type(item, ObjectRef[int])
    stream = count_to.remote(3)
    assert_type(graphstore.progress(stream), list[ObjectRef[int]])
    assert_type(stream.completed(), ObjectRef[int])
    ready_items, _ = graphstore.wait([stream, ref])
    assert_type(ready_items, list[ObjectRef[Any] | ObjectRefGenerator[Any]])
    dynamic: graphstore.DynamicObjectRefGenerator[int] = graphstore.get(
        count_to.options(num_returns="dynamic").remote(3))
    assert_type(dynamic[0], ObjectRef[int])
    assert_type(list(dynamic), list[ObjectRef[int]])
    assert_type(pair, Any)
    # Without a return annotation, mypy cannot tell a generator: the function is Any.
    assert_type(untyped, Any)
    assert_type(graphstore.get(untyped.remote(1)), Any)
    refs = add_one.options(num_returns=2).remote(1)
    assert_type(refs, Any)

    add_one.remote("one")  # type: ignore[arg-type]
    add_one.remote(1, 2)  # type: ignore[call-arg]
    greet.remote("you", punctuation=1)  # type: ignore[arg-type]
    add_one.options(num_returns=2).remote("one")  # type: ignore[arg-type]
    # As Ray's stubs do not model it either: a ref where an int is expected needs a cast.
    add_one.remote(ref)  # type: ignore[arg-type]
    add_one(1)  # a direct call raises TypeError at runtime; the type checker allows it


def objects() -> None:
    text = graphstore.put("s")
    assert_type(text, ObjectRef[str])
    assert_type(graphstore.get(text), str)
    number = graphstore.put(1)
    ready, not_ready = graphstore.wait([number, number], num_returns=1, timeout=0.5)
    assert_type(ready, list[ObjectRef[int]])
    assert_type(not_ready, list[ObjectRef[int]])
    mixed = graphstore.get([text, number])
    assert_type(mixed, list[object])  # ObjectRef is covariant: the join of both types
    for done in graphstore.as_completed([number]):
        assert_type(done, ObjectRef[int])
    assert_type(graphstore.progress([number]), list[ObjectRef[int]])
    assert_type(graphstore.progress(number), ObjectRef[int])
    graphstore.cancel(number, force=False, recursive=True)
    graphstore.get(1)  # type: ignore[call-overload]
    graphstore.put(1).hex(1)  # type: ignore[call-arg]


def actors() -> None:
    assert_type(Counter, ActorClass[_Counter])
    counter = Counter.remote(5)
    assert_type(counter, ActorHandle[_Counter])
    assert_type(Counter.options(name="c").remote(), ActorHandle[_Counter])
    # The decorator form: the limit above, written down so a mypy that lifts it shows.
    Decorated.remote()  # type: ignore[attr-defined]
    # Methods go through the handle's __getattr__: their results are Any.
    assert_type(counter.increment.remote(1), Any)
    graphstore.kill(counter)
    assert_type(graphstore.get_actor("c"), ActorHandle[Any])
    graphstore.kill(ref_of_nothing())  # type: ignore[arg-type]


def ref_of_nothing() -> ObjectRef[None]:
    return graphstore.put(None)


def session() -> None:
    context = graphstore.init(num_cpus=2)
    assert_type(context, graphstore.session.ClusterContext)
    assert_type(context.address, str)
    with graphstore.init(ignore_reinit_error=True):
        pass
    graphstore.init(num_cpus="two")  # type: ignore[arg-type]
    assert_type(graphstore.is_initialized(), bool)
    graphstore.shutdown()
