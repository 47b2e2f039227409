"""Generator tasks in the scheduler's state machine: values yielded one at a time. No I/O.

The process running a generator stores each yielded value as an object of its own (a
``put``, held by that process) and reports it (``GeneratorItem``); an error raised in the
generator is reported the same way, and made here. For a streaming generator the object
is then held for the caller and announced to it (``GeneratorItemReady``) before the
producer's own ref goes, so it is never unreferenced in between; for
``num_returns="dynamic"`` the task's result will contain it. A task retried after some
yields yields them again: the stream remembers how many it handed out, and repeats are
dropped (the producer's ref was their only hold).

How many values there are is unknown at submission: the task's one return (the
*generator object*) becomes ready when it ends, with the count (streaming) or the refs
(dynamic).

Mixed into ``SchedulerState`` (see ``state.py``), whose objects and outbox it shares.
"""
from __future__ import annotations

from graphstore.core import protocol as msg
from graphstore.scheduler.instructions import Send
from graphstore.scheduler.entities import ERROR, READY, ObjectState, TaskState


class GeneratorsMixin:
    """Generator handlers of ``SchedulerState``."""

    def _init_generators(self) -> None:
        #: generator id -> [values handed out so far, the caller holding them].
        self.streams: dict[bytes, list] = {}

    def generator_item(self, peer_id: bytes, m: msg.GeneratorItem) -> None:
        generator = self.objects.get(m.generator_id)
        producer = generator.producer if generator is not None else None
        if isinstance(producer, TaskState):
            if producer.worker is None or producer.worker.id != peer_id:
                return                 # a worker given up on: its refs free what it put
            holder = producer.submitter
        elif peer_id in self.actor_processes:
            holder = m.holder          # the call's submission may not be here yet
        else:
            return
        if m.error is not None:
            if m.object_id in self.objects:
                return
            obj = ObjectState(m.object_id, ERROR)
            obj.error = m.error
            self.objects[obj.id] = obj
            self._hold(peer_id, obj)   # the sender's ref, as for a put
            if self.parked_wants:
                self._unpark(obj)
        else:
            obj = self.objects.get(m.object_id)
            if obj is None or obj.state not in (READY, ERROR):
                return
        if not m.streaming:
            return
        stream = self.streams.get(m.generator_id)
        if stream is None:
            stream = self.streams[m.generator_id] = [0, holder]
        if m.index < stream[0]:
            return                     # yielded again by a retry: handed out already
        stream[0] = m.index + 1
        if holder not in self.peer_holds:
            return                     # the caller is gone
        if generator is not None and holder not in generator.holders:
            return                     # the caller dropped the generator
        self._hold(holder, obj)
        self.outbox.append(Send(holder, msg.GeneratorItemReady(
            m.generator_id, m.index, obj.id, obj.payload, obj.error,
            self.locations_of(obj))))

    def _stream_freed(self, generator_id: bytes) -> None:
        """The generator object is freed: nothing more is handed out for it."""
        self.streams.pop(generator_id, None)

    def _streams_of_gone_peer(self, peer_id: bytes) -> None:
        for generator_id in [g for g, s in self.streams.items() if s[1] == peer_id]:
            del self.streams[generator_id]

    def _partial_results(self, task: TaskState, worker, partial: list,
                         retrying: bool) -> None:
        """Results a task made before it failed (a generator with ``num_returns=N`` that
        raised after some yields): ready now, unless the task runs again, which makes
        them anew (their stored copies are dropped)."""
        if retrying:
            stored = [[entry[0], True] for entry in partial if entry[1] is None]
            if stored:
                self.outbox.append(Send(worker.id, msg.FreeObjects(stored)))
            return
        self._apply_results(worker, partial, task.name)
