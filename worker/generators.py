"""Running generator tasks and actor calls: each yielded value becomes an object as it is
yielded, so the generator never holds more than one value.

* ``num_returns="streaming"``/``"dynamic"``: a ``YieldWriter`` puts each value (held by
  this process) and reports it to the scheduler (``GeneratorItem``), which, for a
  streaming call, hands it to the caller at once. An error raised by the generator is
  reported the same way, as its last value. The call's one result is then the number of
  values (streaming) or a ``DynamicObjectRefGenerator`` over their refs (dynamic), which
  holds them from then on.
* ``num_returns=N``: ``store_yielded`` packs the N values as they come, like the results
  of a function returning N values; what was packed before an error stays good.

Used by the worker's executor (tasks) and by actor processes (method calls).
"""
from __future__ import annotations

import inspect

from graphstore.core import protocol as msg
from graphstore.core.generators import STREAMING, DynamicObjectRefGenerator
from graphstore.core.object_ref import ObjectRef, new_id


def is_generator_function(fn) -> bool:
    return inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn)


def not_a_generator(what: str, mode: int, result) -> TypeError:
    name = "streaming" if mode == STREAMING else "dynamic"
    return TypeError(f"{what} was called with num_returns={name!r} but returned a "
                     f"{type(result).__name__}, not a generator: make it yield its values")


class YieldWriter:
    """The values one streaming or dynamic generator call yields, stored as they come.

    ``holder``: for actor calls, the caller (the scheduler knows tasks' callers). Called
    from the one thread running the generator (``add`` may block while a large value is
    written)."""

    def __init__(self, runtime, generator_id: bytes, mode: int, what: str,
                 holder: bytes = b""):
        self._runtime = runtime
        self._generator_id = generator_id
        self._streaming = mode == STREAMING
        self._holder = holder
        self._what = what
        self.count = 0
        #: Dynamic: the refs, held until the call's result (which contains them) is sent.
        self._refs: list[ObjectRef] = []

    def add(self, value) -> None:
        ref = self._runtime.put_value(value, f"value {self.count} {self._what} yielded")
        self._runtime.send_from_any_thread(msg.GeneratorItem(
            self._generator_id, self.count, ref._id, None, self._streaming, self._holder))
        self._keep(ref)

    def add_error(self, error: list) -> None:
        """The generator raised: the error is its last value (a ref that raises)."""
        object_id = new_id()
        self._runtime.send_from_any_thread(msg.GeneratorItem(
            self._generator_id, self.count, object_id, error, self._streaming,
            self._holder))
        # Made by the scheduler, held for this process (see RefChannel.drain).
        self._keep(ObjectRef._new(object_id))

    def _keep(self, ref: ObjectRef) -> None:
        self.count += 1
        if not self._streaming:
            self._refs.append(ref)
        # Streaming: the scheduler holds it for the caller before our ref's release
        # reaches it (both go through this process's ordered channel).

    def result(self):
        """The call's one result: the count, or the refs (dynamic)."""
        if self._streaming:
            return self.count
        return DynamicObjectRefGenerator(self._refs)


def store_yielded(generator, n: int, pack, what: str, packed: list) -> None:
    """Pack (``pack(index, value)``) the ``n`` values a generator called with
    ``num_returns=n`` yields into ``packed``, one as each comes. Too few or too many
    values raise ``ValueError`` (what was packed stays in ``packed``)."""
    for value in generator:
        if len(packed) == n:
            raise ValueError(f"{what} has num_returns={n} but yielded more than {n} "
                             f"values")
        packed.append(pack(len(packed), value))
    if len(packed) < n:
        raise ValueError(f"{what} has num_returns={n} but yielded only {len(packed)} "
                         f"value(s)")
