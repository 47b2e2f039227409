#!/usr/bin/env python
"""The single-node scalability envelope of issue 14: graphstore beside Ray.

What it checks
--------------
Each check is one workload that a user may reasonably run on one machine, pushed
to the size issue 14 asks for (``--scale full``) or to a size that runs in about
a minute on two cores (``--scale small``, the CI version of
``tests/test_envelope.py``):

========  ===========================================  ================  ==============
check     what                                         full              small
========  ===========================================  ================  ==============
returns   one task with ``num_returns=N`` (int ``i``)  N = 10,000        N = 2,000
lists     one task with ``num_returns=N``, each a      N = 3,000         N = 300
          list of 10,000 ints
get       one ``get`` of N objects of 128 KiB in the   N = 10,000        N = 2,000
          shared store (put by the driver)
hold      N objects of 128 KiB held at once by the     N = 100,000       N = 5,000
          driver through a smaller store that spills,  (13.1 GB, 2 GiB   (655 MB, 384
          then all read back                           store)            MiB store)
noop      N no-op tasks submitted at once, then all    N = 1,000,000     N = 20,000
          results gathered
largest   one object as large as the machine allows,   8 GiB             256 MiB
          put and got back
========  ===========================================  ================  ==============

Every value is derived from its index and verified bit for bit after it came
back (128 KiB objects are int64 arrays ``arange(i*16384, (i+1)*16384)``; the
large object is ``arange`` over int64, compared in 64 MiB chunks).  Times are
wall-clock seconds of the part named in the table (verification is not timed).

How it runs
-----------
Every (backend, check) pair runs in its own fresh child process (this script
with the hidden ``--child``), one at a time, in a new session, with
``RLIMIT_NOFILE`` set to 1024 soft *and* hard before the child executes, so
neither the backend nor any process it starts can lift it.  While a child
runs, the parent samples every process of its session (driver, scheduler,
workers, raylet, ...; every 0.1 s) through ``/proc/<pid>/fd``, and the child
also samples them at the moments it holds the most objects.  The report gives,
per check, the most descriptors any one process held and the most of them
pointing into ``/dev/shm`` (the store's): issue 14 allows at most 256.

A check passes when its workload finished with every value verified *and* no
process held more than 256 ``/dev/shm`` descriptors.  A failure (an exception,
a crash, a timeout) is reported with its error text; the run goes on.  After
each child its leftover processes (none should be left) are killed by pid and
reported, and so are leftover ``/dev/shm`` segments of its graphstore cluster.

Usage::

    python benchmarks/envelope.py                       # full scale, graphstore and Ray
    python benchmarks/envelope.py --scale small --backends graphstore
    python benchmarks/envelope.py --checks get --backends graphstore,ray --out report.md
    python benchmarks/envelope.py --scale small --json results.json

Progress goes to stderr, the Markdown report to stdout (and ``--out``).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import asdict, dataclass, field

RESULT_PREFIX = "@@ENVELOPE@@ "
BACKENDS = ("graphstore", "ray")
LABELS = {"graphstore": "graphstore", "ray": "Ray"}
#: The descriptor limit every child runs under (soft and hard).
NOFILE_LIMIT = 1024
#: Most descriptors into /dev/shm one process may hold (issue 14).
MAX_STORE_FDS = 256
#: Seconds between two samples of the descriptors of the child's processes.
SAMPLE_INTERVAL = 0.1
SHM_DIR = "/dev/shm"

KiB, MiB, GiB = 1024, 1024**2, 1024**3
OBJ_BYTES = 128 * KiB
OBJ_INTS = OBJ_BYTES // 8          # int64 elements in one 128 KiB object
LIST_LEN = 10_000                  # ints in each list of the lists check
HOLD_BATCH = 1_000                 # objects per get when the hold check reads back
CHUNK_BYTES = 64 * MiB             # the largest object is compared in chunks this large


@dataclass(frozen=True)
class Check:
    name: str
    what: str                      # the workload, {n} replaced by the count
    primary: str                   # the phase timed in the side-by-side table
    full: int                      # count (or bytes, for largest) at full scale
    small: int
    store_full: int                # object_store_memory at full scale
    store_small: int
    target: str = ""               # issue 14's figure, if any


CHECKS: dict[str, Check] = {c.name: c for c in (
    Check("returns", "one task, num_returns={n} (int i each)", "task",
          10_000, 2_000, 1 * GiB, 1 * GiB),
    Check("lists", "one task, num_returns={n}, each a list of 10,000 ints", "task",
          3_000, 300, 1 * GiB, 1 * GiB),
    Check("get", "one get of {n} objects of 128 KiB in the store", "get",
          10_000, 2_000, 4 * GiB, 1 * GiB,
          target="graphstore's get at most 0.5x Ray's time"),
    Check("get_tasks", "one get of {n} objects of 128 KiB in the store, returned by "
          "tasks (100 each)", "get", 10_000, 2_000, 4 * GiB, 1 * GiB),
    Check("hold", "{n} objects of 128 KiB held at once by the driver (spilling), "
          "all read back", "put+read", 100_000, 5_000, 2 * GiB, 384 * MiB),
    Check("noop", "{n} no-op tasks queued at once, all results gathered", "tasks",
          1_000_000, 20_000, 1 * GiB, 1 * GiB),
    # The store must hold the object below graphstore's and Ray's spill
    # threshold (80% of capacity): 8 GiB in a 10.5 GiB store is 76%.
    Check("largest", "one object of {size}, put and got back", "put+get",
          8 * GiB, 256 * MiB, 10 * GiB + 512 * MiB, 1 * GiB),
)}


def check_size(check: Check, scale: str) -> int:
    return check.full if scale == "full" else check.small


def store_size(check: Check, scale: str) -> int:
    return check.store_full if scale == "full" else check.store_small


def describe(check: Check, scale: str) -> str:
    n = check_size(check, scale)
    return check.what.format(n=f"{n:,}", size=fmt_bytes(n))


def fmt_bytes(n: float) -> str:
    for unit, size in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n >= size:
            v = n / size
            return f"{v:.0f} {unit}" if v == int(v) else f"{v:.1f} {unit}"
    return f"{n:.0f} B"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# Descriptors of a session's processes, from /proc (the parent's sampler and
# the child's own probes use the same code).


def session_pids(sid: int) -> list[int]:
    """Live processes whose session is ``sid``."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        # fields[0] is the state, [3] the session.
        if fields[0] not in ("Z", "X") and int(fields[3]) == sid:
            pids.append(int(entry))
    return pids


def start_time(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return int(fh.read().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def process_name(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            argv = [a.decode(errors="replace") for a in fh.read().split(b"\0") if a]
    except OSError:
        argv = []
    if not argv:
        try:
            with open(f"/proc/{pid}/comm") as fh:
                return fh.read().strip()
        except OSError:
            return "?"
    if "-m" in argv[:-1]:                       # python -m graphstore.worker ...
        return argv[argv.index("-m") + 1]
    for a in argv:
        if a.endswith("envelope.py"):
            return "driver"
    name = os.path.basename(argv[0])
    if name.startswith("python") and len(argv) > 1:
        name = os.path.basename(argv[1])
    return name[:40]


def open_file_limit(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/limits") as fh:
            for line in fh:
                if line.startswith("Max open files"):
                    soft, hard = line.split()[3:5]
                    return f"{soft}/{hard}"
    except OSError:
        pass
    return "?"


def count_fds(pid: int) -> tuple[int, int, set[str]] | None:
    """(descriptors, descriptors into /dev/shm, names of those /dev/shm files)."""
    base = f"/proc/{pid}/fd"
    try:
        entries = os.listdir(base)
    except OSError:
        return None
    shm, names = 0, set()
    for e in entries:
        try:
            target = os.readlink(f"{base}/{e}")
        except OSError:
            continue
        if target.startswith(SHM_DIR + "/"):
            shm += 1
            if len(names) < 64:
                names.add(target[len(SHM_DIR) + 1:].split(" ")[0])
    return len(entries), shm, names


@dataclass
class FdStats:
    """The most descriptors one process of a session held, over its samples."""
    max_fds: int = 0
    max_fds_proc: str = ""
    max_shm_fds: int = 0
    max_shm_fds_proc: str = ""
    samples: int = 0
    processes: dict[str, str] = field(default_factory=dict)   # "pid name" -> limit
    shm_names: set[str] = field(default_factory=set)

    def add(self, pid: int, name: str, fds: int, shm: int, names: set[str]) -> None:
        label = f"{name} (pid {pid})"
        if fds > self.max_fds:
            self.max_fds, self.max_fds_proc = fds, label
        if shm > self.max_shm_fds:
            self.max_shm_fds, self.max_shm_fds_proc = shm, label
        if len(self.shm_names) < 256:
            self.shm_names |= names

    def merge(self, other: dict) -> None:
        if other["max_fds"] > self.max_fds:
            self.max_fds, self.max_fds_proc = other["max_fds"], other["max_fds_proc"]
        if other["max_shm_fds"] > self.max_shm_fds:
            self.max_shm_fds = other["max_shm_fds"]
            self.max_shm_fds_proc = other["max_shm_fds_proc"]
        self.samples += other.get("samples", 0)


def sample_session(sid: int, stats: FdStats, known: dict[int, int] | None = None) -> None:
    """One sample of every process of session ``sid`` into ``stats``; ``known``
    collects pid -> start time of every process seen (to clean up after)."""
    for pid in session_pids(sid):
        counted = count_fds(pid)
        if counted is None:
            continue
        if known is not None and pid not in known:
            known[pid] = start_time(pid) or 0
        name = process_name(pid)
        key = f"{pid} {name}"
        if key not in stats.processes:
            stats.processes[key] = open_file_limit(pid)
        stats.add(pid, name, *counted)
    stats.samples += 1


# ---------------------------------------------------------------------------
# The child: one check on one backend, in this process.


def emit(**record) -> None:
    print(RESULT_PREFIX + json.dumps(record), flush=True)


class Probe:
    """The child's own samples of its session, at the moments it holds most."""

    def __init__(self):
        self.stats = FdStats()

    def __call__(self) -> None:
        try:
            sample_session(os.getsid(0), self.stats)
        except OSError:
            pass          # out of descriptors: the parent's sampler still runs


class GraphstoreEnv:
    name = "graphstore"

    def __init__(self):
        import graphstore
        self.m = graphstore

    def version(self) -> str:
        from importlib.metadata import version
        try:
            return version("graphstore")
        except Exception:
            return "dev"

    def init(self, store_bytes: int, spill_dir: str) -> None:
        # object_store_memory is per worker store here (two workers).
        self.m.init(num_cpus=2, object_store_memory=store_bytes, spill_to=spill_dir,
                    log_to_driver=False)

    def shutdown(self) -> None:
        self.m.shutdown()


class RayEnv:
    name = "ray"

    def __init__(self):
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        import ray
        self.m = ray

    def version(self) -> str:
        return self.m.__version__

    def init(self, store_bytes: int, spill_dir: str) -> None:
        import logging
        # object_store_memory is the node's one plasma store here.
        self.m.init(num_cpus=2, object_store_memory=store_bytes,
                    include_dashboard=False, log_to_driver=False,
                    logging_level=logging.ERROR,
                    _system_config={"object_spilling_config": json.dumps(
                        {"type": "filesystem",
                         "params": {"directory_path": spill_dir}})})

    def shutdown(self) -> None:
        self.m.shutdown()


def obj(i: int):
    import numpy as np
    return np.arange(i * OBJ_INTS, (i + 1) * OBJ_INTS, dtype=np.int64)


def check_obj(i: int, value) -> None:
    import numpy as np
    if not (isinstance(value, np.ndarray) and value.dtype == np.int64
            and value.shape == (OBJ_INTS,)):
        raise AssertionError(f"object {i}: got {type(value).__name__} "
                             f"{getattr(value, 'dtype', '')} {getattr(value, 'shape', '')}")
    if value[0] != i * OBJ_INTS or not np.array_equal(value, obj(i)):
        raise AssertionError(f"object {i}: content differs from arange({i * OBJ_INTS}, ...)")


class Timer:
    def __init__(self):
        self.phases: dict[str, float] = {}
        self.current = ""          # the phase running (named in a failure)
        self.progress = ""         # how far it got (named in a failure)

    def __call__(self, name: str):
        timer = self

        class _Phase:
            def __enter__(self):
                timer.current = name
                self.t0 = time.perf_counter()

            def __exit__(self, *exc):
                if exc[0] is None:
                    timer.current = ""
                    timer.phases[name] = time.perf_counter() - self.t0
                    emit(kind="phase", name=name, seconds=timer.phases[name])
        return _Phase()


def run_returns(env, n: int, t: Timer, probe: Probe) -> str:
    def many(count):
        return tuple(range(count))
    f = env.m.remote(many).options(num_returns=n)
    with t("task"):
        refs = f.remote(n)
        values = env.m.get(list(refs))
    probe()
    if values != list(range(n)):
        raise AssertionError("the returned values are not 0..n-1 in order")
    return f"{n:,} values checked"


def run_lists(env, n: int, t: Timer, probe: Probe) -> str:
    def lists(count, length):
        return tuple(list(range(i * length, (i + 1) * length)) for i in range(count))
    f = env.m.remote(lists).options(num_returns=n)
    with t("task"):
        refs = f.remote(n, LIST_LEN)
        values = env.m.get(list(refs))
    probe()
    for i, v in enumerate(values):
        if v != list(range(i * LIST_LEN, (i + 1) * LIST_LEN)):
            raise AssertionError(f"list {i} differs")
    return f"{n:,} lists of {LIST_LEN:,} ints checked"


def run_get(env, n: int, t: Timer, probe: Probe) -> str:
    with t("put"):
        refs = []
        for i in range(n):
            t.progress = f"(after {i:,} of {n:,} puts)"
            refs.append(env.m.put(obj(i)))
    t.progress = ""
    return _timed_get_and_check(env, refs, t, probe)


TASK_RETURNS = 100                 # objects each task of the get_tasks check returns


def _timed_get_and_check(env, refs: list, t: Timer, probe: Probe) -> str:
    """The timed part of the get checks: one get of every ref, then each value checked."""
    probe()
    with t("get"):
        values = env.m.get(refs)
    probe()
    for i, v in enumerate(values):
        check_obj(i, v)
    del values
    return f"{len(refs):,} x 128 KiB checked"


def run_get_tasks(env, n: int, t: Timer, probe: Probe) -> str:
    def make(start, count):
        return tuple(obj(start + j) for j in range(count))
    f = env.m.remote(make).options(num_returns=TASK_RETURNS)
    with t("make"):
        refs = []
        for start in range(0, n, TASK_RETURNS):
            refs.extend(f.remote(start, TASK_RETURNS))
        env.m.wait(refs, num_returns=len(refs))
    return _timed_get_and_check(env, refs, t, probe)


def run_hold(env, n: int, t: Timer, probe: Probe) -> str:
    t0 = time.perf_counter()
    with t("put"):
        refs = []
        for i in range(n):
            t.progress = f"(after {i:,} of {n:,} puts)"
            refs.append(env.m.put(obj(i)))
            if i % 10_000 == 9_999:
                probe()
    probe()
    with t("read"):
        for start in range(0, n, HOLD_BATCH):
            t.progress = f"(after {start:,} of {n:,} objects read back)"
            values = env.m.get(refs[start:start + HOLD_BATCH])
            if start == 0:
                probe()
            for j, v in enumerate(values):
                check_obj(start + j, v)
            del values
    t.phases["put+read"] = time.perf_counter() - t0
    emit(kind="phase", name="put+read", seconds=t.phases["put+read"])
    probe()
    return f"{n:,} x 128 KiB held, read back in gets of {HOLD_BATCH:,}, checked"


def run_noop(env, n: int, t: Timer, probe: Probe) -> str:
    def noop(i):
        return i
    f = env.m.remote(noop)
    t0 = time.perf_counter()
    with t("submit"):
        refs = [f.remote(i) for i in range(n)]
    probe()
    with t("gather"):
        values = env.m.get(refs)
    t.phases["tasks"] = time.perf_counter() - t0
    emit(kind="phase", name="tasks", seconds=t.phases["tasks"])
    probe()
    if values != list(range(n)):
        raise AssertionError("the results are not 0..n-1 in order")
    return f"{n:,} results checked"


def run_largest(env, nbytes: int, t: Timer, probe: Probe) -> str:
    import numpy as np
    count = nbytes // 8
    with t("fill"):
        src = np.arange(count, dtype=np.int64)
    with t("put"):
        ref = env.m.put(src)
    del src                          # frees 8 GiB: the check compares against arange
    probe()
    t1 = time.perf_counter()
    with t("get"):
        out = env.m.get(ref)
    t.phases["put+get"] = t.phases["put"] + (time.perf_counter() - t1)
    emit(kind="phase", name="put+get", seconds=t.phases["put+get"])
    probe()
    if not (isinstance(out, np.ndarray) and out.dtype == np.int64 and out.shape == (count,)):
        raise AssertionError(f"got {type(out).__name__} {getattr(out, 'dtype', '')} "
                             f"{getattr(out, 'shape', '')}")
    step = CHUNK_BYTES // 8
    with t("verify"):
        for start in range(0, count, step):
            stop = min(count, start + step)
            if not np.array_equal(out[start:stop], np.arange(start, stop, dtype=np.int64)):
                bad = start + int(np.argmax(out[start:stop] != np.arange(start, stop)))
                raise AssertionError(f"element {bad:,} differs")
    return f"{fmt_bytes(nbytes)} checked in {CHUNK_BYTES // MiB} MiB chunks"


RUNNERS = {"returns": run_returns, "lists": run_lists, "get": run_get,
           "get_tasks": run_get_tasks,
           "hold": run_hold, "noop": run_noop, "largest": run_largest}


def largest_precondition(nbytes: int, store_bytes: int) -> str | None:
    """Why this machine cannot hold an object of ``nbytes`` (None if it can)."""
    st = os.statvfs(SHM_DIR)
    shm_free = st.f_bavail * st.f_frsize
    mem_avail = 0
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemAvailable:"):
                mem_avail = int(line.split()[1]) * 1024
    # The source array (private) and its copy in the store exist at once.
    need_mem = 2 * nbytes + GiB
    if shm_free < store_bytes:
        return (f"{SHM_DIR} has {fmt_bytes(shm_free)} free, less than the "
                f"{fmt_bytes(store_bytes)} store an object of {fmt_bytes(nbytes)} needs")
    if mem_avail < need_mem:
        return (f"MemAvailable is {fmt_bytes(mem_avail)}, less than the "
                f"{fmt_bytes(need_mem)} needed (source array + stored copy + 1 GiB)")
    return None


def run_child(backend: str, check_name: str, scale: str, spill_dir: str) -> int:
    check = CHECKS[check_name]
    n = check_size(check, scale)
    store = store_size(check, scale)
    emit(kind="limits", nofile=list(resource.getrlimit(resource.RLIMIT_NOFILE)))
    if check_name == "largest":
        reason = largest_precondition(n, store)
        if reason:
            emit(kind="result", status="cannot", detail="", error=reason)
            return 0
    probe = Probe()
    t = Timer()
    env = None
    try:
        env = GraphstoreEnv() if backend == "graphstore" else RayEnv()
        emit(kind="meta", version=env.version(), store_bytes=store)
        with t("init"):
            env.init(store, spill_dir)
        probe()
        detail = RUNNERS[check_name](env, n, t, probe)
        emit(kind="result", status="ok", detail=detail, error="")
    except BaseException as exc:    # noqa: BLE001 - every failure is a result
        text = f"{type(exc).__name__}: {exc}".strip()
        if t.current:
            text = f"in {t.current}{' ' + t.progress if t.progress else ''}: {text}"
        emit(kind="result", status="failed", detail="", error=text[:1000],
             traceback=traceback.format_exc()[-3000:])
    finally:
        emit(kind="probe", **{k: v for k, v in asdict(probe.stats).items()
                              if k not in ("processes", "shm_names")})
        if env is not None:
            try:
                env.shutdown()
            except BaseException as exc:   # noqa: BLE001
                emit(kind="note", message=f"shutdown failed: {type(exc).__name__}: {exc}")
    return 0


# ---------------------------------------------------------------------------
# The parent: one child per (backend, check), sampled, cleaned up after.


@dataclass
class Outcome:
    backend: str
    check: str
    status: str = "failed"        # ok | failed | cannot | skipped
    passed: bool = False
    detail: str = ""
    error: str = ""
    version: str = ""
    store_bytes: int = 0
    limits: list = field(default_factory=list)
    phases: dict = field(default_factory=dict)
    primary_s: float | None = None
    wall_s: float = 0.0
    max_fds: int = 0
    max_fds_proc: str = ""
    max_shm_fds: int = 0
    max_shm_fds_proc: str = ""
    samples: int = 0
    process_limits: dict = field(default_factory=dict)
    process_counts: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)


def _limit_nofile() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE_LIMIT, NOFILE_LIMIT))


def _kill_known(known: dict[int, int], sid: int) -> list[str]:
    """Kill (by pid) the processes of the child's session still alive; returns
    what was left."""
    left = []
    for pid, started in known.items():
        if start_time(pid) == started and started:
            left.append(f"{process_name(pid)} (pid {pid})")
    for pid in session_pids(sid):
        if pid not in known:
            known[pid] = start_time(pid) or 0
            left.append(f"{process_name(pid)} (pid {pid})")
    for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        alive = [p for p, s in known.items() if s and start_time(p) == s]
        if not alive:
            break
        for pid in alive:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(
                start_time(p) == known[p] for p in alive):
            time.sleep(0.1)
    return left


def _graphstore_clusters(names: set[str]) -> set[str]:
    """Cluster ids of graphstore segments (``gs-<cluster>-<worker>...``)."""
    return {m.group(1) for n in names if (m := re.match(r"gs-([^-]+)-", n))}


def run_one(backend: str, check: str, scale: str, timeout: float) -> Outcome:
    out = Outcome(backend, check)
    spill_dir = tempfile.mkdtemp(prefix=f"envelope-spill-{backend}-{check}-")
    cmd = [sys.executable, os.path.abspath(__file__), "--child", backend,
           "--checks", check, "--scale", scale, "--spill-dir", spill_dir]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    stats, known = FdStats(), {}
    t0 = time.monotonic()
    try:
        proc = subprocess.Popen(cmd, env=env, text=True, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True,
                                preexec_fn=_limit_nofile)
    except (OSError, subprocess.SubprocessError) as exc:
        shutil.rmtree(spill_dir, ignore_errors=True)
        out.error = (f"could not start the check's process with RLIMIT_NOFILE "
                     f"{NOFILE_LIMIT}: {type(exc).__name__}: {exc}")
        return out
    sid = proc.pid
    stop = threading.Event()

    def sampler():
        while not stop.is_set():
            try:
                sample_session(sid, stats, known)
            except OSError:
                pass
            stop.wait(SAMPLE_INTERVAL)
    thread = threading.Thread(target=sampler, daemon=True)
    thread.start()
    err_tail: list[str] = []

    def drain_stderr():
        for line in proc.stderr:
            err_tail.append(line)
            del err_tail[:-40]
    err_thread = threading.Thread(target=drain_stderr, daemon=True)
    err_thread.start()

    records = []

    def drain_stdout():
        for line in proc.stdout:
            if line.startswith(RESULT_PREFIX):
                r = json.loads(line[len(RESULT_PREFIX):])
                records.append(r)
                if r["kind"] == "phase":
                    log(f"[{backend} {check}]   {r['name']}: {r['seconds']:.2f} s")
                elif r["kind"] == "result":
                    log(f"[{backend} {check}]   {r['status']}: "
                        f"{r.get('detail') or r.get('error')}")
    out_thread = threading.Thread(target=drain_stdout, daemon=True)
    out_thread.start()
    timed_out = False
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
    finally:
        out.wall_s = time.monotonic() - t0
        if timed_out:
            out.notes.append(f"killed after the {timeout:.0f} s timeout")
        else:
            # Cluster processes exit on their own once the driver is gone
            # (graphstore: the closed stdin pipe; Ray: shutdown); give them time.
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and any(
                    s and start_time(p) == s for p, s in known.items()):
                time.sleep(0.1)
        stop.set()
        thread.join()
        left = _kill_known(known, sid)
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        out_thread.join(5)
        err_thread.join(5)
        if left and not timed_out:
            out.notes.append("left running after the child exited (killed): "
                             + ", ".join(left))
        for cluster in sorted(_graphstore_clusters(stats.shm_names)):
            leaked = [n for n in os.listdir(SHM_DIR) if n.startswith(f"gs-{cluster}-")]
            if leaked:
                out.notes.append(f"{len(leaked)} /dev/shm segment(s) of cluster "
                                 f"{cluster} outlived it (removed)")
                for n in leaked:
                    try:
                        os.unlink(os.path.join(SHM_DIR, n))
                    except OSError:
                        pass
        shutil.rmtree(spill_dir, ignore_errors=True)

    result = None
    for r in records:
        kind = r["kind"]
        if kind == "limits":
            out.limits = r["nofile"]
        elif kind == "meta":
            out.version, out.store_bytes = r["version"], r["store_bytes"]
        elif kind == "phase":
            out.phases[r["name"]] = r["seconds"]
        elif kind == "probe":
            stats.merge(r)
        elif kind == "note":
            out.notes.append(r["message"])
        elif kind == "result":
            result = r
    if result is None:
        out.status = "failed"
        tail = "".join(err_tail).strip().splitlines()
        why = (f"timed out after {timeout:.0f} s" if timed_out
               else f"child exited with code {proc.returncode} without a result")
        out.error = why + (f": {tail[-1]}" if tail else "")
    else:
        out.status, out.detail, out.error = result["status"], result["detail"], result["error"]
        if timed_out and out.status == "ok":
            out.notes.append("timed out during shutdown")
        if result.get("traceback"):
            log(result["traceback"])
    out.primary_s = out.phases.get(CHECKS[check].primary)
    out.max_fds, out.max_fds_proc = stats.max_fds, stats.max_fds_proc
    out.max_shm_fds, out.max_shm_fds_proc = stats.max_shm_fds, stats.max_shm_fds_proc
    out.samples = stats.samples
    out.process_limits = stats.processes
    out.passed = out.status == "ok" and out.max_shm_fds <= MAX_STORE_FDS
    if out.status == "ok" and not out.passed:
        out.error = (f"a process held {out.max_shm_fds} descriptors into /dev/shm "
                     f"(> {MAX_STORE_FDS}): {out.max_shm_fds_proc}")
    # Processes seen, by name: more graphstore workers than the two started
    # means some died and the local cluster replaced them.
    counts: dict[str, int] = {}
    for key in stats.processes:
        name = key.split(" ", 1)[1]
        counts[name] = counts.get(name, 0) + 1
    out.process_counts = counts
    if counts.get("graphstore.worker", 0) > 2:
        out.notes.append(f"{counts['graphstore.worker']} graphstore.worker processes "
                         "seen for 2 workers: workers died and were replaced")
    wrong = sorted({v for v in stats.processes.values()
                    if v not in ("?", f"{NOFILE_LIMIT}/{NOFILE_LIMIT}")})
    if wrong:
        out.notes.append(f"descriptor limits other than {NOFILE_LIMIT}/{NOFILE_LIMIT} "
                         f"seen: {', '.join(wrong)}")
    return out


# ---------------------------------------------------------------------------
# The report.


def fmt_s(v: float | None) -> str:
    if v is None:
        return "—"
    return f"{v:.3g} s" if v < 10 else f"{v:,.0f} s"


def cell(o: Outcome | None) -> str:
    if o is None:
        return "—"
    if o.status == "skipped":
        return "not run"
    if o.status == "cannot":
        return "cannot run here"
    mark = "pass" if o.passed else "**FAIL**"
    return f"{fmt_s(o.primary_s)} {mark}" if o.primary_s is not None else mark


def render(results: dict[tuple[str, str], Outcome], backends: list[str],
           checks: list[str], scale: str, notes: list[str]) -> str:
    versions = sorted({f"{LABELS[o.backend]} {o.version}" for o in results.values()
                       if o.version})
    lines = [f"# Single-node scalability envelope ({scale} scale)", "",
             f"Run {datetime.datetime.now():%Y-%m-%d %H:%M} on {platform.node()}: "
             f"{os.cpu_count()} CPUs, {fmt_bytes(_mem_total())} RAM, "
             f"{SHM_DIR} {fmt_bytes(_shm_size())}; "
             f"{', '.join(versions) or 'no backend ran'}; Python {platform.python_version()}. "
             f"Every check ran in a fresh process under `RLIMIT_NOFILE` "
             f"{NOFILE_LIMIT} (soft and hard); it passes when every value came back "
             f"bit for bit and no process held more than {MAX_STORE_FDS} descriptors "
             f"into {SHM_DIR}.", ""]
    lines += [f"- {n}" for n in notes]
    if notes:
        lines.append("")
    has_ray = "ray" in backends and "graphstore" in backends
    header = ["Check", "Workload", "Timed"] + [LABELS[b] for b in backends]
    if has_ray:
        header.append("graphstore/Ray")
    lines += ["| " + " | ".join(header) + " |",
              "|" + "|".join(["---"] * 3 + ["---:"] * (len(header) - 3)) + "|"]
    for c in checks:
        row = [c, describe(CHECKS[c], scale), CHECKS[c].primary]
        row += [cell(results.get((b, c))) for b in backends]
        if has_ray:
            gs, ray = results.get(("graphstore", c)), results.get(("ray", c))
            ratio = "n/a"
            if gs and ray and gs.passed and ray.passed and gs.primary_s and ray.primary_s:
                ratio = f"{gs.primary_s / ray.primary_s:.3g}×"
            row.append(ratio)
        lines.append("| " + " | ".join(row) + " |")
    targets = [c for c in checks if CHECKS[c].target]
    if has_ray and targets:
        lines += ["", "| Target (issue 14) | Result |", "|---|---|"]
        for c in targets:
            gs, ray = results.get(("graphstore", c)), results.get(("ray", c))
            if gs and ray and gs.passed and ray.passed and gs.primary_s and ray.primary_s:
                r = gs.primary_s / ray.primary_s
                verdict = f"{'met' if r <= 0.5 else 'not met'} ({r:.3g}×)"
            else:
                verdict = "not measured (a backend failed)"
            lines.append(f"| {c}: {CHECKS[c].target} | {verdict} |")

    lines += ["", "## Per check", "",
              "| Check | Backend | Result | Phases | Most descriptors, one process "
              f"| Most into {SHM_DIR}, one process | Store | Error |",
              "|---|---|---|---|---:|---:|---:|---|"]
    for c in checks:
        for b in backends:
            o = results.get((b, c))
            if o is None:
                continue
            phases = ", ".join(f"{k} {fmt_s(v)}" for k, v in o.phases.items())
            result = ("pass" if o.passed else {"cannot": "cannot run here",
                                               "skipped": "not run"}.get(o.status, "FAIL"))
            err = (o.error or "").replace("|", "\\|").replace("\n", " ")
            if o.notes:
                err = "; ".join(filter(None, [err] + [n.replace("|", "\\|")
                                                      for n in o.notes]))
            lines.append("| " + " | ".join([
                c, LABELS[b], result, phases or "—",
                f"{o.max_fds} ({o.max_fds_proc})" if o.samples else "—",
                f"{o.max_shm_fds} ({o.max_shm_fds_proc})" if o.samples else "—",
                fmt_bytes(o.store_bytes) if o.store_bytes else "—",
                err or ""]) + " |")
    lines += ["", "Stores: `object_store_memory` as passed to `init`; graphstore has one "
              "store of that size per worker (two workers, `num_cpus=2`), Ray one per node. "
              "Both spill to a fresh directory under the system temp dir. Descriptors are "
              f"sampled every {SAMPLE_INTERVAL} s in every process of the child's session, "
              "and by the driver itself when it holds the most objects.", ""]
    return "\n".join(lines)


def _mem_total() -> int:
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    return 0


def _shm_size() -> int:
    st = os.statvfs(SHM_DIR)
    return st.f_blocks * st.f_frsize


def main(argv: list[str] | None = None) -> int:
    global NOFILE_LIMIT
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backends", default=",".join(BACKENDS),
                   help="comma-separated subset of %(default)s; Ray is skipped if not installed")
    p.add_argument("--scale", choices=("full", "small"), default="full")
    p.add_argument("--checks", default=",".join(CHECKS),
                   help="comma-separated subset of %(default)s")
    p.add_argument("--out", help="also write the Markdown report to this file")
    p.add_argument("--json", help="also write the results as JSON to this file")
    p.add_argument("--timeout", type=float, default=None,
                   help="seconds before one check's process is killed "
                        "(default 1800 at full scale, 300 at small)")
    p.add_argument("--note", action="append", default=[],
                   help="a remark on the run's conditions for the report (repeatable)")
    p.add_argument("--nofile", type=int, default=NOFILE_LIMIT,
                   help="descriptor limit (soft and hard) of every check's process "
                        "(default %(default)s, issue 14's; another value is for "
                        "diagnosis only and the report says so)")
    p.add_argument("--child", choices=BACKENDS, help=argparse.SUPPRESS)
    p.add_argument("--spill-dir", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    checks = [c.strip() for c in args.checks.split(",") if c.strip()]
    bad = [c for c in checks if c not in CHECKS]
    if bad or not checks:
        p.error(f"unknown check(s): {', '.join(bad) or args.checks!r} "
                f"(choose from {', '.join(CHECKS)})")
    if args.child:
        return run_child(args.child, checks[0], args.scale, args.spill_dir)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown or not backends:
        p.error(f"unknown backend(s): {', '.join(unknown) or args.backends!r}")
    timeout = args.timeout or (1800 if args.scale == "full" else 300)

    notes = list(args.note)
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and args.nofile > hard:
        p.error(f"--nofile {args.nofile} is above this shell's hard limit ({hard})")
    if args.nofile != NOFILE_LIMIT:
        notes.insert(0, f"**Run with `--nofile {args.nofile}`, not under issue 14's "
                        f"limit of {NOFILE_LIMIT} descriptors.**")
        NOFILE_LIMIT = args.nofile
    results: dict[tuple[str, str], Outcome] = {}
    for b in backends:
        if importlib.util.find_spec(b) is None:
            notes.append(f"{LABELS[b]} is not installed: not run")
            for c in checks:
                results[(b, c)] = Outcome(b, c, status="skipped")
    # One check at a time, each on every backend in turn (so a long run has
    # side-by-side figures early).
    for c in checks:
        for b in backends:
            if (b, c) in results:
                continue
            log(f"[{b} {c}] {describe(CHECKS[c], args.scale)}")
            results[(b, c)] = run_one(b, c, args.scale, timeout)
            o = results[(b, c)]
            log(f"[{b} {c}] {'PASS' if o.passed else o.status.upper()} in {o.wall_s:.1f} s; "
                f"max fds {o.max_fds} ({o.max_fds_proc}), /dev/shm {o.max_shm_fds} "
                f"({o.max_shm_fds_proc})" + (f"; {o.error}" if o.error else "")
                + "".join(f"; {n}" for n in o.notes))
    report = render(results, backends, checks, args.scale, notes)
    print(report)
    for path, text in ((args.out, report), (args.json, json.dumps(
            {"scale": args.scale, "nofile_limit": NOFILE_LIMIT,
             "max_store_fds": MAX_STORE_FDS,
             "results": [asdict(o) for o in results.values()]}, indent=1))):
        if path:
            path = os.path.abspath(path)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as fh:
                fh.write(text)
            log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
