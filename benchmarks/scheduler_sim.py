#!/usr/bin/env python
"""The scheduler's state machine on simulated clusters far larger than this machine.

Issue 15: drives the pure ``SchedulerState`` (no processes, no sockets) through the same
handlers the server calls: workers register on simulated nodes (``add_worker``), a driver
submits tasks (``submit``), the state's ``outbox`` is consumed as the server would send
it, and each simulated worker finishes what it was sent after a modelled time (an event
heap of virtual time), reporting ``TaskDone`` back; the driver then drops its refs to
what finished (``decref``: one ``DecRef`` for all results of an instant, as a driver's
reference counter batches consecutive releases), so results are freed. Stored inputs
are modelled too: a task whose input has no copy on its node takes the transfer time
(size / bandwidth) longer, and its worker reports the copy it made (``object_added``),
as a real one would.

What it reports, for each worker count W:

``noop``
    N no-op tasks (1 ms each) queued at once, all run, results freed: scheduling
    decisions (tasks placed) per wall-clock second of the state machine's work.
``dag``
    a DAG of N tasks whose inputs are 1 MB objects spread over the workers: 1% of the
    tasks produce stored 1 MB results, the rest each take two of them at random
    (locality decisions), decisions per second as above.
``memory``
    scheduler memory per queued task (tracemalloc: the difference made by N tasks
    queued and not yet placed) and per finished-and-freed task (the difference made by
    N more tasks run and freed after the bounded history, ``history_size`` = 10,000
    finished tasks, is full).

Usage::

    python benchmarks/scheduler_sim.py                          # the issue's sizes
    python benchmarks/scheduler_sim.py --workers 10,1000 --tasks 100000 --dag-tasks 20000
    python benchmarks/scheduler_sim.py --only memory

Virtual time is only the order of events. The rates divide the tasks placed by the CPU
seconds (``time.thread_time``) spent inside the state machine's handlers (submit,
schedule, task done, object added, free), the simulation's own bookkeeping excluded;
the whole loop's wall-clock rate is printed beside it. The clock is read around each
batch the server would handle at once (a driver's batch of submissions with the
scheduling pass after it; the reports of one instant with the driver's release), the
messages built beforehand, so the clock's own reads (about 0.23 us each) are not
counted per call.

Tasks are submitted as a driver submits them by default (``max_retries`` = 3, so the
scheduler keeps their lineage) and finish as a worker reports them (with the run's start
time, so the scheduler records the run for the timeline): the same bookkeeping per task
as in a real cluster. ``--bare`` leaves both out (``max_retries=0``, no timeline).
"""
from __future__ import annotations

import argparse
import gc
import heapq
import random
import sys
import time
import tracemalloc
from collections import deque
from time import thread_time

from graphstore.core import protocol as msg
from graphstore.scheduler.state import SchedulerState

DRIVER = b"driver".ljust(16, b".")
NOOP = b"noop".ljust(16, b".")
MB = 1024 * 1024
#: Ray's default ``max_retries``, as a driver submits tasks (``Config.max_retries``).
DEFAULT_RETRIES = 3


class BARE:
    """``--bare``: tasks with no retries (no lineage kept) and no run times reported."""
    on = False


#: Modelled time of one no-op task, and of one DAG task (seconds, virtual).
NOOP_SECONDS = 0.001
DAG_SECONDS = 0.01
#: Simulated network: bytes per second between nodes (the scheduler's default too).
BANDWIDTH = 1e9
#: Tasks the driver sends in one batch (the server calls ``schedule`` after each).
SUBMIT_BATCH = 10_000


class Ids:
    """16-byte ids from a counter."""

    def __init__(self):
        self.n = 0

    def __call__(self) -> bytes:
        self.n += 1
        return self.n.to_bytes(16, "big")


class SimWorker:
    """A worker with ``slots`` task threads: it runs what it is sent in order."""
    __slots__ = ("id", "node", "slots", "busy", "queue", "store")

    def __init__(self, worker_id: bytes, node: str, slots: int):
        self.id = worker_id
        self.node = node
        self.slots = slots
        self.busy = 0
        self.queue: deque = deque()
        self.store: set[bytes] = set()


class Simulation:
    """A ``SchedulerState``, W simulated workers and one driver, in virtual time."""

    def __init__(self, workers: int, workers_per_node: int = 4, cpus: int = 1):
        self.state = SchedulerState(bandwidth=BANDWIDTH)
        self.ids = Ids()
        self.state.add_driver(DRIVER)
        self.state.register_function(msg.RegisterFunction(NOOP, b"code"))
        self.workers: dict[bytes, SimWorker] = {}
        self.node_store: dict[str, set[bytes]] = {}
        for i in range(workers):
            worker_id = b"w%015d" % i
            node = f"node-{i // workers_per_node}"
            self.workers[worker_id] = SimWorker(worker_id, node, cpus)
            self.node_store.setdefault(node, set())
            self.state.add_worker(msg.RegisterWorker(
                worker_id, 1000 + i, "sim", node, float(cpus), {}, f"tcp://sim:{i}",
                10**12))
        self.now = 0.0
        self.events: list = []           # (time, seq, worker, task id, results)
        self.seq = 0
        self.decisions = 0
        self.sizes: dict[bytes, int] = {}    # stored objects: id -> size
        self.stored_results: set[bytes] = set()   # returns to keep in a store
        self.free_on_done = True
        self.transfers = 0
        self.outbox_messages = 0
        #: Tasks the driver submitted since the last flush (sent as one batch).
        self.specs: list = []
        #: CPU seconds spent inside the state machine's handlers (the simulation's own
        #: bookkeeping excluded; CPU time, so other processes on the machine count less).
        self.busy = 0.0

    # -- the server's part ---------------------------------------------------------------
    def flush(self) -> None:
        """What the server does with a batch of the driver's messages: submit each
        task, schedule, then send the outbox."""
        state = self.state
        specs, self.specs = self.specs, []
        submit = state.submit
        t0 = thread_time()
        for spec in specs:
            submit(DRIVER, spec)
        state.schedule()
        self.busy += thread_time() - t0
        outbox, state.outbox = state.outbox, []
        self.outbox_messages += len(outbox)
        for peer, m in outbox:
            if type(m) is msg.RunTask:
                self.decisions += 1
                self.workers[peer].queue.append(m)
                self._start(self.workers[peer])

    def _start(self, worker: SimWorker) -> None:
        while worker.busy < worker.slots and worker.queue:
            m = worker.queue.popleft()
            worker.busy += 1
            seconds = NOOP_SECONDS if not m.deps else DAG_SECONDS
            store = self.node_store[worker.node]
            copies = []
            for object_id, _payload, _locations in m.deps:
                if object_id not in store and object_id in self.sizes:
                    seconds += self.sizes[object_id] / BANDWIDTH
                    copies.append(object_id)
            self.seq += 1
            heapq.heappush(self.events, (self.now + seconds, self.seq, worker, m, copies))

    def _report(self, worker: SimWorker, m: msg.RunTask, copies: list) -> tuple:
        """What a worker sends when it finished ``m``: an ``ObjectAdded`` for each copy
        of an argument it fetched, then ``TaskDone``."""
        store = self.node_store[worker.node]
        added = []
        for object_id in copies:
            store.add(object_id)
            self.transfers += 1
            added.append(msg.ObjectAdded(object_id, "sim"))
        results = []
        for object_id in m.returns:
            if object_id in self.stored_results:
                self.sizes[object_id] = MB
                store.add(object_id)
                results.append([object_id, None, [], MB, "sim"])
            else:
                results.append([object_id, [b"x"], [], 1, None])
        done = (msg.TaskDone(m.task_id, results, 0.001) if BARE.on else
                msg.TaskDone(m.task_id, results, 0.001, None, self.now))
        return worker.id, added, done

    # -- the driver's part ---------------------------------------------------------------
    def submit(self, deps=(), stored=False) -> bytes:
        task_id, ret = self.ids(), self.ids()
        if stored:
            self.stored_results.add(ret)
        self.specs.append(msg.SubmitTask(task_id, NOOP, "noop", None, list(deps), [],
                                         [ret], 1.0, None,
                                         0 if BARE.on else DEFAULT_RETRIES))
        return ret

    def run(self, until_idle: bool = True) -> None:
        """Deliver finished tasks in virtual-time order, flushing after each instant."""
        events = self.events
        while events:
            self.now = events[0][0]
            batch = []
            while events and events[0][0] <= self.now:
                batch.append(heapq.heappop(events))
            reports = [self._report(worker, m, copies) for _, _, worker, m, copies in batch]
            released = [object_id for *_, m, _c in batch for object_id in m.returns]
            state = self.state
            t0 = thread_time()
            for worker_id, added, done in reports:
                for m in added:
                    state.object_added(worker_id, m)
                state.task_done(worker_id, done)
            if self.free_on_done:
                # The driver drops the results: one DecRef, as it batches them.
                state.decref(DRIVER, released)
            self.busy += thread_time() - t0
            for _, _, worker, _m, _c in batch:
                worker.busy -= 1
            for _, _, worker, _m, _c in batch:
                self._start(worker)
            self.flush()


def server_gc() -> None:
    """The collector as the scheduler's server sets it (``graphstore.core.gc_policy``):
    young collections every 100,000 allocations, full ones never on their own (the
    server runs them from its loop, at most 5% of its time; here they are not run)."""
    gc.set_threshold(100_000, 50, 1_000_000)


def run_noop(workers: int, tasks: int) -> dict:
    sim = Simulation(workers)
    gc.collect()
    t0 = time.perf_counter()
    for start in range(0, tasks, SUBMIT_BATCH):
        for _ in range(min(SUBMIT_BATCH, tasks - start)):
            sim.submit()
        sim.flush()
    sim.run()
    seconds = time.perf_counter() - t0
    assert sim.decisions == tasks and not sim.state.tasks, "not every task ran"
    return {"workers": workers, "tasks": tasks, "seconds": seconds,
            "rate": tasks / sim.busy, "busy": sim.busy, "wall_rate": tasks / seconds}


def run_dag(workers: int, tasks: int, seed: int = 0) -> dict:
    rng = random.Random(seed)
    sim = Simulation(workers)
    # 1% of the tasks (at least one per worker, at most half) make the inputs.
    producers = min(max(workers, tasks // 100), tasks // 2)
    gc.collect()
    t0 = time.perf_counter()
    inputs = []
    for _ in range(producers):
        inputs.append(sim.submit(stored=True))
    sim.flush()
    for start in range(producers, tasks, SUBMIT_BATCH):
        for _ in range(min(SUBMIT_BATCH, tasks - start)):
            sim.submit(deps=rng.sample(inputs, 2))
        sim.flush()
    sim.run()
    seconds = time.perf_counter() - t0
    assert sim.decisions == tasks, (sim.decisions, tasks)
    return {"workers": workers, "tasks": tasks, "seconds": seconds,
            "rate": tasks / sim.busy, "busy": sim.busy, "wall_rate": tasks / seconds,
            "transfers": sim.transfers,
            "transfers_per_task": sim.transfers / (tasks - producers)}


def run_memory(queued: int, freed: int, workers: int = 10) -> dict:
    """Bytes per queued task, and per task run and freed beyond the bounded history."""
    sim = Simulation(workers)
    # Queued: the function is not measured, so nothing is pipelined: W run, N wait.
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for start in range(0, queued, SUBMIT_BATCH):
        for _ in range(min(SUBMIT_BATCH, queued - start)):
            sim.submit()
        sim.flush()
    gc.collect()
    after = tracemalloc.take_snapshot()
    in_queue = sum(len(q) for q in sim.state.ready.values())
    per_queued = sum(s.size_diff for s in after.compare_to(before, "filename")) / in_queue
    sim.run()
    # Freed: fill the history first, then count what N more tasks leave behind.
    warm = sim.state.graph.max_finished + SUBMIT_BATCH
    for _ in range(warm):
        sim.submit()
    sim.flush()
    sim.run()
    gc.collect()
    before = tracemalloc.take_snapshot()
    for start in range(0, freed, SUBMIT_BATCH):
        for _ in range(min(SUBMIT_BATCH, freed - start)):
            sim.submit()
        sim.flush()
        sim.run()
    gc.collect()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    diff = sum(s.size_diff for s in after.compare_to(before, "filename"))
    return {"queued": in_queue, "bytes_per_queued": per_queued, "freed": freed,
            "bytes_per_freed": diff / freed, "live_tasks": len(sim.state.tasks),
            "live_objects": len(sim.state.objects)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workers", default="10,100,1000,5000",
                   help="comma-separated worker counts W")
    p.add_argument("--tasks", type=int, default=1_000_000, help="no-op tasks per W")
    p.add_argument("--dag-tasks", type=int, default=100_000, help="DAG tasks per W")
    p.add_argument("--queued", type=int, default=100_000,
                   help="queued tasks for the memory figure")
    p.add_argument("--freed", type=int, default=50_000,
                   help="tasks run and freed after the history is full")
    p.add_argument("--only", choices=("noop", "dag", "memory"), action="append")
    p.add_argument("--bare", action="store_true",
                   help="tasks with max_retries=0 (no lineage) and no run times reported")
    args = p.parse_args(argv)
    BARE.on = args.bare
    server_gc()
    only = set(args.only or ("noop", "dag", "memory"))
    counts = [int(w) for w in args.workers.split(",") if w]
    print(f"python {sys.version.split()[0]}; tasks={args.tasks:,} "
          f"dag-tasks={args.dag_tasks:,}; "
          f"{'bare tasks' if BARE.on else 'tasks as a driver submits them'}", flush=True)
    if "noop" in only:
        for w in counts:
            r = run_noop(w, args.tasks)
            print(f"noop   W={w:>5}  {r['tasks']:>9,} tasks  {r['busy']:8.2f} CPU s in "
                  f"the state  {r['rate']:>9,.0f} decisions/s  (wall {r['seconds']:.2f} s, "
                  f"{r['wall_rate']:,.0f}/s)", flush=True)
    if "dag" in only:
        for w in counts:
            r = run_dag(w, args.dag_tasks)
            print(f"dag    W={w:>5}  {r['tasks']:>9,} tasks  {r['busy']:8.2f} CPU s in "
                  f"the state  {r['rate']:>9,.0f} decisions/s  (wall {r['seconds']:.2f} s, "
                  f"{r['wall_rate']:,.0f}/s)  {r['transfers_per_task']:.2f} transfers/task",
                  flush=True)
    if "memory" in only:
        r = run_memory(args.queued, args.freed)
        print(f"memory {r['bytes_per_queued']:,.0f} B per queued task ({r['queued']:,} "
              f"queued); {r['bytes_per_freed']:,.1f} B per freed task ({r['freed']:,} "
              f"run and freed beyond the history; {r['live_tasks']} tasks and "
              f"{r['live_objects']} objects left)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
