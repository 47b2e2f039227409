"""graphstore.core.shm on the real shared-memory filesystem (no processes but forked children).

Every test names its segments with a cluster id of its own, and the ``cluster_id``
fixture removes whatever is left with that prefix, so tests never see each other's files
nor those of a cluster running on this host.
"""
from __future__ import annotations

import fcntl
import os
import pickle
import struct
import uuid
import warnings

import numpy as np
import pytest

from graphstore.core import shm
from helpers import shm_files
from graphstore.core.serialization import dumps, loads




def _segment(cluster_id: str, tag: str, n: int, size: int = 4096) -> str:
    name = f"{shm.PREFIX}{cluster_id}-{tag}-{n}"
    os.close(shm.create(name, size))
    return name


def _address(buffer) -> int:
    """Address of the first byte of ``buffer``."""
    return np.frombuffer(buffer, dtype=np.uint8).ctypes.data


# -- layout -----------------------------------------------------------------------------

@pytest.mark.parametrize("sizes", [[0], [1], [7, 100, 1], [64, 64, 64], [1000, 0, 3, 65],
                                   [1] * 40, [10**8, 5]])
def test_layout_offsets_are_64_byte_aligned_and_disjoint(sizes):
    offsets, total = shm.layout(sizes)
    header = 8 + 16 * len(sizes)                   # u32 magic, u32 count, (u64, u64) each
    assert len(offsets) == len(sizes)
    assert all(o % 64 == 0 for o in offsets)
    assert offsets[0] >= header and offsets[0] < header + 64
    for (o1, s1), o2 in zip(zip(offsets, sizes), offsets[1:]):
        assert o1 + s1 <= o2 < o1 + s1 + 64        # no overlap, no more than alignment slack
    assert total == offsets[-1] + sizes[-1]


def test_layout_of_nothing_is_a_nonempty_segment():
    offsets, total = shm.layout([])
    assert offsets == [] and total >= 1


def test_encoded_size_matches_layout_and_write():
    buffers = [b"abc", np.arange(1000, dtype=np.float64), memoryview(b"x" * 70)]
    assert shm.encoded_size(buffers) == shm.layout([3, 8000, 70])[1]
    target = bytearray(shm.encoded_size(buffers))
    assert shm.write_object(target, buffers) == len(target)


# -- write_object / read_object -----------------------------------------------------------

def test_roundtrip_in_memory_keeps_every_buffer():
    buffers = [b"stream", b"", bytes(range(256)) * 3, bytearray(b"tail")]
    target = bytearray(shm.encoded_size(buffers) + 100)     # a larger target is fine
    used = shm.write_object(target, buffers)
    assert used == shm.encoded_size(buffers)
    back = shm.read_object(target)
    assert [bytes(b) for b in back] == [bytes(b) for b in buffers]
    assert all(isinstance(b, memoryview) and b.obj is target for b in back)


def test_multidimensional_and_multibyte_buffers_are_written_as_bytes():
    arr = np.arange(600, dtype=np.float32).reshape(20, 30)
    target = bytearray(shm.encoded_size([memoryview(arr)]))
    shm.write_object(target, [memoryview(arr)])
    (back,) = shm.read_object(memoryview(target).cast("I"))  # any format of source works
    assert back.format == "B" and back.nbytes == arr.nbytes
    np.testing.assert_array_equal(np.frombuffer(back, np.float32).reshape(20, 30), arr)


def test_pickle5_object_through_a_segment_is_zero_copy(cluster_id):
    value = {"a": np.arange(1_000_000, dtype=np.float64),
             "b": np.ones((300, 7), dtype=np.int16),
             "c": np.zeros(3, dtype=np.uint8), "text": "héllo", "n": [1, 2, None]}
    buffers, contained = dumps(value)
    assert len(buffers) == 4 and contained == []   # three arrays went out of band
    size = shm.encoded_size(buffers)
    name = _segment(cluster_id, "w", 1, size)
    writable = shm.map_writable(name, size)
    assert shm.write_object(writable, buffers) == size

    mapping = shm.map_readonly(name, size)
    parts = shm.read_object(mapping)
    assert all(p.obj is mapping and p.readonly for p in parts)
    offsets, _ = shm.layout([memoryview(b).nbytes for b in buffers])
    base = _address(mapping)
    assert [_address(p) - base for p in parts] == offsets
    back = loads(parts)

    assert back["text"] == "héllo" and back["n"] == [1, 2, None]
    for key in ("a", "b", "c"):
        np.testing.assert_array_equal(back[key], value[key])
        assert back[key].dtype == value[key].dtype
        assert not back[key].flags.writeable          # read-only views ...
        assert (back[key].ctypes.data - base) % 64 == 0   # ... 64-byte aligned ...
        assert base <= back[key].ctypes.data < base + size  # ... inside the segment
    # Zero copy: a change written through the writer's mapping shows in the reader's array.
    a_offset = back["a"].ctypes.data - base
    struct.pack_into("<d", writable, a_offset + 8 * 12345, -1.5)
    assert back["a"][12345] == -1.5


def test_write_object_file_writes_what_write_object_writes(cluster_id):
    value = {"a": np.arange(1_000_003, dtype=np.float64),
             "b": np.ones((300, 7), dtype=np.int16)[:, ::2], "text": "héllo"}
    buffers, _ = dumps(value)
    size = shm.encoded_size(buffers)
    name = _segment(cluster_id, "w", 1, size)
    fd = os.open(shm.segment_path(name), os.O_RDWR)
    try:
        assert shm.write_object_file(fd, buffers) == size
    finally:
        os.close(fd)
    expected = bytearray(size)
    shm.write_object(expected, buffers)
    mapping = shm.map_readonly(name, size)
    # Byte for byte the same, padding included (a fresh file reads as zeros).
    assert bytes(mapping[:size]) == bytes(expected)
    back = loads(shm.read_object(mapping))
    np.testing.assert_array_equal(back["a"], value["a"])
    np.testing.assert_array_equal(back["b"], value["b"])
    assert back["text"] == "héllo"


def test_write_object_file_at_an_offset(cluster_id):
    buffers = [b"stream", memoryview(np.arange(5000, dtype=np.int32))]
    size = shm.encoded_size(buffers)
    name = _segment(cluster_id, "w", 1, 8192 + size)
    fd = os.open(shm.segment_path(name), os.O_RDWR)
    try:
        assert shm.write_object_file(fd, buffers, offset=8192) == size
    finally:
        os.close(fd)
    mapping = shm.map_readonly(name, 8192 + size)
    assert bytes(mapping[:8192]) == bytes(8192)
    parts = shm.read_object(memoryview(mapping)[8192:])
    assert bytes(parts[0]) == b"stream"
    np.testing.assert_array_equal(np.frombuffer(parts[1], dtype=np.int32), np.arange(5000))


def test_mapping_outlives_the_unlinked_file(cluster_id):
    buffers, _ = dumps(np.arange(10_000, dtype=np.int64))
    size = shm.encoded_size(buffers)
    name = _segment(cluster_id, "w", 1, size)
    shm.write_object(shm.map_writable(name, size), buffers)
    arr = loads(shm.read_object(shm.map_readonly(name, size, populate=True)))
    shm.unlink(name)
    assert not os.path.exists(shm.segment_path(name))
    shm.unlink(name)                                      # unlinking again is harmless
    np.testing.assert_array_equal(arr, np.arange(10_000, dtype=np.int64))


# -- segments of objects in arenas ---------------------------------------------------

def test_arena_segments_name_a_file_and_an_offset():
    assert shm.arena_segment("gs-c-w-3", 4096) == "gs-c-w-3@4096"
    assert shm.split_segment("gs-c-w-3@4096") == ("gs-c-w-3", 4096)
    assert shm.split_segment("gs-c-w-7") == ("gs-c-w-7", None)     # dedicated: whole file
    assert shm.file_of("gs-c-w-3@64") == "gs-c-w-3" == shm.file_of("gs-c-w-3")
    with pytest.raises(ValueError, match="malformed object segment"):
        shm.split_segment("gs-c-w-3@-1")


def test_objects_at_offsets_of_one_arena_share_one_mapping(cluster_id):
    name = _segment(cluster_id, "w", 1, 1024 * 1024)
    cache = shm.MappingCache()
    arrays = {}
    for offset in (0, 64 * 1024, 512 * 1024):
        value = np.full(1000, offset, dtype=np.int64)
        buffers, _ = dumps(value)
        size = shm.encoded_size(buffers)
        segment = shm.arena_segment(name, offset)
        shm.write_object(cache.region(segment, size, populate=True), buffers)
        arrays[offset] = loads(shm.read_object(cache.region(segment, size)))
    assert cache.count() == 1                                   # one mapping, one fd
    for offset, arr in arrays.items():
        np.testing.assert_array_equal(arr, np.full(1000, offset, dtype=np.int64))
        assert arr.ctypes.data % 64 == 0


def test_an_arena_mapping_is_dropped_once_its_file_is_gone(cluster_id, monkeypatch):
    name = _segment(cluster_id, "w", 1, 4096)
    cache = shm.MappingCache()
    view = cache.region(shm.arena_segment(name, 64), 100)
    assert cache.has(name)
    shm.unlink(name)
    monkeypatch.setattr(cache, "_checked", 0.0)
    cache._drop_unlinked()
    assert not cache.has(name) and cache.count() == 0
    view[0] = 7                                   # the view keeps its mapping alive
    assert view[0] == 7


def test_create_refuses_an_existing_name(cluster_id):
    name = _segment(cluster_id, "w", 1)
    with pytest.raises(FileExistsError):
        shm.create(name, 10)
    assert os.path.getsize(shm.segment_path(name)) == 4096


def _valid_segment() -> bytearray:
    buffers = [b"p" * 10, b"q" * 100]
    target = bytearray(shm.encoded_size(buffers))
    shm.write_object(target, buffers)
    return target


def test_wrong_magic_is_value_error():
    seg = _valid_segment()
    seg[0] ^= 0xFF
    with pytest.raises(ValueError, match="not a graphstore object segment"):
        shm.read_object(seg)
    with pytest.raises(ValueError, match="not a graphstore object segment"):
        shm.read_object(bytearray(4096))              # a zero-filled (fresh) segment


def test_buffer_past_the_end_is_value_error():
    seg = _valid_segment()
    struct.pack_into("<QQ", seg, 8 + 16, 64, len(seg))    # buffer 1 claims too much
    with pytest.raises(ValueError, match="corrupt"):
        shm.read_object(seg)
    with pytest.raises(ValueError, match="corrupt"):
        shm.read_object(_valid_segment()[:-1])        # truncated by one byte


def test_offset_beyond_the_end_is_value_error():
    seg = _valid_segment()
    struct.pack_into("<QQ", seg, 8, 2**63, 1)
    with pytest.raises(ValueError, match="corrupt"):
        shm.read_object(seg)


@pytest.mark.parametrize("make", [
    lambda: bytearray(b"\x31\x4f\x53\x47"),                       # magic only, no count
    lambda: bytearray(struct.pack("<II", 0x47534F31, 1000)) + bytearray(64),  # huge count
], ids=["short-header", "entry-table-past-end"])
def test_truncated_header_is_value_error(make):
    with pytest.raises(ValueError):
        shm.read_object(make())


# -- MappingCache -------------------------------------------------------------------------

def test_mapping_cache_hit_and_miss(cluster_id):
    a = _segment(cluster_id, "w", 1, 8192)
    b = _segment(cluster_id, "w", 2, 8192)
    cache = shm.MappingCache()
    ma = cache.get(a, 100)
    assert len(ma) == 8192                     # the whole file is mapped, not just ``size``
    assert cache.get(a, 8192) is ma            # hit
    mb = cache.get(b, 10)
    assert mb is not ma and cache.get(b, 10) is mb
    # The mappings are of the files: writes through one are seen through a fresh map.
    ma[:5] = b"hello"
    assert shm.map_readonly(a, 8192)[:5] == b"hello"
    assert cache._bytes == 2 * 8192


def test_mapping_cache_remaps_a_grown_file(cluster_id):
    a = _segment(cluster_id, "w", 1, 4096)
    cache = shm.MappingCache()
    small = cache.get(a, 4096)
    os.truncate(shm.segment_path(a), 3 * 4096)
    big = cache.get(a, 3 * 4096)               # the cached one is too short: a miss
    assert big is not small and len(big) == 3 * 4096
    assert cache.get(a, 100) is big and cache._bytes == 3 * 4096


def test_mapping_cache_is_bounded_in_entries_lru_first(cluster_id):
    names = [_segment(cluster_id, "w", i) for i in range(4)]
    cache = shm.MappingCache(max_entries=2)
    m0 = cache.get(names[0], 1)
    m1 = cache.get(names[1], 1)
    assert cache.get(names[0], 1) is m0        # names[0] is now the most recent
    m2 = cache.get(names[2], 1)                # evicts names[1], the least recent
    assert cache.get(names[0], 1) is m0 and cache.get(names[2], 1) is m2
    assert cache.get(names[1], 1) is not m1    # a miss: it was evicted
    assert len(cache._maps) == 2 and cache._bytes == 2 * 4096


def test_mapping_cache_is_bounded_in_bytes(cluster_id):
    names = [_segment(cluster_id, "w", i, 40_960) for i in range(3)]
    cache = shm.MappingCache(max_entries=100, max_bytes=100_000)
    m0 = cache.get(names[0], 1)
    m1 = cache.get(names[1], 1)
    cache.get(names[2], 1)                     # 3 x 40 KiB > 100 KB: names[0] goes
    assert cache._bytes == 2 * 40_960 and len(cache._maps) == 2
    assert cache.get(names[1], 1) is m1
    assert cache.get(names[0], 1) is not m0


def test_mapping_cache_forget_and_clear(cluster_id):
    a = _segment(cluster_id, "w", 1)
    b = _segment(cluster_id, "w", 2)
    cache = shm.MappingCache()
    ma = cache.get(a, 1)
    cache.get(b, 1)
    cache.forget(a)
    cache.forget(a)                            # forgetting twice, or the unknown, is fine
    cache.forget("gs-nothing-here")
    assert cache._bytes == 4096 and list(cache._maps) == [b]
    assert cache.get(a, 1) is not ma
    cache.clear()
    assert cache._bytes == 0 and not cache._maps


def test_mapping_cache_drops_entries_of_unlinked_files_first(cluster_id):
    a, b, c = (_segment(cluster_id, "w", i) for i in range(3))
    cache = shm.MappingCache(max_entries=2)
    cache.get(a, 1)
    mb = cache.get(b, 1)
    ma = cache.get(a, 1)                       # a is the most recently used ...
    shm.unlink(a)                              # ... but its file is gone
    mc = cache.get(c, 1)
    # Plain LRU would have dropped b; the dead entry went instead.
    assert cache.get(b, 1) is mb and cache.get(c, 1) is mc
    assert a not in cache._maps and cache._bytes == 2 * 4096
    with pytest.raises(FileNotFoundError):
        cache.get(a, 1)                        # not served from a stale entry
    assert ma[:1] == b"\x00"                   # the dropped mapping itself still works


def test_mapping_cache_missing_file_is_file_not_found(cluster_id):
    cache = shm.MappingCache()
    with pytest.raises(FileNotFoundError):
        cache.get(f"{shm.PREFIX}{cluster_id}-w-404", 10)
    assert cache._bytes == 0 and not cache._maps


# -- locks and sweeping -------------------------------------------------------------------

def test_hold_lock_creates_a_locked_file(cluster_id):
    fd = shm.hold_lock(cluster_id, "w1")
    try:
        path = shm.segment_path(shm.lock_name(cluster_id, "w1"))
        assert shm.lock_name(cluster_id, "w1") == f"gs-{cluster_id}-w1.lock"
        assert os.fstat(fd).st_ino == os.stat(path).st_ino
        other = os.open(path, os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(other)
    finally:
        os.close(fd)


def test_sweep_spares_a_live_owner_and_removes_it_once_dead(cluster_id):
    fd = shm.hold_lock(cluster_id, "w1")
    segs = [_segment(cluster_id, "w1", i) for i in (1, 2, 3)]
    lock = shm.lock_name(cluster_id, "w1")
    try:
        assert shm.sweep(cluster_id) == 0
        assert shm_files(f"gs-{cluster_id}-") == sorted(segs + [lock])
    finally:
        os.close(fd)
    assert shm.sweep(cluster_id) == 4
    assert shm_files(f"gs-{cluster_id}-") == []
    assert shm.sweep(cluster_id) == 0


def _fork_dead_owner(cluster_id: str, tag: str, segments: int) -> None:
    """A child process takes ``tag``'s lock, creates segments and dies without cleanup."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork() with threads (3.12+)
        pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            shm.hold_lock(cluster_id, tag)
            for i in range(1, segments + 1):
                os.close(shm.create(f"{shm.PREFIX}{cluster_id}-{tag}-{i}", 4096))
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_sweep_removes_a_dead_workers_segments_only(cluster_id):
    live_fd = shm.hold_lock(cluster_id, "live")
    try:
        live = [_segment(cluster_id, "live", i) for i in (1, 2)]
        _fork_dead_owner(cluster_id, "dead", 3)
        dead = [f"gs-{cluster_id}-dead-{i}" for i in (1, 2, 3)]
        assert set(dead) <= set(shm_files(f"gs-{cluster_id}-"))
        assert shm.lock_name(cluster_id, "dead") in shm_files(f"gs-{cluster_id}-")

        assert shm.sweep(cluster_id) == 4           # three segments and the lock
        assert shm_files(f"gs-{cluster_id}-") == sorted(
            live + [shm.lock_name(cluster_id, "live")])
        # The live worker still holds its lock: a second sweep changes nothing.
        assert shm.sweep(cluster_id) == 0
    finally:
        os.close(live_fd)


def test_sweep_with_a_cluster_id_leaves_other_clusters_alone(cluster_id):
    other = "u" + uuid.uuid4().hex[:12]
    try:
        _fork_dead_owner(cluster_id, "w", 1)
        _fork_dead_owner(other, "w", 2)
        assert shm.sweep(cluster_id) == 2
        assert shm_files(f"gs-{cluster_id}-") == []
        assert len(shm_files(f"gs-{other}-")) == 3
        assert shm.sweep(other) == 3
        assert shm_files(f"gs-{other}-") == []
    finally:
        for name in shm_files(f"gs-{other}-"):
            shm.unlink(name)


def test_a_swept_tag_can_be_locked_again(cluster_id):
    _fork_dead_owner(cluster_id, "w", 1)
    assert shm.sweep(cluster_id) == 2
    fd = shm.hold_lock(cluster_id, "w")
    try:
        assert shm.sweep(cluster_id) == 0
        assert shm_files(f"gs-{cluster_id}-") == [shm.lock_name(cluster_id, "w")]
    finally:
        os.close(fd)


def test_free_bytes_is_positive():
    assert shm.free_bytes() > 0


def test_pickled_payload_roundtrip_without_out_of_band_buffers():
    """An object with no out-of-band buffer is one pickle stream in the segment."""
    buffers = [pickle.dumps({"k": "v" * 1000}, protocol=5)]
    target = bytearray(shm.encoded_size(buffers))
    shm.write_object(target, buffers)
    assert loads(shm.read_object(target)) == {"k": "v" * 1000}


def test_sweep_removes_orphan_segments_that_have_no_lock_at_all(cluster_id):
    """A worker that exits while making a segment leaves it with no lock file."""
    orphan = _segment(cluster_id, "deadbeef0001", 1)
    fd = shm.hold_lock(cluster_id, "a11ve0000001")
    try:
        alive = _segment(cluster_id, "a11ve0000001", 1)
        shm.sweep(cluster_id)
        assert not os.path.exists(shm.segment_path(orphan))
        assert os.path.exists(shm.segment_path(alive))
    finally:
        os.close(fd)
