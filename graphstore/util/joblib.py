"""A joblib backend that runs ``joblib.Parallel`` batches as graphstore tasks, so that
scikit-learn's ``n_jobs`` (``GridSearchCV``, ``cross_validate``, forests) uses the
cluster. Ray's ``ray.util.joblib.register_ray`` is the same idea.

``register()`` makes the backend known to joblib as ``"graphstore"``::

    register()
    with joblib.parallel_config(backend="graphstore"):
        GridSearchCV(model, grid, n_jobs=-1).fit(X, y)

Each batch joblib forms (a ``BatchedCalls``) is one task, run in a task process of a
worker that has loky's thread variables set (``OMP_NUM_THREADS``... at the task's
CPUs), as loky's own workers do. Numpy arrays of at least
joblib's ``max_nbytes`` (1 MiB by default) anywhere in a batch are put in the object store
once per ``Parallel`` call and reach the tasks as their arguments, read-only, without
a copy on the same host; the rest of the batch is pickled with cloudpickle. Results come
back through ``ObjectRef.future()``; joblib's callbacks (its progress output, its next
dispatch) run on a thread of this backend, never on graphstore's loop thread. An error
is raised with its own type, chained from the ``TaskError`` that carries the remote
traceback; joblib then aborts the call, and this backend cancels the tasks still
running or waiting.

Importing this module imports joblib; importing graphstore does not.
"""
from __future__ import annotations

import logging
import os
import pickle
import queue
import sys
import threading
import weakref
from concurrent.futures import Future
from typing import Any, Callable, Optional

import cloudpickle
from joblib.parallel import (AutoBatchingMixin, ParallelBackendBase,
                             register_parallel_backend)

import graphstore
from graphstore.exceptions import TaskError
from graphstore.util.ref_pickling import dumps_with_refs, loads_with_values

__all__ = ["register", "GraphstoreBackend"]

_log = logging.getLogger("graphstore.joblib")


def register() -> None:
    """Register the ``"graphstore"`` joblib backend.

    Then ``parallel_config(backend="graphstore")`` or ``Parallel(backend="graphstore")``
    runs joblib's batches (and scikit-learn's ``n_jobs``) as graphstore tasks. Calling it
    again is harmless.
    """
    register_parallel_backend("graphstore", GraphstoreBackend)


# -- the task -------------------------------------------------------------------------------

def _run_batch(payload: bytes, writable: bool, *arrays: Any) -> Any:
    """Run one joblib batch; ``arrays`` are its large arrays, put once by the driver."""
    if writable:                          # mmap_mode "r+", "w+" or "c": a private copy
        arrays = tuple(array.copy() for array in arrays)
    return loads_with_values(payload, arrays)()


_run_batch_task = graphstore.remote(_run_batch)


# -- the driver's side ------------------------------------------------------------------------

def _connect() -> None:
    """Start a local cluster if this process is not connected, as Ray's backend does."""
    from graphstore import session
    session.runtime_or_auto_init()


class _SharedArrays:
    """The arrays of one ``Parallel`` call already put, by identity: each is put once
    however many batches carry it. An entry goes when its array does (a generator of
    fresh arrays does not pile them up here); ``clear`` drops the rest at the call's end.
    """

    def __init__(self) -> None:
        #: Reentrant: an array may die, and its entry go, while this thread puts another.
        self._lock = threading.RLock()
        self._refs: dict[int, tuple[weakref.ref[Any], graphstore.ObjectRef[Any]]] = {}

    def ref(self, array: Any) -> graphstore.ObjectRef[Any]:
        key = id(array)
        with self._lock:
            entry = self._refs.get(key)
            if entry is not None and entry[0]() is array:
                return entry[1]
            ref = graphstore.put(array)

            def forget(weak: weakref.ref[Any], key: int = key) -> None:
                with self._lock:
                    if self._refs.get(key, (None,))[0] is weak:
                        del self._refs[key]
            self._refs[key] = (weakref.ref(array, forget), ref)
            return ref

    def clear(self) -> None:
        with self._lock:
            self._refs.clear()


def _large_arrays(shared: _SharedArrays, min_nbytes: int
                  ) -> Callable[[Any], Optional[graphstore.ObjectRef[Any]]]:
    """For ``dumps_with_refs``: numpy arrays of at least ``min_nbytes``, wherever they are
    in a batch (arguments, DataFrames, sparse matrices, dicts of fit parameters), travel
    as refs, each put once per ``Parallel`` call."""
    ndarray = getattr(sys.modules.get("numpy"), "ndarray", ())

    def as_ref(obj: Any) -> Optional[graphstore.ObjectRef[Any]]:
        if isinstance(obj, ndarray) and obj.nbytes >= min_nbytes:
            return shared.ref(obj)
        return None
    return as_ref


class _CallbackThread:
    """Runs joblib's completion callbacks in order, off graphstore's loop thread (a
    callback dispatches the next batch, and a submission may wait for that loop)."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[Callable[[Any], object], Any] | None] = \
            queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="graphstore-joblib",
                                         daemon=True)
        self._thread.start()

    def call(self, callback: Callable[[Any], object], argument: Any) -> None:
        self._queue.put((callback, argument))

    def stop(self) -> None:
        """Finish the callbacks already queued, then end (does not wait)."""
        self._queue.put(None)

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            callback, argument = item
            try:
                callback(argument)
            except BaseException:        # joblib records outcomes itself; never die here
                _log.exception("a joblib completion callback failed")


class GraphstoreBackend(AutoBatchingMixin, ParallelBackendBase):  # type: ignore[misc]
    """joblib's parallel backend API over graphstore tasks.

    ``n_jobs=-1`` (the default under ``parallel_config(backend="graphstore")``) is the
    cluster's CPUs divided by the CPUs of each task; ``n_jobs=1`` runs in this process,
    as with every joblib backend. ``ray_remote_args`` (Ray's name, as for
    ``graphstore.util.multiprocessing.Pool``) are the options of each batch's task:
    ``num_cpus``, ``resources``, ``max_retries``, ``scheduling_strategy``, ...; given to
    ``parallel_config`` or to ``Parallel``.

    Batches run in task processes of the workers (reused from batch to batch), started
    with the variables loky sets in its workers (``OMP_NUM_THREADS``,
    ``OPENBLAS_NUM_THREADS``, ``MKL_NUM_THREADS``...) at the task's ``num_cpus`` (1), or
    ``inner_max_num_threads``: native thread pools do not oversubscribe the host, and
    batches on a worker of several slots do not share its GIL.
    """

    supports_retrieve_callback = True     # generators, timeouts and callbacks
    supports_inner_max_num_threads = True
    default_n_jobs = -1

    def __init__(self, nesting_level: int | None = None,
                 inner_max_num_threads: int | None = None,
                 ray_remote_args: dict[str, Any] | None = None) -> None:
        super().__init__(nesting_level=nesting_level,
                         inner_max_num_threads=inner_max_num_threads)
        self._set_remote_args(ray_remote_args)
        self._options: dict[str, Any] | None = None
        #: The batch task with ``_options``, by task name (``_task_named``).
        self._tasks: dict[str, Any] = {}
        self._lock = threading.Lock()
        #: Tasks of this backend not finished yet (an abort cancels them).
        self._in_flight: set[graphstore.ObjectRef[Any]] = set()
        self._shared = _SharedArrays()
        self._callbacks: _CallbackThread | None = None
        self._min_nbytes: int | None = 2**20              # joblib's "1M"
        self._writable = False

    def _set_remote_args(self, ray_remote_args: dict[str, Any] | None) -> None:
        remote_args = dict(ray_remote_args or {})
        _run_batch_task.options(**remote_args)        # a bad option raises here
        self._remote_args = remote_args
        num_cpus = remote_args.get("num_cpus", 1)
        self._cpus_per_task = num_cpus if num_cpus and num_cpus > 0 else None

    # -- joblib's backend API ------------------------------------------------------------
    def effective_n_jobs(self, n_jobs: int | None) -> int:
        """How many batches may run at once, as joblib asks every backend.

        Args:
            n_jobs: joblib's ``n_jobs``: a positive number is taken as is; ``-1`` is the
                cluster's CPUs divided by each task's, ``-2`` one fewer, and so on; ``None``
                is the default.

        Returns:
            The number of parallel batches, at least 1.

        Raises:
            ValueError: ``n_jobs == 0``.
        """
        if n_jobs == 0:
            raise ValueError("n_jobs == 0 in Parallel has no meaning")
        if n_jobs is None:
            n_jobs = self.default_n_jobs
        if n_jobs > 0:
            return n_jobs
        _connect()
        cpus = graphstore.cluster_resources().get("CPU", 0)
        slots = int(cpus // self._cpus_per_task) if self._cpus_per_task else int(cpus)
        return max(1, slots + 1 + n_jobs)

    def configure(self, n_jobs: int = 1, parallel: Any = None, prefer: str | None = None,
                  require: str | None = None, ray_remote_args: dict[str, Any] | None = None,
                  max_nbytes: int | None = 2**20, mmap_mode: str | None = "r",
                  **_joblib_settings: Any) -> int:
        """Called by ``Parallel`` with its settings, before the first batch.

        Connects to (or starts) a cluster, as Ray's backend does. joblib's other settings
        (``temp_folder``, ``context``...) have no meaning here.

        Args:
            n_jobs: as for ``effective_n_jobs``.
            parallel: the ``Parallel`` object.
            prefer: joblib's hint, unused.
            require: joblib's constraint, unused.
            ray_remote_args: options of each batch's task.
            max_nbytes: the size from which an array goes through the object store once
                (``None``: never).
            mmap_mode: how a task sees such an array: ``"r"``, read-only and shared; ``"r+"``,
                ``"w+"``, ``"c"``, a private writable copy; ``None``, pickled into every batch.
            **_joblib_settings: joblib's other settings, ignored.

        Returns:
            The effective ``n_jobs``.
        """
        _connect()
        if ray_remote_args is not None:
            self._set_remote_args(ray_remote_args)
        self._set_options()
        self.parallel = parallel
        self._min_nbytes = None if mmap_mode is None else max_nbytes
        self._writable = mmap_mode not in ("r", None)
        return self.effective_n_jobs(n_jobs)

    def start_call(self) -> None:
        """Called by ``Parallel`` when a call starts: starts the thread that runs callbacks."""
        self._callback_thread()

    def stop_call(self) -> None:
        """Called by ``Parallel`` when a call ends: stops that thread and forgets the arrays shared for the call."""
        with self._lock:
            callbacks, self._callbacks = self._callbacks, None
        if callbacks is not None:
            callbacks.stop()
        self._shared.clear()

    def submit(self, func: Callable[[], Any],
               callback: Callable[[Future[Any]], object] | None = None) -> Future[Any]:
        """Run a batch (joblib's ``BatchedCalls``) as a task.

        Args:
            func: the batch.
            callback: called with the future once it is done.

        Returns:
            The future of the batch's value.
        """
        refs: list[graphstore.ObjectRef[Any]]
        if self._min_nbytes is None:
            payload, refs = cloudpickle.dumps(func, protocol=pickle.HIGHEST_PROTOCOL), []
        else:
            payload, refs = dumps_with_refs(func, _large_arrays(self._shared,
                                                                self._min_nbytes))
        ref: graphstore.ObjectRef[Any] = self._task_named(func).remote(
            payload, self._writable, *refs)
        callbacks = self._callback_thread()
        with self._lock:
            self._in_flight.add(ref)
        future = ref.future()
        future.add_done_callback(
            lambda done: self._finished(ref, done, callback, callbacks))
        return future

    def retrieve_result_callback(self, future: Future[Any]) -> Any:
        """The batch's results, as joblib asks for them.

        Args:
            future: a future ``submit`` returned, done.

        Returns:
            The batch's list of results.

        Raises:
            Exception: the batch's error, of its own type (the ``TaskError``'s cause).
        """
        try:
            return future.result()
        except TaskError as error:
            if error.cause is None:
                raise
            raise error.cause from error

    def abort_everything(self, ensure_ready: bool = True) -> None:
        """Cancel the tasks still waiting or running: joblib will not use their
        results. The backend stays usable either way."""
        with self._lock:
            refs, self._in_flight = self._in_flight, set()
        for ref in refs:
            graphstore.cancel(ref)

    def terminate(self) -> None:
        """Called by ``Parallel`` at its end: ``stop_call``, and joblib's batch statistics reset."""
        self.stop_call()
        self.reset_batch_stats()

    # -- inside -----------------------------------------------------------------------------
    def _set_options(self) -> None:
        """The batch task's options: ``ray_remote_args``, with the thread variables in
        ``runtime_env`` (those the user gives there win)."""
        runtime_env = dict(self._remote_args.get("runtime_env") or {})
        runtime_env["env_vars"] = {**self._thread_variables(),
                                   **(runtime_env.get("env_vars") or {})}
        options = {**self._remote_args, "runtime_env": runtime_env}
        if options != self._options:
            self._options, self._tasks = options, {}

    def _thread_variables(self) -> dict[str, str]:
        """What loky sets in its workers (joblib's ``_prepare_worker_env``), for a task's
        CPUs instead of this host's CPUs over ``n_jobs``."""
        threads = self.inner_max_num_threads
        default = max(1, int(self._cpus_per_task or 1))
        env = {var: str(threads if threads is not None else os.environ.get(var, default))
               for var in self.MAX_NUM_THREADS_VARS}
        if self.TBB_ENABLE_IPC_VAR not in os.environ:
            env[self.TBB_ENABLE_IPC_VAR] = "1"
        return env

    def _callback_thread(self) -> _CallbackThread:
        with self._lock:
            if self._callbacks is None:
                self._callbacks = _CallbackThread()
            return self._callbacks

    def _task_named(self, batch: Any) -> Any:
        """The batch task, named after the function the batch calls (as the status page
        and ``list_tasks`` show it), unless ``ray_remote_args`` names it."""
        if self._options is None:              # submitted without configure()
            self._set_options()
        items = getattr(batch, "items", None)
        function = items[0][0] if items else batch
        options: dict[str, Any] = self._options  # type: ignore[assignment]  # set above
        name = options.get("name") or "joblib:" + getattr(
            function, "__name__", type(function).__name__)
        task = self._tasks.get(name)
        if task is None:
            task = self._tasks[name] = _run_batch_task.options(**{**options,
                                                                  "name": name})
        return task

    def _finished(self, ref: graphstore.ObjectRef[Any], future: Future[Any],
                  callback: Callable[[Future[Any]], object] | None,
                  callbacks: _CallbackThread) -> None:
        """A task is done (graphstore's loop thread, or the submitting thread if it was
        already): hand joblib its outcome, unless the call was aborted."""
        with self._lock:
            if ref not in self._in_flight:
                return                        # aborted: joblib no longer waits for it
            self._in_flight.discard(ref)
        if callback is not None:
            callbacks.call(callback, future)
