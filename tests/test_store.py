"""The worker's SharedMemoryStore on the real shared-memory filesystem.

Each test's store has a cluster id of its own; the fixture closes it and removes anything
left with that prefix (and the assertions check the store itself left nothing). Stores
here have 64 KiB arenas unless a test says otherwise, so objects of more than 32 KiB get
dedicated segments (the reuse pool's tests) and smaller ones share arenas.
"""
from __future__ import annotations

import os
import threading
import time

import pytest

from graphstore.core import shm
from helpers import shm_files
from graphstore.exceptions import ObjectStoreFullError
from graphstore.worker.store import SharedMemoryStore

MB = 1024 * 1024


def oid(n: int) -> bytes:
    return n.to_bytes(16, "big")


def exists(name: str) -> bool:
    return os.path.exists(shm.segment_path(shm.file_of(name)))


@pytest.fixture
def make_store(cluster_id):
    stores = []

    def make(capacity: int = 10 * MB, tag: str = "w1",
             arena_bytes: int = 64 * 1024) -> SharedMemoryStore:
        store = SharedMemoryStore(cluster_id, tag, capacity, arena_bytes)
        stores.append(store)
        return store
    yield make
    for store in stores:
        store.close()


def put(store: SharedMemoryStore, n: int, size: int, writer=None):
    entry = store.allocate(oid(n), size, writer=writer)
    store.seal(oid(n))
    return entry


# -- allocation and capacity --------------------------------------------------------------

def test_allocate_creates_a_segment_of_the_size(make_store, cluster_id):
    store = make_store()
    entry = store.allocate(oid(1), 3 * MB)
    assert entry.name.startswith(f"gs-{cluster_id}-w1-")
    assert os.path.getsize(shm.segment_path(entry.name)) == 3 * MB
    assert entry.size == entry.capacity == 3 * MB and not entry.sealed
    assert store.used == 3 * MB and store.pooled == 0
    # Allocating the same id again hands back the same entry, not a second segment.
    assert store.allocate(oid(1), 3 * MB) is entry and store.used == 3 * MB
    assert store.stats["created"] == 1


@pytest.mark.parametrize("capacity", [0, -1])
def test_capacity_must_be_positive(cluster_id, capacity):
    with pytest.raises(ValueError, match="capacity must be positive"):
        SharedMemoryStore(cluster_id, "w1", capacity)


def test_object_larger_than_capacity_names_both_sizes(make_store):
    store = make_store(capacity=2_000_000)
    with pytest.raises(ObjectStoreFullError) as info:
        store.allocate(oid(1), 2_000_001)
    text = str(info.value)
    assert "2,000,001" in text and "2,000,000" in text and "object_store_memory" in text
    assert store.used == 0 and store.objects == {}


def test_full_store_names_use_capacity_and_size(make_store, cluster_id):
    store = make_store(capacity=3_000_000)
    put(store, 1, 1_000_000)
    put(store, 2, 1_500_000)
    before = shm_files(f"gs-{cluster_id}-w1-")
    with pytest.raises(ObjectStoreFullError) as info:
        store.allocate(oid(3), 600_000)
    text = str(info.value)
    assert "2,500,000 of 3,000,000" in text and "600,000" in text
    assert store.used == 2_500_000 and oid(3) not in store.objects
    assert shm_files(f"gs-{cluster_id}-w1-") == before          # nothing was created
    put(store, 4, 500_000)                                    # what fits still fits
    assert store.used == 3_000_000


def test_freed_memory_is_available_again(make_store):
    store = make_store(capacity=2 * MB)
    put(store, 1, 2 * MB)
    with pytest.raises(ObjectStoreFullError):
        store.allocate(oid(2), 1)
    assert store.free(oid(1), reusable=False)
    put(store, 2, 2 * MB)
    assert store.used == 2 * MB


# -- the reuse pool -----------------------------------------------------------------------

def test_reusable_free_pools_the_segment_and_a_similar_size_reuses_it(make_store):
    store = make_store()
    first = put(store, 1, 4 * MB)
    assert store.free(oid(1), reusable=True)
    assert exists(first.name)                                 # kept, not unlinked
    assert store.used == 0 and store.pooled == 4 * MB
    second = store.allocate(oid(2), int(3.5 * MB))            # within 1.25x: kept whole
    assert second.name == first.name
    assert second.size == int(3.5 * MB) and second.capacity == 4 * MB
    assert store.used == 4 * MB and store.pooled == 0        # counts the whole segment
    assert store.stats["reused"] == 1 and store.stats["created"] == 1
    assert store.free(oid(2), reusable=True) and store.pooled == 4 * MB


def test_a_much_larger_pooled_segment_is_shrunk_to_fit(make_store):
    store = make_store()
    first = put(store, 1, 4 * MB)
    store.free(oid(1), reusable=True)
    small = store.allocate(oid(2), MB)
    assert small.name == first.name and small.capacity == MB
    assert os.path.getsize(shm.segment_path(small.name)) == MB   # the tail went back
    assert store.used == MB and store.pooled == 0


def test_pool_is_not_used_for_a_larger_object(make_store):
    store = make_store()
    first = put(store, 1, 4 * MB)
    store.free(oid(1), reusable=True)
    other = store.allocate(oid(2), 4 * MB + 1)
    assert other.name != first.name and other.capacity == 4 * MB + 1
    assert store.stats["reused"] == 0 and store.pooled == 4 * MB
    assert exists(first.name)


def test_pool_picks_the_smallest_segment_that_fits(make_store):
    store = make_store(capacity=20 * MB)
    big, small = put(store, 1, 8 * MB), put(store, 2, 5 * MB)
    store.free(oid(1), reusable=True)
    store.free(oid(2), reusable=True)
    assert store.allocate(oid(3), int(4.5 * MB)).name == small.name
    assert store.allocate(oid(4), 7 * MB).name == big.name
    assert store.pooled == 0 and store.used == 13 * MB


def test_reserve_is_prefaulted_pooled_and_not_trimmed(make_store):
    store = make_store(capacity=64 * MB)
    store.spill_threshold = 0.8
    assert store.fill_reserve(8 * MB)
    assert store.reserve_name is not None and store.pooled == 8 * MB
    assert not store.fill_reserve(8 * MB)                     # one at a time
    assert store.trim_pool(max_idle=0.0) == 0                 # the reserve stays
    entry = store.allocate(oid(1), 6 * MB)
    assert entry.name is not None and store.reserve_name is None
    assert store.stats["reused"] == 1 and store.pooled == 0


def test_pool_prefers_a_freed_segment_to_a_reserve_of_the_same_size(make_store):
    """Readers and writers still have a freed segment mapped; a reserve is new to them."""
    store = make_store(capacity=64 * MB)
    store.spill_threshold = 0.8
    first = put(store, 1, 8 * MB)
    assert store.fill_reserve(8 * MB)
    reserve = store.reserve_name
    store.free(oid(1), reusable=True)
    assert store.allocate(oid(2), 8 * MB).name == first.name
    assert store.reserve_name == reserve                      # kept for a fresh put
    assert store.allocate(oid(3), 8 * MB).name == reserve


def test_not_reusable_free_unlinks(make_store):
    store = make_store()
    entry = put(store, 1, MB)
    assert store.free(oid(1), reusable=False)
    assert not exists(entry.name)
    assert store.used == 0 and store.pooled == 0
    assert store.allocate(oid(2), MB).name != entry.name


def test_a_pinned_dedicated_segment_freed_is_held_then_pooled(make_store):
    store = make_store()
    entry = put(store, 1, MB)
    assert store.pin(oid(1)) is entry and entry.pins == 1
    assert store.free(oid(1), reusable=True)
    assert store.get(oid(1)) is None and store.pin(oid(1)) is None   # gone for readers
    assert exists(entry.name) and store.used == MB and store.pooled == 0
    assert store.allocate(oid(2), MB).name != entry.name
    store.unpin(entry)                     # the last user: pooled, warm
    assert store.pooled == MB and store.used == MB


def test_a_dedicated_segment_its_holder_still_views_is_unlinked_when_it_says_so(
        make_store):
    store = make_store()
    holder = Holder(store)
    entry = put(store, 1, MB)
    store.lease(oid(1), "reader")
    store.free(oid(1))
    (_, keys), = holder.asked
    assert exists(entry.name) and store.used == MB               # held, while it asks
    store.still_viewed(keys)                                     # the holder's answer
    assert not exists(entry.name) and store.used == 0 and store.pooled == 0
    store.release_leases("reader", keys)                         # its views died: no-op
    assert store.used == 0 and store.pooled == 0 and store.summary()["held"] == 0


def test_a_pinned_arena_region_freed_is_held_until_unpinned(make_store):
    store = make_store()
    entry = put(store, 1, 10_000)
    store.pin(oid(1))
    assert store.free(oid(1))
    assert store.get(oid(1)) is None                                   # gone for readers
    assert store.used == entry.capacity and store.summary()["held"] == 1  # bytes kept
    assert store.allocate(oid(2), 10_000).name != entry.name
    store.unpin(entry)                                 # the last user: reusable now
    assert store.summary()["held"] == 0
    assert store.allocate(oid(3), 10_000).name == entry.name


def test_unpinned_object_is_pooled_again(make_store):
    store = make_store()
    entry = put(store, 1, MB)
    store.pin(oid(1))
    store.pin(oid(1))
    store.unpin(entry)
    store.unpin(entry)
    assert entry.pins == 0
    store.free(oid(1), reusable=True)
    assert exists(entry.name) and store.pooled == MB


def _spilled(store, n: int, size: int):
    """Allocate, seal and release an object as the spiller does once it is written."""
    entry = put(store, n, size)
    store.pin(oid(n))                       # the spiller pins while writing
    store.release_spilled(oid(n), entry)
    return entry


def test_spilled_segment_without_readers_goes_to_the_pool(make_store):
    store = make_store()
    entry = _spilled(store, 1, MB)
    assert store.get(oid(1)) is None        # readers ask the scheduler, find the spill
    assert store.used == 0 and store.pooled == MB
    again = store.allocate(oid(2), MB)      # its pages serve the next object
    assert again.name == entry.name and store.stats["reused"] == 1


class Holder:
    """A lease holder (another process's connection) that records revocations."""

    def __init__(self, store):
        self.asked = []
        store.revoke = lambda holder, keys: self.asked.append((holder, keys))


def test_a_leased_object_spilled_is_held_until_its_holder_gives_it_back(make_store):
    store = make_store()
    holder = Holder(store)
    entry = put(store, 1, 10_000)
    assert store.lease(oid(1), "reader") is entry
    store.pin(oid(1))
    store.release_spilled(oid(1), entry)
    assert holder.asked == [("reader", [[oid(1), entry.name]])]   # asked for it back
    assert store.used == entry.capacity and store.summary()["held"] == 1
    assert store.allocate(oid(2), 10_000).name != entry.name      # not reused meanwhile
    store.release_leases("reader", [[oid(1), entry.name]])
    assert store.summary()["held"] == 0
    assert store.allocate(oid(3), 10_000).name == entry.name


def test_a_lease_given_with_the_allocation_and_dropped_with_its_holder(make_store):
    store = make_store()
    holder = Holder(store)
    entry = store.allocate(oid(1), 1000, writer="driver", lessee="driver")
    store.seal(oid(1))
    assert store.summary()["leases"] == 1 and store.in_use() == {oid(1).hex(): 1}
    store.free(oid(1))
    assert holder.asked == [("driver", [[oid(1), entry.name]])]
    assert store.used == entry.capacity                            # held for the driver
    store.drop_holder("driver")                                    # its connection closed
    assert store.used == 0 and store.summary()["leases"] == 0


def test_a_lease_on_a_missing_or_unsealed_object_is_refused(make_store):
    store = make_store()
    store.allocate(oid(1), 1000)
    assert store.lease(oid(1), "r") is None and store.lease(oid(2), "r") is None
    store.release_leases("r", [[oid(1), "gs-x-y-1@0"]])            # unknown: harmless
    store.drop_holder("nobody")


def test_free_of_an_unknown_object_is_false(make_store):
    store = make_store()
    assert store.free(oid(9), reusable=True) is False
    put(store, 1, MB)
    assert store.free(oid(1), reusable=True) is True
    assert store.free(oid(1), reusable=True) is False        # twice: no double count
    assert store.used == 0 and store.pooled == MB and store.stats["freed"] == 1


def test_pool_makes_room_for_a_new_segment(make_store):
    store = make_store(capacity=4 * MB)
    old = put(store, 1, 2 * MB)
    store.free(oid(1), reusable=True)
    put(store, 2, 3 * MB)                       # too big to reuse it, no room beside it
    assert store.pooled == 0 and not exists(old.name)     # released to make room
    assert store.used == 3 * MB
    store.free(oid(2), reusable=False)
    old = put(store, 4, 2 * MB)
    store.free(oid(4), reusable=True)
    put(store, 3, 2 * MB + MB // 2)             # too big to reuse it, and no room beside it
    assert store.pooled == 0 and not exists(old.name)     # released to make room
    assert store.used == 2 * MB + MB // 2


def test_pooled_bytes_count_against_capacity_only_while_needed(make_store):
    store = make_store(capacity=6 * MB)
    a = put(store, 1, 2 * MB)
    b = put(store, 2, 2 * MB)
    store.free(oid(1), reusable=True)
    store.free(oid(2), reusable=True)
    assert store.pooled == 4 * MB and store.used == 0
    put(store, 3, 5 * MB)                       # needs both pooled segments released
    assert store.pooled == 0 and store.used == 5 * MB
    assert not exists(a.name) and not exists(b.name)


def test_pool_holds_at_most_32_segments(make_store):
    store = make_store(capacity=100 * MB)
    entries = [put(store, i, 100_000) for i in range(40)]
    for i in range(40):
        store.free(oid(i), reusable=True)
    assert store.pooled == 32 * 100_000 and store.used == 0
    assert sum(exists(e.name) for e in entries) == 32


def test_used_and_pooled_accounting_and_summary(make_store):
    store = make_store(capacity=10 * MB)
    put(store, 1, MB)
    put(store, 2, 2 * MB)
    store.allocate(oid(3), 3 * MB)              # unsealed
    store.pin(oid(2))
    summary = store.summary()
    assert summary["capacity"] == 10 * MB and summary["used"] == 6 * MB
    assert summary["pooled"] == 0 and summary["objects"] == 2 and summary["pinned"] == 1
    assert summary["created"] == 3 and summary["bytes_written"] == 3 * MB
    store.free(oid(1), reusable=True)
    store.seal(oid(3))
    summary = store.summary()
    assert summary["used"] == 5 * MB and summary["pooled"] == MB
    assert summary["objects"] == 2 and summary["freed"] == 1
    assert summary["bytes_written"] == 6 * MB
    store.seal(oid(3))                          # sealing twice counts once
    assert store.summary()["bytes_written"] == 6 * MB


# -- last use and pins ----------------------------------------------------------------------

def order(store) -> list[bytes]:
    return [e.id for e in store.lru_candidates()]


def test_lru_order_follows_get_and_pin(make_store):
    store = make_store()
    for n in (1, 2, 3, 4):
        put(store, n, 4096)
    assert order(store) == [oid(1), oid(2), oid(3), oid(4)]
    assert store.get(oid(1)).id == oid(1)
    assert order(store) == [oid(2), oid(3), oid(4), oid(1)]
    entry = store.pin(oid(3))                   # pinned: used now, and not a candidate
    assert order(store) == [oid(2), oid(4), oid(1)]
    store.unpin(entry)
    assert order(store) == [oid(2), oid(4), oid(1), oid(3)]
    store.get(oid(2))
    assert order(store) == [oid(4), oid(1), oid(3), oid(2)]
    assert store.get(oid(1)).last_use <= store.get(oid(3)).last_use


def test_unsealed_objects_are_invisible_to_get_pin_and_lru(make_store):
    store = make_store()
    store.allocate(oid(1), 4096)
    put(store, 2, 4096)
    assert store.get(oid(1)) is None and store.pin(oid(1)) is None
    assert store.get(oid(9)) is None and store.pin(oid(9)) is None
    assert order(store) == [oid(2)]
    store.seal(oid(1))
    assert store.get(oid(1)) is not None
    assert order(store) == [oid(2), oid(1)]


# -- writers that go away -------------------------------------------------------------------

def test_abort_writes_of_drops_only_that_writers_unsealed_objects(make_store):
    store = make_store()
    mine = store.allocate(oid(1), MB, writer=b"driver-1")
    store.allocate(oid(2), MB, writer=b"driver-2")
    put(store, 3, MB, writer=b"driver-1")               # sealed: the store's now
    store.allocate(oid(4), MB)                          # no writer (a task's result)
    assert store.abort_writes_of(b"driver-1") == [oid(1)]
    assert set(store.objects) == {oid(2), oid(3), oid(4)}
    assert store.used == 3 * MB and store.pooled == MB and exists(mine.name)
    assert store.abort_writes_of(b"driver-1") == []
    assert store.abort_writes_of(None) == []            # "no writer" is nobody's
    assert store.abort_writes_of(b"driver-2") == [oid(2)]
    assert set(store.objects) == {oid(3), oid(4)}


def test_sealing_forgets_the_writer(make_store):
    store = make_store()
    store.allocate(oid(1), MB, writer=b"driver-1")
    entry = store.seal(oid(1))
    assert entry.sealed and entry.writer is None
    assert store.seal(oid(2)) is None


# -- closing ------------------------------------------------------------------------------

def test_close_removes_every_file_and_the_lock(cluster_id):
    store = SharedMemoryStore(cluster_id, "w1", 20 * MB, arena_bytes=64 * 1024)
    lock = shm.lock_name(cluster_id, "w1")
    put(store, 1, MB)
    store.allocate(oid(2), MB, writer=b"d")               # unsealed
    put(store, 3, 2 * MB)
    store.pin(oid(3))
    put(store, 4, MB)
    store.free(oid(4), reusable=True)                   # pooled
    put(store, 5, 1000)                                 # in an arena
    put(store, 6, 1000)
    store.lease(oid(6), "reader")
    store.free(oid(6))                                  # held for its reader
    assert len(shm_files(f"gs-{cluster_id}-")) == 6     # four segments, an arena, the lock
    assert lock in shm_files(f"gs-{cluster_id}-")
    # While the store is open, a sweep sees its owner alive.
    assert shm.sweep(cluster_id) == 0 and len(shm_files(f"gs-{cluster_id}-")) == 6
    store.close()
    assert shm_files(f"gs-{cluster_id}-") == []
    assert store.used == 0 and store.pooled == 0 and not store.objects
    store.close()                                       # idempotent
    assert shm_files(f"gs-{cluster_id}-") == []


def test_stores_of_two_workers_do_not_share_names(make_store, cluster_id):
    a = make_store(tag="wa")
    b = make_store(tag="wb")
    ea, eb = put(a, 1, 4096), put(b, 1, 4096)
    assert ea.name != eb.name
    a.close()
    assert exists(eb.name) and not exists(ea.name)


def test_concurrent_allocate_and_free_keep_the_books(make_store):
    store = make_store(capacity=64 * MB)
    errors = []

    def work(base: int):
        try:
            for i in range(50):
                n = base + i
                put(store, n, 4096 * (1 + i % 5))
                store.get(oid(n))
                store.free(oid(n), reusable=i % 2 == 0)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k * 1000,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert store.used == 0 and not store.objects
    # What is left on disk is exactly the arenas.
    left = shm_files(f"gs-{store.cluster_id}-w1-")
    assert store.pooled + store.arena_total == sum(
        os.path.getsize(shm.segment_path(n)) for n in left)
    assert all(a.allocator.empty for a in store.arenas)
    assert store.summary()["freed"] == 300


def test_trim_pool_gives_back_idle_segments(make_store):
    store = make_store()
    a = put(store, 1, MB)
    store.free(oid(1), reusable=True)
    assert store.trim_pool(max_idle=3600) == 0
    assert exists(a.name) and store.pooled == MB
    time.sleep(0.2)
    b = put(store, 2, 2 * MB)
    store.free(oid(2), reusable=True)
    assert store.trim_pool(max_idle=0.1) == 1            # only the older one was idle
    assert not exists(a.name) and exists(b.name) and store.pooled == 2 * MB
    assert store.allocate(oid(3), 2 * MB).name == b.name
    assert store.trim_pool(max_idle=0) == 0 and store.used == 2 * MB


# -- taking over a dead worker's segments -------------------------------------------------

def _die(store: SharedMemoryStore) -> None:
    """What a crashed worker leaves: its segments, and its lock file unlocked."""
    os.close(store._lock_fd)
    store._lock_fd = None
    store._closed = True


def test_adopt_takes_over_a_dead_workers_sealed_segments(make_store, cluster_id):
    dead = make_store(tag="dead")
    kept = put(dead, 1, 2 * MB)
    unsealed = dead.allocate(oid(2), MB)
    pooled = put(dead, 3, MB)
    dead.free(oid(3), reusable=True)
    with open(shm.segment_path(kept.name), "r+b") as f:
        f.write(b"still here")
    _die(dead)
    heir = make_store(tag="heir")
    assert heir.adopt([[oid(1), kept.name, 2 * MB], [oid(9), "gs-nope-x-1", 5]]) == [oid(9)]
    entry = heir.get(oid(1))
    assert entry is not None and entry.name == kept.name and heir.used == 2 * MB
    with open(shm.segment_path(kept.name), "rb") as f:
        assert f.read(10) == b"still here"
    # The dead worker's other segments are gone; a sweep leaves the adopted one alone.
    assert not exists(unsealed.name) and not exists(pooled.name)
    shm.sweep(cluster_id)
    assert exists(kept.name)
    # Freed like any object of the heir; closing removes the dead worker's lock too.
    assert heir.free(oid(1), reusable=False) and not exists(kept.name)
    heir.close()
    assert shm_files(f"gs-{cluster_id}-") == []


def test_adopt_refuses_segments_of_a_live_worker(make_store):
    alive = make_store(tag="alive")
    entry = put(alive, 1, MB)
    heir = make_store(tag="heir")
    assert heir.adopt([[oid(1), entry.name, MB]], wait=0.2) == [oid(1)]
    assert heir.get(oid(1)) is None and exists(entry.name)


# -- arenas -------------------------------------------------------------------------------

def test_small_objects_share_a_few_arena_files(make_store, cluster_id):
    store = make_store(capacity=64 * MB, arena_bytes=4 * MB)
    entries = [put(store, i, 128 * 1024 + i) for i in range(100)]     # 12.8 MB of objects
    files = shm_files(f"gs-{cluster_id}-w1-")
    assert len(files) == len(store.arenas) == 4                       # not 100 files
    assert store.summary()["arenas"] == 4
    assert store.stats["created"] == 0                                # no dedicated one
    regions = sorted((shm.split_segment(e.name), e.capacity) for e in entries)
    for ((name, offset), capacity), ((next_name, next_offset), _) in zip(regions,
                                                                        regions[1:]):
        assert offset % 64 == 0
        if name == next_name:
            assert offset + capacity <= next_offset                   # disjoint regions
    summary = store.summary()
    assert summary["arena_bytes"] == 16 * MB
    assert summary["arena_allocated"] == store.used >= sum(e.size for e in entries)


def test_a_freed_region_is_reused_in_place(make_store):
    store = make_store(capacity=64 * MB, arena_bytes=4 * MB)
    first = put(store, 1, 100_000)
    put(store, 2, 100_000)
    store.free(oid(1))
    again = put(store, 3, 90_000)
    assert again.name == first.name                       # the same bytes, still warm
    assert store.used == again.capacity + store.objects[oid(2)].capacity


def test_arena_space_is_reused_by_thousands_of_objects_with_bounded_files(make_store,
                                                                        cluster_id):
    store = make_store(capacity=32 * MB, arena_bytes=8 * MB)
    live = []
    for i in range(5000):
        live.append(put(store, i, 1000 + (i * 7919) % 60_000))
        if len(live) > 200:
            store.free(live.pop(0).id)
    assert len(shm_files(f"gs-{cluster_id}-w1-")) <= 4
    for entry in live:
        store.free(entry.id)
    assert store.used == 0
    for arena in store.arenas:
        arena.allocator.check()
        assert arena.allocator.empty and arena.allocator.largest_free() == arena.size


def test_objects_above_a_quarter_of_an_arena_get_dedicated_segments(make_store):
    store = make_store(capacity=64 * MB, arena_bytes=4 * MB)
    assert store.dedicated_above == MB
    small, large = put(store, 1, MB), put(store, 2, MB + 1)
    assert "@" in small.name and "@" not in large.name
    assert store.summary()["dedicated_bytes"] == MB + 1


def test_arena_size_follows_the_capacity():
    from graphstore.worker.store import arena_bytes_for
    assert arena_bytes_for(4 * 1024 * MB) == 256 * MB          # a 16th
    assert arena_bytes_for(8 * MB) == MB                       # at least 1 MiB ...
    assert arena_bytes_for(MB) == MB // 2                      # ... but half at most
    assert arena_bytes_for(64 * 1024 * MB) == 1024 * MB        # at most 1 GiB
    assert arena_bytes_for(10 * MB, configured=MB + 3) == MB   # 64-byte aligned


def test_a_full_store_with_arenas_names_the_sizes(make_store):
    store = make_store(capacity=4 * MB, arena_bytes=2 * MB)
    for i in range(15):
        put(store, i, 250_000)
    with pytest.raises(ObjectStoreFullError, match="250,000 bytes does not fit"):
        for i in range(15, 40):
            put(store, i, 250_000)
    assert len(store.arenas) == 2


def test_empty_arenas_make_room_for_a_dedicated_segment(make_store):
    store = make_store(capacity=8 * MB, arena_bytes=2 * MB)
    for i in range(40):
        put(store, i, 150_000)                 # three arenas (and some of a fourth)
    for i in range(40):
        store.free(oid(i))
    assert len(store.arenas) >= 3
    put(store, 99, 7 * MB)                     # needs the empty arenas' room
    assert store.arena_total + store.dedicated <= store.capacity


def test_trim_pool_drops_arenas_empty_for_a_while_but_the_first(make_store):
    store = make_store(capacity=16 * MB, arena_bytes=MB)
    for i in range(12):
        put(store, i, 200_000)
    for i in range(12):
        store.free(oid(i))
    arenas = len(store.arenas)
    assert arenas >= 3
    assert store.trim_pool(max_idle=3600) == 0
    time.sleep(0.05)
    assert store.trim_pool(max_idle=0.01) == arenas - 1
    assert len(store.arenas) == 1 and store.arena_total == MB


def test_spilling_is_asked_for_at_least_the_waiting_size(make_store):
    store = make_store(capacity=4 * MB, arena_bytes=2 * MB)
    store.spill_threshold = 0.9
    assert store.spill_need(0) < 0
    store._waiting = 1                       # an allocation waits: arenas may be split up
    assert store.spill_need(300_000) == 300_000


def test_adopt_takes_over_objects_in_a_dead_workers_arena(make_store, cluster_id):
    dead = make_store(tag="dead", capacity=16 * MB, arena_bytes=MB)
    a, b = put(dead, 1, 5000), put(dead, 2, 7000)
    with open(shm.segment_path(shm.file_of(a.name)), "r+b") as f:
        f.seek(shm.split_segment(b.name)[1])
        f.write(b"object b")
    _die(dead)
    heir = make_store(tag="heir")
    assert heir.adopt([[oid(1), a.name, 5000], [oid(2), b.name, 7000],
                       [oid(3), a.name + "x", 10]]) == [oid(3)]
    assert heir.get(oid(2)).name == b.name and heir.used == 12_000
    heir.free(oid(1))
    assert exists(a.name)                              # b still lives in that arena
    with open(shm.segment_path(shm.file_of(b.name)), "rb") as f:
        f.seek(shm.split_segment(b.name)[1])
        assert f.read(8) == b"object b"
    heir.free(oid(2))
    assert not exists(a.name) and heir.used == 0       # its last object: unlinked
    assert heir.allocate(oid(4), 1000).name.startswith(f"gs-{cluster_id}-heir-")
