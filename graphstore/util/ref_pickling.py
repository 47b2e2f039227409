"""Pickling a callable with some of what it holds sent beside it, as task arguments.

The libraries that ship other code's work as tasks (Dask graphs, joblib batches) pickle
a whole task or batch, inside which sit large arrays and refs. Sent inside the bytes, an
array would be copied into every task that holds it, and a ref would arrive unresolved.
``dumps_with_refs`` swaps each such object for a placeholder (a pickle persistent id)
and returns the refs to pass as the task's arguments; in the task, graphstore hands over
their values (read from the store, zero-copy), and ``loads_with_values`` puts them back
in place.
"""
from __future__ import annotations

import io
import pickle
from typing import IO, Any, Callable, Optional, Sequence

import cloudpickle

from graphstore.core.object_ref import ObjectRef

__all__ = ["dumps_with_refs", "loads_with_values"]


def dumps_with_refs(obj: Any, as_ref: Callable[[Any], Optional[ObjectRef[Any]]]
                    ) -> tuple[bytes, list[ObjectRef[Any]]]:
    """Pickle ``obj`` with cloudpickle; each object inside for which ``as_ref`` returns a
    ref is left out, replaced by that ref's position in the returned list (a ref given
    for several objects is listed once)."""
    buffer = io.BytesIO()
    pickler = _RefPickler(buffer, as_ref)
    pickler.dump(obj)
    return buffer.getvalue(), pickler.refs


def loads_with_values(payload: bytes, values: Sequence[Any]) -> Any:
    """Unpickle what ``dumps_with_refs`` made, with ``values[i]`` where its ``i``-th ref
    was."""
    return _ValueUnpickler(io.BytesIO(payload), values).load()


class _RefPickler(cloudpickle.Pickler):  # type: ignore[misc]  # cloudpickle has no types
    def __init__(self, file: IO[bytes],
                 as_ref: Callable[[Any], Optional[ObjectRef[Any]]]) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.refs: list[ObjectRef[Any]] = []
        self._positions: dict[ObjectRef[Any], int] = {}
        self._as_ref = as_ref

    def persistent_id(self, obj: Any) -> int | None:
        ref = self._as_ref(obj)
        if ref is None:
            return None
        position = self._positions.get(ref)
        if position is None:
            position = self._positions[ref] = len(self.refs)
            self.refs.append(ref)
        return position


class _ValueUnpickler(pickle.Unpickler):
    def __init__(self, file: IO[bytes], values: Sequence[Any]) -> None:
        super().__init__(file)
        self._values = values

    def persistent_load(self, position: Any) -> Any:
        return self._values[position]
