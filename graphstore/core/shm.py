"""Shared-memory segments that hold large objects, and how an object is laid out in one.

One object is one file in ``/dev/shm`` named ``gs-<cluster>-<worker>-<n>``. A worker's
``SharedMemoryStore`` creates and owns them; any process on the host maps them by name.
A mapping stays valid after the file is unlinked, so a reader's zero-copy arrays outlive
a free or a spill of the object.

Layout of a segment::

    u32 magic | u32 buffer count | (u64 offset, u64 length) per buffer | buffers...

Buffer 0 is the pickle stream; the others are its out-of-band buffers, each 64-byte
aligned so numpy views of them are aligned too.

Each live worker holds an ``flock`` on ``gs-<cluster>-<worker>.lock``; a lock that can be
taken belongs to a dead worker, and ``sweep`` removes its segments.
"""
from __future__ import annotations

import errno
import fcntl
import mmap
import os
import struct
import time
from typing import Iterable

SHM_DIR = os.environ.get("GRAPHSTORE_SHM_DIR", "/dev/shm")
PREFIX = "gs-"
_MAGIC = 0x47534F31  # "GSO1"
_HEAD = struct.Struct("<II")
_ENTRY = struct.Struct("<QQ")
_ALIGN = 64


def segment_path(name: str) -> str:
    return os.path.join(SHM_DIR, name)


def layout(sizes: list[int]) -> tuple[list[int], int]:
    """Offsets of buffers of ``sizes`` in a segment, and the segment's total size."""
    offset = _HEAD.size + _ENTRY.size * len(sizes)
    offsets = []
    for size in sizes:
        offset = (offset + _ALIGN - 1) // _ALIGN * _ALIGN
        offsets.append(offset)
        offset += size
    return offsets, max(offset, 1)


def encoded_size(buffers) -> int:
    return layout([memoryview(b).nbytes for b in buffers])[1]


def create(name: str, size: int) -> int:
    """Create a segment file of ``size`` bytes; return its descriptor."""
    fd = os.open(segment_path(name), os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.ftruncate(fd, size)
    except BaseException:
        os.close(fd)
        unlink(name)
        raise
    return fd


#: Fill the page tables at map time: one call instead of a fault per 4 KiB page.
_POPULATE = getattr(mmap, "MAP_POPULATE", 0)
#: madvise() advice (Linux >= 5.14) that fills page tables like MAP_POPULATE but is
#: called through ctypes, which drops the GIL: CPython's mmap() keeps the GIL while the
#: kernel populates (150 ms for 256 MiB of fresh memory), freezing every other thread
#: of the process, the event loop included.
_MADV_POPULATE = {True: 23, False: 22}  # MADV_POPULATE_WRITE, MADV_POPULATE_READ
_madvise = None


def _libc_madvise():
    global _madvise
    if _madvise is None:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        libc.madvise.restype = ctypes.c_int
        _madvise = libc.madvise
    return _madvise


def _populate(mapping: mmap.mmap, writable: bool) -> bool:
    """Fill the page tables of ``mapping`` without holding the GIL; False where the
    kernel cannot (then the caller maps with MAP_POPULATE)."""
    try:
        import numpy
        address = numpy.frombuffer(mapping, dtype=numpy.uint8).ctypes.data
        return _libc_madvise()(address, len(mapping), _MADV_POPULATE[writable]) == 0
    except (OSError, AttributeError, TypeError, ValueError):
        return False


def map_segment(name: str, size: int, *, writable: bool = True, populate: bool = False,
                whole_file: bool = False, fd: int | None = None) -> mmap.mmap:
    """Map ``size`` bytes of segment ``name`` (``whole_file``: the file's whole length,
    if larger). ``populate`` fills the page tables up front, for callers about to touch
    every page. ``fd``: an open descriptor of the segment (a lease) to map instead of
    opening the name again."""
    if fd is not None:
        return _map_fd(os.dup(fd), size, writable, populate, whole_file)
    return _map_fd(os.open(segment_path(name), os.O_RDWR if writable else os.O_RDONLY),
                   size, writable, populate, whole_file)


def _map_fd(fd: int, size: int, writable: bool, populate: bool,
            whole_file: bool) -> mmap.mmap:
    try:
        length = max(size, os.fstat(fd).st_size) if whole_file else size
        prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
        mapping = mmap.mmap(fd, length, flags=mmap.MAP_SHARED, prot=prot)
        if populate and not _populate(mapping, writable):
            mapping.close()
            mapping = mmap.mmap(fd, length, flags=mmap.MAP_SHARED | _POPULATE, prot=prot)
        return mapping
    finally:
        os.close(fd)


def resize(name: str, size: int) -> None:
    """Shrink (or grow) a segment file; shrinking gives the tail's memory back."""
    fd = os.open(segment_path(name), os.O_RDWR)
    try:
        os.ftruncate(fd, size)
    finally:
        os.close(fd)


def prefault(name: str, size: int) -> None:
    """Allocate every page of a segment now, so a later writer finds them resident."""
    map_segment(name, size, populate=True).close()


def map_writable(name: str, size: int) -> mmap.mmap:
    """Map for writing an object; pages are populated up front (the whole segment is
    about to be written)."""
    return map_segment(name, size, populate=True)


def map_readonly(name: str, size: int, populate: bool = False) -> mmap.mmap:
    """Map for reading. ``populate`` for readers that will touch every page (tasks);
    a driver's ``get`` maps lazily so it returns at once."""
    return map_segment(name, size, writable=False, populate=populate)


class MappingCache:
    """Mappings of segments kept open in this process, by segment name.

    Mapping a segment costs a page-table entry per 4 KiB page on first touch, and
    unmapping costs again: for a 200 MB object that is more than the copy itself. Stores
    reuse segments (same name, same file), so keeping a few mappings makes repeated puts
    and reads run at memcpy speed. A name is never given to another file, so a cached
    mapping is always of the right file. Bounded in entries and bytes; entries whose file
    is gone are dropped first (they keep unlinked memory alive).
    """

    def __init__(self, max_entries: int = 16, max_bytes: int = 2 * 1024**3):
        import threading
        from collections import OrderedDict
        self._maps: "OrderedDict[str, mmap.mmap]" = OrderedDict()
        self._bytes = 0
        self._checked = 0.0
        self._lock = threading.Lock()
        self.max_entries = max_entries
        self.max_bytes = max_bytes

    def get(self, name: str, size: int, populate: bool = False,
            fd: int | None = None) -> mmap.mmap:
        """A read-write mapping of at least ``size`` bytes of segment ``name``.

        ``populate`` fills the page tables up front (for writers, who touch every page);
        readers map lazily so a ``get`` returns at once. ``fd``: the segment's open
        descriptor (a reader's lease), used in place of its name, which may be gone.
        """
        self._drop_unlinked()
        with self._lock:
            mapping = self._maps.get(name)
            if mapping is not None and len(mapping) >= size:
                self._maps.move_to_end(name)
                return mapping
        # Populating costs per page: map what the writer needs; a lazy reader may map
        # the whole file so the mapping serves later, larger objects too.
        mapping = map_segment(name, size, populate=populate, whole_file=not populate, fd=fd)
        with self._lock:
            old = self._maps.pop(name, None)
            if old is not None:
                self._bytes -= len(old)
            self._maps[name] = mapping
            self._bytes += len(mapping)
            self._trim()
        return mapping

    def has(self, name: str) -> bool:
        return name in self._maps

    def _drop_unlinked(self) -> None:
        """Forget mappings of segments that were freed or spilled, so their memory goes
        back to the system (checked at most every 50 ms)."""
        now = time.monotonic()
        if now - self._checked < 0.05:
            return
        self._checked = now
        with self._lock:
            gone = [n for n in self._maps if not os.path.exists(segment_path(n))]
            for name in gone:
                self._bytes -= len(self._maps.pop(name))

    def _trim(self) -> None:
        if len(self._maps) <= self.max_entries and self._bytes <= self.max_bytes:
            return
        for name in [n for n in self._maps if not os.path.exists(segment_path(n))]:
            self._bytes -= len(self._maps.pop(name))
        while self._maps and (len(self._maps) > self.max_entries
                              or self._bytes > self.max_bytes):
            _, mapping = self._maps.popitem(last=False)
            self._bytes -= len(mapping)

    def forget(self, name: str) -> None:
        with self._lock:
            mapping = self._maps.pop(name, None)
            if mapping is not None:
                self._bytes -= len(mapping)

    def clear(self) -> None:
        with self._lock:
            self._maps.clear()
            self._bytes = 0


def unlink(name: str) -> None:
    try:
        os.unlink(segment_path(name))
    except FileNotFoundError:
        pass


# -- leases: reusing the memory of a spilled object safely -----------------------------
#
# A store may give a spilled object's segment to another object (its pages are already
# allocated, which makes a restore or put into it 2-3x faster than into fresh memory), but
# only when no process can still read the old object there. Readers hold a shared
# ``flock`` on the segment for as long as their views live (``lease``); the store renames
# the file to a fresh name under an exclusive lock (``reclaim``), so a reader that finds
# the old name gone, or the lock taken, looks the object up again. Names are never reused.

def lease(name: str) -> int | None:
    """Open segment ``name`` and take a shared lock on it, for as long as a reader's
    views of it live; None when the segment is gone or being reclaimed. Close the
    returned descriptor to release it."""
    path = segment_path(name)
    try:
        fd = os.open(path, os.O_RDWR)   # read-write: cached mappings serve writers too
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        # Renamed between our open and lock? Then the name is gone (never reused).
        if os.stat(path).st_ino == os.fstat(fd).st_ino:
            return fd
    except (BlockingIOError, FileNotFoundError):
        pass
    os.close(fd)
    return None


def lease_open(fd: int, name: str, inode: int) -> int | None:
    """``lease`` through a descriptor of segment ``name`` this process already has open
    (inode ``inode``): the lock is taken on it, and a duplicate is returned (release it
    with ``release_lease``: the lock belongs to both descriptors)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return None
    try:
        if os.stat(segment_path(name)).st_ino == inode:
            return os.dup(fd)
    except FileNotFoundError:
        pass
    fcntl.flock(fd, fcntl.LOCK_UN)
    return None


def release_lease(fd: int) -> None:
    """End a lease: unlock explicitly (a duplicate of the descriptor may stay open)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def reclaim(name: str, new_name: str) -> bool:
    """Rename segment ``name`` to ``new_name`` if no reader holds a lease on it; False
    (and nothing changed) otherwise. Readers arriving later find the old name gone."""
    try:
        fd = os.open(segment_path(name), os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.rename(segment_path(name), segment_path(new_name))
        return True
    except (BlockingIOError, FileNotFoundError):
        return False
    finally:
        os.close(fd)  # releases the lock


#: Buffers at least this large are copied by several threads (numpy releases the GIL).
_PARALLEL_COPY_BYTES = 16 * 1024 * 1024
_COPY_THREADS = 2
_copy_pool = None


def _copy(destination: memoryview, source: memoryview) -> None:
    """memcpy, split across threads for large buffers (about 1.3x faster here)."""
    n = source.nbytes
    if n < _PARALLEL_COPY_BYTES:
        destination[:] = source
        return
    global _copy_pool
    import numpy
    if _copy_pool is None:
        from concurrent.futures import ThreadPoolExecutor
        _copy_pool = ThreadPoolExecutor(_COPY_THREADS, thread_name_prefix="graphstore-copy")
    dst = numpy.frombuffer(destination, dtype=numpy.uint8)
    src = numpy.frombuffer(source, dtype=numpy.uint8)
    step = -(-n // _COPY_THREADS)
    futures = [_copy_pool.submit(numpy.copyto, dst[i:i + step], src[i:i + step])
               for i in range(0, n, step)]
    for future in futures:
        future.result()


def write_object(target, buffers) -> int:
    """Write ``buffers`` into the writable buffer ``target`` (one copy); return bytes used."""
    views = [memoryview(b).cast("B") if memoryview(b).format != "B" or memoryview(b).ndim != 1
             else memoryview(b) for b in buffers]
    offsets, total = layout([v.nbytes for v in views])
    out = memoryview(target).cast("B") if memoryview(target).format != "B" else memoryview(target)
    _HEAD.pack_into(out, 0, _MAGIC, len(views))
    for i, (offset, view) in enumerate(zip(offsets, views)):
        _ENTRY.pack_into(out, _HEAD.size + _ENTRY.size * i, offset, view.nbytes)
        _copy(out[offset:offset + view.nbytes], view)
    return total


def write_object_file(fd: int, buffers, offset: int = 0) -> int:
    """Write ``buffers`` as an object into the segment file ``fd`` at ``offset`` with
    ``pwrite`` instead of through a mapping; return bytes used.

    For memory this process has not mapped, this is the cheaper way in: tmpfs allocates
    a page for a write without zeroing it first and fills no page table here. Measured
    with ``benchmarks/fresh_pages.py`` (200 MB): into fresh memory 1.7 GB/s against 1.0
    for populate + copy, at about half the CPU; into pages allocated ahead
    (``fallocate``) 5 GB/s against 1.9. Into memory this process already maps with its
    page tables filled, a copy through the mapping stays faster (8-9 GB/s)."""
    views = [memoryview(b).cast("B") if memoryview(b).format != "B" or memoryview(b).ndim != 1
             else memoryview(b) for b in buffers]
    offsets, total = layout([v.nbytes for v in views])
    head = bytearray(_HEAD.size + _ENTRY.size * len(views))
    _HEAD.pack_into(head, 0, _MAGIC, len(views))
    for i, (start, view) in enumerate(zip(offsets, views)):
        _ENTRY.pack_into(head, _HEAD.size + _ENTRY.size * i, start, view.nbytes)
    _pwrite_all(fd, memoryview(head), offset)
    for start, view in zip(offsets, views):
        _pwrite_all(fd, view, offset + start)
    return total


def _pwrite_all(fd: int, view: memoryview, offset: int) -> None:
    done = 0
    while done < view.nbytes:
        done += os.pwrite(fd, view[done:], offset + done)


def read_object(source) -> list[memoryview]:
    """The buffers stored in ``source`` (views into it, no copy)."""
    view = memoryview(source)
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    if view.nbytes < _HEAD.size:
        raise ValueError("corrupt object segment: shorter than its header")
    magic, count = _HEAD.unpack_from(view, 0)
    if magic != _MAGIC:
        raise ValueError("not a graphstore object segment")
    if view.nbytes < _HEAD.size + _ENTRY.size * count:
        raise ValueError("corrupt object segment: truncated buffer table")
    buffers = []
    for i in range(count):
        offset, length = _ENTRY.unpack_from(view, _HEAD.size + _ENTRY.size * i)
        if offset + length > view.nbytes:
            raise ValueError("corrupt object segment: buffer past the end")
        buffers.append(view[offset:offset + length])
    return buffers


# -- ownership and sweeping ----------------------------------------------------------

def lock_name(cluster_id: str, worker_tag: str) -> str:
    return f"{PREFIX}{cluster_id}-{worker_tag}.lock"


def hold_lock(cluster_id: str, worker_tag: str) -> int:
    """Take the lock that marks ``worker_tag``'s segments as alive; keep the fd open."""
    path = segment_path(lock_name(cluster_id, worker_tag))
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BaseException:
            os.close(fd)
            raise
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)  # a sweeper removed the file between open and flock: again


def _entries() -> Iterable[str]:
    try:
        return [n for n in os.listdir(SHM_DIR) if n.startswith(PREFIX)]
    except OSError:
        return []


def segments_of(cluster_id: str, worker_tag: str) -> list[str]:
    """Names of the segments of one worker (its lock file excluded)."""
    owner = f"{PREFIX}{cluster_id}-{worker_tag}-"
    return [n for n in _entries() if n.startswith(owner) and not n.endswith(".lock")]


def sweep(cluster_id: str | None = None) -> int:
    """Remove segments whose owning worker is dead (its lock is free).

    With ``cluster_id``, only that cluster's. Returns the number of files removed.
    """
    removed = 0
    names = _entries()
    locks = {n[:-len(".lock")] for n in names if n.endswith(".lock")}
    for name in names:
        # A segment is made only after its worker holds its lock: one with no lock file
        # at all is an orphan (its worker exited while a segment was being made).
        if name.endswith(".lock") or name.count("-") < 3:
            continue
        owner = name.rsplit("-", 1)[0]
        if owner not in locks and (cluster_id is None
                                   or owner.startswith(f"{PREFIX}{cluster_id}-")):
            unlink(name)
            removed += 1
    for name in names:
        if not name.endswith(".lock"):
            continue
        owner = name[:-len(".lock")]            # gs-<cluster>-<worker>
        if cluster_id is not None and not owner.startswith(f"{PREFIX}{cluster_id}-"):
            continue
        path = segment_path(name)
        try:
            fd = os.open(path, os.O_RDWR)
        except OSError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                    continue  # its worker is alive
                raise
            for other in names:
                if other.startswith(owner + "-"):
                    unlink(other)
                    removed += 1
            unlink(name)
            removed += 1
        finally:
            os.close(fd)
    return removed


def free_bytes() -> int:
    """Free space in the shared-memory filesystem."""
    st = os.statvfs(SHM_DIR)
    return st.f_bavail * st.f_frsize
