"""Allocation of object regions inside one arena: a two-level segregated-fit allocator.

A pure state machine over offsets (no memory is touched), in the manner of TLSF: free
blocks are kept in size classes, four per power of two, with a bitmap of the classes that
hold any. A request is rounded up to 64 bytes and served from the first non-empty class
whose every block is large enough, so finding a block is a few integer operations, never
a scan; the rest of the block goes back as a free block. Freed blocks merge with their
free neighbours at once, which keeps fragmentation bounded: a free block is never next to
another free block.
"""
from __future__ import annotations

ALIGN = 64
#: Size classes per power of two: a block found for a request is at most 1/4 larger
#: than the class boundary, and the remainder is split off anyway.
_SUB_BITS = 2
_SUB = 1 << _SUB_BITS


def align(size: int) -> int:
    return max(ALIGN, (size + ALIGN - 1) & ~(ALIGN - 1))


def _class_of(size: int) -> int:
    """The class holding free blocks of ``size`` bytes (rounded down)."""
    top = size.bit_length() - 1
    if top < _SUB_BITS:
        return size
    sub = (size >> (top - _SUB_BITS)) & (_SUB - 1)
    return (top - _SUB_BITS + 1) * _SUB + sub


def _class_fitting(size: int) -> int:
    """The lowest class whose every block holds ``size`` bytes."""
    top = size.bit_length() - 1
    if top >= _SUB_BITS:
        size += (1 << (top - _SUB_BITS)) - 1   # round up to the next class boundary
    return _class_of(size)


class ArenaAllocator:
    """Regions of an arena of ``size`` bytes: ``allocate`` returns an offset or None,
    ``free`` gives a region back."""

    def __init__(self, size: int):
        if size < ALIGN:
            raise ValueError(f"an arena must hold at least {ALIGN} bytes, not {size}")
        self.size = size - size % ALIGN
        self.allocated = 0                       # bytes in allocated regions
        self._used: dict[int, int] = {}          # offset -> size of allocated regions
        self._free: dict[int, int] = {}          # offset -> size of free blocks
        self._free_ending: dict[int, int] = {}   # end -> offset of free blocks
        self._classes: dict[int, dict[int, None]] = {}   # class -> offsets (ordered set)
        self._bitmap = 0                         # bit c set: class c holds a block
        self._insert(0, self.size)

    # -- the free lists ----------------------------------------------------------------
    def _insert(self, offset: int, size: int) -> None:
        self._free[offset] = size
        self._free_ending[offset + size] = offset
        c = _class_of(size)
        blocks = self._classes.get(c)
        if blocks is None:
            blocks = self._classes[c] = {}
            self._bitmap |= 1 << c
        blocks[offset] = None

    def _remove(self, offset: int) -> int:
        size = self._free.pop(offset)
        del self._free_ending[offset + size]
        c = _class_of(size)
        blocks = self._classes[c]
        del blocks[offset]
        if not blocks:
            del self._classes[c]
            self._bitmap &= ~(1 << c)
        return size

    # -- the interface ----------------------------------------------------------------
    def allocate(self, size: int) -> int | None:
        """An offset of a region of at least ``size`` bytes, or None if no free block
        is large enough."""
        size = align(size)
        if size > self.size - self.allocated:
            return None
        # A hole of about this size first (objects of one size reuse each other's
        # places, whose pages are warm), then any block of a class that surely fits.
        offset = self._fit_in_class(_class_of(size), size)
        if offset is None:
            c = _class_fitting(size)
            candidates = self._bitmap >> c
            if not candidates:
                return None
            c += (candidates & -candidates).bit_length() - 1
            offset = next(iter(self._classes[c]))
        block = self._remove(offset)
        if block - size >= ALIGN:
            self._insert(offset + size, block - size)
        else:
            size = block
        self._used[offset] = size
        self.allocated += size
        return offset

    def _fit_in_class(self, c: int, size: int, tries: int = 8) -> int | None:
        """A block of class ``c`` holding ``size`` bytes, among its first few."""
        for offset in self._classes.get(c, ()):
            if self._free[offset] >= size:
                return offset
            tries -= 1
            if not tries:
                break
        return None

    def free(self, offset: int) -> int:
        """Give back the region at ``offset``; returns its size."""
        size = self._used.pop(offset, None)
        if size is None:
            raise ValueError(f"no allocated region at offset {offset}")
        self.allocated -= size
        start, end = offset, offset + size
        before = self._free_ending.get(start)
        if before is not None:
            start = before
            self._remove(before)
        if end in self._free:
            end += self._remove(end)
        self._insert(start, end - start)
        return size

    def region_size(self, offset: int) -> int | None:
        return self._used.get(offset)

    @property
    def empty(self) -> bool:
        return not self._used

    @property
    def regions(self) -> int:
        return len(self._used)

    def largest_free(self) -> int:
        if not self._bitmap:
            return 0
        return max(self._free[o] for o in self._classes[self._bitmap.bit_length() - 1])

    def check(self) -> None:
        """Assert the invariants (tests): blocks tile the arena, free ones never touch."""
        blocks = sorted([(o, s, False) for o, s in self._used.items()]
                        + [(o, s, True) for o, s in self._free.items()])
        position, previous_free = 0, False
        for offset, size, free in blocks:
            assert offset == position, (offset, position)
            assert not (free and previous_free), f"free blocks touch at {offset}"
            position, previous_free = offset + size, free
        assert position == self.size, (position, self.size)
        assert self.allocated == sum(self._used.values())
        for c, offsets in self._classes.items():
            assert offsets and self._bitmap >> c & 1
            for offset in offsets:
                assert _class_of(self._free[offset]) == c
