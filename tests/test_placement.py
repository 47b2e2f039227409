"""The placement indexes (``scheduler/placement.py``) on real worker and node records.

``WorkerIndex`` is checked against a scan of every worker (today's rule, written out
here) over random changes of load; ``CopyIndex`` against a plain count of copies per
node, and for the turns it gives; ``ReadyQueue`` for its order: first in, first out per
driver, drivers served in turn.
"""
from __future__ import annotations

import random

import pytest

from graphstore.core import protocol as msg
from graphstore.scheduler import entities as st
from graphstore.scheduler.placement import (CopyIndex, ReadyQueue, WorkerIndex, free_cost,
                                            queue_cost, task_fits_ever, task_fits_now)


def make_task(cpus: float = 1.0, resources: dict | None = None,
              driver: bytes = b"D" * 16, n: int = 0) -> st.TaskState:
    spec = msg.SubmitTask(n.to_bytes(16, "big"), b"F" * 16, "task", None, [], [],
                          [(n + 10**6).to_bytes(16, "big")], cpus, resources, 0)
    return st.TaskState(spec, driver, driver)


class Cluster:
    """Nodes and workers as the scheduler keeps them, plus the index over them."""

    def __init__(self):
        self.nodes: dict[str, st.NodeState] = {}
        self.workers: list[st.WorkerState] = []
        self.index = WorkerIndex()

    def worker(self, node_id: str, cpus: int = 1, resources=None) -> st.WorkerState:
        node = self.nodes.get(node_id)
        if node is None:
            node = self.nodes[node_id] = st.NodeState(node_id)
        n = len(self.workers)
        reg = msg.RegisterWorker(b"w%015d" % n, n, "host", node_id, float(cpus),
                                 resources or {}, f"tcp://w{n}:1", 10**9)
        worker = st.WorkerState(reg, node)
        node.workers[worker.id] = worker
        node.num_cpus += cpus
        for name, amount in (resources or {}).items():
            node.resources[name] = node.resources.get(name, 0.0) + amount
        self.workers.append(worker)
        self.index.add(worker)
        return worker

    def run(self, worker: st.WorkerState, task: st.TaskState, seconds: float) -> None:
        """Assign as the state machine does: a slot if free, else pipelined."""
        worker.assigned[task.id] = task
        if worker.free_slots() > 0 and worker.node.fits_now(task):
            task.holds_slot = True
            worker.running += 1
            worker.node.acquire(task)
        worker.queued_seconds += seconds
        task.long = seconds > 0.02
        worker.long_tasks += task.long
        self.index.update(worker)

    def finish(self, worker: st.WorkerState, task: st.TaskState, seconds: float) -> None:
        del worker.assigned[task.id]
        worker.queued_seconds = max(0.0, worker.queued_seconds - seconds)
        worker.long_tasks -= task.long
        if task.holds_slot:
            worker.running -= 1
            worker.node.acquire(task, -1.0)
            pipelined = [t for t in worker.assigned.values() if not t.holds_slot]
            if pipelined and worker.free_slots() > 0:
                pipelined[0].holds_slot = True
                worker.running += 1
                worker.node.acquire(pipelined[0])
        self.index.update(worker)


def scan_least_loaded(workers, task, node_id=None):
    """Today's rule, by a scan: a free slot, room on the node, lowest cost, earliest."""
    best, best_cost = None, None
    for worker in workers:
        if node_id is not None and worker.node.id != node_id:
            continue
        if worker.free_slots() > 0 and worker.node.fits_now(task):
            cost = free_cost(worker)
            if best_cost is None or cost < best_cost:
                best, best_cost = worker, cost
    return best


def scan_shortest_queue(workers, task, depth, node_id=None):
    best, best_cost = None, None
    for worker in workers:
        if node_id is not None and worker.node.id != node_id:
            continue
        if (worker.free_slots() > 0 or worker.long_tasks
                or worker.queued_beyond_slots() >= depth or not worker.node.fits_ever(task)):
            continue
        cost = queue_cost(worker)
        if best_cost is None or cost < best_cost:
            best, best_cost = worker, cost
    return best


@pytest.mark.parametrize("seed", range(6))
def test_index_picks_what_a_scan_picks_under_random_load(seed):
    rng = random.Random(seed)
    cluster = Cluster()
    for i in range(40):
        cluster.worker(f"node-{i % 9}", cpus=rng.choice([1, 1, 2, 4]),
                       resources={"disk": 1.0} if i % 9 == 0 else None)
    running: list = []
    shapes = [(1.0, None), (2.0, None), (0.5, None), (1.0, {"disk": 1.0}), (0.0, None)]
    for step in range(1500):
        cpus, resources = rng.choice(shapes)
        task = make_task(cpus, resources, n=step)
        depth = rng.choice([0, 1, 3])
        node_id = rng.choice([None, None, f"node-{rng.randrange(9)}"])
        node = cluster.nodes[node_id] if node_id is not None else None
        picked = cluster.index.least_loaded(task_fits_now(task), node=node)
        assert picked is scan_least_loaded(cluster.workers, task, node_id)
        queued = cluster.index.shortest_queue(task_fits_ever(task), depth, node=node)
        assert queued is scan_shortest_queue(cluster.workers, task, depth, node_id)
        target = picked or queued
        if target is not None and rng.random() < 0.6:
            seconds = rng.choice([0.001, 0.01, 0.5])
            cluster.run(target, task, seconds)
            running.append((target, task, seconds))
        elif running:
            cluster.finish(*running.pop(rng.randrange(len(running))))


def test_a_node_without_room_is_passed_over_and_kept():
    cluster = Cluster()
    a = cluster.worker("full", cpus=1)
    b = cluster.worker("free", cpus=1)
    cluster.worker("free", cpus=1)
    # Something else (an actor) holds the node's only CPU: a has a slot, no room.
    a.node.acquire(make_task(1.0))
    b.queued_seconds = 5.0
    cluster.index.update(b)
    one = make_task(1.0)
    assert cluster.index.least_loaded(task_fits_now(one)) is cluster.workers[2]
    # A task that needs no CPU fits on a's node: a (least loaded, passed over above,
    # set aside only for that question) is still in the index.
    assert cluster.index.least_loaded(task_fits_now(make_task(0.0))) is a


def test_stale_entries_are_never_returned_and_heaps_stay_bounded():
    cluster = Cluster()
    workers = [cluster.worker(f"n{i % 3}", cpus=2) for i in range(12)]
    task = make_task(1.0)
    for round_ in range(3000):
        worker = workers[round_ % len(workers)]
        worker.queued_seconds = (round_ * 7919) % 101 / 10
        cluster.index.update(worker)
        assert cluster.index.least_loaded(task_fits_now(task)) is \
            scan_least_loaded(workers, task)
    assert cluster.index.entries() <= 2 * (3 * len(workers) + 64)
    assert cluster.index.least_loaded(task_fits_now(task), node=workers[0].node) is \
        scan_least_loaded(workers, task, workers[0].node.id)


def test_a_removed_worker_is_never_picked():
    cluster = Cluster()
    a = cluster.worker("n", cpus=1)
    b = cluster.worker("n", cpus=1)
    b.queued_seconds = 1.0
    cluster.index.update(b)
    task = make_task()
    assert cluster.index.least_loaded(task_fits_now(task)) is a
    cluster.index.remove(a)
    assert a not in cluster.index and len(cluster.index) == 1
    assert cluster.index.least_loaded(task_fits_now(task)) is b
    cluster.index.remove(b)
    assert cluster.index.least_loaded(task_fits_now(task)) is None


def test_pipelining_skips_long_tasks_and_full_queues():
    cluster = Cluster()
    a, b = cluster.worker("n", cpus=1), cluster.worker("n", cpus=1)
    long_task, short = make_task(n=1), make_task(n=2)
    cluster.run(a, long_task, 0.5)              # a runs a long task
    cluster.run(b, short, 0.001)                # b runs a short one
    probe = make_task(n=3)
    assert cluster.index.least_loaded(task_fits_now(probe)) is None
    assert cluster.index.shortest_queue(task_fits_ever(probe), 2) is b
    assert cluster.index.shortest_queue(task_fits_ever(probe), 0) is None
    cluster.run(b, make_task(n=4), 0.001)       # one queued behind b's slot
    assert cluster.index.shortest_queue(task_fits_ever(probe), 1) is None
    assert cluster.index.shortest_queue(task_fits_ever(probe), 2) is b


def test_near_top_gives_live_entries_least_loaded_first():
    cluster = Cluster()
    workers = [cluster.worker(f"n{i % 5}", cpus=1) for i in range(30)]
    for round_ in range(200):                    # stale entries pile up in the heap
        worker = workers[(round_ * 7) % len(workers)]
        worker.queued_seconds = (round_ * 7919) % 97 / 10
        cluster.index.update(worker)
    # As in a decision: the least loaded first (which drops stale entries off the top).
    least = cluster.index.least_loaded(task_fits_now(make_task()))
    top = cluster.index.near_top(8)
    assert 0 < len(top) <= 8
    assert top[0][0] is least is scan_least_loaded(workers, make_task())
    for worker, cost, order in top:
        assert cost == free_cost(worker) and order == cluster.index.order(worker)
    assert len({w.id for w, _, _ in top}) == len(top)
    assert cluster.index.near_top(8, depth=3) == []        # nobody pipelines


@pytest.mark.parametrize("seed", range(4))
def test_copy_index_agrees_with_a_count_of_copies(seed):
    rng = random.Random(seed)
    nodes = {f"n{i}": st.NodeState(f"n{i}") for i in range(12)}
    index = CopyIndex()
    model: dict[bytes, dict[str, int]] = {}
    objects = [bytes([i]) * 16 for i in range(6)]
    for _ in range(3000):
        object_id = rng.choice(objects)
        node_id = rng.choice(list(nodes))
        held = model.setdefault(object_id, {})
        action = rng.random()
        if action < 0.5:
            index.add(object_id, nodes[node_id])
            held[node_id] = held.get(node_id, 0) + 1
        elif action < 0.95:
            index.remove(object_id, node_id)
            if node_id in held:
                held[node_id] -= 1
                if not held[node_id]:
                    del held[node_id]
        else:
            index.forget(object_id)
            held.clear()
        expected = [(o, dict(h)) for o, h in model.items() if h]
        assert index.mismatches(expected, nodes) == []
        for node in nodes:
            assert index.holds(object_id, node) == (node in held)
        assert index.holder_count(object_id) == len(held)
        some = index.some(object_id, 4)
        assert len(some) == min(4, len(held)) and len({n.id for n in some}) == len(some)
        assert all(n.id in held for n in some)
    assert len(index) == sum(1 for h in model.values() if h)


def test_copy_index_gives_every_holder_in_turn():
    nodes = [st.NodeState(f"n{i}") for i in range(10)]
    index = CopyIndex()
    for node in nodes:
        index.add(b"x" * 16, node)
    assert index.some(b"x" * 16, 10) == nodes          # few enough: all, every time
    turns = [[n.id for n in index.some(b"x" * 16, 4)] for _ in range(5)]
    assert turns[0] == ["n0", "n1", "n2", "n3"] and turns[2] == ["n8", "n9", "n0", "n1"]
    assert {n for turn in turns[:3] for n in turn} == {n.id for n in nodes}
    index.remove(b"x" * 16, "n0")                      # the last one takes its place
    assert index.mismatches([(b"x" * 16, {f"n{i}": 1 for i in range(1, 10)})],
                            {n.id: n for n in nodes}) == []
    assert index.some(b"y" * 16, 4) == [] and not index.holds(b"y" * 16, "n1")
    index.add(b"x" * 16, nodes[1])                     # a second copy on n1
    index.remove(b"x" * 16, "n1")
    assert index.holds(b"x" * 16, "n1")
    assert index.mismatches([(b"x" * 16, {f"n{i}": 1 for i in range(2, 10)})],
                            {n.id: n for n in nodes}) != []


def live(task) -> bool:
    return task.state != st.FAILED


def test_ready_queue_serves_drivers_in_turn():
    queue = ReadyQueue(live)
    flood = [make_task(driver=b"A" * 16, n=i) for i in range(1000)]
    few = [make_task(driver=b"B" * 16, n=2000 + i) for i in range(3)]
    for task in flood:
        queue.append(task)
    for task in few:
        queue.append(task)
    taken = []
    for _ in range(6):
        taken.append(queue.peek())
        assert queue.popleft() is taken[-1]
    assert taken == [flood[0], few[0], flood[1], few[1], flood[2], few[2]]
    assert [queue.popleft() for _ in range(3)] == flood[3:6]
    assert len(queue) == 994


def test_ready_queue_drops_entries_that_left_and_puts_retries_first():
    queue = ReadyQueue(live)
    tasks = [make_task(n=i) for i in range(4)]
    for task in tasks:
        queue.append(task)
    tasks[0].state = tasks[1].state = st.FAILED      # cancelled while queued
    assert queue.peek() is tasks[2]
    retry = make_task(n=9)
    queue.appendleft(retry)
    assert queue.popleft() is retry
    assert queue.popleft() is tasks[2]
    tasks[3].state = st.FAILED
    assert queue.peek() is None and not queue and len(queue) == 0
