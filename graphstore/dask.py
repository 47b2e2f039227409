"""Dask collections on graphstore: a Dask scheduler whose tasks are graphstore tasks.

``dask.compute(x, scheduler=graphstore.dask.get)`` (or ``dask.config.set(scheduler=
graphstore.dask.get)``) runs a ``dask.array``, ``dask.dataframe``, ``dask.bag`` or
``dask.delayed`` graph on the cluster. Each Dask task becomes one graphstore task whose
inputs are the refs of the tasks it depends on (linear chains fused into one task), so chunks stay in the workers' shared
memory and are read where they are (zero-copy on the same host); the scheduler places each
task near the bytes it reads. The driver lets go of an intermediate's ref once every task
that reads it has been submitted, so the store frees it as soon as those have run.

``persist=True`` (or ``graphstore.dask.persist``) leaves the results in the store: the
persisted collection holds refs, and computing it again reads them where they are.
"""
from __future__ import annotations

import queue
import sys
from collections.abc import Hashable, Mapping
from concurrent.futures import Future
from typing import Any, Callable, Iterator

from graphstore import api, session
from graphstore.core.object_ref import ObjectRef
from graphstore.remote_function import remote
from graphstore.util.ref_pickling import dumps_with_refs, loads_with_values

try:
    import dask
    from dask._task_spec import Alias, DataNode, convert_legacy_graph, fuse_linear_task_spec
    from dask.callbacks import local_callbacks, unpack_callbacks
    from dask.core import flatten
    from dask.order import order
    from dask.utils import key_split
except ImportError as error:        # pragma: no cover - depends on the environment
    raise ImportError("graphstore.dask needs Dask: pip install 'graphstore[dask]'") from error

__all__ = ["disable", "enable", "get", "persist"]

#: A Dask key: a string, or a tuple such as ``("x-abc", 0, 1)``.
Key = Hashable
#: A Dask graph after ``convert_legacy_graph``: key -> its task (``GraphNode``; Dask is
#: untyped, so Any).
Graph = dict[Key, Any]


def _run_node(blob: bytes, keys: list[Key], *values: Any) -> Any:
    """Worker side: run one Dask task on the values of its dependencies.

    ``values`` are the dependencies' values (one per key) followed by the values of the
    refs found inside the task itself (see ``_Literals``)."""
    dependencies, inner = values[:len(keys)], values[len(keys):]
    node = loads_with_values(blob, inner)
    return node(dict(zip(keys, dependencies)))


#: Arrays and frames at least this large that Dask inlined into tasks are put in the store
#: once per ``get`` and read from there (zero-copy) by every task that uses them.
_LARGE_LITERAL_BYTES = 1 << 20


def _bulky_types() -> tuple[type, ...]:
    """The types whose large instances go through the store (pandas only if loaded)."""
    import numpy
    kinds: list[type] = [numpy.ndarray]
    pandas = sys.modules.get("pandas")
    if pandas is not None:
        kinds += [pandas.DataFrame, pandas.Series]
    return tuple(kinds)


def _nbytes(obj: Any) -> int:
    nbytes = getattr(obj, "nbytes", None)
    if isinstance(nbytes, int):
        return nbytes
    usage = obj.memory_usage(index=True, deep=False)
    return int(usage if isinstance(usage, int) else usage.sum())


_run = remote(_run_node)


def get(dsk: Mapping[Key, Any] | Any, keys: Key | list[Any], *, persist: bool = False,
        ray_persist: bool | None = None, callbacks: Any = None, **kwargs: Any) -> Any:
    """Run a Dask graph on graphstore and return the values of ``keys``: a Dask scheduler,
    ``compute(scheduler=graphstore.dask.get)``.

    Each Dask task is a graphstore task; a chain of tasks each read by the next alone runs
    as one task. Dask's callbacks (``dask.diagnostics.ProgressBar``, ``Profiler``, or
    ``callbacks=``) are called: ``pretask`` when a task is submitted, ``posttask`` (without
    the value, which stays in the store) when its result is ready, ``finish`` at the end.

    Args:
        dsk: the Dask graph (a mapping, or a collection).
        keys: one key or a (nested) list of keys.
        persist: return ``ObjectRef``s left in the object store instead of values (what
            ``dask.persist`` needs to keep a collection on the cluster).
        ray_persist: ``persist`` under Ray's name.
        callbacks: Dask callbacks for this computation.
        **kwargs: other keywords Dask passes to schedulers (``num_workers``, ``pool``...),
            accepted and ignored: the cluster decides.

    Returns:
        The values (or refs) of ``keys``, in the same shape.

    Raises:
        KeyError: a key, or a task's dependency, is not in the graph.
        TaskError: a task failed; the error is also an instance of the original
            exception's class, as ``graphstore.get`` raises it.
    """
    persist = persist or bool(ray_persist)
    if not isinstance(dsk, Mapping):
        dsk = dsk.__dask_graph__()
    wanted = list(flatten(keys)) if isinstance(keys, list) else [keys]
    # A chain of tasks each read by the next alone runs as one task, as in Dask
    # distributed: its links then never go through the store.
    graph = fuse_linear_task_spec(convert_legacy_graph(dsk), wanted)
    with local_callbacks(callbacks) as active:
        if not active:
            return _pack(keys, _compute(graph, wanted, persist, None))
        progress = _Progress(graph, unpack_callbacks(active))
        try:
            values = _compute(graph, wanted, persist, progress)
        except BaseException:
            progress.finish(errored=True)
            raise
        progress.finish(errored=False)
        return _pack(keys, values)


def _compute(graph: Graph, wanted: list[Key], persist: bool, progress: _Progress | None
             ) -> dict[Key, Any]:
    refs = _submit_graph(graph, set(wanted), progress)
    flat = [refs[key] for key in wanted]
    if progress is not None:
        progress.wait()
    return dict(zip(wanted, flat if persist else api.get(flat)))


class _Progress:
    """Dask's local-scheduler callbacks, fed by graphstore: a task is "running" from
    its submission until its result is ready (the driver hears of that without
    fetching the value)."""

    def __init__(self, graph: Graph, callbacks: tuple[list[Callable[..., Any]], ...]
                 ) -> None:
        self.start, start_state, self.pretask, self.posttask, self.finish_callbacks = \
            callbacks
        self.graph = graph
        tasks = {key for key, node in graph.items()
                 if not isinstance(node, (Alias, DataNode))}
        self.state: dict[str, Any] = {"waiting": tasks, "ready": set(), "running": set(),
                      "finished": set(), "released": set(), "cache": {}}
        self._runtime = session.runtime_or_auto_init()
        #: key -> (ref, future), until ready
        self._futures: dict[Key, tuple[ObjectRef[Any], Future[Any]]] = {}
        self._done: queue.SimpleQueue[Key] = queue.SimpleQueue()
        for callback in self.start:
            callback(graph)
        for callback in start_state:
            callback(graph, self.state)

    def submitted(self, key: Key, node: Any, ref: ObjectRef[Any]) -> None:
        if isinstance(node, (Alias, DataNode)):
            return
        self.state["waiting"].discard(key)
        self.state["running"].add(key)
        for callback in self.pretask:
            callback(key, self.graph, self.state)
        future = self._runtime.future(ref, value=False)
        self._futures[key] = (ref, future)
        future.add_done_callback(
            lambda _, key=key: self._done.put(key))  # type: ignore[misc]

    def wait(self) -> None:
        """Call ``posttask`` for each task as its result is ready, until all are."""
        while self._futures:
            key = self._done.get()
            _, future = self._futures.pop(key)
            failure = future.exception()
            if failure is not None:              # shut down, connection lost
                raise failure
            self.state["running"].discard(key)
            self.state["finished"].add(key)
            for callback in self.posttask:
                callback(key, None, self.graph, self.state, None)

    def finish(self, errored: bool) -> None:
        for ref, future in self._futures.values():
            self._runtime.drop_future(ref, future)
        self._futures.clear()
        for callback in self.finish_callbacks:
            callback(self.graph, self.state, errored)


def persist(*collections: Any, **kwargs: Any) -> Any:
    """``dask.persist`` on graphstore: the collections' chunks stay in the object store.

    Computing the returned collections with ``get`` reads the chunks where they are.

    Args:
        *collections: Dask collections.
        **kwargs: keywords of ``dask.persist``.

    Returns:
        The collections, as ``dask.persist`` returns them, holding refs.
    """
    return dask.persist(*collections, scheduler=get, persist=True, **kwargs)


def enable(**config: Any) -> Any:
    """Make graphstore Dask's default scheduler (Ray: ``enable_dask_on_ray``).

    Args:
        **config: more Dask settings to set with it.

    Returns:
        What ``dask.config.set(...)`` returns, so ``with graphstore.dask.enable():`` limits
        it to a block.
    """
    return dask.config.set(scheduler=get, **config)


def disable() -> Any:
    """Give Dask back its own default scheduler (Ray: ``disable_dask_on_ray``).

    Returns:
        What ``dask.config.set(scheduler=None)`` returns.
    """
    return dask.config.set(scheduler=None)


def _submit_graph(graph: Graph, wanted: set[Key], progress: _Progress | None = None
                  ) -> dict[Key, ObjectRef[Any]]:
    """Submit every task ``wanted`` needs, dependencies first, in Dask's order.

    Returns the refs of ``wanted`` (and of nothing else: every other ref is dropped as
    soon as the last task reading it has been submitted)."""
    needed = _needed(graph, wanted)
    readers: dict[Key, int] = dict.fromkeys(needed, 0)
    for key in needed:
        for dep in graph[key].dependencies:
            readers[dep] += 1
    priority = order({key: graph[key] for key in needed}) if len(needed) > 1 else {}
    refs: dict[Key, ObjectRef[Any]] = {}
    literals = _Literals()
    for key in sorted(needed, key=lambda k: priority.get(k, 0)):
        _submit(key, graph, refs, readers, wanted, literals, progress)
    return refs


class _Literals:
    """What of a Dask task travels beside it, as its arguments (``dumps_with_refs``).

    Dask inlines data into the tasks that read it: ``from_array`` puts the whole source
    array into every chunk's task, and blockwise fusion does the same to the chunks of a
    persisted collection. Refs found in a task, and arrays or frames of a megabyte or
    more (put in the store once per ``get``, shared by every task of the graph), travel
    as the task's arguments, which the worker receives as values read from the store.
    """

    def __init__(self) -> None:
        #: id(obj) -> (obj, its ref); the object is kept so its id stays its own.
        self._shared: dict[int, tuple[Any, ObjectRef[Any]]] = {}
        self._bulky = _bulky_types()

    def __call__(self, obj: Any) -> ObjectRef[Any] | None:
        kind = type(obj)
        if kind is ObjectRef:
            ref: ObjectRef[Any] = obj
            return ref
        if kind not in self._bulky or _nbytes(obj) < _LARGE_LITERAL_BYTES:
            return None
        entry = self._shared.get(id(obj))
        if entry is None:
            entry = self._shared[id(obj)] = (obj, api.put(obj))
        return entry[1]


def _needed(graph: Graph, wanted: set[Key]) -> set[Key]:
    """The keys ``wanted`` depends on, directly or not (Dask usually culled already)."""
    missing = [key for key in wanted if key not in graph]
    if missing:
        raise KeyError(f"graphstore.dask.get: keys not in the graph: {missing[:5]}")
    needed: set[Key] = set()
    stack = list(wanted)
    while stack:
        key = stack.pop()
        if key in needed:
            continue
        needed.add(key)
        for dep in graph[key].dependencies:
            if dep not in graph:
                raise KeyError(f"graphstore.dask.get: task {key!r} depends on {dep!r}, "
                               f"which is not in the graph")
            stack.append(dep)
    return needed


def _submit(key: Key, graph: Graph, refs: dict[Key, ObjectRef[Any]],
            readers: dict[Key, int], wanted: set[Key], literals: _Literals,
            progress: _Progress | None) -> None:
    """Submit ``key`` (and, should Dask's order ever put it first, its dependencies)."""
    stack = [key]
    while stack:
        key = stack[-1]
        if key in refs:
            stack.pop()
            continue
        node = graph[key]
        pending = [dep for dep in node.dependencies if dep not in refs]
        if pending:
            stack.extend(pending)
            continue
        stack.pop()
        refs[key] = _ref_for(node, refs, literals)
        if progress is not None:
            progress.submitted(key, node, refs[key])
        for dep in node.dependencies:
            readers[dep] -= 1
            if readers[dep] == 0 and dep not in wanted:
                del refs[dep]          # the store frees it once its readers have run


def _ref_for(node: Any, refs: dict[Key, ObjectRef[Any]], literals: _Literals
             ) -> ObjectRef[Any]:
    if isinstance(node, Alias):
        return refs[node.target]
    if isinstance(node, DataNode):
        value = node.value
        return value if isinstance(value, ObjectRef) else api.put(value)
    dependencies = list(node.dependencies)
    blob, inner = dumps_with_refs(node, literals)
    ref: ObjectRef[Any] = _run.options(name=key_split(node.key)).remote(
        blob, dependencies, *(refs[dep] for dep in dependencies), *inner)
    return ref


def _pack(keys: Key | list[Any], by_key: dict[Key, Any]) -> Any:
    if isinstance(keys, list):
        return [_pack(key, by_key) for key in keys]
    return by_key[keys]
