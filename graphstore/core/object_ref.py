"""ObjectRef: the name of an immutable object in the cluster, and object ids.

A ref is a 16-byte id. Creating and dropping refs is reported to the process's runtime
(through ``ref_tracker``) so the scheduler can count references across processes; the
tracker is a no-op until a runtime installs itself (``install_tracker``). Waiting on a ref
(``future()``, ``await ref``) asks the installed tracker too, so this module needs nothing
above the foundation.
"""
from __future__ import annotations

import itertools
import os
import threading
from concurrent.futures import Future
from typing import Any, Generator, Generic, Protocol, TypeVar


from graphstore.exceptions import GraphstoreError

#: The type of the object a ref names (``ObjectRef[int]``). Covariant: an object is
#: immutable, so a ref to an ``int`` is also a ref to an ``int | str``.
T_co = TypeVar("T_co", covariant=True)

_id_prefix = os.urandom(8)
_id_counter = itertools.count(1)


def new_id() -> bytes:
    """A fresh cluster-unique id: a random per-process prefix and a counter."""
    return _id_prefix + next(_id_counter).to_bytes(8, "big")


class RefTracker(Protocol):
    """What a process's runtime offers this module: hearing of refs made and dropped,
    and a future for a ref's value."""

    def on_ref_created(self, object_id: bytes) -> None: ...

    def on_ref_deleted(self, object_id: bytes) -> None: ...

    def future(self, ref: "ObjectRef[Any]") -> "Future[Any]": ...


class _NullTracker:
    def on_ref_created(self, object_id: bytes) -> None:
        pass

    def on_ref_deleted(self, object_id: bytes) -> None:
        pass

    def future(self, ref: "ObjectRef[Any]") -> "Future[Any]":
        raise GraphstoreError("graphstore is not initialized; call graphstore.init()")


#: The process's runtime replaces this to learn about every ref created and dropped.
ref_tracker: RefTracker = _NullTracker()


def install_tracker(tracker: RefTracker) -> None:
    """Have ``tracker`` (the process's runtime) hear of every ref created and dropped,
    and serve ``ObjectRef.future``."""
    global ref_tracker
    ref_tracker = tracker


def uninstall_tracker(tracker: RefTracker) -> None:
    """Stop reporting to ``tracker`` if it is still the installed one."""
    global ref_tracker
    if ref_tracker is tracker:
        ref_tracker = _NullTracker()

#: While serializing, ``serialization`` sets ``contained`` here to collect nested refs.
serialization_context = threading.local()


class ObjectRef(Generic[T_co]):
    """A reference to an immutable object in graphstore's object store.

    Its repr is ``ObjectRef(<hex id>)``. Hashable and equal by id; pickling keeps it a ref,
    also inside other objects, so refs can be passed to tasks and stored in objects.
    ``await ref`` and ``ref.future()`` wait for the object without blocking an event loop.
    The object lives while some process, task or object refers to it. In Jupyter it shows
    as a card with its state, size and where it lives. Refs may be shared between threads.

    You get refs from ``put()`` and ``.remote()`` calls; constructing one from an id names
    an existing object and does not create one.

    Args:
        object_id: the object's 16-byte id, or its 32 hex digits.

    Raises:
        ValueError: ``object_id`` is not 16 bytes (32 hex digits).
    """

    __slots__ = ("_id", "__weakref__")

    _id: bytes

    def __init__(self, object_id: bytes | str) -> None:
        if isinstance(object_id, str):
            object_id = bytes.fromhex(object_id)
        if not isinstance(object_id, bytes) or len(object_id) != 16:
            raise ValueError("an ObjectRef id is 16 bytes (32 hex digits)")
        self._id = object_id
        ref_tracker.on_ref_created(object_id)

    @classmethod
    def _new(cls, object_id: bytes) -> "ObjectRef[Any]":
        ref = object.__new__(cls)
        ref._id = object_id
        ref_tracker.on_ref_created(object_id)
        return ref

    def __del__(self) -> None:
        try:
            ref_tracker.on_ref_deleted(self._id)
        except Exception:  # interpreter shutdown
            pass

    @property
    def id(self) -> bytes:
        """The object's id, 16 bytes."""
        return self._id

    def hex(self) -> str:
        """The object's id in hex, as the status page, ``graphstore list objects`` and the task
        graph name it.

        Returns:
            32 hex digits.
        """
        return self._id.hex()

    def __repr__(self) -> str:
        return f"ObjectRef({self._id.hex()})"

    def _repr_html_(self) -> str:
        """A notebook's card: state, size and where the object lives, from one
        ``DescribeObject`` request (``graphstore.core.notebook_views``)."""
        from graphstore import notebook_repr
        from graphstore.core import notebook_views, protocol

        def draw() -> str:
            tracker = ref_tracker
            runtime = None if isinstance(tracker, _NullTracker) else tracker
            answer, problem = notebook_views.ask(runtime,
                                                 protocol.DescribeObject(self._id))
            return notebook_views.object_html(self._id.hex(), answer, problem)
        return notebook_repr.never_raise(draw, self.__repr__)

    def __hash__(self) -> int:
        return hash(self._id)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ObjectRef) and other._id == self._id

    def __reduce__(self) -> tuple[Any, tuple[bytes]]:
        contained = getattr(serialization_context, "contained", None)
        if contained is not None:
            contained.append(self._id)
        else:
            # Pickled out of band (cloudpickle.dumps by the user, a remote function's
            # closure): no one can count the copy, so this process holds the object for
            # as long as it runs, as Ray does.
            ref_tracker.on_ref_created(self._id)
        # A module-level function: cloudpickle pickles it by reference. A classmethod
        # would go by value, with this module's globals (the runtime) in tow.
        return (_ref_from_id, (self._id,))

    def __copy__(self) -> "ObjectRef[T_co]":
        return self          # immutable; and not a pickling, so nothing to pin

    def __deepcopy__(self, memo: object) -> "ObjectRef[T_co]":
        return self

    def future(self) -> "Future[T_co]":
        """A future of the object's value, for code built on ``concurrent.futures`` or asyncio.

        Returns:
            A ``concurrent.futures.Future`` that completes with the object's value, or with the
            error ``get`` would raise.
        """
        return ref_tracker.future(self)

    def __await__(self) -> Generator[Any, None, T_co]:
        import asyncio
        return asyncio.wrap_future(self.future()).__await__()


def _ref_from_id(object_id: bytes) -> ObjectRef[Any]:
    """Unpickle a ref: the process now holds it too (``ObjectRef._new``, inlined: every
    nested ref unpickled passes here)."""
    ref = object.__new__(ObjectRef)
    ref._id = object_id
    ref_tracker.on_ref_created(object_id)
    return ref
