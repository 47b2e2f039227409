"""The caller's side of actor method calls: one direct connection per actor.

A call goes from the caller's loop thread straight to the actor's process, in the order
the caller made its calls (one TCP connection keeps it). Until the actor is alive (or
after its process died) calls wait here, in order; the scheduler tells when the actor is
alive again (``GetActor``) or dead. Calls in flight when the process died are sent again
to the restarted actor while they have retries left (``max_task_retries``), else fail
with ``ActorDiedError`` -- the same rule the scheduler applies to its copy of the call.
Once the actor is dead, the outcome of a call that reached its process is the scheduler's
to tell (the call may have finished before its reply was lost): those results are asked
from it. A call cancelled while it still waits here (``CancelQueuedCall``) is never sent.
A call that raised one of its ``retry_exceptions`` runs again inside the actor, which
says so (``ActorCallRetrying``): both kinds of retry count against the same budget.

The loop thread resolves actors and reads results; a call to an actor that is alive, with
nothing of the same caller ahead of it, is written to the socket by the calling thread
itself (``send_now``): no hop to the loop on the way out (over TLS the write itself is
handed to the loop, in order: see ``Comm.write_from_thread``). A lock guards the links.
"""
from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque

import msgspec

from graphstore.core import protocol as msg
from graphstore.core.comm import connect
from graphstore.exceptions import ActorDiedError, ConnectionLostError, TaskCancelledError
from graphstore.core.serialization import error_payload

logger = logging.getLogger("graphstore.actor")


class ActorSend:
    """A channel item: send ``call`` to actor ``actor_id`` (made by a user thread)."""
    __slots__ = ("actor_id", "call", "retries")

    def __init__(self, actor_id: bytes, call: msg.ActorCall, retries: int):
        self.actor_id = actor_id
        self.call = call
        self.retries = retries


class _Link:
    __slots__ = ("actor_id", "state", "comm", "incarnation", "pending", "sent", "lost",
                 "error", "queued")

    def __init__(self, actor_id: bytes):
        self.actor_id = actor_id
        self.state = "unresolved"      # -> resolving -> alive -> (unresolved ...) | dead
        self.comm = None
        self.incarnation = 0
        #: Calls not sent yet, in order: [call, retries left, returns still expected].
        self.pending: deque[list] = deque()
        #: Calls sent to the current process and not answered in full, in order.
        self.sent: dict[bytes, list] = {}
        #: Calls in flight when the process died: re-sent or failed once the scheduler
        #: says whether the actor restarted or died (and why).
        self.lost: list[list] = []
        self.error: list | None = None
        #: Calls of this link still in the runtime's channel (the loop sends them): a
        #: later call may not overtake them by ``send_now``.
        self.queued = 0


class ActorClient:
    def __init__(self, runtime):
        self.runtime = runtime
        self.links: dict[bytes, _Link] = {}
        #: Return id -> call id, for calls in flight.
        self._call_of: dict[bytes, bytes] = {}
        self._lock = threading.RLock()

    def send_now(self, actor_id: bytes, call: msg.ActorCall, retries: int) -> bool:
        """Any thread: write the call to the actor at once if nothing has to go first;
        False means: queue an ``ActorSend`` on the runtime's channel instead."""
        with self._lock:
            link = self.links.get(actor_id)
            if link is None:
                link = self.links[actor_id] = _Link(actor_id)
            if (link.state == "alive" and not link.pending and not link.queued
                    and link.comm is not None and not link.comm.closed):
                self._send(link, [call, retries, len(call.returns)])
                return True
            link.queued += 1
            return False

    def dispatch(self, item: ActorSend) -> None:
        with self._lock:
            link = self.links.get(item.actor_id)
            if link is None:
                link = self.links[item.actor_id] = _Link(item.actor_id)
            link.queued = max(0, link.queued - 1)
            entry = [item.call, item.retries, len(item.call.returns)]
            if link.state == "dead":
                self._fail(entry, link.error)
            elif link.state == "alive" and not link.pending:
                self._send(link, entry)
            else:
                link.pending.append(entry)
                if link.state == "unresolved":
                    self._resolve(link)

    def _send(self, link: _Link, entry: list) -> None:
        """(Lock held.) A write that fails leaves the call in ``sent``: the loop sees the
        connection close and retries or fails it like any call in flight."""
        call = entry[0]
        if call.retry is not None and call.retry[0] != entry[1]:   # sent again: fewer
            call = entry[0] = msgspec.structs.replace(call,        # retries are left
                retry=[entry[1], call.retry[1]] if entry[1] > 0 else None)
        link.sent[call.call_id] = entry
        for object_id in call.returns:
            self._call_of[object_id] = call.call_id
        try:
            link.comm.write_from_thread([call])
        except Exception as exc:
            logger.debug("writing a call to actor %s failed: %s", link.actor_id.hex(), exc)

    def _resolve(self, link: _Link) -> None:
        link.state = "resolving"
        asyncio.ensure_future(self._find(link))

    async def _find(self, link: _Link) -> None:
        runtime = self.runtime
        try:
            status = await runtime.comm.request(msg.GetActor(link.actor_id,
                                                             link.incarnation))
        except Exception as exc:
            self._dead(link, error_payload(ConnectionLostError(
                f"could not reach the scheduler to find the actor: {exc}")), ask=False)
            return
        if status[0] == "dead":
            self._dead(link, status[1])
            return
        _, address, incarnation = status
        try:
            comm = await connect(address, runtime.comm_token, tls=runtime.tls,
                                 split_bytes=runtime.split_bytes,
                                 timeout=runtime.config.handshake_timeout)
        except Exception as exc:   # it died meanwhile: wait for its next incarnation
            logger.debug("could not connect to actor at %s: %s", address, exc)
            link.incarnation = incarnation
            self._resolve(link)
            return
        if runtime.closed:          # shut down while connecting
            comm.abort()
            return
        comm.handler = lambda c, m: self._on_result(link, m)
        comm.on_close.append(lambda c: self._lost(link, c))
        asyncio.ensure_future(comm.read_loop())
        with self._lock:
            link.comm = comm
            link.incarnation = incarnation
            link.state = "alive"
            if link.lost:
                self._restarted(link)
            pending, link.pending = link.pending, deque()
            for entry in pending:
                self._send(link, entry)
        if comm.closed:     # closed before it was the link's: ``_lost`` skipped it
            self._lost(link, comm)

    def _on_result(self, link: _Link, m) -> None:
        if type(m) is not msg.ObjectReady:
            if type(m) is not msg.ActorCallRetrying:
                raise ValueError(f"unexpected message {type(m).__name__} from an actor")
            with self._lock:           # the actor runs it again, in place
                entry = link.sent.get(m.call_id)
                if entry is not None and entry[1] > 0:
                    entry[1] -= 1
            return
        with self._lock:
            call_id = self._call_of.pop(m.object_id, None)
            entry = link.sent.get(call_id) if call_id is not None else None
            if entry is not None:
                entry[2] -= 1
                if entry[2] <= 0:
                    del link.sent[call_id]
        self.runtime.handle(m)

    def _lost(self, link: _Link, comm) -> None:
        """The actor's process closed the connection: it died (or was killed)."""
        with self._lock:
            if comm is not link.comm or self.runtime.closed:
                return
            link.comm = None
            link.lost.extend(link.sent.values())
            link.sent.clear()
            link.state = "unresolved"
            self._resolve(link)

    def _restarted(self, link: _Link) -> None:
        """Calls lost with the old process: again while they have retries, else fail."""
        retry = []
        for entry in link.lost:
            if entry[1] > 0:
                entry[1] -= 1
                retry.append(entry)
            else:
                self._fail(entry, error_payload(ActorDiedError(
                    f"the actor's process died while running {entry[0].name}, and the call "
                    f"has no retries left (raise max_task_retries to retry it)")),
                    report=True)
        link.lost = []
        link.pending = deque(retry + list(link.pending))

    def _dead(self, link: _Link, error: list, ask: bool = True) -> None:
        """The actor is dead: calls that never left fail with ``error``; those that
        reached its process get their outcome from the scheduler (``ask``)."""
        with self._lock:
            link.state = "dead"
            link.error = error
            reached = link.lost + list(link.sent.values())
            for entry in reached if not ask else ():
                self._fail(entry, error)
            for entry in link.pending:
                self._fail(entry, error)
            link.lost = []
            link.sent.clear()
            link.pending.clear()
            comm, link.comm = link.comm, None
        if ask and reached:
            ids = [object_id for entry in reached for object_id in entry[0].returns]
            for object_id in ids:
                self._call_of.pop(object_id, None)
            self.runtime.ask_scheduler(ids)
        if comm is not None:
            comm.abort()

    def cancel_queued(self, call_id: bytes) -> None:
        """Loop thread (``CancelQueuedCall``): a call cancelled while no process of its
        actor runs fails now and is never sent, if it still waits here."""
        with self._lock:
            for link in self.links.values():
                for queue in (link.pending, link.lost):
                    for entry in queue:
                        if entry[0].call_id == call_id:
                            queue.remove(entry)
                            self._fail(entry, error_payload(TaskCancelledError(
                                f"{entry[0].name} was cancelled before it started")),
                                report=True)
                            return

    def _fail(self, entry: list, error: list, report: bool = False) -> None:
        """Fail a call here; ``report``: tell the scheduler too, which keeps calls of a
        restarting actor pending until their caller decides."""
        call = entry[0]
        for object_id in call.returns:
            self._call_of.pop(object_id, None)
            self.runtime.object_arrived(object_id, None, error)
        if report and not self.runtime.comm.closed:
            self.runtime.comm.send(msg.ActorCallDone(
                call.call_id, b"", [[r, None, [], 0, None, error] for r in call.returns],
                0.0, "the actor died while running it"))

    def close(self) -> None:
        with self._lock:
            comms = [link.comm for link in self.links.values() if link.comm is not None]
            self.links.clear()
        for comm in comms:
            comm.abort()
