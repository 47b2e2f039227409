"""The per-process runtime behind ``put``/``get``/``wait`` and ``.remote()``.

Drivers, workers and actor processes each run one ``Runtime``, made with their role
(``roles.py``). It is the composition of parts with one job each:

* ``refcounts.RefChannel``: the ordered channel of ref events and messages that user
  threads append to and the loop thread drains into scheduler messages (pure);
* ``waiting.Waiter``: a user thread blocked until objects arrive;
* ``object_io.ObjectIO``: reading and writing large objects (shared memory, peers);
* ``submission.Submitter``: tasks, actors and actor calls;
* ``actor_client.ActorClient``: the direct connections to actors;
* ``streams.StreamTable``: the streaming generators this process iterates.

What is left here is the glue: waking the loop once per burst of messages, gathering pure
bookkeeping for a moment before sending it, receiving objects, and the user calls.

Small objects this process created or fetched are kept here, serialized, while it holds a
ref, so a second ``get`` costs no round trip.

Thread-safety: every public method may be called from any user thread unless its
docstring says "loop thread"; those run on the process's event loop.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import numbers
import threading
from typing import Any, Sequence

from graphstore.core import protocol as msg
from graphstore.core.config import Config
from graphstore.core.gc_policy import collector_paused
from graphstore.core.loop_thread import call_on_loop
from graphstore.core.node import default_node_id
from graphstore.core.object_ref import ObjectRef, new_id
from graphstore.core.protocol import wire_payload
from graphstore.core.serialization import dumps, error_payload, loads, nbytes
from graphstore.core.span_recorder import SpanRecorder
from graphstore.exceptions import (ConnectionLostError, GetTimeoutError, GraphstoreError,
                                   TaskCancelledError)
from graphstore.runtime import context
from graphstore.runtime.actor_client import ActorClient, ActorSend
from graphstore.runtime.object_io import ObjectIO
from graphstore.runtime.output import OutputRenderer
from graphstore.runtime.refcounts import AskAgain, RefChannel
from graphstore.runtime.roles import DriverRole, Role, WorkerRole
from graphstore.runtime.streams import ObjectRefGenerator, StreamTable, wait_with_generators
from graphstore.runtime.submission import Submitter
from graphstore.runtime.waiting import Waiter
from graphstore.runtime.runtime_envs import RuntimeEnvResolver

#: Messages that only keep the scheduler's books (no one waits on them): a process
#: gathers them for up to _DEFER_SECONDS before sending. Anything else flushes them first.
#: A ``PutObject`` of a small (inline) object too: only refs passed on tell others of
#: the object, and those go out after it (a task's submission flushes it; an actor that
#: asks for an object not known yet is answered when it is, ``parked_wants``); a burst
#: of small puts wakes the loop thread once per window instead of once or twice per put.
#: (The scheduler's counts, ``cluster_status()``, may lag a put by that window.)
_DEFERRABLE = frozenset({msg.IncRef, msg.DecRef, msg.ActorCallSubmitted, msg.PutObject,
                         msg.ActorCallDone})
_DEFER_SECONDS = 0.002
#: Seconds a get waits for actor results to come straight from the actor before also
#: asking the scheduler for them.
_DIRECT_PATIENCE = 2.0
#: A get of at least this many refs builds its values with the cyclic collector paused
#: (``gc_policy.collector_paused``).
_PAUSE_GC_FROM = 256
#: Spans outside tasks (spills, restores) a worker keeps between two heartbeats.
_LOOSE_SPANS = 2000


def _check_timeout(timeout) -> float:
    """A timeout in seconds, checked as Ray checks ``wait``'s."""
    if isinstance(timeout, bool) or not isinstance(timeout, numbers.Real):
        raise TypeError(f"timeout must be a number of seconds or None, not "
                        f"{type(timeout).__name__}")
    if timeout < 0:
        raise ValueError(f"The 'timeout' argument must be nonnegative. Received {timeout}")
    return timeout


def _get_timeout(timeout) -> float | None:
    """``get``'s timeout: as ``wait``'s, but -1 means no limit, as in Ray."""
    if timeout == -1 and not isinstance(timeout, bool):
        return None
    return _check_timeout(timeout)


class Runtime:
    """Owns this process's view of the cluster. Thread-safe for user threads."""

    def __init__(self, loop, comm, config: Config, peer_id: bytes, role: Role, *,
                 node_id: str | None = None, token: bytes = b"", tls=None):
        self.loop = loop
        self.comm = comm
        self.config = config
        self.peer_id = peer_id
        self.role = role
        self.cluster_info: dict = {}
        self.comm_token = token
        #: The process's ``TLSConfig`` (None: no TLS), for its connections to peers.
        self.tls = tls
        self.node_id = node_id or default_node_id()
        #: Bytes above which a buffer travels as a frame of its own.
        self.split_bytes = config.frame_split_bytes
        self.output_enabled = config.log_to_driver
        #: Prints the output of tasks this driver submitted (``msg.Output``).
        self.output = OutputRenderer(schedule=self._call_later)
        self._render_scheduled = False
        self._task_blocked = getattr(role, "task_blocked", None)
        self._task_unblocked = getattr(role, "task_unblocked", None)
        #: Environment variables the tasks and actors this process submits inherit (a
        #: job's ``runtime_env``, a task process's or an actor's own).
        self.inherited_env_vars: dict = {}
        #: The ``runtime_env`` packages of this process's calls: uploaded once, merged
        #: over the inherited ones (``runtime_envs.py``).
        self.runtime_envs = RuntimeEnvResolver(self)
        #: What ``get_runtime_context()`` reports of this process: "job_id", "namespace",
        #: "actor_id", "worker_id", "gpu_ids", "resources", "restarts" (what applies).
        self.context: dict = {}
        self._channel = RefChannel(self._released, local_types=(ActorSend,))
        self.on_ref_created = self._channel.ref_created
        self._wake_pending = False
        self._drain_timed = False
        #: Scheduler-bound bookkeeping gathered for up to _DEFER_SECONDS (loop thread).
        self._deferred: list = []
        self._deferred_timer = None
        #: Results of actor calls this process made: the actor sends them here.
        self._direct: set[bytes] = set()
        # Shared, guarded by _lock:
        self._lock = threading.Lock()
        self._local: dict[bytes, tuple] = {}
        self._waiters: dict[bytes, list[Waiter]] = {}
        #: Thread ident -> the waiter it is blocked on (``cancel_wait``).
        self._blocking: dict[int, Waiter] = {}
        self._closed = False
        self._lost = False
        #: Spans of work done in this process, for the timeline: none in a driver; a
        #: worker keeps those outside tasks for its heartbeat.
        self.spans = SpanRecorder(
            config.record_timeline and not isinstance(role, DriverRole),
            _LOOSE_SPANS if isinstance(role, WorkerRole) else 0)
        self.objects = ObjectIO(self)
        self.submitter = Submitter(self)
        self.actor_client = ActorClient(self)
        self.streams = StreamTable()
        #: The open streams by generator id (read without a call on the arrival path).
        self._open_streams = self.streams.by_id

    @property
    def closed(self) -> bool:
        """True once ``uninstall`` ran: the process is shutting down."""
        return self._closed

    @property
    def mappings(self):
        """The process's cache of shared-memory mappings (``shm.MappingCache``)."""
        return self.objects.mappings

    # -- ref tracking (any thread) ----------------------------------------------------
    def on_ref_created(self, object_id: bytes) -> None:
        # Replaced in __init__ by the channel's own method: every ref made passes here.
        self._channel.ref_created(object_id)

    def on_ref_deleted(self, object_id: bytes) -> None:
        if self._closed:
            return
        self._channel.ref_deleted(object_id)
        self._wake_soon()

    def _released(self, object_id: bytes) -> None:
        """Loop thread, while draining: this process's last ref to an id is gone."""
        self._direct.discard(object_id)   # a late actor result is not kept
        self.objects.forget(object_id)
        self._local.pop(object_id, None)

    def install(self) -> None:
        """Make this the process's runtime: refs report here, the API calls here. A
        driver that shows task output takes part in its terminal streams (see
        ``output.OutputRenderer``)."""
        context.install(self)
        if self.output_enabled and isinstance(self.role, DriverRole):
            self.output.install()

    def uninstall(self) -> None:
        self._closed = True
        context.uninstall(self)
        self.output.close()
        with self._lock:
            waiters = [w for ws in self._waiters.values() for w in ws]
            self._waiters.clear()
        self.objects.close()
        for waiter in waiters:
            waiter.fail(ConnectionLostError("graphstore was shut down"))
        self.streams.abort()

    # -- sending (any thread) ---------------------------------------------------------
    def send_from_any_thread(self, message, urgent: bool = False) -> None:
        """Queue a message in order with this process's ref events (``urgent``: sent
        at once even if its type may wait)."""
        self._channel.append(message)
        if type(message) in _DEFERRABLE and not urgent:
            self._wake_soon()
        elif not self._wake_pending:
            self._wake()

    def _wake(self) -> None:
        self._wake_pending = True
        try:
            self.loop.call_soon_threadsafe(self._drain)
        except RuntimeError:  # loop closed during shutdown
            pass

    def _wake_soon(self) -> None:
        """For bookkeeping nobody waits on: have the channel drained within
        _DEFER_SECONDS, waking the loop at most once per such window (a stream of actor
        calls would otherwise wake it once or twice per call)."""
        if self._wake_pending or self._drain_timed:
            return
        self._drain_timed = True
        try:
            self.loop.call_soon_threadsafe(self.loop.call_later, _DEFER_SECONDS,
                                           self._timed_drain)
        except RuntimeError:  # loop closed during shutdown
            pass

    def _timed_drain(self) -> None:
        self._drain_timed = False
        self._drain()

    def _drain(self) -> None:
        """Loop thread: turn the channel into messages, keeping its order."""
        self._wake_pending = False
        out, actor_sends = self._channel.drain()
        for send in actor_sends:
            self.actor_client.dispatch(send)
        if not out:
            return
        if all(type(m) in _DEFERRABLE for m in out):
            # Bookkeeping only: gather it for a moment, so that a burst of actor calls
            # costs the scheduler one message instead of one or two per call.
            self._deferred.extend(out)
            if self._deferred_timer is None:
                self._deferred_timer = self.loop.call_later(_DEFER_SECONDS,
                                                            self.flush_deferred)
            return
        if self._deferred:
            out = self._deferred + out
            self._deferred = []
        self.comm.send_many(out)

    def flush_deferred(self) -> None:
        """Loop thread: send the gathered bookkeeping now (before anything else)."""
        if self._deferred_timer is not None:
            self._deferred_timer.cancel()
            self._deferred_timer = None
        if self._deferred:
            out, self._deferred = self._deferred, []
            if not self.comm.closed:
                self.comm.send_many(out)

    def flush(self) -> None:
        """Loop thread: send everything queued so far, gathered bookkeeping included."""
        self._drain()
        self.flush_deferred()

    async def close_peers(self) -> None:
        """Close connections to workers' peer servers and to actors (on the loop, before
        it stops), after sending the gathered bookkeeping."""
        self.flush()
        self.actor_client.close()
        self.objects.close_peers()

    # -- receiving (loop thread) ------------------------------------------------------
    def handle(self, m) -> bool:
        """Handle a message meant for the runtime; False if it is not one."""
        cls = type(m)
        if cls is msg.ObjectReady:
            self.object_arrived(m.object_id, m.payload, m.error, m.location)
        elif cls is msg.GeneratorItemReady:
            self._generator_item(m)
        elif cls is msg.Output:
            if self.output_enabled:
                self._print_output(m)
        elif cls is msg.CancelQueuedCall:
            self.actor_client.cancel_queued(m.call_id)
        elif cls is msg.ClusterInfo:
            self.cluster_info = {"num_workers": m.num_workers, "resources": m.resources,
                                 "workers": m.workers}
            self.objects.drop_departed_peers({w[2] for w in m.workers})
        else:
            return False
        return True

    def object_arrived(self, object_id: bytes, payload, error, locations=None) -> None:
        """Loop thread: an object's value (or error) is here; wake who waits for it."""
        self._channel.requested.discard(object_id)    # the channel's own (loop) thread
        with self._lock:
            # An actor call's result may come before this thread's ref to it is counted
            # (ref events are drained lazily): keep it while the call is in ``_direct``.
            if object_id in self._channel.counts or object_id in self._waiters \
                    or object_id in self._direct:
                self._local[object_id] = (payload, error, locations)
            self._direct.discard(object_id)
            waiters = self._waiters.pop(object_id, None)
        if waiters:
            failed = error is not None
            for waiter in waiters:
                waiter.arrived(self.value, failed)
        if self._open_streams:            # a streaming generator's task may have ended
            self.streams.completed(object_id, payload, error)

    def _generator_item(self, m: msg.GeneratorItemReady) -> None:
        """Loop thread: a value a streaming generator yielded, now held for this process
        by the scheduler: its ref goes to the generator (or, if that is gone, is dropped
        at once, which releases it)."""
        object_id = m.object_id
        self._channel.held.add(object_id)
        with self._lock:
            self._local[object_id] = (m.payload, m.error, m.location)
        self.streams.item_ready(m.generator_id, m.index, ObjectRef._new(object_id))

    def _print_output(self, m: msg.Output) -> None:
        """Loop thread: a task's output. Lines are printed at once, before a result
        that follows them is handled; live rows alone once per burst of messages."""
        self.output.receive(m.source, m.prefix, m.stream, m.text, m.live)
        if m.text:
            self.output.render()
        elif not self._render_scheduled:
            self._render_scheduled = True
            self.loop.call_soon(self._render_output)

    def _render_output(self) -> None:
        self._render_scheduled = False
        self.output.render()

    def _call_later(self, delay: float, callback) -> None:
        """Any thread: ``callback()`` on the loop thread after ``delay`` seconds."""
        try:
            self.loop.call_soon_threadsafe(self.loop.call_later, delay, callback)
        except RuntimeError:  # loop closed during shutdown
            pass

    def connection_lost(self) -> None:
        """Fail every waiter: nothing will ever arrive."""
        self._lost = True
        error = error_payload(ConnectionLostError(
            "lost the connection to the graphstore scheduler; the cluster is gone"))
        with self._lock:
            ids = list(self._waiters)
        for object_id in ids:
            self.object_arrived(object_id, None, error)
        self.streams.abort()

    # -- user API (user threads) ------------------------------------------------------
    def check_connected(self) -> None:
        """Refuse new work once the scheduler is gone: nothing would ever run it."""
        if self._lost:
            raise ConnectionLostError(
                "lost the connection to the graphstore scheduler; the cluster is gone "
                "(call graphstore.shutdown(), then init() again)")

    def put(self, value: Any) -> ObjectRef:
        self.check_connected()
        if isinstance(value, ObjectRef):
            raise TypeError("put() of an ObjectRef is not allowed: pass the ref itself "
                            "(refs are already in the object store)")
        return self.put_value(value, "the object passed to put()")

    def put_value(self, value: Any, what: str) -> ObjectRef:
        """Store ``value`` as a new object held by this process (``put`` without its
        checks; ``what`` names it in serialization errors)."""
        buffers, contained = dumps(value, what=what)
        object_id = new_id()
        location = None
        if nbytes(buffers) > self.config.inline_threshold:
            location = self.objects.put_stored(object_id, buffers, lease=True)
        if location is None:
            payload = wire_payload(buffers, self.split_bytes)
            self._local[object_id] = (payload, None, None)
            self.send_from_any_thread(msg.PutObject(object_id, payload, contained, None))
        else:
            worker_address, segment, size = location[1], location[2], location[3]
            self._local[object_id] = (None, None, [[self.node_id, worker_address, segment,
                                                   size]])
            # At once: a store holds it now, and the scheduler must know whose it is.
            self.send_from_any_thread(msg.PutObject(object_id, None, contained,
                                                    [location[0], segment, size]),
                                      urgent=True)
        return ObjectRef._new(object_id)

    # -- what this process holds (user threads) -----------------------------------------
    def expect_direct(self, object_ids) -> None:
        """These actor-call results will come straight from the actor, not via the
        scheduler."""
        self._direct.update(object_ids)

    def local_entries(self, object_ids) -> list:
        """What this process already has of each id: (payload, error, locations) or None."""
        with self._lock:
            return [self._local.get(object_id) for object_id in object_ids]

    def missing_locally(self, object_ids) -> list[bytes]:
        """The ids of these whose values are not here yet."""
        with self._lock:
            return [object_id for object_id in object_ids if object_id not in self._local]

    def ask_scheduler(self, object_ids: list[bytes]) -> None:
        """Loop thread: have the scheduler send these objects (or their errors) when they
        exist, though they were expected from an actor whose process is gone. Ids no
        longer held here are skipped."""
        counts = self._channel.counts
        wanted = [i for i in object_ids if i in self._direct or i in counts]
        if wanted:
            self.send_from_any_thread(AskAgain(wanted))

    def forget_local(self, object_id: bytes) -> None:
        """Drop what is known here of an object, so the next read asks again."""
        with self._lock:
            self._local.pop(object_id, None)
        self._channel.ask_again([object_id])

    def get(self, refs, timeout: float | None = None):
        """The value(s) of ``refs``. A list fails fast, as Ray's ``get`` does: the first
        object found to be an error is raised without waiting for the others."""
        single = isinstance(refs, ObjectRef)
        if single:
            refs = [refs]
        elif not isinstance(refs, (list, tuple)):
            raise ValueError(f"Invalid type of object refs, {type(refs)}, is given. "
                             f"'object_refs' must either be an ObjectRef or a list of "
                             f"ObjectRefs.")
        else:
            for ref in refs:
                if not isinstance(ref, ObjectRef):
                    raise TypeError(f"Attempting to call `get` on the value {ref!r}, "
                                    f"which is not an ObjectRef.")
        if timeout is not None:
            timeout = _get_timeout(timeout)
        local = self._local
        missing = [r._id for r in refs if r._id not in local]
        if missing:
            if single:
                self.await_objects(missing, 1, timeout)
            else:
                if len(missing) < len(refs):
                    self._raise_first_error(refs)     # an error here already: fail now
                if self.await_objects(missing, len(set(missing)), timeout,
                                      fail_fast=True):
                    self._raise_first_error(refs)
        if len(refs) == 1:
            return self.value(refs[0]._id) if single else [self.value(refs[0]._id)]
        if len(refs) < _PAUSE_GC_FROM:
            return self._values(refs)
        with collector_paused():      # all here: no wait for anything while paused
            return self._values(refs)

    def _values(self, refs) -> list:
        """The values of ``refs``, all here (or known to be stored on some worker)."""
        local = self._local
        self.objects.lease_ahead([(r._id, local[r._id][2]) for r in refs
                                  if r._id in local and local[r._id][2]])
        return [self.value(r._id) for r in refs]

    def _raise_first_error(self, refs) -> None:
        """Raise the error of the first of ``refs`` (in order) that is here and failed."""
        local = self._local
        for ref in refs:
            entry = local.get(ref._id)
            if entry is not None and entry[1] is not None:
                raise loads(entry[1])

    def await_objects(self, ids: list[bytes], needed: int, timeout: float | None,
                      fail_fast: bool = False) -> bool:
        """Block until ``needed`` of ``ids`` are local (or raise GetTimeoutError);
        ``fail_fast``: or until one of them is an error, then True is returned.

        A task (or actor call) cancelled while it blocks here raises
        ``TaskCancelledError`` (``cancel_wait``)."""
        waiter = Waiter(needed, fail_fast=fail_fast)
        registered = []
        local = self._local
        with self._lock:
            for object_id in dict.fromkeys(ids):
                entry = local.get(object_id)
                if entry is None:
                    self._waiters.setdefault(object_id, []).append(waiter)
                    registered.append(object_id)
                else:                               # came meanwhile
                    waiter.needed -= 1
                    if entry[1] is not None:
                        waiter.errored = True
            failed = fail_fast and waiter.errored
            done = waiter.needed <= 0 or failed
        if done:
            if registered:
                self._unregister(waiter, registered)
            return failed
        try:
            if self._lost or self.comm.closed:
                raise ConnectionLostError(
                    "lost the connection to the graphstore scheduler; the cluster is gone")
            wanted = [i for i in registered if i not in self._direct]
            if wanted:            # an actor sends its results here itself
                self.send_from_any_thread(msg.WantObjects(wanted))
            finished = self._block(waiter, registered, len(wanted) < len(registered),
                                   timeout)
        except BaseException:
            # Also an exception injected into this thread (a cancel that came before it
            # blocked): leave no waiter behind.
            self._unregister(waiter, registered)
            raise
        if waiter.cancelled:
            self._unregister(waiter, registered)
            task = getattr(context.current_task, "task", None)
            raise TaskCancelledError(f"{task[1] if task else 'the task'} was cancelled "
                                     f"while it waited for objects")
        if not finished:
            self._unregister(waiter, registered)
            if waiter.needed <= 0:
                return False
            raise GetTimeoutError(
                f"get() timed out after {timeout} s with {waiter.needed} of "
                f"{len(registered)} object(s) not ready")
        if self._closed:
            raise ConnectionLostError("graphstore was shut down while waiting")
        if waiter.needed > 0:                # woken early: one of them is an error
            self._unregister(waiter, registered)
            return True
        return False

    def _block(self, waiter: Waiter, registered: list[bytes], direct: bool,
               timeout: float | None) -> bool:
        """Wait on ``waiter``, visible to ``cancel_wait`` meanwhile; False on timeout."""
        me = threading.get_ident()
        try:
            with self._lock:
                self._blocking[me] = waiter
            blocked = self._task_blocked() if self._task_blocked is not None else None
            try:
                if not direct:
                    return waiter.wait(timeout)
                # Actor results come straight from the actor; should one not come (its
                # connection broke after the scheduler recorded it), ask the scheduler.
                first = _DIRECT_PATIENCE if timeout is None else min(timeout,
                                                                     _DIRECT_PATIENCE)
                if waiter.wait(first):
                    return True
                with self._lock:
                    late = [i for i in registered if i not in self._local]
                self.send_from_any_thread(AskAgain(late))
                return waiter.wait(None if timeout is None else timeout - first)
            finally:
                if blocked is not None:
                    self._task_unblocked(blocked)
        finally:
            with self._lock:
                self._blocking.pop(me, None)

    def cancel_wait(self, thread_ident: int) -> bool:
        """Loop thread: the task on thread ``thread_ident`` was cancelled. If that thread
        is blocked in ``get``/``wait``, wake it to raise ``TaskCancelledError`` and return
        True; else False (the caller interrupts the running code instead)."""
        with self._lock:
            waiter = self._blocking.get(thread_ident)
            if waiter is None:
                return False
            waiter.cancel()
            return True

    def wait_blocking(self, waiter: Waiter, timeout: float | None) -> bool:
        """Block this thread until ``waiter`` is woken (False after ``timeout``); a task
        lends its CPU to other tasks meanwhile, as in ``get``."""
        blocked = self._task_blocked() if self._task_blocked is not None else None
        try:
            return waiter.wait(timeout)
        finally:
            if blocked is not None:
                self._task_unblocked(blocked)

    def _unregister(self, waiter: Waiter, ids: list[bytes]) -> None:
        with self._lock:
            for object_id in ids:
                waiters = self._waiters.get(object_id)
                if waiters and waiter in waiters:
                    waiters.remove(waiter)
                    if not waiters:
                        del self._waiters[object_id]

    def value(self, object_id: bytes):
        """The value of an object that is here (raises its error)."""
        entry = self._local.get(object_id)
        if entry is None:
            raise GraphstoreError(f"object {object_id.hex()} is not available locally")
        payload, error, locations = entry
        if error is not None:
            raise loads(error)
        if payload is None:
            return self.objects.load_stored(object_id, locations)
        return loads(payload)

    def wait(self, refs: Sequence[ObjectRef], num_returns: int = 1,
             timeout: float | None = None, fetch_local: bool = True):
        """``(ready, not_ready)``; an object that is an error counts as ready. The
        argument checks are Ray's, in Ray's order."""
        if isinstance(refs, ObjectRef):
            raise TypeError("wait() expected a list of ObjectRefs, got a single ObjectRef")
        if not isinstance(refs, (list, tuple)):
            raise TypeError(f"wait() expected a list of ObjectRefs, got {type(refs)}")
        if timeout is not None:
            timeout = _check_timeout(timeout)
        for ref in refs:
            if not isinstance(ref, ObjectRef):
                if isinstance(ref, ObjectRefGenerator):   # ready: next() would not block
                    return wait_with_generators(self, list(refs), num_returns, timeout)
                raise TypeError(f"wait() expected a list of ObjectRefs, got list "
                                f"containing {type(ref)}")
        if not refs:
            return [], []
        if len(set(refs)) != len(refs):
            raise ValueError("wait() requires a list of unique ObjectRefs; got the same "
                             "ObjectRef more than once")
        if not isinstance(num_returns, numbers.Integral):
            raise TypeError(f"num_returns must be an int, not {type(num_returns).__name__}")
        if num_returns <= 0:
            raise ValueError(f"Invalid number of objects to return {num_returns}.")
        if num_returns > len(refs):
            raise ValueError(f"num_returns cannot be greater than the number of objects "
                             f"provided to wait() (num_returns={num_returns}, "
                             f"{len(refs)} refs)")
        local = self._local
        missing = [r._id for r in refs if r._id not in local]
        have = len(refs) - len(missing)
        if have < num_returns:
            try:
                self.await_objects(missing, num_returns - have, timeout)
            except GetTimeoutError:
                pass
        ready, not_ready = [], []
        for ref in refs:
            if ref._id in local and len(ready) < num_returns:
                ready.append(ref)
            else:
                not_ready.append(ref)
        return ready, not_ready

    def namespace(self) -> str:
        """The namespace of this job (named actors): the driver's own; in a task or an
        actor, that of the job it belongs to."""
        known = self.context.get("namespace")
        if known:
            return known
        task = self.task_context()
        return task["namespace"] if task is not None else self.config.namespace

    def task_context(self) -> dict | None:
        """What the scheduler says of the task this thread runs ({"job_id", "namespace",
        "resources", "gpus"}), asked once per task; None outside a task."""
        task = getattr(context.current_task, "task", None)
        if task is None or "actor_id" in self.context:
            return None
        cached = getattr(context.current_task, "context", None)
        if cached is not None and cached[0] == task[0]:
            return cached[1]
        answer = self.request(msg.GetTaskContext(task[0]))
        context.current_task.context = (task[0], answer)
        return answer

    def request(self, message, timeout: float | None = 30.0):
        """Send a request to the scheduler from a user thread and wait for the reply."""
        if self._lost or self.comm.closed:
            raise ConnectionLostError("lost the connection to the graphstore scheduler")
        async def call():
            self.flush()  # what this thread queued before goes first
            return await self.comm.request(message, timeout)
        try:
            future = call_on_loop(self.loop, call)
        except RuntimeError:   # the loop closed meanwhile
            raise ConnectionLostError("lost the connection to the graphstore scheduler") from None
        return future.result()

    def future(self, ref: ObjectRef, value: bool = True) -> concurrent.futures.Future:
        """A future of the object's value; ``value=False``: of its id, completed once
        the object is here (a value or an error), the value not built."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        object_id = ref._id
        with self._lock:
            ready = object_id in self._local
            if not ready:
                self._waiters.setdefault(object_id, []).append(
                    Waiter(1, future=future, ref_id=object_id, value_wanted=value))
        if ready and not value:
            future.set_result(object_id)
        elif ready:
            try:
                future.set_result(self.value(object_id))
            except BaseException as exc:
                future.set_exception(exc)
        else:
            self.send_from_any_thread(msg.WantObjects([object_id]))
            # Keep the ref alive until the future completes, so the object stays held.
            future.add_done_callback(lambda f, keep=ref: None)
        return future

    def drop_future(self, ref: ObjectRef, future: concurrent.futures.Future) -> None:
        """Stop waiting for ``future`` (of ``future(ref)``) and cancel it: its waiter no
        longer holds the future, nor the future the ref (for callers that gave up:
        a timeout, an error, a consumer gone)."""
        with self._lock:
            waiters = self._waiters.get(ref._id)
            if waiters:
                waiters[:] = [w for w in waiters if w.future is not future]
                if not waiters:
                    del self._waiters[ref._id]
        future.cancel()
