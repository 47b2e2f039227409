#!/usr/bin/env python
"""Issue 14's regime on graphstore alone, put by put, with where each put's time goes.

Five back-to-back puts of a 200 MB array, every ref kept, after ``init``, one no-op task
and a pause (default 2 s, as ``fresh_puts`` in the objects suite). For each put: its
time and GB/s, and the time spent mapping segments (``shm.map_segment``; which thread,
populated or not: the driver's background premap thread shows as ``graphstore-p``) and
copying (``shm.write_object``), timed by wrapping those functions.

``--pwrite`` writes a put whose segment this process has not mapped with
``shm.write_object_file`` (pwrite, no mapping) instead of populate + copy;
``--pwrite-all`` does so for every put, premapped reserves included. Both patch
``ObjectIO._write_segment`` as it is at this commit (an experiment, not the product).
``--populate2``: the put's own MADV_POPULATE_WRITE (on the main thread) is split in
two halves, one in a helper thread (background populates stay on one thread).

    python benchmarks/fresh_puts_probe.py [PAUSE_S] [--pwrite | --pwrite-all] [--populate2]
"""
import os
import sys
import threading
import time

import numpy as np

import graphstore
from graphstore.core import shm

phases = []


def timed(label_of, fn):
    def wrapper(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            phases.append((label_of(kwargs), time.perf_counter() - t0))
    return wrapper


shm.write_object = timed(lambda kw: "copy", shm.write_object)
shm.map_segment = timed(
    lambda kw: f"map({threading.current_thread().name[:12]}, populate={kw.get('populate')})",
    shm.map_segment)

if "--populate2" in sys.argv:
    one_thread_populate = shm._populate

    def _populate(mapping, writable):
        if threading.current_thread() is not threading.main_thread() or len(mapping) < 2**25:
            return one_thread_populate(mapping, writable)
        address = np.frombuffer(mapping, dtype=np.uint8).ctypes.data
        half = len(mapping) // 2 & ~4095
        advice = shm._MADV_POPULATE[writable]
        madvise = shm._libc_madvise()
        other = []
        helper = threading.Thread(target=lambda: other.append(
            madvise(address + half, len(mapping) - half, advice)))
        helper.start()
        ok = madvise(address, half, advice) == 0
        helper.join()
        return ok and other == [0]
    shm._populate = _populate

ALL = "--pwrite-all" in sys.argv
PWRITE = ALL or "--pwrite" in sys.argv
args = [a for a in sys.argv[1:] if not a.startswith("--")]
if PWRITE:
    from graphstore.runtime.object_io import ObjectIO
    old_write = ObjectIO._write_segment

    def _write_segment(self, segment, size, buffers):
        if not ALL and (segment in self._reserves or self.mappings.has(segment)):
            return old_write(self, segment, size, buffers)   # mapped and populated: copy
        t0 = time.perf_counter()
        fd = os.open(shm.segment_path(segment), os.O_RDWR)
        try:
            shm.write_object_file(fd, buffers)
        finally:
            os.close(fd)
        phases.append(("pwrite", time.perf_counter() - t0))
    ObjectIO._write_segment = _write_segment


@graphstore.remote
def noop():
    return None


def main():
    graphstore.init()
    try:
        graphstore.get(noop.remote())
        arr = np.arange(25_000_000, dtype=np.float64)
        time.sleep(float(args[0]) if args else 2.0)
        refs = []
        for i in range(5):
            phases.clear()
            t0 = time.perf_counter()
            refs.append(graphstore.put(arr))
            dt = time.perf_counter() - t0
            print(f"put {i}: {dt * 1e3:7.1f} ms {arr.nbytes / dt / 1e9:5.2f} GB/s  "
                  + ", ".join(f"{label} {t * 1e3:.0f} ms" for label, t in phases),
                  flush=True)
        del refs
    finally:
        graphstore.shutdown()


if __name__ == "__main__":
    main()
