#!/usr/bin/env python
"""Core-API benchmarks: graphstore vs. Ray vs. Dask distributed.

Why this exists
---------------
graphstore's API mirrors Ray's core API (``init``/``remote``/``get``/``put``/
``wait``/``shutdown``).  To know whether it is any good we need to measure the
*same* workloads, written once, on graphstore and on the two systems people
would otherwise use, and publish absolute numbers plus ratios.

How it works
------------
* Each backend is wrapped in a small adapter class (``init``, ``shutdown``,
  ``remote(fn)``, ``submit``, ``get``, ``put``, ``wait``).  Workload functions
  are written once against that adapter, so adding a workload (large-object
  put/get, cross-host transfer, ...) means writing one function and one entry
  in ``WORKLOADS``.
* Every backend runs in its own fresh child process (this same script with the
  hidden ``--child`` flag), one after the other, so clusters never overlap and
  the startup measurement really is a cold start.  The child prints one JSON
  record per result on stdout, prefixed with ``RESULT_PREFIX``, as soon as it
  has it, so a backend that crashes or hangs half-way still reports what it
  finished.  The parent collects those records and renders a Markdown report.
* Startup can only be measured once per process, so the parent starts
  ``--repeat`` children per backend: the first runs every workload, the others
  only measure startup.  All other workloads are warmed up at a small size
  and then timed ``--repeat`` times inside the first child.  The report shows
  medians.
* Workloads come in two suites: ``core`` (startup, many small tasks, small
  objects) and ``objects`` (a 200 MB array: put, get, task argument, transfer
  between two hosts, against warm memcpy and raw loopback TCP).  A workload
  that needs a differently shaped cluster (two hosts) runs after the others in
  the same child, on a cluster the adapter restarts for it; a workload whose
  concept one backend lacks is reported as N/A there.  For the objects suite
  the report adds a table of the targets set in issue 3.
* The ``spill`` suite puts 2 GiB through a 512 MiB store that spills to a
  local directory (graphstore and Ray) or to a moto S3 server (graphstore),
  then gets it all back, against a plain sequential write and read of the
  same bytes in the same directory in the same run; each run restarts the
  backend with spilling (``Backend.init_spilling``).  The report adds the
  targets of issue 5.

Usage::

    python benchmarks/core.py [--suite core|objects|spill|all] [--backends graphstore,ray,dask]
                              [--repeat N] [--out docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import datetime
import gc
import importlib.util
import json
import logging
import os
import platform
import signal
import socket
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Callable

# Top-level code must stay import-safe: Dask starts its worker processes with
# the "spawn" method, which re-imports this file as ``__mp_main__``.

RESULT_PREFIX = "@@BENCH@@ "
ALL_BACKENDS = ("graphstore", "ray", "dask")
# Module that must be importable for a backend to run at all.
BACKEND_MODULES = {"graphstore": "graphstore", "ray": "ray", "dask": "distributed"}
BACKEND_LABELS = {"graphstore": "graphstore", "ray": "Ray", "dask": "Dask"}
SUITES = ("core", "actors", "objects", "spill")
SUITE_TITLES = {"core": "Core API", "actors": "Actors",
                "objects": "Large objects (200 MB float64 array)",
                "spill": "Spilling (2 GiB through a 512 MiB store)"}
# Suites measured partly once per fresh process (startup, first put): these
# need ``--repeat`` children per backend; the others need one.
PER_PROCESS_SUITES = ("core", "objects")
# The large object of the objects suite: 200 MB = 25,000,000 float64s.
# GB/s in this file means 10^9 bytes per second.
LARGE_BYTES = 200 * 10**6
GB = 1e9
# Warm-up size of warm_memcpy (the other large workloads warm up at full size).
LARGE_WARMUP_BYTES = 2 * 10**6
# Pause between the first task result and the first large put of a process.
FIRST_PUT_PAUSE_S = 2.0


# --------------------------------------------------------------------------
# Task bodies.  Plain module-level functions; each adapter turns them into
# remote functions with ``adapter.remote(fn)``.
# --------------------------------------------------------------------------

def noop():
    return None


def leaf(i):
    return i % 100


def add(a, b):
    return a + b


def array_sum(x):
    return float(x.sum())


def array_len(x):
    return len(x)


class BenchCounter:
    """The actor of the actors suite: a counter, so results show call order."""

    def __init__(self):
        self.n = 0

    def inc(self):
        self.n += 1
        return self.n


# --------------------------------------------------------------------------
# Backend adapters.  ``remote(fn)`` returns an opaque handle that is passed
# back to ``submit``; refs returned by ``submit``/``put`` are opaque too and
# may be passed as arguments to ``submit`` (the system resolves them).
# --------------------------------------------------------------------------

class Backend:
    name = "?"

    def version(self) -> str:
        raise NotImplementedError

    def init(self) -> None:
        raise NotImplementedError

    def shutdown(self) -> None:
        raise NotImplementedError

    def remote(self, fn: Callable) -> Any:
        raise NotImplementedError

    def submit(self, handle: Any, *args: Any) -> Any:
        raise NotImplementedError

    def get(self, ref_or_refs: Any) -> Any:
        """Like ``ray.get``: one ref -> value, list of refs -> list of values."""
        raise NotImplementedError

    def put(self, obj: Any) -> Any:
        raise NotImplementedError

    def wait(self, refs: list, num_returns: int = 1, timeout: float | None = None):
        """Like ``ray.wait``: returns ``(ready, not_ready)`` lists."""
        raise NotImplementedError

    def put_large(self, obj: Any) -> Any:
        """``put`` for one large object (a backend may pick a better call)."""
        return self.put(obj)

    def init_two_hosts(self, node_ids: tuple[str, str]) -> None:
        """Restart as a cluster of two hosts (one worker each) on this machine,
        the driver on the first.  Raises ``NotImplementedError`` if the backend
        has no such mode (its cross-host workloads are then N/A)."""
        raise NotImplementedError

    def submit_on(self, handle: Any, node_id: str, *args: Any) -> Any:
        """``submit``, forced onto a worker of host ``node_id``."""
        raise NotImplementedError

    def init_spilling(self, store_bytes: int, spill_url: str,
                      spill_options: dict | None = None) -> None:
        """Restart as one worker (``num_cpus=1``) whose object store holds
        ``store_bytes`` and spills to ``spill_url`` (a local directory, or for
        graphstore also ``s3://bucket/prefix`` with s3fs ``spill_options``) above
        80% of its capacity.  Raises ``NotImplementedError`` if the backend
        cannot spill there (its spill workloads are then N/A)."""
        raise NotImplementedError

    def spill_stats(self) -> dict[str, float] | None:
        """The stores' own spill counters summed over stores (spilled_bytes,
        spill_seconds, restored_bytes, restore_seconds), or None."""
        return None

    def make_actor(self, cls) -> Any:
        """An instance of ``cls`` living in the cluster (an actor)."""
        raise NotImplementedError

    def call(self, actor: Any, method: str, *args: Any) -> Any:
        """Call an actor method; returns a ref (or future) of its result."""
        return getattr(actor, method).remote(*args)

    def get_calls(self, refs: list) -> list:
        return self.get(refs)


class GraphstoreBackend(Backend):
    name = "graphstore"

    def __init__(self):
        import graphstore
        self.gs = graphstore

    def version(self):
        try:
            from importlib.metadata import version
            return version("graphstore")
        except Exception:
            return str(getattr(self.gs, "__version__", "dev"))

    def init(self):
        self.gs.init()

    def shutdown(self):
        self.gs.shutdown()

    def remote(self, fn):
        return self.gs.remote(fn)

    def submit(self, handle, *args):
        return handle.remote(*args)

    def get(self, ref_or_refs):
        return self.gs.get(ref_or_refs)

    def put(self, obj):
        return self.gs.put(obj)

    def wait(self, refs, num_returns=1, timeout=None):
        return self.gs.wait(refs, num_returns=num_returns, timeout=timeout)

    def init_two_hosts(self, node_ids):
        # Distinct node ids make graphstore treat the two workers as separate
        # hosts: objects move between them over TCP, not shared memory.
        self.gs.shutdown()
        self.gs.init(num_cpus=len(node_ids), worker_node_ids=list(node_ids),
                     node_id=node_ids[0])

    def submit_on(self, handle, node_id, *args):
        return handle.options(resources={f"node:{node_id}": 0.001}).remote(*args)

    def make_actor(self, cls):
        return self.gs.remote(cls).remote()

    def init_spilling(self, store_bytes, spill_url, spill_options=None):
        self.gs.shutdown()
        self.gs.init(num_cpus=1, object_store_memory=store_bytes, spill_to=spill_url,
                     spill_options=spill_options or None, spill_threshold=SPILL_THRESHOLD,
                     log_to_driver=False)

    def spill_stats(self):
        keys = ("spilled_bytes", "spill_seconds", "restored_bytes", "restore_seconds")
        totals = dict.fromkeys(keys, 0.0)
        errors = []
        for store in self.gs.memory_summary()["stores"]:
            for k in keys:
                totals[k] += store.get(k) or 0
            if store.get("last_spill_error"):
                errors.append(store["last_spill_error"])
        totals["last_spill_error"] = "; ".join(errors) or None
        return totals


class RayBackend(Backend):
    name = "ray"

    def __init__(self):
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        import ray
        self.ray = ray

    def version(self):
        return self.ray.__version__

    def init(self):
        self.ray.init(
            num_cpus=os.cpu_count(),
            # Room for several 200 MB objects (objects suite).
            object_store_memory=2 * 1024**3,
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.ERROR,
        )

    def shutdown(self):
        self.ray.shutdown()

    def remote(self, fn):
        return self.ray.remote(fn)

    def submit(self, handle, *args):
        return handle.remote(*args)

    def get(self, ref_or_refs):
        return self.ray.get(ref_or_refs)

    def put(self, obj):
        return self.ray.put(obj)

    def wait(self, refs, num_returns=1, timeout=None):
        return self.ray.wait(refs, num_returns=num_returns, timeout=timeout)

    def make_actor(self, cls):
        return self.ray.remote(cls).remote()

    def init_spilling(self, store_bytes, spill_url, spill_options=None):
        if "://" in spill_url and not spill_url.startswith("file://"):
            raise NotImplementedError("Ray spilling is benchmarked to a local directory only")
        directory = spill_url[len("file://"):] if spill_url.startswith("file://") else spill_url
        self.ray.shutdown()
        self.ray.init(
            num_cpus=1,
            object_store_memory=store_bytes,
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.ERROR,
            # Ray's object_spilling_threshold defaults to 0.8, as graphstore's
            # spill_threshold here.
            _system_config={"object_spilling_config": json.dumps(
                {"type": "filesystem", "params": {"directory_path": directory}})},
        )


class DaskBackend(Backend):
    name = "dask"

    def __init__(self):
        import distributed
        self.distributed = distributed
        self.cluster = None
        self.client = None

    def version(self):
        return self.distributed.__version__

    def init(self):
        self.cluster = self.distributed.LocalCluster(
            n_workers=os.cpu_count(),
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.ERROR,
        )
        self.client = self.distributed.Client(self.cluster)

    def shutdown(self):
        if self.client is not None:
            self.client.close()
        if self.cluster is not None:
            self.cluster.close()
        self.client = self.cluster = None

    def remote(self, fn):
        return fn

    def submit(self, handle, *args):
        # pure=False: every call is a new task, as in Ray.  (With the default
        # pure=True identical calls would be deduplicated into one task.)
        return self.client.submit(handle, *args, pure=False)

    def get(self, ref_or_refs):
        if isinstance(ref_or_refs, list):
            return self.client.gather(ref_or_refs)
        return ref_or_refs.result()

    def put(self, obj):
        # One object per call, like ray.put: wrap it so that scatter does not
        # split a list/dict into many futures; hash=False so that equal
        # contents still make a new object (no dedup).
        return self.client.scatter([obj], hash=False)[0]

    def make_actor(self, cls):
        return self.client.submit(cls, actor=True).result()

    def call(self, actor, method, *args):
        return getattr(actor, method)(*args)      # an ActorFuture

    def get_calls(self, refs):
        return [f.result() for f in refs]

    def put_large(self, obj):
        # direct=True: the client sends the bytes straight to one worker, which
        # keeps them (as ray.put writes straight into the local store); the
        # default for a remote cluster routes the data through the scheduler.
        return self.client.scatter([obj], hash=False, direct=True)[0]

    def wait(self, refs, num_returns=1, timeout=None):
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            done = [r for r in refs if r.done()]
            if len(done) >= num_returns:
                break
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                break
            pending = [r for r in refs if not r.done()]
            try:
                self.distributed.wait(pending, timeout=remaining,
                                      return_when="FIRST_COMPLETED")
            except TimeoutError:
                break
        ready = [r for r in refs if r.done()][:num_returns]
        ready_ids = {id(r) for r in ready}
        return ready, [r for r in refs if id(r) not in ready_ids]


ADAPTERS: dict[str, Callable[[], Backend]] = {
    "graphstore": GraphstoreBackend,
    "ray": RayBackend,
    "dask": DaskBackend,
}


# --------------------------------------------------------------------------
# Workloads.  Each takes an initialised adapter and a size, runs the work,
# and returns {metric_key: value}.  Only the work itself is inside the timer.
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    unit: str
    higher_is_better: bool
    # Backends where the concept exists; the others show N/A.  None: all.
    only: tuple[str, ...] | None = None
    # (numerator key, denominator key): computed by the parent from the two
    # medians of the same backend instead of being measured.
    derived: tuple[str, str] | None = None

    def applies(self, backend: str) -> bool:
        return self.only is None or backend in self.only


@dataclass(frozen=True)
class Workload:
    name: str
    fn: Callable[[Backend, int], dict[str, float]]
    size: int          # size of each timed run
    warmup_size: int   # size of the untimed warm-up run
    metrics: tuple[Metric, ...]
    description: str
    suite: str = "core"
    # "default": the backend's normal local cluster; "two_hosts": runs after
    # the others, on the cluster made by ``Backend.init_two_hosts``; "spill":
    # runs last, restarting the backend itself (``Backend.init_spilling``).
    cluster: str = "default"
    # Untimed warm-up runs (at warmup_size) before the timed ones.
    warmups: int = 1
    # Untimed pause before each timed run, so that asynchronous frees of the
    # previous run's objects (Ray, Dask) have completed, as they would in a
    # program doing other work between two large puts.
    settle_s: float = 0.0

    def applies(self, backend: str) -> bool:
        """Whether the workload runs on ``backend``: some of its metrics exist
        there (the others are N/A for it)."""
        return any(m.applies(backend) for m in self.metrics)


def now() -> float:
    return time.perf_counter()


def many_noop_tasks(b: Backend, n: int) -> dict[str, float]:
    f = b.remote(noop)
    t0 = now()
    refs = [b.submit(f) for _ in range(n)]
    results = b.get(refs)
    dt = now() - t0
    assert len(results) == n
    return {"noop_tasks_per_s": n / dt}


def sequential_round_trips(b: Backend, n: int) -> dict[str, float]:
    f = b.remote(noop)
    t0 = now()
    for _ in range(n):
        b.get(b.submit(f))
    dt = now() - t0
    return {"round_trips_per_s": n / dt}


# Untimed pause after making an actor: both graphstore and Ray start a process for the
# next actor in the background, which would compete for this machine's 2 cores.
ACTOR_SETTLE_S = 1.5


def actor_calls(b: Backend, n: int) -> dict[str, float]:
    actor = b.make_actor(BenchCounter)
    start = b.get_calls([b.call(actor, "inc")])[0]      # untimed: the actor is up
    time.sleep(ACTOR_SETTLE_S)
    t0 = now()
    refs = [b.call(actor, "inc") for _ in range(n)]
    results = b.get_calls(refs)
    dt = now() - t0
    expected = list(range(start + 1, start + n + 1))
    if b.name == "dask":      # Dask runs an actor's calls on a thread pool, in any order
        results = sorted(results)
    assert results == expected, "calls ran out of order"
    return {"actor_calls_per_s": n / dt}


def actor_round_trips(b: Backend, n: int) -> dict[str, float]:
    actor = b.make_actor(BenchCounter)
    b.get_calls([b.call(actor, "inc")])
    time.sleep(ACTOR_SETTLE_S)
    t0 = now()
    for _ in range(n):
        b.get_calls([b.call(actor, "inc")])
    dt = now() - t0
    return {"actor_round_trips_per_s": n / dt}


def tree_reduction(b: Backend, leaves: int) -> dict[str, float]:
    assert leaves > 0 and leaves & (leaves - 1) == 0, "leaves must be a power of two"
    leaf_f, add_f = b.remote(leaf), b.remote(add)
    t0 = now()
    level = [b.submit(leaf_f, i) for i in range(leaves)]
    while len(level) > 1:
        # Refs are passed directly: the system resolves the dependency.
        level = [b.submit(add_f, level[i], level[i + 1])
                 for i in range(0, len(level), 2)]
    total = b.get(level[0])
    dt = now() - t0
    assert total == sum(leaf(i) for i in range(leaves)), total
    return {"dag_tasks_per_s": (2 * leaves - 1) / dt}


def small_put_get(b: Backend, n: int) -> dict[str, float]:
    data = [os.urandom(1024) for _ in range(n)]  # distinct 1 KiB objects
    t0 = now()
    refs = [b.put(d) for d in data]
    t_put = now() - t0
    t0 = now()
    out = [b.get(r) for r in refs]
    t_get = now() - t0
    assert out == data
    return {"puts_per_s": n / t_put, "gets_per_s": n / t_get}


# ---- Large objects (objects suite) ----------------------------------------

_arrays: dict[int, Any] = {}


def large_array(nbytes: int):
    """A float64 array of ``nbytes`` bytes, made once per process.

    ``arange`` writes every page, so the source is real memory (not the
    lazily mapped zero pages ``np.zeros`` would give).  Its sum is exact in
    float64 for the sizes used here.
    """
    import numpy as np
    if nbytes not in _arrays:
        _arrays[nbytes] = np.arange(nbytes // 8, dtype=np.float64)
    return _arrays[nbytes]


_handles: dict[tuple[int, Callable], Any] = {}


def remote_once(b: Backend, fn: Callable) -> Any:
    """``b.remote(fn)``, made once per backend and process, as a module-level
    ``@remote`` would be: with timed runs of a few ms, registering the
    function again each run (Ray exports it) would be part of the time."""
    key = (id(b), fn)
    if key not in _handles:
        _handles[key] = b.remote(fn)
    return _handles[key]


def expected_sum(n_items: int) -> float:
    return float(n_items * (n_items - 1) // 2)


def _mappings_of(address: int, length: int) -> list[tuple[str, str]] | None:
    """(permissions, path) of each mapping of this process that holds part of
    [address, address + length), from /proc/self/maps.  None if unreadable or
    if the range is not fully mapped."""
    found, covered = [], address
    try:
        with open("/proc/self/maps") as fh:
            for line in fh:
                parts = line.split(None, 5)
                start, end = (int(v, 16) for v in parts[0].split("-"))
                if end <= covered or start >= address + length:
                    continue
                if start > covered:
                    return None  # a hole: not one contiguous mapped range
                path = parts[5].strip() if len(parts) > 5 else ""
                found.append((parts[1], path or "[anonymous]"))
                covered = end
                if covered >= address + length:
                    return found
    except (OSError, ValueError, IndexError):
        pass
    return None


def zero_copy_check(arr, get_seconds: float) -> tuple[bool, str]:
    """Whether ``arr`` (just returned by get) is a zero-copy view of a store.

    ``np.shares_memory`` cannot see across processes, so: the array must be
    read-only and its bytes must lie in *shared* mappings of this process
    (a store's shared-memory segment, MAP_SHARED, 's' in /proc/self/maps),
    not in private memory that a copy would have used.  Where
    /proc/self/maps cannot tell, fall back to time: 200 MB in under 5 ms
    (40 GB/s) cannot have been copied.
    """
    readonly = not arr.flags.writeable
    mappings = _mappings_of(arr.__array_interface__["data"][0], arr.nbytes)
    if mappings:
        flags = [perms[3:4] == "s" for perms, _ in mappings]
        shared = all(flags)
        kind = "shared" if shared else "partly shared" if any(flags) else "private"
        where = "; ".join(sorted({f"{perms} {path}" for perms, path in mappings}))
        how = (f"read-only={readonly}, data in {len(mappings)} {kind} "
               f"mapping(s) ({where}), "
               f"get took {get_seconds * 1e3:.3g} ms")
        return readonly and shared, how
    return readonly and get_seconds < 0.005, (
        f"/proc/self/maps could not tell; read-only={readonly}, get took "
        f"{get_seconds * 1e3:.3g} ms (< 5 ms counts as no copy)")


_zero_copy_noted = False


def warm_memcpy(b: Backend, nbytes: int) -> dict[str, float]:
    import numpy as np
    src = large_array(nbytes)
    dst = np.empty_like(src)
    np.copyto(dst, src)            # first run: faults in dst's pages
    t0 = now()
    np.copyto(dst, src)            # second run: both sides warm
    dt = now() - t0
    return {"memcpy_gbps": nbytes / dt / GB}


def first_put(b: Backend, nbytes: int) -> dict[str, float]:
    """The first large put of a fresh process: the store's pages are new.
    Run once per child process (like startup), not as a workload."""
    result = large_put(b, nbytes)
    return {"put_first_gbps": result["put_gbps"]}


def large_put(b: Backend, nbytes: int) -> dict[str, float]:
    arr = large_array(nbytes)
    t0 = now()
    ref = b.put_large(arr)
    dt = now() - t0
    del ref  # dropped before the next run, so the store may reuse its memory
    return {"put_gbps": nbytes / dt / GB}


def large_get(b: Backend, nbytes: int) -> dict[str, float]:
    global _zero_copy_noted
    arr = large_array(nbytes)
    ref = b.put_large(arr)
    t0 = now()
    out = b.get(ref)
    dt = now() - t0
    assert out.shape == arr.shape and out[-1] == arr[-1]
    zero_copy, how = zero_copy_check(out, dt)
    if not _zero_copy_noted and nbytes >= LARGE_BYTES:
        _zero_copy_noted = True
        note(f"get of 200 MB: {how}")
    del out, ref
    return {"get_ms": dt * 1e3, "get_zero_copy": float(zero_copy)}


def large_arg_task(b: Backend, nbytes: int) -> dict[str, float]:
    f = remote_once(b, array_sum)
    arr = large_array(nbytes)
    ref = b.put_large(arr)          # untimed: the array is already stored
    t0 = now()
    total = b.get(b.submit(f, ref))
    dt = now() - t0
    assert total == expected_sum(arr.size), total
    del ref
    return {"task_arg_gbps": nbytes / dt / GB}


TWO_HOSTS = ("node-a", "node-b")


def cross_host_transfer(b: Backend, nbytes: int) -> dict[str, float]:
    """The object moved between hosts, then (paired, right after, so that the
    ratio sees the same machine load) the raw loopback TCP reference."""
    f = remote_once(b, array_len)
    arr = large_array(nbytes)
    ref = b.put_large(arr)          # lands in the store of node-a (the driver's host)
    t0 = now()
    n = b.get(b.submit_on(f, TWO_HOSTS[1], ref))
    dt = now() - t0
    assert n == arr.size, n
    del ref
    gbps = nbytes / dt / GB
    tcp = raw_tcp_loopback(nbytes)
    return {"cross_host_gbps": gbps, "raw_tcp_gbps": tcp,
            "cross_host_vs_tcp": gbps / tcp}


# Receiver of the raw TCP transfer, run as ``python -c`` in its own process.
_TCP_RECEIVER = r"""
import socket, sys
port, nbytes, rounds = (int(v) for v in sys.argv[1:4])
buf = bytearray(nbytes)           # preallocated (and zero-filled: pages touched)
view = memoryview(buf)
sock = socket.create_connection(("127.0.0.1", port))
for _ in range(rounds):
    got = 0
    while got < nbytes:
        n = sock.recv_into(view[got:], nbytes - got)
        if not n:
            sys.exit("sender closed early")
        got += n
    sock.sendall(b"k")
sock.close()
"""


def raw_tcp_loopback(nbytes: int) -> float:
    """The same bytes over plain loopback TCP between two processes: sendall
    from a memoryview of the array, recv_into a preallocated bytearray, a
    1-byte ack back.  One untimed transfer on the connection, then one timed;
    returns GB/s."""
    payload = memoryview(large_array(nbytes)).cast("B")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        proc = subprocess.Popen([sys.executable, "-c", _TCP_RECEIVER,
                                 str(port), str(nbytes), "2"])
        try:
            server.settimeout(60)
            conn, _ = server.accept()   # the receiver connects once its buffer is ready
            with conn:
                conn.settimeout(120)
                times = []
                for _ in range(2):
                    t0 = now()
                    conn.sendall(payload)
                    if conn.recv(1) != b"k":
                        raise RuntimeError("raw TCP receiver did not acknowledge")
                    times.append(now() - t0)
            if proc.wait(timeout=60) != 0:
                raise RuntimeError(f"raw TCP receiver exited with {proc.returncode}")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return nbytes / times[-1] / GB


# ---- Spilling (spill suite) -------------------------------------------------
# 2 GiB (32 objects of 64 MiB) put through a 512 MiB store that spills above 80%
# of its capacity, then every object got back once.  Each run restarts the
# backend with a fresh spill directory (or S3 prefix) and removes it afterwards.

SPILL_OBJECT_BYTES = 64 * 2**20
SPILL_BYTES = 2 * 2**30                # 32 objects
SPILL_WARMUP_BYTES = 2**30             # 16 objects: still spills about 600 MB
SPILL_STORE_BYTES = 512 * 2**20
SPILL_THRESHOLD = 0.8                  # graphstore's default, and Ray's
# The spill directories and the plain reference file live here (the system
# temp dir, /tmp: the same disk for all three).
SPILL_PARENT = tempfile.gettempdir()
S3_BUCKET = "graphstore-bench-spill"

_spill_array = None


def spill_array():
    """One 64 MiB float64 array (``arange``: every page written), made once per
    process; element 0 and -1 are set to the object's index before each put so
    that every object is distinct and its restore can be checked."""
    global _spill_array
    if _spill_array is None:
        import numpy as np
        _spill_array = np.arange(SPILL_OBJECT_BYTES // 8, dtype=np.float64)
    return _spill_array


_cache_noted = False


def settle_disk() -> None:
    """Before each timed phase: ``sync``, then drop the page cache (root only),
    so that writes do not pay for earlier phases' dirty pages and reads come
    from the disk rather than from memory."""
    global _cache_noted
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as fh:
            fh.write("3\n")
        dropped = True
    except OSError as e:
        dropped = False
        why = f"{type(e).__name__}: {e}"
    if not _cache_noted:
        _cache_noted = True
        note("spill suite: before each timed phase `sync` ran and the page cache "
             + ("was dropped (`echo 3 > /proc/sys/vm/drop_caches`), so restores and "
                "the plain read come from the disk" if dropped else
                f"could NOT be dropped ({why}), so reads may come from the page cache"))


def plain_file_round_trip(directory: str, n_objects: int) -> dict[str, float]:
    """The reference: the same bytes (the same 64 MiB buffer ``n_objects``
    times) written sequentially to one file in ``directory`` with plain
    unbuffered ``write`` calls, without fsync (as the spillers), then read back
    sequentially with ``readinto`` a preallocated, pre-touched 64 MiB buffer.
    ``fsync`` runs after the timed write and is timed on its own (context)."""
    import numpy as np
    src = memoryview(spill_array()).cast("B")
    path = os.path.join(directory, "plain-reference.bin")
    nbytes = n_objects * SPILL_OBJECT_BYTES
    settle_disk()
    with open(path, "wb", buffering=0) as fh:
        t0 = now()
        for _ in range(n_objects):
            done = 0
            while done < src.nbytes:
                done += fh.write(src[done:])
        t_write = now() - t0
        os.fsync(fh.fileno())
        t_fsync = now() - t0 - t_write
    dst = np.ones(SPILL_OBJECT_BYTES, dtype=np.uint8)   # every page touched
    view = memoryview(dst)
    settle_disk()
    with open(path, "rb", buffering=0) as fh:
        t0 = now()
        for _ in range(n_objects):
            got = 0
            while got < view.nbytes:
                k = fh.readinto(view[got:])
                if not k:
                    raise RuntimeError(f"{path} ended early")
                got += k
        t_read = now() - t0
    os.remove(path)
    return {"plain_write_gbps": nbytes / t_write / GB,
            "plain_write_fsync_gbps": nbytes / (t_write + t_fsync) / GB,
            "plain_read_gbps": nbytes / t_read / GB}


def spill_round_trip(b: Backend, n_objects: int, prefix: str = "") -> dict[str, float]:
    """Put ``n_objects`` 64 MiB arrays (puts wait while the store spills), then
    get each back once (restores), touching one float64 per 4 KiB page and
    checking its index.  The backend is already restarted with spilling."""
    arr = spill_array()
    nbytes = n_objects * SPILL_OBJECT_BYTES
    settle_disk()
    before = b.spill_stats()
    refs = []
    t0 = now()
    for i in range(n_objects):
        arr[0] = arr[-1] = i
        refs.append(b.put_large(arr))
    t_put = now() - t0
    time.sleep(1.0)     # untimed: background spilling past the threshold ends
    middle = b.spill_stats()
    settle_disk()
    t0 = now()
    for i, ref in enumerate(refs):
        x = b.get(ref)
        float(x[::512].sum())               # one float64 in every 4 KiB page
        if x[0] != i or x[-1] != i:
            raise AssertionError(f"object {i} came back as {x[0]}..{x[-1]}")
        del x
    t_get = now() - t0
    after = b.spill_stats()
    del refs
    out = {f"{prefix}spill_gbps": nbytes / t_put / GB,
           f"{prefix}restore_gbps": nbytes / t_get / GB}
    if before is not None and after is not None:
        if after.get("last_spill_error"):
            note(f"{prefix or 'disk '}spilling reported an error: "
                 f"{after['last_spill_error']}")
        spilled = after["spilled_bytes"] - before["spilled_bytes"]
        spill_s = after["spill_seconds"] - before["spill_seconds"]
        restored = after["restored_bytes"] - middle["restored_bytes"]
        restore_s = after["restore_seconds"] - middle["restore_seconds"]
        out.update({
            f"{prefix}spilled_during_put_gb": (middle["spilled_bytes"]
                                               - before["spilled_bytes"]) / GB,
            f"{prefix}restored_gb": restored / GB,
            f"{prefix}counter_spill_gbps": spilled / spill_s / GB if spill_s else 0.0,
            f"{prefix}counter_restore_gbps": restored / restore_s / GB if restore_s else 0.0,
        })
    return out


def spill_disk(b: Backend, nbytes: int) -> dict[str, float]:
    """Spilling to a local directory, paired with the plain file reference in
    the same directory, right before it in the same run."""
    n_objects = nbytes // SPILL_OBJECT_BYTES
    directory = tempfile.mkdtemp(prefix="gs-bench-spill-", dir=SPILL_PARENT)
    try:
        spill_dir = os.path.join(directory, "spill")
        os.makedirs(spill_dir)
        b.init_spilling(SPILL_STORE_BYTES, spill_dir)
        before = plain_file_round_trip(directory, n_objects)
        result = spill_round_trip(b, n_objects)
        after = plain_file_round_trip(directory, n_objects)
    finally:
        try:
            b.shutdown()
        finally:
            shutil.rmtree(directory, ignore_errors=True)
    # The reference is the faster of the two plain round trips around the
    # backend's (each rate separately): page-cache writes on this VM swing by
    # up to 10x with what ran just before (e.g. 0.5 GB/s after a few idle
    # seconds, 5 GB/s right after other I/O), so the better one is the
    # stricter reference.  Both are kept in the samples.
    for key, value in before.items():
        result[key] = max(value, after[key])
        result[key.replace("_gbps", "_before_gbps")] = value
        result[key.replace("_gbps", "_after_gbps")] = after[key]
    result["spill_vs_write"] = result["spill_gbps"] / result["plain_write_gbps"]
    result["restore_vs_read"] = result["restore_gbps"] / result["plain_read_gbps"]
    return result


class MotoServer:
    """A real moto S3 server (``python -m moto.server``) on a free loopback
    port, and a bucket in it created through s3fs."""

    def __init__(self):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        # Same process group as this child: the parent's timeout kills it too.
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"moto server exited with {self.proc.returncode}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("moto server did not start within 60 s")
                time.sleep(0.2)
        self.options = {"key": "testing", "secret": "testing",
                        "client_kwargs": {"endpoint_url": self.url,
                                          "region_name": "us-east-1"}}
        try:
            import s3fs
            # The bucket is made without region_name: with one, s3fs sends a
            # LocationConstraint, which S3 refuses for us-east-1.
            s3fs.S3FileSystem(key="testing", secret="testing", skip_instance_cache=True,
                              client_kwargs={"endpoint_url": self.url}).mkdir(S3_BUCKET)
            self.fs = s3fs.S3FileSystem(skip_instance_cache=True, **self.options)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


_moto: MotoServer | None = None


def stop_moto() -> None:
    global _moto
    if _moto is not None:
        _moto.stop()
        _moto = None


def spill_s3(b: Backend, nbytes: int) -> dict[str, float]:
    """Spilling to S3: a moto server started once per process."""
    global _moto
    if _moto is None:
        _moto = MotoServer()
    prefix = f"{S3_BUCKET}/run-{os.urandom(4).hex()}"
    b.init_spilling(SPILL_STORE_BYTES, f"s3://{prefix}", _moto.options)
    try:
        result = spill_round_trip(b, nbytes // SPILL_OBJECT_BYTES, prefix="s3_")
    finally:
        b.shutdown()
    _moto.fs.invalidate_cache()
    left = _moto.fs.find(prefix)
    if left:
        note(f"S3 spilling left {len(left)} key(s) under s3://{prefix} after shutdown")
        _moto.fs.rm(prefix, recursive=True)
    return result


STARTUP = Metric("startup_s", "Startup: init() to first task result", "s",
                 higher_is_better=False)
GS_ONLY = ("graphstore",)
SPILL_BACKENDS = ("graphstore", "ray")

WORKLOADS: list[Workload] = [
    Workload("noop_tasks", many_noop_tasks, size=5000, warmup_size=200,
             metrics=(Metric("noop_tasks_per_s", "5,000 no-op tasks, submit all then get",
                             "tasks/s", True),),
             description="5,000 no-op tasks submitted, then all results fetched "
                         "with one get; 5,000 / (first submit to results)."),
    Workload("round_trips", sequential_round_trips, size=300, warmup_size=20,
             metrics=(Metric("round_trips_per_s", "300 sequential submit+get round trips",
                             "round trips/s", True),),
             description="300 times: submit one no-op task and get its result."),
    Workload("tree_reduction", tree_reduction, size=1024, warmup_size=64,
             metrics=(Metric("dag_tasks_per_s", "Binary-tree reduction, 1,024 leaves (2,047 tasks)",
                             "tasks/s", True),),
             description="1,024 leaf tasks each return a small int; internal nodes "
                         "add two refs passed directly as arguments; "
                         "2,047 / (first submit to root result)."),
    Workload("small_put_get", small_put_get, size=5000, warmup_size=200,
             metrics=(Metric("puts_per_s", "5,000 puts of distinct 1 KiB bytes", "puts/s", True),
                      Metric("gets_per_s", "5,000 gets of those refs, one at a time",
                             "gets/s", True)),
             description="5,000 puts of distinct os.urandom(1024) objects (Dask: "
                         "client.scatter, one at a time), then 5,000 single gets "
                         "of the same refs (Dask: future.result())."),

    # ---- actors suite: one actor (a process of its own in graphstore and Ray,
    # a Dask actor in a worker), created untimed before each run.
    Workload("actor_calls", actor_calls, size=5000, warmup_size=200, suite="actors",
             metrics=(Metric("actor_calls_per_s", "5,000 calls on one actor, submitted "
                             "then gathered", "calls/s", True),),
             description="5,000 calls of a counter method on one actor submitted, then "
                         "all results fetched (checked in order); 5,000 / elapsed."),
    Workload("actor_round_trips", actor_round_trips, size=300, warmup_size=20,
             suite="actors",
             metrics=(Metric("actor_round_trips_per_s", "300 sequential call+get round "
                             "trips on one actor", "round trips/s", True),),
             description="300 times: call the actor's counter method and get its result."),

    # ---- objects suite.  Each child first measures the first 200 MB put of
    # the process (``first_put``, see ``run_workloads``); these then run in
    # this order.  Warm-ups are full-size (except memcpy, which warms itself):
    # the timed runs measure the steady state of a program moving many large
    # objects, and the first-put row shows the fresh-memory regime.
    Workload("warm_memcpy", warm_memcpy, size=LARGE_BYTES, warmup_size=LARGE_WARMUP_BYTES,
             suite="objects",
             metrics=(Metric("memcpy_gbps", "Warm memcpy of the 200 MB (reference)",
                             "GB/s", True),),
             description="numpy `copyto` of the 200 MB array into a preallocated "
                         "array, timed on the second copy (both sides' pages warm); "
                         "measured in each backend's process, as the reference "
                         "for that backend's put."),
    Workload("large_put", large_put, size=LARGE_BYTES, warmup_size=LARGE_BYTES,
             warmups=4, settle_s=0.5, suite="objects",
             metrics=(Metric("put_gbps", "put of a 200 MB float64 array, store memory "
                             "reused (steady state)", "GB/s", True),),
             description="put of a 200 MB float64 array (`ray.put`; Dask: "
                         "`client.scatter([x], hash=False, direct=True)`, the bytes "
                         "sent straight to one worker, its closest equivalent); "
                         "200 MB / put time. Steady state: after the process's first "
                         "200 MB put (the row below) and four more untimed 200 MB puts "
                         "(Ray needs 2-3 to reach its steady state here), "
                         "each ref dropped before the next put and 0.5 s allowed for "
                         "asynchronous frees, so a store can reuse its memory as a "
                         "program putting many objects would. **First put**: the "
                         "first 200 MB put of a fresh process (the store's pages are "
                         "new), measured once in each of the fresh processes, 2 s "
                         "after the first task result, median over them. Both "
                         "regimes are shown because they differ by up to 20x on "
                         "this machine (page faults on fresh shared memory are "
                         "expensive here)."),
    Workload("large_get", large_get, size=LARGE_BYTES, warmup_size=LARGE_BYTES,
             suite="objects", settle_s=0.5,
             metrics=(Metric("get_ms", "get of the put 200 MB array", "ms", False),
                      Metric("get_zero_copy", "get is zero-copy", "yes/no", True)),
             description="after one full-size warm-up, put (untimed), then get of "
                         "the array back in the same process (Dask: `future.result()`, which fetches it from "
                         "the worker). Zero-copy means: the array is read-only and "
                         "its data lies in a shared mapping of the driver process "
                         "(a store's shared memory, 's' in /proc/self/maps), not in "
                         "private memory a copy would use. `np.shares_memory` cannot "
                         "see across processes; without /proc the fallback is time "
                         "(under 5 ms for 200 MB cannot be a copy)."),
    Workload("large_arg_task", large_arg_task, size=LARGE_BYTES,
             warmup_size=LARGE_BYTES, warmups=2, suite="objects", settle_s=0.5,
             metrics=(Metric("task_arg_gbps", "Task summing the put array (passed by ref)",
                             "GB/s", True),),
             description="after two full-size warm-ups (one per worker, roughly), "
                         "put (untimed), then one task taking the ref as its "
                         "argument and returning `float(x.sum())`; 200 MB / (submit "
                         "to result), so the sum itself is inside the time."),
    Workload("cross_host", cross_host_transfer, size=LARGE_BYTES,
             warmup_size=LARGE_BYTES, suite="objects", cluster="two_hosts",
             settle_s=0.5,
             metrics=(Metric("cross_host_gbps", "200 MB object moved between two hosts",
                             "GB/s", True, only=GS_ONLY),
                      Metric("raw_tcp_gbps", "Raw loopback TCP, same 200 MB (reference)",
                             "GB/s", True, only=GS_ONLY),
                      Metric("cross_host_vs_tcp", "cross-host ÷ raw loopback TCP "
                             "(median of paired runs)", "×", True, only=GS_ONLY)),
             description="graphstore only (Ray and Dask have no single-machine mode "
                         "with distinct hosts here: N/A). Cluster restarted as "
                         "`init(num_cpus=2, worker_node_ids=['node-a', 'node-b'], "
                         "node_id='node-a')`; after one full-size warm-up, put "
                         "(untimed) lands on node-a; a task "
                         "forced onto node-b with `resources={'node:node-b': 0.001}` "
                         "returns `len(x)`; 200 MB / (submit to result), so the time "
                         "is essentially the transfer. Right after it in each run, "
                         "the same bytes over raw loopback TCP: plain sockets "
                         "between two processes, `sendall` from a memoryview of "
                         "the array, `recv_into` a preallocated bytearray, 1-byte "
                         "ack; one untimed transfer on the connection, then the "
                         "timed one. The ratio row is the median of the per-run "
                         "ratios (each pair saw the same machine load)."),

    # ---- spill suite: each run restarts the backend with a 512 MiB store.
    Workload("spill_disk", spill_disk, size=SPILL_BYTES, warmup_size=SPILL_WARMUP_BYTES,
             suite="spill", cluster="spill", settle_s=1.0,
             metrics=(Metric("spill_gbps", "Spill: 2 GiB put through the 512 MiB store "
                             "to local disk (end to end)", "GB/s", True, only=SPILL_BACKENDS),
                      Metric("restore_gbps", "Restore: all 2 GiB got back from local "
                             "disk (end to end)", "GB/s", True, only=SPILL_BACKENDS),
                      Metric("plain_write_gbps", "Plain sequential write of the same "
                             "2 GiB, same directory, no fsync (reference; better of 2 "
                             "per run)", "GB/s", True, only=SPILL_BACKENDS),
                      Metric("plain_read_gbps", "Plain sequential read of it, page cache "
                             "dropped (reference; better of 2 per run)", "GB/s", True,
                             only=SPILL_BACKENDS),
                      Metric("spill_vs_write", "spill ÷ plain write (median of paired "
                             "runs)", "×", True, only=SPILL_BACKENDS),
                      Metric("restore_vs_read", "restore ÷ plain read (median of paired "
                             "runs)", "×", True, only=SPILL_BACKENDS),
                      Metric("plain_write_fsync_gbps", "Plain write including its fsync "
                             "(what the disk itself sustains; context)", "GB/s", True,
                             only=SPILL_BACKENDS),
                      Metric("spilled_during_put_gb", "Bytes spilled while putting "
                             "(store counters)", "GB", True, only=GS_ONLY),
                      Metric("restored_gb", "Bytes restored while getting back "
                             "(store counters)", "GB", True, only=GS_ONLY),
                      Metric("counter_spill_gbps", "Spiller write throughput (store "
                             "counters: spilled bytes ÷ spilling time)", "GB/s", True,
                             only=GS_ONLY),
                      Metric("counter_restore_gbps", "Restore throughput (store counters: "
                             "restored bytes ÷ restoring time)", "GB/s", True,
                             only=GS_ONLY)),
             description="graphstore and Ray (Dask: N/A, see the notes). Each run "
                         "restarts the backend as one worker with a 512 MiB store "
                         "spilling above 80% of it to a fresh directory under "
                         f"{SPILL_PARENT} (graphstore: `init(num_cpus=1, "
                         "object_store_memory=512 MiB, spill_to=DIR, "
                         "spill_threshold=0.8)`; Ray: `init(num_cpus=1, "
                         "object_store_memory=512 MiB, _system_config={"
                         "'object_spilling_config': {'type': 'filesystem', 'params': "
                         "{'directory_path': DIR}}})`, whose spilling threshold is "
                         "0.8 by default). In the same run, before and again after the "
                         "backend's part, the plain reference: the same 2 GiB (the "
                         "same 64 MiB buffer 32 times) written sequentially to one "
                         "file in the same directory with unbuffered `write` calls, "
                         "no fsync (neither spiller fsyncs), then read back with "
                         "`readinto` a preallocated, pre-touched 64 MiB buffer, then "
                         "deleted (the fsync after the write is timed separately, for "
                         "the context row). Each plain rate is the better of the two "
                         "(both are in the samples, `_before`/`_after`): on this VM a "
                         "page-cache write swings by up to 10x with what ran just "
                         "before it (about 0.5 GB/s after a few idle seconds, 5 GB/s "
                         "right after other I/O), and the better one is the stricter "
                         "reference. The backend's part: 32 puts of distinct "
                         "64 MiB float64 arrays (puts wait while the store spills); "
                         "**spill** = 2 GiB ÷ time of the 32 puts; then, after 1 s, "
                         "each object got back once in put order, touching one "
                         "float64 per 4 KiB page and checking the object's index; "
                         "**restore** = 2 GiB ÷ time of the 32 gets. Before each timed "
                         "phase (plain write, plain read, puts, gets): `sync` and the "
                         "page cache dropped (see the notes). graphstore's store "
                         "counters (`memory_summary()['stores']`) show every object "
                         "restored in the get phase (restored bytes row); Ray's "
                         "counters are not readable here (its memory summary needs "
                         "grpc), but timing its gets one by one (a side check when "
                         "this was written) showed each of the 32 taking 23 ms or "
                         "more, i.e. restores (a get from memory takes under 1 ms). "
                         "Both phases include the in-memory part (about 400 MB stays "
                         "in the store), the same for both. The ratio rows are "
                         "medians of the per-run ratios. One untimed warm-up run "
                         "with 1 GiB."),
    Workload("spill_s3", spill_s3, size=SPILL_BYTES, warmup_size=SPILL_WARMUP_BYTES,
             suite="spill", cluster="spill", settle_s=1.0,
             metrics=(Metric("s3_spill_gbps", "S3 (moto server): spill, 2 GiB put "
                             "through the 512 MiB store (end to end)", "GB/s", True,
                             only=GS_ONLY),
                      Metric("s3_restore_gbps", "S3 (moto server): restore, all 2 GiB "
                             "got back (end to end)", "GB/s", True, only=GS_ONLY),
                      Metric("s3_counter_spill_gbps", "S3: spiller write throughput "
                             "(store counters)", "GB/s", True, only=GS_ONLY),
                      Metric("s3_counter_restore_gbps", "S3: restore throughput (store "
                             "counters)", "GB/s", True, only=GS_ONLY),
                      Metric("s3_spilled_during_put_gb", "S3: bytes spilled while "
                             "putting (store counters)", "GB", True, only=GS_ONLY),
                      Metric("s3_restored_gb", "S3: bytes restored while getting back "
                             "(store counters)", "GB", True, only=GS_ONLY)),
             description="graphstore only (no target; Ray's S3 spilling needs "
                         "smart_open and is not benchmarked here). The same workload "
                         "as spill_disk, spilling to `s3://BUCKET/run-ID` on a real "
                         "moto server (`python -m moto.server -H 127.0.0.1 -p PORT`, "
                         "started once per process, objects held in its memory; bucket "
                         "created through s3fs) with `spill_options={'key': 'testing', "
                         "'secret': 'testing', 'client_kwargs': {'endpoint_url': URL, "
                         "'region_name': 'us-east-1'}}`; after each run the prefix is "
                         "checked to be empty (shutdown removes it)."),
]

DERIVED_METRICS: list[Metric] = [
    Metric("put_vs_memcpy", "put ÷ warm memcpy (same process)", "×", True,
           derived=("put_gbps", "memcpy_gbps")),
]
PUT_FIRST = Metric("put_first_gbps", "put of a 200 MB float64 array, first put "
                   "of a fresh process (fresh pages)", "GB/s", True)


def suite_metrics(suite: str) -> list[Metric]:
    """The rows of one suite's table, in order."""
    rows = [STARTUP] if suite == "core" else []
    for w in WORKLOADS:
        if w.suite == suite:
            rows += w.metrics
            if w.name == "large_put":
                rows.append(PUT_FIRST)
    if suite == "objects":
        rows += DERIVED_METRICS
    return rows


ALL_METRICS: list[Metric] = [m for s in SUITES for m in suite_metrics(s)]


# --------------------------------------------------------------------------
# Child process: run one backend, print JSON records.
# --------------------------------------------------------------------------

def emit(**record: Any) -> None:
    print(RESULT_PREFIX + json.dumps(record), flush=True)


def note(message: str) -> None:
    """A remark for the report's notes (e.g. how zero-copy was established)."""
    emit(kind="note", message=message)


def sanity_check(b: Backend) -> None:
    """Untimed check that the adapter's whole API behaves like Ray's."""
    f, add_f = b.remote(noop), b.remote(add)
    refs = [b.submit(f) for _ in range(4)]
    ready, not_ready = b.wait(refs, num_returns=len(refs), timeout=60)
    assert len(ready) == len(refs) and not not_ready, (ready, not_ready)
    x = b.put(20)
    assert b.get(b.submit(add_f, x, 22)) == 42
    assert b.get([x, b.put(b"ab")]) == [20, b"ab"]


def run_child(backend: str, repeat: int, startup_only: bool,
              suites: tuple[str, ...] = SUITES) -> int:
    try:
        b = ADAPTERS[backend]()
    except ImportError as e:
        emit(kind="unavailable", reason=f"{type(e).__name__}: {e}")
        return 0
    emit(kind="meta", version=b.version())
    try:
        run_workloads(b, repeat, startup_only, suites)
    except Exception as e:
        emit(kind="error", workload="startup", message=f"{type(e).__name__}: {e}")
        return 1
    finally:
        try:
            b.shutdown()
        except Exception as e:
            emit(kind="error", workload="shutdown", message=f"{type(e).__name__}: {e}")
        stop_moto()
    return 0


def run_workloads(b: Backend, repeat: int, startup_only: bool,
                  suites: tuple[str, ...] = SUITES) -> None:
    # 1. Startup: the first thing this fresh process does with the backend.
    #    (Creating the remote function is not part of it, as with a
    #    module-level @remote decorator.)  Reported with the core suite.
    f = b.remote(noop)
    t0 = now()
    b.init()
    b.get(b.submit(f))
    if "core" in suites:
        emit(kind="samples", metric=STARTUP.key, values=[now() - t0])
    # The first large put of the process: also once per fresh process, after
    # a pause so that start-up work still going on in the background (worker
    # processes booting) does not compete with it on a small machine.
    if "objects" in suites:
        large_array(LARGE_BYTES)  # made before timing
        time.sleep(FIRST_PUT_PAUSE_S)
        try:
            for key, value in first_put(b, LARGE_BYTES).items():
                emit(kind="samples", metric=key, values=[value])
        except Exception as e:
            emit(kind="error", workload="first_put", message=f"{type(e).__name__}: {e}")
        gc.collect()
    if startup_only:
        return

    try:
        sanity_check(b)
    except Exception as e:  # report, but still try the workloads
        emit(kind="error", workload="sanity_check", message=f"{type(e).__name__}: {e}")

    # 2. Timed workloads: one small untimed warm-up, then `repeat` timed runs.
    #    A failing workload is reported and the next one still runs.
    chosen = [w for w in WORKLOADS if w.suite in suites and w.applies(b.name)]
    for w in chosen:
        if w.cluster == "default":
            run_workload(b, w, repeat)

    # 3. Workloads needing two hosts, on a cluster restarted for them.
    two_hosts = [w for w in chosen if w.cluster == "two_hosts"]
    if two_hosts:
        try:
            b.init_two_hosts(TWO_HOSTS)
        except Exception as e:
            for w in two_hosts:
                emit(kind="error", workload=w.name,
                     message=f"two-host cluster: {type(e).__name__}: {e}")
            return
        for w in two_hosts:
            run_workload(b, w, repeat)

    # 4. Spilling workloads: each run restarts the backend with a small store
    #    that spills (``Backend.init_spilling``) and shuts it down at the end.
    for w in chosen:
        if w.cluster == "spill":
            run_workload(b, w, repeat)


def run_workload(b: Backend, w: Workload, repeat: int) -> None:
    try:
        for _ in range(w.warmups):
            gc.collect()
            time.sleep(w.settle_s)
            w.fn(b, w.warmup_size)
        samples: dict[str, list[float]] = {m.key: [] for m in w.metrics}
        for _ in range(repeat):
            gc.collect()
            time.sleep(w.settle_s)
            for key, value in w.fn(b, w.size).items():
                samples.setdefault(key, []).append(value)
        for key, values in samples.items():
            if values:      # a metric N/A for this backend has none
                emit(kind="samples", metric=key, values=values)
    except Exception as e:
        emit(kind="error", workload=w.name, message=f"{type(e).__name__}: {e}")


# --------------------------------------------------------------------------
# Parent process: orchestrate children, render the report.
# --------------------------------------------------------------------------

@dataclass
class BackendResult:
    backend: str
    status: str = "ok"            # ok | skipped | failed
    version: str = ""
    notes: list[str] = field(default_factory=list)
    samples: dict[str, list[float]] = field(default_factory=dict)

    def median(self, key: str) -> float | None:
        values = self.samples.get(key)
        return statistics.median(values) if values else None

    def value(self, metric: Metric) -> float | None:
        """The metric's median, or for a derived metric the ratio of medians."""
        if not metric.applies(self.backend):
            return None
        if metric.derived:
            num, den = (self.median(k) for k in metric.derived)
            return num / den if num is not None and den else None
        return self.median(metric.key)


def run_child_process(backend: str, repeat: int, startup_only: bool,
                      timeout: float, suites: tuple[str, ...] = SUITES
                      ) -> tuple[list[dict], str | None]:
    """Run one child; return its JSON records and an error message (or None)."""
    cmd = [sys.executable, os.path.abspath(__file__), "--child", backend,
           "--repeat", str(repeat), "--suite", ",".join(suites)]
    if startup_only:
        cmd.append("--startup-only")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    # New session so that on timeout we can stop the child and everything it
    # started (cluster processes) as one process group.
    proc = subprocess.Popen(cmd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    error = None
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        out, err = proc.communicate()
        error = f"timed out after {timeout:.0f} s"
    records = [json.loads(line[len(RESULT_PREFIX):])
               for line in out.splitlines() if line.startswith(RESULT_PREFIX)]
    if error is None and proc.returncode != 0:
        last_line = (err.strip().splitlines() or [""])[-1]
        error = f"exit code {proc.returncode}: {last_line}"
    return records, error


def _kill_group(proc: subprocess.Popen) -> None:
    for sig, grace in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            pass


def run_backend(backend: str, repeat: int, timeout: float,
                suites: tuple[str, ...] = SUITES) -> BackendResult:
    result = BackendResult(backend)
    if importlib.util.find_spec(BACKEND_MODULES[backend]) is None:
        result.status = "skipped"
        result.notes.append(f"`{BACKEND_MODULES[backend]}` is not importable "
                            '(install with `pip install -e ".[bench]"`)')
        return result

    # Suites with nothing for this backend (its column shows N/A there).
    idle = [x for x in suites if x not in PER_PROCESS_SUITES
            and not any(w.applies(backend) for w in WORKLOADS if w.suite == x)]
    for x in idle:
        result.notes.append(NOT_RUN.get((backend, x), f"no workload of the {x} suite "
                                        "applies (N/A)"))
    if len(idle) == len(suites):
        result.status = "n/a"
        return result
    per_process = any(x in PER_PROCESS_SUITES for x in suites)

    # Startup (core suite) and the first large put (objects suite) need one
    # fresh process per sample: `repeat` children, the first also running
    # every workload, the others only these per-process measurements.  The
    # spill suite alone needs one child.
    children = repeat if per_process else 1
    for i in range(children):
        log(f"[{backend}] child {i + 1}/{children}"
            + (" (all workloads)" if i == 0 else " (fresh-process measurements only)"))
        records, error = run_child_process(backend, repeat, startup_only=i > 0,
                                           timeout=timeout, suites=suites)
        for r in records:
            if r["kind"] == "unavailable":
                result.status = "skipped"
                result.notes.append(f"not importable ({r['reason']})")
            elif r["kind"] == "meta":
                result.version = r["version"]
            elif r["kind"] == "samples":
                result.samples.setdefault(r["metric"], []).extend(r["values"])
                log(f"[{backend}]   {r['metric']}: "
                    + ", ".join(f"{v:.4g}" for v in r["values"]))
            elif r["kind"] == "error":
                result.notes.append(f"{r['workload']} failed: {r['message']}")
                log(f"[{backend}]   {r['workload']} FAILED: {r['message']}")
            elif r["kind"] == "note":
                if r["message"] not in result.notes:
                    result.notes.append(r["message"])
                log(f"[{backend}]   note: {r['message']}")
        if result.status == "skipped":
            return result
        reported = any(r["kind"] == "error" for r in records)
        if error and not (reported and error.startswith("exit code")):
            result.notes.append(f"child process {i + 1}: {error}")
            log(f"[{backend}]   child FAILED: {error}")
        if error or any(r["kind"] == "error" and r["workload"] == "startup"
                        for r in records):
            if not result.samples:
                result.status = "failed"
                return result
    return result


# Why a backend has no column in a suite where it is not run.
NOT_RUN = {
    ("dask", "spill"): "not run for the spill suite (N/A): Dask has no fixed-size object store "
            "to spill from; each worker spills its own task results to local disk "
            "(zict) when its process memory passes fractions of `memory_limit`, "
            "driven by its memory monitor, and gets them back through the scheduler "
            "and TCP, so no like-for-like workload is simple.",
}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def fmt_value(value: float | None, metric: Metric, backend: str | None = None) -> str:
    if backend is not None and not metric.applies(backend):
        return "N/A"
    if value is None:
        return "—"
    if metric.unit == "s":
        return f"{value:.2f} s"
    if metric.unit == "yes/no":
        return "yes" if value >= 0.5 else "no"
    if metric.unit in ("GB/s", "GB"):
        return f"{value:.2f}"
    if metric.unit == "×":
        return f"{value:.2f}×"
    if metric.unit == "ms":
        return f"{value:.3g}" if value < 100 else f"{value:,.0f}"
    return f"{value:,.0f}"


def fmt_ratio(gs: float | None, other: float | None) -> str:
    if gs is None or other is None or other == 0:
        return "n/a"
    return f"{gs / other:.3g}×"


def render_table(results: dict[str, BackendResult], metrics: list[Metric]) -> list[str]:
    shown = [b for b in ALL_BACKENDS if b in results]
    gs = results.get("graphstore")
    ratio_vs = [b for b in ("ray", "dask") if b in results and gs is not None]
    header = ["Workload", "Unit"] + [BACKEND_LABELS[b] for b in shown]
    header += [f"graphstore/{BACKEND_LABELS[b]}" for b in ratio_vs]
    if ratio_vs:
        header.append("Ratio better if")
    lines = ["| " + " | ".join(header) + " |"]
    align = ["---", "---"] + ["---:"] * (len(shown) + len(ratio_vs))
    if ratio_vs:
        align.append(":---:")
    lines.append("|" + "|".join(align) + "|")
    for m in metrics:
        row = [m.label, m.unit]
        row += [fmt_value(results[b].value(m), m, b) for b in shown]
        # No ratio for yes/no rows, ratios of ratios, or rows N/A elsewhere.
        comparable = m.unit not in ("yes/no", "×")
        gs_value = gs.value(m) if gs and comparable else None
        row += [fmt_ratio(gs_value, results[b].value(m)) for b in ratio_vs]
        if ratio_vs:
            if not comparable or not any(m.applies(b) for b in ratio_vs):
                row.append("—")
            else:
                row.append("> 1 (higher is better)" if m.higher_is_better
                           else "< 1 (lower time is better)")
        lines.append("| " + " | ".join(row) + " |")
    return lines


@dataclass(frozen=True)
class Target:
    """One target of an issue: ``num ÷ den >= need`` (medians), each side a
    (backend, metric key).  For times the sides are swapped (den ÷ num is a
    speed ratio) by listing the other backend first."""
    label: str
    num: tuple[str, str]
    den: tuple[str, str]
    need: float
    how: str = ""
    # A metric holding per-run ratios (paired runs): its median is used
    # instead of num's median ÷ den's median.
    ratio: tuple[str, str] | None = None


TARGETS: list[Target] = [
    Target("put ≥ 3× Ray's, steady state (store memory reused)",
           ("graphstore", "put_gbps"), ("ray", "put_gbps"), 3),
    Target("put ≥ 3× Ray's, first put of a fresh process (fresh pages; the regime of "
           "the issue's \"Ray 2.7 GB/s\")",
           ("graphstore", "put_first_gbps"), ("ray", "put_first_gbps"), 3),
    Target("put ≥ 0.5× warm memcpy, steady state",
           ("graphstore", "put_gbps"), ("graphstore", "memcpy_gbps"), 0.5),
    Target("put ≥ 0.5× warm memcpy, first put of a fresh process",
           ("graphstore", "put_first_gbps"), ("graphstore", "memcpy_gbps"), 0.5),
    Target("get ≥ 1× Ray's (a time: lower is better, so Ray's ms ÷ graphstore's ms)",
           ("ray", "get_ms"), ("graphstore", "get_ms"), 1, how="speed ratio"),
    Target("task with the 200 MB argument ≥ 1× Ray's",
           ("graphstore", "task_arg_gbps"), ("ray", "task_arg_gbps"), 1),
    Target("cross-host ≥ 0.6× raw loopback TCP (same run)",
           ("graphstore", "cross_host_gbps"), ("graphstore", "raw_tcp_gbps"), 0.6,
           how="median of the per-run ratios of paired runs",
           ratio=("graphstore", "cross_host_vs_tcp")),
]

# The targets of issue 5 ("Figures"): spilling 2 GiB through a 512 MiB store.
SPILL_TARGETS: list[Target] = [
    Target("disk spill ≥ 0.5× plain sequential write of the same bytes (same disk, "
           "same run)",
           ("graphstore", "spill_gbps"), ("graphstore", "plain_write_gbps"), 0.5,
           how="median of the per-run ratios of paired runs",
           ratio=("graphstore", "spill_vs_write")),
    Target("disk restore ≥ 0.5× plain sequential read of the same bytes (same disk, "
           "same run)",
           ("graphstore", "restore_gbps"), ("graphstore", "plain_read_gbps"), 0.5,
           how="median of the per-run ratios of paired runs",
           ratio=("graphstore", "restore_vs_read")),
    Target("spill ≥ 1× Ray's (same workload, Ray filesystem spilling, same run)",
           ("graphstore", "spill_gbps"), ("ray", "spill_gbps"), 1),
    Target("restore ≥ 1× Ray's (same workload, same run)",
           ("graphstore", "restore_gbps"), ("ray", "restore_gbps"), 1),
]
# The targets of issue 4 ("Figures"): actor calls.
ACTOR_TARGETS: list[Target] = [
    Target("5,000 actor calls ≥ 1.5× Ray's (same run)",
           ("graphstore", "actor_calls_per_s"), ("ray", "actor_calls_per_s"), 1.5),
    Target("300 actor round trips ≥ 2× Ray's (same run)",
           ("graphstore", "actor_round_trips_per_s"), ("ray", "actor_round_trips_per_s"), 2),
]
SUITE_TARGETS = {"actors": ("issue 4", ACTOR_TARGETS), "objects": ("issue 3", TARGETS),
                 "spill": ("issue 5", SPILL_TARGETS)}

_SHORT = {"actor_calls_per_s": "calls", "actor_round_trips_per_s": "round trips",
          "put_gbps": "put", "put_first_gbps": "first put", "memcpy_gbps": "memcpy",
          "get_ms": "get", "task_arg_gbps": "task", "cross_host_gbps": "cross-host",
          "raw_tcp_gbps": "raw TCP", "spill_gbps": "spill", "restore_gbps": "restore",
          "plain_write_gbps": "plain write", "plain_read_gbps": "plain read"}
# Measured in graphstore's process but not of graphstore: named without it.
_REFERENCES = ("memcpy_gbps", "raw_tcp_gbps", "plain_write_gbps", "plain_read_gbps")


def render_targets(results: dict[str, BackendResult],
                   targets: list[Target] = TARGETS) -> list[str]:
    """The targets of an issue's "Figures", checked against this run's medians."""
    def med(side: tuple[str, str]) -> float | None:
        r = results.get(side[0])
        return r.median(side[1]) if r is not None else None

    def name(side: tuple[str, str]) -> str:
        unit = ("ms" if side[1].endswith("_ms") else "/s" if side[1].endswith("_per_s")
                else "GB/s")
        value = med(side)
        shown = "—" if value is None else f"{value:.3g} {unit}"
        who = "" if side[1] in _REFERENCES else BACKEND_LABELS[side[0]] + " "
        return f"{who}{_SHORT.get(side[1], side[1])} {shown}"

    lines = ["| Target | Measured (medians) | Needs | Result |",
             "|---|---|:---:|:---:|"]
    zc = med(("graphstore", "get_zero_copy"))
    for t in targets:
        num, den = med(t.num), med(t.den)
        if t.ratio is not None:
            ratio = med(t.ratio)
        else:
            ratio = num / den if num is not None and den else None
        verdict = ("n/a (not measured)" if ratio is None
                   else "pass" if ratio >= t.need else "**FAIL**")
        value = "—" if ratio is None else f"{ratio:.2f}×"
        how = f" ({t.how})" if t.how else ""
        sign = "→" if t.ratio is not None else "="
        lines.append(f"| {t.label} | {name(t.num)} ÷ {name(t.den)} {sign} {value}{how} "
                     f"| ≥ {t.need:g}× | {verdict} |")
        if t.num[1] == "put_first_gbps" and t.den[0] == "graphstore":
            zc_text = "—" if zc is None else ("yes" if zc >= 0.5 else "no")
            zc_verdict = ("n/a (not measured)" if zc is None
                          else "pass" if zc >= 0.5 else "**FAIL**")
            lines.append(f"| get is zero-copy | graphstore: {zc_text} (read-only array, "
                         f"data in the store's shared mapping) | yes | {zc_verdict} |")
    return lines


def render_report(results: dict[str, BackendResult], repeat: int,
                  suites: tuple[str, ...] = SUITES, run_notes: list[str] = ()) -> str:
    shown = [b for b in ALL_BACKENDS if b in results]
    gs = results.get("graphstore")
    versions = ", ".join(
        f"{BACKEND_LABELS[b]} {results[b].version or '(unknown)'}"
        for b in shown if results[b].status not in ("skipped", "n/a"))
    method = (f"- Each backend ran in its own fresh process, one at a time. "
              f"Each value is the median of {repeat} run(s) after an untimed warm-up")
    per_process = ([STARTUP.label.split(":")[0].lower()] if "core" in suites else []) + \
        (["the first 200 MB put"] if "objects" in suites else [])
    if per_process:
        method += (f"; {' and '.join(per_process)} "
                   f"{'was' if len(per_process) == 1 else 'were'} "
                   f"measured once in each of {repeat} fresh process(es)")
    method += "."
    lines = [
        "# graphstore benchmarks",
        "",
        f"- Date: {datetime.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}",
        f"- Versions: {versions or 'none ran'}; Python {platform.python_version()}",
        f"- Machine: {platform.system()} {platform.machine()}, {_cpu_model()}"
        f"{os.cpu_count()} CPUs (cores as the OS sees them), {_mem_gib()} GiB RAM",
        method,
    ]
    lines += [f"- Note: {n}" for n in run_notes]
    ratio_vs = [b for b in ("ray", "dask") if b in results and gs is not None]
    if ratio_vs:
        lines.append("- Ratios are graphstore ÷ other. For rates higher is better, so a "
                     "ratio > 1 means graphstore is faster; for times (startup, get) "
                     "lower is better, so a ratio < 1 means graphstore is faster.")
    if "objects" in suites:
        lines.append("- GB/s means 10^9 bytes per second; the large object is 200 MB "
                     "(2×10^8 bytes, 25,000,000 float64s). N/A: the backend has no "
                     "equivalent here.")
    if "spill" in suites:
        lines.append("- Spill suite: 2 GiB = 32 objects of 64 MiB (2^31 bytes) through "
                     "a 512 MiB store, to a directory under "
                     f"{SPILL_PARENT} on the same disk as the plain reference file; "
                     "GB/s means 10^9 bytes per second; GB means 10^9 bytes.")
    suite_list = ",".join(suites) if set(suites) != set(SUITES) else "all"
    lines += [f"- Generated by `python benchmarks/core.py --suite {suite_list} "
              f"--repeat {repeat}`.", ""]
    for suite in SUITES:
        if suite in suites:
            lines += [f"## {SUITE_TITLES[suite]}", ""]
            lines += render_table(results, suite_metrics(suite)) + [""]
            if suite in SUITE_TARGETS:
                issue, targets = SUITE_TARGETS[suite]
                lines += [f"## Targets ({issue}, \"Figures\")", ""]
                lines += render_targets(results, targets) + [""]

    notes = [f"- **{BACKEND_LABELS[b]}**"
             + (f" {results[b].status}" if results[b].status != "ok" else "")
             + f": {n}"
             for b in shown for n in results[b].notes]
    if notes:
        lines += ["## Notes", ""] + notes + [""]

    lines += ["## Workloads", ""]
    if "core" in suites:
        lines.append(
            "- **startup**: from the `init()` call (Ray: `ray.init(num_cpus=cpu_count, "
            "object_store_memory=2 GiB, include_dashboard=False)`; Dask: "
            "`LocalCluster(n_workers=cpu_count, threads_per_worker=1, processes=True)` "
            "+ `Client`) to the first result of a trivial remote task, as the first "
            "thing a fresh process does.")
    lines += [f"- **{w.name}**: {w.description}" for w in WORKLOADS if w.suite in suites]

    lines += ["", "<details><summary>All samples</summary>", "", "```"]
    for b in shown:
        for key, values in results[b].samples.items():
            lines.append(f"{b:<10} {key:<32} " + "  ".join(f"{v:.4g}" for v in values))
    lines += ["```", "", "</details>", ""]
    return "\n".join(lines)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip() + ", "
    except OSError:
        pass
    return ""


def _mem_gib() -> str:
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        return f"{pages / 2**30:.0f}"
    except (ValueError, OSError, AttributeError):
        return "?"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--suite", default="all",
                   help="workloads to run: core, objects, spill or all (default all); "
                        "a comma-separated list also works")
    p.add_argument("--backends", default=",".join(ALL_BACKENDS),
                   help="comma-separated subset of: %(default)s")
    p.add_argument("--repeat", type=int, default=3,
                   help="timed runs per workload; the median is reported (default 3)")
    p.add_argument("--out", help="also write the Markdown report to this file")
    p.add_argument("--note", action="append", default=[],
                   help="a remark on the run's conditions for the report "
                        "(e.g. other load on the machine); may be repeated")
    p.add_argument("--timeout", type=float, default=1800,
                   help="seconds before a backend's child process is killed (default 1800)")
    p.add_argument("--child", choices=ALL_BACKENDS, help=argparse.SUPPRESS)
    p.add_argument("--startup-only", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.repeat < 1:
        p.error("--repeat must be >= 1")
    names = [x.strip() for x in args.suite.split(",") if x.strip()]
    if "all" in names:
        names = list(SUITES)
    bad = [x for x in names if x not in SUITES]
    if bad or not names:
        p.error(f"unknown suite(s): {', '.join(bad) or args.suite!r} "
                f"(choose from: {', '.join(SUITES)}, all)")
    suites = tuple(x for x in SUITES if x in names)

    if args.child:
        return run_child(args.child, args.repeat, args.startup_only, suites)

    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = [b for b in backends if b not in ALL_BACKENDS]
    if unknown:
        p.error(f"unknown backend(s): {', '.join(unknown)}")

    results = {b: run_backend(b, args.repeat, args.timeout, suites) for b in backends}
    report = render_report(results, args.repeat, suites, args.note)
    print(report)
    if args.out:
        out = os.path.abspath(args.out)
        os.makedirs(os.path.dirname(out), exist_ok=True)
        with open(out, "w") as fh:
            fh.write(report)
        log(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
