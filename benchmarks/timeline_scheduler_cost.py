#!/usr/bin/env python
"""What recording the timeline costs the scheduler per task, with no process and no socket.

The scheduler is the busiest process of a no-op task flood (about two thirds of the
cluster's CPU per task), and on a shared machine the end-to-end figures of
``timeline_cost.py`` swing more than the cost itself. This drives the pure
``SchedulerState`` as the server does: no-op tasks of one driver on two workers are
submitted and scheduled, and their ``TaskDone`` messages, in batches as a worker's
connection delivers them, are encoded to wire bytes, then decoded and applied
(``task_done``) and the driver's refs dropped (``decref``). Only the decode, done and
decref steps are timed, in thread CPU time (other processes' load does not count).

With recording on, each ``TaskDone`` carries what a recording worker sends (the run's
start time; before the compact form, the run's span as an event list); off, nothing.
With ``--fetches N`` each task also reports N argument fetches, spans the scheduler
checks one by one. Modes alternate (on, off, off, on, ...) in one process; the table
gives microseconds of CPU per task, the median and the best of the runs.

Run: python benchmarks/timeline_scheduler_cost.py [--runs 6] [--tasks 60000] [--fetches 0]
"""
from __future__ import annotations

import argparse
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


def run(recording: bool, tasks: int, fetches: int, workers: int = 2,
        batch: int = 256) -> float:
    """Microseconds of thread CPU per task for decode, task_done and decref."""
    s = SchedulerState()
    s.add_driver(DRIVER)
    s.register_function(msg.RegisterFunction(FUNCTION, b"code"))
    for i in range(workers):
        s.add_worker(msg.RegisterWorker(i.to_bytes(16, "big"), 100 + i, "host",
                                        f"node-{i}", 4.0, {}, f"tcp://w:{i}", 10**9))
    ids = (n.to_bytes(16, "big") for n in itertools.count(10**6))
    done, spent = 0, 0.0
    while done < tasks:
        pending = []
        for _ in range(batch):
            task_id, result = next(ids), next(ids)
            s.submit(DRIVER, msg.SubmitTask(task_id, FUNCTION, "noop", None, [], [],
                                            [result], 1.0, None, 0))
            pending.append((task_id, result))
        while pending:
            s.schedule()
            s.outbox = []
            by_worker: dict[bytes, list] = {}
            for task_id, result in pending:
                task = s.tasks[task_id]
                if task.state == "assigned":
                    by_worker.setdefault(task.worker.id, []).append(
                        (result, _outcome(task_id, result, recording, fetches)))
            wire = [(worker, [r for r, _ in items],
                     msg.encode_batch([m for _, m in items])[1])
                    for worker, items in by_worker.items()]
            start = time.thread_time()
            for worker, results, header in wire:
                for result, m in zip(results, msg.decode_header(header, [])):
                    s.task_done(worker, m)
                    s.decref(DRIVER, [result])
            spent += time.thread_time() - start
            done += sum(len(results) for _, results, _ in wire)
            pending = [p for p in pending if p[0] in s.tasks]
            s.outbox = []
    return spent / done * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=6, help="runs per mode")
    parser.add_argument("--tasks", type=int, default=60_000)
    parser.add_argument("--fetches", type=int, default=0,
                        help="argument fetch spans each task reports")
    args = parser.parse_args()
    samples: dict[str, list[float]] = {"on": [], "off": []}
    for number in range(args.runs):
        for mode in (("on", "off") if number % 2 == 0 else ("off", "on")):
            samples[mode].append(run(mode == "on", args.tasks, args.fetches))
    off_m, on_m = statistics.median(samples["off"]), statistics.median(samples["on"])
    off_b, on_b = min(samples["off"]), min(samples["on"])
    print(f"{args.tasks:,} no-op tasks per run, {args.runs} runs per mode, "
          f"{args.fetches} fetch span(s) per task, "
          f"{'compact run spans' if COMPACT else 'run spans as event lists'}\n")
    print("| scheduler CPU per task (decode, done, decref) | off | on | on - off |")
    print("| --- | ---: | ---: | ---: |")
    print(f"| median, µs | {off_m:.2f} | {on_m:.2f} | {on_m - off_m:+.2f} "
          f"({(on_m / off_m - 1) * 100:+.1f}%) |")
    print(f"| best, µs | {off_b:.2f} | {on_b:.2f} | {on_b - off_b:+.2f} "
          f"({(on_b / off_b - 1) * 100:+.1f}%) |")


if __name__ == "__main__":
    main()
