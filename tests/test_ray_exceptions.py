"""Errors as Ray programs see them (issue 13, 2.10 and section 3).

* A ``BaseException`` subclass raised in a task or actor method comes back as an instance
  of its class; ``SystemExit`` in a task is a crashed worker (``WorkerCrashedError``,
  retried within ``max_retries``), ``KeyboardInterrupt`` a cancellation.
* A failure several tasks deep is still an instance of the original class, and its text
  shows each level.
* ``graphstore.exceptions`` answers to Ray's names.

The first tests are pure (exception classes, ``pack_task_error``); the rest run on the
shared local cluster.
"""
from __future__ import annotations

import asyncio
import os
import pickle
import sys
import traceback

import cloudpickle
import pytest

import graphstore
from graphstore import exceptions as ex
from graphstore.core.serialization import loads
from graphstore.exceptions import TaskError
from graphstore.worker.executor import pack_task_error
from helpers import gated, wait_for


class Stop(BaseException):
    """A user's BaseException subclass (not an Exception)."""


class AppError(Exception):
    def __init__(self, code, detail):
        super().__init__(code, detail)
        self.code = code
        self.detail = detail


def raised(exc: BaseException) -> BaseException:
    """``exc`` with a traceback, as a task would have it."""
    try:
        raise exc
    except BaseException as caught:
        return caught


def unpack(name: str, exc: BaseException) -> BaseException:
    payload, _ = pack_task_error(name, exc, 4242, "no-runner-file")
    return loads(payload)


# -- pure: Ray's names -------------------------------------------------------------------

#: Ray's public exception names (ray.exceptions, doc/source/ray-core/api/exceptions.rst)
#: that graphstore.exceptions answers to.
RAY_NAMES = [
    "RayError", "RayTaskError", "RayActorError", "TaskCancelledError",
    "TaskUnschedulableError", "ActorDiedError", "ActorUnschedulableError",
    "ActorUnavailableError", "AsyncioActorExit", "LocalRayletDiedError",
    "WorkerCrashedError", "TaskPlacementGroupRemoved", "ActorPlacementGroupRemoved",
    "ObjectStoreFullError", "OutOfDiskError", "OutOfMemoryError", "ObjectLostError",
    "ObjectFetchTimedOutError", "GetTimeoutError", "OwnerDiedError",
    "PendingCallsLimitExceeded", "PlasmaObjectNotAvailable",
    "ObjectReconstructionFailedError", "ObjectReconstructionFailedMaxAttemptsExceededError",
    "ObjectReconstructionFailedLineageEvictedError", "RuntimeEnvSetupError",
    "CrossLanguageError", "RaySystemError", "NodeDiedError", "UnserializableException",
    "ReferenceCountingAssertionError", "AuthenticationError",
]


@pytest.mark.parametrize("name", RAY_NAMES)
def test_every_ray_name_is_a_graphstore_error_class(name):
    cls = getattr(ex, name)
    assert isinstance(cls, type) and issubclass(cls, BaseException)
    if name != "AsyncioActorExit":            # graphstore's exit_actor() signal
        assert issubclass(cls, ex.RayError)


def test_ray_names_are_the_graphstore_classes_for_the_same_failures():
    assert ex.RayError is ex.GraphstoreError
    assert ex.RayTaskError is ex.TaskError
    assert ex.RayActorError is ex.ActorError
    assert issubclass(ex.ActorDiedError, ex.RayActorError)
    assert issubclass(ex.ActorUnavailableError, ex.RayActorError)
    assert ex.RaySystemError is ex.ConnectionLostError
    assert ex.AsyncioActorExit is ex.ActorExit
    assert issubclass(ex.GetTimeoutError, TimeoutError)
    # Ray's hierarchy: the object-lost family under ObjectLostError.
    for name in ("OwnerDiedError", "ObjectFetchTimedOutError",
                 "ReferenceCountingAssertionError", "ObjectReconstructionFailedError",
                 "ObjectReconstructionFailedMaxAttemptsExceededError",
                 "ObjectReconstructionFailedLineageEvictedError"):
        assert issubclass(getattr(ex, name), ex.ObjectLostError), name
    assert issubclass(ex.ReferenceCountingAssertionError, AssertionError)
    # An infeasible actor is still the unschedulable error graphstore raised before.
    assert issubclass(ex.ActorUnschedulableError, ex.TaskUnschedulableError)


@pytest.mark.parametrize("name", [n for n in RAY_NAMES if n != "AsyncioActorExit"])
def test_ray_named_errors_pickle_as_themselves(name):
    cls = getattr(ex, name)
    if cls is ex.TaskError:
        return                                  # test_exceptions.py covers it
    err = pickle.loads(pickle.dumps(cls("what happened")))
    assert type(err) is cls and str(err) == "what happened"


# -- pure: BaseException causes and chains -------------------------------------------------


def test_base_exception_subclass_cause_is_mixed_in():
    err = unpack("stopper", raised(Stop("halt")))
    assert isinstance(err, Stop) and isinstance(err, TaskError)
    assert err.args == ("halt",) and "Stop" in str(err) and "halt" in str(err)
    again = cloudpickle.loads(cloudpickle.dumps(err))
    assert isinstance(again, Stop) and isinstance(again, TaskError)


@pytest.mark.parametrize("cause", [SystemExit(3), GeneratorExit(), asyncio.CancelledError()])
def test_control_flow_base_exceptions_are_not_mixed_in(cause):
    # An error get() raises must not end the caller's process, generator or asyncio task.
    err = TaskError("f", "tb", cause, 1).as_instanceof_cause()
    assert type(err) is TaskError and not isinstance(err, type(cause))


def test_keyboard_interrupt_packs_as_a_cancellation():
    err = unpack("interrupted", raised(KeyboardInterrupt()))
    assert type(err) is ex.TaskCancelledError and "interrupted" in str(err)


def test_a_nested_task_error_keeps_the_original_class_and_the_chain():
    inner = unpack("inner", raised(AppError(7, "disk full")))
    middle = unpack("middle", raised(inner))
    outer = unpack("outer", raised(middle))
    for err in (middle, outer):
        assert isinstance(err, AppError) and isinstance(err, TaskError)
        assert err.code == 7 and err.detail == "disk full"
        assert err.cause_type_name == "AppError" and type(err.cause) is AppError
    text = str(outer)
    assert text.index("task outer") < text.index("task middle") < text.index("task inner")
    assert text.count("disk full") >= 1 and "raised AppError" in text


def test_an_unpicklable_cause_is_replaced_by_unserializable_exception():
    class Local(Exception):
        def __reduce__(self):
            raise TypeError("no pickling")

    err = unpack("f", raised(Local("the text")))
    assert isinstance(err, ex.UnserializableException) and isinstance(err, RuntimeError)
    assert "Local" in str(err) and "the text" in str(err)


# -- on a cluster ---------------------------------------------------------------------


@graphstore.remote
def stop(message):
    raise Stop(message)


@graphstore.remote
def divide(x):
    return 1 / x


@graphstore.remote
def through(fn, *args):
    """Get the result of ``fn.remote(*args)`` inside a task."""
    return graphstore.get(fn.remote(*args))


@graphstore.remote
def app_error():
    raise AppError(3, "quota")


def count_attempt(path) -> int:
    """Append a line to ``path``; return how many there are now."""
    with open(path, "a") as f:
        f.write("x\n")
    with open(path) as f:
        return len(f.readlines())


@graphstore.remote
def exits_until(path, attempts, code):
    """``sys.exit(code)`` until this is the ``attempts``-th run."""
    if count_attempt(path) < attempts:
        sys.exit(code)
    return "survived"


@graphstore.remote
def interrupts(path):
    count_attempt(path)
    raise KeyboardInterrupt


@graphstore.remote
class Raiser:
    def stop(self, message):
        raise Stop(message)

    def interrupt(self):
        raise KeyboardInterrupt

    def nested(self):
        return graphstore.get(through.remote(divide, 0))

    def ok(self):
        return "still here"


@graphstore.remote
class AsyncRaiser:
    async def stop(self, message):
        raise Stop(message)

    async def interrupt(self):
        raise KeyboardInterrupt


def test_base_exception_from_a_task_is_an_instance_of_its_class(cluster):
    with pytest.raises(Stop) as info:
        graphstore.get(stop.remote("from a task"), timeout=30)
    assert isinstance(info.value, ex.RayTaskError) and info.value.args == ("from a task",)
    assert "in stop" in str(info.value)


@pytest.mark.parametrize("actor_class", [Raiser, AsyncRaiser])
def test_base_exception_from_an_actor_method_is_an_instance_of_its_class(cluster,
                                                                         actor_class):
    actor = actor_class.remote()
    with pytest.raises(Stop) as info:
        graphstore.get(actor.stop.remote("from an actor"), timeout=30)
    assert isinstance(info.value, TaskError) and info.value.args == ("from an actor",)


def test_system_exit_in_a_task_is_a_crashed_worker_and_the_worker_lives_on(cluster, local,
                                                                           tmp_path):
    pids = sorted(local().pids())
    attempts = tmp_path / "attempts"
    with pytest.raises(ex.WorkerCrashedError) as info:
        graphstore.get(exits_until.options(max_retries=0).remote(str(attempts), 99, 3),
                       timeout=30)
    assert "sys.exit(3)" in str(info.value) and not isinstance(info.value, SystemExit)
    assert attempts.read_text().count("x") == 1
    # Only the task's thread ended: the same processes serve the next tasks (Ray's
    # worker process exits and is replaced; graphstore's needs no replacement).
    assert graphstore.get(divide.remote(4), timeout=30) == 0.25
    assert sorted(local().pids()) == pids and graphstore.cluster_status()["workers"] == 2


def test_system_exit_in_a_task_is_retried_like_a_crash(cluster, tmp_path):
    attempts = tmp_path / "attempts"
    out = exits_until.options(max_retries=2).remote(str(attempts), 3, 1)
    assert graphstore.get(out, timeout=30) == "survived"
    assert attempts.read_text().count("x") == 3
    again = tmp_path / "again"
    with pytest.raises(ex.WorkerCrashedError):
        graphstore.get(exits_until.options(max_retries=1).remote(str(again), 99, 0),
                       timeout=30)
    assert again.read_text().count("x") == 2


def test_keyboard_interrupt_in_a_task_is_a_cancellation_and_not_retried(cluster, tmp_path):
    attempts = tmp_path / "attempts"
    ref = interrupts.options(max_retries=3, retry_exceptions=True).remote(str(attempts))
    with pytest.raises(ex.TaskCancelledError):
        graphstore.get(ref, timeout=30)
    assert attempts.read_text().count("x") == 1


@pytest.mark.parametrize("actor_class", [Raiser, AsyncRaiser])
def test_keyboard_interrupt_in_an_actor_method_is_a_cancellation(cluster, actor_class):
    actor = actor_class.remote()
    with pytest.raises(ex.TaskCancelledError):
        graphstore.get(actor.interrupt.remote(), timeout=30)
    with pytest.raises(Stop):                   # the actor is still there
        graphstore.get(actor.stop.remote("after"), timeout=30)


def test_failure_three_tasks_deep_is_the_original_class_with_the_chain(cluster):
    ref = through.remote(through, divide, 0)
    with pytest.raises(ZeroDivisionError) as info:
        graphstore.get(ref, timeout=30)
    err = info.value
    assert isinstance(err, ex.RayTaskError) and err.cause_type_name == "ZeroDivisionError"
    text = str(err)
    # Each level names its task, outermost first, and ends with the level below; the
    # original error and its line are at the bottom.
    levels = [i for i, line in enumerate(text.splitlines()) if "raised ZeroDivisionError" in line]
    assert len(levels) == 3
    assert text.index("task through") < text.index("task divide")
    assert "return 1 / x" in text and text.rstrip().endswith("division by zero")
    # graphstore's own frames (get, the runtime) are left out of the text.
    assert "runtime.py" not in text and "executor.py" not in text
    formatted = "".join(traceback.format_exception(type(err), err, err.__traceback__))
    assert "division by zero" in formatted


def test_user_exception_attributes_survive_two_levels(cluster):
    with pytest.raises(AppError) as info:
        graphstore.get(through.remote(app_error), timeout=30)
    assert info.value.code == 3 and info.value.detail == "quota"


def test_failure_through_an_actor_method_is_the_original_class(cluster):
    actor = Raiser.remote()
    with pytest.raises(ZeroDivisionError):
        graphstore.get(actor.nested.remote(), timeout=30)
    assert graphstore.get(actor.ok.remote(), timeout=30) == "still here"


def test_ray_style_except_clauses_catch_graphstore_failures(cluster, tmp_path):
    try:
        graphstore.get(divide.remote(0), timeout=30)
    except ex.RayTaskError as caught:
        assert isinstance(caught, ZeroDivisionError)
    else:
        pytest.fail("no RayTaskError")

    actor = Raiser.remote()
    graphstore.get(actor.ok.remote(), timeout=30)
    graphstore.kill(actor)

    def refused() -> bool:          # kill() is asynchronous, as in Ray
        try:
            graphstore.get(actor.ok.remote(), timeout=30)
        except ex.RayActorError as caught:
            return isinstance(caught, ex.ActorDiedError)
        return False
    assert wait_for(refused, timeout=30)

    gate = tmp_path / "gate"
    pending = gated.remote(str(gate), "opened")
    with pytest.raises(ex.GetTimeoutError):
        graphstore.get(pending, timeout=0.01)
    gate.touch()
    assert graphstore.get(pending, timeout=30) == "opened"


def test_infeasible_actor_raises_actor_unschedulable_error(cluster):
    actor = Raiser.options(num_cpus=64).remote()
    with pytest.raises(ex.ActorUnschedulableError) as info:
        graphstore.get(actor.ok.remote(), timeout=30)
    assert isinstance(info.value, ex.TaskUnschedulableError)
    assert "num_cpus=64" in str(info.value)
