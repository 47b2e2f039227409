"""Generator tasks: how a call's ``num_returns`` asks for its results, and the value a
``num_returns="dynamic"`` task returns.

A generator function (or actor method) called with

* ``num_returns="streaming"`` (the default for generator functions, as in Ray) returns an
  ``ObjectRefGenerator`` at once, which hands out a ref per yielded value while the task
  still runs (``graphstore.runtime.streams``);
* ``num_returns="dynamic"`` returns one ref whose value, once the task finished, is a
  ``DynamicObjectRefGenerator`` over the refs of every yielded value;
* ``num_returns=N`` returns N refs, the N values it yields, each stored as it is yielded.

Each yielded value is an object of its own (large ones in shared memory) the moment it is
yielded, so the task never holds all of them in memory.
"""
from __future__ import annotations

from typing import Any, Generic, Iterable, Iterator, TypeVar, overload

from graphstore.core.object_ref import ObjectRef

#: The type of the values the task yielded.
Y_co = TypeVar("Y_co", covariant=True)

#: A call's mode, as ``SubmitTask``/``RunTask``/``ActorCall`` carry it.
NORMAL, DYNAMIC, STREAMING = 0, 1, 2

#: ``num_returns`` values that are not a count.
MODES = {"dynamic": DYNAMIC, "streaming": STREAMING}


def returns_mode(num_returns: int | str) -> tuple[int, int]:
    """``(mode, number of refs the caller gets back)`` for a ``num_returns`` option."""
    if isinstance(num_returns, int):
        return NORMAL, num_returns
    return MODES[num_returns], 1


def check_generator_mode(num_returns: object, is_generator: bool, what: str) -> None:
    """``"streaming"``/``"dynamic"`` only make sense for a generator function (Ray checks
    this where the option is given, too)."""
    if num_returns in MODES and not is_generator:
        raise ValueError(f"num_returns={num_returns!r} can only be used with generator "
                         f"functions, and {what} does not yield: make it a generator "
                         f"(use `yield`) or give num_returns a number")


class DynamicObjectRefGenerator(Generic[Y_co]):
    """The value of a ``num_returns="dynamic"`` task: the refs of what it yielded, in
    order (an error raised after some yields is the last ref). Iterate it, take its
    ``len``, or pass it (or the ref to it) to other tasks; it holds its refs, so their
    objects live as long as it does."""
    __slots__ = ("_refs",)

    def __init__(self, refs: Iterable[ObjectRef[Y_co]]) -> None:
        self._refs = list(refs)

    def __iter__(self) -> Iterator[ObjectRef[Y_co]]:
        return iter(self._refs)

    def __len__(self) -> int:
        return len(self._refs)

    @overload
    def __getitem__(self, index: int) -> ObjectRef[Y_co]: ...

    @overload
    def __getitem__(self, index: slice) -> list[ObjectRef[Y_co]]: ...

    def __getitem__(self, index: int | slice) -> ObjectRef[Y_co] | list[ObjectRef[Y_co]]:
        return self._refs[index]

    def __repr__(self) -> str:
        return f"DynamicObjectRefGenerator({len(self._refs)} refs)"

    def __reduce__(self) -> tuple[Any, ...]:
        return (DynamicObjectRefGenerator, (self._refs,))
