"""Packing a call's arguments into a task, and unpacking them in the worker.

Top-level ``ObjectRef`` arguments (positional and keyword) are dependencies: they are
replaced by ``_Dep`` placeholders, the task waits for them, and the worker puts their values
back. Refs nested inside other arguments stay refs (held by the task, not resolved), as in
Ray.
"""
from __future__ import annotations

import pickle

from graphstore.exceptions import SerializationError
from graphstore.core.object_ref import ObjectRef
from graphstore.core.protocol import Frame, wire_payload
from graphstore.core.serialization import dumps, loads


class _Dep:
    """Placeholder for the value of the task's ``index``-th dependency."""
    __slots__ = ("index",)

    def __init__(self, index: int):
        self.index = index

    def __reduce__(self):
        return (_Dep, (self.index,))


#: Argument types that hold no ref, no out-of-band buffer and no code: pickled as they
#: are, without the general path's ref bookkeeping and fallbacks (a task of a few
#: numbers or strings, the most common call, costs a third less to submit).
_PLAIN = frozenset({int, float, str, bool, type(None)})


def pack_args(function_name: str, args: tuple, kwargs: dict, split_bytes: int):
    """Return ``(payload or None, dependency ids, nested ref ids)``."""
    if not args and not kwargs:
        return None, [], []
    plain = _PLAIN
    if all(type(v) in plain for v in args) and (
            not kwargs or all(type(v) in plain for v in kwargs.values())):
        data = pickle.dumps((list(args), kwargs), protocol=5)
        return [data if len(data) < split_bytes else Frame(data)], [], []
    deps: list[bytes] = []
    packed_args = []
    for value in args:
        if type(value) is ObjectRef:
            deps.append(value._id)
            packed_args.append(_Dep(len(deps) - 1))
        else:
            packed_args.append(value)
    packed_kwargs = {}
    for key, value in kwargs.items():
        if type(value) is ObjectRef:
            deps.append(value._id)
            packed_kwargs[key] = _Dep(len(deps) - 1)
        else:
            packed_kwargs[key] = value
    try:
        buffers, nested = dumps((packed_args, packed_kwargs),
                                what=f"the arguments of {function_name}")
    except SerializationError:
        _raise_for_culprit(function_name, args, kwargs)
        raise
    return wire_payload(buffers, split_bytes), deps, nested


def _raise_for_culprit(function_name: str, args: tuple, kwargs: dict) -> None:
    """Name the argument that cannot be pickled."""
    named = [(f"argument {i}", v) for i, v in enumerate(args)]
    named += [(f"keyword argument {k!r}", v) for k, v in kwargs.items()]
    for label, value in named:
        try:
            dumps(value)
        except SerializationError as exc:
            raise SerializationError(
                f"{label} of {function_name} cannot be serialized: value of type "
                f"{type(value).__module__}.{type(value).__qualname__} "
                f"({exc.__cause__ or exc})") from exc.__cause__


def unpack_args(payload, dep_values: list) -> tuple[list, dict]:
    """Rebuild ``(args, kwargs)`` with dependency values in place of placeholders."""
    if payload is None:
        return [], {}
    args, kwargs = loads(payload)
    if dep_values:
        for i, value in enumerate(args):
            if type(value) is _Dep:
                args[i] = dep_values[value.index]
        for key, value in kwargs.items():
            if type(value) is _Dep:
                kwargs[key] = dep_values[value.index]
    return args, kwargs
