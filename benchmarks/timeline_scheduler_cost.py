#!/usr/bin/env python
"""What recording the timeline costs the scheduler per task, with no process and no socket.

The scheduler is the busiest process of a no-op task flood (about two thirds of the
cluster's CPU per task), and on a shared machine the end-to-end figures of
``timeline_cost.py`` swing more than the cost itself. This drives the pure
``SchedulerState`` as the server does: no-op tasks of one driver on two workers are
submitted and placed, and their ``TaskDone`` messages, in batches as a worker's
connection delivers them, are encoded to wire bytes, then decoded and applied
(``task_done``) and the driver's refs dropped (``decref``). Only the decode, done and
decref steps are timed, in thread CPU time (time other processes run does not count).

With recording on, each ``TaskDone`` carries what a recording worker sends (the run's
start time; before the compact form, the run's span as an event list); off, nothing.
With ``--fetches N`` each task also reports N argument fetches, spans the scheduler
checks one by one; with ``--deps N`` each task reads N objects made by earlier tasks
(the trace's arrows come from their producers). Two schedulers, one recording and one
not, run side by side in one process, each batch applied to both in alternating order,
so a change in the machine's load falls on both alike; the table gives microseconds of
CPU per task, the median and the best of ``--runs`` runs, and of the runs' paired
differences. The cyclic garbage collector is off while they run (the server's
``gc_policy`` runs few collections; their share is in ``timeline_cost.py``).

Run: python benchmarks/timeline_scheduler_cost.py [--runs 6] [--tasks 60000] [--fetches 0]
     [--deps 0]
"""
from __future__ import annotations

import argparse
import gc
import itertools
import statistics
import time

from graphstore.core import protocol as msg
from graphstore.scheduler.state import SchedulerState

DRIVER, FUNCTION = b"D" * 16, b"F" * 16
#: Whether this checkout's outcomes carry the run's start (the compact form).
COMPACT = "started" in msg.TaskDone._fields


def _outcome(task_id: bytes, result: bytes, recording: bool, fetches: int) -> msg.TaskDone:
    results = [[result, [b"x"], [], 1, None]]
    if not recording:
        return msg.TaskDone(task_id, results, 0.001)
    started = time.time()
    events = [["fetch", "ab" * 16, started, started + 1e-5, 4242, task_id, 1024,
               "tcp://127.0.0.1:1"] for _ in range(fetches)]
    if COMPACT:
        return msg.TaskDone(task_id, results, 0.001, events or None, started)
    events.append(["task", "noop", started, started + 0.001, 4242, task_id, 0, ""])
    return msg.TaskDone(task_id, results, 0.001, events)


class _Scheduler:
    """One ``SchedulerState`` fed no-op tasks in batches, recording on or off."""

    def __init__(self, recording: bool, fetches: int, deps: int, workers: int = 2,
                 batch: int = 256):
        self.recording, self.fetches, self.batch = recording, fetches, batch
        s = self.state = SchedulerState()
        s.add_driver(DRIVER)
        s.register_function(msg.RegisterFunction(FUNCTION, b"code"))
        for i in range(workers):
            # CPUs for a whole batch: every task of it is placed by one schedule().
            s.add_worker(msg.RegisterWorker(i.to_bytes(16, "big"), 100 + i, "host",
                                            f"node-{i}", float(batch), {}, f"tcp://w:{i}",
                                            10**9))
        self.ids = (n.to_bytes(16, "big") for n in itertools.count(10**6))
        self.sources = []                # results of earlier tasks, held by the driver
        for _ in range(deps):
            task_id, result = next(self.ids), next(self.ids)
            s.submit(DRIVER, msg.SubmitTask(task_id, FUNCTION, "source", None, [], [],
                                            [result], 1.0, None, 0))
            s.schedule()
            s.task_done(s.tasks[task_id].worker.id, _outcome(task_id, result, recording, 0))
            self.sources.append(result)
        s.outbox = []

    def prepare(self) -> list:
        """Submit and schedule a batch; its outcomes as the workers' connections deliver
        them: [(worker, results, wire bytes)]."""
        s, pending = self.state, []
        for _ in range(self.batch):
            task_id, result = next(self.ids), next(self.ids)
            s.submit(DRIVER, msg.SubmitTask(task_id, FUNCTION, "noop", None, self.sources,
                                            [], [result], 1.0, None, 0))
            pending.append((task_id, result))
        s.schedule()
        s.outbox = []
        by_worker: dict[bytes, list] = {}
        for task_id, result in pending:
            task = s.tasks[task_id]
            by_worker.setdefault(task.worker.id, []).append(
                (result, _outcome(task_id, result, self.recording, self.fetches)))
        return [(worker, [r for r, _ in items], msg.encode_batch([m for _, m in items])[1])
                for worker, items in by_worker.items()]

    def apply(self, wire: list) -> float:
        """Decode and apply the batch, drop the driver's refs: thread CPU seconds."""
        s = self.state
        start = time.thread_time()
        for worker, results, header in wire:
            for result, m in zip(results, msg.decode_header(header, [])):
                s.task_done(worker, m)
                s.decref(DRIVER, [result])
        spent = time.thread_time() - start
        s.outbox = []
        return spent


def run(tasks: int, fetches: int, deps: int = 0, batch: int = 256) -> dict[str, float]:
    """Microseconds of thread CPU per task (decode, task_done, decref), recording on and
    off: two schedulers side by side, each batch applied to both in alternating order,
    so a change in the machine's load falls on both alike."""
    schedulers = {mode: _Scheduler(mode == "on", fetches, deps, batch=batch)
                  for mode in ("on", "off")}
    spent = dict.fromkeys(schedulers, 0.0)
    steps = max(1, tasks // batch)
    for step in range(steps):
        for mode in (("on", "off") if step % 2 == 0 else ("off", "on")):
            scheduler = schedulers[mode]
            spent[mode] += scheduler.apply(scheduler.prepare())
    return {mode: seconds / (steps * batch) * 1e6 for mode, seconds in spent.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=6)
    parser.add_argument("--tasks", type=int, default=60_000)
    parser.add_argument("--fetches", type=int, default=0,
                        help="argument fetch spans each task reports")
    parser.add_argument("--deps", type=int, default=0,
                        help="arguments each task reads, made by earlier tasks")
    args = parser.parse_args()
    samples: dict[str, list[float]] = {"on": [], "off": []}
    gc.disable()        # the server runs few collections (gc_policy); none here
    try:
        for _ in range(args.runs):
            for mode, value in run(args.tasks, args.fetches, args.deps).items():
                samples[mode].append(value)
            gc.collect()
    finally:
        gc.enable()
    on, off = samples["on"], samples["off"]
    diffs = [a - b for a, b in zip(on, off)]
    print(f"{args.tasks:,} no-op tasks per run, {args.runs} runs, "
          f"{args.fetches} fetch span(s) and {args.deps} argument(s) per task, "
          f"{'compact run spans' if COMPACT else 'run spans as event lists'}\n")
    print("| scheduler CPU per task (decode, done, decref) | off | on | on - off (paired) |")
    print("| --- | ---: | ---: | ---: |")
    off_m = statistics.median(off)
    print(f"| median, µs | {off_m:.2f} | {statistics.median(on):.2f} | "
          f"{statistics.median(diffs):+.2f} ({statistics.median(diffs) / off_m * 100:+.1f}%) |")
    print(f"| best, µs | {min(off):.2f} | {min(on):.2f} | {min(diffs):+.2f} |")


if __name__ == "__main__":
    main()
