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

Usage::

    python benchmarks/core.py [--backends graphstore,ray,dask] [--repeat N]
                              [--out docs/benchmarks.md]
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
import statistics
import subprocess
import sys
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


@dataclass(frozen=True)
class Workload:
    name: str
    fn: Callable[[Backend, int], dict[str, float]]
    size: int          # size of each timed run
    warmup_size: int   # size of the untimed warm-up run
    metrics: tuple[Metric, ...]
    description: str


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


STARTUP = Metric("startup_s", "Startup: init() to first task result", "s",
                 higher_is_better=False)

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
]

ALL_METRICS: list[Metric] = [STARTUP] + [m for w in WORKLOADS for m in w.metrics]


# --------------------------------------------------------------------------
# Child process: run one backend, print JSON records.
# --------------------------------------------------------------------------

def emit(**record: Any) -> None:
    print(RESULT_PREFIX + json.dumps(record), flush=True)


def sanity_check(b: Backend) -> None:
    """Untimed check that the adapter's whole API behaves like Ray's."""
    f, add_f = b.remote(noop), b.remote(add)
    refs = [b.submit(f) for _ in range(4)]
    ready, not_ready = b.wait(refs, num_returns=len(refs), timeout=60)
    assert len(ready) == len(refs) and not not_ready, (ready, not_ready)
    x = b.put(20)
    assert b.get(b.submit(add_f, x, 22)) == 42
    assert b.get([x, b.put(b"ab")]) == [20, b"ab"]


def run_child(backend: str, repeat: int, startup_only: bool) -> int:
    try:
        b = ADAPTERS[backend]()
    except ImportError as e:
        emit(kind="unavailable", reason=f"{type(e).__name__}: {e}")
        return 0
    emit(kind="meta", version=b.version())
    try:
        run_workloads(b, repeat, startup_only)
    except Exception as e:
        emit(kind="error", workload="startup", message=f"{type(e).__name__}: {e}")
        return 1
    finally:
        try:
            b.shutdown()
        except Exception as e:
            emit(kind="error", workload="shutdown", message=f"{type(e).__name__}: {e}")
    return 0


def run_workloads(b: Backend, repeat: int, startup_only: bool) -> None:
    # 1. Startup: the first thing this fresh process does with the backend.
    #    (Creating the remote function is not part of it, as with a
    #    module-level @remote decorator.)
    f = b.remote(noop)
    t0 = now()
    b.init()
    b.get(b.submit(f))
    emit(kind="samples", metric=STARTUP.key, values=[now() - t0])
    if startup_only:
        return

    try:
        sanity_check(b)
    except Exception as e:  # report, but still try the workloads
        emit(kind="error", workload="sanity_check", message=f"{type(e).__name__}: {e}")

    # 2. Timed workloads: one small untimed warm-up, then `repeat` timed runs.
    #    A failing workload is reported and the next one still runs.
    for w in WORKLOADS:
        try:
            w.fn(b, w.warmup_size)
            samples: dict[str, list[float]] = {m.key: [] for m in w.metrics}
            for _ in range(repeat):
                gc.collect()
                for key, value in w.fn(b, w.size).items():
                    samples[key].append(value)
            for key, values in samples.items():
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


def run_child_process(backend: str, repeat: int, startup_only: bool,
                      timeout: float) -> tuple[list[dict], str | None]:
    """Run one child; return its JSON records and an error message (or None)."""
    cmd = [sys.executable, os.path.abspath(__file__), "--child", backend,
           "--repeat", str(repeat)]
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


def run_backend(backend: str, repeat: int, timeout: float) -> BackendResult:
    result = BackendResult(backend)
    if importlib.util.find_spec(BACKEND_MODULES[backend]) is None:
        result.status = "skipped"
        result.notes.append(f"`{BACKEND_MODULES[backend]}` is not importable "
                            '(install with `pip install -e ".[bench]"`)')
        return result

    for i in range(repeat):
        log(f"[{backend}] child {i + 1}/{repeat}"
            + (" (all workloads)" if i == 0 else " (startup only)"))
        records, error = run_child_process(backend, repeat, startup_only=i > 0,
                                           timeout=timeout)
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


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def fmt_value(value: float | None, metric: Metric) -> str:
    if value is None:
        return "—"
    if metric.unit == "s":
        return f"{value:.2f} s"
    return f"{value:,.0f}"


def fmt_ratio(gs: float | None, other: float | None) -> str:
    if gs is None or other is None or other == 0:
        return "n/a"
    return f"{gs / other:.3g}×"


def render_report(results: dict[str, BackendResult], repeat: int) -> str:
    shown = [b for b in ALL_BACKENDS if b in results]
    gs = results.get("graphstore")
    versions = ", ".join(
        f"{BACKEND_LABELS[b]} {results[b].version or '(unknown)'}"
        for b in shown if results[b].status != "skipped")
    lines = [
        "# graphstore core benchmarks",
        "",
        f"- Date: {datetime.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}",
        f"- Versions: {versions or 'none ran'}; Python {platform.python_version()}",
        f"- Machine: {platform.system()} {platform.machine()}, "
        f"{os.cpu_count()} CPUs, {_mem_gib()} GiB RAM",
        f"- Each backend ran in its own fresh process, one at a time. "
        f"Each value is the median of {repeat} run(s) after an untimed warm-up; "
        f"startup was measured once in each of {repeat} fresh process(es).",
    ]
    ratio_vs = [b for b in ("ray", "dask") if b in results and gs is not None]
    if ratio_vs:
        lines.append("- Ratios are graphstore ÷ other. For rates higher is better, so a "
                     "ratio > 1 means graphstore is faster; for startup time lower is "
                     "better, so a ratio < 1 means graphstore is faster.")
    lines += ["- Generated by `python benchmarks/core.py`.", ""]
    header = ["Workload", "Unit"] + [BACKEND_LABELS[b] for b in shown]
    header += [f"graphstore/{BACKEND_LABELS[b]}" for b in ratio_vs]
    if ratio_vs:
        header.append("Ratio better if")
    lines.append("| " + " | ".join(header) + " |")
    align = ["---", "---"] + ["---:"] * (len(shown) + len(ratio_vs))
    if ratio_vs:
        align.append(":---:")
    lines.append("|" + "|".join(align) + "|")
    for m in ALL_METRICS:
        row = [m.label, m.unit]
        row += [fmt_value(results[b].median(m.key), m) for b in shown]
        gs_value = gs.median(m.key) if gs else None
        row += [fmt_ratio(gs_value, results[b].median(m.key)) for b in ratio_vs]
        if ratio_vs:
            row.append("> 1 (higher is better)" if m.higher_is_better
                       else "< 1 (lower time is better)")
        lines.append("| " + " | ".join(row) + " |")

    notes = [f"- **{BACKEND_LABELS[b]}**"
             + (f" {results[b].status}" if results[b].status != "ok" else "")
             + f": {n}"
             for b in shown for n in results[b].notes]
    if notes:
        lines += ["", "## Notes", ""] + notes

    lines += ["", "## Workloads", "",
              "- **startup**: from the `init()` call (Ray: `ray.init(num_cpus=cpu_count, "
              "include_dashboard=False)`; Dask: `LocalCluster(n_workers=cpu_count, "
              "threads_per_worker=1, processes=True)` + `Client`) to the first result "
              "of a trivial remote task, as the first thing a fresh process does."]
    lines += [f"- **{w.name}**: {w.description}" for w in WORKLOADS]

    lines += ["", "<details><summary>All samples</summary>", "", "```"]
    for b in shown:
        for key, values in results[b].samples.items():
            lines.append(f"{b:<10} {key:<20} " + "  ".join(f"{v:.4g}" for v in values))
    lines += ["```", "", "</details>", ""]
    return "\n".join(lines)


def _mem_gib() -> str:
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        return f"{pages / 2**30:.0f}"
    except (ValueError, OSError, AttributeError):
        return "?"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backends", default=",".join(ALL_BACKENDS),
                   help="comma-separated subset of: %(default)s")
    p.add_argument("--repeat", type=int, default=3,
                   help="timed runs per workload; the median is reported (default 3)")
    p.add_argument("--out", help="also write the Markdown report to this file")
    p.add_argument("--timeout", type=float, default=1800,
                   help="seconds before a backend's child process is killed (default 1800)")
    p.add_argument("--child", choices=ALL_BACKENDS, help=argparse.SUPPRESS)
    p.add_argument("--startup-only", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.repeat < 1:
        p.error("--repeat must be >= 1")

    if args.child:
        return run_child(args.child, args.repeat, args.startup_only)

    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = [b for b in backends if b not in ALL_BACKENDS]
    if unknown:
        p.error(f"unknown backend(s): {', '.join(unknown)}")

    results = {b: run_backend(b, args.repeat, args.timeout) for b in backends}
    report = render_report(results, args.repeat)
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
