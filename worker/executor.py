"""Running tasks in threads, off the worker's event loop.

The loop thread stays free for messages and (later) object transfers while tasks run.
Each ``RunTask`` goes to a queue served by ``slots`` threads; a finished task's result
message is queued on the runtime's ordered channel, so it reaches the scheduler before the
release of any ref the task held.
"""
from __future__ import annotations

import inspect
import logging
import os
import pickle
import queue
import threading
import time
import traceback

from graphstore.core import protocol as msg
from graphstore.exceptions import (SerializationError, TaskCancelledError, TaskError,
                                   UnserializableException, WorkerCrashedError)
from graphstore.core.serialization import dumps, error_payload, loads, restore_filename
from graphstore.core.task_args import unpack_args

from graphstore.worker import output
from graphstore.worker.generators import (YieldWriter, is_generator_function,
                                          not_a_generator, store_yielded)

_STOP = object()
logger = logging.getLogger("graphstore.worker")
#: Characters of a failed task's traceback sent as its error text.
_ERROR_TEXT_CHARS = 8000


def _cancelled_payload(name: str) -> list:
    return error_payload(TaskCancelledError(f"task {name} was cancelled"))


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
    def __init__(self, slots: int, runtime, split_bytes: int, streams=None,
                 after_task=None):
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._runtime = runtime
        self._send = runtime.send_from_any_thread
        self._split = split_bytes
        self._functions: dict[bytes, object] = {}
        #: Hashes of generator functions (their values are stored as they are yielded).
        self._generators: set[bytes] = set()
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
        #: Called after each task's outcome is queued (a task process counts its calls).
        self._after_task = after_task
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
        starts a replacement worker). A task blocked in ``get``/``wait`` is woken to
        raise there (an injected exception would wait for its next bytecode)."""
        if force:
            logger.warning("task cancelled with force=True: this worker exits")
            os._exit(1)
        with self._lock:
            ident = self._running.get(task_id)
            if ident is None:
                self._cancelled.add(task_id)
            elif not self._runtime.cancel_wait(ident):
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
            if self._after_task is not None:
                self._after_task()

    def _function(self, function_hash: bytes):
        fn = self._functions.get(function_hash)
        if fn is None:
            fn, filename = pickle.loads(self._function_code[function_hash])
            restore_filename(fn, filename)
            if is_generator_function(fn):
                self._generators.add(function_hash)
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
        spans = self._runtime.spans
        recording = spans.enabled
        if recording:             # when the run started, and the fetches inside it
            started = time.time()
            spans.begin(task.task_id)
        output.current_task.task = (task.task_id, task.name)
        writer = partial = None
        try:
            fn = self._function(task.function_hash)
            load = self._runtime.objects.load_value
            dep_values = ([load(object_id, payload, locations)
                           for object_id, payload, locations in task.deps]
                          if task.deps else ())
            args, kwargs = unpack_args(task.args, dep_values)
            if task.mode:
                writer = YieldWriter(self._runtime, task.returns[0], task.mode,
                                     f"task {task.name}")
                result = self._drain(task, writer, fn(*args, **kwargs))
            elif task.function_hash in self._generators:
                partial = []
                store_yielded(fn(*args, **kwargs), len(task.returns),
                              lambda i, v: self._pack_one(task, task.returns[i], v),
                              f"task {task.name}", partial)
            else:
                result = fn(*args, **kwargs)
            with self._lock:          # inside the try: a late interrupt lands here too
                del self._running[task.task_id]
            packed = partial if partial is not None else self._pack_results(task, result)
            # Recording, the outcome carries when the run started (the scheduler makes
            # its span of that and the duration) and the spans recorded inside it.
            outcome = (msg.TaskDone(task.task_id, packed, time.perf_counter() - start,
                                    spans.end(), started) if recording else
                       msg.TaskDone(task.task_id, packed, time.perf_counter() - start))
        except TaskCancelledError:
            outcome = self._failed(task, writer, partial, _cancelled_payload(task.name),
                                   "TaskCancelledError", False, start)
        except BaseException as exc:
            if isinstance(exc, (KeyboardInterrupt, SystemExit)) and \
                    threading.current_thread() is threading.main_thread():
                raise
            if isinstance(exc, SystemExit):
                outcome = _exited_outcome(task, exc, time.perf_counter() - start)
            else:
                error, text = self._pack_error(task, exc)
                outcome = self._failed(task, writer, partial, error, text,
                                       self._retriable(task.retry_exceptions, exc), start)
        with self._lock:
            self._running.pop(task.task_id, None)
        for stream in self._streams:       # the last printed line goes before the result
            stream.finish_task((task.task_id, task.name))
        output.current_task.task = None
        if recording and outcome.started is None:
            # A failed run (TaskFailed, or a TaskDone made by _exited_outcome): its
            # spans and start go on the outcome built just now.
            outcome.events = spans.end()
            outcome.started = started
        self._send(outcome)

    @staticmethod
    def _drain(task: msg.RunTask, writer: YieldWriter, generator):
        """Run a streaming or dynamic generator to its end; its one result."""
        if not inspect.isgenerator(generator):
            raise not_a_generator(f"task {task.name}", task.mode, generator)
        for value in generator:
            writer.add(value)
        return writer.result()

    def _failed(self, task: msg.RunTask, writer: YieldWriter | None, partial: list | None,
                error: list, text: str, retriable: bool, start: float):
        """The outcome of a task that raised. A streaming or dynamic generator's error
        is its last value, unless the task is retried; a generator with num_returns=N
        keeps the values it yielded before."""
        duration = time.perf_counter() - start
        if writer is not None and not retriable:
            writer.add_error(error)
            return msg.TaskDone(task.task_id, self._pack_results(task, writer.result()),
                                duration)
        return msg.TaskFailed(task.task_id, error, duration, text, retriable, partial or None)

    def _pack_results(self, task: msg.RunTask, result) -> list:
        values = split_returns(f"task {task.name}", result, len(task.returns))
        return [self._pack_one(task, object_id, value)
                for object_id, value in zip(task.returns, values)]

    def _pack_one(self, task: msg.RunTask, object_id: bytes, value) -> list:
        """A ``TaskDone`` result: the value inline, or written into this worker's store."""
        buffers, contained = dumps(value, what=f"the return value of {task.name}")
        payload, size, segment = self._runtime.objects.store_value(object_id, buffers)
        return [object_id, payload, contained, size, segment]

    def _pack_error(self, task: msg.RunTask, exc: BaseException) -> tuple[list, str]:
        return pack_task_error(task.name, exc, self._pid, __file__)


def _exited_outcome(task: msg.RunTask, exc: SystemExit, duration: float) -> msg.TaskFailed:
    """``sys.exit()`` in a task: in Ray it ends the worker, so the task fails as a crashed
    worker would, retried within ``max_retries``. Here only the task's thread ends."""
    crash = WorkerCrashedError(
        f"task {task.name} called sys.exit({exc.code!r}), which counts as its worker "
        f"crashing (as in Ray), and it has no retries left; raise max_retries to retry "
        f"more, or raise an exception instead")
    return msg.TaskFailed(task.task_id, error_payload(crash), duration,
                          f"WorkerCrashedError: {crash}", True)


#: Where graphstore's own code lives (the worker package may sit apart in a checkout).
_INTERNAL_DIRS = tuple({os.path.dirname(os.path.dirname(os.path.abspath(msg.__file__))) + os.sep,
                        os.path.dirname(os.path.abspath(__file__)) + os.sep})


def _user_traceback(exc: BaseException, tb_obj) -> str:
    """The formatted traceback without graphstore's own frames (a nested ``get`` adds
    four of them per level), unless nothing else is left of a stack."""
    formatted = traceback.TracebackException(type(exc), exc, tb_obj)
    seen = set()
    stack = [formatted]
    while stack:
        te = stack.pop()
        if te is None or id(te) in seen:
            continue
        seen.add(id(te))
        user = [f for f in te.stack if not f.filename.startswith(_INTERNAL_DIRS)]
        if user:
            te.stack = traceback.StackSummary.from_list(user)
        stack += [te.__cause__, te.__context__]
    return "".join(formatted.format())


def pack_task_error(name: str, exc: BaseException, pid: int,
                    skip_file: str) -> tuple[list, str]:
    """The pickled ``TaskError`` and its traceback text (the end of it, at most
    ``_ERROR_TEXT_CHARS``, for task records and the status page). Frames of
    ``skip_file`` (the runner's own) are dropped: users want their code's traceback.

    ``KeyboardInterrupt`` is a cancellation (``TaskCancelledError``), as in Ray. A
    ``TaskError`` from a task this one waited on keeps its original exception as the
    cause, so ``except ZeroDivisionError`` works however deep it was raised; the text
    holds the whole chain (each level's traceback ends with the one below)."""
    if isinstance(exc, KeyboardInterrupt):
        return _cancelled_payload(name), "TaskCancelledError"
    tb_obj = exc.__traceback__
    while tb_obj is not None and tb_obj.tb_frame.f_code.co_filename == skip_file:
        tb_obj = tb_obj.tb_next
    tb = _user_traceback(exc, tb_obj)
    cause: BaseException | None = exc
    type_name = type(exc).__name__
    if isinstance(exc, TaskError):
        cause, type_name = exc.cause, exc.cause_type_name
    if cause is not None:
        try:
            loads(dumps(cause)[0])
        except Exception:
            cause = UnserializableException(f"{type_name}: {cause} (the original "
                                            f"exception could not be pickled)")
    text = tb if len(tb) <= _ERROR_TEXT_CHARS else "…" + tb[-_ERROR_TEXT_CHARS:]
    try:
        return error_payload(TaskError(name, tb, cause, pid, type_name)), text
    except SerializationError:
        return error_payload(TaskError(name, tb, None, pid, type_name)), text


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
