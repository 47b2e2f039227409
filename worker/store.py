"""A worker's shared-memory object store: arenas, dedicated segments, capacity, LRU, pins.

Objects live inside a few large files, the *arenas*, at offsets a two-level segregated-fit
allocator chooses (``allocator.ArenaAllocator``): the cost of an object is a few entries
in dicts, not a file, a descriptor and a mapping in every process that reads it. Objects
larger than a quarter of an arena get a *dedicated segment* of their own (so an arena
never wastes more than a fifth of itself between objects); freed ones go to a pool
and are reused for the next object of a similar size, because fresh shared memory costs
a page fault per page (about 1 GB/s here, against about 10 GB/s for a warm copy). Arena
space is reused in place and stays warm the same way.

**Reuse is safe without locks.** A region is handed out again only when nobody can still
read it: users in this process *pin* it (``pin``/``unpin``), and other processes of the
host hold a *lease* on it (``lease``), granted over their connection, before they map it
and until they give it back. A freed or spilled object whose region is still pinned or
leased is *held*: gone from the table (new readers cannot find it) but its region kept,
and its idle lease holders are asked to give their leases back (``revoke``) at once.

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
from graphstore.worker.allocator import ArenaAllocator

MiB = 1024 * 1024
#: A pooled segment larger than this multiple of the object is shrunk to fit (the tail's
#: memory goes back to the OS, the head stays warm).
_SHRINK_ABOVE = 1.25
#: At most this many idle dedicated segments are kept for reuse.
_POOL_MAX_SEGMENTS = 32
#: Seconds a restored object is not spilled again (see ``lru_candidates``).
_RESTORED_GRACE_SECONDS = 1.0


def arena_bytes_for(capacity: int, configured: int = 0) -> int:
    """The size of a store's arenas: ``configured``, or a 16th of the capacity between
    1 MiB and 1 GiB; never more than half the capacity, 64-byte aligned.

    Sixteen arenas fill a store: few files and mappings per process, and arenas small
    enough that one kept alive by a few objects blocks little of the capacity."""
    size = configured or min(max(capacity // 16, MiB), 1024 * MiB)
    size = min(size, max(capacity // 2, 64))
    return max(64, size - size % 64)


class Arena:
    __slots__ = ("name", "size", "allocator", "empty_since", "adopted")

    def __init__(self, name: str, size: int, allocator: ArenaAllocator | None):
        self.name = name
        self.size = size
        self.allocator = allocator      # None: adopted from a dead worker, never refilled
        self.empty_since = time.monotonic()
        self.adopted: set[bytes] = set()


class StoredObject:
    __slots__ = ("id", "name", "arena", "offset", "size", "capacity", "sealed", "pins",
                 "holders", "last_use", "writer", "spilled_at", "released", "gone")

    def __init__(self, object_id: bytes, name: str, size: int, capacity: int, writer,
                 arena: Arena | None = None, offset: int = 0):
        self.id = object_id
        self.name = name            # the segment: "<arena>@<offset>", or a file's name
        self.arena = arena          # None: a dedicated segment
        self.offset = offset
        self.size = size            # bytes of the encoded object
        self.capacity = capacity    # bytes reserved for it (>= size)
        self.sealed = False
        self.pins = 0               # users in this process: tasks, transfers, views
        self.holders: set | None = None   # other processes holding a lease on it
        self.last_use = time.monotonic()
        self.writer = writer        # who is writing it until sealed (a peer or None)
        self.spilled_at = None      # (path, offset) of a spill copy it was restored from
        self.released = False       # freed or spilled; its region waits for its users
        self.gone = False           # its region was given back

    def in_use(self) -> bool:
        return self.pins > 0 or bool(self.holders)


class SharedMemoryStore:
    def __init__(self, cluster_id: str, worker_tag: str, capacity: int,
                 arena_bytes: int = 0):
        if capacity <= 0:
            raise ValueError(f"object store capacity must be positive, got {capacity}")
        self.cluster_id = cluster_id
        self.worker_tag = worker_tag
        self.capacity = capacity
        self.arena_bytes = arena_bytes_for(capacity, arena_bytes)
        #: Objects above this many bytes get a dedicated segment.
        self.dedicated_above = self.arena_bytes // 4
        self.used = 0                 # bytes reserved for objects, held ones included
        self.pooled = 0               # bytes of idle dedicated segments kept for reuse
        self.arena_total = 0          # bytes of this store's arenas (adopted ones aside)
        self.dedicated = 0            # bytes of live dedicated segments
        self.objects: OrderedDict[bytes, StoredObject] = OrderedDict()  # LRU first
        self.arenas: list[Arena] = []
        self._adopted_arenas: dict[str, Arena] = {}
        #: Freed or spilled objects whose region is still pinned or leased.
        self._held: dict[tuple[bytes, str], StoredObject] = {}
        #: Lease holder -> {(object id, segment): entry}.
        self._leases: dict[object, dict[tuple[bytes, str], StoredObject]] = {}
        self._pool: list[tuple[int, str, float]] = []  # (size, name, freed at)
        #: Names of the pre-faulted reserve segments waiting in the pool.
        self.reserve_names: list[str] = []
        #: When an object was last given room (reserves are made when the store idles).
        self.last_allocation = 0.0
        self._shrinks: list[tuple[str, int]] = []
        self._closed = False
        self._names = itertools.count(1)
        self._waiting = 0             # allocations waiting for room
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)   # notified when memory is released
        self._lock_fd = shm.hold_lock(cluster_id, worker_tag)
        #: Locks of dead workers of this host whose segments this store took over.
        self._adopted_locks: dict[str, int] = {}
        #: created/reused: dedicated segments made or taken from the pool; allocated:
        #: every object given room (in an arena or not).
        self.stats = {"allocated": 0, "created": 0, "reused": 0, "freed": 0,
                      "bytes_written": 0, "arenas_created": 0, "revoked": 0}
        #: Set by the worker when spilling is on: called (without the lock) when the store
        #: needs room; ``allocate`` then waits up to ``wait_timeout`` for it.
        self.on_pressure = None
        #: Set by the worker: the spill target and its last error, for error messages.
        self.spill_problem = lambda: None
        self.wait_timeout = 0.0
        #: Set by the worker: forget this process's cached mapping of a file, so the
        #: memory of an unlinked file goes back to the system at once.
        self.forget_mapping = lambda name: None
        #: Set by the worker: ``revoke(holder, [[object id, segment], ...])`` asks a
        #: lease holder to give back leases of objects that were freed or spilled
        #: (called without the lock; the answer comes back as ``release_leases``).
        self.revoke = lambda holder, keys: None
        self.spill_threshold = 1.0

    # -- allocation -------------------------------------------------------------------
    def allocate(self, object_id: bytes, size: int, writer=None,
                 defer_shrink: bool = False, lessee=None) -> StoredObject:
        """Reserve ``size`` bytes for ``object_id`` (unsealed until ``seal``).

        When the store is full and spilling is on, waits for the spiller to make room.
        ``defer_shrink``: leave trimming a reused segment's tail to ``apply_shrinks``
        (a caller answering a remote writer trims after replying). ``lessee``: a
        process that gets a lease on the object with it (a writer that will read it).
        """
        if size > self.capacity:
            raise ObjectStoreFullError(
                f"an object of {size:,} bytes does not fit in the object store, whose "
                f"capacity is {self.capacity:,} bytes; raise object_store_memory or store "
                f"smaller objects")
        deadline = time.monotonic() + self.wait_timeout
        waiting = False
        try:
            while True:
                try:
                    entry = self._allocate_now(object_id, size, writer, lessee)
                    break
                except ObjectStoreFullError:
                    if self.on_pressure is None or time.monotonic() >= deadline:
                        raise
                    with self._lock:
                        if not waiting:
                            waiting = True
                            self._waiting += 1
                    self.on_pressure(size)
                    with self._room:
                        self._room.wait(min(0.2, max(0.0, deadline - time.monotonic())))
        finally:
            if waiting:
                with self._lock:
                    self._waiting -= 1
        if self.on_pressure is not None and self.used > self.spill_threshold * self.capacity:
            self.on_pressure(0)
        if not defer_shrink:
            self.apply_shrinks()
        return entry

    def try_allocate(self, object_id: bytes, size: int, writer=None,
                     lessee=None) -> StoredObject:
        """``allocate`` without waiting: ObjectStoreFullError at once when there is no
        room now (the caller may then wait in a thread). Never blocks: fit for an event
        loop. Shrinking a reused segment is left to ``apply_shrinks``."""
        if size > self.capacity:
            return self.allocate(object_id, size)       # raises, naming the sizes
        entry = self._allocate_now(object_id, size, writer, lessee)
        if self.on_pressure is not None and self.used > self.spill_threshold * self.capacity:
            self.on_pressure(0)
        return entry

    @property
    def shrinks_pending(self) -> bool:
        return bool(self._shrinks)

    def apply_shrinks(self) -> None:
        """Give back the tails of reused segments that were larger than their object."""
        with self._lock:
            pending, self._shrinks = self._shrinks, []
        for name, size in pending:
            try:
                shm.resize(name, size)
            except FileNotFoundError:
                pass

    def _footprint(self) -> int:
        """Bytes of shared memory this store's files may occupy: its arenas and its
        dedicated segments, live and pooled."""
        return self.arena_total + self.dedicated + self.pooled

    def _allocate_now(self, object_id: bytes, size: int, writer, lessee) -> StoredObject:
        with self._lock:
            existing = self.objects.get(object_id)
            if existing is not None:
                if lessee is not None:
                    self._add_lease(existing, lessee)
                return existing
            if size > self.dedicated_above:
                entry = self._allocate_dedicated(object_id, size, writer)
            else:
                entry = self._allocate_in_arena(object_id, size, writer)
            self.objects[object_id] = entry
            self.used += entry.capacity
            self.stats["allocated"] += 1
            self.last_allocation = time.monotonic()
            if lessee is not None:
                self._add_lease(entry, lessee)
            return entry

    def _allocate_in_arena(self, object_id: bytes, size: int, writer) -> StoredObject:
        for attempt in range(2):
            for arena in self.arenas:
                offset = arena.allocator.allocate(size)
                if offset is not None:
                    return StoredObject(object_id, shm.arena_segment(arena.name, offset),
                                        size, arena.allocator.region_size(offset), writer,
                                        arena, offset)
            if attempt == 0:
                self._make_room(self.arena_bytes)
                if self._footprint() + self.arena_bytes <= self.capacity:
                    self._new_arena()
        raise self._full_error(size)

    def _new_arena(self) -> Arena:
        name = self._new_name()
        os.close(shm.create(name, self.arena_bytes))   # sparse: pages come with use
        arena = Arena(name, self.arena_bytes, ArenaAllocator(self.arena_bytes))
        self.arenas.append(arena)
        self.arena_total += arena.size
        self.stats["arenas_created"] += 1
        return arena

    def _allocate_dedicated(self, object_id: bytes, size: int, writer) -> StoredObject:
        reused = self._take_from_pool(size)
        if reused is not None:
            segment_size, name = reused
            self.stats["reused"] += 1
        else:
            self._make_room(size)
            if self._footprint() + size > self.capacity:
                raise self._full_error(size)
            name = self._new_name()
            os.close(shm.create(name, size))
            segment_size = size
            self.stats["created"] += 1
        self.dedicated += segment_size
        return StoredObject(object_id, name, size, segment_size, writer)

    def _full_error(self, size: int) -> ObjectStoreFullError:
        spilling = (" and nothing more could be spilled in "
                    f"{self.wait_timeout:g} s" if self.on_pressure else "")
        problem = self.spill_problem()
        if problem:
            spilling += f" ({problem})"
        return ObjectStoreFullError(
            f"the object store is full: {self.used:,} of {self.capacity:,} bytes in "
            f"use{spilling}; an object of {size:,} bytes does not fit (free objects by "
            f"dropping their refs, or raise object_store_memory)")

    def _take_from_pool(self, size: int) -> tuple[int, str] | None:
        """The smallest pooled segment that fits; of equal sizes, one freed by an
        object before a reserve, the last freed first: processes that read or wrote it
        still have it mapped, and its page tables filled (a reserve is new to them: a
        200 MB first touch costs them ~10 ms)."""
        best = best_key = None
        reserves = self.reserve_names
        for i, (segment_size, name, freed_at) in enumerate(self._pool):
            if segment_size >= size:
                key = (segment_size, name in reserves, -freed_at)
                if best_key is None or key < best_key:
                    best, best_key = i, key
        if best is None:
            return None
        segment_size, name, _ = self._pool.pop(best)
        self.pooled -= segment_size
        if name in self.reserve_names:
            self.reserve_names.remove(name)
        if segment_size > size * _SHRINK_ABOVE:
            self._shrinks.append((name, size))
            segment_size = size
        return segment_size, name

    def _unlink(self, name: str) -> None:
        shm.unlink(name)
        self.forget_mapping(name)

    def _make_room(self, size: int) -> None:
        """Release pooled segments, oldest first, then empty arenas (the last made
        first), until ``size`` more bytes fit."""
        while self._pool and self._footprint() + size > self.capacity:
            segment_size, name, _ = self._pool.pop(0)
            self.pooled -= segment_size
            if name in self.reserve_names:
                self.reserve_names.remove(name)
            self._unlink(name)
        for arena in reversed(list(self.arenas)):
            if self._footprint() + size <= self.capacity:
                break
            if arena.allocator.empty:
                self._drop_arena(arena)

    def _drop_arena(self, arena: Arena) -> None:
        self.arenas.remove(arena)
        self.arena_total -= arena.size
        self._unlink(arena.name)

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
        """Mark an object in use in this process (a task, a transfer, a view of it);
        ``unpin`` when done. Its region is not reused until then."""
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
            if entry.released and not entry.in_use():
                self._release_region(entry, True)

    def lease(self, object_id: bytes, holder) -> StoredObject | None:
        """Give ``holder`` (another process's connection) a lease on a sealed object:
        its region is not reused until the holder gives it back (``release_leases``)
        or goes away (``drop_holder``). None when the object is not here (spilled,
        freed, or never was)."""
        with self._lock:
            entry = self.objects.get(object_id)
            if entry is None or not entry.sealed:
                return None
            entry.last_use = time.monotonic()
            self.objects.move_to_end(object_id)
            self._add_lease(entry, holder)
            return entry

    def _add_lease(self, entry: StoredObject, holder) -> None:
        if entry.holders is None:
            entry.holders = set()
        entry.holders.add(holder)
        self._leases.setdefault(holder, {})[(entry.id, entry.name)] = entry

    def release_leases(self, holder, keys) -> None:
        """``holder`` gives back its leases on ``[[object id, segment], ...]``."""
        with self._lock:
            held = self._leases.get(holder)
            if not held:
                return
            for object_id, segment in keys:
                entry = held.pop((bytes(object_id), segment), None)
                if entry is not None:
                    self._drop_lease(entry, holder)
            if not held:
                del self._leases[holder]

    def still_viewed(self, keys) -> None:
        """A lease holder answered a ``revoke``: it still views these objects (and
        gives their leases back when its arrays die). A dedicated segment among them is
        unlinked now rather than held: the holder's mapping keeps the bytes it views
        alive, the store's memory is free again, and a name is never given to another
        file. (Segments given back go to the reuse pool, warm: a spilled object's
        segment serves the next restore.)"""
        with self._lock:
            for object_id, segment in keys:
                entry = self._held.get((bytes(object_id), segment))
                if entry is not None and entry.arena is None:
                    self._release_region(entry, False)

    def drop_holder(self, holder) -> None:
        """A lease holder went away (its connection closed): all its leases end."""
        with self._lock:
            for entry in self._leases.pop(holder, {}).values():
                self._drop_lease(entry, holder)

    def _drop_lease(self, entry: StoredObject, holder) -> None:
        entry.holders.discard(holder)
        if not entry.holders:
            entry.holders = None
            if entry.released and entry.pins == 0:
                self._release_region(entry, True)

    def free(self, object_id: bytes, reusable: bool = True) -> bool:
        """Release an object. Its region is reused once nobody pins or leases it
        (``reusable=False``: a dedicated segment is then unlinked, never pooled)."""
        with self._lock:
            entry = self.objects.pop(object_id, None)
            if entry is None:
                return False
            self.stats["freed"] += 1
            revocations = self._release(entry, reusable)
        self._send_revocations(revocations)
        return True

    def release_spilled(self, object_id: bytes, entry: StoredObject) -> None:
        """An object was written to the spill target (the spiller pinned it): release
        its memory. Readers that knew its region find it gone and restore it from the
        spill file; the region itself waits for readers still viewing it."""
        with self._lock:
            entry.pins -= 1
            if self.objects.get(object_id) is entry:
                del self.objects[object_id]
            revocations = self._release(entry, True)
        self._send_revocations(revocations)

    def _release(self, entry: StoredObject, reusable: bool) -> list:
        """Under the lock: the object is gone from the table; free its region now, or
        hold it for its users and list the lease holders to ask."""
        entry.released = True
        if not entry.in_use():
            self._release_region(entry, reusable)
            return []
        self._held[(entry.id, entry.name)] = entry
        return [(holder, [[entry.id, entry.name]]) for holder in entry.holders or ()]

    def _send_revocations(self, revocations: list) -> None:
        for holder, keys in revocations:
            self.stats["revoked"] += len(keys)
            self.revoke(holder, keys)

    def _release_region(self, entry: StoredObject, reusable: bool) -> None:
        """Under the lock: nobody can see ``entry``'s bytes any more (or, for a dedicated
        segment, nobody can map it again: ``reusable=False`` unlinks it)."""
        if entry.gone:
            return
        entry.gone = True
        self._held.pop((entry.id, entry.name), None)
        self.used -= entry.capacity
        arena = entry.arena
        if arena is not None:
            if arena.allocator is None:           # adopted from a dead worker
                arena.adopted.discard(entry.id)
                if not arena.adopted:
                    self._adopted_arenas.pop(arena.name, None)
                    self._unlink(arena.name)
            else:
                arena.allocator.free(entry.offset)
                if arena.allocator.empty:
                    arena.empty_since = time.monotonic()
        else:
            self.dedicated -= entry.capacity
            # An adopted segment is never reused: readers of the dead worker may still
            # view it, under leases that worker's store kept.
            own = entry.name.startswith(f"{shm.PREFIX}{self.cluster_id}-{self.worker_tag}-")
            if (reusable and own and not self._closed and len(self._pool) < _POOL_MAX_SEGMENTS
                    and self._footprint() + entry.capacity <= self.capacity):
                self._pool.append((entry.capacity, entry.name, time.monotonic()))
                self.pooled += entry.capacity
            else:
                self._unlink(entry.name)
        self._room.notify_all()

    def adopt(self, entries: list, wait: float = 5.0) -> list[bytes]:
        """Take over sealed objects of a dead worker of this host (``[[id, segment,
        size], ...]``): their files outlive it in shared memory. Holding the dead
        worker's lock keeps sweepers away from them; they are freed, leased and spilled
        like this store's own, and an adopted arena is unlinked when its last object
        goes (it is never allocated from). Returns the ids that could not be taken (a
        sweeper was first, or the lock is still held after ``wait`` seconds: its worker
        is alive after all, only cut off). The wait covers a worker still dying: the
        scheduler can see its connection close before its process (and its lock) is
        gone."""
        failed = []
        locked_before = set(self._adopted_locks)
        for object_id, segment, size in entries:
            try:
                name, offset = shm.split_segment(segment)
            except ValueError:
                failed.append(object_id)
                continue
            owner = name.rsplit("-", 1)[0]
            tag = owner[len(f"{shm.PREFIX}{self.cluster_id}-"):]
            if (not owner.startswith(f"{shm.PREFIX}{self.cluster_id}-") or not tag
                    or tag == self.worker_tag or not self._hold_adopted_lock(tag, wait)):
                failed.append(object_id)
                continue
            try:
                file_size = os.stat(shm.segment_path(name)).st_size
            except OSError:
                failed.append(object_id)
                continue
            if offset is not None and offset + size > file_size:
                failed.append(object_id)
                continue
            with self._lock:
                if self._closed:
                    failed.append(object_id)
                    continue
                if object_id in self.objects:
                    continue
                if offset is None:
                    entry = StoredObject(object_id, name, size, file_size, None)
                    self.dedicated += file_size
                else:
                    arena = self._adopted_arenas.get(name)
                    if arena is None:
                        arena = self._adopted_arenas[name] = Arena(name, file_size, None)
                    arena.adopted.add(object_id)
                    entry = StoredObject(object_id, segment, size, size, None, arena,
                                         offset)
                entry.sealed = True
                self.objects[object_id] = entry
                self.used += entry.capacity
                self.stats["adopted"] = self.stats.get("adopted", 0) + 1
        with self._lock:
            kept = {shm.file_of(e.name) for e in self.objects.values()}
        for tag in set(self._adopted_locks) - locked_before:
            # The dead worker's other files (its pool, its reserve, its unsealed writes)
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

    def _new_name(self) -> str:
        return f"{shm.PREFIX}{self.cluster_id}-{self.worker_tag}-{next(self._names)}"

    def pressure(self) -> int:
        """Bytes of objects above the spill threshold. Pooled segments do not count:
        allocations reuse them or release them (``_make_room``)."""
        with self._lock:
            return int(self.used - self.spill_threshold * self.capacity)

    def spill_need(self, room: int) -> int:
        """Bytes the spiller should release so the store is below its threshold and an
        allocation of ``room`` bytes fits; while an allocation waits, at least ``room``
        (free bytes scattered over arenas may not make one region large enough)."""
        with self._lock:
            need = max(self.used - self.spill_threshold * self.capacity,
                       room - (self.capacity - self.used))
            if self._waiting and room:
                need = max(need, room)
            return int(need)

    def trim_pool(self, max_idle: float) -> int:
        """Give back dedicated segments idle in the pool, and arenas empty, for more
        than ``max_idle`` seconds (the first arena stays), so freed memory returns to
        the system soon after a burst ends."""
        cutoff = time.monotonic() - max_idle
        with self._lock:
            expired = [p for p in self._pool
                       if p[2] < cutoff and p[1] not in self.reserve_names]
            self._pool = [p for p in self._pool if p not in expired]
            for size, name, _ in expired:
                self.pooled -= size
            empty = [a for a in self.arenas[1:]
                     if a.allocator.empty and a.empty_since < cutoff]
            for arena in empty:
                self.arenas.remove(arena)
                self.arena_total -= arena.size
            if expired or empty:
                self._room.notify_all()
        for name in [p[1] for p in expired] + [a.name for a in empty]:
            self._unlink(name)
        return len(expired) + len(empty)

    @property
    def reserve_name(self) -> str | None:
        return self.reserve_names[0] if self.reserve_names else None

    def fill_reserve(self, size: int, prefault=shm.prefault, count: int = 1) -> bool:
        """Create one more pre-faulted dedicated segment of ``size`` bytes, up to
        ``count`` of them, and pool it.

        Fresh shared memory costs a page fault per page (about 1 GB/s); a large put that
        lands in a reserve runs at memory speed. Called from a background thread when
        the store is idle; returns True when a reserve was made. ``prefault(name, size)``
        allocates the pages (the worker's ``fallocate``s them: writers map them).
        """
        with self._lock:
            if (self._closed or len(self.reserve_names) >= count
                    or size <= self.dedicated_above
                    or self._footprint() + size > self.capacity * self.spill_threshold):
                return False
            name = self._new_name()
        os.close(shm.create(name, size))
        try:
            prefault(name, size)
        except BaseException:
            self._unlink(name)
            raise
        with self._lock:
            if self._closed or self._footprint() + size > self.capacity:
                self._unlink(name)  # closed meanwhile (shutdown), or no room any more
                return False
            self._pool.append((size, name, time.monotonic()))
            self.pooled += size
            self.reserve_names.append(name)
            self._room.notify_all()
        return True

    def reserves(self) -> list[tuple[str, int]]:
        """The reserve segments waiting in the pool, as (name, size)."""
        with self._lock:
            return [(name, size) for size, name, _ in self._pool
                    if name in self.reserve_names]

    def lru_candidates(self) -> list[StoredObject]:
        """Sealed objects nobody in this process uses, least recently used first (a
        leased one too: its holder is asked to give it back once it is spilled). An
        object restored in the last second is left alone: its reader has yet to lease
        it, and spilling it again at once can starve that reader."""
        recent = time.monotonic() - _RESTORED_GRACE_SECONDS
        with self._lock:
            return [e for e in self.objects.values() if e.sealed and e.pins == 0
                    and not (e.spilled_at is not None and e.last_use > recent)]

    def arena_allocated(self) -> int:
        """Bytes allocated to objects inside this store's arenas (racy read, no lock:
        for heartbeats)."""
        return sum(a.allocator.allocated for a in list(self.arenas))

    def in_use(self, limit: int = 1000) -> dict[str, int]:
        """Objects some process views or leases: {id hex: users}, at most ``limit``."""
        with self._lock:
            used = {}
            for entry in self.objects.values():
                if entry.in_use():
                    used[entry.id.hex()] = entry.pins + len(entry.holders or ())
                    if len(used) >= limit:
                        break
            return used

    def summary(self) -> dict:
        with self._lock:
            allocated = sum(a.allocator.allocated for a in self.arenas)
            return {
                "capacity": self.capacity,
                "used": self.used,
                "pooled": self.pooled,
                "objects": sum(1 for e in self.objects.values() if e.sealed),
                "pinned": sum(1 for e in self.objects.values() if e.in_use()),
                "held": len(self._held),
                "held_bytes": sum(e.capacity for e in self._held.values()),
                "leases": sum(len(h) for h in self._leases.values()),
                "arenas": len(self.arenas),
                "arena_size": self.arena_bytes,
                "dedicated_above": self.dedicated_above,
                "arena_bytes": self.arena_total,
                "arena_allocated": allocated,
                "arena_largest_free": max((a.allocator.largest_free() for a in self.arenas),
                                          default=0),
                "dedicated_bytes": self.dedicated,
                "reserve": self.reserve_name,
                "reserves": list(self.reserve_names),
                **self.stats,
            }

    def close(self) -> None:
        """Remove every file of this store, then its lock."""
        with self._lock:
            self._closed = True
            names = ({shm.file_of(e.name) for e in self.objects.values()}
                     | {shm.file_of(e.name) for e in self._held.values()}
                     | {n for _, n, _ in self._pool} | {a.name for a in self.arenas}
                     | set(self._adopted_arenas))
            self.objects.clear()
            self._held.clear()
            self._leases.clear()
            self._pool.clear()
            self.arenas.clear()
            self._adopted_arenas.clear()
            self.used = self.pooled = self.arena_total = self.dedicated = 0
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
