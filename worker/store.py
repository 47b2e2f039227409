"""A worker's shared-memory object store: its segments, capacity, LRU order and pins.

Fresh shared memory costs a page fault per page (about 1 GB/s here, against about
10 GB/s for a warm copy), so freed segments that no other process still maps go to a pool
and are reused for the next object of a similar size. The pool counts against capacity
and is the first thing released under pressure.

Thread-safe: task threads write results while the event loop serves peers.
"""
from __future__ import annotations

import itertools
import os
import threading
import time
from collections import OrderedDict

from graphstore.core import shm
from graphstore.exceptions import ObjectStoreFullError

#: A pooled segment larger than this multiple of the object is shrunk to fit (the tail's
#: memory goes back to the OS, the head stays warm).
_SHRINK_ABOVE = 1.25
#: At most this many idle segments are kept for reuse.
_POOL_MAX_SEGMENTS = 32


class StoredObject:
    __slots__ = ("id", "name", "size", "capacity", "sealed", "pins", "last_use", "writer",
                 "spilled_at")

    def __init__(self, object_id: bytes, name: str, size: int, capacity: int, writer):
        self.id = object_id
        self.name = name
        self.size = size            # bytes of the encoded object
        self.capacity = capacity    # bytes of the segment file (>= size when reused)
        self.sealed = False
        self.pins = 0               # local users: running tasks, transfers in flight
        self.last_use = time.monotonic()
        self.writer = writer        # who is writing it until sealed (a peer id or None)
        self.spilled_at = None      # (path, offset) of a spill copy it was restored from


class SharedMemoryStore:
    def __init__(self, cluster_id: str, worker_tag: str, capacity: int):
        if capacity <= 0:
            raise ValueError(f"object store capacity must be positive, got {capacity}")
        self.cluster_id = cluster_id
        self.worker_tag = worker_tag
        self.capacity = capacity
        self.used = 0                 # bytes of live objects' segments
        self.pooled = 0               # bytes of idle segments kept for reuse
        self.objects: OrderedDict[bytes, StoredObject] = OrderedDict()  # LRU first
        self._pool: list[tuple[int, str, float]] = []  # (size, name, freed at)
        #: Name of the pre-faulted reserve segment while it waits in the pool.
        self.reserve_name: str | None = None
        self._shrinks: list[tuple[str, int]] = []
        self._closed = False
        self._names = itertools.count(1)
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)   # notified when memory is released
        self._lock_fd = shm.hold_lock(cluster_id, worker_tag)
        #: Locks of dead workers of this host whose segments this store took over.
        self._adopted_locks: dict[str, int] = {}
        self.stats = {"created": 0, "reused": 0, "reclaimed": 0, "freed": 0,
                      "bytes_written": 0}
        #: Set by the worker when spilling is on: called (without the lock) when the store
        #: needs room; ``allocate`` then waits up to ``wait_timeout`` for it.
        self.on_pressure = None
        #: Set by the worker: the spill target and its last error, for error messages.
        self.spill_problem = lambda: None
        self.wait_timeout = 0.0
        #: Set by the worker: forget this process's cached mapping of a segment, so the
        #: memory of an unlinked segment goes back to the system at once.
        self.forget_mapping = lambda name: None
        self.spill_threshold = 1.0

    # -- allocation -------------------------------------------------------------------
    def allocate(self, object_id: bytes, size: int, writer=None,
                 defer_shrink: bool = False) -> StoredObject:
        """Reserve a segment of ``size`` bytes for ``object_id`` (unsealed until ``seal``).

        When the store is full and spilling is on, waits for the spiller to make room.
        ``defer_shrink``: leave trimming a reused segment's tail to ``apply_shrinks``
        (a caller answering a remote writer trims after replying).
        """
        if size > self.capacity:
            raise ObjectStoreFullError(
                f"an object of {size:,} bytes does not fit in the object store, whose "
                f"capacity is {self.capacity:,} bytes; raise object_store_memory or store "
                f"smaller objects")
        deadline = time.monotonic() + self.wait_timeout
        while True:
            try:
                entry = self._allocate_now(object_id, size, writer)
            except ObjectStoreFullError:
                if self.on_pressure is None or time.monotonic() >= deadline:
                    raise
                self.on_pressure(size)
                with self._room:
                    self._room.wait(min(0.2, max(0.0, deadline - time.monotonic())))
                continue
            if self.on_pressure is not None and \
                    self.used > self.spill_threshold * self.capacity:
                self.on_pressure(0)
            if not defer_shrink:
                self.apply_shrinks()
            return entry

    def apply_shrinks(self) -> None:
        """Give back the tails of reused segments that were larger than their object."""
        with self._lock:
            pending, self._shrinks = self._shrinks, []
        for name, size in pending:
            try:
                shm.resize(name, size)
            except FileNotFoundError:
                pass

    def _allocate_now(self, object_id: bytes, size: int, writer) -> StoredObject:
        with self._lock:
            existing = self.objects.get(object_id)
            if existing is not None:
                return existing
            reused = self._take_from_pool(size)
            if reused is not None:
                segment_size, name = reused
                self.stats["reused"] += 1
            else:
                self._make_room(size)
                if self.used + self.pooled + size > self.capacity:
                    spilling = (" and nothing more could be spilled in "
                                f"{self.wait_timeout:g} s" if self.on_pressure else "")
                    problem = self.spill_problem()
                    if problem:
                        spilling += f" ({problem})"
                    raise ObjectStoreFullError(
                        f"the object store is full: {self.used:,} of {self.capacity:,} bytes "
                        f"in use{spilling}; an object of {size:,} bytes does not fit (free "
                        f"objects by dropping their refs, or raise object_store_memory)")
                name = self._new_name()
                os.close(shm.create(name, size))
                segment_size = size
                self.stats["created"] += 1
            entry = StoredObject(object_id, name, size, segment_size, writer)
            self.objects[object_id] = entry
            self.used += segment_size
            return entry

    def _take_from_pool(self, size: int) -> tuple[int, str] | None:
        best = None
        for i, (segment_size, name, _) in enumerate(self._pool):
            if segment_size >= size:
                if best is None or segment_size < self._pool[best][0]:
                    best = i
        if best is None:
            return None
        segment_size, name, _ = self._pool.pop(best)
        self.pooled -= segment_size
        if name == self.reserve_name:
            self.reserve_name = None
        if segment_size > size * _SHRINK_ABOVE:
            self._shrinks.append((name, size))
            segment_size = size
        return segment_size, name

    def _unlink(self, name: str) -> None:
        shm.unlink(name)
        self.forget_mapping(name)

    def _make_room(self, size: int) -> None:
        """Release pooled segments, oldest first, until ``size`` more bytes fit."""
        while self._pool and self.used + self.pooled + size > self.capacity:
            segment_size, name, _ = self._pool.pop(0)
            self.pooled -= segment_size
            self._unlink(name)

    def seal(self, object_id: bytes) -> StoredObject | None:
        with self._lock:
            entry = self.objects.get(object_id)
            if entry is not None and not entry.sealed:
                entry.sealed = True
                entry.writer = None
                self.stats["bytes_written"] += entry.size
            return entry

    def abort_writes_of(self, writer) -> list[bytes]:
        """A writer went away: drop what it allocated and never sealed."""
        with self._lock:
            dropped = [e.id for e in self.objects.values()
                       if not e.sealed and e.writer is not None and e.writer == writer]
        for object_id in dropped:
            self.free(object_id, reusable=True)
        return dropped

    # -- use --------------------------------------------------------------------------
    def get(self, object_id: bytes) -> StoredObject | None:
        with self._lock:
            entry = self.objects.get(object_id)
            if entry is not None and entry.sealed:
                entry.last_use = time.monotonic()
                self.objects.move_to_end(object_id)
                return entry
            return None

    def pin(self, object_id: bytes) -> StoredObject | None:
        """Mark an object in use here (a running task, a transfer); ``unpin`` when done."""
        with self._lock:
            entry = self.objects.get(object_id)
            if entry is None or not entry.sealed:
                return None
            entry.pins += 1
            entry.last_use = time.monotonic()
            self.objects.move_to_end(object_id)
            return entry

    def unpin(self, entry: StoredObject) -> None:
        with self._lock:
            entry.pins -= 1

    def free(self, object_id: bytes, reusable: bool) -> bool:
        """Release an object. Its segment is pooled when nobody can still be mapping it."""
        with self._lock:
            entry = self.objects.pop(object_id, None)
            if entry is None:
                return False
            self.used -= entry.capacity
            self.stats["freed"] += 1
            if (reusable and entry.pins == 0 and len(self._pool) < _POOL_MAX_SEGMENTS
                    and self.used + self.pooled + entry.capacity <= self.capacity):
                self._pool.append((entry.capacity, entry.name, time.monotonic()))
                self.pooled += entry.capacity
            else:
                self._unlink(entry.name)
            self._room.notify_all()
            return True

    def adopt(self, entries: list, wait: float = 5.0) -> list[bytes]:
        """Take over sealed objects of a dead worker of this host (``[[id, segment,
        size], ...]``): their segments outlive it in shared memory. Holding the dead
        worker's lock keeps sweepers away from them; they are freed, pooled and spilled
        like this store's own. Returns the ids that could not be taken (a sweeper was
        first, or the lock is still held after ``wait`` seconds: its worker is alive
        after all, only cut off). The wait covers a worker still dying: the scheduler
        can see its connection close before its process (and its lock) is gone."""
        failed = []
        locked_before = set(self._adopted_locks)
        for object_id, name, size in entries:
            owner = name.rsplit("-", 1)[0]
            tag = owner[len(f"{shm.PREFIX}{self.cluster_id}-"):]
            if (not owner.startswith(f"{shm.PREFIX}{self.cluster_id}-") or not tag
                    or tag == self.worker_tag or not self._hold_adopted_lock(tag, wait)):
                failed.append(object_id)
                continue
            try:
                capacity = os.stat(shm.segment_path(name)).st_size
            except OSError:
                failed.append(object_id)
                continue
            with self._lock:
                if self._closed:
                    failed.append(object_id)
                    continue
                if object_id in self.objects:
                    continue
                entry = StoredObject(object_id, name, size, capacity, None)
                entry.sealed = True
                self.objects[object_id] = entry
                self.used += capacity
                self.stats["adopted"] = self.stats.get("adopted", 0) + 1
        kept = {e.name for e in self.objects.values()}
        for tag in set(self._adopted_locks) - locked_before:
            # The dead worker's other segments (its pool, its reserve, unsealed writes)
            # would be swept with its lock; holding the lock, that is now our job.
            for name in shm.segments_of(self.cluster_id, tag):
                if name not in kept:
                    shm.unlink(name)
        return failed

    def _hold_adopted_lock(self, tag: str, wait: float) -> bool:
        if tag in self._adopted_locks:
            return True
        deadline = time.monotonic() + wait
        while True:
            try:
                self._adopted_locks[tag] = shm.hold_lock(self.cluster_id, tag)
                return True
            except OSError:
                if time.monotonic() >= deadline:
                    return False
                time.sleep(0.02)

    def release_spilled(self, object_id: bytes, entry: StoredObject) -> None:
        """An object was written to the spill target: release its memory.

        Its pages go to the reuse pool under a new name when no reader holds a lease on
        the segment (see ``shm.reclaim``): readers that knew the old name find it gone
        and restore from the spill file. Otherwise the segment is unlinked (readers'
        arrays stay valid) and its memory returns to the OS when they are gone.
        """
        with self._lock:
            entry.pins -= 1
            if self.objects.get(object_id) is entry:
                del self.objects[object_id]
                self.used -= entry.capacity
            new_name = self._new_name()
            if (len(self._pool) < _POOL_MAX_SEGMENTS and not self._closed
                    and self.used + self.pooled + entry.capacity <= self.capacity
                    and shm.reclaim(entry.name, new_name)):
                self.forget_mapping(entry.name)
                self._pool.append((entry.capacity, new_name, time.monotonic()))
                self.pooled += entry.capacity
                self.stats["reclaimed"] += 1
            else:
                self._unlink(entry.name)
            self._room.notify_all()

    def _new_name(self) -> str:
        return f"{shm.PREFIX}{self.cluster_id}-{self.worker_tag}-{next(self._names)}"

    def pressure(self) -> int:
        """Bytes of live objects above the spill threshold. Pooled segments do not count:
        allocations reuse them or release them (``_make_room``)."""
        with self._lock:
            return int(self.used - self.spill_threshold * self.capacity)

    def trim_pool(self, max_idle: float) -> int:
        """Give back segments idle in the pool for more than ``max_idle`` seconds, so
        freed memory returns to the system soon after a burst of reuse ends."""
        cutoff = time.monotonic() - max_idle
        with self._lock:
            expired = [p for p in self._pool if p[2] < cutoff and p[1] != self.reserve_name]
            if not expired:
                return 0
            self._pool = [p for p in self._pool if p not in expired]
            for size, name, _ in expired:
                self.pooled -= size
            self._room.notify_all()
        for _, name, _ in expired:
            self._unlink(name)
        return len(expired)

    def fill_reserve(self, size: int, prefault=shm.prefault) -> bool:
        """Create one pre-faulted segment of ``size`` bytes and keep it in the pool.

        Fresh shared memory costs a page fault per page (about 1 GB/s); a put that lands
        in the reserve runs at memory speed. Called from a background thread when the
        store is idle; returns True when a reserve was made. ``prefault(name, size)``
        touches the pages (the worker passes one that keeps its mapping for later writes).
        """
        with self._lock:
            if (self._closed or self.reserve_name is not None or size <= 0
                    or self.used + self.pooled + size > self.capacity * self.spill_threshold):
                return False
            name = self._new_name()
        os.close(shm.create(name, size))
        try:
            prefault(name, size)
        except BaseException:
            self._unlink(name)
            raise
        with self._lock:
            if self._closed or self.used + self.pooled + size > self.capacity:
                self._unlink(name)  # closed meanwhile (shutdown), or no room any more
                return False
            self._pool.append((size, name, time.monotonic()))
            self.pooled += size
            self.reserve_name = name
            self._room.notify_all()
        return True

    def reserve(self) -> tuple[str, int] | None:
        """The reserve segment waiting in the pool, as (name, size), if any."""
        with self._lock:
            for size, name, _ in self._pool:
                if name == self.reserve_name:
                    return name, size
        return None

    def lru_candidates(self) -> list[StoredObject]:
        """Sealed, unpinned objects, least recently used first (for spilling)."""
        with self._lock:
            return [e for e in self.objects.values() if e.sealed and e.pins == 0]

    def summary(self) -> dict:
        with self._lock:
            return {
                "capacity": self.capacity,
                "used": self.used,
                "pooled": self.pooled,
                "objects": sum(1 for e in self.objects.values() if e.sealed),
                "pinned": sum(1 for e in self.objects.values() if e.pins),
                "reserve": self.reserve_name,
                **self.stats,
            }

    def close(self) -> None:
        """Remove every segment of this store, then its lock."""
        with self._lock:
            self._closed = True
            names = [e.name for e in self.objects.values()] + [n for _, n, _ in self._pool]
            self.objects.clear()
            self._pool.clear()
            self.used = self.pooled = 0
        for name in names:
            self._unlink(name)
        shm.unlink(shm.lock_name(self.cluster_id, self.worker_tag))
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        for tag, fd in list(self._adopted_locks.items()):
            shm.unlink(shm.lock_name(self.cluster_id, tag))
            os.close(fd)
        self._adopted_locks.clear()
