"""The worker's SharedMemoryStore on the real shared-memory filesystem.

Each test's store has a cluster id of its own; the fixture closes it and removes anything
left with that prefix (and the assertions check the store itself left nothing).
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
    return os.path.exists(shm.segment_path(name))


@pytest.fixture
def make_store(cluster_id):
    stores = []

    def make(capacity: int = 10 * MB, tag: str = "w1") -> SharedMemoryStore:
        store = SharedMemoryStore(cluster_id, tag, capacity)
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


def test_not_reusable_free_unlinks(make_store):
    store = make_store()
    entry = put(store, 1, MB)
    assert store.free(oid(1), reusable=False)
    assert not exists(entry.name)
    assert store.used == 0 and store.pooled == 0
    assert store.allocate(oid(2), MB).name != entry.name


def test_pinned_object_is_unlinked_not_pooled_when_freed(make_store):
    store = make_store()
    entry = put(store, 1, MB)
    assert store.pin(oid(1)) is entry and entry.pins == 1
    assert store.free(oid(1), reusable=True)
    assert not exists(entry.name)
    assert store.pooled == 0 and store.used == 0
    assert store.allocate(oid(2), MB).name != entry.name


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


def test_spilled_segment_without_readers_is_reclaimed_into_the_pool(make_store):
    store = make_store()
    entry = _spilled(store, 1, MB)
    assert not exists(entry.name)           # readers of the old name find it gone ...
    assert store.used == 0 and store.pooled == MB and store.stats["reclaimed"] == 1
    again = store.allocate(oid(2), MB)      # ... and its pages serve the next object
    assert again.name != entry.name and store.stats["reused"] == 1


def test_spilled_segment_a_reader_leases_is_unlinked_not_reused(make_store):
    store = make_store()
    entry = put(store, 1, MB)
    lease = shm.lease(entry.name)
    try:
        store.pin(oid(1))
        store.release_spilled(oid(1), entry)
        assert not exists(entry.name)
        assert store.pooled == 0 and store.used == 0 and store.stats["reclaimed"] == 0
    finally:
        os.close(lease)
    assert store.allocate(oid(2), MB).name != entry.name


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
    entries = [put(store, i, 4096) for i in range(40)]
    for i in range(40):
        store.free(oid(i), reusable=True)
    assert store.pooled == 32 * 4096 and store.used == 0
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
    store = SharedMemoryStore(cluster_id, "w1", 20 * MB)
    lock = shm.lock_name(cluster_id, "w1")
    put(store, 1, MB)
    store.allocate(oid(2), MB, writer=b"d")               # unsealed
    put(store, 3, 2 * MB)
    store.pin(oid(3))
    put(store, 4, MB)
    store.free(oid(4), reusable=True)                   # pooled
    assert len(shm_files(f"gs-{cluster_id}-")) == 5          # four segments and the lock
    assert lock in shm_files(f"gs-{cluster_id}-")
    # While the store is open, a sweep sees its owner alive.
    assert shm.sweep(cluster_id) == 0 and len(shm_files(f"gs-{cluster_id}-")) == 5
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
    # What is left on disk is exactly the pool.
    left = shm_files(f"gs-{store.cluster_id}-w1-")
    assert store.pooled == sum(os.path.getsize(shm.segment_path(n)) for n in left)
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
