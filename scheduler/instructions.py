"""What the scheduler's state machine asks the server to do: instructions, typed.

Handlers in ``state.py`` (and its mixins) never touch a socket. Everything that must
leave the process is appended to ``SchedulerState.outbox`` as an instruction, and
``server.py`` carries the list out after each batch of events, in order, deciding
nothing of its own, as Dask's ``worker_state_machine.py`` returns ``Instruction`` objects
to its ``Worker``. Replies to requests are the return values of the handlers; the
connection sends them (``graphstore.core.comm``).

An instruction is a small immutable ``NamedTuple``: one is made per message sent, which
costs about as much as the ``(peer, message)`` pair it replaces (measured:
docs/benchmarks.md).
"""
from __future__ import annotations

from typing import NamedTuple, Union


class Send(NamedTuple):
    """Send ``message`` (a ``graphstore.core.protocol`` message) to peer ``peer``; dropped
    if that peer is gone by the time it is carried out."""
    peer: bytes
    message: object


#: Every kind of instruction the server carries out.
Instruction = Union[Send]
