"""Running tasks in threads, off the worker's event loop.

The loop thread stays free for messages and (later) object transfers while tasks run.
Each ``RunTask`` goes to a queue served by ``slots`` threads; a finished task's result
message is queued on the runtime's ordered channel, so it reaches the scheduler before the
release of any ref the task held.
"""
from __future__ import annotations

import logging
import os
import pickle
import queue
import threading
import time
import traceback

from graphstore.core import protocol as msg
from graphstore.exceptions import SerializationError, TaskCancelledError, TaskError
from graphstore.core.serialization import dumps, error_payload, loads
from graphstore.core.task_args import unpack_args

from graphstore.worker import output

_STOP = object()
logger = logging.getLogger("graphstore.worker")
#: Characters of a failed task's traceback sent as its error text.
_ERROR_TEXT_CHARS = 8000


def _cancelled_payload(name: str) -> list:
    return error_payload(TaskCancelledError(f"task {name} was cancelled"))


def _restore_filename(fn, filename: str) -> None:
    """cloudpickle names the code of functions it pickles by value ``<dynamic-code>``;
    give it back its source file so tracebacks show file names and source lines."""
    code = getattr(fn, "__code__", None)
    if code is None or code.co_filename == filename:
        return

    def rename(c):
        consts = tuple(rename(k) if isinstance(k, type(c)) else k for k in c.co_consts)
        return c.replace(co_filename=filename, co_consts=consts)

    try:
        fn.__code__ = rename(code)
    except (TypeError, ValueError):
        pass


def interrupt_thread(ident: int, exc_type: type) -> bool:
    """Raise ``exc_type`` in the thread ``ident`` at its next Python instruction (how a
    running task is cancelled without ending its process; a thread blocked in C code
    sees it once the call returns)."""
    import ctypes
    return ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(ident), ctypes.py_object(exc_type)) == 1


class RetryRule:
    """Whether a task or an actor call asked to be retried on an error
    (``retry_exceptions``: None, True, or a pickled tuple of exception types, unpickled
    once here). Thread-safe (a race unpickles a tuple twice)."""

    def __init__(self):
        self._types: dict[bytes, tuple] = {}

    def __call__(self, retry_exceptions, exc: BaseException) -> bool:
        if retry_exceptions is None or isinstance(exc, (KeyboardInterrupt, SystemExit)):
            return False
        if retry_exceptions is True:
            return isinstance(exc, Exception)
        types = self._types.get(retry_exceptions)
        if types is None:
            try:
                types = pickle.loads(retry_exceptions)
            except Exception:
                logger.warning("could not load retry_exceptions; not retrying",
                               exc_info=True)
                types = ()
            self._types[retry_exceptions] = types
        return isinstance(exc, types)


class TaskExecutor:
    def __init__(self, slots: int, runtime, split_bytes: int, streams=None):
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._runtime = runtime
        self._send = runtime.send_from_any_thread
        self._split = split_bytes
        self._functions: dict[bytes, object] = {}
        self._retriable = RetryRule()
        self._function_code: dict[bytes, bytes] = {}
        self._streams = streams or ()
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._blocked = 0
        #: Running tasks -> their thread; tasks cancelled before they started.
        self._running: dict[bytes, int] = {}
        self._cancelled: set[bytes] = set()
        for _ in range(slots):
            self._start_thread()

    def _start_thread(self) -> None:
        thread = threading.Thread(target=self._serve, daemon=True,
                                  name=f"graphstore-task-{len(self._threads)}")
        self._threads.append(thread)
        thread.start()

    def task_blocked(self):
        """The calling task thread is about to wait on objects: lend its slot out.

        Returns the task id (for ``task_unblocked``), or None outside a task.
        """
        task = getattr(output.current_task, "task", None)
        if task is None:
            return None
        with self._lock:
            self._blocked += 1
            if self._idle == 0:
                self._start_thread()
        self._send(msg.TaskBlocked(task[0]))
        return task[0]

    def task_unblocked(self, task_id: bytes) -> None:
        with self._lock:
            self._blocked -= 1
        self._send(msg.TaskUnblocked(task_id))

    def cancel(self, task_id: bytes, force: bool) -> None:
        """Interrupt a running task, or drop a queued one when its turn comes; ``force``
        ends this worker process (the scheduler fails the task, and a local cluster
        starts a replacement worker)."""
        if force:
            logger.warning("task cancelled with force=True: this worker exits")
            os._exit(1)
        with self._lock:
            ident = self._running.get(task_id)
            if ident is None:
                self._cancelled.add(task_id)
            else:
                interrupt_thread(ident, TaskCancelledError)

    def add_function(self, function_hash: bytes, payload: bytes) -> None:
        self._function_code[function_hash] = payload

    def submit(self, task: msg.RunTask) -> None:
        self._queue.put(task)

    def stop(self) -> None:
        for _ in self._threads:
            self._queue.put(_STOP)

    def _serve(self) -> None:
        get = self._queue.get
        lock = self._lock
        while True:
            with lock:
                self._idle += 1
            task = get()
            with lock:
                self._idle -= 1
            if task is _STOP:
                return
            self._run(task)

    def _function(self, function_hash: bytes):
        fn = self._functions.get(function_hash)
        if fn is None:
            fn, filename = pickle.loads(self._function_code[function_hash])
            if filename:
                _restore_filename(fn, filename)
            self._functions[function_hash] = fn
        return fn

    def _run(self, task: msg.RunTask) -> None:
        """Run one task and send its outcome.

        The outcome is sent before this frame returns: refs the arguments and the result
        hold (objects created in the task, nested refs) are only released afterwards, so
        the scheduler learns what the result contains before those refs are dropped.
        """
        start = time.perf_counter()
        with self._lock:
            if task.task_id in self._cancelled:
                self._cancelled.discard(task.task_id)
                self._send(msg.TaskFailed(task.task_id, _cancelled_payload(task.name), 0.0,
                                          "TaskCancelledError"))
                return
            self._running[task.task_id] = threading.get_ident()
        output.current_task.task = (task.task_id, task.name)
        try:
            fn = self._function(task.function_hash)
            load = self._runtime.objects.load_value
            dep_values = ([load(object_id, payload, locations)
                           for object_id, payload, locations in task.deps]
                          if task.deps else ())
            args, kwargs = unpack_args(task.args, dep_values)
            result = fn(*args, **kwargs)
            with self._lock:          # inside the try: a late interrupt lands here too
                del self._running[task.task_id]
            outcome = msg.TaskDone(task.task_id, self._pack_results(task, result),
                                   time.perf_counter() - start)
        except TaskCancelledError:
            outcome = msg.TaskFailed(task.task_id, _cancelled_payload(task.name),
                                     time.perf_counter() - start, "TaskCancelledError")
        except BaseException as exc:
            if isinstance(exc, (KeyboardInterrupt, SystemExit)) and \
                    threading.current_thread() is threading.main_thread():
                raise
            error, text = self._pack_error(task, exc)
            outcome = msg.TaskFailed(task.task_id, error, time.perf_counter() - start, text,
                                     self._retriable(task.retry_exceptions, exc))
        with self._lock:
            self._running.pop(task.task_id, None)
        for stream in self._streams:       # the last printed line goes before the result
            stream.finish_task((task.task_id, task.name))
        output.current_task.task = None
        self._send(outcome)

    def _pack_results(self, task: msg.RunTask, result) -> list:
        values = split_returns(f"task {task.name}", result, len(task.returns))
        packed = []
        store_value = self._runtime.objects.store_value
        for object_id, value in zip(task.returns, values):
            buffers, contained = dumps(value, what=f"the return value of {task.name}")
            payload, size, segment = store_value(object_id, buffers)
            packed.append([object_id, payload, contained, size, segment])
        return packed

    def _pack_error(self, task: msg.RunTask, exc: BaseException) -> tuple[list, str]:
        return pack_task_error(task.name, exc, self._pid, __file__)


def pack_task_error(name: str, exc: BaseException, pid: int,
                    skip_file: str) -> tuple[list, str]:
    """The pickled ``TaskError`` and its traceback text (the end of it, at most
    ``_ERROR_TEXT_CHARS``, for task records and the status page). Frames of
    ``skip_file`` (the runner's own) are dropped: users want their code's traceback."""
    tb_obj = exc.__traceback__
    while tb_obj is not None and tb_obj.tb_frame.f_code.co_filename == skip_file:
        tb_obj = tb_obj.tb_next
    tb = "".join(traceback.format_exception(type(exc), exc, tb_obj))
    cause: BaseException | None = exc
    try:
        loads(dumps(exc)[0])
    except Exception:
        cause = RuntimeError(f"{type(exc).__name__}: {exc} (the original exception "
                             f"could not be pickled)")
    text = tb if len(tb) <= _ERROR_TEXT_CHARS else "…" + tb[-_ERROR_TEXT_CHARS:]
    try:
        return error_payload(TaskError(name, tb, cause, pid, type(exc).__name__)), text
    except SerializationError:
        return error_payload(TaskError(name, tb, None, pid, type(exc).__name__)), text


def split_returns(what: str, result, n: int) -> tuple:
    """A call's return value as its ``n`` results (``num_returns``)."""
    if n == 1:
        return (result,)
    try:
        values = tuple(result)
    except TypeError:
        raise ValueError(f"{what} has num_returns={n} but returned a "
                         f"{type(result).__name__}, not a sequence") from None
    if len(values) != n:
        raise ValueError(f"{what} has num_returns={n} but returned {len(values)} values")
    return values
