"""The scheduler's state machine: tasks, objects, workers and peers, with no I/O.

Handlers take decoded messages and append instructions (``instructions.py``: ``Send``)
to ``outbox``; the server carries them out. Every state change goes through
``transition()`` and its tables (``transitions.py``); ``validate_state()`` recounts the
bookkeeping (``validation.py``). Keeping sockets out of here lets tests drive the whole scheduler with
plain method calls, the way Dask keeps ``worker_state_machine.py`` apart from its server.

Reference counting: an object lives while a peer holds a ref to it (``holders``), a pending
task needs it (``task_refs``: top-level and nested arguments), or a live object contains it
(``container_refs``). When all three drop to zero it is freed, and the objects it contained
lose one container reference each.
"""
from __future__ import annotations

import itertools
import logging
import math
import time
from collections import OrderedDict
from typing import Iterable

from graphstore.core import protocol as msg
from graphstore.core.profile_events import checked_fields
from graphstore.exceptions import (ObjectLostError, ObjectReconstructionFailedError,
                                   ObjectReconstructionFailedLineageEvictedError,
                                   ObjectReconstructionFailedMaxAttemptsExceededError,
                                   TaskCancelledError, TaskUnschedulableError,
                                   WorkerCrashedError)
from graphstore.core.serialization import error_payload
from graphstore.scheduler.actors import ActorsMixin
from graphstore.scheduler.entities import (ASSIGNED, DONE, ERROR, FAILED,
                                           LINEAGE_ENTRY_BYTES, NO_IDS, NO_LOCATIONS, NO_PEERS,
                                           PENDING, QUEUED, READY, WAITING, KeptValue,
                                           NodeState, ObjectState, TaskState, WorkerState,
                                           argument_failed_text, next_seq, payload_size,
                                           within)
from graphstore.scheduler.generators import GeneratorsMixin
from graphstore.scheduler.graph import TaskGraph
from graphstore.scheduler.instructions import Instruction, Send
from graphstore.scheduler.progress import TaskProgress
from graphstore.scheduler.metrics import TaskMetrics
from graphstore.scheduler.placement import (CopyIndex, ReadyQueue, WorkerIndex, free_cost,
                                            queue_cost, task_fits_ever, task_fits_now)
from graphstore.scheduler.packages import PackagesMixin
from graphstore.scheduler.task_processes import TaskProcessesMixin, process_key
from graphstore.scheduler.critical_path import Move, Run, longest_chain
from graphstore.scheduler.task_stream import TaskStream
from graphstore.scheduler.transitions import TransitionsMixin
from graphstore.scheduler.validation import validate_state
from graphstore.scheduler.worker_load import WorkerLoadHistory

#: Profile event kinds that are runs of user code, and those that bring a run its inputs.
RUN_KINDS = ("task", "actor-call")
MOVE_KINDS = ("fetch", "transfer", "restore")

logger = logging.getLogger("graphstore.scheduler")


#: Seconds assumed for a function not measured yet (as Dask assumes).
_UNKNOWN_DURATION = 0.5
#: Weight of the newest sample in a function's running mean duration.
_DURATION_SMOOTHING = 0.2


#: Seconds an actor process may wait for an object the scheduler has not heard of yet
#: (a call's argument can overtake the caller's own message that creates it).
_PARKED_WANT_SECONDS = 30.0
#: Nodes that left, remembered for ``nodes()`` (``Alive: False``), the newest this many.
_DEPARTED_NODES = 1000
#: Refs of a peer that left released per ``schedule()`` pass (``release_departed``):
#: about 0.1 s of work, after which the server serves other peers before the next share.
_DEPARTED_RELEASES = 20_000


def _first_item(pair: tuple):
    return pair[0]


#: Nodes holding copies of a task's stored arguments that one placement decision weighs
#: at most (``SchedulerState._nearest``): all of them up to this many, as a scan would.
_HOLDER_NODES = 8
#: And the nodes of this many workers from the top of the load index, when the holders
#: are more than ``_HOLDER_NODES``.
_NEAR_TOP = 8
#: Copies on other nodes that a task's message names for each stored argument
#: (``SchedulerState.locations_for``).
_REMOTE_COPIES = 4


def _still_queued(task: TaskState) -> bool:
    """Whether a ready queue's entry still waits (see ``ReadyQueue``)."""
    return task.state == QUEUED



#: The methods that handle an event (a message, a peer leaving, a timer): what the server
#: calls from outside. The tests' harness checks ``validate_state()`` after each.
EVENT_HANDLERS = (
    "add_driver", "add_worker", "remove_peer", "submit", "put_object", "incref", "decref",
    "want", "register_function", "task_done", "task_failed", "task_output", "task_blocked",
    "task_unblocked", "object_added", "adoption_failed", "objects_spilled", "recover",
    "create_actor", "register_actor_process", "actor_ready", "actor_exiting",
    "kill_actor", "actor_call_submitted", "actor_call_done", "cancel", "generator_item",
    "worker_heartbeat", "register_task_process", "task_process_exited",
    "task_process_setup_failed", "actor_setup_failed", "register_package",
    "expire_parked_wants", "expire_early_results", "schedule", "retire_workers")


class SchedulerState(TransitionsMixin, ActorsMixin, GeneratorsMixin, TaskProcessesMixin,
                     PackagesMixin):
    """All of the scheduler's bookkeeping. Methods are event handlers."""

    def __init__(self, *, pipeline_seconds: float = 0.02, max_queued_per_worker: int = 256,
                 history_size: int = 10_000, bandwidth: float = 1e9,
                 max_lineage_bytes: int = 256 * 1024 * 1024,
                 task_stream_events: int = 10_000, task_stream_total_events: int = 200_000):
        self.objects: dict[bytes, ObjectState] = {}
        self.tasks: dict[bytes, TaskState] = {}
        self.workers: dict[bytes, WorkerState] = {}
        self.nodes: dict[str, NodeState] = {}
        self.drivers: set[bytes] = set()
        self.peer_holds: dict[bytes, set[bytes]] = {}
        #: The holds of peers that left, still to release (``release_departed``).
        self.departed_holds: dict[bytes, set[bytes]] = {}
        self.functions: dict[bytes, bytes] = {}
        self.function_durations: dict[bytes, float] = {}
        #: Tasks waiting for a worker, by shape (CPUs, resources, strategy).
        self.ready: dict[tuple, ReadyQueue] = {}
        #: Workers by load, for placement without a scan (``placement.py``).
        self.placement = WorkerIndex()
        #: Stored objects' copies by node, for locality decisions (``placement.py``).
        self.copies = CopyIndex()
        #: Instructions for the server, carried out (and emptied) after each batch.
        self.outbox: list[Instruction] = []
        self.pipeline_seconds = pipeline_seconds
        self.max_queued_per_worker = max_queued_per_worker
        self.max_capacity: dict[str, float] = {"CPU": 0.0}
        self.counts = {"submitted": 0, "done": 0, "failed": 0, "retried": 0,
                       "reconstructed": 0, "objects_rebuilt": 0, "objects_lost": 0,
                       "workers_left": 0, "adopted": 0}
        #: Spill file -> ids of live objects in it, and the worker that wrote it.
        self.spill_files: dict[str, set[bytes]] = {}
        self.spill_file_writer: dict[str, bytes] = {}
        #: Spill files on a host's own disk -> that host (node): lost with the host.
        self.spill_file_node: dict[str, str] = {}
        #: Tasks and actor calls by name and state, for the progress pane.
        self.progress = TaskProgress()
        #: Each worker's CPU, memory and store use over the last minutes.
        self.worker_load = WorkerLoadHistory()
        #: Duration histograms, finished counts by function and queue waits (Prometheus).
        self.task_metrics = TaskMetrics()
        self.started_at = time.time()
        self.bandwidth = bandwidth
        #: object id -> {actor process peer: deadline}: wants of objects not known yet.
        self.parked_wants: dict[bytes, dict[bytes, float]] = {}
        #: Lineage: finished tasks kept so that results lost with a worker can be
        #: computed again, oldest first, while a result or a kept dependent needs them.
        #: An OrderedDict: the oldest is dropped first, and a dict's first item costs a
        #: walk over every slot deleted before it (quadratic once the bound is reached).
        self.lineage: OrderedDict[bytes, TaskState] = OrderedDict()
        #: object id -> the kept task that produces it.
        self.lineage_producer: dict[bytes, TaskState] = {}
        self.lineage_bytes = 0
        self.max_lineage_bytes = max_lineage_bytes
        #: Each driver's namespace (its job's), by driver id.
        self.namespaces: dict[bytes, str] = {}
        #: Nodes that left: node id -> what ``nodes()`` says of them.
        self.departed_nodes: dict[str, dict] = {}
        #: Copies asked for to let workers retire: object id -> (worker asked, when).
        self.replicating: dict[bytes, tuple[bytes, float]] = {}
        #: (driver, task shape) pairs told that their tasks wait for a node with CPUs.
        self._told_waiting: set = set()
        #: Recent profile events per worker: the timeline, task stream, critical path.
        self.task_stream = TaskStream(task_stream_events, total=task_stream_total_events)
        self._init_actors()
        #: Recent tasks and objects with their edges: every live one (read from the live
        #: tables, ``actor_calls`` among them), and the last ``history_size`` finished
        #: tasks and freed objects (the task records too).
        self.graph = TaskGraph(history_size, (self.tasks, self.actor_calls), self.objects)
        self._init_generators()
        self._init_task_processes()
        self._init_packages()

    def validate_state(self) -> None:
        """Recount the bookkeeping from the records; ``StateInvariantError`` names the
        first total that disagrees (``validation.py``). O(everything): for tests and
        the ``validate_state`` setting."""
        validate_state(self)

    # -- peers ------------------------------------------------------------------------
    def add_driver(self, peer_id: bytes, namespace: str = "default") -> None:
        self.drivers.add(peer_id)
        self.namespaces[peer_id] = namespace or "default"
        self.peer_holds.setdefault(peer_id, set())

    @staticmethod
    def validate_worker(reg: msg.RegisterWorker) -> None:
        """Check a registration before any state changes; ValueError names the field."""
        def number(value) -> bool:
            return isinstance(value, (int, float)) and not isinstance(value, bool) \
                and value >= 0 and value == value and value != float("inf")
        if not number(reg.num_cpus):
            raise ValueError(f"invalid num_cpus {reg.num_cpus!r}")
        if not isinstance(reg.node_id, str) or not reg.node_id:
            raise ValueError(f"invalid node_id {reg.node_id!r}")
        if not isinstance(reg.resources, dict) or not all(
                isinstance(k, str) and number(v) for k, v in reg.resources.items()):
            raise ValueError(f"invalid resources {reg.resources!r}")
        gpus = reg.resources.get("GPU", 0)
        if gpus != int(gpus):
            raise ValueError(f"a worker offers whole GPUs (devices), got GPU={gpus!r}")
        if not isinstance(reg.store_capacity, int) or reg.store_capacity < 0:
            raise ValueError(f"invalid store_capacity {reg.store_capacity!r}")
        if not isinstance(reg.address, str) or not isinstance(reg.pid, int):
            raise ValueError("invalid address or pid")

    def add_worker(self, reg: msg.RegisterWorker) -> WorkerState:
        node = self.nodes.get(reg.node_id)
        if node is None:
            node = self.nodes[reg.node_id] = NodeState(reg.node_id)
            node.hostname = reg.hostname
            node.address = reg.address
            self.departed_nodes.pop(reg.node_id, None)
        worker = WorkerState(reg, node)
        self.workers[worker.id] = worker
        self.placement.add(worker)
        node.workers[worker.id] = worker
        node.num_cpus += worker.num_cpus
        for name, amount in worker.resources.items():
            node.resources[name] = node.resources.get(name, 0.0) + amount
        if "GPU" in worker.resources:
            node.resize_gpus()
        # As in Ray, a node offers "node:<id>" so tasks can ask to run on that host.
        node.resources[f"node:{node.id}"] = 1.0
        self.peer_holds.setdefault(worker.id, set())
        self.task_stream.name_worker(worker.id, {
            "pid": worker.pid, "host": worker.hostname, "node": node.id,
            "address": worker.address})
        self.max_capacity["CPU"] = max(self.max_capacity["CPU"], node.num_cpus)
        for name, amount in node.resources.items():
            self.max_capacity[name] = max(self.max_capacity.get(name, 0.0), amount)
        self.schedule()
        return worker

    def remove_peer(self, peer_id: bytes) -> None:
        """A driver, worker or actor process disconnected: release its refs, retry its
        tasks, restart or bury its actor."""
        self.drivers.discard(peer_id)
        self.namespaces.pop(peer_id, None)
        if peer_id in self.actor_processes:
            self.actor_process_lost(peer_id)
        if peer_id in self.task_processes:
            self.task_process_lost(peer_id)
        if self.actor_calls:
            self.caller_gone(peer_id)
        if self.actors:
            self.owner_gone(peer_id)
        if self.streams:
            self._streams_of_gone_peer(peer_id)
        worker = self.workers.pop(peer_id, None)
        if worker is not None:
            self.placement.remove(worker)
            self.counts["workers_left"] += 1
            self.worker_load.forget(peer_id)
            node = worker.node
            del node.workers[worker.id]
            node.num_cpus -= worker.num_cpus
            for name, amount in worker.resources.items():
                node.resources[name] = node.resources.get(name, 0.0) - amount
            if "GPU" in worker.resources:
                node.resize_gpus()
            if not node.workers:
                del self.nodes[node.id]
                self._node_departed(node)
            self.worker_processes_lost(worker)
            for task in list(worker.assigned.values()):
                self._task_crashed(task, f"the worker running task {task.name} (pid "
                                         f"{worker.pid}) died")
        if worker is not None:
            self.task_stream.retire(worker.id)
            self._lose_copies(worker)
            self.workers_actors_lost(worker)
        holds = self.peer_holds.pop(peer_id, None)
        if holds:
            self.departed_holds[peer_id] = holds
        self.schedule()

    def release_departed(self, budget: int | None = None) -> None:
        """Release the refs of peers that left, at most ``budget`` of them per call:
        ``schedule()`` calls it first, and the server flushes again while some are left
        (``departed_holds``), serving the other peers in between. A driver leaving with
        a million refs held the scheduler for seconds when they went in one go."""
        if budget is None:
            budget = _DEPARTED_RELEASES
        departed = self.departed_holds
        objects = self.objects
        while departed and budget > 0:
            peer_id, holds = next(iter(departed.items()))
            while holds and budget > 0:
                budget -= 1
                obj = objects.get(holds.pop())
                if obj is not None:
                    obj.holders.discard(peer_id)
                    if obj.waiters:
                        obj.waiters.discard(peer_id)
                    self._maybe_free(obj)
            if not holds:
                del departed[peer_id]

    def _task_crashed(self, task: TaskState, why: str) -> None:
        """The process running ``task`` died: run it again while it has retries, else
        fail it with ``WorkerCrashedError`` (``TaskCancelledError`` if cancelled with
        ``force``)."""
        self._release_slot(task.worker, task)
        task.worker = None
        task.process = None
        if task.cancelled:
            self._fail_task(task, error_payload(TaskCancelledError(
                f"task {task.name} was cancelled (force=True ended its process)")))
        elif task.retries_left > 0:
            self.transition(task, QUEUED)
            self._ready_queue(task.shape).appendleft(task)
        else:
            crash = WorkerCrashedError(f"{why} and the task has no retries left; raise "
                                       f"max_retries to retry more")
            self._fail_task(task, error_payload(crash), f"WorkerCrashedError: {crash}")

    def _node_departed(self, node: NodeState) -> None:
        """Remember a node that left, for ``nodes()``."""
        self.departed_nodes[node.id] = {
            "node_id": node.id, "alive": False, "hostname": node.hostname,
            "address": node.address, "resources": {}, "joined_at": node.joined_at,
            "left_at": time.time()}
        while len(self.departed_nodes) > _DEPARTED_NODES:
            del self.departed_nodes[next(iter(self.departed_nodes))]

    def _lose_copies(self, worker: WorkerState) -> None:
        """Objects whose only copy was on a lost worker are taken over by another worker
        of its host (their segments outlive the process in shared memory: a task that
        crashed its worker loses only its own result), else computed again from their
        lineage when they can be, else they become ``ObjectLostError``s."""
        lost = []
        adopter = self._adopter_for(worker)
        adopted = []
        for object_id in worker.objects:
            obj = self.objects.get(object_id)
            if obj is None:
                continue
            segment = obj.locations.pop(worker.id, None)
            if segment is not None:
                self.copies.remove(object_id, worker.node.id)
            if obj.locations or obj.spill is not None or obj.state != READY:
                continue
            if adopter is not None and segment is not None:
                self.add_location(obj, adopter, segment)
                adopted.append([object_id, segment, obj.size])
                continue
            lost.append(obj)
        worker.objects.clear()
        worker.stored_bytes = 0
        if adopted:
            self.counts["adopted"] += len(adopted)
            self.outbox.append(Send(adopter.id, msg.AdoptSegments(adopted)))
        if worker.node.id not in self.nodes:
            lost.extend(self._lose_host_spills(worker.node.id))
        if lost:
            self.recover(lost, f"its only copy was in the store (or on the local disk) of "
                               f"worker pid {worker.pid} on node {worker.node.id}, which "
                               f"died or was cut off")

    def _adopter_for(self, worker: WorkerState) -> WorkerState | None:
        """The worker of the same host with the most free store memory, if any."""
        node = self.nodes.get(worker.node.id)
        if node is None or node is not worker.node:
            return None
        candidates = [w for w in node.workers.values()
                      if w is not worker and not w.retiring]
        if not candidates:
            return None
        return max(candidates, key=lambda w: w.store_capacity - w.stored_bytes)

    def adoption_failed(self, worker_id: bytes, m: msg.AdoptionFailed) -> None:
        """Segments a worker could not take over: those objects are lost after all."""
        worker = self.workers.get(worker_id)
        lost = []
        for object_id in m.ids:
            obj = self.objects.get(object_id)
            if obj is None or worker is None or obj.locations.pop(worker_id, None) is None:
                continue
            self.copies.remove(object_id, worker.node.id)
            if object_id in worker.objects:
                worker.objects.discard(object_id)
                worker.stored_bytes -= obj.size
            if not obj.locations and obj.spill is None and obj.state == READY:
                lost.append(obj)
        if lost:
            self.recover(lost, "its worker died and its shared memory was gone before "
                               "another worker of the host could take it over")

    def _lose_host_spills(self, node_id: str) -> list[ObjectState]:
        """The last worker of a host left: spill files on its own disk cannot be read
        back; returns the ready objects that had no other copy."""
        lost = []
        for path in [p for p, n in self.spill_file_node.items() if n == node_id]:
            del self.spill_file_node[path]
            self.spill_file_writer.pop(path, None)
            for object_id in self.spill_files.pop(path, ()):
                obj = self.objects.get(object_id)
                if obj is None or obj.spill is None or obj.spill[0] != path:
                    continue
                obj.spill = None
                if not obj.locations and obj.state == READY:
                    lost.append(obj)
        return lost

    # -- lineage ----------------------------------------------------------------------
    def recover(self, lost: list[ObjectState], why: str) -> None:
        """``lost`` (ready objects with no copy left) are computed again by re-running
        the tasks that made them, and those tasks' freed arguments too, recursively;
        objects that cannot be become errors naming the object and why."""
        rerun: list[TaskState] = []
        unrecoverable = []
        for obj in lost:
            reason = self._cannot_rebuild(obj)
            if reason is not None:
                unrecoverable.append((obj, reason))
                continue
            self.transition(obj, PENDING)
            obj.payload = None
            # The new value says again what it contains (new objects, if made inside).
            contains, obj.contains = obj.contains, NO_IDS
            for inner_id in contains:
                inner = self.objects.get(inner_id)
                if inner is not None:
                    inner.container_refs -= 1
                    self._maybe_free(inner)
            if obj.producer.state == DONE and obj.producer not in rerun:
                rerun.append(obj.producer)
        for obj, (error_class, reason) in unrecoverable:
            self.transition(obj, ERROR)
            obj.error = error_payload(error_class(
                f"object {obj.id.hex()} ({obj.size:,} bytes) was lost: {why}; it cannot "
                f"be computed again because {reason}"))
            self._object_finished(obj)
        queued = {task.id for task in rerun}
        while rerun:      # a list, not recursion: lineage chains may be long
            self._rerun(rerun.pop(), rerun, queued, why)

    def _cannot_rebuild(self, obj: ObjectState) -> tuple[type, str] | None:
        """Why ``obj`` cannot be computed again, and the error class that says so (Ray's
        names for the three cases), or None if it can be."""
        producer = obj.producer
        if producer is None:
            return ObjectReconstructionFailedError, "it was made by put(), which leaves " \
                "no lineage (keep a copy, or make it in a task)"
        if not isinstance(producer, TaskState):
            return ObjectReconstructionFailedError, "it is the result of an actor call " \
                "(actor calls are not re-run)"
        if producer.retries_left <= 0:
            return ObjectReconstructionFailedMaxAttemptsExceededError, \
                f"its task {producer.name} has no retries left (max_retries)"
        if self.lineage.get(producer.id) is not producer:
            return ObjectReconstructionFailedLineageEvictedError, \
                producer.lineage_note or f"the lineage of task {producer.name} is gone"
        return None

    def _rerun(self, task: TaskState, rerun: list, queued: set, why: str) -> None:
        """Submit a finished task again; freed arguments are made again from the values
        it kept (``KeptValue``: ready at once), else revived (pending) and their own
        tasks appended to ``rerun``."""
        self.transition(task, WAITING)
        task.worker = None
        task.waiting_on = 0
        task.started_at = task.finished_at = 0.0
        task.unplace()
        task.error_text = None
        self.tasks[task.id] = task
        task.seq = next_seq()               # it shows with the newest in the graph again
        self.graph.task_restarted(task)
        failure = None
        if not task.counted_refs:
            task.counted_refs = []
        for index, object_id in enumerate(itertools.chain(task.deps, task.nested)):
            nested = index >= len(task.deps)
            obj = self.objects.get(object_id)
            if obj is None:
                values = task.lineage_values
                value = values.get(object_id) if values is not None else None
                if value is not None:
                    obj = self._revive_value(object_id, value)
                else:
                    obj = self._revive(object_id, rerun, queued)
                if obj is None:
                    if failure is None:
                        results = ", ".join(r.hex() for r in task.returns)
                        failure = error_payload(ObjectLostError(
                            f"object {results} was lost: {why}; computing it again needs "
                            f"task {task.name} to run again, but its argument "
                            f"{object_id.hex()} was freed and "
                            f"{self._lineage_gone_text(object_id)}"))
                    continue
            obj.task_refs += 1
            task.counted_refs.append(object_id)
            if nested:
                continue
            if obj.state == PENDING:
                task.waiting_on += 1
                obj.add_dependent(task)
            elif obj.state == ERROR and failure is None:
                failure = obj.error
        if failure is not None:
            self._fail_task(task, failure, "an argument needed to compute a lost object "
                                           "again is gone")
        elif task.waiting_on == 0:
            self._enqueue(task)

    def _revive(self, object_id: bytes, rerun: list, queued: set) -> ObjectState | None:
        """A freed object that its kept task can make again: pending once more."""
        producer = self.lineage_producer.get(object_id)
        if producer is None or producer.state == FAILED:
            return None
        if producer.state == DONE and producer.id not in queued and \
                producer.retries_left <= 0:
            return None     # it would have to run again (already running: it makes it)
        obj = ObjectState(object_id, PENDING, producer=producer)
        self.objects[object_id] = obj
        self.graph.object_revived(object_id)
        producer.lineage_refs += 1
        self.counts["objects_rebuilt"] += 1
        if producer.state == DONE and producer.id not in queued:
            queued.add(producer.id)
            rerun.append(producer)
        return obj

    def _revive_value(self, object_id: bytes, value: KeptValue) -> ObjectState:
        """A freed inline argument made again from the value a kept task kept of it:
        ready (or an error) at once, registered as ``_revive`` registers an object (no
        holder; the rerun counts its task reference). Nothing runs for it."""
        obj = ObjectState(object_id, PENDING, producer=value.producer)
        self.transition(obj, READY if value.error is None else ERROR)
        obj.payload = value.payload
        obj.error = value.error
        obj.size = value.size
        self.objects[object_id] = obj
        self.graph.object_revived(object_id)
        self.counts["objects_rebuilt"] += 1
        return obj

    def _lineage_gone_text(self, object_id: bytes) -> str:
        producer = self.lineage_producer.get(object_id)
        if producer is None:
            return "no lineage is kept for it (made by put() or an actor, or its " \
                   "lineage was dropped)"
        return f"its task {producer.name} has no retries left (max_retries)"

    def _keep_lineage(self, task: TaskState) -> None:
        """A task finished: keep it (its arguments) while its results live, so they can
        be computed again if their only copy is lost.

        ``task_done`` calls it only for a task with a stored result, refs inside a
        result, a generator mode, or pins ahead: inline values are never lost, so a
        plain task whose results are all inline keeps nothing (Ray's rule), unless a kept
        task took one as a nested argument before it was made. An argument made by a kept
        task pins that task (``lineage_refs``: a rerun rebuilds it if it was freed); an
        inline one nothing kept can make again (a put(), or a task that kept no
        lineage) has its value kept here instead (``KeptValue``, counted in
        ``lineage_size``), as Ray's task spec holds its inlined arguments."""
        if task.id in self.lineage:          # a re-run of a kept task
            return
        if task.retries_left <= 0:
            return      # it cannot run again (``_cannot_rebuild`` says so first)
        objects = self.objects
        live = 0
        for object_id in task.returns:
            o = objects.get(object_id)
            if o is not None and o.producer is task:
                live += 1
        if not live:
            return
        size = LINEAGE_ENTRY_BYTES + payload_size(task.args)
        task.lineage_refs += live       # and the pins of kept tasks that finished first
        self.lineage[task.id] = task
        lineage_producer = self.lineage_producer
        for object_id in task.returns:
            lineage_producer[object_id] = task
        values = None
        for object_id in itertools.chain(task.deps, task.nested):
            producer = lineage_producer.get(object_id)
            if producer is not None:
                producer.lineage_refs += 1
                continue
            obj = objects.get(object_id)
            if obj is not None and obj.state == PENDING:
                if type(obj.producer) is TaskState:
                    # Its task has not finished (a nested argument): pinned ahead, the
                    # pin counted if it is kept, taken back by ``_drop_lineage`` if not.
                    obj.producer.lineage_refs += 1
                continue
            if values is not None and object_id in values:
                continue
            value = self._value_to_keep(obj)
            if value is not None:
                if values is None:
                    values = {}
                values[object_id] = value
                size += value.size
        task.lineage_values = values
        task.lineage_size = size
        self.lineage_bytes += size
        while self.lineage_bytes > self.max_lineage_bytes and self.lineage:
            oldest = next(iter(self.lineage.values()))
            self._drop_lineage(oldest, "the lineage of its task "
                                       f"{oldest.name} was dropped to stay under "
                                       f"max_lineage_bytes ({self.max_lineage_bytes:,})")

    def _value_to_keep(self, obj: ObjectState | None) -> KeptValue | None:
        """The value of an argument that a kept task keeps (see ``_keep_lineage``): that
        of a ready inline object or of an error, holding no refs; None for a stored or
        pending one, and for an actor's handle object (made again, it would name an
        actor that may be gone)."""
        if obj is None or obj.contains:
            return None
        if obj.state == READY:
            if obj.payload is None:
                return None     # stored: only its producer's lineage can make it again
            value = KeptValue(obj.payload, None, obj.size, obj.producer)
        elif obj.state == ERROR:
            value = KeptValue(None, obj.error, payload_size(obj.error), obj.producer)
        else:
            return None
        if obj.id in self.actor_of_creation:
            return None
        return value

    def _lineage_result_freed(self, obj: ObjectState) -> None:
        producer = obj.producer
        if producer is not None and self.lineage.get(producer.id) is producer:
            producer.lineage_refs -= 1
            if producer.lineage_refs <= 0:
                self._drop_lineage(producer, None)

    def _drop_lineage(self, task: TaskState, note: str | None) -> None:
        """Forget kept tasks nothing needs any more (or ``note`` says why one goes)."""
        stack = [task]
        while stack:
            task = stack.pop()
            if self.lineage.pop(task.id, None) is None:
                continue
            task.lineage_refs = 0
            if note is not None:
                task.lineage_note, note = note, None
            self.lineage_bytes -= task.lineage_size
            task.lineage_values = None
            for object_id in task.returns:
                if self.lineage_producer.get(object_id) is task:
                    del self.lineage_producer[object_id]
            if task.state == DONE:
                task.args = None
            for object_id in itertools.chain(task.deps, task.nested):
                producer = self.lineage_producer.get(object_id)
                if producer is None:
                    obj = self.objects.get(object_id)
                    if obj is not None and obj.state == PENDING and \
                            type(obj.producer) is TaskState:
                        obj.producer.lineage_refs -= 1   # a pin ahead, never counted
                    continue
                producer.lineage_refs -= 1
                if producer.lineage_refs <= 0:
                    stack.append(producer)

    # -- objects ----------------------------------------------------------------------
    def put_object(self, peer_id: bytes, m: msg.PutObject) -> None:
        obj = self.objects.get(m.object_id)
        if obj is None:
            obj = ObjectState(m.object_id, PENDING)
            self.objects[m.object_id] = obj
            if self.parked_wants:
                self._unpark(obj)
        elif obj.state != PENDING:
            return  # an id is written once; a repeated put is ignored
        self._hold(peer_id, obj)
        worker = None
        if m.location is not None:
            worker = self.workers.get(m.location[0])
        self.transition(obj, READY if m.location is None or worker is not None else ERROR)
        if m.location is not None:
            worker_id, segment, size = m.location
            obj.size = size
            if worker is None:
                obj.error = error_payload(ObjectLostError(
                    f"object {m.object_id.hex()} was put into the store of a worker that "
                    f"has since died"))
            else:
                self.add_location(obj, worker, segment)
                self.outbox.append(Send(worker_id, msg.SealObjects([m.object_id])))
        else:
            obj.payload = m.payload
            obj.size = sum(len(b) for b in m.payload)
        self._set_contains(obj, m.contained)
        self._object_finished(obj)

    def add_location(self, obj: ObjectState, worker: WorkerState, segment: str) -> None:
        """Record a copy of a stored object in ``worker``'s store."""
        if worker.id not in obj.locations:
            self.copies.add(obj.id, worker.node)
        if obj.locations is NO_LOCATIONS:
            obj.locations = {}
        obj.locations[worker.id] = segment
        if obj.id not in worker.objects:
            worker.objects.add(obj.id)
            worker.stored_bytes += obj.size

    def stores_on_node(self, node_id: str) -> list[WorkerState]:
        """Workers of a node, the one with the most free store memory first (by what
        the worker last reported, which counts memory readers still hold, if more)."""
        node = self.nodes.get(node_id)
        if node is None:
            return []
        return sorted(node.workers.values(), key=lambda w: -(w.store_capacity - max(
            w.stored_bytes, w.metrics.get("store_used") or 0)))

    def restore_plan(self, object_id: bytes, node_id: str):
        """How to answer ``RestoreOnNode``: ``[worker id, address, segment, node]`` of a
        copy a store of that node holds already, else ``(spill entry, workers to ask in
        turn)``: the node's stores, most free memory first, or any worker. LookupError
        when the object is gone or was never spilled."""
        obj = self.objects.get(object_id)
        if obj is None or obj.state != READY:
            raise LookupError(f"object {bytes(object_id).hex()} is gone")
        for worker_id, segment in obj.locations.items():
            worker = self.workers.get(worker_id)
            if worker is not None and worker.node.id == node_id:
                return [worker.id, worker.address, segment, worker.node.id]
        if obj.spill is None:
            raise LookupError(f"object {bytes(object_id).hex()} is not spilled")
        return obj.spill, self.stores_on_node(node_id) or list(self.workers.values())

    def retire_workers(self, worker_ids: list, now: float | None = None,
                       resend_after: float = 10.0) -> dict:
        """Let workers leave without losing an object (Dask's ``retire_workers``): they
        get no new task or actor from now on (out of the load index), and each ready
        object whose only copies they hold is copied to the staying worker with the most
        free store memory (``ReplicateObjects``; asked again after ``resend_after``
        seconds without its ``ObjectAdded``). Called again until the reply says no
        object and no task is left; the caller then stops the workers.

        Returns:
            ``{"workers", "objects", "tasks", "stuck"}``: retiring workers known, copies
            still missing, tasks still assigned to them, objects no staying worker can
            take (there is none).
        """
        now = time.monotonic() if now is None else now
        retiring = []
        for worker_id in worker_ids:
            worker = self.workers.get(worker_id)
            if worker is None:
                continue
            if not worker.retiring:
                worker.retiring = True
                self.placement.remove(worker)
            retiring.append(worker)
        staying = [w for w in self.workers.values() if not w.retiring]
        free = {w.id: w.store_capacity - w.stored_bytes for w in staying}
        missing = stuck = 0
        asks: dict[bytes, list] = {}
        for worker in retiring:
            for object_id in worker.objects:
                obj = self.objects.get(object_id)
                if obj is None or obj.state != READY or obj.spill is not None or any(
                        not self.workers[w].retiring for w in obj.locations
                        if w in self.workers):
                    continue
                if not staying:
                    stuck += 1
                    continue
                missing += 1
                asked = self.replicating.get(object_id)
                if asked is not None and asked[0] in free and now - asked[1] < resend_after:
                    continue
                target = max(staying, key=lambda w: free[w.id])
                free[target.id] -= obj.size
                self.replicating[object_id] = (target.id, now)
                asks.setdefault(target.id, []).append([object_id, self.locations_of(obj)])
        for target_id, entries in asks.items():
            self.outbox.append(Send(target_id, msg.ReplicateObjects(entries)))
        return {"workers": len(retiring), "objects": missing, "stuck": stuck,
                "tasks": sum(len(w.assigned) for w in retiring)}

    def silent_workers(self, heard_at: dict[bytes, float], now: float,
                       timeout: float) -> list[bytes]:
        """Workers silent for more than ``timeout`` seconds, to count as lost:
        ``heard_at`` says when the server last read from each connected worker."""
        return [worker_id for worker_id, at in heard_at.items()
                if worker_id in self.workers and now - at > timeout]

    def object_added(self, worker_id: bytes, m: msg.ObjectAdded) -> None:
        """A worker made a copy of a stored object (a transfer)."""
        self.replicating.pop(m.object_id, None)
        obj = self.objects.get(m.object_id)
        worker = self.workers.get(worker_id)
        if worker is None:
            return
        if obj is None or obj.state != READY or not (obj.locations or obj.spill):
            # Freed meanwhile: the copy is not needed.
            self.outbox.append(Send(worker_id, msg.FreeObjects([[m.object_id, False]])))
            return
        self.add_location(obj, worker, m.segment)

    def locations_of(self, obj: ObjectState) -> list | None:
        """Where a stored object can be read: [[node, worker address, segment, size]],
        then [None, spill path, offset, size] if it was spilled."""
        if not obj.locations and obj.spill is None:
            return None
        out = []
        for worker_id, segment in obj.locations.items():
            worker = self.workers.get(worker_id)
            if worker is not None:
                out.append([worker.node.id, worker.address, segment, obj.size])
        if obj.spill is not None:
            out.append([None, *obj.spill])
        return out

    def locations_for(self, obj: ObjectState, node: NodeState) -> list | None:
        """``locations_of`` for a reader on ``node``, bounded: every copy on that node
        (read in place), then at most ``_REMOTE_COPIES`` copies elsewhere, the holders
        taken in turn (``CopyIndex.some``) so readers spread their fetches, then the
        spill. A reader that can read none asks ``LocateObject`` for all of them; a
        much-read object's copies grow with the cluster, and naming every one in every
        task made each task's message O(copies)."""
        locations = obj.locations
        if len(locations) <= _REMOTE_COPIES:
            return self.locations_of(obj)
        out = []
        size = obj.size
        for worker_id, worker in node.workers.items():
            segment = locations.get(worker_id)
            if segment is not None:
                out.append([node.id, worker.address, segment, size])
        remote = 0
        for holder in self.copies.some(obj.id, _REMOTE_COPIES + 1):
            if holder is node:
                continue
            for worker_id, worker in holder.workers.items():
                segment = locations.get(worker_id)
                if segment is not None:
                    out.append([holder.id, worker.address, segment, size])
                    break
            remote += 1
            if remote == _REMOTE_COPIES:
                break
        if obj.spill is not None:
            out.append([None, *obj.spill])
        return out

    def objects_spilled(self, worker_id: bytes, m: msg.ObjectsSpilled) -> list:
        """A worker wrote objects to a spill file and will release their memory.

        Returns the ids not recorded from this file (freed, or spilled before): when
        that is all of them, the worker deletes the file.
        """
        worker = self.workers.get(worker_id)
        live = set()
        gone = []
        for object_id, offset, size in m.entries:
            obj = self.objects.get(object_id)
            if obj is None or obj.state != READY:
                gone.append(object_id)
                continue
            if worker is not None and obj.locations.pop(worker_id, None) is not None:
                self.copies.remove(object_id, worker.node.id)
                if object_id in worker.objects:
                    worker.objects.discard(object_id)
                    worker.stored_bytes -= obj.size
            if obj.spill is None:
                obj.spill = [m.path, offset, size]
                live.add(object_id)
            else:
                gone.append(object_id)  # it already had a spill copy; this one is unused
        if live:
            self.spill_files[m.path] = live
            self.spill_file_writer[m.path] = worker_id
            if m.host_local is True and worker is not None:
                self.spill_file_node[m.path] = worker.node.id
        return gone

    def locate(self, object_id: bytes) -> list | None:
        """Current locations, or None when the object failed, was lost or freed (the
        caller then asks for the object itself, which carries the error)."""
        obj = self.objects.get(object_id)
        if obj is None or obj.state != READY:
            return None
        return self.locations_of(obj) or []

    def _forget_spilled(self, obj: ObjectState) -> None:
        path = obj.spill[0]
        obj.spill = None
        live = self.spill_files.get(path)
        if live is None:
            return
        live.discard(obj.id)
        if live:
            return
        del self.spill_files[path]
        self.spill_file_node.pop(path, None)
        writer = self.spill_file_writer.pop(path, None)
        target = writer if writer in self.workers else next(iter(self.workers), None)
        if target is not None:
            self.outbox.append(Send(target, msg.DeleteSpilled([path])))

    def incref(self, peer_id: bytes, ids: Iterable[bytes]) -> None:
        for object_id in ids:
            obj = self.objects.get(object_id)
            if obj is not None:
                self._hold(peer_id, obj)

    def decref(self, peer_id: bytes, ids: Iterable[bytes]) -> None:
        holds = self.peer_holds.get(peer_id)
        for object_id in ids:
            obj = self.objects.get(object_id)
            if obj is None:
                continue
            obj.holders.discard(peer_id)
            if holds is not None:
                holds.discard(object_id)
            self._maybe_free(obj)

    def want(self, peer_id: bytes, ids: Iterable[bytes]) -> None:
        for object_id in ids:
            obj = self.objects.get(object_id)
            if obj is None and peer_id in self.actor_processes:
                self.parked_wants.setdefault(object_id, {})[peer_id] = \
                    time.monotonic() + _PARKED_WANT_SECONDS
            elif obj is None:
                self.outbox.append(Send(peer_id, msg.ObjectReady(object_id, None, error_payload(
                    ObjectLostError(f"object {object_id.hex()} was freed (no references were "
                                    f"left) or never existed")), None)))
            elif obj.state == PENDING:
                obj.add_waiters((peer_id,))
            else:
                self.outbox.append(Send(peer_id, msg.ObjectReady(object_id, obj.payload,
                                                             obj.error,
                                                             self.locations_of(obj))))

    def _unpark(self, obj: ObjectState) -> None:
        """An object came to exist that actor processes asked for before."""
        parked = self.parked_wants.pop(obj.id, None)
        if parked:
            obj.add_waiters(parked)

    def expire_parked_wants(self, now: float) -> None:
        """Answer wants of objects that never came to exist (their caller died)."""
        for object_id in [i for i, peers in self.parked_wants.items()
                          if min(peers.values()) < now]:
            for peer_id in self.parked_wants.pop(object_id):
                self.outbox.append(Send(peer_id, msg.ObjectReady(object_id, None, error_payload(
                    ObjectLostError(f"object {object_id.hex()} was freed (no references "
                                    f"were left) or never existed")), None)))

    def _hold(self, peer_id: bytes, obj: ObjectState) -> None:
        obj.holders.add(peer_id)
        holds = self.peer_holds.get(peer_id)
        if holds is not None:
            holds.add(obj.id)

    def _set_contains(self, obj: ObjectState, contained: list) -> None:
        if not contained:
            return          # ``contains`` stays as it is: empty (NO_IDS)
        kept = []
        for inner_id in contained:
            inner = self.objects.get(inner_id)
            if inner is not None:
                inner.container_refs += 1
                kept.append(inner_id)
        obj.contains = kept

    def _object_finished(self, obj: ObjectState) -> None:
        """``obj`` left PENDING: tell waiters, wake dependents, free it if unwanted."""
        if obj.waiters:
            note = msg.ObjectReady(obj.id, obj.payload, obj.error, self.locations_of(obj))
            for peer_id in obj.waiters:
                self.outbox.append(Send(peer_id, note))
            obj.waiters = NO_PEERS
        if obj.dependents:
            dependents, obj.dependents = obj.dependents, NO_IDS
            for task in dependents:
                if task.state != WAITING:
                    continue
                if obj.state == ERROR:
                    self._fail_task(task, obj.error, argument_failed_text(obj))
                else:
                    task.waiting_on -= 1
                    if task.waiting_on == 0:
                        self._enqueue(task)
        self._maybe_free(obj)

    def _maybe_free(self, obj: ObjectState) -> None:
        # ``obj.referenced()``, inline: most calls come here from a decref of a
        # result, once or twice a task.
        if obj.state == PENDING or obj.holders or obj.task_refs > 0 or obj.container_refs > 0:
            return
        stack = [obj]
        while stack:
            obj = stack.pop()
            if self.objects.pop(obj.id, None) is None:
                continue
            if self.debug_log:
                logger.debug("object %s freed", obj.id.hex(),
                             extra={"stimulus_id": self.stimulus_id})
            if obj.id in self.actor_of_creation:
                self.actor_unreferenced(obj.id)
            if self.streams:
                self._stream_freed(obj.id)
            if self.lineage:
                self._lineage_result_freed(obj)
            self.graph.object_freed(obj, self.workers)
            obj.payload = None
            obj.error = None
            if obj.spill is not None:
                self._forget_spilled(obj)
            if obj.locations:
                for worker_id in obj.locations:
                    worker = self.workers.get(worker_id)
                    if worker is not None:
                        if obj.id in worker.objects:
                            worker.objects.discard(obj.id)
                            worker.stored_bytes -= obj.size
                        self.outbox.append(Send(worker_id, msg.FreeObjects([[obj.id, True]])))
                obj.locations = NO_LOCATIONS
                self.copies.forget(obj.id)
            for inner_id in obj.contains:
                inner = self.objects.get(inner_id)
                if inner is not None:
                    inner.container_refs -= 1
                    if inner.state != PENDING and not inner.referenced():
                        stack.append(inner)

    # -- tasks ------------------------------------------------------------------------
    def register_function(self, m: msg.RegisterFunction) -> None:
        self.functions.setdefault(m.function_hash, m.payload)

    def submit(self, peer_id: bytes, spec: msg.SubmitTask) -> None:
        driver = peer_id if peer_id in self.drivers else self._job_of(peer_id, spec.parent)
        task = TaskState(spec, peer_id, driver)
        task.progress_row = self.progress.add(task.name, task.state)
        self.tasks[task.id] = task
        self.counts["submitted"] += 1
        holds = self.peer_holds.get(peer_id)
        for object_id in spec.returns:
            obj = ObjectState(object_id, PENDING, producer=task)
            self.objects[object_id] = obj
            obj.holders.add(peer_id)            # ``_hold``, inline
            if holds is not None:
                holds.add(object_id)
            if self.parked_wants:
                self._unpark(obj)
        failure = None
        reason = None
        if spec.deps or spec.nested:
            task.counted_refs = []
        for object_id in spec.deps:
            obj = self.objects.get(object_id)
            if obj is None:
                if failure is None:
                    lost = ObjectLostError(f"argument {object_id.hex()} of task {spec.name} "
                                           f"was freed or never existed")
                    failure, reason = error_payload(lost), f"ObjectLostError: {lost}"
                continue
            obj.task_refs += 1
            task.counted_refs.append(object_id)
            if obj.state == PENDING:
                task.waiting_on += 1
                obj.add_dependent(task)
            elif obj.state == ERROR and failure is None:
                failure, reason = obj.error, argument_failed_text(obj)
        for object_id in spec.nested:
            obj = self.objects.get(object_id)
            if obj is not None:
                obj.task_refs += 1
                task.counted_refs.append(object_id)
        if failure is None and spec.function_hash not in self.functions:
            reason = f"the code of function {spec.name} never reached the scheduler"
            failure = error_payload(ObjectLostError(reason))
            reason = f"ObjectLostError: {reason}"
        # ``_feasible``'s common case inline: no custom resources, CPUs that fit.
        if failure is None and (task.resources is not None
                                or task.num_cpus > self.max_capacity["CPU"] + 1e-9) \
                and not self._feasible(task):
            reason = (f"task {spec.name} asks for num_cpus={task.num_cpus}"
                      + (f" and resources={task.resources}" if task.resources else "")
                      + f", but the largest worker offers {self._capacity_text()}; lower "
                        f"the request or start a worker with enough resources")
            failure = error_payload(TaskUnschedulableError(reason))
            reason = f"TaskUnschedulableError: {reason}"
        if failure is None and task.strategy is not None and task.strategy[0] == "node":
            reason = self._affinity_problem(task)
            if reason is not None:
                failure = error_payload(TaskUnschedulableError(reason))
                reason = f"TaskUnschedulableError: {reason}"
        if failure is not None:
            self._fail_task(task, failure, reason)
        elif task.waiting_on == 0:
            self._enqueue(task)

    def _job_of(self, peer_id: bytes, parent: bytes | None) -> bytes | None:
        """The driver whose job a task submitted by a worker or actor belongs to: that
        of the task or actor submitting it (any driver when that is unknown)."""
        parent_task = self.tasks.get(parent) if parent is not None else None
        if parent_task is not None and parent_task.driver is not None:
            return parent_task.driver
        actor = self.actors.get(self.actor_processes.get(peer_id, b""))
        if actor is not None and actor.job is not None:
            return actor.job
        return next(iter(self.drivers), None)

    def _feasible(self, task: TaskState) -> bool:
        if not self.workers and self.max_capacity["CPU"] == 0.0:
            return True  # no worker has joined yet: wait for one
        if within(task, self.max_capacity["CPU"], self.max_capacity):
            return True
        if self.max_capacity["CPU"] == 0.0 and within(task, float("inf"),
                                                      self.max_capacity):
            # No node has a CPU (a zero-CPU head node): CPU work waits for a worker
            # with CPUs to join, as in Ray; its driver is told once per kind of task.
            if task.driver is not None and (task.driver, task.shape) not in \
                    self._told_waiting:
                self._told_waiting.add((task.driver, task.shape))
                self.outbox.append(Send(task.driver, msg.Output(
                    "(scheduler)", "stderr",
                    f"task {task.name} needs {task.num_cpus:g} CPU but no node of the "
                    f"cluster has a CPU; it waits until a worker with CPUs joins\n")))
            return True
        return False

    def _affinity_problem(self, task: TaskState) -> str | None:
        """Why a hard node affinity cannot be met now (the node is gone or too small),
        or None."""
        _, node_id, soft = task.strategy
        if soft:
            return None
        node = self.nodes.get(node_id)
        if node is None:
            return (f"task {task.name} must run on node {node_id!r} "
                    f"(NodeAffinitySchedulingStrategy, soft=False), which is not alive")
        if not node.fits_ever(task):
            return (f"task {task.name} must run on node {node_id!r}, which never has "
                    f"num_cpus={task.num_cpus:g}"
                    + (f" and resources={task.resources}" if task.resources else ""))
        return None

    def _capacity_text(self) -> str:
        return ", ".join(f"{k}={v:g}" for k, v in self.max_capacity.items())

    def _enqueue(self, task: TaskState) -> None:
        self.transition(task, QUEUED)
        self._ready_queue(task.shape).append(task)

    def _ready_queue(self, shape: tuple) -> ReadyQueue:
        queue = self.ready.get(shape)
        if queue is None:
            queue = self.ready[shape] = ReadyQueue(_still_queued)
        return queue

    def task_done(self, peer_id: bytes, m: msg.TaskDone) -> None:
        worker_id = self.process_host(peer_id, m.task_id) if self.task_processes else peer_id
        task = self._finish_on_worker(worker_id, m.task_id, m.duration)
        if task is None:
            return
        if m.started is not None or m.events is not None:
            self.record_run(peer_id, worker_id, "task", task, m)
        self.transition(task, DONE)
        inline = self._apply_results(self.workers[worker_id], m.results, task.name)
        if task.mode or not inline or task.lineage_refs:
            # Inline values are never lost: no lineage for them, unless a kept task took
            # one unresolved before it was made (a pin ahead: ``_keep_lineage``).
            self._keep_lineage(task)
        self._release_task_refs(task)
        self.graph.task_finished(task)
        if peer_id != worker_id:
            self.process_task_finished(peer_id, m.task_id)

    def _apply_results(self, worker: WorkerState, results: list, task_name: str) -> bool:
        """A task's results (``TaskDone.results``) become ready objects. Returns whether
        each one made is inline (held here, so never lost) with no refs inside: then
        its task keeps no lineage (``task_done``)."""
        inline = True
        for object_id, payload, contained, size, segment in results:
            store = worker
            if payload is None and isinstance(segment, (tuple, list)):
                # A task process wrote it into a store on its host: [worker id, segment].
                store = self.workers.get(segment[0])
                segment = segment[1]
                if store is not None:
                    self.outbox.append(Send(store.id, msg.SealObjects([object_id])))
            obj = self.objects.get(object_id)
            if obj is None or obj.state != PENDING:
                if payload is None and store is not None:   # stored, but unwanted now
                    self.outbox.append(Send(store.id, msg.FreeObjects([[object_id, True]])))
                continue
            if payload is None and store is None:
                inline = False
                self.transition(obj, ERROR)
                obj.error = error_payload(ObjectLostError(
                    f"the result of task {task_name} was written to a worker that died"))
                self._object_finished(obj)
                continue
            self.transition(obj, READY)
            if payload is None:
                inline = False
                obj.size = size
                self.add_location(obj, store, segment)
            else:
                obj.payload = payload
                obj.size = sum(map(len, payload))
            if contained:
                inline = False
                self._set_contains(obj, contained)
            self._object_finished(obj)
        return inline

    def task_failed(self, peer_id: bytes, m: msg.TaskFailed) -> None:
        worker_id = self.process_host(peer_id, m.task_id) if self.task_processes else peer_id
        task = self._finish_on_worker(worker_id, m.task_id, m.duration)
        if task is None:
            return
        if m.started is not None or m.events is not None:
            self.record_run(peer_id, worker_id, "task", task, m)
        if peer_id != worker_id:
            self.process_task_finished(peer_id, m.task_id)
        retrying = m.retriable is True and task.retries_left > 0 and not task.cancelled
        if m.partial:
            self._partial_results(task, self.workers[worker_id], m.partial, retrying)
        if retrying:
            # An application error the task asked to retry (retry_exceptions).
            task.worker = None
            self.tasks[task.id] = task
            self._enqueue(task)
            return
        task.error_text = m.error_text
        self._fail_task(task, m.error)

    def _finish_on_worker(self, worker_id: bytes, task_id: bytes,
                          duration: float) -> TaskState | None:
        task = self.tasks.pop(task_id, None)
        worker = self.workers.get(worker_id)
        if task is None or task.worker is not worker or worker is None:
            if task is not None:
                self.tasks[task_id] = task  # a stale report from a worker we gave up on
            return None
        self._release_slot(worker, task)
        task.finished_at = time.time()
        if not self.task_metrics.task_ran(task.name, duration):
            return task         # a duration that is no number teaches nothing
        previous = self.function_durations.get(task.function_hash)
        self.function_durations[task.function_hash] = (
            duration if previous is None
            else previous + _DURATION_SMOOTHING * (duration - previous))
        return task

    def _fail_task(self, task: TaskState, error: list, text: str | None = None) -> None:
        """Fail ``task`` and, transitively, every task waiting on what it would produce.

        ``text`` says why, for task records and the status page, when the worker did not
        (the scheduler failed the task itself).
        """
        if task.error_text is None:
            task.error_text = text
        stack = [task]
        while stack:
            task = stack.pop()
            if task.state in (DONE, FAILED):
                continue
            # A queued task stays in its ready queue, which drops it at the front once
            # it is no longer queued: leaving the queue costs O(1).
            if task.worker is not None:
                self._release_slot(task.worker, task)
                task.worker = None
            self.transition(task, FAILED)
            self.tasks.pop(task.id, None)
            self.graph.task_finished(task)
            for object_id in task.returns:
                obj = self.objects.get(object_id)
                if obj is None or obj.state != PENDING:
                    continue
                self.transition(obj, ERROR)
                obj.error = error
                if obj.waiters:
                    note = msg.ObjectReady(obj.id, None, error, None)
                    for peer_id in obj.waiters:
                        self.outbox.append(Send(peer_id, note))
                    obj.waiters = NO_PEERS
                dependents, obj.dependents = obj.dependents, NO_IDS
                for dependent in dependents:
                    if dependent.state == WAITING:
                        if dependent.error_text is None:
                            dependent.error_text = argument_failed_text(obj)
                        stack.append(dependent)
                self._maybe_free(obj)
            self._release_task_refs(task)

    # -- cancelling -------------------------------------------------------------------
    def cancel(self, m: msg.CancelTask) -> None:
        """Cancel the task or actor call producing ``m.object_id`` (if still pending):
        unstarted ones fail at once, running ones are interrupted by their process.
        ``force`` on an actor call raises ValueError, as in Ray (the caller asks)."""
        obj = self.objects.get(m.object_id)
        if obj is None:
            return                        # freed: nothing to cancel
        if m.force and obj.producer is not None and not isinstance(obj.producer, TaskState):
            raise ValueError("force=True is not supported for actor tasks. Use kill() on "
                             "the actor's handle to end the actor.")
        if obj.state != PENDING:
            return                        # finished: nothing to cancel
        if isinstance(obj.producer, TaskState):
            self._cancel_task(obj.producer, m.force, m.recursive)
            return
        for call in list(self.actor_calls.values()):
            if m.object_id in call.returns:
                self._cancel_call(call)
                return

    def _cancel_task(self, task: TaskState, force: bool, recursive: bool) -> None:
        if recursive:
            for child in [t for t in self.tasks.values() if t.parent == task.id]:
                self._cancel_task(child, force, True)
        if task.state in (DONE, FAILED) or task.id not in self.tasks:
            return
        if task.state in (WAITING, QUEUED):
            self._fail_task(task, error_payload(TaskCancelledError(
                f"task {task.name} was cancelled before it started")))
        elif task.worker is not None:
            if task.worker.process_waiting and self.cancel_waiting_for_process(task):
                self._fail_task(task, error_payload(TaskCancelledError(
                    f"task {task.name} was cancelled before it started")))
                return
            task.cancelled = task.cancelled or force
            runner = task.process.id if task.process is not None else task.worker.id
            self.outbox.append(Send(runner, msg.CancelRunning(task.id, force)))

    def _release_task_refs(self, task: TaskState) -> None:
        counted, task.counted_refs = task.counted_refs, NO_IDS
        if counted:
            self._drop_task_refs(counted)
        if task.id not in self.lineage:
            task.args = None

    def _drop_task_refs(self, object_ids) -> None:
        """Release what a task, actor call or actor held of its arguments."""
        for object_id in object_ids:
            obj = self.objects.get(object_id)
            if obj is not None:
                obj.task_refs -= 1
                self._maybe_free(obj)

    # -- placement --------------------------------------------------------------------
    def _pipeline_depth(self, task: TaskState) -> int:
        """How many tasks like this a worker may queue beyond what its CPUs run now.

        Short functions are pipelined so a worker never idles between the scheduler's
        messages; long or not yet measured ones wait here, where a new or freed worker can
        still take them.
        """
        if (task.resources or task.env_vars or task.runtime_env or task.max_calls
                or task.strategy):
            return 0
        duration = self.function_durations.get(task.function_hash)
        if duration is None:
            return 0
        return min(self.max_queued_per_worker,
                   int(self.pipeline_seconds / max(duration, 1e-6)))

    def _lost_dependency(self, task: TaskState) -> list | None:
        """The error of an argument that failed or was lost after the task was queued.
        An argument being computed again sends the task back to waiting for it."""
        pending = None
        for object_id in task.deps:
            obj = self.objects.get(object_id)
            if obj is None:
                return error_payload(ObjectLostError(
                    f"argument {object_id.hex()} of task {task.name} is gone"))
            if obj.state == ERROR:
                return obj.error
            if obj.state == PENDING:
                if pending is None:
                    pending = []
                pending.append(obj)
        if pending:
            self.transition(task, WAITING)
            task.waiting_on = len(pending)
            for obj in pending:
                obj.add_dependent(task)
        return None

    def _expected_seconds(self, task: TaskState) -> float:
        return self.function_durations.get(task.function_hash, _UNKNOWN_DURATION)

    def _missing_bytes(self, task: TaskState, worker: WorkerState) -> int:
        """Bytes of stored arguments with no copy on ``worker``'s node."""
        missing = 0
        holds = self.copies.holds
        node_id = worker.node.id
        for object_id in task.deps:
            obj = self.objects.get(object_id)
            if obj is not None and obj.locations and not holds(object_id, node_id):
                missing += obj.size
        return missing

    def _pick_worker(self, task: TaskState, fits_now, fits_ever) -> WorkerState | None:
        """The worker that minimises (argument bytes it must fetch) / bandwidth + its
        queued work, among those whose node has room; else one that may pipeline it.

        No scan: the load index (``placement.WorkerIndex``) gives the least loaded
        worker in O(log W); with stored arguments, the other candidates are the least
        loaded workers of nodes holding a copy of one (every other worker must fetch
        all of them, so none beats the least loaded one), at most
        ``_HOLDER_NODES`` of those nodes (``_nearest``). ``fits_now`` and ``fits_ever``
        (``placement.task_fits_now`` / ``task_fits_ever``) are made once per shape by
        ``schedule``: its tasks ask the same of a node.
        """
        if task.strategy is not None:
            return self._pick_by_strategy(task)
        index = self.placement
        best = index.least_loaded(fits_now)
        if best is not None:
            if not task.deps:
                return best
            return self._nearest(task, best, fits_now, None)
        depth = self._pipeline_depth(task)
        if depth == 0:
            return None
        best = index.shortest_queue(fits_ever, depth)
        if best is None or not task.deps:
            return best
        return self._nearest(task, best, fits_ever, depth)

    def _nearest(self, task: TaskState, best: WorkerState, fits, depth: int | None
                 ) -> WorkerState:
        """Among ``best`` (the least loaded worker with a free slot, or with ``depth``
        the one to pipeline on) and the like worker of other nodes weighed, the one with
        the lowest load + bytes of stored arguments it must fetch / bandwidth (the
        earliest joined on a tie).

        The nodes weighed: every node holding a copy of an argument when they are at
        most ``_HOLDER_NODES`` (then the choice is the one a scan of every worker
        makes: a worker elsewhere must fetch them all, so none beats ``best``); else
        that many holders, shared among the arguments largest first, each argument's
        in turn (``CopyIndex.some``), and the ``_NEAR_TOP`` workers at the top of the
        load index as they are (the least loaded, where a copy that happens to be there
        is worth most). A decision is so O(arguments x nodes weighed) whatever the
        number of copies: the copies of a much-read input spread over the cluster as
        tasks run, and weighing every holder made decisions grow with them.
        """
        objects = self.objects
        copies = self.copies
        stored = None
        for object_id in task.deps:
            obj = objects.get(object_id)
            if obj is None or not obj.locations:
                continue
            if stored is None:
                stored = []
            stored.append((obj.size, object_id))
        if stored is None:
            return best
        if len(stored) > 1:
            stored.sort(key=_first_item, reverse=True)
        node_ids = copies.node_ids
        wheres = [(size, node_ids(object_id)) for size, object_id in stored]
        bandwidth = self.bandwidth

        def fetch_seconds(node_id: str) -> float:
            missing = 0
            for size, where in wheres:
                if node_id not in where:
                    missing += size
            return missing / bandwidth

        here = fetch_seconds(best.node.id)
        if here == 0.0:
            return best     # the least loaded worker reads every argument in place
        index = self.placement
        floor = free_cost(best) if depth is None else queue_cost(best)
        best_key = (floor + here, index.order(best))
        weighed = {best.node.id}      # ``best`` is its node's least loaded worker too
        if sum(len(where) for _, where in wheres) <= _HOLDER_NODES:
            nodes = [node for _, object_id in stored
                     for node in copies.some(object_id, _HOLDER_NODES)]
        else:
            # Workers near the top of the load index, weighed as they are (their entry
            # says their load), then holders.
            for worker, load, order in index.near_top(_NEAR_TOP, depth):
                node = worker.node
                if node.id in weighed or not fits(worker) or (
                        depth is not None and worker.queued_beyond_slots() >= depth):
                    continue
                weighed.add(node.id)
                key = (load + fetch_seconds(node.id), order)
                if key < best_key:
                    best, best_key = worker, key
            share = -(-_HOLDER_NODES // len(stored))
            nodes = [node for _, object_id in stored
                     for node in copies.some(object_id, share)]
        # No worker is less loaded than ``best``: a node whose fetch alone puts it
        # behind the best so far is not looked into; those fetching least go first.
        candidates = []
        for node in nodes:
            if node.id not in weighed:
                weighed.add(node.id)
                candidates.append((fetch_seconds(node.id), node))
        candidates.sort(key=_first_item)
        best_on_node = index.best_on_node
        for fetch, node in candidates:
            if floor + fetch > best_key[0]:
                break
            found = best_on_node(node, fits, depth)
            if found is None:
                continue
            worker, load, order = found
            key = (load + fetch, order)
            if key < best_key:
                best, best_key = worker, key
        return best

    def _pick_by_strategy(self, task: TaskState) -> WorkerState | None:
        """Placement under ``scheduling_strategy``: ``SPREAD`` takes the least loaded node
        with room; node affinity that node, or (``soft``) anywhere if the node is gone
        or could never fit the task."""
        strategy = task.strategy
        if strategy == "SPREAD":
            room = [w for w in self.workers.values()
                    if w.free_slots() > 0 and not w.retiring and w.node.fits_now(task)]
            if not room:
                return None
            load: dict[str, int] = {}
            for worker in self.workers.values():
                node_id = worker.node.id
                load[node_id] = (load.get(node_id, 0) + len(worker.assigned)
                                 + self.actors_on_worker.get(worker.id, 0))
            return min(room, key=lambda w: (load[w.node.id], w.queued_seconds / w.slots))
        _, node_id, soft = strategy
        target = self.nodes.get(node_id)
        if target is not None and target.fits_ever(task):
            # The node's own workers only: a per-node scan, never the cluster's.
            here = [w for w in target.workers.values()
                    if w.free_slots() > 0 and not w.retiring and target.fits_now(task)]
            return min(here, key=lambda w: w.queued_seconds / w.slots) if here else None
        if not soft:
            return None
        return self.placement.least_loaded(task_fits_now(task))

    def schedule(self) -> None:
        """Place waiting actors and queued tasks on workers while any has room (after
        releasing a share of what departed peers held: ``release_departed``)."""
        self.debug_log = logger.isEnabledFor(logging.DEBUG)
        if self.departed_holds:
            self.release_departed()
        if not self.workers:
            return
        if self.actors_to_place:
            self._place_actors()
        emptied = None
        for shape, queue in self.ready.items():
            # One task that finds no worker stops its whole shape (the others of the
            # shape would find none either): no pass over the queued tasks. The shape's
            # tasks ask the same of a node (CPUs, resources): one pair of questions.
            fits_now = fits_ever = None
            while (task := queue.peek()) is not None:
                failure = self._lost_dependency(task) if task.deps else None
                if task.state == WAITING:     # for an argument being rebuilt
                    queue.popleft()
                    continue
                if failure is not None:
                    queue.popleft()
                    self._fail_task(task, failure, f"an argument of task {task.name} "
                                                   f"failed or was lost after it was queued")
                    continue
                if fits_now is None:
                    fits_now, fits_ever = task_fits_now(task), task_fits_ever(task)
                worker = self._pick_worker(task, fits_now, fits_ever)
                if worker is None:
                    if task.strategy is not None and task.strategy[0] == "node":
                        problem = self._affinity_problem(task)
                        if problem is not None:       # its node left meanwhile
                            queue.popleft()
                            self._fail_task(task, error_payload(
                                TaskUnschedulableError(problem)), problem)
                            continue
                    break
                queue.popleft()
                self._assign(task, worker)
            if not queue:
                emptied = emptied or []
                emptied.append(shape)
        if emptied:
            for shape in emptied:
                del self.ready[shape]

    def _assign(self, task: TaskState, worker: WorkerState) -> None:
        task.worker = worker
        self.transition(task, ASSIGNED)
        if worker.slots + worker.blocked > worker.running and worker.node.fits_now(task):
            task.holds_slot = True
            worker.running += 1
            worker.node.acquire(task)
            if task.resources and task.resources.get("GPU"):
                task.gpus = worker.node.take_gpus(task.resources["GPU"])
        else:
            worker.pipelined.append(task)
        worker.assigned[task.id] = task
        duration = self.function_durations.get(task.function_hash)
        task.long = duration is None or duration > self.pipeline_seconds
        if task.long:
            worker.long_tasks += 1
        # What ``_expected_seconds`` says, from the duration just read.
        worker.queued_seconds += _UNKNOWN_DURATION if duration is None else duration
        self.placement.update(worker)
        task.place(worker.hex_id, worker.node.id, worker.pid,
                   self._missing_bytes(task, worker) if task.deps else 0)
        if task.gpus or task.env_vars or task.runtime_env or task.max_calls:
            self._run_in_process(task, worker, process_key(task))
            return
        if task.function_hash not in worker.known_functions:
            worker.known_functions.add(task.function_hash)
            self.outbox.append(Send(worker.id, msg.FunctionCode(
                task.function_hash, self.functions[task.function_hash])))
        self.outbox.append(Send(worker.id, self._run_task_message(task)))

    def _run_task_message(self, task: TaskState) -> msg.RunTask:
        deps: list | tuple = NO_IDS     # no list made for no arguments (sent as an array)
        if task.deps:
            deps = []
            node = task.worker.node
            for object_id in task.deps:
                obj = self.objects[object_id]
                deps.append([object_id, obj.payload, self.locations_for(obj, node)])
        return msg.RunTask(task.id, task.function_hash, task.name, task.args, deps,
                           task.returns,
                           task.retry_exceptions if task.retries_left > 0 else None,
                           task.mode)

    def _release_slot(self, worker: WorkerState, task: TaskState) -> None:
        if worker.assigned.pop(task.id, None) is None:
            return
        if task.gpus is not None:
            worker.node.give_gpus(task.gpus, task.resources["GPU"])
            task.gpus = None
        worker.queued_seconds = max(0.0, worker.queued_seconds - self._expected_seconds(task))
        if task.long:
            worker.long_tasks -= 1
        if not task.holds_slot:
            self.placement.update(worker)
            return  # still in ``pipelined``; skipped there when its turn comes
        task.holds_slot = False
        worker.running -= 1
        if task.blocked:
            task.blocked = False
            worker.blocked -= 1
        else:
            worker.node.acquire(task, -1.0)
        self._promote(worker)

    def _promote(self, worker: WorkerState) -> None:
        """A slot freed up: the oldest pipelined task on that worker starts running."""
        pipelined = worker.pipelined
        while pipelined and worker.slots + worker.blocked > worker.running:  # a free slot
            task = pipelined.popleft()
            if task.worker is not worker or task.holds_slot or task.id not in worker.assigned:
                continue
            task.holds_slot = True
            worker.running += 1
            worker.node.acquire(task)
        self.placement.update(worker)

    def task_blocked(self, worker_id: bytes, task_id: bytes) -> None:
        """A task waits on objects: lend its CPUs and slot to other tasks meanwhile (its
        GPU devices stay its own)."""
        if self.task_processes:
            worker_id = self.process_host(worker_id, task_id)
        worker = self.workers.get(worker_id)
        task = worker.assigned.get(task_id) if worker is not None else None
        if task is None or task.blocked:
            return
        task.blocked = True
        worker.blocked += 1
        worker.node.acquire(task, -1.0)
        self._promote(worker)

    def task_unblocked(self, worker_id: bytes, task_id: bytes) -> None:
        if self.task_processes:
            worker_id = self.process_host(worker_id, task_id)
        worker = self.workers.get(worker_id)
        task = worker.assigned.get(task_id) if worker is not None else None
        if task is None or not task.blocked:
            return
        task.blocked = False
        worker.blocked -= 1
        worker.node.acquire(task)
        self.placement.update(worker)

    @staticmethod
    def _task_record(task: TaskState) -> dict:
        return {"task_id": task.id.hex(), "name": task.name, "state": task.state,
                "submitted_at": task.submitted_at, "started_at": task.started_at,
                "finished_at": task.finished_at, "placement": task.placement,
                "returns": [r.hex() for r in task.returns], "error": task.error_text}

    def task_records(self, limit: int = 1000) -> list[dict]:
        """Finished tasks (in the order they finished) and those still in flight, the
        newest ``limit`` of them (all for 0)."""
        finished = self.graph.finished.values()
        if not limit:
            live = list(self.tasks.values())
        else:
            live = list(itertools.islice(reversed(self.tasks.values()), limit))[::-1]
            keep = limit - len(live)
            finished = list(itertools.islice(reversed(finished), keep))[::-1] if keep else []
        return [self._task_record(t) for t in itertools.chain(finished, live)]

    # -- output -----------------------------------------------------------------------
    def task_output(self, m: msg.TaskOutput) -> None:
        task = self.tasks.get(m.task_id)
        driver = task.driver if task is not None else None
        targets = [driver] if driver is not None else list(self.drivers)
        source = m.task_id if type(m.task_id) is bytes else b""
        note = msg.Output(m.prefix, m.stream, m.text, source, m.live)
        for peer_id in targets:
            self.outbox.append(Send(peer_id, note))

    # -- profile events -----------------------------------------------------------------
    def producers_of(self, object_ids) -> list:
        """The tasks (and actor calls) that made these objects, as far as the task graph
        remembers them (live objects, and the last ``task_history`` freed ones): a
        run's flow arrows, looked up when the trace is read."""
        producer_of = self.graph.producer_of
        parents: list = []
        for object_id in object_ids:
            producer = producer_of(object_id)
            if producer is not None and producer not in parents:
                parents.append(producer)
        return parents

    def record_run(self, peer_id: bytes, worker_id: bytes, kind: str, task, m,
                   pid: int | None = None) -> None:
        """Keep what the outcome ``m`` (``TaskDone``, ``TaskFailed``, ``ActorCallDone``)
        of ``task`` says of its run on ``worker_id``: the spans inside it (``m.events``),
        then the run itself, ``m.started`` plus ``m.duration``, by ``pid`` (default: the
        process ``peer_id``). This runs once per task: the run's event is made of what
        the scheduler holds already, with one check of the start time, and the ids of
        its arguments (their producers are looked up only when a trace is read). A bad
        start time is dropped with a warning naming the peer, and the outcome stands."""
        inputs = tuple(task.deps) if task.deps else ()
        if m.events is not None:
            self.record_events(peer_id, worker_id, m.events, inputs)
        started = m.started
        if started is None:
            return
        # ``duration`` passed the wire checks (a finite non-negative number); the end is
        # finite only if the start is (inf - inf and nan - nan are nan).
        stop = started + m.duration if type(started) is float else math.nan
        if stop - stop != 0.0:
            logger.warning("dropped the %s span of %s from %s: started must be a finite "
                           "float, got %.100r", kind, task.name, self.describe_peer(peer_id),
                           started)
            return
        if pid is None:
            peer = self.workers.get(peer_id)
            if peer is None:
                peer = self.task_processes.get(peer_id)
            pid = peer.pid if peer is not None else 0
        self.task_stream.record_run(worker_id, kind, task.name, started, stop, pid, task.id,
                                    inputs)

    def record_events(self, peer_id: bytes, worker_id: bytes, events, inputs: tuple = ()
                      ) -> None:
        """Keep the profile events a peer sent (``TaskDone.events`` and the like) in the
        task stream of ``worker_id``. Each is checked: a bad one is dropped with a
        warning naming the peer, and the message it came with stands. This runs once
        per task: the usual case (every event good) is one pass."""
        check = checked_fields
        if type(events) is list:
            try:
                self.task_stream.record(worker_id, list(map(check, events)), inputs)
                return
            except (ValueError, TypeError):
                pass
        good, bad, problem = [], 0, ""
        if type(events) is not list:
            bad, problem = 1, f"events must be a list, got {type(events).__name__}"
            events = ()
        for item in events:
            try:
                good.append(check(item))
            except (ValueError, TypeError) as exc:
                bad += 1
                problem = problem or str(exc)
        if bad:
            logger.warning("dropped %d bad profile event(s) from %s: %s", bad,
                           self.describe_peer(peer_id), problem)
        if good:
            self.task_stream.record(worker_id, good, inputs)

    def describe_peer(self, peer_id: bytes) -> str:
        """A peer as a log line names it: its kind, id and pid when known."""
        worker = self.workers.get(peer_id)
        if worker is not None:
            return f"worker {peer_id.hex()[:8]} (pid {worker.pid}, {worker.address})"
        if peer_id in self.actor_processes:
            return f"actor process {peer_id.hex()[:8]}"
        process = self.task_processes.get(peer_id)
        if process is not None:
            return f"task process {peer_id.hex()[:8]} (pid {process.pid})"
        return f"peer {peer_id.hex()[:8]}"

    def timeline(self, since: int = 0) -> dict:
        """The profile events kept after sequence number ``since`` (``GetTimeline``),
        each with the tasks that made its run's arguments (``producers_of``)."""
        stream = self.task_stream
        producers_of = self.producers_of
        return {"entries": [[e.seq, e.worker, list(e.event),
                             producers_of(e.inputs) if e.inputs else []]
                            for e in stream.since(since)],
                "workers": dict(stream.workers), "seq": stream.seq}

    def critical_path(self, object_id: bytes) -> dict:
        """The longest chain of task runs and input moves that led to the finished object
        ``object_id`` (``GetCriticalPath``); ValueError says why there is none."""
        name = f"object {bytes(object_id).hex()}"
        if not self.graph.has_object(object_id):
            raise ValueError(f"{name} is not known to the scheduler (never made, or freed "
                             f"and forgotten: it keeps the last task_history objects)")
        target = self.graph.producer_of(object_id)
        if target is None:
            raise ValueError(f"{name} was put, not computed by a task: it has no "
                             f"critical path")
        task = self.graph.task(target)
        if task is None:
            raise ValueError(f"the task that made {name} is no longer remembered (the "
                             f"scheduler keeps the last task_history tasks)")
        if task.state not in (DONE, FAILED):
            raise ValueError(f"task {task.name}, which makes {name}, has not finished "
                             f"({task.state}): get() the object first")
        recorded, moves = {}, {}
        for worker, fields in self.task_stream.events():
            kind, name, start, stop, _, task_id, nbytes, peer = fields
            if kind in RUN_KINDS:
                kept = recorded.get(task_id)
                if kept is None or kept[0] <= start:                # its latest run
                    recorded[task_id] = (start, stop, kind, worker)
            elif kind in MOVE_KINDS and task_id:
                try:
                    moved = bytes.fromhex(name)
                except ValueError:
                    continue
                move = Move(kind, worker.hex(), start, stop, nbytes, peer)
                earlier = moves.get((task_id, moved))
                if earlier is not None:       # a restore, then the fetch of its copy
                    main = earlier if earlier.kind != "fetch" else move
                    move = main._replace(start=min(earlier.start, move.start),
                                         stop=max(earlier.stop, move.stop))
                moves[(task_id, moved)] = move
        runs, frontier, seen = {}, [target], set()
        while frontier:
            task_id = frontier.pop()
            if task_id in seen:
                continue
            seen.add(task_id)
            item, found = self.graph.task(task_id), recorded.get(task_id)
            if item is None or found is None:
                continue
            inputs = []
            for dep in item.deps:
                producer = self.graph.producer_of(dep)
                inputs.append((dep, producer))
                if producer is not None:
                    frontier.append(producer)
            start, stop, kind, worker = found
            runs[task_id] = Run(item.name, kind, worker.hex(), start, stop, tuple(inputs))
        if target not in runs:
            raise ValueError(f"no run of task {task.name} is recorded: record_timeline is "
                             f"off, or its events were pushed out of the task stream "
                             f"(task_stream_events per worker, task_stream_total_events "
                             f"in all)")
        path = longest_chain(target, runs, moves)
        path["object_id"] = bytes(object_id).hex()
        return path

    # -- status -----------------------------------------------------------------------
    def worker_heartbeat(self, worker_id: bytes, metrics: dict, events=None) -> None:
        """A worker's periodic report of its own figures (store use, spilling), and its
        profile events not tied to a task."""
        worker = self.workers.get(worker_id)
        if worker is None or not isinstance(metrics, dict):
            return
        if events is not None:
            self.record_events(worker_id, worker_id, events)
        worker.last_heartbeat = time.time()
        worker.metrics = {k: v for k, v in list(metrics.items())[:64]
                          if isinstance(k, str) and isinstance(v, (int, float, str, type(None)))
                          and not isinstance(v, bool)}
        self.worker_load.record(worker_id, worker.last_heartbeat, worker.metrics)

    def cluster_resources(self, used: bool = False) -> dict:
        """The nodes' resources summed (``used``: what tasks hold of them now)."""
        total: dict[str, float] = {"CPU": 0.0}
        for node in self.nodes.values():
            total["CPU"] += node.cpus_used if used else node.num_cpus
            for name, amount in (node.resources_used if used else node.resources).items():
                total[name] = total.get(name, 0.0) + amount
        return total

    def node_records(self) -> dict:
        """Every node, alive or departed, with its resources (``nodes()``), and the
        cluster's total and free resources (``available_resources()``)."""
        records = []
        for node in self.nodes.values():
            total = {"CPU": node.num_cpus, **node.resources}
            free = {"CPU": node.num_cpus - node.cpus_used}
            for name, amount in node.resources.items():
                free[name] = amount - node.resources_used.get(name, 0.0)
            records.append({"node_id": node.id, "alive": True, "hostname": node.hostname,
                            "address": node.address, "resources": total,
                            "available": free, "workers": len(node.workers),
                            "joined_at": node.joined_at})
        records.extend(dict(r) for r in self.departed_nodes.values())
        available: dict[str, float] = {}
        for record in records:
            for name, amount in record.get("available", {}).items():
                available[name] = available.get(name, 0.0) + max(0.0, amount)
        return {"nodes": records, "total": self.cluster_resources(),
                "available": {k: v for k, v in available.items() if v > 1e-9}}

    def task_context(self, task_id: bytes) -> dict:
        """What ``get_runtime_context()`` reports inside a running task."""
        task = self.tasks.get(task_id)
        if task is None:
            raise ValueError(f"task {task_id.hex()} is not running")
        resources = {"CPU": task.num_cpus} if task.num_cpus else {}
        resources.update(task.resources or {})
        return {"job_id": task.driver, "resources": resources, "gpus": task.gpus or [],
                "namespace": self.namespaces.get(task.driver, "default")}

    def summary(self) -> dict:
        states: dict[str, int] = {}
        for task in self.tasks.values():
            states[task.state] = states.get(task.state, 0) + 1
        return {
            "workers": len(self.workers),
            "nodes": len(self.nodes),
            "drivers": len(self.drivers),
            "resources": self.cluster_resources(),
            "tasks": states,
            "objects": len(self.objects),
            "actors": sum(1 for a in self.actors.values() if a.state != "dead"),
            "object_bytes": sum(o.size for o in self.objects.values()),
            "counts": dict(self.counts),
        }
