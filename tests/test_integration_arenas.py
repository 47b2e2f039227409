"""Arenas under real processes: thousands of small objects reuse each other's space
while arrays of freed ones are still held, and a store's descriptors stay few.

The store has 64 MiB (4 MiB arenas): 128 KiB objects pass through it many times over,
so most of them land where earlier, freed ones were.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

import graphstore
from helpers import wait_for

MB = 1024 * 1024
OBJECT = 128 * 1024


def _value(i: int) -> np.ndarray:
    return np.full(OBJECT // 8, i, dtype=np.int64) + np.arange(OBJECT // 8)


@graphstore.remote
def make(i: int):
    return _value(i)


@graphstore.remote
def checksum(x) -> int:
    return int(x.sum())


def _stores() -> list[dict]:
    return graphstore.memory_summary()["stores"]


def _shm_descriptors(pid: int) -> int:
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("/dev/shm/"):
                count += 1
        except OSError:
            pass
    return count


@pytest.fixture
def small_store(fresh_cluster, tmp_path):
    fresh_cluster(num_cpus=2, object_store_memory=64 * MB, spill_to=str(tmp_path))


def test_freed_space_is_reused_while_arrays_of_freed_objects_are_held(small_store):
    held = {}
    for i in range(3000):                     # 375 MiB through two 64 MiB stores
        ref = graphstore.put(_value(i)) if i % 2 else make.remote(i)
        if i % 50 == 0:
            held[i] = graphstore.get(ref)     # the array outlives the ref
        elif i % 7 == 0:
            assert graphstore.get(checksum.remote(ref)) == int(_value(i).sum())
        del ref                               # freed: its space goes to later objects
    stores = _stores()
    placed = sum(s["allocated"] for s in stores)
    assert placed >= 1500 and placed * OBJECT > 2 * sum(s["capacity"] for s in stores)
    for i, array in held.items():             # every held array kept its bytes
        assert np.array_equal(array, _value(i)), f"held array {i} changed"
        assert not array.flags.writeable
    del array
    # Their objects are freed, but the arrays keep their regions; once dropped, the
    # memory comes back.
    assert wait_for(lambda: sum(s["held"] for s in _stores()) == len(held), timeout=20), \
        _stores()
    held.clear()
    assert wait_for(lambda: sum(s["used"] for s in _stores()) == 0, timeout=20), _stores()
    assert all(s["arenas"] <= 16 for s in _stores())


def test_a_store_holds_few_descriptors_whatever_the_number_of_objects(small_store):
    refs = [graphstore.put(_value(i)) for i in range(300)]   # 37.5 MiB: no spilling
    values = graphstore.get(refs)
    assert all(np.array_equal(v, _value(i)) for i, v in enumerate(values))
    sums = graphstore.get([checksum.remote(r) for r in refs])
    assert sums == [int(_value(i).sum()) for i in range(300)]
    stores = _stores()
    assert sum(s["arenas"] for s in stores) <= 32
    # A process maps at most the arenas of this host's two stores (each at most 16: the
    # arena size is a 16th of the capacity), including ones a store has just unlinked
    # and the process forgets at its next mapping, and one lock file per store: bounded
    # by the stores' sizes, never by the 300 objects. How many of the other store's
    # arenas a task maps depends on where its inputs landed, which depends on timing.
    bound = len(stores) * (16 + 1)
    for pid in [s["pid"] for s in stores] + [os.getpid()]:
        assert _shm_descriptors(pid) <= bound, (pid, _shm_descriptors(pid), bound)


def test_the_many_objects_example_runs_under_a_1024_descriptor_limit(run_driver):
    from helpers import EXAMPLES
    run = run_driver(f"""
        import resource, runpy, sys
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))
        sys.argv = ["many_objects.py", "3000"]
        runpy.run_path({str(EXAMPLES / "many_objects.py")!r}, run_name="__main__")
    """, timeout=240)
    assert run.returncode == 0, run.stderr
    for line in ("open-file limit: 1024 (hard 1024)", "put 3,000 arrays",
                 "arenas:", "read all 3,000 back bit for bit", "sums match", "done"):
        assert line in run.stdout, f"{line!r} missing from:\n{run.stdout}"
