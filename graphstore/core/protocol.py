"""Every message graphstore processes exchange, and how messages become bytes.

Messages are ``msgspec.Struct`` types, declared here so the whole protocol reads in one
place: each field names its type and its constraints (ids are 16 bytes, amounts finite
and non-negative, counts non-negative), and the few rules a type cannot say sit next to
their fields as small validators (``__post_init__ = validate(field=check)``).

On the wire a message is ``[code, *fields]`` (``array_like`` Structs tagged by their
integer code) inside a msgpack header; several messages to one peer are batched into one
header. Large buffers (out-of-band pickle buffers, numpy data) are not copied into
msgpack: they travel as their own frames after the header, referenced from it by an
ext-type index.

Wire layout of one batch::

    u32 nframes | u64 length of frame 0 ... u64 length of frame n-1 | frame 0 | ... | frame n-1

Frame 0 is the msgpack header (a list of messages); frames 1.. are raw buffers.

Decoding is typed: msgspec checks every field against its declaration while it decodes
(in C), so a malformed message is refused at the door with an error naming the message
type and field, closing that connection; it never reaches a handler or the scheduler's
state. A request that fails is answered with a ``Reply`` whose ``error`` is an
``ErrorRecord`` (exception type, text, traceback), never a string to parse.

Functions here are pure (no sockets) so framing is unit-testable.
"""
from __future__ import annotations

import math
import re
import struct
import threading
from typing import Annotated, Any, Callable, Optional, Union

import msgspec
from msgspec import Meta

from graphstore.core.call_signature import valid_params
from graphstore.core.config import Limits

#: The most labels a worker may carry (``RegisterWorker.labels``).
MAX_LABELS = 32


# -- frames -----------------------------------------------------------------------------

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


class _BufferCheck(type):
    """``isinstance(x, Buffer)`` is true of bytes and frames alone. The decoder asks it
    of every payload buffer; an ABC's check (``register``) cost five times as much."""

    def __instancecheck__(cls, obj) -> bool:
        return type(obj) is bytes or type(obj) is Frame


class Buffer(metaclass=_BufferCheck):
    """A field type: ``bytes`` inline in the header, or a ``Frame`` of its own."""


# -- field types --------------------------------------------------------------------------
# Checked by the decoder while it decodes; a value built in Python is not checked.

#: An id: of an object, task, worker, actor, process or function (``new_id``).
Id = Annotated[bytes, Meta(min_length=16, max_length=16)]
#: An id, or ``b""`` for none.
MaybeId = Annotated[bytes, Meta(max_length=16)]
#: A finite, non-negative number (CPUs, a resource, seconds).
Amount = Annotated[float, Meta(ge=0, le=1.7976931348623157e308)]
#: A non-negative integer (sizes, offsets, indices).
Count = Annotated[int, Meta(ge=0)]
#: A call's generator mode (graphstore.core.generators): 0 values, 1 dynamic, 2 streaming.
Mode = Annotated[int, Meta(ge=0, le=2)]
#: Resource name -> amount.
Resources = dict[str, Amount]
#: A worker's labels (``--label KEY=VALUE``): at most ``MAX_LABELS``, bounded text.
Labels = Annotated[dict[Annotated[str, Meta(min_length=1, max_length=128)],
                        Annotated[str, Meta(max_length=256)]], Meta(max_length=MAX_LABELS)]
#: A payload: the buffers of a serialized value (see serialization).
Payload = list[Buffer]
#: Application errors to retry: None, True, or a pickled tuple of exception types.
RetryExceptions = Union[bool, bytes, None]


# -- nested records -----------------------------------------------------------------------
# Records inside messages are fixed-length tuple types, checked position by position by
# the decoder like any field: on the wire the same arrays as lists, so producers still
# build lists; decoded they are tuples, which consumers index and unpack (never mutate
# one, or test it with ``type(x) is list``). Tuples, not array_like Structs: they decode
# in C at the cost of untyped lists, where a Struct per record costs more
# (docs/benchmarks.md#wire-codec-nested), and leave every producer and consumer as it was.

#: Where a task process wrote a result: (the id of the worker whose store holds it,
#: segment name); a worker's own results name only the segment.
StoreSegment = tuple[Id, str]
#: A task's result (``TaskDone.results``, ``TaskFailed.partial``): (object id, inline
#: payload or None when stored, ids of the refs it contains, size in a store (0
#: inline), where it is stored: a segment of the sender's store, a ``StoreSegment``
#: from a task process, or None when inline).
TaskResult = tuple[Id, Optional[Payload], list[Id], Count, Union[str, StoreSegment, None]]
#: Where a stored object can be read: (node id, worker address, segment, size), or
#: for its spilled copy (None, spill path, offset, size).
Location = tuple[Optional[str], str, Union[str, Count], Count]
#: A ref argument of a task (``RunTask.deps``): (object id, inline payload or None,
#: locations of a stored one or None).
TaskDep = tuple[Id, Optional[Payload], Optional[list[Location]]]
#: Where an object was written into a store: (worker id, segment name, size).
StoredAt = tuple[Id, str, Count]
#: An actor call's result (``ActorCallDone.results``): (object id, inline payload or
#: None, ids of the refs it contains, size, ``StoredAt`` when written into a store of
#: the host or None, error payload or None).
CallResult = tuple[Id, Optional[Payload], list[Id], Count, Optional[StoredAt],
                   Optional[Payload]]
#: A worker as drivers see it (``ClusterInfo.workers``): (worker id, node id, peer
#: address).
WorkerEntry = tuple[Id, str, str]
#: An object a worker drops (``FreeObjects.entries``): (object id, whether its segment
#: may be reused).
FreeEntry = tuple[Id, bool]
#: A lease on an object's bytes (``ReleaseLeases``, ``RevokeLeases``): (object id,
#: segment).
LeaseKey = tuple[Id, str]
#: An object in a spill file (``ObjectsSpilled.entries``): (object id, offset, size).
SpilledEntry = tuple[Id, Count, Count]
#: An object of a dead worker's store to keep (``AdoptSegments.entries``): (object id,
#: segment, size).
AdoptEntry = tuple[Id, str, Count]
#: An object to copy from retiring workers (``ReplicateObjects.entries``): (object id,
#: its locations).
ReplicateEntry = tuple[Id, list[Location]]
#: An actor call's retries (``ActorCall.retry``): (retries left, retry_exceptions).
CallRetry = tuple[Count, RetryExceptions]


# -- validators: rules a type cannot say -------------------------------------------------
# Shallow where the receiver looks entries up by id (an unknown id is ignored); deeper
# where a value is kept and computed with.

def validate(**checks: Callable[[Any], bool]) -> Callable[[Any], None]:
    """A ``__post_init__`` that runs ``checks`` (field name -> predicate) on the fields
    that are not None.

    Returns:
        The method; msgspec calls it after decoding (and after construction).

    Raises:
        ValueError: (from the method) naming the message type, the field and the rule.
    """
    items = tuple(checks.items())

    def __post_init__(self) -> None:
        for name, check in items:
            value = getattr(self, name)
            if value is not None and not check(value):
                raise ValueError(f"{type(self).__name__}.{name}: "
                                 f"{' '.join((check.__doc__ or check.__name__).split())}")
    return __post_init__


def _any(v) -> bool:
    return True


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
    return (type(v) is int or type(v) is float) and 0 <= v and math.isfinite(v)


def _resources(v) -> bool:
    return type(v) is dict and all(type(k) is str and _amount(a) for k, a in v.items())


def _opt(check):
    return lambda v: v is None or check(v)


def _env_vars(v) -> bool:
    return type(v) is dict and all(type(k) is str and type(x) is str for k, x in v.items())


def _strategy(v) -> bool:
    """None, "SPREAD", or ["node", node id, soft]: where a task or actor may run."""
    return v is None or v == "SPREAD" or (
        type(v) is list and len(v) == 3 and v[0] == "node" and type(v[1]) is str
        and _flag(v[2]))


def _runtime_env(v) -> bool:
    """A resolved runtime_env's packages: {"working_dir": URI, "py_modules": [URI, ...],
    "pip": {"packages": [str, ...], "pip_check": bool}} (each optional). URIs are
    checked again where they are used (``core.packages.uri_digest``)."""
    if type(v) is not dict or not set(v) <= {"working_dir", "py_modules", "pip"}:
        return False
    pip = v.get("pip")
    return (type(v.get("working_dir", "")) is str and _strs(v.get("py_modules", []))
            and (pip is None or (type(pip) is dict and _strs(pip.get("packages"))
                                 and type(pip.get("pip_check", False)) is bool)))


def _retry_exceptions(v) -> bool:
    return v is None or v is True or type(v) is bytes


_ACTOR_OPTIONS = {"num_cpus": _opt(_amount), "resources": _opt(_resources),
                  "env_vars": _env_vars, "runtime_env": _runtime_env,
                  "scheduling_strategy": _strategy,
                  "max_restarts": _int, "max_task_retries": _int,
                  "max_concurrency": _opt(_count), "name": _opt(_str),
                  "namespace": _opt(_str), "lifetime": _opt(_str), "get_if_exists": _flag}


def valid_actor_options(v) -> bool:
    """options of known names must hold values of their kinds (num_cpus, resources, ...)"""
    return type(v) is dict and all(type(k) is str and _ACTOR_OPTIONS.get(k, _any)(x)
                                   for k, x in v.items())


def valid_environment(v) -> bool:
    """{"env_vars": {str: str}, "gpus": [GPU index, ...], "runtime_env": packages}
    (each optional)."""
    return type(v) is dict and _env_vars(v.get("env_vars", {})) and (
        type(v.get("gpus", [])) is list and all(_count(i) for i in v.get("gpus", []))
        and _runtime_env(v.get("runtime_env", {})))


_EXTRA = {"env_vars": _env_vars, "max_calls": _count, "strategy": _strategy,
          "runtime_env": _runtime_env}


def valid_task_extra(v) -> bool:
    """the rarely used options (env_vars, max_calls, strategy, runtime_env), each of its kind"""
    return type(v) is dict and all(type(k) is str and _EXTRA.get(k, _any)(x)
                                   for k, x in v.items())


_MODE_NAMES = ("streaming", "dynamic")


def _method_entry(v) -> bool:
    return (type(v) is list and len(v) == 4
            and ((_count(v[0]) and v[0] >= 1) or v[0] in _MODE_NAMES)
            and (v[1] is None or _int(v[1])) and _retry_exceptions(v[2])
            and (v[3] is None or valid_params(v[3])))


def valid_actor_methods(v) -> bool:
    """name -> [num_returns (a count, or "streaming"/"dynamic"), max_task_retries or
    None, retry_exceptions, parameters (call_signature) or None]."""
    return type(v) is dict and all(type(k) is str and _method_entry(e) for k, e in v.items())


# -- messages ---------------------------------------------------------------------------

class Message(msgspec.Struct, array_like=True, forbid_unknown_fields=True):
    """Base of every message: on the wire ``[code, *fields]``, the code being the
    class's ``tag``; fields are read by name (``m.task_id``)."""


class ErrorRecord(msgspec.Struct, array_like=True, forbid_unknown_fields=True):
    """Why a request failed, as it crosses the wire (``Reply.error``): the exception's
    type name (mapped back to a class from an allow-list by the receiver, see
    ``graphstore.core.comm.errors``), its text, and the remote traceback if sent."""
    type_name: str
    text: str
    traceback: Optional[str] = None


class Request(Message, tag=0):
    """Wraps a message that expects a ``Reply`` with the same ``rid``."""
    rid: int
    message: Inner


class Reply(Message, tag=1):
    """Answers the ``Request`` of the same ``rid``: its value, or why it failed."""
    rid: int
    error: Optional[ErrorRecord]
    value: Any


class RegisterClient(Message, tag=2):
    client_id: Id             # also the job id of what this driver submits
    pid: int
    hostname: str
    namespace: str = "default"    # the job's namespace (named actors, get_actor)


class RegisterWorker(Message, tag=3):
    worker_id: Id
    pid: int
    hostname: str
    node_id: str
    num_cpus: Amount
    resources: Resources
    address: str              # the worker's peer server (object transfers, allocation)
    store_capacity: Count
    #: Names the deployment gives a worker (``--label KEY=VALUE``), e.g. the batch job
    #: that runs it, so whoever started it can find it again among the workers.
    labels: Labels = {}


class RegisterFunction(Message, tag=4):
    function_hash: Id
    payload: Buffer


class SubmitTask(Message, tag=5):
    task_id: Id
    function_hash: Id
    name: str
    args: Any                 # payload of (args, kwargs) or None for no arguments
    deps: list[Id]            # ids of top-level ref arguments, in placeholder order
    nested: list[Id]          # ids of refs nested inside arguments (held, not resolved)
    returns: list[Id]         # ids of the objects the task will produce
    num_cpus: Amount
    resources: Optional[Resources]
    max_retries: int
    parent: Optional[Id] = None   # the task that submitted it (for recursive cancel)
    retry_exceptions: RetryExceptions = None  # application errors to retry: None, True, or a pickled
                                  # tuple of exception types (checked by the worker)
    mode: Mode = 0            # 0: returns values; 1: num_returns="dynamic"; 2: "streaming"
                              # (graphstore.core.generators)
    extra: Optional[dict] = None  # rarely used options: "env_vars" (run in a process
                                  # with these), "max_calls", "strategy" (wire form)

    __post_init__ = validate(extra=valid_task_extra)


class PutObject(Message, tag=6):
    object_id: Id
    payload: Optional[Payload]  # inline buffers, or None when the object is in a store
    contained: list[Id]
    location: Optional[StoredAt]  # where it was written, when not inline

    def __post_init__(self) -> None:
        if (self.payload is None) == (self.location is None):
            raise ValueError("PutObject: payload or location, not both")


class LeaseObjects(Message, tag=22):
    """Request to a worker's peer server, from a process of its host about to map these
    objects: keep their bytes until the lease is given back. Reply: [segment, size] per
    id, or None for one the store does not hold (spilled or freed)."""
    ids: list[Id]


class ReleaseLeases(Message, tag=23):
    """To a worker's peer server: leases given back."""
    keys: list[LeaseKey]


class RevokeLeases(Message, tag=32):
    """Worker -> a lease holder, as a request: these objects were freed or spilled; give
    the leases back. Reply: [[object id, segment] given back now, those still viewed
    (they follow in a ``ReleaseLeases`` when the holder's last view of them dies)]; a
    lease the holder gave back already is in neither."""
    keys: list[LeaseKey]


class ObjectAdded(Message, tag=24):
    """Worker -> scheduler: a copy of the object now lives in this worker's store."""
    object_id: Id
    segment: str


class IncRef(Message, tag=7):
    ids: list[Id]


class DecRef(Message, tag=8):
    ids: list[Id]


class WantObjects(Message, tag=9):
    """Ask to be sent ``ObjectReady`` for each id once it exists (or failed)."""
    ids: list[Id]


class ObjectReady(Message, tag=10):
    object_id: Id
    payload: Optional[Payload]  # inline buffers; None for an error or a stored object
    error: Optional[Payload]  # buffers of a pickled exception
    location: Optional[list[Location]]  # a stored object's copies, its spill last


class FunctionCode(Message, tag=11):
    function_hash: Id
    payload: Buffer


class RunTask(Message, tag=12):
    task_id: Id
    function_hash: Id
    name: str
    args: Any
    deps: list[TaskDep]       # aligned with SubmitTask.deps
    returns: list[Id]
    retry_exceptions: RetryExceptions = None  # as in SubmitTask, when retries are left
    mode: Mode = 0            # as in SubmitTask


class TaskDone(Message, tag=13):
    task_id: Id
    results: list[TaskResult]
    duration: Amount
    events: Any = None            # spans inside its run (argument fetches), measured
                                  # where it ran: lists in ProfileEvent field order
                                  # (profile_events.py); Any: checked one by one where
                                  # they are kept (a bad one is dropped with a warning,
                                  # the outcome stands)
    started: Any = None           # wall clock (time.time()) where it ran when the run
                                  # started: the run's span is [started, started +
                                  # duration]; None: the timeline is not recorded. Any:
                                  # checked where it is kept, as events are


class TaskFailed(Message, tag=14):
    task_id: Id
    error: Payload            # payload of a pickled exception (a TaskError)
    duration: Amount
    error_text: str           # the error's traceback (its end, bounded), for status
                              # pages and task records
    retriable: bool = False   # an application error the task asked to retry
                              # (``retry_exceptions``)
    partial: Optional[list[TaskResult]] = None  # results made before the error (a
                                 # generator with num_returns=N that raised after some
                                 # yields); the other returns get the error
    events: Any = None            # as in TaskDone
    started: Any = None           # as in TaskDone


class TaskBlocked(Message, tag=19):
    """A running task waits in ``get``/``wait``: its CPUs may serve other tasks."""
    task_id: Id


class TaskUnblocked(Message, tag=20):
    task_id: Id


class TaskOutput(Message, tag=15):
    """Printed output of a task, from the worker; the scheduler forwards it."""
    task_id: Any
    prefix: str
    stream: str
    text: str                 # finished text: whole lines, or after a flush() the start
                              # of a line that the next text continues
    live: Optional[list[str]] = None  # the rows the task redraws in place (progress bars), in
                              # their latest state, replacing those sent before ([]:
                              # none left); None: unchanged


class Output(Message, tag=16):
    """A task's output, from the scheduler to the driver that submitted the task."""
    prefix: str
    stream: str
    text: str
    source: MaybeId = b""       # the task (or actor call): its lines and live rows apart
                              # from those of other tasks running at the same time
    live: Optional[list[str]] = None  # as in TaskOutput


class ClusterInfo(Message, tag=17):
    num_workers: Count
    resources: Resources
    workers: list[WorkerEntry]


class Ping(Message, tag=18):
    pass


class FreeObjects(Message, tag=25):
    """Scheduler -> worker: drop these objects."""
    entries: list[FreeEntry]


class SealObjects(Message, tag=26):
    """Scheduler -> worker: a driver finished writing these; they are the store's now."""
    ids: list[Id]


class AllocateObject(Message, tag=27):
    """Request to a worker's peer server: room for ``size`` bytes of an object a process
    of its host writes (``lease``: with a lease on it, for a put the writer reads back).
    Reply: the segment."""
    object_id: Id
    size: Count
    lease: bool


class ReserveSegment(Message, tag=38):
    """Request to a worker's peer server: its pre-faulted reserve segments, so that a
    writer on the same host can map them before its next puts. Reply: [[segment, size],
    ...] (empty when the store keeps none)."""
    pass


class FetchObject(Message, tag=28):
    """Request to a worker's peer server: reply [size, Frame(segment bytes)]."""
    object_id: Id


class GetStoreSummary(Message, tag=29):
    """Request to a worker: its store's use, capacity and objects."""
    pass


class GetMemorySummary(Message, tag=30):
    """Request to the scheduler: objects, references and stores (``graphstore memory``)."""
    pass


class GetTaskRecords(Message, tag=31):
    """Request to the scheduler: recent task records (name, state, placement, times)."""
    limit: int


class ObjectsSpilled(Message, tag=33):
    """Request, worker -> scheduler: these objects now live in spill file ``path`` (at
    [[id, offset, size], ...]); the worker releases their memory once this is answered.
    Reply: ids that are already freed (the file is deleted if none is left)."""
    path: str
    entries: list[SpilledEntry]
    host_local: bool = False  # on the worker's own disk: only its host can read it


class AdoptSegments(Message, tag=57):
    """Scheduler -> worker: a worker of this host died; keep these sealed objects of its
    store, whose segments outlive it in shared memory."""
    entries: list[AdoptEntry]


class AdoptionFailed(Message, tag=58):
    """Worker -> scheduler: these segments could not be taken over (gone already)."""
    ids: list[Id]


class DeleteSpilled(Message, tag=34):
    """Scheduler -> worker: spill files whose objects are all freed."""
    paths: list[str]


class RestoreObject(Message, tag=35):
    """Request to a worker: read a spilled object back into its store. Reply: segment."""
    object_id: Id
    path: str
    offset: Count
    size: Count


class RestoreOnNode(Message, tag=36):
    """Request to the scheduler, from a driver: restore a spilled object into a store on
    ``node_id`` (any node if none there). Reply: [worker id, address, segment, node]."""
    object_id: Id
    node_id: str


class LocateObject(Message, tag=37):
    """Request to the scheduler: an object's current locations (after a stale one)."""
    object_id: Id


class GetStatus(Message, tag=21):
    """Request: the scheduler's summary of workers, resources, tasks and objects."""
    pass


# -- actors ---------------------------------------------------------------------------------

class CreateActor(Message, tag=39):
    """Caller -> scheduler: make an actor. ``creation_id`` names an object that is ready
    once ``__init__`` ran (its error if that failed); handles hold a ref to it, so the
    actor's lifetime follows ordinary reference counting. Sent as a request when the
    actor has a name (reply: [actor id, creation id, class name, methods] of the actor
    now bearing it), otherwise one-way."""
    actor_id: Id
    creation_id: Id
    class_hash: Id
    class_name: str
    args: Any
    deps: list[Id]
    nested: list[Id]
    options: dict             # num_cpus, resources, max_restarts, max_task_retries,
                              # max_concurrency, name, namespace, lifetime, get_if_exists
    methods: dict             # method name -> [num_returns (or "streaming"/"dynamic"),
                              # max_task_retries or None,
                              # retry_exceptions (as in SubmitTask), parameters or None
                              # (call_signature: [[name, kind, has default], ...])]

    __post_init__ = validate(options=valid_actor_options, methods=valid_actor_methods)


class StartActor(Message, tag=40):
    """Scheduler -> worker: start a process for this actor (its ``incarnation``-th).
    ``environment``: {"env_vars": {...}, "gpus": [GPU indices on the node]}, or None."""
    actor_id: Id
    incarnation: int
    environment: Optional[dict] = None

    __post_init__ = validate(environment=valid_environment)


class StopActor(Message, tag=41):
    """Scheduler -> worker: kill the process of this actor, if it still runs."""
    actor_id: Id
    incarnation: int


class RegisterActorProcess(Message, tag=42):
    """First message of an actor process to the scheduler. Reply: what to build."""
    actor_id: Id
    incarnation: int
    process_id: Id
    pid: int
    hostname: str
    node_id: str
    address: str              # the actor process's server, where calls arrive


class ActorReady(Message, tag=43):
    """Actor process -> scheduler: ``__init__`` finished (``error``: it raised)."""
    actor_id: Id
    incarnation: int
    error: Optional[Payload]


class ActorExiting(Message, tag=44):
    """Actor process -> scheduler: ``exit_actor()`` was called; do not restart."""
    actor_id: Id


class GetActor(Message, tag=45):
    """Caller -> scheduler request, answered once the actor is alive or dead:
    ["alive", address, incarnation] or ["dead", error payload]. ``after``: an
    incarnation the caller found dead, to wait for a newer one."""
    actor_id: Id
    after: int


class GetNamedActor(Message, tag=46):
    """Reply: [actor id, creation id, class name, methods], or an error naming the name."""
    name: str
    namespace: str


class KillActor(Message, tag=47):
    actor_id: Id
    no_restart: bool


class ActorCallSubmitted(Message, tag=48):
    """Caller -> scheduler: a method call sent straight to the actor, recorded for the
    object directory (its results are pending objects held by the caller) and the graph."""
    call_id: Id
    actor_id: Id
    name: str
    deps: list[Id]
    nested: list[Id]
    returns: list[Id]


class ActorCall(Message, tag=49):
    """Caller -> actor process: run a method. ``deps``: per ref argument, [id, payload,
    error, locations] when the caller knows its value, or [id] when the actor must ask.
    ``retry``: [retries left, retry_exceptions] when an error may be retried in place."""
    call_id: Id
    method: str
    name: str
    args: Any
    deps: list
    returns: list[Id]
    caller: Id
    mode: Mode = 0            # as in SubmitTask
    retry: Optional[CallRetry] = None


class ActorCallRetrying(Message, tag=68):
    """Actor process -> caller: the call raised an error it retries on (its ``retry``),
    and runs again now; the caller counts one retry used, so that a later death of the
    process does not grant the call more tries than ``max_task_retries``."""
    call_id: Id


class ActorCallDone(Message, tag=50):
    """Actor process -> scheduler: results of a call. Per return: its inline payload, or
    for an object written to a store on the host its location [worker id, segment,
    size]; or the call's error."""
    call_id: Id
    actor_id: MaybeId         # b"": from a caller reporting a call it failed itself
    results: list[CallResult]
    duration: Amount
    error_text: Optional[str]
    events: Any = None            # as in TaskDone: the spans inside the call (fetches)
    started: Any = None           # as in TaskDone: the call's span


class CancelTask(Message, tag=51):
    """Caller -> scheduler: cancel the task (or actor call) producing ``object_id``."""
    object_id: Id
    force: bool
    recursive: bool


class CancelRunning(Message, tag=52):
    """Scheduler -> worker or actor process: interrupt this running task or call."""
    task_id: Id
    force: bool


class CancelQueuedCall(Message, tag=59):
    """Scheduler -> caller: an actor call was cancelled while no process of its actor
    runs; if the call still waits in the caller, it fails there and is never sent."""
    call_id: Id


# -- generator tasks --------------------------------------------------------------------

class GeneratorItem(Message, tag=60):
    """Worker or actor process -> scheduler: a generator task or call (its first return is
    ``generator_id``) yielded its ``index``-th value, ``object_id``. The object was put by
    the sender (who holds it until this is handled), or, when ``error`` is given, it is
    that error (raised in the generator) and the scheduler makes it, held by the sender.
    ``streaming``: hand it to the caller now (``holder``, for actor calls: the caller;
    tasks' callers are known to the scheduler); else (``num_returns="dynamic"``) the
    task's result will contain it."""
    generator_id: Id
    index: Count
    object_id: Id
    error: Optional[Payload]
    streaming: bool
    holder: MaybeId


class GeneratorItemReady(Message, tag=61):
    """Scheduler -> caller: the ``index``-th value of the streaming generator
    ``generator_id`` is ``object_id`` (held for the caller now), with its value or where
    it is, as in ``ObjectReady``."""
    generator_id: Id
    index: Count
    object_id: Id
    payload: Optional[Payload]
    error: Optional[Payload]
    location: Optional[list[Location]]


class WorkerHeartbeat(Message, tag=53):
    """Worker -> scheduler, every ``heartbeat_interval`` seconds: the worker's own figures
    (``store_used``, ``store_objects``, ``spilled_bytes``, ...; flat numbers and text)."""
    metrics: dict
    events: Any = None            # spans not tied to one task (spills, restores), as
                                  # in TaskDone


class SchedulerHeartbeat(Message, tag=56):
    """Scheduler -> worker, every ``heartbeat_interval`` seconds: a worker that hears
    nothing for ``worker_timeout`` seconds has lost its scheduler (a cut network does
    not close the connection) and exits."""


class GetTaskGraph(Message, tag=54):
    """Request to the scheduler: the task graph in node-link form, the ``limit`` most
    recent nodes, or the ancestry of the objects ``roots`` (a list of ids) if given."""
    roots: Optional[list[Id]]
    limit: int


class GetClusterOverview(Message, tag=55):
    """Request to the scheduler: the status page's overview and its workers table
    (``graphstore status``)."""
    pass


# -- tasks in processes of their own --------------------------------------------------------

class StartTaskProcess(Message, tag=62):
    """Scheduler -> worker: start a task process for tasks that need an environment of
    their own: {"env_vars": {...}, "gpus": [GPU indices on the node]}; it runs at most
    ``max_calls`` tasks (0: no limit) and then exits."""
    process_id: Id
    environment: dict
    max_calls: Count

    __post_init__ = validate(environment=valid_environment)


class StopTaskProcess(Message, tag=63):
    """Scheduler -> worker: end this idle task process."""
    process_id: Id


class RegisterTaskProcess(Message, tag=64):
    """First message of a task process to the scheduler (a request)."""
    process_id: Id
    worker_id: Id             # the worker that started it: its CPUs and slot run the task
    pid: int
    hostname: str


class TaskProcessExited(Message, tag=65):
    """Worker -> scheduler: a task process it started has exited (for one that never
    registered: its tasks must not wait for it)."""
    process_id: Id
    returncode: int


class LookupPackage(Message, tag=79):
    """Request to the scheduler: is the package ``uri`` (``gspkg://<sha256>.zip``)
    stored in the cluster? Reply: True or False. A driver asks before it uploads."""
    uri: str


class RegisterPackage(Message, tag=80):
    """Request to the scheduler: the object ``object_id`` (put by the sender) holds the
    bytes of package ``uri``; the scheduler holds it for the cluster's life. Reply: True
    if this registration uploaded it, False if the URI was known already."""
    uri: str
    object_id: Id
    size: Count


class GetPackage(Message, tag=81):
    """Request to the scheduler: the object id holding package ``uri``, or None."""
    uri: str


class TaskProcessSetupFailed(Message, tag=82):
    """Worker -> scheduler: the runtime environment of a task process it was asked to
    start could not be set up; ``error`` (an error payload, a ``RuntimeEnvSetupError``)
    fails the tasks waiting for that process."""
    process_id: Id
    error: Payload


class ActorSetupFailed(Message, tag=83):
    """Worker -> scheduler: the runtime environment of an actor's process could not be
    set up; the actor dies with ``error`` (a ``RuntimeEnvSetupError``)."""
    actor_id: Id
    incarnation: int
    error: Payload


class GetNodes(Message, tag=67):
    """Request to the scheduler: every node (alive or departed) with its resources, and
    the cluster's total and available resources: {"nodes", "total", "available"}."""
    pass


class GetTimeline(Message, tag=72):
    """Request to the scheduler: the profile events it keeps (``graphstore.timeline()``),
    those after sequence number ``since``. Reply: {"entries": [[seq, worker id, event
    (a list), parent task ids], ...], "workers": {worker id: {"pid", "host", "node",
    "address"}}, "seq": the newest sequence number}."""
    since: Count


class GetCriticalPath(Message, tag=73):
    """Request to the scheduler: the longest chain of task runs and transfers that led
    to the finished object ``object_id`` (``graphstore.critical_path()``). Reply:
    {"object_id", "total", "steps": [{"name", "kind", "task_id", "worker", "start",
    "duration", ...}, ...], ...} (scheduler/critical_path.py), first step first; or
    {"problem": why it has none} (not finished, a put, forgotten)."""
    object_id: Id


class GetTaskContext(Message, tag=66):
    """Request to the scheduler: what ``get_runtime_context()`` says inside a running
    task: {"job_id", "namespace", "resources", "gpus"}."""
    task_id: Id


# -- one thing, described (notebook reprs) -------------------------------------------------
# Each answer costs the scheduler O(1) or O(workers + nodes): no scan of objects or tasks,
# so a notebook may ask each time it draws a ref, a handle or the cluster.

class RetireWorkers(Message, tag=77):
    """Request to the scheduler: send no more work to these workers, and copy every
    object whose only copies they hold to other workers, so that they can stop without
    losing one (a deployment scaling down). Asked again until nothing is left. Reply:
    ``{"workers": n, "objects": copies still missing, "tasks": tasks still assigned
    there, "stuck": objects no other worker can take}``."""
    worker_ids: list[Id]


class ReplicateObjects(Message, tag=78):
    """Scheduler -> worker: fetch these objects into your store (their only copies are
    on retiring workers); each copy is announced with ``ObjectAdded``."""
    entries: list[ReplicateEntry]


class DescribeCluster(Message, tag=69):
    """Request to the scheduler: workers, nodes, resources, store use and task counts."""
    pass


class DescribeObject(Message, tag=70):
    """Request to the scheduler: one object's state, size and where it lives (stores,
    spill file, inline), and the task that made it."""
    object_id: bytes          # any bytes: what names nothing is answered "unknown"


class DescribeActor(Message, tag=71):
    """Request to the scheduler: one actor's state, name and where it runs."""
    actor_id: bytes           # as in DescribeObject


# -- inspection: ``graphstore list`` and ``graphstore logs`` --------------------------------

class ListState(Message, tag=74):
    """Request to the scheduler (``graphstore list``): the newest ``limit`` rows of one
    ``kind`` ("tasks", "actors", "objects", "workers"), filtered there by ``state`` and
    ``name`` (None: any). Reply: ``{"kind", "rows", "truncated"}``, or ``{"error":
    {"text", "choices"}}`` for an unknown kind or state."""
    kind: str
    state: Optional[str]
    name: Optional[str]
    limit: Count


class FetchLog(Message, tag=75):
    """Request to the scheduler (``graphstore logs``): part of the log of ``target``
    ("scheduler", a worker's or an actor's id or a prefix of it, or its process's pid),
    read as ``ReadLog`` says;
    an empty ``target`` asks for the list of log files. Reply: ``ReadLog``'s reply with
    ``"source"`` (which process) added, ``{"logs": [...]}`` for the list, or ``{"error":
    {"text", "choices"}}`` for an unknown or ambiguous target."""
    target: str
    offset: Count
    tail: Count


class ReadLog(Message, tag=76):
    """Request, scheduler -> worker: its log file's (``pid`` not 0: the file of the
    actor process ``pid`` it started) last ``tail`` lines, or (``tail`` 0) its bytes
    from ``offset`` on, at most 1 MiB. Reply: ``{"path", "size", "start", "end",
    "data"}`` (``graphstore.core.logs.read_log``)."""
    offset: Count
    tail: Count
    pid: Count = 0



# -- jobs: ``graphstore job``, ``JobSubmissionClient`` ----------------------------------
# Replies are dicts; a refused request is ``{"error": {"kind", "text"}}`` (kind:
# "not_found", "invalid", "duplicate", "not_terminal"), never an exception text.

class SubmitJob(Message, tag=84):
    """Request to the scheduler: run ``entrypoint`` (a shell command) as a job on its
    host. ``submission_id`` None: the scheduler makes one. Reply: ``{"submission_id"}``."""
    submission_id: Optional[str]
    entrypoint: str
    runtime_env: dict
    metadata: dict
    entrypoint_num_cpus: Amount


class GetJob(Message, tag=85):
    """Request: one job's info (``JobInfo`` fields). Reply: ``{"job": {...}}``."""
    submission_id: str


class ListJobs(Message, tag=86):
    """Request: every job the scheduler knows, oldest first. Reply: ``{"jobs": [...]}``."""


class StopJob(Message, tag=87):
    """Request: SIGTERM the job's processes (SIGKILL after a grace period). Reply:
    ``{"stopped": bool}``: whether the job had not ended yet."""
    submission_id: str


class DeleteJob(Message, tag=88):
    """Request: forget an ended job (its log file stays). Reply: ``{"deleted": True}``."""
    submission_id: str


class ReadJobLog(Message, tag=89):
    """Request: part of a job's log, read as ``ReadLog`` says (``tail`` lines, or the
    bytes from ``offset``). With ``wait`` > 0 and nothing new yet, the reply waits up to
    ``wait`` seconds for output or for the job to end (a follow's long poll). Reply:
    ``{"path", "size", "start", "end", "data", "status"}``; a job that has ended gives
    its last partial line too."""
    submission_id: str
    offset: Count
    tail: Count
    wait: Amount


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
    ListState, FetchLog, ReadLog, RetireWorkers, ReplicateObjects,
    LookupPackage, RegisterPackage, GetPackage,
    TaskProcessSetupFailed, ActorSetupFailed,
    SubmitJob, GetJob, ListJobs, StopJob, DeleteJob, ReadJobLog,
]
#: Message class -> its code on the wire (its ``tag``).
CODES: dict[type, int] = {cls: cls.__struct_config__.tag for cls in MESSAGE_TYPES}
assert sorted(CODES.values()) == list(range(len(MESSAGE_TYPES))), "codes must be 0..n-1"

#: Any message but a ``Request`` (what a ``Request`` wraps).
Inner = Union[tuple(cls for cls in MESSAGE_TYPES if cls is not Request)]  # type: ignore


# -- encoding and decoding ---------------------------------------------------------------

_FRAME_EXT = 1
_COUNT = struct.Struct("!I")
_LENGTH = struct.Struct("!Q")


def unwrap(buffer):
    """The raw buffer behind ``buffer``, which may be a ``Frame``."""
    return buffer.buffer if type(buffer) is Frame else buffer


def wire_payload(buffers, split_bytes: int) -> list:
    """Wrap the large buffers of a payload so they go as frames."""
    return [b if memoryview(b).nbytes < split_bytes else Frame(b) for b in buffers]


class _Codec(threading.local):
    """Per thread (connections write from several): an encoder and a decoder, and the
    frames of the batch at hand, which their hooks fill in and read."""

    def __init__(self) -> None:
        self.frames: list = []
        self.placeholders: dict[int, Frame] = {}
        self.nframes = 0
        self.encoder = msgspec.msgpack.Encoder(enc_hook=self.enc_hook)
        self.decoder = msgspec.msgpack.Decoder(list[Union[tuple(MESSAGE_TYPES)]],  # type: ignore
                                               ext_hook=self.ext_hook, dec_hook=_as_is)

    def enc_hook(self, obj):
        if type(obj) is Frame:
            self.frames.append(obj.buffer)
            return msgspec.msgpack.Ext(_FRAME_EXT, _COUNT.pack(len(self.frames)))
        raise TypeError(f"cannot encode {type(obj).__name__} in a message")

    def ext_hook(self, code: int, data: memoryview):
        if code != _FRAME_EXT:
            raise ValueError(f"unknown msgpack ext type {code}")
        if len(data) != _COUNT.size:
            raise ValueError(f"frame reference of {len(data)} bytes, not {_COUNT.size}")
        index = _COUNT.unpack(data)[0]
        if not 1 <= index <= self.nframes:
            raise ValueError(f"frame reference {index} out of range")
        placeholder = self.placeholders.get(index - 1)
        if placeholder is None:
            placeholder = self.placeholders[index - 1] = Frame(None)
        return placeholder


def _as_is(type_, value):
    """The decoder's hook for ``Buffer`` fields: bytes and frames are buffers already
    (``Buffer``'s check admits both); anything else fails its check."""
    return value


_codec = _Codec()


def encode_batch(messages: list) -> list:
    """Encode messages into the buffers of one wire batch (prefix, header, frames)."""
    codec = _codec
    frames = codec.frames = []
    try:
        header = codec.encoder.encode(messages)
    finally:
        codec.frames = []
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


def decode_header(header, frames: list) -> list:
    """Decode frame 0 into messages; ext references pick buffers out of ``frames``.

    Returns:
        The messages.

    Raises:
        ValueError: the header is not msgpack, or a message is malformed; the text names
            the message type and field.
    """
    messages, placeholders = decode_header_deferred(header, len(frames))
    for index, placeholder in placeholders.items():
        placeholder.buffer = frames[index]
    return messages


def decode_header_deferred(header, nframes: int) -> tuple[list, dict[int, Frame]]:
    """Decode frame 0 before the other frames have arrived.

    Knowing the messages first lets a receiver read a large frame straight into its
    destination.

    Returns:
        The messages and, by frame index, the ``Frame`` placeholders they hold; the
        caller sets each placeholder's ``buffer`` once that frame is read.

    Raises:
        ValueError: as ``decode_header``.
    """
    codec = _codec
    placeholders = codec.placeholders = {}
    codec.nframes = nframes
    try:
        return codec.decoder.decode(header), placeholders
    except msgspec.ValidationError as exc:
        raise ValueError(f"malformed message: {_explain(str(exc), header)}") from None
    except (msgspec.DecodeError, ValueError, TypeError, RecursionError) as exc:
        raise ValueError(f"undecodable message header: {exc}") from None
    finally:
        codec.placeholders = {}


_PATH = re.compile(r"`\$((?:\[\d+\])+)")


def _explain(text: str, header) -> str:
    """msgspec's error with its path (``$[3][1]``: message 3, its first field) turned
    into the message type and field names it points at."""
    match = _PATH.search(text)
    if match is None:
        return text
    path = [int(i) for i in re.findall(r"\d+", match.group(1))]
    try:
        node = msgspec.msgpack.decode(header)
        names = []
        while path and type(node) is list:
            item = node[path[0]]
            if type(item) is not list or not item:
                break
            if type(item[0]) is not int or not 0 <= item[0] < len(MESSAGE_TYPES):
                if len(path) == 2 and path[1] == 0:
                    names.append(f"unknown message code {item[0]!r}")
                break
            cls = MESSAGE_TYPES[item[0]]
            fields = cls.__struct_fields__
            if len(path) == 1:     # the message as a whole: a validator's error
                if not text.startswith(cls.__name__):
                    names.append(cls.__name__)
                break
            if path[1] == 0:
                names.append(f"{cls.__name__} (its code)")
                break
            if path[1] > len(fields):
                names.append(cls.__name__)
                break
            names.append(f"{cls.__name__}.{fields[path[1] - 1]}")
            if cls is not Request or path[1] != 2:
                break
            node, path = [item[2]], [0, *path[2:]]
        if names:
            return f"{' in '.join(reversed(names))}: {text}"
    except Exception:
        pass
    return text


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
