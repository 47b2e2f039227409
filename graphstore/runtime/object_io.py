"""Reading and writing large objects: shared memory on this host, fetches from others.

An object above the inline threshold lives in a worker's shared-memory store. ``put``
writes it once into a store on this host (a worker's own, or, from a driver, task or
actor process, one of the host's workers it asks directly); ``get`` maps it in place,
read-only; an object on another host streams over TCP from its worker's peer server,
straight into this worker's store (or this driver's memory); a spilled one is read back
by a store first.

**Leases.** A process other than the store's worker reads an object only under a lease
from the store (``LeaseObjects``; a put comes with one): the store does not reuse the
object's bytes until the lease is given back. The lease is kept, idle, while this process
holds a ref to the object, so later gets of it cost no round trip; it is given back
(``ReleaseLeases``) when the last ref and the last view of it are gone, or at once when
the store asks (``RevokeLeases``: the object was freed or spilled) unless views of it
still live, then when they die. The store's own worker pins instead (``store.pin``).

Thread-safety: ``put_stored``, ``load_stored``, ``store_value``, ``load_value`` and
``premap_reserves`` may be called from any thread; ``forget``, ``drop_departed_peers``,
``close_peers`` and the coroutines only on the process's event loop. One lock guards the
leases and fetches in flight.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import logging
import os
import threading
import time
import weakref
from typing import TYPE_CHECKING

from graphstore.core import protocol as msg
from graphstore.core import shm
from graphstore.core.comm import RemoteCallError, connect
from graphstore.core.loop_thread import call_on_loop
from graphstore.core.protocol import unwrap, wire_payload
from graphstore.core.serialization import loads, loads_at, nbytes
from graphstore.exceptions import (ConnectionLostError, GraphstoreError, ObjectLostError,
                                   ObjectStoreFullError)
from graphstore.runtime.roles import DriverRole, WorkerRole

if TYPE_CHECKING:
    from graphstore.runtime.runtime import Runtime

logger = logging.getLogger("graphstore.runtime")


#: Objects of at least this many bytes are written with pwrite into a dedicated segment
#: this process has not mapped (see ``shm.write_object_file``).
_PWRITE_ABOVE = 16 * 1024 * 1024
#: Restores a get of many spilled objects keeps in flight at once.
_RESTORES_IN_FLIGHT = 32
#: How long a store's request for a lease this process does not know is remembered: longer
#: than any grant can be on its way (requests time out after 60 s).
_GRANT_IN_FLIGHT_SECONDS = 120.0


class _Lease:
    """This process's right to read one object's bytes in one store, and its views."""
    __slots__ = ("address", "segment", "size", "views", "wanted", "returned", "entry",
                 "region")

    def __init__(self, address: str, segment: str, size: int, views: int, entry=None):
        self.address = address      # the store's worker
        self.segment = segment
        self.size = size
        self.views = views          # live arrays built on it
        self.wanted = True          # this process still holds a ref to the object
        self.returned = False       # given back on the store's request (RevokeLeases)
        self.entry = entry          # in the store's own worker: its pinned entry
        self.region = None          # a read-only view of its bytes, once mapped


class ObjectIO:
    """This process's reads and writes of stored objects (see the module docstring)."""

    def __init__(self, runtime: "Runtime"):
        #: The process's identity, settings and connection are the runtime's: read there.
        self._runtime = runtime
        role = runtime.role
        self._is_driver = isinstance(role, DriverRole)
        worker = role if isinstance(role, WorkerRole) else None
        #: In a worker: its own store and peer address; drivers use a local worker's.
        self._store = worker.store if worker else None
        self._address = worker.address if worker else ""
        #: In a worker: reads a spilled object back into its store (returns the segment).
        self._restore_spilled = worker.restore_spilled if worker else None
        #: Reentrant: a view's finalizer may run (garbage collection) while it is held.
        self._lock = threading.RLock()
        self._peer_comms: dict[str, object] = {}
        #: The lease new views of an object use; retired ones (revoked, or replaced by a
        #: lease in another store) live on while their views do.
        self._leases: dict[bytes, _Lease] = {}
        self._retired: dict[tuple[bytes, str], _Lease] = {}
        #: Leases a store asked back before this process knew it had them: a grant whose
        #: reply was still on its way to the thread that asked. (object id, segment) ->
        #: when asked; such a grant, once it arrives, is given back unused.
        self._revoked_early: dict[tuple[bytes, str], float] = {}
        #: Leases to give back, by store address, sent in one message per loop turn.
        self._to_release: dict[str, list] = {}
        self._release_scheduled = False
        self._fetching: dict[bytes, concurrent.futures.Future] = {}
        #: Where ``lease_ahead`` had spilled objects restored, for the reads after it.
        self._restored: dict[bytes, list] = {}
        #: Weak references to live views, whose callbacks end their leases' views.
        self._view_refs: dict[int, weakref.ref] = {}
        self._next_store = itertools.count()
        self.mappings = shm.MappingCache()
        self._premapping = False
        self._premap_again = False
        self._reserves: set[str] = set()  # reserve segments mapped ahead of a put
        #: Objects fetched from other hosts' stores and their bytes (loop thread only).
        self._fetched_objects = 0
        self._fetched_bytes = 0

    def fetched(self) -> tuple[int, int]:
        """(objects, bytes) this process fetched from workers on other hosts so far: the
        worker's transfer metrics (any thread; two plain ints, read without the lock)."""
        return self._fetched_objects, self._fetched_bytes

    def forget(self, object_id: bytes) -> None:
        """Loop thread: this process's last ref to the object is gone: give back its
        lease once no view of it lives."""
        with self._lock:
            self._restored.pop(object_id, None)
            lease = self._leases.get(object_id)
            if lease is None or lease.entry is not None:
                return
            lease.wanted = False
            if lease.views == 0:
                del self._leases[object_id]
                self._release_later(object_id, lease)

    def close(self) -> None:
        """Forget every lease (the cluster's stores are going away with it)."""
        with self._lock:
            self._leases.clear()
            self._retired.clear()
            self._to_release.clear()

    def put_stored(self, object_id: bytes, buffers, lease: bool = False) -> list | None:
        """Write a large object straight into a store on this host (one copy).

        Returns [worker id, worker address, segment, size], or None when this host has
        no store (the object then travels inline). ``lease``: keep a lease on it, for a
        process that will read it back (a put; a task's result is not read here).
        """
        if self._store is not None:
            segment, size = self._write_to_local_store(object_id, buffers)
            return [self._runtime.peer_id, self._address, segment, size]
        size = shm.encoded_size(buffers)
        node_id = self._runtime.node_id
        stores = [w for w in self._runtime.cluster_info.get("workers", []) if w[1] == node_id]
        if not stores:
            return None
        first = next(self._next_store) % len(stores)
        error: Exception | None = None
        for worker_id, _, address in stores[first:] + stores[:first]:
            try:
                segment = self.peer_request(
                    address, msg.AllocateObject(object_id, size, lease), timeout=120)
                break
            except RemoteCallError as exc:
                if not isinstance(exc, ObjectStoreFullError):
                    raise
                error = ObjectStoreFullError(exc.text)
            except (ConnectionLostError, OSError, concurrent.futures.TimeoutError) as exc:
                error = exc        # that worker is going away: another store of the host
        else:
            raise error
        # A reserve (mapped ahead or not) is used up: map the store's next one meanwhile.
        name = shm.file_of(segment)
        used_reserve = name in self._reserves or not self.mappings.has(name)
        self._write_segment(segment, size, buffers)
        if lease:
            granted = _Lease(address, segment, size, 0)
            if not self._revoked_before_known(object_id, granted):
                with self._lock:
                    self._leases[object_id] = granted
        if used_reserve:
            self._reserves.discard(name)
            self.premap_reserves()
        return [worker_id, address, segment, size]

    def premap_reserves(self) -> None:
        """Map the pre-faulted reserve segments of each store on this host, page tables
        filled, in a background thread at the lowest priority: a put that lands there
        then copies at memory speed instead of paying a fault per 4 KiB page
        (docs/object-store.md). Best effort, for drivers; at most one round at a time."""
        with self._lock:
            if not self._is_driver or self._runtime.closed:
                return
            if self._premapping:        # the running round goes once more at its end
                self._premap_again = True
                return
            self._premapping = True
            self._premap_again = False

        def run():
            try:
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
            except (AttributeError, OSError):
                pass          # only this thread is lowered (Linux); elsewhere it runs as is
            again = True
            while again:
                try:
                    self._premap_round()
                except Exception as exc:  # a put maps the segment itself
                    logger.debug("could not map a store's reserve: %r", exc)
                with self._lock:
                    again = self._premap_again and not self._runtime.closed
                    self._premap_again = False
                    self._premapping = again
        threading.Thread(target=run, name="graphstore-premap", daemon=True).start()

    def _premap_round(self) -> None:
        self._reserves = {n for n in self._reserves if self.mappings.has(n)}
        for _, node, address in self._runtime.cluster_info.get("workers", []):
            if node != self._runtime.node_id or self._runtime.closed:
                continue
            for name, size in self.peer_request(address, msg.ReserveSegment(),
                                                timeout=30) or ():
                if name not in self._reserves:
                    self.mappings.get(name, size, populate=True)
                    self._reserves.add(name)

    def _write_segment(self, segment: str, size: int, buffers) -> None:
        if size >= _PWRITE_ABOVE and "@" not in segment and not self.mappings.has(segment):
            # A large dedicated segment this process has not mapped (not a reserve it
            # mapped ahead): pwrite costs half the CPU of mapping and copying.
            fd = os.open(shm.segment_path(segment), os.O_RDWR | os.O_CLOEXEC)
            try:
                shm.write_object_file(fd, buffers)
            finally:
                os.close(fd)
            return
        target = self.mappings.region(segment, size, populate=True)
        try:
            shm.write_object(target, buffers)
        finally:
            target.release()

    def store_value(self, object_id: bytes, buffers) -> tuple:
        """For a task's result: ``(payload, 0, None)`` inline, or ``(None, size,
        segment)`` once written into this worker's store; in a task process (no store of
        its own) ``(None, size, [worker id, segment])`` of a store on this host."""
        if nbytes(buffers) > self._runtime.config.inline_threshold:
            if self._store is not None:
                segment, size = self._write_to_local_store(object_id, buffers)
                return None, size, segment
            if not self._is_driver:
                location = self.put_stored(object_id, buffers)
                if location is not None:
                    return None, location[3], [location[0], location[2]]
        return wire_payload(buffers, self._runtime.split_bytes), 0, None

    def _write_to_local_store(self, object_id: bytes, buffers) -> tuple[str, int]:
        """In a worker: allocate in its own store, copy the buffers in, seal."""
        size = shm.encoded_size(buffers)
        entry = self._store.allocate(object_id, size)
        self._write_segment(entry.name, size, buffers)
        self._store.seal(object_id)
        return entry.name, size

    def load_value(self, object_id: bytes, payload, locations):
        """Deserialize an object given inline or by its locations (zero-copy on this
        host; fetched over TCP otherwise)."""
        if payload is not None:
            return loads(payload)
        return self.load_stored(object_id, locations)

    def load_stored(self, object_id: bytes, locations):
        """A stored object's value from where ``locations`` says it is: mapped in place
        on this host, restored from a spill, or fetched from another host. When no copy
        can be read (freed, spilled meanwhile, or its worker died), the scheduler is
        asked again: it knows new copies, or has the object computed again.

        In a task, each read is a span of it (``spans``): "fetch" for a copy on this host,
        "transfer" for one from another host (the store records a restore itself)."""
        spans = self._runtime.spans
        deadline = None
        attempt = 0
        error = None
        if self._restored:
            with self._lock:
                restored = self._restored.pop(object_id, None)
            if restored is not None:
                locations = restored + list(locations)
        while True:
            size = locations[0][3] if locations else 0
            for node, address, segment, size in locations:
                if node != self._runtime.node_id or node is None:
                    continue
                began = time.time() if spans.enabled else 0.0
                view = self._leased_view(object_id, address, segment, size)
                if view is not None:
                    value = loads_at(view, shm.buffer_table(view))
                    if began:
                        spans.add("fetch", object_id.hex(), began, time.time(), size,
                                  address)
                    return value
                # else spilled or freed since this location was known
            spilled = [loc for loc in locations if loc[0] is None]
            remote = [loc for loc in locations if loc[0] is not None
                      and loc[0] != self._runtime.node_id]
            if spilled:
                _, path, offset, size = spilled[0]
                try:
                    if self._restore_spilled is not None:  # a worker: into its own store
                        segment = self._restore_spilled(object_id, path, offset, size)
                        self._runtime.send_from_any_thread(msg.ObjectAdded(object_id, segment))
                        locations = [[self._runtime.node_id, self._address, segment, size]]
                    else:                                 # a driver: a store restores it
                        _, address, segment, node = self._runtime.request(
                            msg.RestoreOnNode(object_id, self._runtime.node_id), timeout=300)
                        locations = [[node, address, segment, size]]
                    continue
                except (ObjectStoreFullError, ConnectionLostError):
                    raise
                except (OSError, RemoteCallError, GraphstoreError) as exc:
                    error = exc     # e.g. the file was on a lost host's disk: ask again
                    remote = []
            if remote:
                began = time.time() if spans.enabled else 0.0
                try:
                    data = self._fetch(object_id, remote)
                except ObjectLostError as exc:   # no copy answered: its worker may be dead
                    error = exc
                else:
                    if began:
                        spans.add("transfer", object_id.hex(), began, time.time(), size,
                                  remote[0][1])
                    if isinstance(data, str):     # landed in this worker's store: map it
                        locations = [[self._runtime.node_id, self._address, data, size]]
                        continue
                    return loads(shm.read_object(data))
            attempt += 1
            now = time.monotonic()
            if deadline is None:
                # Long enough for the scheduler to notice a silent worker and say so.
                deadline = now + 2 * self._runtime.config.worker_timeout + 5
            elif now > deadline:
                raise ObjectLostError(f"object {object_id.hex()} could not be read from "
                                      f"any copy: {error or 'every copy is gone'}")
            if attempt > 1:
                time.sleep(min(0.5, 0.01 * 2 ** attempt))
            fresh = self._runtime.request(msg.LocateObject(object_id))
            if fresh is None:  # being computed again, failed, or lost: wait for it
                self._runtime.forget_local(object_id)
                self._runtime.await_objects([object_id], 1, None)
                return self._runtime.value(object_id)
            locations = fresh

    def _leased_view(self, object_id: bytes, address: str, segment: str, size: int):
        """A read-only view of an object's bytes in the store at ``address``, under a
        lease (a pin in the store's own worker) while any array built on it lives; None
        when the store no longer has it there (spilled or freed since the location was
        known).

        The view is a fresh numpy array over the (cached) mapping; every buffer handed
        to unpickling derives from it, so when the last array built on the object dies,
        the view dies and the lease goes idle (or back to the store).
        """
        import numpy
        with self._lock:
            lease = self._leases.get(object_id)
            if lease is not None and lease.address == address:
                lease.views += 1
            else:
                lease = None
        if lease is None:
            lease = self._new_lease(object_id, address)
            if lease is None:
                return None
        try:
            region = lease.region
            if region is None:
                region = lease.region = self.mappings.region(
                    lease.segment, lease.size).toreadonly()
        except FileNotFoundError:
            # Its store's worker died and its files were swept: the scheduler knows
            # where the object is now (taken over by another worker, or lost).
            with self._lock:
                lease.returned = True
                if self._leases.get(object_id) is lease:
                    del self._leases[object_id]
            return None
        except BaseException:
            self._view_gone(object_id, lease)
            raise
        view = numpy.frombuffer(region, dtype=numpy.uint8)
        # A weak reference with a callback (lighter than weakref.finalize: a get of ten
        # thousand objects makes ten thousand), kept alive until it fires.
        refs = self._view_refs

        def gone(ref, object_id=object_id, lease=lease):
            refs.pop(id(ref), None)
            self._view_gone(object_id, lease)
        ref = weakref.ref(view, gone)
        refs[id(ref)] = ref        # by id: a weak reference hashes as its array would
        return view

    def _new_lease(self, object_id: bytes, address: str) -> _Lease | None:
        """Ask the store at ``address`` for the object (a round trip; in the store's own
        worker, a pin), with one view counted; None when it is not there."""
        if self._store is not None and address == self._address:
            entry = self._store.pin(object_id)
            if entry is None:
                return None
            lease = _Lease(address, entry.name, entry.size, 1, entry)
        else:
            try:
                granted = self.peer_request(address, msg.LeaseObjects([object_id]))[0]
            except (ConnectionLostError, OSError, concurrent.futures.TimeoutError):
                return None      # its worker is gone: the scheduler knows what is left
            if granted is None:
                return None
            lease = _Lease(address, granted[0], granted[1], 1)
            if self._revoked_before_known(object_id, lease):
                return None
        return self._install(object_id, lease)

    def _install(self, object_id: bytes, lease: _Lease) -> _Lease:
        """Make ``lease`` the one new views of the object use, and return the lease in
        use: another thread's grant of the same bytes meanwhile is the same lease (its
        views are added to it); a lease of other bytes is retired."""
        with self._lock:
            current = self._leases.get(object_id)
            if (current is not None and current.address == lease.address
                    and current.segment == lease.segment):
                current.views += lease.views
                if lease.entry is not None:
                    self._store.unpin(lease.entry)
                return current
            if current is not None:
                self._retire(object_id, current)
            self._leases[object_id] = lease
        return lease

    def _revoked_before_known(self, object_id: bytes, lease: _Lease) -> bool:
        """True (and the lease is given back) when the store asked for this grant back
        while its reply was on the way: the object is no longer there."""
        with self._lock:
            if self._revoked_early.pop((object_id, lease.segment), None) is None:
                return False
            self._release_later(object_id, lease)
            return True

    def lease_ahead(self, stored: list) -> None:
        """Before reading many stored objects (``[(id, locations)]``): lease those on
        this host that need it, in one request per store instead of one per object; in
        a driver, have those no longer in memory (spilled) restored, many at once, and
        lease them too. What fails here is left to the reads, one by one."""
        node_id = self._runtime.node_id
        with self._lock:
            todo = [(object_id, locations) for object_id, locations in stored
                    if object_id not in self._leases]
        if len(todo) < 2:
            return
        in_memory = [(i, locs) for i, locs in todo if any(loc[0] == node_id for loc in locs)]
        missing = self._lease_many(in_memory)
        if self._restore_spilled is None:        # a driver (a worker restores itself)
            missing += [i for i, locs in todo
                        if not any(loc[0] == node_id for loc in locs)
                        and any(loc[0] is None for loc in locs)]
            if len(missing) > 1:
                restored = self._restore_many(missing)
                self._lease_many(list(restored.items()))

    def _lease_many(self, stored: list) -> list:
        """Lease ``[(id, locations)]`` from the stores of this host that hold them, one
        request per store; returns the ids no store had."""
        node_id = self._runtime.node_id
        wanted: dict[str, list[bytes]] = {}
        for object_id, locations in stored:
            for node, address, _, _ in locations:
                if node == node_id and address != self._address:
                    wanted.setdefault(address, []).append(object_id)
                    break
        if not wanted:
            return []

        async def ask(address: str, ids: list):
            try:
                comm = await self._peer(address)
                return address, ids, await comm.request(msg.LeaseObjects(ids), timeout=60)
            except Exception:       # the reads ask again, one by one
                return address, ids, [None] * len(ids)

        async def ask_all():
            return await asyncio.gather(*(ask(a, ids) for a, ids in wanted.items()))
        replies = self._on_loop(ask_all).result(90)
        missing = []
        for address, ids, granted in replies:
            for object_id, grant in zip(ids, granted):
                if grant is None:
                    missing.append(object_id)
                    continue
                lease = _Lease(address, grant[0], grant[1], 0)
                if not self._revoked_before_known(object_id, lease):
                    self._install(object_id, lease)
        return missing

    def _restore_many(self, ids: list) -> dict:
        """Find where objects are now and have the spilled ones restored by stores on
        this host, many requests in flight at once: {id: [[node, address, segment,
        size]]} of those now in memory here. The reads that follow use these locations
        (``load_stored``)."""
        runtime = self._runtime
        node_id = runtime.node_id

        async def locate(object_id, limit):
            async with limit:
                try:
                    locations = await runtime.comm.request(msg.LocateObject(object_id), 60)
                    if not locations:
                        return None
                    for loc in locations:
                        if loc[0] == node_id:
                            return object_id, [loc]
                    spill = [loc for loc in locations if loc[0] is None]
                    if not spill:
                        return None
                    _, address, segment, node = await runtime.comm.request(
                        msg.RestoreOnNode(object_id, node_id), 300)
                    return object_id, [[node, address, segment, spill[0][3]]]
                except Exception:
                    return None

        async def locate_all():
            limit = asyncio.Semaphore(_RESTORES_IN_FLIGHT)
            runtime.flush()
            return await asyncio.gather(*(locate(i, limit) for i in ids))
        restored = dict(done for done in self._on_loop(locate_all).result()
                        if done is not None)
        with self._lock:
            self._restored.update(restored)
        return restored

    def _retire(self, object_id: bytes, lease: _Lease) -> None:
        """Under the lock: ``lease`` serves no new view; given back when idle."""
        if self._leases.get(object_id) is lease:
            del self._leases[object_id]
        if lease.views:
            self._retired[(object_id, lease.segment)] = lease
        else:
            self._give_back(object_id, lease)

    def _view_gone(self, object_id: bytes, lease: _Lease) -> None:
        """Any thread (a finalizer): one view of ``lease`` died."""
        if self._runtime.closed:
            return
        with self._lock:
            lease.views -= 1
            if lease.views > 0:
                return
            current = self._leases.get(object_id) is lease
            if current and lease.entry is None and lease.wanted:
                return                     # idle: kept for this process's next get
            if current:
                del self._leases[object_id]
            else:
                self._retired.pop((object_id, lease.segment), None)
            self._give_back(object_id, lease)

    def _give_back(self, object_id: bytes, lease: _Lease) -> None:
        """Under the lock: end a lease with no views."""
        if lease.entry is not None:
            self._store.unpin(lease.entry)
        elif not lease.returned:
            self._release_later(object_id, lease)

    def _release_later(self, object_id: bytes, lease: _Lease) -> None:
        """Under the lock: queue a ``ReleaseLeases`` for the store (sent from the loop,
        one message per store and loop turn)."""
        self._to_release.setdefault(lease.address, []).append([object_id, lease.segment])
        if not self._release_scheduled and not self._runtime.closed:
            self._release_scheduled = True
            self._runtime.loop.call_soon_threadsafe(self._send_releases)

    def _send_releases(self) -> None:
        with self._lock:
            pending, self._to_release = self._to_release, {}
            self._release_scheduled = False
        for address, keys in pending.items():
            comm = self._peer_comms.get(address)
            if comm is not None and not comm.closed:  # else its leases ended with it
                comm.send(msg.ReleaseLeases(keys))

    def _on_store_message(self, comm, m):
        """Loop thread: a store asks for leases back (``RevokeLeases``); reply [those
        given back now, those still viewed (given back when their views die)]."""
        if type(m) is not msg.RevokeLeases:
            return None
        released, viewed = [], []
        now = time.monotonic()
        with self._lock:
            if self._revoked_early:
                self._revoked_early = {k: t for k, t in self._revoked_early.items()
                                       if now - t < _GRANT_IN_FLIGHT_SECONDS}
            for object_id, segment in m.keys:
                object_id = bytes(object_id)
                lease = self._leases.get(object_id)
                if lease is None or lease.segment != segment:
                    lease = self._retired.get((object_id, segment))
                if lease is None:
                    # Given back already (that message is ahead of this reply), or its
                    # grant has not reached the thread that asked yet: then that thread
                    # gives it back (``_revoked_before_known``). Never answered here, so
                    # a later grant of the same object and segment is not released.
                    self._revoked_early[(object_id, segment)] = now
                    continue
                if lease.returned:
                    continue                       # answered before
                if self._leases.get(object_id) is lease:
                    del self._leases[object_id]
                if lease.views:                    # given back when its views die
                    self._retired[(object_id, segment)] = lease
                    viewed.append([object_id, segment])
                else:
                    lease.returned = True
                    released.append([object_id, segment])
        return [released, viewed]

    def copy_to_store(self, object_id: bytes, locations) -> str:
        """A worker: bring a copy of a stored object from another worker into this
        worker's store, because a retiring worker holds its only copy
        (``ReplicateObjects``); its ``ObjectAdded`` tells the scheduler. Blocks: call it
        from a thread other than the loop's.

        Returns:
            The copy's segment name.

        Raises:
            ObjectLostError: no copy could be fetched.
        """
        if self._store is None:
            raise RuntimeError("only a worker has a store to copy objects into")
        sources = [loc for loc in locations if loc[0] is not None and loc[1] != self._address]
        return self._fetch(object_id, sources)

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
                result = self._on_loop(self._fetch_async, object_id, locations).result()
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
                if self._store is not None:
                    entry = await asyncio.get_running_loop().run_in_executor(
                        None, self._store.allocate, object_id, size)
                    target = self.mappings.region(entry.name, size, populate=True)
                    try:
                        reply = await comm.request(msg.FetchObject(object_id),
                                                   sinks=[target])
                        landed = unwrap(reply[1])
                        if memoryview(landed).obj is not target.obj:
                            target[:] = landed
                        del landed, reply
                    except BaseException:
                        self._store.free(object_id, reusable=True)
                        raise
                    finally:
                        target.release()
                    self._store.seal(object_id)
                    self._count_fetch(size)
                    self._runtime.send_from_any_thread(msg.ObjectAdded(object_id, entry.name))
                    return entry.name
                reply = await comm.request(msg.FetchObject(object_id),
                                           sinks=[bytearray(size)])
                data = unwrap(reply[1])
                self._count_fetch(size)
                return data
            except Exception as exc:
                errors.append(f"{address}: {exc}")
        raise ObjectLostError(f"could not fetch object {object_id.hex()} from any copy: "
                              + "; ".join(errors))

    def _count_fetch(self, size: int) -> None:
        self._fetched_objects += 1
        self._fetched_bytes += size

    def drop_departed_peers(self, live_addresses: set) -> None:
        """Loop thread: close connections to workers the scheduler counts as gone; their
        pending fetches fail, and readers ask the scheduler for another copy. Leases
        from their stores end (their views keep the bytes they map)."""
        with self._lock:
            for object_id, lease in list(self._leases.items()):
                if lease.address not in live_addresses and lease.entry is None:
                    lease.returned = True
                    del self._leases[object_id]
        for address, comm in list(self._peer_comms.items()):
            if address not in live_addresses:
                del self._peer_comms[address]
                comm.abort()

    def close_peers(self) -> None:
        """Loop thread: close the connections to workers' peer servers."""
        comms, self._peer_comms = list(self._peer_comms.values()), {}
        for comm in comms:
            comm.abort()

    async def _peer(self, address: str):
        comm = self._peer_comms.get(address)
        if comm is None or comm.closed:
            if self._runtime.closed:     # shutting down: close_peers ran or is about to
                raise ConnectionLostError("graphstore was shut down")
            comm = await connect(address, self._runtime.comm_token, tls=self._runtime.tls,
                                 split_bytes=self._runtime.split_bytes)
            if self._runtime.closed:
                comm.abort()
                raise ConnectionLostError("graphstore was shut down")
            comm.handler = self._on_store_message
            asyncio.ensure_future(comm.read_loop())
            self._peer_comms[address] = comm
        return comm

    def peer_request(self, address: str, message, timeout: float = 60):
        async def call():
            comm = await self._peer(address)
            return await comm.request(message, timeout=timeout)
        return self._on_loop(call).result(timeout + 5)

    def _on_loop(self, async_fn, *args) -> concurrent.futures.Future:
        """Start ``async_fn(*args)`` on the runtime's loop from a user thread; shutting
        down (a thread still mapping reserves, say) raises ConnectionLostError."""
        if self._runtime.closed:
            raise ConnectionLostError("graphstore was shut down")
        try:
            return call_on_loop(self._runtime.loop, async_fn, *args)
        except RuntimeError:   # the loop closed meanwhile
            raise ConnectionLostError("graphstore was shut down") from None
