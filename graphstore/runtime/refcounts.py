"""The ordered channel from a process's threads to the scheduler, and its ref counts.

User threads append ref events (a ref created, a ref dropped) and messages to one
channel; the loop thread drains it into scheduler-bound messages. One channel for both
keeps causality: a ``PutObject`` always reaches the scheduler before the ``DecRef`` of the
same id, and a task's result before the release of refs it contains. Draining also keeps
this process's reference counts: the scheduler hears ``IncRef`` when the process starts
holding an id and ``DecRef`` when its last ref goes, consecutive ids batched into one
message, never one per ref.

Pure: no sockets, no loop, no clock. ``drain`` returns what to send.

Thread-safety: ``ref_created``, ``ref_deleted``, ``append`` (each one ``deque.append``)
and ``ask_again`` (one set operation) may be called from any thread; ``drain`` only from
the one thread that owns the channel (the process's event loop), and the counts are read
there too.
"""
from __future__ import annotations

from collections import deque
from typing import Callable, NamedTuple

from graphstore.core import protocol as msg

_INC, _DEC = 0, 1


class AskAgain(NamedTuple):
    """A channel item: ask the scheduler for these ids even if they were asked for
    before, or were to come straight from an actor (an answer may have been lost, or the
    actor's process is gone). It is a ``WantObjects`` that goes out in any case; in order
    with the other items, it wins over the ``ActorCallSubmitted`` of the same ids when
    that is still queued ahead of it."""
    ids: list


class RefChannel:
    """Ref events and messages in, scheduler messages out, in the order they came.

    ``on_released(object_id)`` is called (by ``drain``) when the process's last ref to an
    id is gone. Items whose type is in ``local_types`` are not for the scheduler: ``drain``
    hands them back apart, in order, for the process to act on itself.
    """

    def __init__(self, on_released: Callable[[bytes], None] = lambda object_id: None,
                 local_types: tuple[type, ...] = ()):
        self._items: deque = deque()
        #: ``append(item)``: queue a message (any thread); the deque's own method, since
        #: every message of the process passes here.
        self.append = self._items.append
        self._on_released = on_released
        self._local_types = frozenset(local_types)
        #: Live refs of this process, per id.
        self.counts: dict[bytes, int] = {}
        #: Ids the scheduler counts this process as holding.
        self.held: set[bytes] = set()
        #: Ids already asked for (``WantObjects``) and not arrived yet: asked once.
        self.requested: set[bytes] = set()

    # -- any thread ---------------------------------------------------------------------
    def ref_created(self, object_id: bytes) -> None:
        self._items.append((_INC, object_id))

    def ref_deleted(self, object_id: bytes) -> None:
        self._items.append((_DEC, object_id))

    def ask_again(self, object_ids) -> None:
        """Forget that these ids were asked for, so the next ``WantObjects`` of them is
        sent: they arrived, or an answer may have been lost. One set operation, safe from
        any thread (``drain`` reads the set between such operations)."""
        self.requested.difference_update(object_ids)

    # -- the owning thread --------------------------------------------------------------
    def drain(self) -> tuple[list, list]:
        """Everything appended so far as ``(messages for the scheduler, local items)``."""
        items = self._items
        counts = self.counts
        held = self.held
        local_types = self._local_types
        out: list = []
        local: list = []
        incs: list[bytes] = []
        decs: list[bytes] = []
        while items:
            item = items.popleft()
            if type(item) is tuple:
                kind, object_id = item
                if kind == _INC:
                    n = counts.get(object_id, 0)
                    counts[object_id] = n + 1
                    if n == 0 and object_id not in held:
                        held.add(object_id)
                        if decs:
                            out.append(msg.DecRef(decs))
                            decs = []
                        incs.append(object_id)
                else:
                    n = counts.get(object_id, 0) - 1
                    if n > 0:
                        counts[object_id] = n
                        continue
                    counts.pop(object_id, None)
                    self._on_released(object_id)
                    if object_id in held:
                        held.discard(object_id)
                        if incs:
                            out.append(msg.IncRef(incs))
                            incs = []
                        decs.append(object_id)
                continue
            if incs:
                out.append(msg.IncRef(incs))
                incs = []
            if decs:
                out.append(msg.DecRef(decs))
                decs = []
            cls = type(item)
            if cls in local_types:
                local.append(item)
                continue
            if cls is msg.SubmitTask:
                held.update(item.returns)
            elif cls is msg.ActorCallSubmitted:
                held.update(item.returns)
                # The actor sends the results here itself: never ask the scheduler.
                self.requested.update(item.returns)
            elif cls is msg.CreateActor:
                held.add(item.creation_id)
            elif cls is msg.PutObject:
                held.add(item.object_id)
            elif cls is msg.GeneratorItem and item.error is not None:
                held.add(item.object_id)    # the scheduler makes it, held by us
            elif cls is msg.WantObjects:
                ids = [i for i in item.ids if i not in self.requested]
                if not ids:
                    continue
                self.requested.update(ids)
                item = msg.WantObjects(ids)
            elif cls is AskAgain:
                self.requested.update(item.ids)
                item = msg.WantObjects(list(item.ids))
            out.append(item)
        if incs:
            out.append(msg.IncRef(incs))
        if decs:
            out.append(msg.DecRef(decs))
        return out, local
