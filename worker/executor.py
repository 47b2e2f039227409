"""Running tasks in threads, off the worker's event loop.

The loop thread stays free for messages and (later) object transfers while tasks run.
Each ``RunTask`` goes to a queue served by ``slots`` threads; a finished task's result
message is queued on the runtime's ordered channel, so it reaches the scheduler before the
release of any ref the task held.
"""
from __future__ import annotations

import os
import pickle
import queue
import threading
import time
import traceback

from graphstore import protocol as msg
from graphstore.exceptions import SerializationError, TaskError
from graphstore.protocol import wire_payload
from graphstore.serialization import dumps, loads
from graphstore.task_args import unpack_args

from graphstore.worker import output

_STOP = object()


class TaskExecutor:
    def __init__(self, slots: int, send, split_bytes: int, streams=None):
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._send = send
        self._split = split_bytes
        self._functions: dict[bytes, object] = {}
        self._function_code: dict[bytes, bytes] = {}
        self._streams = streams or ()
        self._pid = os.getpid()
        self._threads = [threading.Thread(target=self._serve, name=f"graphstore-task-{i}",
                                          daemon=True) for i in range(slots)]
        for thread in self._threads:
            thread.start()

    def add_function(self, function_hash: bytes, payload: bytes) -> None:
        self._function_code[function_hash] = payload

    def submit(self, task: msg.RunTask) -> None:
        self._queue.put(task)

    def stop(self) -> None:
        for _ in self._threads:
            self._queue.put(_STOP)

    def _serve(self) -> None:
        get = self._queue.get
        while True:
            task = get()
            if task is _STOP:
                return
            self._send(self._run(task))

    def _function(self, function_hash: bytes):
        fn = self._functions.get(function_hash)
        if fn is None:
            fn = pickle.loads(self._function_code[function_hash])
            self._functions[function_hash] = fn
        return fn

    def _run(self, task: msg.RunTask):
        start = time.perf_counter()
        output.current_task.task = (task.task_id, task.name)
        try:
            fn = self._function(task.function_hash)
            dep_values = [loads(payload) for _, payload in task.deps] if task.deps else ()
            args, kwargs = unpack_args(task.args, dep_values)
            result = fn(*args, **kwargs)
            return msg.TaskDone(task.task_id, self._pack_results(task, result),
                                time.perf_counter() - start)
        except BaseException as exc:
            if isinstance(exc, (KeyboardInterrupt, SystemExit)) and \
                    threading.current_thread() is threading.main_thread():
                raise
            return msg.TaskFailed(task.task_id, self._pack_error(task, exc),
                                  time.perf_counter() - start)
        finally:
            for stream in self._streams:
                stream.finish_task((task.task_id, task.name))
            output.current_task.task = None

    def _pack_results(self, task: msg.RunTask, result) -> list:
        n = len(task.returns)
        if n == 1:
            values = (result,)
        else:
            try:
                values = tuple(result)
            except TypeError:
                raise ValueError(f"task {task.name} has num_returns={n} but returned a "
                                 f"{type(result).__name__}, not a sequence") from None
            if len(values) != n:
                raise ValueError(f"task {task.name} has num_returns={n} but returned "
                                 f"{len(values)} values")
        packed = []
        for object_id, value in zip(task.returns, values):
            buffers, contained = dumps(value, what=f"the return value of {task.name}")
            packed.append([object_id, wire_payload(buffers, self._split), contained])
        return packed

    def _pack_error(self, task: msg.RunTask, exc: BaseException) -> list:
        tb = traceback.format_exc()
        cause: BaseException | None = exc
        try:
            loads(dumps(exc)[0])
        except Exception:
            cause = RuntimeError(f"{type(exc).__name__}: {exc} (the original exception "
                                 f"could not be pickled)")
        error = TaskError(task.name, tb, cause, self._pid, type(exc).__name__)
        try:
            return dumps(error)[0]
        except SerializationError:
            error = TaskError(task.name, tb, None, self._pid, type(exc).__name__)
            return dumps(error)[0]
