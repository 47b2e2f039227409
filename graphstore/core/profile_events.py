"""What a process did and when: the records behind the timeline and the task stream.

Workers, task processes and actor processes record one event per span of work (a task
run, an argument fetch, a transfer between hosts, a spill, a restore, an actor call) and
send them to the scheduler with the message that ends that work or in their heartbeat,
as Dask workers send ``startstops`` with ``task-finished``. The scheduler keeps the recent
ones (``scheduler/task_stream.py``); the status page draws them and
``graphstore.timeline()`` writes them as a Chrome trace.
"""
from __future__ import annotations

import math
from typing import Literal, NamedTuple

EventKind = Literal["task", "fetch", "transfer", "spill", "restore", "actor-call"]

#: Every kind, in the order a legend lists them.
KINDS: tuple[str, ...] = ("task", "fetch", "transfer", "spill", "restore", "actor-call")
_KIND_SET = frozenset(KINDS)


class ProfileEvent(NamedTuple):
    """One span of work. On the wire it is a plain list in this field order."""

    kind: str                 # one of KINDS
    name: str                 # function or method name; for data movement what moved
    start: float              # wall clock (time.time()) of the recording process
    stop: float
    pid: int                  # process that did the work: one row of the timeline
    task_id: bytes = b""      # task or actor call the span belongs to (b"": none)
    nbytes: int = 0           # bytes moved (fetch, transfer, spill, restore)
    peer: str = ""            # the other end of a transfer or fetch, or the spill URL

    @classmethod
    def from_wire(cls, item) -> "ProfileEvent":
        """Check a list received from a peer and build the event; ValueError names the
        problem (a bad event never reaches the scheduler's state)."""
        if not isinstance(item, (list, tuple)) or not 5 <= len(item) <= len(cls._fields):
            raise ValueError(f"a profile event is a list of 5 to {len(cls._fields)} "
                             f"fields, got {type(item).__name__} {item!r:.100}")
        event = cls(*item)
        if event.kind not in KINDS:
            raise ValueError(f"unknown profile event kind {event.kind!r}")
        if not isinstance(event.name, str) or not isinstance(event.peer, str):
            raise ValueError("profile event name and peer must be text")
        for field in ("start", "stop"):
            value = getattr(event, field)
            if type(value) not in (int, float) or not math.isfinite(value):
                raise ValueError(f"profile event {field} must be a number, and finite, "
                                 f"got {value!r}")
        if event.stop < event.start:
            raise ValueError(f"profile event stops ({event.stop}) before it starts "
                             f"({event.start})")
        if type(event.pid) is not int or type(event.nbytes) is not int or event.nbytes < 0:
            raise ValueError("profile event pid and nbytes must be non-negative integers")
        if not isinstance(event.task_id, bytes):
            raise ValueError("profile event task_id must be bytes")
        return event


def checked_fields(item) -> tuple:
    """The fields of an event received from a peer, checked as ``from_wire`` checks them,
    as a plain tuple: what the scheduler keeps, one per task on its hot path, so the
    common case (a whole event as a worker sends it) is one expression and no object
    the garbage collector must keep tracking. ValueError names the problem."""
    if (type(item) is list and len(item) == 8 and type(item[0]) is str
            and item[0] in _KIND_SET and type(item[1]) is str
            and type(item[2]) is float and type(item[3]) is float
            and item[2] <= item[3] and item[3] - item[2] < math.inf
            and type(item[4]) is int and type(item[5]) is bytes
            and type(item[6]) is int and item[6] >= 0 and type(item[7]) is str):
        return tuple(item)
    return tuple(ProfileEvent.from_wire(item))
