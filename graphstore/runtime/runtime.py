"""The per-process runtime behind ``put``/``get``/``wait`` and ``.remote()``.

Drivers and workers both run one. User threads never touch sockets: they append messages
and ref events to one ordered channel and wake the event loop once per burst; the loop
thread drains the channel, keeps the process's reference counts, and sends batches. One
channel for both keeps causality: a ``PutObject`` always reaches the scheduler before the
``DecRef`` of the same id, and a task's result before the release of refs it contains.

Small objects this process created or fetched are kept here, serialized, while it holds a
ref, so a second ``get`` costs no round trip.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import weakref
import hashlib
import logging
import os
import sys
import threading
import time
from collections import deque
from typing import Any, Sequence

from graphstore.core import object_ref as object_ref_module
from graphstore.core import protocol as msg
from graphstore.core.config import Config
from graphstore.exceptions import GetTimeoutError, GraphstoreError, ConnectionLostError
from graphstore.core.object_ref import ObjectRef, new_id
from graphstore.core.protocol import wire_payload
from graphstore.core import shm
from graphstore.runtime.actor_client import ActorClient, ActorSend
from graphstore.core.comm import RemoteCallError, connect
from graphstore.exceptions import ObjectLostError, ObjectStoreFullError
from graphstore.core.node import default_node_id
from graphstore.core.protocol import unwrap
from graphstore.core.serialization import dumps, dumps_function, loads, nbytes
from graphstore.core.task_args import pack_args

logger = logging.getLogger("graphstore.runtime")

_INC, _DEC = 0, 1
#: Messages that only keep the scheduler's books (no one waits on them): a process
#: gathers them for up to _DEFER_SECONDS before sending. Anything else flushes them first.
_DEFERRABLE = frozenset({msg.IncRef, msg.DecRef, msg.ActorCallSubmitted,
                         msg.ActorCallDone, msg.Pin, msg.Unpin})
_DEFER_SECONDS = 0.002
#: Seconds a get waits for actor results to come straight from the actor before also
#: asking the scheduler for them.
_DIRECT_PATIENCE = 2.0
#: Per thread: ``(task id, name)`` of the task or actor call it runs, else None.
current_task = threading.local()
_NOT_READY = object()


class _Waiter:
    """Woken by the loop thread as objects arrive; ``needed`` of them complete it."""
    __slots__ = ("needed", "lock", "future", "ref_id")

    def __init__(self, needed: int, future: concurrent.futures.Future | None = None,
                 ref_id: bytes | None = None):
        self.needed = needed
        self.future = future
        self.ref_id = ref_id
        self.lock = None
        if future is None:
            self.lock = threading.Lock()
            self.lock.acquire()

    def arrived(self, runtime: "Runtime") -> None:
        self.needed -= 1
        if self.needed == 0:
            if self.future is not None:
                if not self.future.done():
                    try:
                        self.future.set_result(runtime._value(self.ref_id))
                    except BaseException as exc:  # the object is an error
                        self.future.set_exception(exc)
            else:
                self.lock.release()
                # Hand the GIL to the woken thread now: this (loop) thread would keep it
                # until it next waits for I/O, tens of microseconds later.
                time.sleep(0)

    def wait(self, timeout: float | None) -> bool:
        return self.lock.acquire(timeout=-1 if timeout is None else max(timeout, 0))


class FunctionDescriptor:
    """A remote function's pickled code, made once and named by its hash."""
    __slots__ = ("payload", "hash", "name")

    def __init__(self, fn):
        self.payload = dumps_function(fn)
        self.hash = hashlib.blake2b(self.payload, digest_size=16).digest()
        self.name = getattr(fn, "__name__", "task")


class Runtime:
    """Owns this process's view of the cluster. Thread-safe for user threads."""

    def __init__(self, loop, comm, config: Config, peer_id: bytes, *, is_driver: bool,
                 node_id: str | None = None, token: bytes = b"", tls=None):
        self.loop = loop
        self.comm = comm
        self.config = config
        self.peer_id = peer_id
        self.is_driver = is_driver
        self.cluster_info: dict = {}
        self.comm_token = token
        #: The process's ``TLSConfig`` (None: no TLS), for its connections to peers.
        self.tls = tls
        self.node_id = node_id or default_node_id()
        #: In a worker: its own store and peer address; drivers use a local worker's.
        self.local_store = None
        self.local_address = ""
        self._peer_comms: dict[str, object] = {}
        self._mapped: dict[bytes, int] = {}
        _raise_open_file_limit()  # a lease is a descriptor per segment this process views
        #: segment -> [fd holding a shared lock, number of live views]: see shm.lease.
        self._leases: dict[str, list] = {}
        #: Objects this process put into a store, while it holds them -> (segment, an
        #: open descriptor of it without a lock, its inode): see ``_keep_open``.
        self._put_files: dict[bytes, tuple] = {}
        self._fetching: dict[bytes, concurrent.futures.Future] = {}
        self.mappings = shm.MappingCache()
        #: In a worker: reads a spilled object back into its store (returns the segment).
        self.restore_spilled = None
        self._channel: deque = deque()
        self._wake_pending = False
        # Owned by the loop thread:
        self._counts: dict[bytes, int] = {}
        self._held: set[bytes] = set()
        self._requested: set[bytes] = set()
        #: Scheduler-bound bookkeeping gathered for up to _DEFER_SECONDS (loop thread).
        self._deferred: list = []
        self._deferred_timer = None
        #: Results of actor calls this process made: the actor sends them here.
        self._direct: set[bytes] = set()
        self._registered_functions: set[bytes] = set()
        # Shared, guarded by _lock:
        self._lock = threading.Lock()
        self._local: dict[bytes, tuple] = {}
        self._waiters: dict[bytes, list[_Waiter]] = {}
        self._closed = False
        self._lost = False
        self._drain_timed = False
        self._premapping = False
        self.actor_client = ActorClient(self)
        self._reserves: set[str] = set()  # reserve segments mapped ahead of a put
        self._split = config.frame_split_bytes
        self.output_enabled = config.log_to_driver
        #: Set by a worker: called around a blocking wait inside a task, so the task's
        #: CPUs can run other tasks meanwhile (nested tasks would deadlock otherwise).
        self.on_block = None
        self.on_unblock = None

    # -- ref tracking (any thread) ----------------------------------------------------
    def on_ref_created(self, object_id: bytes) -> None:
        self._channel.append((_INC, object_id))

    def on_ref_deleted(self, object_id: bytes) -> None:
        if self._closed:
            return
        self._channel.append((_DEC, object_id))
        self._wake_soon()

    def install(self) -> None:
        object_ref_module.ref_tracker = self

    def uninstall(self) -> None:
        self._closed = True
        if object_ref_module.ref_tracker is self:
            object_ref_module.ref_tracker = object_ref_module._NullTracker()
        with self._lock:
            waiters = [w for ws in self._waiters.values() for w in ws]
            self._waiters.clear()
            leases, self._leases = self._leases, {}
            puts, self._put_files = self._put_files, {}
        for fd, _ in leases.values():  # the cluster's stores are going away with it
            os.close(fd)
        for _, fd, _ in puts.values():
            os.close(fd)
        for waiter in waiters:
            if waiter.future is not None:
                if not waiter.future.done():
                    waiter.future.set_exception(ConnectionLostError("graphstore was shut down"))
            else:
                try:
                    waiter.lock.release()
                except RuntimeError:
                    pass

    # -- sending (any thread) ---------------------------------------------------------
    def _send(self, message) -> None:
        self._channel.append(message)
        if type(message) in _DEFERRABLE:
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

    def send_from_any_thread(self, message) -> None:
        """Queue a message in order with this process's ref events."""
        self._send(message)

    def _drain(self) -> None:
        """Loop thread: turn the channel into messages, keeping its order."""
        self._wake_pending = False
        channel = self._channel
        counts = self._counts
        held = self._held
        out: list = []
        incs: list[bytes] = []
        decs: list[bytes] = []
        while channel:
            item = channel.popleft()
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
                    self._direct.discard(object_id)   # a late actor result is not kept
                    if object_id in self._put_files:
                        os.close(self._put_files.pop(object_id)[1])
                    if object_id in held:
                        held.discard(object_id)
                        if incs:
                            out.append(msg.IncRef(incs))
                            incs = []
                        decs.append(object_id)
                    self._local.pop(object_id, None)
                continue
            if incs:
                out.append(msg.IncRef(incs))
                incs = []
            if decs:
                out.append(msg.DecRef(decs))
                decs = []
            cls = type(item)
            if cls is ActorSend:
                self.actor_client.dispatch(item)
                continue
            if cls is msg.SubmitTask:
                held.update(item.returns)
            elif cls is msg.ActorCallSubmitted:
                held.update(item.returns)
                # The actor sends the results here itself: never ask the scheduler.
                self._requested.update(item.returns)
            elif cls is msg.CreateActor:
                held.add(item.creation_id)
            elif cls is msg.PutObject:
                held.add(item.object_id)
            elif cls is msg.WantObjects:
                ids = [i for i in item.ids if i not in self._requested]
                if not ids:
                    continue
                self._requested.update(ids)
                item = msg.WantObjects(ids)
            out.append(item)
        if incs:
            out.append(msg.IncRef(incs))
        if decs:
            out.append(msg.DecRef(decs))
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

    # -- receiving (loop thread) ------------------------------------------------------
    def handle(self, m) -> bool:
        """Handle a message meant for the runtime; False if it is not one."""
        cls = type(m)
        if cls is msg.ObjectReady:
            self._object_arrived(m.object_id, m.payload, m.error, m.location)
        elif cls is msg.Output:
            if self.output_enabled:
                self._print_output(m)
        elif cls is msg.ClusterInfo:
            self.cluster_info = {"num_workers": m.num_workers, "resources": m.resources,
                                 "workers": m.workers}
            self._drop_departed_peers({w[2] for w in m.workers})
        else:
            return False
        return True

    def _object_arrived(self, object_id: bytes, payload, error, locations=None) -> None:
        self._requested.discard(object_id)
        with self._lock:
            # An actor call's result may come before this thread's ref to it is counted
            # (ref events are drained lazily): keep it while the call is in ``_direct``.
            if object_id in self._counts or object_id in self._waiters \
                    or object_id in self._direct:
                self._local[object_id] = (payload, error, locations)
            self._direct.discard(object_id)
            waiters = self._waiters.pop(object_id, None)
        if waiters:
            for waiter in waiters:
                waiter.arrived(self)

    def _print_output(self, m: msg.Output) -> None:
        stream = sys.stderr if m.stream == "stderr" else sys.stdout
        text = m.text
        if text.endswith("\n"):
            text = text[:-1]
        try:
            stream.write("".join(f"{m.prefix} {line}\n" for line in text.split("\n")))
            stream.flush()
        except Exception:
            pass

    def connection_lost(self) -> None:
        """Fail every waiter: nothing will ever arrive."""
        self._lost = True
        error = [_pickled(ConnectionLostError(
            "lost the connection to the graphstore scheduler; the cluster is gone"))]
        with self._lock:
            ids = list(self._waiters)
        for object_id in ids:
            self._object_arrived(object_id, None, error)

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
        buffers, contained = dumps(value, what="the object passed to put()")
        object_id = new_id()
        location = None
        if nbytes(buffers) > self.config.inline_threshold:
            location = self._put_stored(object_id, buffers)
        if location is None:
            payload = wire_payload(buffers, self._split)
            self._local[object_id] = (payload, None, None)
            self._send(msg.PutObject(object_id, payload, contained, None))
        else:
            worker_address, segment, size = location[1], location[2], location[3]
            self._local[object_id] = (None, None, [[self.node_id, worker_address, segment,
                                                   size]])
            self._send(msg.PutObject(object_id, None, contained,
                                     [location[0], segment, size]))
            self._keep_open(object_id, segment)
        return ObjectRef._new(object_id)

    # -- stored (large) objects -------------------------------------------------------
    def _put_stored(self, object_id: bytes, buffers) -> list | None:
        """Write a large object straight into a store on this host (one copy).

        Returns [worker id, worker address, segment, size], or None when this host has
        no store (the object then travels inline).
        """
        if self.local_store is not None:
            segment, size = self._write_to_local_store(object_id, buffers)
            return [self.peer_id, self.local_address, segment, size]
        size = shm.encoded_size(buffers)
        if not any(w[1] == self.node_id for w in self.cluster_info.get("workers", [])):
            return None
        try:
            worker_id, address, segment = self.request(
                msg.AllocateOnNode(object_id, size, self.node_id), timeout=120)
        except RemoteCallError as exc:
            text = str(exc)
            if text.startswith("ObjectStoreFullError"):
                raise ObjectStoreFullError(text.partition(": ")[2]) from None
            if text.startswith("LookupError"):
                return None
            raise
        # A reserve (mapped ahead or not) is used up: map the store's next one meanwhile.
        used_reserve = segment in self._reserves or not self.mappings.has(segment)
        self._write_segment(segment, size, buffers)
        if used_reserve:
            self._reserves.discard(segment)
            self.premap_reserves()
        return [worker_id, address, segment, size]

    def _keep_open(self, object_id: bytes, segment: str) -> None:
        """Keep the segment of this process's own put open while it holds the ref, so
        that a get of it needs no open(): right after a 200 MB copy that call took up to
        0.3 ms here. Only open, not locked: the store may still reclaim the segment once
        the object spilled (the get then sees the name gone)."""
        try:
            fd = os.open(shm.segment_path(segment), os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            return
        self._put_files[object_id] = (segment, fd, os.fstat(fd).st_ino)

    def premap_reserves(self) -> None:
        """Map the pre-faulted reserve segment of each store on this host, page tables
        filled, in a background thread: a put that lands there then copies at memory
        speed instead of paying a fault per 4 KiB page (a third of a first 200 MB put).
        Best effort, for drivers; at most one round runs at a time."""
        with self._lock:
            if not self.is_driver or self._premapping or self._closed:
                return
            self._premapping = True

        def run():
            try:
                self._reserves = {n for n in self._reserves if self.mappings.has(n)}
                for _, node, address in self.cluster_info.get("workers", []):
                    if node != self.node_id or self._closed:
                        continue
                    reserve = self._peer_request(address, msg.ReserveSegment(), timeout=30)
                    if reserve:
                        self.mappings.get(reserve[0], reserve[1], populate=True)
                        self._reserves.add(reserve[0])
            except Exception as exc:  # a put maps the segment itself
                logger.debug("could not map a store's reserve: %r", exc)
            finally:
                self._premapping = False
        threading.Thread(target=run, name="graphstore-premap", daemon=True).start()

    def _write_segment(self, segment: str, size: int, buffers) -> None:
        shm.write_object(memoryview(self.mappings.get(segment, size, populate=True))[:size],
                         buffers)

    def store_value(self, object_id: bytes, buffers) -> tuple:
        """For a task's result: ``(payload, 0, None)`` inline, or ``(None, size,
        segment)`` once written into this worker's store."""
        if nbytes(buffers) > self.config.inline_threshold and self.local_store is not None:
            segment, size = self._write_to_local_store(object_id, buffers)
            return None, size, segment
        return wire_payload(buffers, self._split), 0, None

    def _write_to_local_store(self, object_id: bytes, buffers) -> tuple[str, int]:
        """In a worker: allocate in its own store, copy the buffers in, seal."""
        size = shm.encoded_size(buffers)
        entry = self.local_store.allocate(object_id, size)
        self._write_segment(entry.name, size, buffers)
        self.local_store.seal(object_id)
        return entry.name, size

    def load_value(self, object_id: bytes, payload, locations):
        """Deserialize an object given inline or by its locations (zero-copy on this
        host; fetched over TCP otherwise)."""
        if payload is not None:
            return loads(payload)
        return self._load_stored(object_id, locations)

    def _load_stored(self, object_id: bytes, locations):
        """A stored object's value from where ``locations`` says it is: mapped in place
        on this host, restored from a spill, or fetched from another host. When no copy
        can be read (freed, spilled meanwhile, or its worker died), the scheduler is
        asked again: it knows new copies, or has the object computed again."""
        deadline = None
        attempt = 0
        error = None
        while True:
            size = locations[0][3] if locations else 0
            for node, address, segment, size in locations:
                if node != self.node_id or node is None:
                    continue
                view = self._pinned_view(object_id, segment, size)
                if view is not None:
                    return loads(shm.read_object(view))
                # else spilled or freed since this location was known
            spilled = [loc for loc in locations if loc[0] is None]
            remote = [loc for loc in locations if loc[0] is not None
                      and loc[0] != self.node_id]
            if spilled:
                _, path, offset, size = spilled[0]
                try:
                    if self.restore_spilled is not None:  # a worker: into its own store
                        segment = self.restore_spilled(object_id, path, offset, size)
                        self._send(msg.ObjectAdded(object_id, segment))
                        locations = [[self.node_id, self.local_address, segment, size]]
                    else:                                 # a driver: a store restores it
                        _, address, segment, node = self.request(
                            msg.RestoreOnNode(object_id, self.node_id), timeout=300)
                        locations = [[node, address, segment, size]]
                    continue
                except (ObjectStoreFullError, ConnectionLostError):
                    raise
                except (OSError, RemoteCallError, GraphstoreError) as exc:
                    error = exc     # e.g. the file was on a lost host's disk: ask again
                    remote = []
            if remote:
                try:
                    data = self._fetch(object_id, remote)
                except ObjectLostError as exc:   # no copy answered: its worker may be dead
                    error = exc
                else:
                    if isinstance(data, str):     # landed in this worker's store: map it
                        locations = [[self.node_id, self.local_address, data, size]]
                        continue
                    return loads(shm.read_object(data))
            attempt += 1
            now = time.monotonic()
            if deadline is None:
                # Long enough for the scheduler to notice a silent worker and say so.
                deadline = now + 2 * self.config.worker_timeout + 5
            elif now > deadline:
                raise ObjectLostError(f"object {object_id.hex()} could not be read from "
                                      f"any copy: {error or 'every copy is gone'}")
            if attempt > 1:
                time.sleep(min(0.5, 0.01 * 2 ** attempt))
            fresh = self.request(msg.LocateObject(object_id))
            if fresh is None:  # being computed again, failed, or lost: wait for it
                with self._lock:
                    self._local.pop(object_id, None)
                self._requested.discard(object_id)
                self._await([object_id], 1, None)
                return self._value(object_id)
            locations = fresh

    def _pinned_view(self, object_id: bytes, segment: str, size: int):
        """A read-only view of an object's segment, pinned while anything views it; None
        when the segment is gone (spilled or freed since its location was known).

        The view is a fresh numpy array over the (cached) mapping; every buffer handed
        to unpickling derives from it, so when the last array built on the object dies,
        the view dies and the pin is released. Until then this process holds a lease on
        the segment (the store cannot give its memory to another object) and the
        scheduler tells the store not to reuse it once freed.
        """
        import numpy
        with self._lock:
            held = self._leases.get(segment)
            if held is not None:
                held[1] += 1
        if held is not None and not os.path.exists(shm.segment_path(segment)):
            # Leased (held views, or this process's own put) but unlinked since: freed,
            # spilled, or its store died -- the current state is the scheduler's to say.
            self._release_lease(segment)
            return None
        if held is None:
            put = self._put_files.get(object_id)
            if put is not None and put[0] == segment:
                fd = shm.lease_open(put[1], segment, put[2])
            else:
                fd = shm.lease(segment)
            if fd is None:
                return None
            with self._lock:
                held = self._leases.get(segment)
                if held is None:
                    held = self._leases[segment] = [fd, 1]
                else:                       # another thread leased it meanwhile
                    held[1] += 1
                    os.close(fd)
        try:
            # Through the leased descriptor: the name may be unlinked by now.
            mapping = self.mappings.get(segment, size, fd=held[0])
        except BaseException:
            self._release_lease(segment)
            raise
        view = numpy.frombuffer(memoryview(mapping).toreadonly(), dtype=numpy.uint8,
                                count=size)
        with self._lock:
            n = self._mapped.get(object_id, 0)
            self._mapped[object_id] = n + 1
        if n == 0:
            self._send(msg.Pin([object_id]))
        weakref.finalize(view, self._unmapped, object_id, segment)
        return view

    def _release_lease(self, segment: str) -> None:
        with self._lock:
            held = self._leases.get(segment)
            if held is None:
                return
            held[1] -= 1
            if held[1] > 0:
                return
            del self._leases[segment]
        shm.release_lease(held[0])

    def _unmapped(self, object_id: bytes, segment: str) -> None:
        if self._closed:
            return
        self._release_lease(segment)
        with self._lock:
            n = self._mapped.get(object_id, 1) - 1
            if n > 0:
                self._mapped[object_id] = n
                return
            self._mapped.pop(object_id, None)
        self._send(msg.Unpin([object_id]))

    def _fetch(self, object_id: bytes, locations):
        """Bring a stored object from another host: into this worker's store (returns
        its segment name), or into this driver's memory (returns the bytes). Concurrent
        fetches of one object share one transfer."""
        with self._lock:
            future = self._fetching.get(object_id)
            owner = future is None
            if owner:
                future = self._fetching[object_id] = concurrent.futures.Future()
        if owner:
            try:
                result = asyncio.run_coroutine_threadsafe(
                    self._fetch_async(object_id, locations), self.loop).result()
                future.set_result(result)
            except BaseException as exc:
                future.set_exception(exc)
            finally:
                with self._lock:
                    self._fetching.pop(object_id, None)
        return future.result()

    async def _fetch_async(self, object_id: bytes, locations):
        errors = []
        for node, address, segment, size in locations:
            try:
                comm = await self._peer(address)
                if self.local_store is not None:
                    entry = await asyncio.get_running_loop().run_in_executor(
                        None, self.local_store.allocate, object_id, size)
                    mapping = self.mappings.get(entry.name, size, populate=True)
                    target = memoryview(mapping)[:size]
                    try:
                        reply = await comm.request(msg.FetchObject(object_id),
                                                   sinks=[target])
                        landed = unwrap(reply[1])
                        if memoryview(landed).obj is not target.obj:
                            target[:] = landed
                        del landed, reply
                    except BaseException:
                        self.local_store.free(object_id, reusable=True)
                        raise
                    finally:
                        target.release()
                    self.local_store.seal(object_id)
                    self._send(msg.ObjectAdded(object_id, entry.name))
                    return entry.name
                reply = await comm.request(msg.FetchObject(object_id),
                                           sinks=[bytearray(size)])
                return unwrap(reply[1])
            except Exception as exc:
                errors.append(f"{address}: {exc}")
        raise ObjectLostError(f"could not fetch object {object_id.hex()} from any copy: "
                              + "; ".join(errors))

    def _drop_departed_peers(self, live_addresses: set) -> None:
        """Loop thread: close connections to workers the scheduler counts as gone; their
        pending fetches fail, and readers ask the scheduler for another copy."""
        for address, comm in list(self._peer_comms.items()):
            if address not in live_addresses:
                del self._peer_comms[address]
                comm.abort()

    async def close_peers(self) -> None:
        """Close connections to workers' peer servers and to actors (on the loop, before
        it stops), after sending the gathered bookkeeping."""
        self._drain()
        self.flush_deferred()
        self.actor_client.close()
        comms, self._peer_comms = list(self._peer_comms.values()), {}
        for comm in comms:
            comm.abort()

    async def _peer(self, address: str):
        comm = self._peer_comms.get(address)
        if comm is None or comm.closed:
            if self._closed:     # shutting down: close_peers ran or is about to
                raise ConnectionLostError("graphstore was shut down")
            comm = await connect(address, self.comm_token, tls=self.tls,
                                 split_bytes=self._split)
            if self._closed:
                comm.abort()
                raise ConnectionLostError("graphstore was shut down")
            comm.handler = lambda c, m: None
            asyncio.ensure_future(comm.read_loop())
            self._peer_comms[address] = comm
        return comm

    def _peer_request(self, address: str, message, timeout: float = 60):
        async def call():
            comm = await self._peer(address)
            return await comm.request(message, timeout=timeout)
        return asyncio.run_coroutine_threadsafe(call(), self.loop).result(timeout + 5)

    def submit(self, descriptor: FunctionDescriptor, args: tuple, kwargs: dict,
               num_returns: int, num_cpus: float, resources: dict | None,
               max_retries: int, name: str | None,
               retry_exceptions=None) -> list[ObjectRef]:
        self.check_connected()
        self._register(descriptor)
        task_name = name or descriptor.name
        payload, deps, nested = pack_args(task_name, args, kwargs, self._split)
        task_id = new_id()
        returns = [new_id() for _ in range(num_returns)]
        parent = getattr(current_task, "task", None)
        self._send(msg.SubmitTask(task_id, descriptor.hash, task_name, payload, deps,
                                  nested, returns, num_cpus, resources, max_retries,
                                  parent[0] if parent else None, retry_exceptions))
        return [ObjectRef._new(object_id) for object_id in returns]

    # -- actors (user threads) ----------------------------------------------------------
    def create_actor(self, descriptor: FunctionDescriptor, class_name: str, args: tuple,
                     kwargs: dict, options: dict, methods: dict) -> list:
        """Ask for an actor; returns [actor id, creation id, class name, methods,
        max_task_retries] (of an existing actor for ``get_if_exists``)."""
        self.check_connected()
        self._register(descriptor)
        payload, deps, nested = pack_args(f"{class_name}.__init__", args, kwargs,
                                          self._split)
        actor_id, creation_id = new_id(), new_id()
        m = msg.CreateActor(actor_id, creation_id, descriptor.hash, class_name, payload,
                            deps, nested, options, methods)
        if options.get("name") is not None:   # the scheduler checks the name first
            try:
                return self.request(m)
            except RemoteCallError as exc:
                text = str(exc)
                if text.startswith("ValueError: "):
                    raise ValueError(text[len("ValueError: "):]) from None
                raise
        self._send(m)
        return [actor_id, creation_id, class_name, methods,
                int(options.get("max_task_retries", 0))]

    def call_actor(self, actor_id: bytes, method: str, name: str, args: tuple,
                   kwargs: dict, num_returns: int, retries: int) -> list[ObjectRef]:
        payload, dep_ids, nested = pack_args(name, args, kwargs, self._split)
        deps = []
        if dep_ids:
            with self._lock:
                for object_id in dep_ids:
                    known = self._local.get(object_id)
                    deps.append([object_id] if known is None else [object_id, *known])
        call_id = new_id()
        returns = [new_id() for _ in range(num_returns)]
        self._direct.update(returns)
        self._send(msg.ActorCallSubmitted(call_id, actor_id, name, dep_ids, nested, returns))
        call = msg.ActorCall(call_id, method, name, payload, deps, returns, self.peer_id)
        if not self.actor_client.send_now(actor_id, call, retries):
            self._send(ActorSend(actor_id, call, retries))   # the loop sends it, in order
        return [ObjectRef._new(object_id) for object_id in returns]

    def cancel(self, ref: ObjectRef, force: bool, recursive: bool) -> None:
        if not isinstance(ref, ObjectRef):
            raise TypeError(f"cancel() takes an ObjectRef, not {type(ref).__name__}")
        self._send(msg.CancelTask(ref._id, bool(force), bool(recursive)))

    def _register(self, descriptor: FunctionDescriptor) -> None:
        if descriptor.hash not in self._registered_functions:
            self._registered_functions.add(descriptor.hash)
            self._send(msg.RegisterFunction(descriptor.hash, descriptor.payload))

    def get(self, refs, timeout: float | None = None):
        single = isinstance(refs, ObjectRef)
        if single:
            refs = [refs]
        elif not isinstance(refs, (list, tuple)):
            raise TypeError(f"get() takes an ObjectRef or a list of them, not "
                            f"{type(refs).__name__}")
        else:
            for ref in refs:
                if not isinstance(ref, ObjectRef):
                    raise TypeError(f"get() takes ObjectRefs; got {type(ref).__name__} "
                                    f"in the list")
        local = self._local
        missing = [r._id for r in refs if r._id not in local]
        if missing:
            self._await(missing, len(set(missing)), timeout)
        values = [self._value(r._id) for r in refs]
        return values[0] if single else values

    def _await(self, ids: list[bytes], needed: int, timeout: float | None) -> None:
        """Block until ``needed`` of ``ids`` are local (or raise GetTimeoutError)."""
        waiter = _Waiter(needed)
        registered = []
        with self._lock:
            for object_id in dict.fromkeys(ids):
                if object_id in self._local:
                    waiter.needed -= 1
                else:
                    self._waiters.setdefault(object_id, []).append(waiter)
                    registered.append(object_id)
            done = waiter.needed <= 0
        if done:
            if registered:
                self._unregister(waiter, registered)
            return
        if self._lost or self.comm.closed:
            self._unregister(waiter, registered)
            raise ConnectionLostError(
                "lost the connection to the graphstore scheduler; the cluster is gone")
        wanted = [i for i in registered if i not in self._direct]
        if wanted:            # an actor sends its results here itself
            self._send(msg.WantObjects(wanted))
        direct = len(wanted) < len(registered)
        blocked = self.on_block() if self.on_block is not None else None
        try:
            if direct:
                # Actor results come straight from the actor; should one not come (its
                # connection broke after the scheduler recorded it), ask the scheduler.
                first = _DIRECT_PATIENCE if timeout is None else min(timeout,
                                                                     _DIRECT_PATIENCE)
                finished = waiter.wait(first)
                if not finished:
                    with self._lock:
                        late = [i for i in registered if i not in self._local]
                    self._requested.difference_update(late)
                    self._send(msg.WantObjects(late))
                    finished = waiter.wait(None if timeout is None else timeout - first)
            else:
                finished = waiter.wait(timeout)
        finally:
            if blocked is not None:
                self.on_unblock(blocked)
        if not finished:
            self._unregister(waiter, registered)
            if waiter.needed <= 0:
                return
            raise GetTimeoutError(
                f"get() timed out after {timeout} s with {waiter.needed} of "
                f"{len(registered)} object(s) not ready")
        if self._closed:
            raise ConnectionLostError("graphstore was shut down while waiting")

    def _unregister(self, waiter: _Waiter, ids: list[bytes]) -> None:
        with self._lock:
            for object_id in ids:
                waiters = self._waiters.get(object_id)
                if waiters and waiter in waiters:
                    waiters.remove(waiter)
                    if not waiters:
                        del self._waiters[object_id]

    def _value(self, object_id: bytes):
        entry = self._local.get(object_id)
        if entry is None:
            raise GraphstoreError(f"object {object_id.hex()} is not available locally")
        payload, error, locations = entry
        if error is not None:
            raise loads(error)
        if payload is None:
            return self._load_stored(object_id, locations)
        return loads(payload)

    def wait(self, refs: Sequence[ObjectRef], num_returns: int = 1,
             timeout: float | None = None, fetch_local: bool = True):
        if isinstance(refs, ObjectRef) or not isinstance(refs, (list, tuple)):
            raise TypeError("wait() takes a list of ObjectRefs")
        for ref in refs:
            if not isinstance(ref, ObjectRef):
                raise TypeError(f"wait() takes ObjectRefs; got {type(ref).__name__}")
        if len(set(refs)) != len(refs):
            raise ValueError("wait() got the same ObjectRef more than once")
        if not 0 <= num_returns <= len(refs):
            raise ValueError(f"num_returns={num_returns} must be between 0 and the number "
                             f"of refs ({len(refs)})")
        local = self._local
        missing = [r._id for r in refs if r._id not in local]
        have = len(refs) - len(missing)
        if have < num_returns:
            try:
                self._await(missing, num_returns - have, timeout)
            except GetTimeoutError:
                pass
        ready, not_ready = [], []
        for ref in refs:
            if ref._id in local and len(ready) < num_returns:
                ready.append(ref)
            else:
                not_ready.append(ref)
        return ready, not_ready

    def request(self, message, timeout: float | None = 30.0):
        """Send a request to the scheduler from a user thread and wait for the reply."""
        import asyncio
        if self._lost or self.comm.closed:
            raise ConnectionLostError("lost the connection to the graphstore scheduler")
        async def call():
            self._drain()  # what this thread queued before goes first
            self.flush_deferred()
            return await self.comm.request(message, timeout)
        return asyncio.run_coroutine_threadsafe(call(), self.loop).result()

    def future(self, ref: ObjectRef) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()
        object_id = ref._id
        with self._lock:
            ready = object_id in self._local
            if not ready:
                self._waiters.setdefault(object_id, []).append(
                    _Waiter(1, future=future, ref_id=object_id))
        if ready:
            try:
                future.set_result(self._value(object_id))
            except BaseException as exc:
                future.set_exception(exc)
        else:
            self._send(msg.WantObjects([object_id]))
            # Keep the ref alive until the future completes, so the object stays held.
            future.add_done_callback(lambda f, keep=ref: None)
        return future


def _raise_open_file_limit() -> None:
    """Lift the soft limit on open descriptors to the hard one (as Ray and Dask do)."""
    try:
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ImportError, ValueError, OSError):
        pass


def _pickled(exc: BaseException) -> bytes:
    import pickle
    return pickle.dumps(exc, protocol=5)
