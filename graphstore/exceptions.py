"""Errors users see. Each names what went wrong and what to do about it."""
from __future__ import annotations

import asyncio
from typing import Any, cast

from graphstore import notebook_repr


class GraphstoreError(Exception):
    """Base class of every error graphstore raises."""


class GetTimeoutError(GraphstoreError, TimeoutError):
    """``get()`` or ``wait()`` ran out of time before the objects were ready."""


class TaskError(GraphstoreError):
    """A task raised an exception; ``get()`` re-raises it.

    The instance ``get()`` raises is also an instance of the original exception's class,
    so ``except ValueError`` keeps working, and its message carries the remote traceback.

    Attributes:
        function_name: the task's (or actor method's) name.
        traceback_str: the remote traceback, without graphstore's own frames.
        cause: the original exception, or an ``UnserializableException`` standing in for
            one that could not be pickled; None if unknown.
        pid: the process the task ran in.
    """

    def __init__(self, function_name: str, traceback_str: str, cause: BaseException | None,
                 pid: int | None = None, cause_type_name: str | None = None) -> None:
        self.function_name = function_name
        self.traceback_str = traceback_str
        self.cause = cause
        self.pid = pid
        self.cause_type_name = cause_type_name or type(cause).__name__
        # Not super(): in the class mixed with the cause's class that would run the
        # cause's __init__ with our arguments.
        Exception.__init__(self, function_name, traceback_str)

    def __str__(self) -> str:
        where = f" (pid={self.pid})" if self.pid is not None else ""
        return (f"task {self.function_name}{where} raised "
                f"{self.cause_type_name}:\n{self.traceback_str.rstrip()}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_task_error,
                (self.function_name, self.traceback_str, self.cause, self.pid,
                 self.cause_type_name))

    def _repr_html_(self) -> str:
        """A notebook's card: the task, the error type and message, and the remote
        traceback in a block that folds (open when short)."""
        return notebook_repr.never_raise(self._card_html, lambda: str(self))

    def _card_html(self) -> str:
        traceback = str(self.traceback_str or "").rstrip()
        lines = traceback.splitlines()
        message = lines[-1] if lines else ""
        return notebook_repr.render_card(
            f"TaskError: {self.cause_type_name} in task {self.function_name}",
            state="error",
            rows=[("Task", self.function_name), ("Error", self.cause_type_name),
                  ("Message", message), ("Process", self.pid)],
            details=traceback, details_title=f"Remote traceback ({len(lines)} lines)",
            details_open=len(lines) <= _OPEN_TRACEBACK_LINES)

    def as_instanceof_cause(self) -> "TaskError":
        """This error as an instance of both ``TaskError`` and the cause's class (Ray's name).

        Returns:
            A ``TaskError`` that is also an instance of ``cause``'s class; this error itself
            when there is no cause, the cause is a ``TaskError``, or it is one of the classes
            never mixed in (``SystemExit``, ``KeyboardInterrupt``, ``GeneratorExit``,
            ``asyncio.CancelledError``) or cannot be subclassed.
        """
        cause_cls = type(self.cause)
        if self.cause is None or issubclass(cause_cls, TaskError):
            return self
        if issubclass(cause_cls, _NOT_MIXED_IN):
            return self
        try:
            cls = _dual_classes.get(cause_cls)
            if cls is None:
                cls = cast("type[TaskError]", type(
                    f"TaskError({cause_cls.__name__})", (TaskError, cause_cls),
                    {"__init__": _dual_init, "__str__": TaskError.__str__,
                     "__reduce__": TaskError.__reduce__,
                     "__module__": TaskError.__module__}))
                _dual_classes[cause_cls] = cls
            try:
                err: TaskError = cls.__new__(cls, *getattr(self.cause, "args", ()))
            except Exception:
                err = cls.__new__(cls)
            _dual_init(err, self.function_name, self.traceback_str, self.cause, self.pid,
                       self.cause_type_name)
            return err
        except TypeError:
            # Classes with an incompatible layout (some C extension types) cannot be mixed in.
            return self


#: A remote traceback up to this many lines shows unfolded in a notebook.
_OPEN_TRACEBACK_LINES = 40
_dual_classes: dict[type, type[TaskError]] = {}
#: Causes whose class is not mixed in: an error ``get()`` raises must not stop the
#: caller's process, a generator or an asyncio task as these would. (Tasks turn
#: ``KeyboardInterrupt`` into ``TaskCancelledError``, ``SystemExit`` into
#: ``WorkerCrashedError``.) Other ``BaseException`` subclasses are mixed in, as in Ray.
_NOT_MIXED_IN = (SystemExit, KeyboardInterrupt, GeneratorExit, asyncio.CancelledError)
_TASK_ERROR_FIELDS = frozenset(("function_name", "traceback_str", "cause", "pid",
                                "cause_type_name"))


def _dual_init(self: TaskError, function_name: str, traceback_str: str,
               cause: BaseException | None, pid: int | None = None,
               cause_type_name: str | None = None) -> None:
    # The cause's own attributes (errno, filename, custom fields) stay reachable.
    attributes = dict(getattr(cause, "__dict__", {}))
    if isinstance(cause, OSError):
        attributes.update(errno=cause.errno, strerror=cause.strerror,
                          filename=cause.filename, filename2=cause.filename2)
    TaskError.__init__(self, function_name, traceback_str, cause, pid, cause_type_name)
    for name, value in attributes.items():
        if name in _TASK_ERROR_FIELDS:
            continue
        try:
            setattr(self, name, value)
        except (AttributeError, TypeError):
            pass
    self.args = getattr(cause, "args", (function_name, traceback_str))


def _rebuild_task_error(function_name: str, traceback_str: str,
                        cause: BaseException | None, pid: int | None,
                        cause_type_name: str | None) -> TaskError:
    return TaskError(function_name, traceback_str, cause, pid, cause_type_name).as_instanceof_cause()


class WorkerCrashedError(GraphstoreError):
    """The worker running a task died and the task ran out of retries."""


class ObjectLostError(GraphstoreError):
    """An object is gone: freed, or lost with every copy and not rebuildable."""


class ObjectReconstructionFailedError(ObjectLostError):
    """Every copy of an object was lost and it cannot be computed again: it was made by
    ``put()`` or an actor call, which leave no lineage."""


class ObjectReconstructionFailedMaxAttemptsExceededError(ObjectReconstructionFailedError):
    """Every copy of an object was lost and its task has no retries left to make it
    again (``max_retries``)."""


class ObjectReconstructionFailedLineageEvictedError(ObjectReconstructionFailedError):
    """Every copy of an object was lost and the record of how to make it again is gone
    (``max_lineage_bytes``)."""


class ActorError(GraphstoreError):
    """Base class of an actor's failures (Ray's ``RayActorError``). An exception raised
    by a method is a ``TaskError`` instead, as in Ray."""


class ActorDiedError(ActorError):
    """The actor's process died, or the actor was killed, before the call finished."""


class TaskCancelledError(GraphstoreError):
    """The task was cancelled with ``graphstore.cancel()``."""


class ObjectStoreFullError(GraphstoreError):
    """The object does not fit in any object store."""


class TaskUnschedulableError(GraphstoreError, ValueError):
    """No worker in the cluster can ever satisfy the task's resource request."""


class ActorUnschedulableError(TaskUnschedulableError):
    """No worker in the cluster can ever satisfy the actor's resource request."""


class SerializationError(GraphstoreError, TypeError):
    """An argument or a return value could not be pickled."""


class UnserializableException(GraphstoreError, RuntimeError):
    """Stands in for a task's exception that could not be pickled; carries its text."""


class ProtocolError(GraphstoreError):
    """A peer sent bytes that do not form a valid message."""


class AuthenticationError(GraphstoreError):
    """A peer failed the cluster-token handshake."""


class TLSError(AuthenticationError):
    """A TLS handshake failed: a certificate was refused, or only one side uses TLS."""


class TLSConfigError(GraphstoreError, ValueError):
    """The TLS settings are incomplete, or a certificate, key or CA file is unusable."""


class ConfigError(GraphstoreError, ValueError):
    """A configuration file or a ``GRAPHSTORE_*`` variable holds an unknown setting or a
    value of the wrong type; the message names the file (or variable) and the setting."""


class ConnectionLostError(GraphstoreError, ConnectionError):
    """The connection to the scheduler was lost."""


class GraphvizNotFoundError(GraphstoreError, RuntimeError):
    """Writing SVG or PNG needs Graphviz's ``dot`` program, which is not installed."""


class ActorExit(BaseException):
    """Raised by ``exit_actor()``; the actor's process ends after the current call. A
    ``BaseException``, so that user code's ``except Exception`` does not swallow it."""


class RemoteUsageError(GraphstoreError, TypeError, AssertionError):
    """``@remote`` or ``@method`` used with parentheses but no options, or with positional
    arguments. Also an ``AssertionError``: what Ray raises for the same mistake."""


class RuntimeEnvSetupError(GraphstoreError):
    """A task's or actor's ``runtime_env`` could not be set up on its host: a package
    could not be fetched or unpacked, or ``pip install`` failed (the message carries the
    end of pip's output). The task fails (it is not retried); an actor dies."""


class PackageError(GraphstoreError, ValueError):
    """A ``runtime_env`` package (``working_dir``, ``py_modules``) is bad input: a
    missing path, more than the ``max_package_bytes`` setting, an unsafe zip entry
    (an absolute path or ``..``), bytes that do not match their URI, or an unknown URI."""


# -- Ray's names -------------------------------------------------------------------------
# ``except ray.exceptions.X`` becomes ``except graphstore.exceptions.X`` and catches the
# same failures: these names are the graphstore classes for them
# (docs/reference/exceptions.md).

RayError = GraphstoreError
RayTaskError = TaskError
RayActorError = ActorError
RaySystemError = ConnectionLostError
AsyncioActorExit = ActorExit


# Failures graphstore has no cause for: the classes exist, in Ray's hierarchy, so that
# Ray code catching them runs; graphstore never raises them (docs/reference/exceptions.md
# says why).

class ActorUnavailableError(ActorError):
    """Ray: the actor is unreachable for now. graphstore retries calls on a restarting
    actor within ``max_task_retries`` and fails them with ``ActorDiedError``."""


class OwnerDiedError(ObjectLostError):
    """Ray: the process that owned the object died. graphstore's scheduler owns every
    object, so a driver or worker dying takes no object's bookkeeping with it."""


class ObjectFetchTimedOutError(ObjectLostError):
    """Ray: no copy was found in time. graphstore raises ``ObjectLostError``."""


class ReferenceCountingAssertionError(ObjectLostError, AssertionError):
    """Ray: an object was freed while referenced (a Ray bug). graphstore raises
    ``ObjectLostError`` for an object that was freed."""


class NodeDiedError(GraphstoreError):
    """Ray: a node died. graphstore fails or retries the tasks (``WorkerCrashedError``)
    and rebuilds or loses the objects (``ObjectLostError``) instead."""


class OutOfMemoryError(GraphstoreError):
    """Ray: its memory monitor killed the task. graphstore has no memory monitor."""


class OutOfDiskError(GraphstoreError):
    """Ray: the store and the disk are full. graphstore raises ``ObjectStoreFullError``."""


class LocalRayletDiedError(GraphstoreError):
    """Ray: the node's raylet died. graphstore has no raylet; a lost scheduler is
    ``ConnectionLostError``."""


class PlasmaObjectNotAvailable(GraphstoreError):
    """Ray internal: an object was not available within a timeout."""


class PendingCallsLimitExceeded(GraphstoreError):
    """Ray: too many calls queued on an actor (``max_pending_calls``, not an option of
    graphstore)."""


class TaskPlacementGroupRemoved(GraphstoreError):
    """Ray: the task's placement group was removed (graphstore has no placement
    groups)."""


class ActorPlacementGroupRemoved(GraphstoreError):
    """Ray: the actor's placement group was removed (graphstore has no placement
    groups)."""


class CrossLanguageError(GraphstoreError):
    """Ray: raised in another language's worker (graphstore runs Python only)."""
