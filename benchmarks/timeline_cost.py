#!/usr/bin/env python
"""What recording the timeline costs: no-op tasks and actor calls with and without it.

Issue 17 allows recording at most 5% of the no-op task rate. Each mode runs in a fresh
child process (this script with ``--child on|off``, ``GRAPHSTORE_RECORD_TIMELINE`` set
for the whole cluster): a local cluster of two one-CPU workers, then, each warmed up
once and timed ``--repeat`` times:

- 5,000 no-op tasks submitted at once, then all gathered (the core suite's no-op row);
- 5,000 calls on one actor submitted at once, then all gathered.

Each sample gives two figures: the rate (tasks or calls per second of wall clock), and
the CPU time all the cluster's processes (driver, scheduler, workers, actor) spent per
task or call. The rate is what the issue bounds; the CPU time is the same cost seen
through a less noisy lens: on a busy machine the rate moves with other processes' load,
the CPU time a task costs much less. A second table splits the CPU time by process
(scheduler, workers, actor process), read from the kernel's per-thread run time in
nanoseconds (``/proc/PID/task/*/schedstat``) rather than in 10 ms clock ticks, so a
difference of a microsecond per task shows, and where it is spent.

The modes alternate (on, off, off, on, ...) for ``--rounds`` rounds, so both see the
same machine load. The table shows, per mode, the median of all samples and the best one
(the highest rate, the least CPU): other processes on the machine only ever make a sample
worse, so the best is the least disturbed. The cost of recording is off ÷ on - 1 for
rates and on ÷ off - 1 for CPU time, for the medians and for the bests.

Run: python benchmarks/timeline_cost.py [--rounds 3] [--repeat 5]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

RESULT = "TIMELINECOST "
N = 5000


#: Process roles of the second table, by the module a process runs.
ROLES = ("scheduler", "worker", "actor")


def _cluster_cpu_seconds() -> float:
    """User and system CPU time of this driver and every process it started."""
    import psutil
    me = psutil.Process()
    total = 0.0
    for process in [me, *me.children(recursive=True)]:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system + times.children_user + times.children_system
    return total


def _role(cmdline: list) -> str | None:
    line = " ".join(cmdline)
    if "graphstore.worker.actor_process" in line:
        return "actor"
    if "graphstore.worker" in line:
        return "worker"
    if "graphstore.scheduler" in line:
        return "scheduler"
    return None


def _thread_ns(pid: int) -> int | None:
    """Nanoseconds the threads of ``pid`` ran (None: no schedstat here). Threads that
    ended are not counted: the scheduler and workers keep theirs while tasks run."""
    total = 0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            continue
    return total


def _role_cpu_ns() -> dict:
    """Nanoseconds of CPU per role (scheduler, worker, actor), summed over processes."""
    import psutil
    out = dict.fromkeys(ROLES, 0)
    for process in psutil.Process().children(recursive=True):
        try:
            role = _role(process.cmdline())
        except psutil.NoSuchProcess:
            continue
        ns = _thread_ns(process.pid) if role else None
        if ns is not None:
            out[role] += ns
    return out


def child(mode: str, repeat: int) -> None:
    import graphstore
    graphstore.init(num_cpus=2, log_to_driver=False, dashboard_port=0)

    @graphstore.remote
    def noop():
        return None

    @graphstore.remote
    class Echo:
        def ping(self, x=None):
            return x

    actor = Echo.remote()
    graphstore.get(actor.ping.remote())

    def measured(submit):
        """[per second, CPU microseconds per item, {role: CPU µs per item}] of one
        batch."""
        roles, cpu, t0 = _role_cpu_ns(), _cluster_cpu_seconds(), time.perf_counter()
        graphstore.get(submit())
        wall, cpu = time.perf_counter() - t0, _cluster_cpu_seconds() - cpu
        after = _role_cpu_ns()
        return [N / wall, cpu / N * 1e6,
                {role: (after[role] - roles[role]) / N / 1e3 for role in ROLES}]

    workloads = {"noop_tasks": lambda: [noop.remote() for _ in range(N)],
                 "actor_calls": lambda: [actor.ping.remote(i) for i in range(N)]}
    try:
        for name, submit in workloads.items():
            measured(submit)                            # warm-up
            samples = [measured(submit) for _ in range(repeat)]
            print(RESULT + json.dumps({"mode": mode, "metric": name + "_per_s",
                                       "samples": [s[0] for s in samples]}), flush=True)
            print(RESULT + json.dumps({"mode": mode, "metric": name + "_cpu_us",
                                       "samples": [s[1] for s in samples]}), flush=True)
            for role in ROLES:
                print(RESULT + json.dumps({"mode": mode, "metric": f"{name}_{role}_us",
                                           "samples": [s[2][role] for s in samples]}),
                      flush=True)
        if mode == "on":    # what was recorded: proof the mode took effect
            events = sum(1 for e in graphstore.timeline() if e["ph"] == "X")
            print(RESULT + json.dumps({"mode": mode, "metric": "spans", "samples": [events]}),
                  flush=True)
    finally:
        graphstore.shutdown()


LABELS = {"noop_tasks": f"{N:,} no-op tasks, submit all then get",
          "actor_calls": f"{N:,} actor calls, submit all then get"}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--child", choices=["on", "off"])
    args = parser.parse_args()
    if args.child:
        child(args.child, args.repeat)
        return
    results: dict = {}
    for number in range(args.rounds):
        for mode in (("on", "off") if number % 2 == 0 else ("off", "on")):
            env = {**os.environ, "GRAPHSTORE_RECORD_TIMELINE": "1" if mode == "on" else "0"}
            out = subprocess.run([sys.executable, __file__, "--child", mode, "--repeat",
                                  str(args.repeat)], capture_output=True, text=True,
                                 timeout=1800, env=env)
            if out.returncode != 0:
                sys.exit(f"{mode} run failed:\n{out.stderr[-3000:]}")
            for line in out.stdout.splitlines():
                if line.startswith(RESULT):
                    record = json.loads(line[len(RESULT):])
                    results.setdefault((record["mode"], record["metric"]), []).extend(
                        record["samples"])
    print(f"Recording on: {int(statistics.median(results[('on', 'spans')])):,} spans in "
          f"the trace after each run; {args.rounds} rounds of {args.repeat} samples per "
          f"mode, alternating.\n")
    print("| workload | figure | off: median | on: median | cost (medians) | off: best | "
          "on: best | cost (bests) |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for metric, label in LABELS.items():
        for suffix, figure, best, cost in (
                ("_per_s", "rate (per s)", max, lambda off, on: off / on - 1),
                ("_cpu_us", "cluster CPU µs per item", min, lambda off, on: on / off - 1)):
            off, on = results[("off", metric + suffix)], results[("on", metric + suffix)]
            off_m, on_m = statistics.median(off), statistics.median(on)
            off_b, on_b = best(off), best(on)
            print(f"| {label} | {figure} | {off_m:,.1f} | {on_m:,.1f} | "
                  f"{cost(off_m, on_m) * 100:+.1f}% | {off_b:,.1f} | {on_b:,.1f} | "
                  f"{cost(off_b, on_b) * 100:+.1f}% |")
    print("\nCPU per item by process (µs, from the kernel's per-thread run time):\n")
    print("| workload | process | off: median | on: median | on - off | off: best | "
          "on: best | on - off |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for metric, label in LABELS.items():
        for role in ROLES:
            off, on = (results.get(("off", f"{metric}_{role}_us")),
                       results.get(("on", f"{metric}_{role}_us")))
            if not off or not on or max(off) == 0:
                continue
            off_m, on_m, off_b, on_b = (statistics.median(off), statistics.median(on),
                                        min(off), min(on))
            print(f"| {label} | {role} | {off_m:.2f} | {on_m:.2f} | {on_m - off_m:+.2f} | "
                  f"{off_b:.2f} | {on_b:.2f} | {on_b - off_b:+.2f} |")


if __name__ == "__main__":
    main()
