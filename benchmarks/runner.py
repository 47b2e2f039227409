"""The parent's side: run each backend in fresh child processes, one at a
time, and collect their records into a ``BackendResult``.

A child is ``core.py --child BACKEND`` in a new session (so that on timeout
it is killed with the cluster processes it started).  Startup and the first
large put need one fresh process per sample, so a backend gets ``--repeat``
children for the core and objects suites (the first runs every workload, the
others only those per-process measurements) and one otherwise.  Progress and
raw samples go to stderr (``log``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import statistics
import subprocess
import sys
from dataclasses import dataclass, field

from backends import BACKEND_MODULES
from records import RESULT_PREFIX
from workloads import PER_PROCESS_SUITES, SUITES, WORKLOADS, Metric

# What each child runs (with ``--child``): the entry point beside this file.
SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "core.py")


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
                      timeout: float, suites: tuple[str, ...] = SUITES,
                      only: tuple[str, ...] | None = None
                      ) -> tuple[list[dict], str | None]:
    """Run one child; return its JSON records and an error message (or None)."""
    cmd = [sys.executable, SCRIPT, "--child", backend,
           "--repeat", str(repeat), "--suite", ",".join(suites)]
    if only:
        cmd += ["--workloads", ",".join(only)]
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
                suites: tuple[str, ...] = SUITES,
                only: tuple[str, ...] | None = None) -> BackendResult:
    """``only``: the names of the workloads to run (``first_put`` included), or all."""
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
    if only is not None:    # per-process samples only for what was asked
        per_process = "first_put" in only and "objects" in suites

    # Startup (core suite) and the first large put (objects suite) need one
    # fresh process per sample: `repeat` children, the first also running
    # every workload, the others only these per-process measurements.  The
    # spill suite alone needs one child.
    children = repeat if per_process else 1
    for i in range(children):
        log(f"[{backend}] child {i + 1}/{children}"
            + (" (all workloads)" if i == 0 else " (fresh-process measurements only)"))
        records, error = run_child_process(backend, repeat, startup_only=i > 0,
                                           timeout=timeout, suites=suites, only=only)
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
