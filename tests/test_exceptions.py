"""graphstore.exceptions: what a task's failure looks like to the user."""
from __future__ import annotations

import pickle
import traceback

import cloudpickle
import pytest

from graphstore import exceptions as ex
from graphstore.exceptions import TaskError


class AppError(Exception):
    """A user exception whose constructor needs two arguments."""

    def __init__(self, code, detail):
        super().__init__(code, detail)
        self.code = code
        self.detail = detail


class AppValueError(ValueError):
    pass


def remote_traceback(exc: BaseException) -> str:
    try:
        raise exc
    except BaseException as caught:
        return "".join(traceback.format_exception(type(caught), caught,
                                                  caught.__traceback__))


def make(cause, pid=4242, name="compute") -> TaskError:
    return TaskError(name, remote_traceback(cause), cause, pid)


def test_instance_of_both_task_error_and_cause_class():
    err = make(ValueError("bad value")).as_instanceof_cause()
    assert isinstance(err, TaskError)
    assert isinstance(err, ex.GraphstoreError)
    assert isinstance(err, ValueError)
    assert err.args == ("bad value",)
    assert err.function_name == "compute" and err.pid == 4242
    assert type(err.cause) is ValueError


def test_except_clause_of_the_cause_class_catches_it():
    err = make(KeyError("missing")).as_instanceof_cause()
    with pytest.raises(KeyError):
        raise err
    with pytest.raises(TaskError):
        raise err
    try:
        raise err
    except LookupError as caught:       # a base class of the cause works too
        assert caught is err


def test_subclass_of_builtin_and_custom_constructor():
    err = make(AppValueError("v")).as_instanceof_cause()
    assert isinstance(err, AppValueError) and isinstance(err, ValueError)
    err2 = make(AppError(7, "disk full")).as_instanceof_cause()
    assert isinstance(err2, AppError) and isinstance(err2, TaskError)
    assert err2.args == (7, "disk full")


def test_dual_class_is_cached():
    a = make(ValueError("1")).as_instanceof_cause()
    b = make(ValueError("2")).as_instanceof_cause()
    assert type(a) is type(b)
    assert type(a) is not type(make(KeyError("k")).as_instanceof_cause())


def test_str_shows_function_pid_cause_and_remote_traceback():
    err = make(ZeroDivisionError("division by zero")).as_instanceof_cause()
    text = str(err)
    assert "compute" in text
    assert "pid=4242" in text
    assert "ZeroDivisionError" in text
    assert "Traceback (most recent call last)" in text
    assert "division by zero" in text
    assert "remote_traceback" in text        # the frame where it was raised


def test_str_without_pid():
    err = TaskError("f", "Traceback: here\n", RuntimeError("x"))
    assert "pid" not in str(err)
    assert str(err).startswith("task f raised RuntimeError:")


@pytest.mark.parametrize("dump", [pickle.dumps, cloudpickle.dumps])
@pytest.mark.parametrize("cause", [ValueError("bad"), KeyError("k"), AppError(1, "x"),
                                   AppValueError("y"), OSError(2, "no such file"),
                                   ArithmeticError()],
                         ids=lambda c: type(c).__name__)
def test_pickle_roundtrip_keeps_everything(dump, cause):
    err = make(cause).as_instanceof_cause()
    back = pickle.loads(dump(err))
    assert type(back).__name__ == type(err).__name__
    assert isinstance(back, TaskError) and isinstance(back, type(cause))
    assert back.function_name == err.function_name
    assert back.traceback_str == err.traceback_str
    assert back.pid == err.pid
    assert back.cause_type_name == type(cause).__name__
    assert type(back.cause) is type(cause) and back.cause.args == cause.args
    assert back.args == cause.args
    assert str(back) == str(err)


def test_plain_task_error_pickles_to_dual():
    err = make(ValueError("v"))          # not yet converted
    back = pickle.loads(pickle.dumps(err))
    assert isinstance(back, ValueError) and isinstance(back, TaskError)


def test_no_cause():
    err = TaskError("f", "tb text", None, 1, cause_type_name="WeirdError")
    assert err.as_instanceof_cause() is err
    assert "WeirdError" in str(err) and "tb text" in str(err)
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is TaskError and back.cause is None and str(back) == str(err)


def test_cause_that_is_a_task_error_is_not_wrapped_again():
    inner = make(ValueError("inner")).as_instanceof_cause()
    outer = TaskError("outer", "tb", inner)
    assert outer.as_instanceof_cause() is outer


def test_keyboard_interrupt_cause_is_not_mixed_in():
    # Other BaseException subclasses are (tests/test_ray_exceptions.py).
    err = make(KeyboardInterrupt())
    assert err.as_instanceof_cause() is err
    assert not isinstance(err, KeyboardInterrupt)


def test_incompatible_layout_falls_back_to_plain_task_error():
    cause = UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")
    err = make(cause).as_instanceof_cause()
    assert isinstance(err, TaskError)
    assert "UnicodeDecodeError" in str(err)
    assert pickle.loads(pickle.dumps(err)).cause_type_name == "UnicodeDecodeError"


def test_cause_attributes_are_reachable():
    err = make(AppError(7, "disk full")).as_instanceof_cause()
    assert err.code == 7 and err.detail == "disk full"
    os_err = make(FileNotFoundError(2, "No such file", "/x")).as_instanceof_cause()
    assert os_err.errno == 2 and os_err.filename == "/x"


@pytest.mark.parametrize("cls, base", [
    (ex.GetTimeoutError, TimeoutError), (ex.ObjectStoreFullError, ex.GraphstoreError),
    (ex.TaskUnschedulableError, ValueError), (ex.SerializationError, TypeError),
    (ex.ConnectionLostError, ConnectionError), (ex.WorkerCrashedError, ex.GraphstoreError),
    (ex.ObjectLostError, ex.GraphstoreError), (ex.ActorDiedError, ex.GraphstoreError),
    (ex.TaskCancelledError, ex.GraphstoreError), (ex.AuthenticationError, ex.GraphstoreError),
])
def test_error_hierarchy_and_pickling(cls, base):
    assert issubclass(cls, ex.GraphstoreError) and issubclass(cls, base)
    err = pickle.loads(pickle.dumps(cls("what happened; what to do")))
    assert type(err) is cls and str(err) == "what happened; what to do"
