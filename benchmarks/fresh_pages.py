#!/usr/bin/env python
"""What writing 200 MB into *fresh* shared memory costs, technique by technique.

Standalone (no cluster): each sample creates a new file in /dev/shm, named
``fresh-pages-probe-*`` (not ``gs-*``, which starting clusters sweep), maps it MAP_SHARED
and copies a warm 200 MB array into it, the way a put into a new store segment does; the
last ``--keep`` files stay alive (five live puts), all are removed at exit. Every technique
runs ``--repeat`` times, interleaved with the others; the script prints median / min / max
GB/s (10^9 bytes/s) of the timed part, the process's CPU time for it (all threads; less
sensitive than wall time to other load on the machine) and its phases.

    python benchmarks/fresh_pages.py --repeat 7
    python benchmarks/fresh_pages.py --only warm_memcpy1,populate1_copy2,pwrite1 --repeat 9

Techniques (``--list`` prints them): see ``TECHNIQUES``.
"""
from __future__ import annotations

import argparse
import ctypes
import mmap
import os
import statistics
import sys
import threading
import time

import numpy as np

SIZE = 200 * 10**6
GB = 1e9
DIR = "/dev/shm"
MADV_POPULATE_READ, MADV_POPULATE_WRITE = 22, 23
FALLOC_FL_KEEP_SIZE = 1

libc = ctypes.CDLL(None, use_errno=True)
libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]

_count = 0
_live: list[str] = []
_clocks: list[float] = []   # CPU seconds of this process at each clock() call


def clock() -> float:
    """time.perf_counter(); also notes the process's CPU time (all threads, user +
    system), so the CPU a technique burns between its first and last clock() is
    known: less sensitive than wall time to other load on the machine."""
    _clocks.append(time.process_time())
    return time.perf_counter()


def new_file(size: int = SIZE) -> int:
    global _count
    _count += 1
    path = f"{DIR}/fresh-pages-probe-{os.getpid()}-{_count}"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    os.ftruncate(fd, size)
    _live.append(path)
    return fd


def cleanup() -> None:
    for path in _live:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
    _live.clear()


def address(m: mmap.mmap) -> int:
    return np.frombuffer(m, dtype=np.uint8).ctypes.data


def madvise(addr: int, length: int, advice: int) -> None:
    if libc.madvise(addr, length, advice) != 0:
        raise OSError(ctypes.get_errno(), "madvise")


def fallocate(fd: int, offset: int, length: int) -> None:
    if libc.fallocate(fd, 0, offset, length) != 0:
        raise OSError(ctypes.get_errno(), "fallocate")


def in_threads(fn, n: int, size: int) -> None:
    """fn(start, stop) over ``n`` equal parts of [0, size), in n threads."""
    step = -(-size // n) + 4095 & ~4095
    parts = [(i, min(i + step, size)) for i in range(0, size, step)]
    threads = [threading.Thread(target=fn, args=p) for p in parts[1:]]
    for t in threads:
        t.start()
    fn(*parts[0])
    for t in threads:
        t.join()


def copy(dst: np.ndarray, src: np.ndarray, threads: int) -> None:
    if threads == 1:
        np.copyto(dst, src)
    else:
        in_threads(lambda a, b: np.copyto(dst[a:b], src[a:b]), threads, src.nbytes)


def populate(m: mmap.mmap, threads: int, advice: int = MADV_POPULATE_WRITE) -> None:
    base = address(m)
    in_threads(lambda a, b: madvise(base + a, b - a, advice), threads, len(m))


# Each technique: fn(src) -> dict of phase -> seconds (the total is their sum).
def t_fault_copy(src, threads=1):
    fd = new_file()
    t0 = clock()
    m = mmap.mmap(fd, SIZE, mmap.MAP_SHARED)
    os.close(fd)
    copy(np.frombuffer(m, np.uint8), src, threads)
    return {"copy(+faults)": clock() - t0}, m


def t_populate_copy(src, pop_threads=1, copy_threads=2, falloc=False, map_populate=False,
                    advice=MADV_POPULATE_WRITE):
    fd = new_file()
    phases = {}
    t0 = clock()
    if falloc:
        fallocate(fd, 0, SIZE)
        t1 = clock()
        phases["fallocate"] = t1 - t0
        t0 = t1
    flags = mmap.MAP_SHARED | (mmap.MAP_POPULATE if map_populate else 0)
    m = mmap.mmap(fd, SIZE, flags)
    os.close(fd)
    if not map_populate:
        populate(m, pop_threads, advice)
    t1 = clock()
    phases["populate"] = t1 - t0
    copy(np.frombuffer(m, np.uint8), src, copy_threads)
    phases["copy"] = clock() - t1
    return phases, m


def t_fallocate_then_fault_copy(src, threads=2):
    fd = new_file()
    t0 = clock()
    fallocate(fd, 0, SIZE)
    t1 = clock()
    m = mmap.mmap(fd, SIZE, mmap.MAP_SHARED)
    os.close(fd)
    copy(np.frombuffer(m, np.uint8), src, threads)
    return {"fallocate": t1 - t0, "copy(+minor faults)": clock() - t1}, m


def t_pwrite_prefaulted(src):
    """pwrite() into pages already allocated *and* mapped (populated) in this
    process: the per-page cost of the write path against a plain memcpy there."""
    fd = new_file()
    m = mmap.mmap(fd, SIZE, mmap.MAP_SHARED)
    populate(m, 1)
    view = memoryview(src)
    t0 = clock()
    off = 0
    while off < SIZE:
        off += os.pwrite(fd, view[off:], off)
    dt = clock() - t0
    os.close(fd)
    return {"pwrite": dt}, m


def t_pipeline(src, chunk=8 * 2**20, populators=1, falloc=False, prefallocated=False):
    """``populators`` threads populate chunk k+1.. while the caller copies chunk k.
    ``prefallocated``: pages allocated (fallocate) before the timer; only page tables
    are filled in the pipeline."""
    fd = new_file()
    if prefallocated:
        fallocate(fd, 0, SIZE)
    t0 = clock()
    if falloc:
        fallocate(fd, 0, SIZE)
    m = mmap.mmap(fd, SIZE, mmap.MAP_SHARED)
    os.close(fd)
    base = address(m)
    dst = np.frombuffer(m, np.uint8)
    bounds = [(a, min(a + chunk, SIZE)) for a in range(0, SIZE, chunk)]
    ready = [threading.Event() for _ in bounds]
    nxt = iter(range(len(bounds)))
    lock = threading.Lock()

    def populator():
        while True:
            with lock:
                k = next(nxt, None)
            if k is None:
                return
            a, b = bounds[k]
            madvise(base + a, b - a, MADV_POPULATE_WRITE)
            ready[k].set()

    threads = [threading.Thread(target=populator) for _ in range(populators)]
    for t in threads:
        t.start()
    for k, (a, b) in enumerate(bounds):
        ready[k].wait()
        np.copyto(dst[a:b], src[a:b])
    for t in threads:
        t.join()
    return {"pipelined": clock() - t0}, m


def t_prefaulted(src, threads=2, falloc_only=False):
    """Memory prepared beforehand (untimed, like a reserve): only the copy is timed.
    ``falloc_only``: the pages exist (fallocate) but this process's page tables are
    empty: the copy pays minor faults."""
    fd = new_file()
    if falloc_only:
        fallocate(fd, 0, SIZE)
        m = mmap.mmap(fd, SIZE, mmap.MAP_SHARED)
    else:
        m = mmap.mmap(fd, SIZE, mmap.MAP_SHARED)
        populate(m, 1)
    os.close(fd)
    t0 = clock()
    copy(np.frombuffer(m, np.uint8), src, threads)
    return {"copy": clock() - t0}, m


def t_repopulate(src, threads=2):
    """Populated beforehand (untimed); timed: MADV_POPULATE_WRITE again over the
    already-filled range (what a populate-ahead costs when nothing is missing), copy."""
    fd = new_file()
    m = mmap.mmap(fd, SIZE, mmap.MAP_SHARED)
    os.close(fd)
    populate(m, 1)
    t0 = clock()
    populate(m, 1)
    t1 = clock()
    copy(np.frombuffer(m, np.uint8), src, threads)
    return {"populate again": t1 - t0, "copy": clock() - t1}, m


def t_copy_beside_populate(src, threads=2, nice=0):
    """Copy into prefaulted memory while another thread populates a fresh 200 MB file
    (a background refill running during a put); ``nice``: that thread's nice value
    (Linux: per thread)."""
    fd = new_file()
    m = mmap.mmap(fd, SIZE, mmap.MAP_SHARED)
    os.close(fd)
    populate(m, 1)
    fd2 = new_file()
    m2 = mmap.mmap(fd2, SIZE, mmap.MAP_SHARED)
    os.close(fd2)
    started = threading.Event()

    def refill():
        if nice:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
        started.set()
        populate(m2, 1)

    t = threading.Thread(target=refill)
    t.start()
    started.wait()
    t0 = clock()
    copy(np.frombuffer(m, np.uint8), src, threads)
    dt = clock() - t0
    t.join()
    m2.close()
    return {"copy": dt}, m


def t_fallocated_populate(src, pop_threads=1, copy_threads=2, advice=MADV_POPULATE_WRITE,
                          map_populate=False):
    """Pages allocated beforehand by fallocate (untimed: an idle store could do it);
    timed: map, populate (page tables only: MADV_POPULATE_WRITE faults page by page,
    MADV_POPULATE_READ and MAP_POPULATE take read faults, which map up to
    fault_around_bytes of cached pages each), copy."""
    fd = new_file()
    fallocate(fd, 0, SIZE)
    t0 = clock()
    m = mmap.mmap(fd, SIZE, mmap.MAP_SHARED | (mmap.MAP_POPULATE if map_populate else 0))
    os.close(fd)
    if not map_populate:
        populate(m, pop_threads, advice)
    t1 = clock()
    copy(np.frombuffer(m, np.uint8), src, copy_threads)
    return {"populate(tables)": t1 - t0, "copy": clock() - t1}, m


def t_private_anon(src, threads=2):
    """Reference: fresh private anonymous memory (what np.empty + copy pays)."""
    t0 = clock()
    m = mmap.mmap(-1, SIZE, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    copy(np.frombuffer(m, np.uint8), src, threads)
    return {"copy(+faults)": clock() - t0}, m


def t_populate_only(src, threads=1, falloc=False):
    fd = new_file()
    if _PRE_FALLOCATE:
        fallocate(fd, 0, SIZE)
    t0 = clock()
    if falloc:
        fallocate(fd, 0, SIZE)
    m = mmap.mmap(fd, SIZE, mmap.MAP_SHARED)
    os.close(fd)
    populate(m, threads)
    return {"populate": clock() - t0}, m


_PRE_FALLOCATE = False


def _untimed_falloc_then(fn, *args):
    global _PRE_FALLOCATE
    _PRE_FALLOCATE = True
    try:
        return fn(*args)
    finally:
        _PRE_FALLOCATE = False


def t_fallocate_only(src):
    fd = new_file()
    t0 = clock()
    fallocate(fd, 0, SIZE)
    dt = clock() - t0
    os.close(fd)
    return {"fallocate": dt}, None


def t_pwrite(src, threads=1, falloc=False, prefallocated=False, chunk=None):
    """No mapping at all: pwrite() the bytes into the tmpfs file. The kernel allocates
    each page for the write without zeroing it first (shmem's SGP_WRITE) and no page
    table is filled in the writer. ``prefallocated``: fallocate untimed before."""
    fd = new_file()
    if prefallocated:
        fallocate(fd, 0, SIZE)
    t0 = clock()
    if falloc:
        fallocate(fd, 0, SIZE)
    view = memoryview(src)

    def write(a, b):
        step = chunk or (b - a)
        for off in range(a, b, step):
            end = min(off + step, b)
            while off < end:
                off += os.pwrite(fd, view[off:end], off)

    in_threads(write, threads, SIZE)
    dt = clock() - t0
    os.close(fd)
    return {"pwrite": dt}, None


TECHNIQUES = {
    # the regime: nothing prepared
    "fault_copy1": lambda s: t_fault_copy(s, 1),
    "fault_copy2": lambda s: t_fault_copy(s, 2),
    "populate1_copy2": lambda s: t_populate_copy(s, 1, 2),      # graphstore today
    "populate2_copy2": lambda s: t_populate_copy(s, 2, 2),
    "map_populate_copy2": lambda s: t_populate_copy(s, map_populate=True),
    "falloc_populate1_copy2": lambda s: t_populate_copy(s, 1, 2, falloc=True),
    "falloc_popread1_copy2": lambda s: t_populate_copy(s, 1, 2, falloc=True,
                                                       advice=MADV_POPULATE_READ),
    "falloc_popread2_copy2": lambda s: t_populate_copy(s, 2, 2, falloc=True,
                                                       advice=MADV_POPULATE_READ),
    "popread1_copy2": lambda s: t_populate_copy(s, 1, 2, advice=MADV_POPULATE_READ),
    "falloc_fault_copy2": lambda s: t_fallocate_then_fault_copy(s, 2),
    "pipeline_8M_1pop": lambda s: t_pipeline(s, 8 * 2**20, 1),
    "pipeline_32M_1pop": lambda s: t_pipeline(s, 32 * 2**20, 1),
    "pipeline_8M_2pop": lambda s: t_pipeline(s, 8 * 2**20, 2),
    "pipeline_4M_2pop": lambda s: t_pipeline(s, 4 * 2**20, 2),
    "pipeline_16M_2pop": lambda s: t_pipeline(s, 16 * 2**20, 2),
    "fallocated_pipeline_8M_1pop": lambda s: t_pipeline(s, 8 * 2**20, 1, prefallocated=True),
    "fallocated_pipeline_8M_2pop": lambda s: t_pipeline(s, 8 * 2**20, 2, prefallocated=True),
    # parts alone
    "populate_only1": lambda s: t_populate_only(s, 1),
    "populate_only2": lambda s: t_populate_only(s, 2),
    "fallocate_only": t_fallocate_only,
    # memory prepared ahead (untimed), as a reserve
    "prefaulted_copy1": lambda s: t_prefaulted(s, 1),
    "prefaulted_copy2": lambda s: t_prefaulted(s, 2),
    "fallocated_populate1_copy2": lambda s: t_fallocated_populate(s, 1, 2),
    "fallocated_populate2_copy2": lambda s: t_fallocated_populate(s, 2, 2),
    "fallocated_popread1_copy2": lambda s: t_fallocated_populate(
        s, 1, 2, MADV_POPULATE_READ),
    "fallocated_popread2_copy2": lambda s: t_fallocated_populate(
        s, 2, 2, MADV_POPULATE_READ),
    "fallocated_mappopulate_copy2": lambda s: t_fallocated_populate(s, map_populate=True),
    "repopulate_copy2": lambda s: t_repopulate(s),
    "prefaulted_copy2_beside_refill": lambda s: t_copy_beside_populate(s, 2, 0),
    "prefaulted_copy2_beside_refill_nice19": lambda s: t_copy_beside_populate(s, 2, 19),
    "fallocated_fault_copy2": lambda s: t_prefaulted(s, 2, falloc_only=True),
    "fallocated_populate_only1": lambda s: _untimed_falloc_then(t_populate_only, s, 1),
    "fallocated_populate_only2": lambda s: _untimed_falloc_then(t_populate_only, s, 2),
    # no mapping in the writer: pwrite() into the file
    "pwrite1": lambda s: t_pwrite(s, 1),
    "pwrite2": lambda s: t_pwrite(s, 2),
    "pwrite1_8M": lambda s: t_pwrite(s, 1, chunk=8 * 2**20),
    "falloc_pwrite2": lambda s: t_pwrite(s, 2, falloc=True),
    "fallocated_pwrite1": lambda s: t_pwrite(s, 1, prefallocated=True),
    "fallocated_pwrite2": lambda s: t_pwrite(s, 2, prefallocated=True),
    "fallocated_pwrite1_8M": lambda s: t_pwrite(s, 1, prefallocated=True, chunk=8 * 2**20),
    "pwrite1_into_prefaulted": lambda s: t_pwrite_prefaulted(s),
    # references
    "anon_fault_copy2": t_private_anon,
    "warm_memcpy1": None,  # numpy copyto into a warm private array (the benchmark's)
}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--only", help="comma-separated technique names")
    p.add_argument("--keep", type=int, default=5,
                   help="keep this many mappings (and files) alive, as five live puts "
                        "do; older ones are unmapped and unlinked (default 5)")
    p.add_argument("--list", action="store_true")
    args = p.parse_args()
    if args.list:
        print("\n".join(TECHNIQUES))
        return 0
    names = args.only.split(",") if args.only else list(TECHNIQUES)
    src = np.arange(SIZE // 8, dtype=np.float64).view(np.uint8)
    warm = np.empty_like(src)
    np.copyto(warm, src)
    results: dict[str, list[dict]] = {n: [] for n in names}
    kept: list = []
    try:
        for _ in range(args.repeat):
            for name in names:
                if name == "warm_memcpy1":
                    _clocks.clear()
                    t0 = clock()
                    np.copyto(warm, src)
                    results[name].append({"copy": clock() - t0,
                                          "cpu": _clocks[-1] - _clocks[0]})
                    continue
                before = len(_live)
                _clocks.clear()
                phases, m = TECHNIQUES[name](src)
                phases["cpu"] = _clocks[-1] - _clocks[0]
                results[name].append(phases)
                kept.append((m, _live[before:]))
                del _live[before:]
                while len(kept) > args.keep:
                    old, paths = kept.pop(0)
                    if old is not None:
                        old.close()
                    for path in paths:
                        try:
                            os.unlink(path)
                        except FileNotFoundError:
                            pass
    finally:
        for m, paths in kept:
            if m is not None:
                m.close()
            _live.extend(paths)
        cleanup()
    print("| technique | GB/s median | min | max | CPU ms per 200 MB (median) "
          "| phases (median ms) |")
    print("|---|---:|---:|---:|---:|---|")
    for name, runs in results.items():
        totals = [sum(v for k, v in r.items() if k != "cpu") for r in runs]
        gbps = sorted(SIZE / t / GB for t in totals)
        cpu = statistics.median(r["cpu"] for r in runs) * 1e3
        phases = ", ".join(f"{k} {statistics.median(r[k] for r in runs) * 1e3:.0f}"
                           for k in runs[0] if k != "cpu")
        print(f"| {name} | {statistics.median(gbps):.2f} | {gbps[0]:.2f} | {gbps[-1]:.2f} "
              f"| {cpu:.0f} | {phases} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
