"""What the scheduler keeps about each thing it manages, and the names of their states.

Plain records with no behaviour beyond bookkeeping: objects, tasks, nodes, workers,
actors and actor calls, and a ``Literal`` type naming the states of each kind.
``state.py`` (the scheduler's state machine) and ``actors.py`` (its actor handlers) both
build on these, so neither has to import the other. Which state may follow which is
written in one place, ``transitions.py``.
"""
from __future__ import annotations

import itertools
import time
from collections import deque
from typing import Final, Literal, NamedTuple

from graphstore.core import protocol as msg

#: The states of an object: its producer has not finished / it has a value / an error.
ObjectStateName = Literal["pending", "ready", "error"]
#: The states of a task.
TaskStateName = Literal["waiting", "queued", "assigned", "done", "failed"]
#: The states of an actor (an actor pending placement shares "pending" with objects).
ActorStateName = Literal["pending", "starting", "alive", "restarting", "dead"]
#: The states of an actor call: submitted (running in, or queued for, its actor), ended.
ActorCallStateName = Literal["assigned", "done", "failed"]

#: Object states.
PENDING: Final = "pending"
READY: Final = "ready"
ERROR: Final = "error"
#: Task states (``ASSIGNED``, ``DONE`` and ``FAILED`` are actor call states too).
WAITING: Final = "waiting"
QUEUED: Final = "queued"
ASSIGNED: Final = "assigned"
DONE: Final = "done"
FAILED: Final = "failed"
#: Actor states.
PENDING_PLACEMENT: Final = "pending"
STARTING: Final = "starting"
ALIVE: Final = "alive"
RESTARTING: Final = "restarting"
DEAD: Final = "dead"
#: Holder id of detached actors' creation objects: never a peer, so never released.
DETACHED_HOLDER = b"\0" * 16
#: The empty defaults of an object's rarely filled fields, shared until one is filled:
#: most objects never get a waiter, a dependent or a contained ref, and a set and two
#: lists made for each would be most of an object's allocations and memory.
NO_PEERS: frozenset = frozenset()
NO_IDS: tuple = ()
#: An object's ``locations`` while it has no store copy (inline objects: most of them).
#: Shared, so never written: ``SchedulerState.add_location`` makes a dict of its own
#: for the first copy (``validate_state`` checks it stays empty).
NO_LOCATIONS: dict = {}
#: The next number in the order in which tasks, actor calls and objects came to be (their
#: ``seq``): the task graph shows the newest by it, with no table of its own.
next_seq = itertools.count().__next__
#: The shape (CPUs, resources, strategy) of tasks asking for CPUs only, one tuple per
#: CPU count shared by all of them: most tasks' shape, made once.
_PLAIN_SHAPES: dict[float, tuple] = {}
_MAX_PLAIN_SHAPES = 64      # CPU counts programs use are few; any others get their own
#: What one kept task costs the scheduler beyond its arguments (its state, ids, lists),
#: counted against ``max_lineage_bytes``.
LINEAGE_ENTRY_BYTES = 1024


def payload_size(payload) -> int:
    """Bytes of a payload (a task's packed arguments, an object's value or error):
    buffers, maybe wrapped as frames."""
    if not payload:
        return 0
    try:
        if len(payload) == 1:           # the common case: one pickle, no large buffers
            return len(payload[0])
        return sum(len(b) for b in payload)
    except TypeError:
        return 0


class KeptValue(NamedTuple):
    """The value of an inline argument, kept with the lineage of a task that took it
    when nothing else can make it again (a put(), or a task that keeps no lineage), as
    Ray's task spec inlines small arguments: a rerun recreates the argument from it.
    The payload is the object's own list (immutable buffers), never a copy."""
    payload: list | None
    error: list | None
    size: int
    #: The task (or actor call) that made it, None for a put(): the graph's edge.
    producer: object


def argument_failed_text(obj: "ObjectState") -> str:
    """Why a task fails when one of its arguments is an error, for records and pages."""
    producer = obj.producer
    text = f"argument {obj.id.hex()} is an error"
    if producer is not None and producer.error_text:
        last = producer.error_text.strip().splitlines()[-1:] or [""]
        text += f": task {producer.name} failed with {last[0][:500]}"
    elif producer is None or producer.state == DONE:
        text += " (its value was lost)"
    return text


class ObjectState:
    __slots__ = ("id", "state", "payload", "error", "size", "holders", "task_refs",
                 "container_refs", "contains", "waiters", "producer", "dependents",
                 "created_at", "locations", "spill", "seq")

    def __init__(self, object_id: bytes, state: ObjectStateName,
                 producer: "TaskState | None" = None):
        self.id = object_id
        self.seq = next_seq()
        self.state: ObjectStateName = state
        self.payload: list | None = None
        self.error: list | None = None
        self.size = 0
        self.holders: set[bytes] = set()
        self.task_refs = 0
        self.container_refs = 0
        #: Ids of the objects its value holds refs to (``NO_IDS`` until it has any).
        self.contains: list[bytes] | tuple = NO_IDS
        #: Peers waiting for it to leave PENDING (``NO_PEERS`` until one asks:
        #: ``add_waiters``).
        self.waiters: set[bytes] | frozenset = NO_PEERS
        self.producer = producer
        #: Tasks waiting on it (``NO_IDS`` until one does: ``add_dependent``).
        self.dependents: list[TaskState] | tuple = NO_IDS
        self.created_at = time.time()
        #: Stored (large) objects: worker id -> segment name of each copy
        #: (``NO_LOCATIONS`` until the first).
        self.locations: dict[bytes, str] = NO_LOCATIONS
        #: Processes mapping the object's memory: a freed segment is reused only if none.
        #: [path, offset, size] in the spill target, once spilled.
        self.spill: list | None = None

    def referenced(self) -> bool:
        return bool(self.holders) or self.task_refs > 0 or self.container_refs > 0

    def add_waiters(self, peers) -> None:
        if not self.waiters:
            self.waiters = set(peers)
        else:
            self.waiters.update(peers)

    def add_dependent(self, task: "TaskState") -> None:
        if not self.dependents:
            self.dependents = [task]
        else:
            self.dependents.append(task)


class TaskState:
    __slots__ = ("id", "function_hash", "name", "args", "deps", "nested", "returns",
                 "num_cpus", "resources", "retries_left", "submitter", "driver", "state",
                 "worker", "waiting_on", "submitted_at", "started_at", "finished_at",
                 "shape", "long", "blocked", "holds_slot", "counted_refs", "_placement",
                 "error_text", "parent", "cancelled", "retry_exceptions", "lineage_refs",
                 "lineage_size", "lineage_note", "lineage_values", "mode", "strategy",
                 "env_vars", "runtime_env", "max_calls", "process", "gpus", "queued_at",
                 "stimulus_id", "progress_row", "seq")

    def __init__(self, spec: msg.SubmitTask, submitter: bytes, driver: bytes | None):
        self.id = spec.task_id
        self.seq = next_seq()
        self.function_hash = spec.function_hash
        self.name = spec.name
        self.args = spec.args
        # No list kept for no arguments (most tasks): two objects less per queued task
        # for memory and for the garbage collector to walk.
        self.deps = spec.deps or NO_IDS
        self.nested = spec.nested or NO_IDS
        self.returns = spec.returns
        self.num_cpus = spec.num_cpus
        self.resources = spec.resources or None
        self.retries_left = spec.max_retries
        self.submitter = submitter
        self.driver = driver
        self.state: TaskStateName = WAITING
        #: The event that made its last state change (``transitions.py``), for the logs.
        self.stimulus_id = ""
        #: Its name's counts in ``TaskProgress`` (``progress.LIVE_STATES``), once known.
        self.progress_row: list[int] | None = None
        self.worker: WorkerState | None = None
        self.waiting_on = 0
        self.submitted_at = time.time()
        self.started_at = 0.0
        self.finished_at = 0.0
        #: ``time.monotonic()`` when it last became ready to run (queued), for the
        #: queue wait metric; 0.0 while it never was.
        self.queued_at = 0.0
        self.long = False
        self.blocked = False
        #: Whether the task occupies one of its worker's slots and its node's CPUs (else
        #: it is pipelined: queued on the worker behind running tasks).
        self.holds_slot = False
        #: Ids whose ``task_refs`` this task incremented, released exactly once
        #: (``NO_IDS`` while none: a task without arguments makes no list).
        self.counted_refs: list[bytes] | tuple = NO_IDS
        #: Where it went (``placement``), as a tuple in ``PLACEMENT_FIELDS`` order.
        self._placement: tuple | None = None
        self.error_text: str | None = None
        self.parent = spec.parent
        #: Set by cancel(force=True): a death of its worker fails it instead of retrying.
        self.cancelled = False
        #: Application errors to retry, as the worker checks them (see SubmitTask).
        self.retry_exceptions = spec.retry_exceptions
        #: A generator task's mode (``graphstore.core.generators``), 0 for values.
        self.mode = spec.mode
        #: While kept as lineage (a finished task whose results may have to be computed
        #: again): its live results plus kept tasks that take them as arguments.
        self.lineage_refs = 0
        self.lineage_size = 0
        #: Why its results cannot be computed again, once that is known.
        self.lineage_note: str | None = None
        #: While kept: its inline arguments that nothing else can make again, by id
        #: (``KeptValue``), or None when there are none.
        self.lineage_values: dict[bytes, KeptValue] | None = None
        extra = spec.extra
        #: Where it may run: None, "SPREAD" or ("node", node id, soft).
        self.strategy = None
        #: Environment variables it needs (it runs in a task process with them), and
        #: after how many calls that process is replaced (0: never).
        self.env_vars: dict | None = None
        #: Packages and pip requirements it needs (resolved: URIs), set up on its host
        #: before its task process starts.
        self.runtime_env: dict | None = None
        self.max_calls = 0
        if extra:
            strategy = extra.get("strategy")
            self.strategy = tuple(strategy) if type(strategy) is list else strategy
            self.env_vars = extra.get("env_vars") or None
            self.runtime_env = extra.get("runtime_env") or None
            self.max_calls = extra.get("max_calls") or 0
        #: The task process running it (``task_processes.py``), if it needs one.
        self.process = None
        #: GPU indices on its node while it holds them.
        self.gpus: list[int] | None = None
        if self.resources is None and self.strategy is None:
            shape = _PLAIN_SHAPES.get(self.num_cpus)
            if shape is None:
                shape = (self.num_cpus, (), None)
                if len(_PLAIN_SHAPES) < _MAX_PLAIN_SHAPES:
                    _PLAIN_SHAPES[self.num_cpus] = shape
            self.shape = shape
        else:
            self.shape = (self.num_cpus, tuple(sorted(self.resources.items()))
                          if self.resources else (), self.strategy)

    @property
    def placement(self) -> dict | None:
        """Why the task went where it went: worker (hex id), node, pid, and the bytes
        of its arguments it had to fetch; None while it is not placed. Made when read
        (records, pages): placing a task keeps only a tuple."""
        placed = self._placement
        return None if placed is None else dict(zip(PLACEMENT_FIELDS, placed))

    def place(self, worker_hex: str, node_id: str, pid: int, missing_bytes: int) -> None:
        self._placement = (worker_hex, node_id, pid, missing_bytes)

    def unplace(self) -> None:
        self._placement = None


#: What a task's ``placement`` says, in the order ``TaskState.place`` takes it.
PLACEMENT_FIELDS = ("worker", "node", "pid", "missing_bytes")


def within(task: "TaskState", cpus: float, resources: dict) -> bool:
    """Whether ``task``'s request fits in ``cpus`` and ``resources`` (totals, not free)."""
    if task.num_cpus > cpus + 1e-9:
        return False
    if task.resources:
        for name, amount in task.resources.items():
            if amount > resources.get(name, 0.0) + 1e-9:
                return False
    return True


class NodeState:
    """A host: its workers share its CPUs and custom resources, as in Ray.

    Its GPUs are devices as well as an amount: each task or actor holding GPUs holds
    particular ones (indices 0..n-1, which a worker maps through its
    ``CUDA_VISIBLE_DEVICES``), a whole device for each whole GPU asked, or a share of one
    device for a fraction (the fullest device it fits, as Ray does)."""
    __slots__ = ("id", "num_cpus", "resources", "cpus_used", "resources_used", "workers",
                 "gpu_free", "hostname", "address", "joined_at")

    def __init__(self, node_id: str):
        self.id = node_id
        self.num_cpus = 0.0
        self.resources: dict[str, float] = {}
        self.cpus_used = 0.0
        self.resources_used: dict[str, float] = {}
        self.workers: dict[bytes, WorkerState] = {}
        #: Per GPU index: the share of that device not held by anyone.
        self.gpu_free: list[float] = []
        self.hostname = ""
        self.address = ""
        self.joined_at = time.time()

    def fits_now(self, task: TaskState) -> bool:
        if self.cpus_used + task.num_cpus > self.num_cpus + 1e-9:
            return False
        if task.resources:
            for name, amount in task.resources.items():
                if (self.resources_used.get(name, 0.0) + amount
                        > self.resources.get(name, 0.0) + 1e-9):
                    return False
            gpus = task.resources.get("GPU")
            if gpus and self._gpu_choice(gpus) is None:
                return False
        return True

    def resize_gpus(self) -> None:
        """The node's GPU count changed (a worker with GPUs joined or left)."""
        count = int(self.resources.get("GPU", 0.0) + 1e-9)
        if count > len(self.gpu_free):
            self.gpu_free.extend([1.0] * (count - len(self.gpu_free)))
        else:
            del self.gpu_free[count:]

    def _gpu_choice(self, amount: float) -> list[int] | None:
        free = self.gpu_free
        if amount >= 1.0 - 1e-9:
            whole = [i for i, f in enumerate(free) if f >= 1.0 - 1e-9]
            need = int(amount + 1e-9)
            return whole[:need] if len(whole) >= need else None
        fitting = [(f, i) for i, f in enumerate(free) if f >= amount - 1e-9]
        return [min(fitting)[1]] if fitting else None

    def take_gpus(self, amount: float) -> list[int]:
        """Hold GPU devices for ``amount`` GPUs (it fits: see ``fits_now``)."""
        chosen = self._gpu_choice(amount) or []
        share = 1.0 if amount >= 1.0 - 1e-9 else amount
        for i in chosen:
            self.gpu_free[i] -= share
        return chosen

    def give_gpus(self, indices: list[int], amount: float) -> None:
        share = 1.0 if amount >= 1.0 - 1e-9 else amount
        for i in indices:
            if i < len(self.gpu_free):
                self.gpu_free[i] = min(1.0, self.gpu_free[i] + share)

    def fits_ever(self, task: TaskState) -> bool:
        return within(task, self.num_cpus, self.resources)

    def acquire(self, task: TaskState, sign: float = 1.0) -> None:
        self.cpus_used += sign * task.num_cpus
        if task.resources:
            for name, amount in task.resources.items():
                self.resources_used[name] = self.resources_used.get(name, 0.0) + sign * amount


class WorkerState:
    """A worker process: ``slots`` tasks run at once; its node owns the resources."""
    __slots__ = ("id", "pid", "hostname", "node", "num_cpus", "resources", "address",
                 "slots", "assigned", "known_functions", "registered_at", "long_tasks",
                 "blocked", "running", "pipelined", "store_capacity", "objects",
                 "queued_seconds", "stored_bytes", "metrics", "last_heartbeat",
                 "processes", "process_waiting", "labels", "retiring", "hex_id")

    def __init__(self, reg: msg.RegisterWorker, node: NodeState):
        self.id = reg.worker_id
        #: ``id.hex()``, made once: each task placed here names it in its placement.
        self.hex_id = self.id.hex()
        #: Names its deployment gave it (``graphstore worker --label``).
        self.labels = dict(reg.labels)
        #: Leaving on purpose (``RetireWorkers``): no new work, objects copied away.
        self.retiring = False
        self.pid = reg.pid
        self.hostname = reg.hostname
        self.node = node
        self.num_cpus = float(reg.num_cpus)
        self.resources = dict(reg.resources or {})
        self.address = reg.address
        self.store_capacity = reg.store_capacity
        #: Ids of stored objects with a copy in this worker's store.
        self.objects: set[bytes] = set()
        self.stored_bytes = 0
        #: Expected seconds of work assigned here (running and queued).
        self.queued_seconds = 0.0
        self.slots = max(1, int(self.num_cpus))
        self.assigned: dict[bytes, TaskState] = {}
        self.known_functions: set[bytes] = set()
        self.registered_at = time.time()
        #: Assigned tasks that are long or not yet measured: nothing is pipelined behind
        #: them, so short tasks never wait on a long one in a worker's queue.
        self.long_tasks = 0
        #: Tasks waiting inside ``get``; their slots run other tasks meanwhile.
        self.blocked = 0
        #: Assigned tasks holding a slot (blocked ones included).
        self.running = 0
        #: Assigned tasks queued behind the running ones, oldest first.
        self.pipelined: deque[TaskState] = deque()
        #: The worker's own figures from its last heartbeat (store use, spilling).
        self.metrics: dict = {}
        self.last_heartbeat = 0.0
        #: Task processes this worker started (``task_processes.py``), by process id,
        #: and its tasks waiting for one, per process key.
        self.processes: dict[bytes, object] = {}
        self.process_waiting: dict[tuple, deque[TaskState]] = {}

    def free_slots(self) -> int:
        return self.slots + self.blocked - self.running

    def queued_beyond_slots(self) -> int:
        return len(self.assigned) - self.running


class ActorState:
    __slots__ = ("id", "creation_id", "class_hash", "class_name", "args", "deps", "nested",
                 "num_cpus", "resources", "max_restarts", "max_task_retries",
                 "max_concurrency", "name", "namespace", "detached", "methods", "state",
                 "worker", "incarnation", "process_id", "address", "pid", "restarts",
                 "error", "calls", "no_restart", "exiting", "created_at", "holds_resources",
                 "owner", "last_call", "strategy", "env_vars", "runtime_env", "gpus", "needs_cpu_node",
                 "job", "stimulus_id")

    def __init__(self, m: msg.CreateActor, owner: bytes):
        options = m.options or {}
        self.id = m.actor_id
        self.creation_id = m.creation_id
        self.class_hash = m.class_hash
        self.class_name = m.class_name
        self.args = m.args
        self.deps = list(m.deps)
        self.nested = list(m.nested)
        self.num_cpus = float(options.get("num_cpus", 0) or 0)
        self.resources = options.get("resources") or None
        self.max_restarts = int(options.get("max_restarts", 0))
        self.max_task_retries = int(options.get("max_task_retries", 0))
        self.max_concurrency = options.get("max_concurrency")
        self.name = options.get("name")
        self.namespace = options.get("namespace") or "default"
        self.detached = options.get("lifetime") == "detached"
        self.methods = dict(m.methods or {})
        self.state: ActorStateName = PENDING_PLACEMENT
        self.stimulus_id = ""
        self.worker = None
        self.incarnation = 0
        self.process_id: bytes | None = None
        self.address = ""
        self.pid = 0
        self.restarts = 0
        self.error: list | None = None
        #: Calls submitted and not finished, by id.
        self.calls: dict[bytes, ActorCallState] = {}
        self.no_restart = False
        self.exiting = False
        self.created_at = time.time()
        self.holds_resources = False
        self.owner = owner
        self.last_call: bytes | None = None
        strategy = options.get("scheduling_strategy")
        self.strategy = tuple(strategy) if type(strategy) is list else strategy
        self.env_vars: dict | None = options.get("env_vars") or None
        self.runtime_env: dict | None = options.get("runtime_env") or None
        #: GPU indices on its node while it holds them.
        self.gpus: list[int] | None = None
        #: As in Ray, an actor that does not say ``num_cpus`` needs a node with a CPU to
        #: be placed (it holds none): it never lands on a zero-CPU node.
        self.needs_cpu_node = options.get("num_cpus") is None
        #: The driver whose job made it (what ``get_runtime_context()`` reports).
        self.job: bytes | None = None


class ActorCallState:
    """A method call; it has the fields of a ``TaskState`` that the task graph and the
    task records read, so calls show in both like tasks."""
    __slots__ = ("id", "actor", "name", "returns", "deps", "nested", "counted_refs",
                 "caller", "submitted_at", "started_at", "finished_at", "state",
                 "placement", "error_text", "previous_call", "cancelled", "stimulus_id",
                 "progress_row", "seq")

    def __init__(self, m: msg.ActorCallSubmitted, actor: ActorState, caller: bytes):
        self.id = m.call_id
        self.seq = next_seq()
        self.actor = actor
        self.name = m.name
        self.returns = list(m.returns)
        self.deps = list(m.deps)
        self.nested = list(m.nested)
        self.counted_refs: list[bytes] = []
        self.caller = caller
        self.submitted_at = self.started_at = time.time()
        self.finished_at = 0.0
        self.state: ActorCallStateName = ASSIGNED
        self.stimulus_id = ""
        self.progress_row: list[int] | None = None
        worker = actor.worker
        self.placement = {"actor": actor.id.hex(), "class": actor.class_name,
                          "worker": worker.id.hex() if worker is not None else None,
                          "node": worker.node.id if worker is not None else None,
                          "pid": actor.pid}
        self.error_text: str | None = None
        #: The call submitted to the same actor before this one (method chains in order).
        self.previous_call = actor.last_call
        #: Cancelled while not running: it must not start when it reaches the actor.
        self.cancelled = False
