"""Reading and writing large objects: shared memory on this host, fetches from others.

An object above the inline threshold lives in a worker's shared-memory store. ``put``
writes it once into a store on this host (a worker's own, or one the scheduler allocates
on the host for a driver or actor process); ``get`` maps it in place, read-only, pinned
while any view of it lives; an object on another host streams over TCP from its worker's
peer server, straight into this worker's store (or this driver's memory); a spilled one
is read back by a store first.

Thread-safety: ``put_stored``, ``load_stored``, ``store_value``, ``load_value`` and
``premap_reserves`` may be called from any thread; ``drop_departed_peers``,
``close_peers`` and the coroutines only on the process's event loop. One lock guards the
leases, views and fetches in flight.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import threading
import time
import weakref
from typing import TYPE_CHECKING

from graphstore.core import protocol as msg
from graphstore.core import shm
from graphstore.core.comm import RemoteCallError, connect
from graphstore.core.protocol import unwrap, wire_payload
from graphstore.core.serialization import loads, nbytes
from graphstore.exceptions import (ConnectionLostError, GraphstoreError, ObjectLostError,
                                   ObjectStoreFullError)
from graphstore.runtime.roles import DriverRole, WorkerRole

if TYPE_CHECKING:
    from graphstore.runtime.runtime import Runtime

logger = logging.getLogger("graphstore.runtime")


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
        self._lock = threading.Lock()
        self._peer_comms: dict[str, object] = {}
        self._mapped: dict[bytes, int] = {}
        _raise_open_file_limit()  # a lease is a descriptor per segment this process views
        #: segment -> [fd holding a shared lock, number of live views]: see shm.lease.
        self._leases: dict[str, list] = {}
        #: Objects this process put into a store, while it holds them -> (segment, an
        #: open descriptor of it without a lock, its inode): see ``keep_open``.
        self._put_files: dict[bytes, tuple] = {}
        self._fetching: dict[bytes, concurrent.futures.Future] = {}
        self.mappings = shm.MappingCache()
        self._premapping = False
        self._reserves: set[str] = set()  # reserve segments mapped ahead of a put

    def forget_put(self, object_id: bytes) -> None:
        """Loop thread: this process's last ref to its own put is gone."""
        put = self._put_files.pop(object_id, None)
        if put is not None:
            os.close(put[1])

    def close(self) -> None:
        """Close every descriptor held (the cluster's stores are going away with it)."""
        with self._lock:
            leases, self._leases = self._leases, {}
            puts, self._put_files = self._put_files, {}
        for fd, _ in leases.values():
            os.close(fd)
        for _, fd, _ in puts.values():
            os.close(fd)

    def put_stored(self, object_id: bytes, buffers) -> list | None:
        """Write a large object straight into a store on this host (one copy).

        Returns [worker id, worker address, segment, size], or None when this host has
        no store (the object then travels inline).
        """
        if self._store is not None:
            segment, size = self._write_to_local_store(object_id, buffers)
            return [self._runtime.peer_id, self._address, segment, size]
        size = shm.encoded_size(buffers)
        node_id = self._runtime.node_id
        if not any(w[1] == node_id for w in self._runtime.cluster_info.get("workers", [])):
            return None
        try:
            worker_id, address, segment = self._runtime.request(
                msg.AllocateOnNode(object_id, size, self._runtime.node_id), timeout=120)
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

    def keep_open(self, object_id: bytes, segment: str) -> None:
        """Keep the segment of this process's own put open while it holds the ref, so
        that a get of it needs no open() (slow right after a large copy). Only open, not
        locked: the store may still reclaim the segment once the object spilled (the get
        then sees the name gone)."""
        try:
            fd = os.open(shm.segment_path(segment), os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            return
        self._put_files[object_id] = (segment, fd, os.fstat(fd).st_ino)

    def premap_reserves(self) -> None:
        """Map the pre-faulted reserve segment of each store on this host, page tables
        filled, in a background thread: a put that lands there then copies at memory
        speed instead of paying a fault per 4 KiB page (docs/object-store.md).
        Best effort, for drivers; at most one round runs at a time."""
        with self._lock:
            if not self._is_driver or self._premapping or self._runtime.closed:
                return
            self._premapping = True

        def run():
            try:
                self._reserves = {n for n in self._reserves if self.mappings.has(n)}
                for _, node, address in self._runtime.cluster_info.get("workers", []):
                    if node != self._runtime.node_id or self._runtime.closed:
                        continue
                    reserve = self.peer_request(address, msg.ReserveSegment(), timeout=30)
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
        asked again: it knows new copies, or has the object computed again."""
        deadline = None
        attempt = 0
        error = None
        while True:
            size = locations[0][3] if locations else 0
            for node, address, segment, size in locations:
                if node != self._runtime.node_id or node is None:
                    continue
                view = self._pinned_view(object_id, segment, size)
                if view is not None:
                    return loads(shm.read_object(view))
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
                try:
                    data = self._fetch(object_id, remote)
                except ObjectLostError as exc:   # no copy answered: its worker may be dead
                    error = exc
                else:
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
            self._runtime.send_from_any_thread(msg.Pin([object_id]))
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
        if self._runtime.closed:
            return
        self._release_lease(segment)
        with self._lock:
            n = self._mapped.get(object_id, 1) - 1
            if n > 0:
                self._mapped[object_id] = n
                return
            self._mapped.pop(object_id, None)
        self._runtime.send_from_any_thread(msg.Unpin([object_id]))

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
                    self._fetch_async(object_id, locations), self._runtime.loop).result()
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
                        self._store.free(object_id, reusable=True)
                        raise
                    finally:
                        target.release()
                    self._store.seal(object_id)
                    self._runtime.send_from_any_thread(msg.ObjectAdded(object_id, entry.name))
                    return entry.name
                reply = await comm.request(msg.FetchObject(object_id),
                                           sinks=[bytearray(size)])
                return unwrap(reply[1])
            except Exception as exc:
                errors.append(f"{address}: {exc}")
        raise ObjectLostError(f"could not fetch object {object_id.hex()} from any copy: "
                              + "; ".join(errors))

    def drop_departed_peers(self, live_addresses: set) -> None:
        """Loop thread: close connections to workers the scheduler counts as gone; their
        pending fetches fail, and readers ask the scheduler for another copy."""
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
            comm.handler = lambda c, m: None
            asyncio.ensure_future(comm.read_loop())
            self._peer_comms[address] = comm
        return comm

    def peer_request(self, address: str, message, timeout: float = 60):
        async def call():
            comm = await self._peer(address)
            return await comm.request(message, timeout=timeout)
        return asyncio.run_coroutine_threadsafe(call(), self._runtime.loop).result(timeout + 5)


def _raise_open_file_limit() -> None:
    """Lift the soft limit on open descriptors to the hard one (as Ray and Dask do)."""
    try:
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ImportError, ValueError, OSError):
        pass
