"""``validate_state``: the scheduler's bookkeeping recomputed from scratch and compared.

The state machine keeps running totals so that no decision scans the cluster: resources
held per node, running/blocked/long counts per worker, reference counts per object, each
worker's objects and stored bytes, task counts per name. This module recounts each of
them from the records themselves (tasks, actors, objects) and raises
``StateInvariantError`` naming the first total that disagrees and the ids involved. It is
O(everything): the unit tests' harness runs it after every event, a live scheduler only
with ``validate_state = true`` (for debugging). Pure: no I/O.
"""
from __future__ import annotations

import itertools

from graphstore.scheduler.entities import (ASSIGNED, DEAD, DETACHED_HOLDER,
                                           LINEAGE_ENTRY_BYTES, NO_IDS, NO_LOCATIONS, NO_PEERS,
                                           PENDING, QUEUED, WAITING, payload_size)
from graphstore.scheduler.progress import STATES
from graphstore.scheduler.transitions import StateInvariantError

_EPS = 1e-6


def _fail(text: str) -> None:
    raise StateInvariantError(text)


def validate_state(state) -> None:
    """Raise ``StateInvariantError`` on the first bookkeeping total that a recount from
    the records contradicts."""
    _validate_workers_and_tasks(state)
    _validate_node_resources(state)
    _validate_queues(state)
    _validate_placement_index(state)
    _validate_refcounts(state)
    _validate_locations(state)
    _validate_lineage(state)
    _validate_progress(state)


def _validate_workers_and_tasks(state) -> None:
    for task in state.tasks.values():
        if task.state not in (WAITING, QUEUED, ASSIGNED):
            _fail(f"task {task.id.hex()} is {task.state!r} but still in the live tasks")
        if task.state == ASSIGNED:
            worker = task.worker
            if worker is None or state.workers.get(worker.id) is not worker:
                _fail(f"assigned task {task.id.hex()} has no live worker")
            if worker.assigned.get(task.id) is not task:
                _fail(f"assigned task {task.id.hex()} is not in the assigned tasks of "
                      f"worker {worker.id.hex()}")
        elif task.worker is not None:
            _fail(f"{task.state} task {task.id.hex()} still names worker "
                  f"{task.worker.id.hex()}")
    for worker in state.workers.values():
        running = blocked = long = 0
        for task_id, task in worker.assigned.items():
            if task.state != ASSIGNED or task.worker is not worker:
                _fail(f"worker {worker.id.hex()} lists task {task_id.hex()} as assigned, "
                      f"but the task is {task.state!r} on "
                      f"{task.worker.id.hex() if task.worker else None}")
            if state.tasks.get(task_id) is not task:
                _fail(f"task {task_id.hex()} assigned to worker {worker.id.hex()} is not "
                      f"among the live tasks")
            running += task.holds_slot
            blocked += task.blocked
            long += task.long
            if task.blocked and not task.holds_slot:
                _fail(f"task {task_id.hex()} is blocked without holding a slot")
            if not task.holds_slot and task not in worker.pipelined:
                _fail(f"task {task_id.hex()} on worker {worker.id.hex()} neither holds a "
                      f"slot nor is pipelined")
        if (running, blocked, long) != (worker.running, worker.blocked, worker.long_tasks):
            _fail(f"worker {worker.id.hex()} counts running/blocked/long "
                  f"{worker.running}/{worker.blocked}/{worker.long_tasks}, a recount of "
                  f"its assigned tasks gives {running}/{blocked}/{long}")
        if worker.node.workers.get(worker.id) is not worker or \
                state.nodes.get(worker.node.id) is not worker.node:
            _fail(f"worker {worker.id.hex()} and its node {worker.node.id!r} disagree")


def _validate_node_resources(state) -> None:
    """Resources held on each node = those of tasks holding a slot there (not blocked)
    plus those of actors holding resources there."""
    held: dict[str, dict[str, float]] = {n: {"CPU": 0.0} for n in state.nodes}
    gpus_taken: dict[str, list[float]] = {n: [0.0] * len(node.gpu_free)
                                          for n, node in state.nodes.items()}

    def take(node_id: str, holder, what: str) -> None:
        amounts = held.get(node_id)
        if amounts is None:
            _fail(f"{what} holds resources on node {node_id!r}, which is gone")
        amounts["CPU"] += holder.num_cpus
        for name, amount in (holder.resources or {}).items():
            amounts[name] = amounts.get(name, 0.0) + amount

    def take_gpus(node_id: str, holder, what: str) -> None:
        if holder.gpus is None:
            return
        share = holder.resources["GPU"]
        share = 1.0 if share >= 1.0 - 1e-9 else share
        for index in holder.gpus:
            if index < len(gpus_taken[node_id]):
                gpus_taken[node_id][index] += share

    for worker in state.workers.values():
        for task in worker.assigned.values():
            if task.holds_slot and not task.blocked:
                take(worker.node.id, task, f"task {task.id.hex()}")
            if task.gpus is not None:
                take_gpus(worker.node.id, task, f"task {task.id.hex()}")
    for actor in state.actors.values():
        if actor.holds_resources:
            if actor.worker is None:
                _fail(f"actor {actor.id.hex()} holds resources but has no worker")
            take(actor.worker.node.id, actor, f"actor {actor.id.hex()}")
            take_gpus(actor.worker.node.id, actor, f"actor {actor.id.hex()}")
        elif actor.gpus is not None:
            _fail(f"actor {actor.id.hex()} holds GPUs {actor.gpus} but no resources")
    for node_id, node in state.nodes.items():
        amounts = held[node_id]
        if abs(node.cpus_used - amounts["CPU"]) > _EPS:
            _fail(f"node {node_id!r} counts {node.cpus_used:g} CPUs used; the tasks and "
                  f"actors holding them there add up to {amounts['CPU']:g}")
        for name in set(node.resources_used) | (set(amounts) - {"CPU"}):
            if abs(node.resources_used.get(name, 0.0) - amounts.get(name, 0.0)) > _EPS:
                _fail(f"node {node_id!r} counts {node.resources_used.get(name, 0.0):g} "
                      f"of {name} used; its tasks and actors hold "
                      f"{amounts.get(name, 0.0):g}")
        for index, free in enumerate(node.gpu_free):
            if abs(free - max(0.0, 1.0 - gpus_taken[node_id][index])) > _EPS:
                _fail(f"node {node_id!r}: GPU {index} is {free:g} free; its holders leave "
                      f"{1.0 - gpus_taken[node_id][index]:g}")


def _validate_queues(state) -> None:
    """Every queued task is in exactly one ready queue, that of its shape. Entries of
    tasks no longer queued (failed, cancelled, back to waiting) may stay until they reach
    the front, where ``ReadyQueue`` drops them; the queue's count includes them."""
    seen: dict[bytes, tuple] = {}
    for shape, queue in state.ready.items():
        entries = 0
        for task in queue:
            entries += 1
            if task.state == QUEUED:
                if task.id in seen:
                    _fail(f"queued task {task.id.hex()} is in a ready queue twice")
                if shape != task.shape:
                    _fail(f"queued task {task.id.hex()} is in the ready queue of another "
                          f"shape")
                seen[task.id] = shape
        if entries != len(queue):
            _fail(f"ready queue of shape {shape!r} counts {len(queue)} entries but holds "
                  f"{entries}")
    for task in state.tasks.values():
        if task.state == QUEUED and task.id not in seen:
            _fail(f"queued task {task.id.hex()} is in no ready queue")


def _validate_placement_index(state) -> None:
    """The placement index holds every worker that takes work (all but the retiring
    ones) at its load now, and no other."""
    working = [w for w in state.workers.values() if not w.retiring]
    problems = state.placement.mismatches(working)
    if problems:
        _fail(problems[0])
    if len(state.placement) != len(working):
        _fail(f"the placement index holds {len(state.placement)} workers, the state "
              f"{len(working)} that take work")


def _validate_refcounts(state) -> None:
    """``task_refs``, ``container_refs`` and ``holders`` recomputed from the tasks' and
    calls' counted arguments, living actors' arguments, the objects' contents and the
    peers' holds."""
    objects = state.objects
    task_refs: dict[bytes, int] = {}
    container_refs: dict[bytes, int] = {}

    def count(into: dict, object_ids) -> None:
        for object_id in object_ids:
            if object_id in objects:
                into[object_id] = into.get(object_id, 0) + 1

    counted = set()
    for task in state.tasks.values():
        counted.add(task.id)
        count(task_refs, task.counted_refs)
    for call in state.actor_calls.values():
        count(task_refs, call.counted_refs)
    for actor in state.actors.values():
        if actor.state != DEAD:
            count(task_refs, actor.deps)
            count(task_refs, actor.nested)
    for obj in objects.values():
        count(container_refs, obj.contains)
    for early in state.early_results.values():
        count(container_refs, early[2])
    for object_id, obj in objects.items():
        if obj.task_refs != task_refs.get(object_id, 0):
            _fail(f"object {object_id.hex()} counts {obj.task_refs} task references; "
                  f"the live tasks, calls and actors taking it add up to "
                  f"{task_refs.get(object_id, 0)}")
        if obj.container_refs != container_refs.get(object_id, 0):
            _fail(f"object {object_id.hex()} counts {obj.container_refs} container "
                  f"references; the live objects containing it add up to "
                  f"{container_refs.get(object_id, 0)}")
        if obj.state != PENDING and not obj.referenced():
            _fail(f"object {object_id.hex()} is {obj.state} and unreferenced but not "
                  f"freed")
        for peer_id in obj.holders:
            holds = state.peer_holds.get(peer_id)
            if holds is None:       # a peer that left, its refs not all released yet
                holds = state.departed_holds.get(peer_id)
            if holds is not None and object_id not in holds:
                _fail(f"object {object_id.hex()} names peer {peer_id.hex()} as a holder, "
                      f"which does not list it")
            if holds is None and peer_id != DETACHED_HOLDER:
                _fail(f"object {object_id.hex()} is held by peer {peer_id.hex()}, which "
                      f"is gone")
    for peer_id, holds in itertools.chain(state.peer_holds.items(),
                                          state.departed_holds.items()):
        for object_id in holds:
            obj = objects.get(object_id)
            if obj is not None and peer_id not in obj.holders:
                _fail(f"peer {peer_id.hex()} lists object {object_id.hex()} as held, "
                      f"which does not name it")


def _validate_locations(state) -> None:
    """Each object's locations and each worker's objects (and stored bytes) agree, and
    the copy index (``placement.CopyIndex``) holds the same copies by node."""
    if NO_LOCATIONS or NO_PEERS or NO_IDS:
        _fail("a shared empty default (NO_LOCATIONS, NO_PEERS, NO_IDS) was written to")
    by_node = []
    for object_id, obj in state.objects.items():
        nodes: dict[str, int] = {}
        for worker_id in obj.locations:
            worker = state.workers.get(worker_id)
            if worker is None:
                _fail(f"object {object_id.hex()} has a copy on worker {worker_id.hex()}, "
                      f"which is gone")
            if object_id not in worker.objects:
                _fail(f"object {object_id.hex()} has a copy on worker {worker_id.hex()}, "
                      f"whose objects do not list it")
            nodes[worker.node.id] = nodes.get(worker.node.id, 0) + 1
        if nodes:
            by_node.append((object_id, nodes))
    problems = state.copies.mismatches(by_node, state.nodes)
    if problems:
        _fail(problems[0])
    for worker in state.workers.values():
        total = 0
        for object_id in worker.objects:
            obj = state.objects.get(object_id)
            if obj is None or worker.id not in obj.locations:
                _fail(f"worker {worker.id.hex()} lists object {object_id.hex()}, which "
                      f"has no copy there")
            total += obj.size
        if total != worker.stored_bytes:
            _fail(f"worker {worker.id.hex()} counts {worker.stored_bytes} stored bytes; "
                  f"its objects add up to {total}")


def _validate_lineage(state) -> None:
    """What lineage holds, recounted from the kept tasks: ``lineage_producer`` maps the
    returns of kept tasks; each kept task's size is its entry, its arguments and the
    values it keeps (none of an object a kept task makes), and they add up to
    ``lineage_bytes``; its ``lineage_refs`` are its live results plus the arguments of
    kept tasks that it makes."""
    producer_of: dict = {}
    total = 0
    for task_id, task in state.lineage.items():
        if task.id != task_id:
            _fail(f"lineage holds task {task.id.hex()} under id {task_id.hex()}")
        for object_id in task.returns:
            producer_of[object_id] = task
    if len(producer_of) != len(state.lineage_producer) or any(
            state.lineage_producer.get(i) is not t for i, t in producer_of.items()):
        _fail(f"lineage_producer names {len(state.lineage_producer)} objects; the kept "
              f"tasks return {len(producer_of)} (or another task makes one)")
    refs: dict[bytes, int] = {}
    for task_id, task in state.lineage.items():
        kept = 0
        for object_id, value in (task.lineage_values or {}).items():
            if value.size != payload_size(value.payload if value.error is None
                                          else value.error):
                _fail(f"task {task_id.hex()} keeps {value.size} bytes for the value of "
                      f"{object_id.hex()}, which holds another number")
            if object_id in producer_of:
                _fail(f"task {task_id.hex()} keeps the value of {object_id.hex()}, "
                      f"which the kept task {producer_of[object_id].id.hex()} makes")
            kept += value.size
        size = LINEAGE_ENTRY_BYTES + payload_size(task.args) + kept
        if task.lineage_size != size:
            _fail(f"kept task {task_id.hex()} counts {task.lineage_size} lineage bytes; "
                  f"its entry, arguments and kept values add up to {size}")
        total += size
        live = 0
        for object_id in task.returns:
            obj = state.objects.get(object_id)
            live += obj is not None and obj.producer is task
        refs[task_id] = refs.get(task_id, 0) + live
        for object_id in itertools.chain(task.deps, task.nested):
            producer = producer_of.get(object_id)
            if producer is not None:
                refs[producer.id] = refs.get(producer.id, 0) + 1
    if total != state.lineage_bytes:
        _fail(f"lineage_bytes is {state.lineage_bytes}; the kept tasks add up to {total}")
    for task_id, task in state.lineage.items():
        if task.lineage_refs != refs[task_id]:
            _fail(f"kept task {task_id.hex()} counts {task.lineage_refs} lineage refs; "
                  f"its live results and kept dependents add up to {refs[task_id]}")


def _validate_progress(state) -> None:
    """Live task and call counts per name (waiting, queued, assigned) equal a recount;
    done and failed accumulate, so they are not recounted."""
    live: dict[str, list[int]] = {}
    index = {name: i for i, name in enumerate(STATES)}
    for task in state.tasks.values():
        live.setdefault(task.name, [0, 0, 0])[index[task.state]] += 1
    for call in state.actor_calls.values():
        live.setdefault(call.name, [0, 0, 0])[index[call.state]] += 1
    for row in state.progress.rows(len(state.progress) or 1):
        name = row["name"]
        want = live.pop(name, [0, 0, 0])
        have = [row["waiting"], row["queued"], row["assigned"]]
        if have != want:
            _fail(f"progress counts of {name!r} (waiting, queued, assigned) are {have}; a "
                  f"recount of the live tasks and calls gives {want}")
    for name, want in live.items():
        if any(want):
            _fail(f"tasks named {name!r} are live {want} but have no progress row")
