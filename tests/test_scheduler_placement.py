"""Placement in the scheduler's state machine without scans (issue 15.3, 15.5).

The state places tasks through ``placement.WorkerIndex``; these tests hold it to the
rule a scan of every worker applies (written out here as ``scan_pick``: fewest bytes to
fetch / bandwidth + queued seconds per slot among workers whose node has room, else
pipelining behind busy slots), over random clusters, loads and stored arguments, and
check that the ready queues serve drivers in turn.
"""
from __future__ import annotations

import random

import pytest

from graphstore.core import protocol as msg
from graphstore.scheduler import entities as st
from graphstore.scheduler import state as state_module

from test_scheduler_state import DRIVER, DRIVER2, FN, LONG, SHORT, Harness, oid


def scan_pick(s, task: st.TaskState):
    """Today's placement rule, by scanning every worker (the reference)."""
    best, best_cost = None, None
    depth = -1
    stored = [s.objects[i] for i in task.deps if i in s.objects and s.objects[i].locations]
    for worker in s.workers.values():
        free = worker.free_slots()
        if free > 0 and worker.node.fits_now(task):
            cost = worker.queued_seconds / worker.slots - free * 1e-6
        else:
            if depth < 0:
                duration = s.function_durations.get(task.function_hash)
                depth = 0 if duration is None or task.resources else min(
                    s.max_queued_per_worker, int(s.pipeline_seconds / max(duration, 1e-6)))
            queued = worker.queued_beyond_slots()
            if (depth == 0 or free > 0 or worker.long_tasks or queued >= depth
                    or not worker.node.fits_ever(task)):
                continue
            cost = 1e6 + queued / worker.slots
        if stored:
            missing = sum(o.size for o in stored
                          if not any(w in worker.node.workers for w in o.locations))
            cost += missing / s.bandwidth
        if best_cost is None or cost < best_cost:
            best, best_cost = worker, cost
    return best


def probe(h: Harness, spec: msg.SubmitTask) -> st.TaskState:
    """The task record ``spec`` becomes, not submitted (for the reference's question)."""
    return st.TaskState(spec, DRIVER, DRIVER)


@pytest.mark.parametrize("seed", range(4))
def test_placement_matches_a_scan_of_every_worker(seed):
    rng = random.Random(seed)
    h = Harness()
    first = h.worker("w0", cpus=1, node="n0", resources={"disk": 2.0})
    h.measure(first, SHORT, 0.001)
    h.measure(first, LONG, 5.0)
    for i in range(1, 24):
        h.worker(f"w{i}", cpus=rng.choice([1, 1, 2, 4]), node=f"n{i % 7}",
                 resources={"disk": 2.0} if i % 7 == 0 else None)
    stored: list[bytes] = []
    running: dict[bytes, bytes] = {}            # task id -> worker id
    checked = 0
    for step in range(600):
        if rng.random() < 0.55 or not running:
            deps = rng.sample(stored, min(len(stored), rng.choice([0, 1, 2]))) \
                if stored else []
            cpus = rng.choice([1.0, 1.0, 2.0, 0.5])
            resources = {"disk": 1.0} if rng.random() < 0.1 else None
            spec = msg.SubmitTask(oid(), rng.choice([FN, SHORT, SHORT, LONG]), "task",
                                  None, deps, [], [oid()], cpus, resources, 0)
            idle = not any(q for q in h.s.ready.values())
            expected = scan_pick(h.s, probe(h, spec)) if idle else None
            h.s.submit(DRIVER, spec)
            h.s.schedule()
            sent = {m.task_id: p for p, m in h.take(msg.RunTask)}
            if idle:
                checked += 1
                if expected is None:
                    assert spec.task_id not in sent
                else:
                    assert sent.get(spec.task_id) == expected.id, step
            running.update(sent)
        else:
            task_id = rng.choice(list(running))
            worker = running.pop(task_id)
            if rng.random() < 0.5:
                (result,) = h.s.tasks[task_id].returns
                h.done_stored(worker, task_id, size=rng.choice([10**6, 10**8]),
                              duration=h.s.function_durations.get(
                                  h.s.tasks[task_id].function_hash, 0.5))
                stored.append(result)
            else:
                h.done(worker, task_id, duration=0.001)
            h.s.schedule()
            running.update({m.task_id: p for p, m in h.take(msg.RunTask)})
    assert checked > 150


def test_locality_wins_among_a_thousand_workers():
    h = Harness()
    workers = [h.worker(f"w{i}", cpus=1, node=f"n{i}") for i in range(1000)]
    big = h.put_stored(workers[737], 10**9)
    task_id, _ = h.submit(deps=[big])
    h.s.schedule()
    assert h.run_tasks() == [task_id]
    assert h.s.tasks[task_id].worker.id == workers[737]


def test_a_decision_weighs_a_bounded_number_of_holders_and_spreads_them():
    """An input copied to 200 nodes: each decision weighs at most ``_HOLDER_NODES`` of
    them and ``_NEAR_TOP`` others (not all 200), picks a holder (no transfer) when one
    is as little loaded as any, and successive decisions take the holders in turn."""
    h = Harness()
    with h.batch():
        workers = [h.worker(f"w{i}", cpus=1, node=f"n{i}") for i in range(400)]
        # The holders joined last: the least loaded worker (the first) holds none.
        x = h.put_stored(workers[200], 10**6)
        for w in workers[201:]:
            h.s.object_added(w, msg.ObjectAdded(x, f"gs-{w.hex()}"))
    asked = []
    best_on_node = h.s.placement.best_on_node

    def counting(node, fits, depth=None):
        asked.append(node.id)
        return best_on_node(node, fits, depth)

    h.s.placement.best_on_node = counting
    placed = []
    for _ in range(20):
        task_id, _ = h.submit(deps=[x])
        before = len(asked)
        h.s.schedule()
        assert h.run_tasks() == [task_id]
        assert 0 < len(asked) - before <= \
            state_module._HOLDER_NODES + state_module._NEAR_TOP
        task = h.s.tasks[task_id]
        assert task.placement["missing_bytes"] == 0
        placed.append(task.worker.node.id)
    assert len(set(placed)) == 20                       # spread, not one hot holder


def test_a_task_message_names_its_node_s_copies_and_a_few_others_in_turn():
    """With many copies, a task's message names every copy on its own node and
    ``_REMOTE_COPIES`` others (not all of them), different ones task after task; with
    few, all of them, as ``locate`` gives them."""
    h = Harness()
    with h.batch():
        workers = [h.worker(f"w{i}", cpus=1, node=f"n{i // 2}") for i in range(40)]
        x = h.put_stored(workers[0], 10**6)
        for w in workers[1:30]:
            h.s.object_added(w, msg.ObjectAdded(x, f"gs-{w.hex()}"))
        few = h.put_stored(workers[0], 10**6)
    named = []
    for _ in range(6):
        task_id, _ = h.submit(deps=[x])
        h.s.schedule()
        ((peer, run),) = h.take(msg.RunTask)
        node = h.s.workers[peer].node.id
        ((_, _, locations),) = run.deps
        here = [loc for loc in locations if loc[0] == node]
        there = [loc for loc in locations if loc[0] != node]
        assert len(here) == sum(1 for w in h.s.nodes[node].workers
                                if w in h.obj(x).locations)
        assert len(there) == state_module._REMOTE_COPIES
        assert len({loc[0] for loc in there}) == len(there)
        for holder, address, segment, size in locations:
            worker = next(w for w in h.s.workers.values() if w.address == address)
            assert worker.node.id == holder and h.obj(x).locations[worker.id] == segment
            assert size == 10**6
        named.extend(loc[0] for loc in there)
    assert len(set(named)) >= 10                        # the holders, in turn
    task_id, _ = h.submit(deps=[few])
    h.s.schedule()
    ((_, run),) = h.take(msg.RunTask)
    assert run.deps[0][2] == h.s.locate(few)


def test_a_flooding_driver_does_not_hold_back_another():
    h = Harness()
    h.s.add_driver(DRIVER2)
    w = h.worker("w", cpus=1)
    flood = [h.submit(peer=DRIVER)[0] for _ in range(500)]
    few = [h.submit(peer=DRIVER2)[0] for _ in range(5)]
    order = []
    for _ in range(12):
        h.s.schedule()
        (task_id,) = h.run_tasks(w)
        order.append(task_id)
        h.done(w, task_id)
    assert set(few) <= set(order)
    assert order[:4] == [flood[0], few[0], flood[1], few[1]]


def test_cancelled_queued_tasks_leave_their_queue():
    h = Harness()
    w = h.worker("w", cpus=1)
    first, _ = h.submit()
    queued = [h.submit() for _ in range(50)]
    h.s.schedule()
    assert h.run_tasks() == [first]
    for task_id, (ret,) in queued[:49]:
        h.s.cancel(msg.CancelTask(ret, False, False))
    h.done(w, first)
    h.s.schedule()
    assert h.run_tasks() == [queued[49][0]]
    h.done(w, queued[49][0])
    h.s.schedule()
    assert not h.s.ready and not h.s.tasks
