"""Many objects: tens of thousands of arrays in the object store, under ulimit -n 1024.

Each store allocates objects inside a few large shared-memory files (arenas), so the
number of objects costs bookkeeping, not files or descriptors. This program puts 20,000
arrays of 128 KiB (2.6 GB) into two stores of 1 GiB, so about a third of them spill to
disk, reads every one back bit for bit, and shows the stores' arenas and this process's
descriptors along the way.

Run: python examples/many_objects.py [count]
"""
import os
import resource
import sys
import tempfile
import time

import numpy as np

import graphstore
from graphstore.cluster_report import format_memory_summary

SIZE = 128 * 1024


def array(i: int) -> np.ndarray:
    """Object ``i``: 128 KiB whose every element says which object it is."""
    return np.arange(SIZE // 8, dtype=np.int64) * 1_000_003 + i


def descriptors() -> int:
    return len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else -1


@graphstore.remote
def checksum(x) -> int:
    return int(x.sum())


def main(count: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    print(f"open-file limit: {soft} (hard {hard})")
    with tempfile.TemporaryDirectory() as spill:
        graphstore.init(num_cpus=2, object_store_memory=1024**3, spill_to=spill)
        start = time.perf_counter()
        refs = [graphstore.put(array(i)) for i in range(count)]
        print(f"put {count:,} arrays of 128 KiB in {time.perf_counter() - start:.1f} s; "
              f"{descriptors()} descriptors open here")
        print(format_memory_summary(graphstore.memory_summary()).split("--- objects")[0])

        start = time.perf_counter()
        checked = 0
        for first in range(0, count, 1000):        # a thousand at a time: one get each
            values = graphstore.get(refs[first:first + 1000])
            for i, value in enumerate(values, first):
                assert np.array_equal(value, array(i)), f"object {i} came back different"
            checked += len(values)
            del values
        print(f"read all {checked:,} back bit for bit in {time.perf_counter() - start:.1f} s "
              f"(spilled ones restored); {descriptors()} descriptors open here")

        sums = graphstore.get([checksum.remote(r) for r in refs[:500]])
        assert sums == [int(array(i).sum()) for i in range(500)]
        print("500 tasks read their arguments from the store: sums match")
        del refs
        graphstore.shutdown()
    print("done")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20_000)
