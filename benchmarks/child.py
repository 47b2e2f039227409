"""The child process: run one backend's workloads in this fresh process and
print a record (``records.emit``) for every result.

``core.py --child BACKEND`` lands in ``run_child``.  Startup and the first
large put are measured first, once per process; then, unless
``--startup-only``, every workload of the chosen suites that applies to the
backend: warm-ups, then ``--repeat`` timed runs; the two-host workloads on a
restarted cluster; the spill workloads last (each run restarts the backend).
A failing workload is reported and the next one still runs.
"""

from __future__ import annotations

import gc
import time

from backends import ADAPTERS, Backend
from moto_server import stop_moto
from records import emit
from tasks import add, noop
from workloads import STARTUP, SUITES, WORKLOADS, Workload, now
from workloads.objects import (FIRST_PUT_PAUSE_S, LARGE_BYTES, TWO_HOSTS, first_put,
                           large_array)


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
              suites: tuple[str, ...] = SUITES,
              only: tuple[str, ...] | None = None) -> int:
    try:
        b = ADAPTERS[backend]()
    except ImportError as e:
        emit(kind="unavailable", reason=f"{type(e).__name__}: {e}")
        return 0
    emit(kind="meta", version=b.version())
    try:
        run_workloads(b, repeat, startup_only, suites, only)
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
                  suites: tuple[str, ...] = SUITES,
                  only: tuple[str, ...] | None = None) -> None:
    """``only``: names of the workloads to run (``first_put``: the first put of
    the process), or None for all of the suites'."""
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
    if "objects" in suites and (only is None or "first_put" in only):
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
    chosen = [w for w in WORKLOADS if w.suite in suites and w.applies(b.name)
              and (only is None or w.name in only)]
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
