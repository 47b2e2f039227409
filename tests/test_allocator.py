"""The arena allocator: a pure state machine over offsets (no memory involved)."""
from __future__ import annotations

import random

import pytest

from graphstore.worker.allocator import ALIGN, ArenaAllocator

KiB = 1024


def test_regions_are_aligned_disjoint_and_fill_the_arena():
    arena = ArenaAllocator(64 * KiB)
    offsets = [arena.allocate(1000) for _ in range(64)]
    assert None not in offsets and len(set(offsets)) == 64
    assert all(o % ALIGN == 0 for o in offsets)
    assert arena.allocate(1) is None                  # 64 x 1024 bytes: full
    arena.check()


def test_freed_neighbours_merge_into_one_block():
    arena = ArenaAllocator(16 * KiB)
    a, b, c = (arena.allocate(4 * KiB) for _ in range(3))
    arena.free(a)
    arena.free(c)                                     # c merges with the free tail
    assert arena.largest_free() == 8 * KiB
    arena.free(b)                                     # everything merges
    assert arena.empty and arena.largest_free() == 16 * KiB
    arena.check()
    assert arena.allocate(16 * KiB) == 0


def test_a_hole_of_the_right_size_is_reused_before_fresh_space():
    arena = ArenaAllocator(1024 * KiB)
    first = arena.allocate(128 * KiB + 100)
    arena.allocate(128 * KiB + 100)
    arena.free(first)
    assert arena.allocate(128 * KiB + 50) == first


def test_a_request_larger_than_every_block_is_refused():
    arena = ArenaAllocator(8 * KiB)
    arena.allocate(3 * KiB)
    arena.allocate(3 * KiB)
    assert arena.allocate(3 * KiB) is None            # 2 KiB left
    assert arena.allocate(2 * KiB) is not None        # the last block, exactly


def test_free_of_an_unknown_offset_is_an_error():
    arena = ArenaAllocator(8 * KiB)
    with pytest.raises(ValueError, match="no allocated region at offset 64"):
        arena.free(64)
    with pytest.raises(ValueError, match="at least 64 bytes"):
        ArenaAllocator(10)


@pytest.mark.parametrize("seed", range(5))
def test_random_allocations_and_frees_keep_every_invariant(seed):
    rnd = random.Random(seed)
    arena = ArenaAllocator(64 * 1024 * KiB)
    live: dict[int, int] = {}
    for step in range(20_000):
        if live and (rnd.random() < 0.5 or len(live) > 2000):
            offset = rnd.choice(list(live)) if len(live) < 64 else next(iter(live))
            assert arena.free(offset) >= live.pop(offset)
        else:
            size = rnd.choice([rnd.randint(1, 300), rnd.randint(1, 200 * KiB),
                               128 * KiB + rnd.randint(0, 500)])
            offset = arena.allocate(size)
            if offset is not None:
                assert offset % ALIGN == 0 and offset + size <= arena.size
                live[offset] = size
        if step % 2000 == 0:
            arena.check()
    spans = sorted((o, o + arena.region_size(o)) for o in live)
    assert all(end <= start for (_, end), (start, _) in zip(spans, spans[1:]))
    for offset in list(live):
        arena.free(offset)
    arena.check()
    assert arena.empty and arena.largest_free() == arena.size
