#!/usr/bin/env python
"""What recording the timeline costs: no-op tasks and actor calls with and without it.

Issue 17 allows recording at most 5% of the no-op task rate. Each mode has its own
local cluster of two one-CPU workers, started by a child process (this script with
``--serve on|off``, ``GRAPHSTORE_RECORD_TIMELINE`` set for the whole cluster). Both
clusters are up at once, idle but for the one measuring, and take turns batch by batch
(on, off, off, on, ...), so a change of the machine's load between two batches falls
on both alike. The batches, each warmed up once and timed ``--repeat`` times per mode:

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

``--rounds`` pairs of fresh clusters run one after the other. The first table shows, per
mode, the median of all samples and the best one (the highest rate, the least CPU):
other processes on the machine only ever make a sample worse, so the best is the least
disturbed. The cost of recording is off ÷ on - 1 for rates and on ÷ off - 1 for CPU
time, for the medians and for the bests, and, paired, the median over the pairs of
neighbouring batches of the two modes.

``--control`` runs the same with recording off in both clusters: the differences it
shows are the benchmark's own noise.

Run: python benchmarks/timeline_cost.py [--rounds 3] [--repeat 5] [--control]
     python benchmarks/timeline_cost.py --child on|off [--repeat 5]   (one mode alone)
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


def _cluster(mode: str):
    """Start this process's cluster; its measured batches by workload name."""
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
    return {name: (lambda submit=submit: measured(submit))
            for name, submit in workloads.items()}


def _print_samples(mode: str, name: str, samples: list) -> None:
    print(RESULT + json.dumps({"mode": mode, "metric": name + "_per_s",
                               "samples": [s[0] for s in samples]}), flush=True)
    print(RESULT + json.dumps({"mode": mode, "metric": name + "_cpu_us",
                               "samples": [s[1] for s in samples]}), flush=True)
    for role in ROLES:
        print(RESULT + json.dumps({"mode": mode, "metric": f"{name}_{role}_us",
                                   "samples": [s[2][role] for s in samples]}), flush=True)


def _print_spans(mode: str) -> None:
    """What was recorded: proof the mode took effect."""
    import graphstore
    events = sum(1 for e in graphstore.timeline() if e["ph"] == "X")
    print(RESULT + json.dumps({"mode": mode, "metric": "spans", "samples": [events]}),
          flush=True)


def child(mode: str, repeat: int) -> None:
    """One mode alone: every workload, warmed up, then ``repeat`` samples."""
    import graphstore
    batches = _cluster(mode)
    try:
        for name, measured in batches.items():
            measured()                                  # warm-up
            _print_samples(mode, name, [measured() for _ in range(repeat)])
        if mode == "on":
            _print_spans(mode)
    finally:
        graphstore.shutdown()


def serve(mode: str) -> None:
    """One mode's cluster, measuring a batch each time a workload's name comes on
    stdin (its samples on stdout), until "quit" or the end of stdin."""
    import graphstore
    batches = _cluster(mode)
    try:
        for measured in batches.values():
            measured()                                  # warm-up
        print("READY", flush=True)
        for line in sys.stdin:
            name = line.strip()
            if name == "quit":
                break
            if name == "spans":
                _print_spans(mode)
            else:
                _print_samples(mode, name, [batches[name]()])
    finally:
        graphstore.shutdown()


class _Server:
    """A ``--serve`` child, driven line by line; ``recording``: the cluster records the
    timeline (False for both modes in a control run)."""

    def __init__(self, mode: str, recording: bool):
        env = {**os.environ, "GRAPHSTORE_RECORD_TIMELINE": "1" if recording else "0"}
        self.mode = mode
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--serve", mode], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, text=True, env=env)

    def read_until(self, marker: str) -> list[str]:
        lines = []
        for line in self.process.stdout:
            if line.startswith(marker):
                return lines + [line]
            lines.append(line)
        raise SystemExit(f"the {self.mode} cluster ended early (exit "
                         f"{self.process.wait()})")

    def ask(self, name: str) -> list[str]:
        self.process.stdin.write(name + "\n")
        self.process.stdin.flush()
        if name == "spans":
            return self.read_until(RESULT)
        lines = [self.read_until(RESULT)[-1]]
        lines += [self.process.stdout.readline() for _ in range(1 + len(ROLES))]
        return lines

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.process.stdin.write("quit\n")
                self.process.stdin.close()
            except OSError:
                pass
            try:
                self.process.wait(timeout=120)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _spread(values: list[float], unit: str) -> str:
    """The median of ``values`` and the range of their middle half."""
    if len(values) < 4:
        return f"{statistics.median(values):+.1f}{unit}"
    low, middle, high = statistics.quantiles(values, n=4)
    return f"{middle:+.1f}{unit} ({low:+.1f} to {high:+.1f})"


LABELS = {"noop_tasks": f"{N:,} no-op tasks, submit all then get",
          "actor_calls": f"{N:,} actor calls, submit all then get"}


def _collect(lines: list[str], results: dict) -> None:
    for line in lines:
        if line.startswith(RESULT):
            record = json.loads(line[len(RESULT):])
            results.setdefault((record["mode"], record["metric"]), []).extend(
                record["samples"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--child", choices=["on", "off"])
    parser.add_argument("--serve", choices=["on", "off"])
    parser.add_argument("--control", action="store_true",
                        help="record in neither cluster: what the benchmark shows of no "
                             "difference (its noise)")
    args = parser.parse_args()
    if args.child:
        child(args.child, args.repeat)
        return
    if args.serve:
        serve(args.serve)
        return
    results: dict = {}
    turn = 0
    for number in range(args.rounds):
        modes = ("on", "off") if number % 2 == 0 else ("off", "on")
        servers = {}
        try:
            for mode in modes:
                servers[mode] = _Server(mode, mode == "on" and not args.control)
            for server in servers.values():
                server.read_until("READY")
            for name in LABELS:
                for _ in range(args.repeat):
                    for mode in (("on", "off") if turn % 2 == 0 else ("off", "on")):
                        _collect(servers[mode].ask(name), results)
                    turn += 1
            _collect(servers["on"].ask("spans"), results)
        finally:
            for server in servers.values():
                server.close()
    spans = int(statistics.median(results[("on", "spans")]))
    print(("Control run: neither cluster records; " if args.control else "")
          + f"recording on: {spans:,} spans in the trace after each run; {args.rounds} "
          f"rounds of {args.repeat} samples per mode, the two modes' clusters taking "
          f"turns.\n")
    print("| workload | figure | off: median | on: median | cost (medians) | off: best | "
          "on: best | cost (bests) | cost (paired: median, middle half) |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for metric, label in LABELS.items():
        for suffix, figure, best, cost in (
                ("_per_s", "rate (per s)", max, lambda off, on: off / on - 1),
                ("_cpu_us", "cluster CPU µs per item", min, lambda off, on: on / off - 1)):
            off, on = results[("off", metric + suffix)], results[("on", metric + suffix)]
            off_m, on_m = statistics.median(off), statistics.median(on)
            off_b, on_b = best(off), best(on)
            print(f"| {label} | {figure} | {off_m:,.1f} | {on_m:,.1f} | "
                  f"{cost(off_m, on_m) * 100:+.1f}% | {off_b:,.1f} | {on_b:,.1f} | "
                  f"{cost(off_b, on_b) * 100:+.1f}% | "
                  f"{_spread([cost(a, b) * 100 for a, b in zip(off, on)], '%')} |")
    print("\nCPU per item by process (µs, from the kernel's per-thread run time):\n")
    print("| workload | process | off: median | on: median | on - off | off: best | "
          "on: best | on - off | on - off (paired: median, middle half) |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for metric, label in LABELS.items():
        for role in ROLES:
            off, on = (results.get(("off", f"{metric}_{role}_us")),
                       results.get(("on", f"{metric}_{role}_us")))
            if not off or not on or max(off) < 0.5:
                continue
            off_m, on_m, off_b, on_b = (statistics.median(off), statistics.median(on),
                                        min(off), min(on))
            print(f"| {label} | {role} | {off_m:.2f} | {on_m:.2f} | {on_m - off_m:+.2f} | "
                  f"{off_b:.2f} | {on_b:.2f} | {on_b - off_b:+.2f} | "
                  f"{_spread([b - a for a, b in zip(off, on)], '')} |")


if __name__ == "__main__":
    main()
