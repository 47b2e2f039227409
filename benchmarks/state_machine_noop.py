"""No-op tasks through the scheduler's pure state machine (no processes, no sockets):
submit, schedule, done and the driver's decref, in batches of 256 over 8 workers of 4
CPUs; prints tasks/s of each run, sorted. What one task costs the state machine alone,
for comparing commits (the end-to-end rows of core.py also carry the runtime, comms and
workers, and swing ±1.7x on a shared machine).

    python benchmarks/state_machine_noop.py [runs=3] [tasks=100000]
"""
from __future__ import annotations

import itertools
import sys
import time

from graphstore.core import protocol as msg
from graphstore.scheduler.state import SchedulerState

DRIVER, FUNCTION = b"D" * 16, b"F" * 16


def run(tasks: int = 100_000, workers: int = 8, batch: int = 256) -> float:
    s = SchedulerState()
    s.add_driver(DRIVER)
    s.register_function(msg.RegisterFunction(FUNCTION, b"code"))
    for i in range(workers):
        s.add_worker(msg.RegisterWorker(i.to_bytes(16, "big"), 100 + i, "host",
                                        f"node-{i}", 4.0, {}, f"tcp://w:{i}", 10**9))
    ids = (n.to_bytes(16, "big") for n in itertools.count(10**6))
    start = time.perf_counter()
    done = 0
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
            for task_id, result in pending:
                task = s.tasks[task_id]
                if task.state == "assigned":
                    s.task_done(task.worker.id, msg.TaskDone(
                        task_id, [[result, [b"x"], [], 1, None]], 0.001))
                    s.decref(DRIVER, [result])
                    done += 1
            pending = [p for p in pending if p[0] in s.tasks]
            s.outbox = []
    return tasks / (time.perf_counter() - start)


if __name__ == "__main__":
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    tasks = int(sys.argv[2]) if len(sys.argv) > 2 else 100_000
    rates = sorted(run(tasks) for _ in range(runs))
    print("tasks/s", " ".join(f"{r:,.0f}" for r in rates))
