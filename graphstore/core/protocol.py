"""Every message graphstore processes exchange, and how messages become bytes.

Messages are typed ``NamedTuple``s, so the whole protocol reads in one place. On the wire a
message is ``[code, *fields]`` inside a msgpack header; several messages to one peer are
batched into a single header. Large buffers (out-of-band pickle buffers, numpy data) are not
copied into msgpack: they travel as their own frames after the header, referenced from it by
an ext-type index.

Wire layout of one batch::

    u32 nframes | u64 length of frame 0 ... u64 length of frame n-1 | frame 0 | ... | frame n-1

Frame 0 is the msgpack header (a list of messages); frames 1.. are raw buffers.

Decoding checks every message's fields against ``FIELD_CHECKS`` (types, ids, finite
non-negative amounts), so a malformed message is refused at the door, closing that
connection, and never reaches a handler or the scheduler's state.

Functions here are pure (no sockets) so framing is unit-testable.
"""
from __future__ import annotations

import math
import struct
from typing import Any, NamedTuple

import msgpack

from graphstore.core.call_signature import valid_params
from graphstore.core.config import Limits

# -- messages ---------------------------------------------------------------------------
# Field types: ids are 16-byte ``bytes``; a payload is a list of buffers (see serialization).


class Request(NamedTuple):
    """Wraps a message that expects a ``Reply`` with the same ``rid``."""
    rid: int
    message: Any


class Reply(NamedTuple):
    rid: int
    error: str | None
    value: Any


class RegisterClient(NamedTuple):
    client_id: bytes          # also the job id of what this driver submits
    pid: int
    hostname: str
    namespace: str = "default"    # the job's namespace (named actors, get_actor)


class RegisterWorker(NamedTuple):
    worker_id: bytes
    pid: int
    hostname: str
    node_id: str
    num_cpus: float
    resources: dict
    address: str              # the worker's peer server (object transfers, allocation)
    store_capacity: int


class RegisterFunction(NamedTuple):
    function_hash: bytes
    payload: bytes


class SubmitTask(NamedTuple):
    task_id: bytes
    function_hash: bytes
    name: str
    args: Any                 # payload of (args, kwargs) or None for no arguments
    deps: list                # ids of top-level ref arguments, in placeholder order
    nested: list              # ids of refs nested inside arguments (held, not resolved)
    returns: list             # ids of the objects the task will produce
    num_cpus: float
    resources: dict | None
    max_retries: int
    parent: bytes | None = None   # the task that submitted it (for recursive cancel)
    retry_exceptions: Any = None  # application errors to retry: None, True, or a pickled
                                  # tuple of exception types (checked by the worker)
    mode: int = 0             # 0: returns values; 1: num_returns="dynamic"; 2: "streaming"
                              # (graphstore.core.generators)
    extra: dict | None = None     # rarely used options: "env_vars" (run in a process
                                  # with these), "max_calls", "strategy" (wire form)


class PutObject(NamedTuple):
    object_id: bytes
    payload: list | None      # inline buffers, or None when the object is in a store
    contained: list
    location: list | None     # [worker id, segment name, size] of the store holding it


class LeaseObjects(NamedTuple):
    """Request to a worker's peer server, from a process of its host about to map these
    objects: keep their bytes until the lease is given back. Reply: [segment, size] per
    id, or None for one the store does not hold (spilled or freed)."""
    ids: list


class ReleaseLeases(NamedTuple):
    """To a worker's peer server: leases given back; [[object id, segment], ...]."""
    keys: list


class RevokeLeases(NamedTuple):
    """Worker -> a lease holder, as a request: these objects were freed or spilled; give
    the leases back. Reply: [[object id, segment] given back now, those still viewed
    (they follow in a ``ReleaseLeases`` when the holder's last view of them dies)]; a
    lease the holder gave back already is in neither."""
    keys: list


class ObjectAdded(NamedTuple):
    """Worker -> scheduler: a copy of the object now lives in this worker's store."""
    object_id: bytes
    segment: str


class IncRef(NamedTuple):
    ids: list


class DecRef(NamedTuple):
    ids: list


class WantObjects(NamedTuple):
    """Ask to be sent ``ObjectReady`` for each id once it exists (or failed)."""
    ids: list


class ObjectReady(NamedTuple):
    object_id: bytes
    payload: list | None      # inline buffers; None for an error or a stored object
    error: list | None        # buffers of a pickled exception
    location: list | None     # stored objects: [[node id, worker address, segment, size], ...]
                              # and, when spilled, [None, spill path, offset, size]


class FunctionCode(NamedTuple):
    function_hash: bytes
    payload: bytes


class RunTask(NamedTuple):
    task_id: bytes
    function_hash: bytes
    name: str
    args: Any
    deps: list                # [[id, payload, locations], ...] aligned with SubmitTask.deps
    returns: list
    retry_exceptions: Any = None  # as in SubmitTask, when retries are left
    mode: int = 0             # as in SubmitTask


class TaskDone(NamedTuple):
    task_id: bytes
    results: list             # [[id, payload or None if stored here, contained, size,
                              #   segment name or None], ...]
    duration: float
    events: list | None = None    # spans inside its run (argument fetches), measured
                                  # where it ran: lists in ProfileEvent field order
                                  # (profile_events.py); None: none
    started: float | None = None  # wall clock (time.time()) where it ran when the run
                                  # started: the run's span is [started, started +
                                  # duration]; None: the timeline is not recorded


class TaskFailed(NamedTuple):
    task_id: bytes
    error: list               # payload of a pickled exception (a TaskError)
    duration: float
    error_text: str           # the error's traceback (its end, bounded), for status
                              # pages and task records
    retriable: bool = False   # an application error the task asked to retry
                              # (``retry_exceptions``)
    partial: list | None = None  # results made before the error, as in TaskDone (a
                                 # generator with num_returns=N that raised after some
                                 # yields); the other returns get the error
    events: list | None = None    # as in TaskDone
    started: float | None = None  # as in TaskDone


class TaskBlocked(NamedTuple):
    """A running task waits in ``get``/``wait``: its CPUs may serve other tasks."""
    task_id: bytes


class TaskUnblocked(NamedTuple):
    task_id: bytes


class TaskOutput(NamedTuple):
    """Printed output of a task, from the worker; the scheduler forwards it."""
    task_id: bytes
    prefix: str
    stream: str
    text: str                 # finished text: whole lines, or after a flush() the start
                              # of a line that the next text continues
    live: list | None = None  # the rows the task redraws in place (progress bars), in
                              # their latest state, replacing those sent before ([]:
                              # none left); None: unchanged


class Output(NamedTuple):
    """A task's output, from the scheduler to the driver that submitted the task."""
    prefix: str
    stream: str
    text: str
    source: bytes = b""       # the task (or actor call): its lines and live rows apart
                              # from those of other tasks running at the same time
    live: list | None = None  # as in TaskOutput


class ClusterInfo(NamedTuple):
    num_workers: int
    resources: dict
    workers: list             # [[worker id, node id, peer address], ...]


class Ping(NamedTuple):
    pass


class FreeObjects(NamedTuple):
    """Scheduler -> worker: drop these objects; [[id, reusable], ...]."""
    entries: list


class SealObjects(NamedTuple):
    """Scheduler -> worker: a driver finished writing these; they are the store's now."""
    ids: list


class AllocateObject(NamedTuple):
    """Request to a worker's peer server: room for ``size`` bytes of an object a process
    of its host writes (``lease``: with a lease on it, for a put the writer reads back).
    Reply: the segment."""
    object_id: bytes
    size: int
    lease: bool


class ReserveSegment(NamedTuple):
    """Request to a worker's peer server: its pre-faulted reserve segments, so that a
    writer on the same host can map them before its next puts. Reply: [[segment, size],
    ...] (empty when the store keeps none)."""
    pass


class FetchObject(NamedTuple):
    """Request to a worker's peer server: reply [size, Frame(segment bytes)]."""
    object_id: bytes


class GetStoreSummary(NamedTuple):
    """Request to a worker: its store's use, capacity and objects."""
    pass


class GetMemorySummary(NamedTuple):
    """Request to the scheduler: objects, references and stores (``graphstore memory``)."""
    pass


class GetTaskRecords(NamedTuple):
    """Request to the scheduler: recent task records (name, state, placement, times)."""
    limit: int


class ObjectsSpilled(NamedTuple):
    """Request, worker -> scheduler: these objects now live in spill file ``path`` (at
    [[id, offset, size], ...]); the worker releases their memory once this is answered.
    Reply: ids that are already freed (the file is deleted if none is left)."""
    path: str
    entries: list
    host_local: bool = False  # on the worker's own disk: only its host can read it


class AdoptSegments(NamedTuple):
    """Scheduler -> worker: a worker of this host died; keep these sealed objects of its
    store, whose segments outlive it in shared memory. ``[[id, segment, size], ...]``."""
    entries: list


class AdoptionFailed(NamedTuple):
    """Worker -> scheduler: these segments could not be taken over (gone already)."""
    ids: list


class DeleteSpilled(NamedTuple):
    """Scheduler -> worker: spill files whose objects are all freed."""
    paths: list


class RestoreObject(NamedTuple):
    """Request to a worker: read a spilled object back into its store. Reply: segment."""
    object_id: bytes
    path: str
    offset: int
    size: int


class RestoreOnNode(NamedTuple):
    """Request to the scheduler, from a driver: restore a spilled object into a store on
    ``node_id`` (any node if none there). Reply: [worker id, address, segment, node]."""
    object_id: bytes
    node_id: str


class LocateObject(NamedTuple):
    """Request to the scheduler: an object's current locations (after a stale one)."""
    object_id: bytes


class GetStatus(NamedTuple):
    """Request: the scheduler's summary of workers, resources, tasks and objects."""
    pass


# -- actors ---------------------------------------------------------------------------------

class CreateActor(NamedTuple):
    """Caller -> scheduler: make an actor. ``creation_id`` names an object that is ready
    once ``__init__`` ran (its error if that failed); handles hold a ref to it, so the
    actor's lifetime follows ordinary reference counting. Sent as a request when the
    actor has a name (reply: [actor id, creation id, class name, methods] of the actor
    now bearing it), otherwise one-way."""
    actor_id: bytes
    creation_id: bytes
    class_hash: bytes
    class_name: str
    args: Any
    deps: list
    nested: list
    options: dict             # num_cpus, resources, max_restarts, max_task_retries,
                              # max_concurrency, name, namespace, lifetime, get_if_exists
    methods: dict             # method name -> [num_returns (or "streaming"/"dynamic"),
                              # max_task_retries or None,
                              # retry_exceptions (as in SubmitTask), parameters or None
                              # (call_signature: [[name, kind, has default], ...])]


class StartActor(NamedTuple):
    """Scheduler -> worker: start a process for this actor (its ``incarnation``-th).
    ``environment``: {"env_vars": {...}, "gpus": [GPU indices on the node]}, or None."""
    actor_id: bytes
    incarnation: int
    environment: dict | None = None


class StopActor(NamedTuple):
    """Scheduler -> worker: kill the process of this actor, if it still runs."""
    actor_id: bytes
    incarnation: int


class RegisterActorProcess(NamedTuple):
    """First message of an actor process to the scheduler. Reply: what to build."""
    actor_id: bytes
    incarnation: int
    process_id: bytes
    pid: int
    hostname: str
    node_id: str
    address: str              # the actor process's server, where calls arrive


class ActorReady(NamedTuple):
    """Actor process -> scheduler: ``__init__`` finished (``error``: it raised)."""
    actor_id: bytes
    incarnation: int
    error: list | None


class ActorExiting(NamedTuple):
    """Actor process -> scheduler: ``exit_actor()`` was called; do not restart."""
    actor_id: bytes


class GetActor(NamedTuple):
    """Caller -> scheduler request, answered once the actor is alive or dead:
    ["alive", address, incarnation] or ["dead", error payload]. ``after``: an
    incarnation the caller found dead, to wait for a newer one."""
    actor_id: bytes
    after: int


class GetNamedActor(NamedTuple):
    """Reply: [actor id, creation id, class name, methods], or an error naming the name."""
    name: str
    namespace: str


class KillActor(NamedTuple):
    actor_id: bytes
    no_restart: bool


class ActorCallSubmitted(NamedTuple):
    """Caller -> scheduler: a method call sent straight to the actor, recorded for the
    object directory (its results are pending objects held by the caller) and the graph."""
    call_id: bytes
    actor_id: bytes
    name: str
    deps: list
    nested: list
    returns: list


class ActorCall(NamedTuple):
    """Caller -> actor process: run a method. ``deps``: per ref argument, [id, payload,
    error, locations] when the caller knows its value, or [id] when the actor must ask.
    ``retry``: [retries left, retry_exceptions] when an error may be retried in place."""
    call_id: bytes
    method: str
    name: str
    args: Any
    deps: list
    returns: list
    caller: bytes
    mode: int = 0             # as in SubmitTask
    retry: list | None = None


class ActorCallRetrying(NamedTuple):
    """Actor process -> caller: the call raised an error it retries on (its ``retry``),
    and runs again now; the caller counts one retry used, so that a later death of the
    process does not grant the call more tries than ``max_task_retries``."""
    call_id: bytes


class ActorCallDone(NamedTuple):
    """Actor process -> scheduler: results of a call. Per return: its inline payload, or
    for an object written to a store on the host its location [worker id, segment,
    size]; or the call's error."""
    call_id: bytes
    actor_id: bytes
    results: list             # [[id, payload, contained, size, location, error], ...]
    duration: float
    error_text: str | None
    events: list | None = None    # as in TaskDone: the spans inside the call (fetches)
    started: float | None = None  # as in TaskDone: the call's span


class CancelTask(NamedTuple):
    """Caller -> scheduler: cancel the task (or actor call) producing ``object_id``."""
    object_id: bytes
    force: bool
    recursive: bool


class CancelRunning(NamedTuple):
    """Scheduler -> worker or actor process: interrupt this running task or call."""
    task_id: bytes
    force: bool


class CancelQueuedCall(NamedTuple):
    """Scheduler -> caller: an actor call was cancelled while no process of its actor
    runs; if the call still waits in the caller, it fails there and is never sent."""
    call_id: bytes


# -- generator tasks --------------------------------------------------------------------

class GeneratorItem(NamedTuple):
    """Worker or actor process -> scheduler: a generator task or call (its first return is
    ``generator_id``) yielded its ``index``-th value, ``object_id``. The object was put by
    the sender (who holds it until this is handled), or, when ``error`` is given, it is
    that error (raised in the generator) and the scheduler makes it, held by the sender.
    ``streaming``: hand it to the caller now (``holder``, for actor calls: the caller;
    tasks' callers are known to the scheduler); else (``num_returns="dynamic"``) the
    task's result will contain it."""
    generator_id: bytes
    index: int
    object_id: bytes
    error: list | None
    streaming: bool
    holder: bytes


class GeneratorItemReady(NamedTuple):
    """Scheduler -> caller: the ``index``-th value of the streaming generator
    ``generator_id`` is ``object_id`` (held for the caller now), with its value or where
    it is, as in ``ObjectReady``."""
    generator_id: bytes
    index: int
    object_id: bytes
    payload: list | None
    error: list | None
    location: list | None


class WorkerHeartbeat(NamedTuple):
    """Worker -> scheduler, every ``heartbeat_interval`` seconds: the worker's own figures
    (``store_used``, ``store_objects``, ``spilled_bytes``, ...; flat numbers and text)."""
    metrics: dict
    events: list | None = None    # spans not tied to one task (spills, restores), as
                                  # in TaskDone


class SchedulerHeartbeat(NamedTuple):
    """Scheduler -> worker, every ``heartbeat_interval`` seconds: a worker that hears
    nothing for ``worker_timeout`` seconds has lost its scheduler (a cut network does
    not close the connection) and exits."""


class GetTaskGraph(NamedTuple):
    """Request to the scheduler: the task graph in node-link form, the ``limit`` most
    recent nodes, or the ancestry of the objects ``roots`` (a list of ids) if given."""
    roots: list | None
    limit: int


class GetClusterOverview(NamedTuple):
    """Request to the scheduler: the status page's overview and its workers table
    (``graphstore status``)."""
    pass


# -- tasks in processes of their own --------------------------------------------------------

class StartTaskProcess(NamedTuple):
    """Scheduler -> worker: start a task process for tasks that need an environment of
    their own: {"env_vars": {...}, "gpus": [GPU indices on the node]}; it runs at most
    ``max_calls`` tasks (0: no limit) and then exits."""
    process_id: bytes
    environment: dict
    max_calls: int


class StopTaskProcess(NamedTuple):
    """Scheduler -> worker: end this idle task process."""
    process_id: bytes


class RegisterTaskProcess(NamedTuple):
    """First message of a task process to the scheduler (a request)."""
    process_id: bytes
    worker_id: bytes          # the worker that started it: its CPUs and slot run the task
    pid: int
    hostname: str


class TaskProcessExited(NamedTuple):
    """Worker -> scheduler: a task process it started has exited (for one that never
    registered: its tasks must not wait for it)."""
    process_id: bytes
    returncode: int


class GetNodes(NamedTuple):
    """Request to the scheduler: every node (alive or departed) with its resources, and
    the cluster's total and available resources: {"nodes", "total", "available"}."""
    pass


class GetTimeline(NamedTuple):
    """Request to the scheduler: the profile events it keeps (``graphstore.timeline()``),
    those after sequence number ``since``. Reply: {"entries": [[seq, worker id, event
    (a list), parent task ids], ...], "workers": {worker id: {"pid", "host", "node",
    "address"}}, "seq": the newest sequence number}."""
    since: int


class GetCriticalPath(NamedTuple):
    """Request to the scheduler: the longest chain of task runs and transfers that led
    to the finished object ``object_id`` (``graphstore.critical_path()``). Reply:
    {"object_id", "total", "steps": [{"name", "kind", "task_id", "worker", "start",
    "duration", ...}, ...], ...} (scheduler/critical_path.py), first step first; or
    {"problem": why it has none} (not finished, a put, forgotten)."""
    object_id: bytes


class GetTaskContext(NamedTuple):
    """Request to the scheduler: what ``get_runtime_context()`` says inside a running
    task: {"job_id", "namespace", "resources", "gpus"}."""
    task_id: bytes


# -- one thing, described (notebook reprs) -------------------------------------------------
# Each answer costs the scheduler O(1) or O(workers + nodes): no scan of objects or tasks,
# so a notebook may ask each time it draws a ref, a handle or the cluster.

class DescribeCluster(NamedTuple):
    """Request to the scheduler: workers, nodes, resources, store use and task counts."""
    pass


class DescribeObject(NamedTuple):
    """Request to the scheduler: one object's state, size and where it lives (stores,
    spill file, inline), and the task that made it."""
    object_id: bytes


class DescribeActor(NamedTuple):
    """Request to the scheduler: one actor's state, name and where it runs."""
    actor_id: bytes


# -- inspection: ``graphstore list`` and ``graphstore logs`` --------------------------------

class ListState(NamedTuple):
    """Request to the scheduler (``graphstore list``): the newest ``limit`` rows of one
    ``kind`` ("tasks", "actors", "objects", "workers"), filtered there by ``state`` and
    ``name`` (None: any). Reply: ``{"kind", "rows", "truncated"}``, or ``{"error":
    {"text", "choices"}}`` for an unknown kind or state."""
    kind: str
    state: str | None
    name: str | None
    limit: int


class FetchLog(NamedTuple):
    """Request to the scheduler (``graphstore logs``): part of the log of ``target``
    ("scheduler", a worker's or an actor's id or a prefix of it, or its process's pid),
    read as ``ReadLog`` says;
    an empty ``target`` asks for the list of log files. Reply: ``ReadLog``'s reply with
    ``"source"`` (which process) added, ``{"logs": [...]}`` for the list, or ``{"error":
    {"text", "choices"}}`` for an unknown or ambiguous target."""
    target: str
    offset: int
    tail: int


class ReadLog(NamedTuple):
    """Request, scheduler -> worker: its log file's (``pid`` not 0: the file of the
    actor process ``pid`` it started) last ``tail`` lines, or (``tail`` 0) its bytes
    from ``offset`` on, at most 1 MiB. Reply: ``{"path", "size", "start", "end",
    "data"}`` (``graphstore.core.logs.read_log``)."""
    offset: int
    tail: int
    pid: int = 0


MESSAGE_TYPES: list[type] = [
    Request, Reply, RegisterClient, RegisterWorker, RegisterFunction, SubmitTask,
    PutObject, IncRef, DecRef, WantObjects, ObjectReady, FunctionCode, RunTask, TaskDone,
    TaskFailed, TaskOutput, Output, ClusterInfo, Ping, TaskBlocked, TaskUnblocked,
    GetStatus, LeaseObjects, ReleaseLeases, ObjectAdded, FreeObjects, SealObjects, AllocateObject,
    FetchObject, GetStoreSummary, GetMemorySummary, GetTaskRecords, RevokeLeases,
    ObjectsSpilled, DeleteSpilled, RestoreObject, RestoreOnNode, LocateObject,
    ReserveSegment, CreateActor, StartActor, StopActor, RegisterActorProcess, ActorReady,
    ActorExiting, GetActor, GetNamedActor, KillActor, ActorCallSubmitted, ActorCall,
    ActorCallDone, CancelTask, CancelRunning, WorkerHeartbeat, GetTaskGraph,
    GetClusterOverview, SchedulerHeartbeat, AdoptSegments, AdoptionFailed,
    CancelQueuedCall, GeneratorItem, GeneratorItemReady, StartTaskProcess,
    StopTaskProcess, RegisterTaskProcess, TaskProcessExited, GetTaskContext, GetNodes,
    ActorCallRetrying, DescribeCluster, DescribeObject, DescribeActor,
    GetTimeline, GetCriticalPath,
    ListState, FetchLog, ReadLog,
]
CODES: dict[type, int] = {cls: code for code, cls in enumerate(MESSAGE_TYPES)}


# -- field checks -----------------------------------------------------------------------
# What a decoded field may hold. Shallow where the receiver looks entries up by id (an
# unknown id is ignored); deeper where a value is kept and computed with (amounts).

def _any(v) -> bool:
    return True


def _id(v) -> bool:
    return type(v) is bytes


def _ids(v) -> bool:
    return type(v) is list and all(type(i) is bytes for i in v)


def _str(v) -> bool:
    return type(v) is str


def _int(v) -> bool:
    return type(v) is int


def _strs(v) -> bool:
    return type(v) is list and all(type(s) is str for s in v)


def _count(v) -> bool:
    return type(v) is int and v >= 0


def _flag(v) -> bool:
    return type(v) is bool or type(v) is int


def _amount(v) -> bool:
    """A finite, non-negative number (CPUs, a resource, seconds)."""
    return (type(v) is int or type(v) is float) and 0 <= v and math.isfinite(v)


def _list(v) -> bool:
    return type(v) is list


def _dict(v) -> bool:
    return type(v) is dict


def _buffer(v) -> bool:
    return type(v) is bytes or type(v) is Frame


def _payload(v) -> bool:
    return type(v) is list and all(type(b) is bytes or type(b) is Frame for b in v)


def _resources(v) -> bool:
    return type(v) is dict and all(type(k) is str and _amount(a) for k, a in v.items())


def _opt(check):
    return lambda v: v is None or check(v)


def _location(v) -> bool:
    """[worker id, segment name, size]: where a put object was written."""
    return (type(v) is list and len(v) == 3 and type(v[0]) is bytes and type(v[1]) is str
            and _count(v[2]))


_ACTOR_OPTIONS = {"num_cpus": _opt(_amount), "resources": _opt(_resources),
                  "env_vars": lambda v: _env_vars(v),
                  "scheduling_strategy": lambda v: _strategy(v),
                  "max_restarts": _int, "max_task_retries": _int,
                  "max_concurrency": _opt(_count), "name": _opt(_str),
                  "namespace": _opt(_str), "lifetime": _opt(_str), "get_if_exists": _flag}


def _actor_options(v) -> bool:
    return type(v) is dict and all(type(k) is str and _ACTOR_OPTIONS.get(k, _any)(x)
                                   for k, x in v.items())


def _spilled(v) -> bool:
    """[[id, offset, size], ...]: where objects sit in a spill file."""
    return type(v) is list and all(
        type(e) is list and len(e) == 3 and type(e[0]) is bytes and _count(e[1])
        and _count(e[2]) for e in v)


def _retry_exceptions(v) -> bool:
    """None, True, or the pickled tuple of exception types (see SubmitTask)."""
    return v is None or v is True or type(v) is bytes


def _env_vars(v) -> bool:
    return type(v) is dict and all(type(k) is str and type(x) is str for k, x in v.items())


def _strategy(v) -> bool:
    """None, "SPREAD", or ["node", node id, soft]: where a task or actor may run."""
    return v is None or v == "SPREAD" or (
        type(v) is list and len(v) == 3 and v[0] == "node" and type(v[1]) is str
        and _flag(v[2]))


def _environment(v) -> bool:
    """{"env_vars": {str: str}, "gpus": [GPU index, ...]} (both optional)."""
    return type(v) is dict and _env_vars(v.get("env_vars", {})) and (
        type(v.get("gpus", [])) is list and all(_count(i) for i in v.get("gpus", [])))


_EXTRA = {"env_vars": _env_vars, "max_calls": _count, "strategy": _strategy}


def _extra(v) -> bool:
    """SubmitTask.extra: the rarely used options, each checked."""
    return type(v) is dict and all(type(k) is str and _EXTRA.get(k, _any)(x)
                                   for k, x in v.items())


_MODE_NAMES = ("streaming", "dynamic")


def _mode(v) -> bool:
    """A call's generator mode (graphstore.core.generators): 0, 1 or 2."""
    return type(v) is int and 0 <= v <= 2


def _any_id(v) -> bool:
    """An id, or b"" for none."""
    return type(v) is bytes


def _method_entry(v) -> bool:
    """[num_returns (a count, or "streaming"/"dynamic"), max_task_retries or None,
    retry_exceptions, parameters or None]."""
    return (type(v) is list and len(v) == 4
            and ((_count(v[0]) and v[0] >= 1) or v[0] in _MODE_NAMES)
            and (v[1] is None or _int(v[1])) and _retry_exceptions(v[2])
            and (v[3] is None or valid_params(v[3])))


def _methods(v) -> bool:
    return type(v) is dict and all(type(k) is str and _method_entry(e) for k, e in v.items())


def _actor_retry(v) -> bool:
    """None, or [retries left, retry_exceptions] of an ActorCall."""
    return v is None or (type(v) is list and len(v) == 2 and _count(v[0])
                         and _retry_exceptions(v[1]))


def _lease_keys(v) -> bool:
    """[[object id, segment], ...]."""
    return type(v) is list and all(type(k) is list and len(k) == 2 and _id(k[0])
                                   and type(k[1]) is str for k in v)


_opt_id, _opt_payload, _opt_str, _opt_list = _opt(_id), _opt(_payload), _opt(_str), _opt(_list)

#: Message class -> a check per field, in field order.
FIELD_CHECKS: dict[type, tuple] = {
    Request: (_int, _any),
    Reply: (_int, _opt_str, _any),
    RegisterClient: (_id, _int, _str, _str),
    RegisterWorker: (_id, _int, _str, _str, _amount, _resources, _str, _count),
    RegisterFunction: (_id, _buffer),
    SubmitTask: (_id, _id, _str, _any, _ids, _ids, _ids, _amount, _opt(_resources), _int,
                 _opt_id, _retry_exceptions, _mode, _opt(_extra)),
    PutObject: (_id, _opt_payload, _ids, _opt(_location)),
    LeaseObjects: (_ids,), IncRef: (_ids,), DecRef: (_ids,), WantObjects: (_ids,),
    ObjectAdded: (_id, _str),
    ObjectReady: (_id, _opt_payload, _opt_payload, _opt_list),
    FunctionCode: (_id, _buffer),
    RunTask: (_id, _id, _str, _any, _list, _ids, _retry_exceptions, _mode),
    # Profile events and start times are checked where they are kept (a bad one is
    # dropped there with a warning; the task's outcome stands).
    TaskDone: (_id, _list, _amount, _any, _any),
    TaskFailed: (_id, _payload, _amount, _str, _flag, _opt_list, _any, _any),
    TaskBlocked: (_id,), TaskUnblocked: (_id,),
    TaskOutput: (_any, _str, _str, _str, _opt(_strs)),
    Output: (_str, _str, _str, _any_id, _opt(_strs)),
    ClusterInfo: (_count, _dict, _list),
    Ping: (),
    FreeObjects: (_list,), SealObjects: (_ids,),
    AllocateObject: (_id, _count, _flag),
    ReleaseLeases: (_lease_keys,), RevokeLeases: (_lease_keys,),
    ReserveSegment: (),
    FetchObject: (_id,),
    GetStoreSummary: (), GetMemorySummary: (), GetStatus: (), GetClusterOverview: (),
    GetTaskRecords: (_int,),
    ObjectsSpilled: (_str, _spilled, _flag),
    DeleteSpilled: (lambda v: type(v) is list and all(type(p) is str for p in v),),
    RestoreObject: (_id, _str, _count, _count),
    RestoreOnNode: (_id, _str),
    LocateObject: (_id,),
    CreateActor: (_id, _id, _id, _str, _any, _ids, _ids, _actor_options, _methods),
    StartActor: (_id, _int, _opt(_environment)), StopActor: (_id, _int),
    RegisterActorProcess: (_id, _int, _id, _int, _str, _str, _str),
    ActorReady: (_id, _int, _opt_payload),
    ActorExiting: (_id,),
    GetActor: (_id, _int),
    GetNamedActor: (_str, _str),
    KillActor: (_id, _flag),
    ActorCallSubmitted: (_id, _id, _str, _ids, _ids, _ids),
    ActorCall: (_id, _str, _str, _any, _list, _ids, _id, _mode, _actor_retry),
    ActorCallDone: (_id, _id, _list, _amount, _opt_str, _any, _any),
    CancelTask: (_id, _flag, _flag),
    CancelRunning: (_id, _flag),
    CancelQueuedCall: (_id,),
    WorkerHeartbeat: (_dict, _any),
    GetTaskGraph: (_opt_list, _int),
    SchedulerHeartbeat: (),
    AdoptSegments: (lambda v: type(v) is list and all(
        type(e) is list and len(e) == 3 and _id(e[0]) and _str(e[1]) and _count(e[2])
        for e in v),),
    AdoptionFailed: (_ids,),
    GeneratorItem: (_id, _count, _id, _opt_payload, _flag, _any_id),
    GeneratorItemReady: (_id, _count, _id, _opt_payload, _opt_payload, _opt_list),
    StartTaskProcess: (_id, _environment, _count),
    StopTaskProcess: (_id,),
    RegisterTaskProcess: (_id, _id, _int, _str),
    TaskProcessExited: (_id, _int),
    GetTaskContext: (_id,),
    GetNodes: (),
    ActorCallRetrying: (_id,),
    DescribeCluster: (), DescribeObject: (_id,), DescribeActor: (_id,),
    GetTimeline: (_count,),
    GetCriticalPath: (_id,),
    ListState: (_str, _opt_str, _opt_str, _count),
    FetchLog: (_str, _count, _count),
    ReadLog: (_count, _count, _count),
}

#: Checks across the fields of one message.
MESSAGE_CHECKS: dict[type, tuple] = {
    # A put is inline (payload) or in a store (location): exactly one of the two.
    PutObject: ("payload or location, not both",
                lambda m: (m.payload is None) != (m.location is None)),
}


# -- frames -----------------------------------------------------------------------------

_FRAME_EXT = 1
_COUNT = struct.Struct("!I")
_LENGTH = struct.Struct("!Q")


class Frame:
    """A buffer that travels as its own frame instead of inside msgpack.

    Decoding gives frames back wrapped the same way, so a payload the scheduler stores and
    forwards keeps its large buffers out of msgpack without being looked at.
    """
    __slots__ = ("buffer",)

    def __init__(self, buffer):
        self.buffer = buffer

    def __len__(self) -> int:
        return memoryview(self.buffer).nbytes


def unwrap(buffer):
    """The raw buffer behind ``buffer``, which may be a ``Frame``."""
    return buffer.buffer if type(buffer) is Frame else buffer


def wire_payload(buffers, split_bytes: int) -> list:
    """Wrap the large buffers of a payload so they go as frames."""
    return [b if memoryview(b).nbytes < split_bytes else Frame(b) for b in buffers]


def _to_wire(message) -> list:
    cls = type(message)
    code = CODES[cls]
    if cls is Request:
        return [code, message.rid, _to_wire(message.message)]
    return [code, *message]


def encode_batch(messages: list) -> list:
    """Encode messages into the buffers of one wire batch (prefix, header, frames)."""
    frames: list = []

    def default(obj):
        if isinstance(obj, Frame):
            frames.append(obj.buffer)
            return msgpack.ExtType(_FRAME_EXT, _COUNT.pack(len(frames)))
        if isinstance(obj, (memoryview, bytearray)):
            return bytes(obj)
        raise TypeError(f"cannot encode {type(obj).__name__} in a message")

    header = msgpack.packb([_to_wire(m) for m in messages], default=default,
                           use_bin_type=True)
    frames = [f if type(f) is bytes else memoryview(f).cast("B") for f in frames]
    lengths = [len(header)] + [len(f) for f in frames]
    prefix = _COUNT.pack(len(lengths)) + b"".join(_LENGTH.pack(n) for n in lengths)
    return [prefix, header, *frames]


def encode_batches(messages: list, limits: Limits) -> list[list]:
    """Encode ``messages`` as one batch, or several when one would break ``limits``."""
    encoded = encode_batch(messages)
    if ((len(encoded[1]) <= limits.max_header_bytes
         and len(encoded) - 1 <= limits.max_frames) or len(messages) == 1):
        return [encoded]
    half = len(messages) // 2
    return encode_batches(messages[:half], limits) + encode_batches(messages[half:], limits)


_N_TYPES = len(MESSAGE_TYPES)
_CHECKS = [FIELD_CHECKS[cls] for cls in MESSAGE_TYPES]


def _from_wire(item, nested: bool = False) -> Any:
    if type(item) is not list or not item:
        raise ValueError(f"a message must be a non-empty list, got {type(item).__name__}")
    code = item[0]
    if type(code) is not int or not 0 <= code < _N_TYPES:
        raise ValueError(f"unknown message code {code!r}")
    cls = MESSAGE_TYPES[code]
    if cls is Request:
        if nested or len(item) != 3 or type(item[1]) is not int:
            raise ValueError("malformed Request")
        return Request(item[1], _from_wire(item[2], True))
    checks = _CHECKS[code]
    fields = item[1:]
    if len(fields) != len(checks):
        raise ValueError(f"{cls.__name__} has {len(fields)} fields, expected {len(checks)}")
    for check, value in zip(checks, fields):
        if not check(value):
            index = next(i for i, c in enumerate(checks) if not c(fields[i]))
            raise ValueError(f"{cls.__name__}.{cls._fields[index]} holds an invalid "
                             f"{type(fields[index]).__name__}")
    message = cls._make(fields)
    if cls in MESSAGE_CHECKS:
        rule, check = MESSAGE_CHECKS[cls]
        if not check(message):
            raise ValueError(f"{cls.__name__} breaks its rule: {rule}")
    return message


def decode_header(header, frames: list) -> list:
    """Decode frame 0 into messages; ext references pick buffers out of ``frames``."""
    messages, placeholders = decode_header_deferred(header, len(frames))
    for index, placeholder in placeholders.items():
        placeholder.buffer = frames[index]
    return messages


def decode_header_deferred(header, nframes: int) -> tuple[list, dict[int, Frame]]:
    """Decode frame 0 before the other frames have arrived.

    Returns the messages and, by frame index, the ``Frame`` placeholders they hold; the
    caller sets each placeholder's ``buffer`` once that frame is read. Knowing the
    messages first lets a receiver read a large frame straight into its destination.
    """
    placeholders: dict[int, Frame] = {}

    def ext_hook(code, data):
        if code != _FRAME_EXT:
            raise ValueError(f"unknown msgpack ext type {code}")
        index = _COUNT.unpack(data)[0]
        if not 1 <= index <= nframes:
            raise ValueError(f"frame reference {index} out of range")
        placeholder = placeholders.get(index - 1)
        if placeholder is None:
            placeholder = placeholders[index - 1] = Frame(None)
        return placeholder

    try:
        items = msgpack.unpackb(header, ext_hook=ext_hook, raw=False, strict_map_key=False,
                                use_list=True)
    except Exception as exc:
        raise ValueError(f"undecodable message header: {type(exc).__name__}: {exc}") from None
    if not isinstance(items, list):
        raise ValueError("message header is not a list")
    try:
        return [_from_wire(item) for item in items], placeholders
    except (TypeError, ValueError, IndexError) as exc:
        raise ValueError(f"malformed message: {exc}") from None


def parse_count(data: bytes, limits: Limits) -> int:
    (count,) = _COUNT.unpack(data)
    if count < 1 or count > limits.max_frames:
        raise ValueError(f"frame count {count} outside 1..{limits.max_frames}")
    return count


def parse_lengths(data: bytes, count: int, limits: Limits) -> list[int]:
    lengths = [n for (n,) in _LENGTH.iter_unpack(data)]
    if len(lengths) != count:
        raise ValueError("truncated frame lengths")
    if lengths[0] > limits.max_header_bytes:
        raise ValueError(f"header of {lengths[0]} bytes exceeds the limit of "
                         f"{limits.max_header_bytes}")
    for n in lengths[1:]:
        if n > limits.max_frame_bytes:
            raise ValueError(f"frame of {n} bytes exceeds the limit of "
                             f"{limits.max_frame_bytes}")
    return lengths


COUNT_SIZE = _COUNT.size
LENGTH_SIZE = _LENGTH.size
