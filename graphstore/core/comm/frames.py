"""Memory for incoming frames, and finding frame placeholders in decoded values."""
from __future__ import annotations

import mmap

from graphstore.core import protocol

#: Frames at least this large are read into their own anonymous mapping.
MAPPED_FRAME = 8 * 1024 * 1024


def frame_memory(n: int) -> memoryview:
    """Memory for a large frame about to be read. Anonymous mmap pages are committed as
    the bytes land (``bytearray(n)`` zero-fills, committing all ``n`` at once), so a
    peer that announces a frame up to ``max_frame_bytes`` and sends nothing costs this
    process address space, not memory. Smaller frames stay on the heap: each mapping
    is one of a process's limited memory areas (``vm.max_map_count``), and a scheduler
    may keep tens of thousands of inline payloads."""
    if n < MAPPED_FRAME:
        return memoryview(bytearray(n))
    return memoryview(mmap.mmap(-1, n))


def frames_in(value, depth: int = 0):
    """The ``Frame`` placeholders inside a decoded value (lists and dicts, shallow)."""
    if type(value) is protocol.Frame:
        yield value
    elif depth < 4 and isinstance(value, list):
        for item in value:
            yield from frames_in(item, depth + 1)
    elif depth < 4 and isinstance(value, dict):
        for item in value.values():
            yield from frames_in(item, depth + 1)
