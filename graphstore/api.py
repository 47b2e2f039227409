"""``put``, ``get`` and ``wait``: moving objects in and out of the object store."""
from __future__ import annotations

import queue
import time
from concurrent.futures import Future
from typing import (TYPE_CHECKING, Any, Callable, Iterable, Iterator, Sequence, TypeVar,
                    overload)

from graphstore import session
from graphstore.cluster_report import format_memory_summary as _format_memory_summary
from graphstore.core import graph_export
from graphstore.core import protocol as msg
from graphstore.core.object_ref import ObjectRef
from graphstore.exceptions import GetTimeoutError, GraphvizNotFoundError
from graphstore.runtime import ObjectRefGenerator

if TYPE_CHECKING:
    import networkx

T = TypeVar("T")
#: What ``progress`` returns as given: a ref, a list or a tuple of refs.
_Given = TypeVar("_Given", bound="ObjectRef[Any] | list[ObjectRef[Any]] "
                                 "| tuple[ObjectRef[Any], ...]")

#: Moved to ``cluster_report``; still importable from here, where it used to live.
format_memory_summary = _format_memory_summary


def put(value: T) -> ObjectRef[T]:
    """Store ``value`` in the object store and return a ref to it.

    The object is immutable from now on: later changes to ``value`` do not reach it. A
    small object (at most ``inline_threshold``, 100 KB by default) stays in this process and
    travels inline; a larger one is written once into this host's shared-memory store, and
    a ``get`` on the same host maps it without copying (numpy arrays come back read-only).
    Without a cluster, the first call starts a local one, as ``init()`` would.

    Safe to call from several threads of a driver, task or actor at once.

    Args:
        value: any picklable object (cloudpickle, pickle protocol 5 buffers out of band).
            Refs inside it stay refs.

    Returns:
        A ref to the stored object. It keeps the object alive while this process (or any
        object or task holding it) refers to it.

    Raises:
        TypeError: ``value`` is itself an ``ObjectRef`` (as in Ray).
        SerializationError: ``value`` cannot be pickled; names its type.
        ObjectStoreFullError: the object is larger than a store can ever hold.
    """
    return session.runtime_or_auto_init().put(value)


@overload
def get(refs: ObjectRef[T], *, timeout: float | None = None) -> T: ...


@overload
def get(refs: Sequence[ObjectRef[T]], *, timeout: float | None = None) -> list[T]: ...


def get(refs: ObjectRef[T] | Sequence[ObjectRef[T]], *,
        timeout: float | None = None) -> T | list[T]:
    """The value of a ref, or a list of values for a list of refs (in order).

    A list fails fast, as in Ray: the first object found to be an error is raised at once,
    without waiting for the others; when several are errors, the first of them in the list
    that is known is raised. Inside a task, a ``cancel()`` of the task wakes the ``get`` with
    ``TaskCancelledError``. Large objects on this host come back as zero-copy, read-only
    views of shared memory.

    Safe to call from several threads at once; each waits for its own refs.

    Args:
        refs: an ``ObjectRef``, or a list (or tuple) of them.
        timeout: seconds to wait at most; ``None`` (or ``-1``, Ray's spelling) waits for
            ever.

    Returns:
        The object's value for one ref; a list of values, in the order of ``refs``, for a
        list.

    Raises:
        TaskError: the task (or actor call) raised; the error is also an instance of the
            original exception's class and carries the remote traceback.
        GetTimeoutError: ``timeout`` passed first (a ``TimeoutError``).
        TaskCancelledError: the task was cancelled, or the calling task was.
        ObjectLostError: the object was freed or lost and cannot be computed again.
        WorkerCrashedError: the task's worker died and its retries ran out.
        ActorDiedError: the actor of an actor call died.
        ValueError: ``refs`` is neither a ref nor a list of refs, or ``timeout`` is
            negative (other than ``-1``).
        TypeError: a list holds something other than a ref; names it.
    """
    return session.runtime_or_auto_init().get(refs, timeout)  # type: ignore[no-any-return]


@overload
def wait(refs: Sequence[ObjectRef[T]], *, num_returns: int = 1,
         timeout: float | None = None, fetch_local: bool = True
         ) -> tuple[list[ObjectRef[T]], list[ObjectRef[T]]]: ...


@overload
def wait(refs: Sequence[ObjectRef[Any] | ObjectRefGenerator[Any]], *, num_returns: int = 1,
         timeout: float | None = None, fetch_local: bool = True
         ) -> tuple[list[ObjectRef[Any] | ObjectRefGenerator[Any]],
                    list[ObjectRef[Any] | ObjectRefGenerator[Any]]]: ...


def wait(refs: Sequence[ObjectRef[Any] | ObjectRefGenerator[Any]], *, num_returns: int = 1,
         timeout: float | None = None, fetch_local: bool = True
         ) -> tuple[list[Any], list[Any]]:
    """Wait until ``num_returns`` of ``refs`` are ready or ``timeout`` passes.

    An object that is an error counts as ready (``get`` it to see the error).
    ``ObjectRefGenerator`` entries are ready when ``next()`` would not block. Safe to call
    from several threads at once.

    Args:
        refs: a list (or tuple) of unique refs or streaming generators.
        num_returns: how many must be ready, ``1 <= num_returns <= len(refs)``.
        timeout: seconds to wait at most; ``None`` waits until ``num_returns`` are ready.
        fetch_local: accepted for Ray's signature; objects are fetched when ``get`` asks.

    Returns:
        ``(ready, not_ready)``, two lists, each in the order of ``refs``; ``wait([])`` is
        ``([], [])``.

    Raises:
        TypeError: ``refs`` is not a list or tuple, or holds something other than a ref.
        ValueError: a ref is given twice, ``num_returns`` is out of range, or ``timeout``
            is negative.
    """
    return session.runtime_or_auto_init().wait(  # type: ignore[no-any-return]
        refs, num_returns, timeout, fetch_local)  # type: ignore[arg-type]


def as_completed(refs: Iterable[ObjectRef[T]], *, timeout: float | None = None
                 ) -> Iterator[ObjectRef[T]]:
    """Yield each of ``refs`` once its object is ready (a value or an error), in the order
    they finish; a ref given twice is yielded once.

    Values are not fetched: ``get`` the yielded ref (it raises the error of a failed
    task). Not in Ray's core API; Dask has it. With tqdm::

        for ref in tqdm(graphstore.as_completed(refs), total=len(refs)): ...

    Args:
        refs: the refs to watch (any iterable; it is read at once).
        timeout: seconds after the first ``next()`` after which the iterator gives up;
            ``None`` waits for ever.

    Returns:
        An iterator over the refs in the order they become ready.

    Raises:
        TypeError: ``refs`` holds something other than a ref.
        ValueError: ``timeout`` is negative or not a number.
        GetTimeoutError: raised by the iterator when some refs are still not ready
            ``timeout`` seconds after the first ``next()`` (a ``TimeoutError``).
    """
    refs = list(refs)
    for ref in refs:
        if not isinstance(ref, ObjectRef):
            raise TypeError(f"as_completed() takes ObjectRefs, not {type(ref).__name__}")
    if timeout is not None and (isinstance(timeout, bool)
                                or not isinstance(timeout, (int, float)) or timeout < 0):
        raise ValueError(f"timeout must be a non-negative number of seconds or None, "
                         f"not {timeout!r}")
    return _as_completed(refs, timeout)


def _as_completed(refs: list[ObjectRef[T]], timeout: float | None
                  ) -> Iterator[ObjectRef[T]]:
    import concurrent.futures
    runtime = session.runtime_or_auto_init()
    waiting = {runtime.future(ref, value=False): ref for ref in dict.fromkeys(refs)}
    total = len(waiting)
    try:
        for done in concurrent.futures.as_completed(waiting, timeout=timeout):
            failure = done.exception()
            if failure is not None:          # nothing will come: shut down, connection lost
                raise failure
            yield waiting.pop(done)
    except concurrent.futures.TimeoutError:
        raise GetTimeoutError(f"as_completed() timed out after {timeout} s with "
                              f"{len(waiting)} of {total} object(s) not ready") from None
    finally:                                 # timed out, or the consumer stopped early
        for future, ref in waiting.items():
            runtime.drop_future(ref, future)


@overload
def progress(refs: _Given, *, desc: str | None = None, total: int | None = None,
             timeout: float | None = None, **tqdm_kwargs: Any) -> _Given: ...


@overload
def progress(refs: Iterable[ObjectRef[T]], *, desc: str | None = None,
             total: int | None = None, timeout: float | None = None,
             **tqdm_kwargs: Any) -> list[ObjectRef[T]]: ...


def progress(refs: Any, *, desc: str | None = None, total: int | None = None,
             timeout: float | None = None, **tqdm_kwargs: Any) -> Any:
    """Show a progress bar that advances as ``refs`` finish; return ``refs`` once all are
    done.

    A failed task counts as done: its error is raised when you ``get`` its ref. The bar is
    ``tqdm.auto``'s (a widget in a notebook). A duplicate ref counts once for each time it
    is given. ::

        results = graphstore.get(graphstore.progress([f.remote(x) for x in xs]))

    Args:
        refs: an ``ObjectRef``, a list or tuple of them, or any iterable of them, such as
            the ``ObjectRefGenerator`` of a streaming generator call (its refs are counted
            as they come).
        desc: the bar's label.
        total: the bar's total; default: how many refs there are, when that is known.
        timeout: seconds after the call after which to give up; ``None`` waits for ever.
        **tqdm_kwargs: any other keyword of ``tqdm`` (``unit``, ``leave``, ``file``,
            ``disable``, ...).

    Returns:
        ``refs`` itself (the same object, same order) for a ref, list or tuple; for any
        other iterable, a list of its refs in the order they came.

    Raises:
        TypeError: ``refs`` is not a ref or an iterable of refs, or holds something else.
        ValueError: ``timeout`` is negative or not a number.
        GetTimeoutError: some refs are not done ``timeout`` seconds after the call.
    """
    from tqdm.auto import tqdm
    items: Any
    given: Any
    if isinstance(refs, ObjectRef):
        items, given = [refs], refs
    elif isinstance(refs, (list, tuple)):
        items, given = refs, refs
    else:
        try:
            items, given = iter(refs), None
        except TypeError:
            raise TypeError(f"progress() takes an ObjectRef or an iterable of ObjectRefs, "
                            f"not {type(refs).__name__}") from None
        if total is None and hasattr(refs, "__len__"):
            total = len(refs)
    if timeout is not None and (isinstance(timeout, bool)
                                or not isinstance(timeout, (int, float)) or timeout < 0):
        raise ValueError(f"timeout must be a non-negative number of seconds or None, "
                         f"not {timeout!r}")
    if total is None and given is not None:
        total = len(items)
    runtime = session.runtime_or_auto_init()
    deadline = None if timeout is None else time.monotonic() + timeout
    finished: queue.SimpleQueue[Future[bytes]] = queue.SimpleQueue()
    counts: dict[bytes, int] = {}         # object id -> times given, while not done
    done: set[bytes] = set()
    collected: list[ObjectRef[Any]] = []
    #: object id -> (ref, its future), while not done
    pending: dict[bytes, tuple[ObjectRef[Any], Future[bytes]]] = {}

    def timed_out(what: str) -> GetTimeoutError:
        return GetTimeoutError(f"progress() timed out after {timeout} s {what}, with "
                               f"{len(counts)} of {len(counts) + len(done)} object(s) "
                               f"not ready")

    with tqdm(total=total, desc=desc, **tqdm_kwargs) as bar:

        def arrived(future: Future[bytes]) -> None:
            failure = future.exception()
            if failure is not None:        # nothing will come: shut down, connection lost
                raise failure
            object_id = future.result()
            pending.pop(object_id, None)
            done.add(object_id)
            bar.update(counts.pop(object_id))

        def show() -> None:
            """Before waiting: draw the count now, even if tqdm's ``mininterval`` kept
            the last updates from being drawn (nothing else would draw it meanwhile)."""
            if bar.n != getattr(bar, "last_print_n", bar.n):
                bar.refresh()

        try:
            for ref in _refs_until(items, deadline, timed_out):
                if not isinstance(ref, ObjectRef):
                    raise TypeError(f"progress() takes ObjectRefs, not "
                                    f"{type(ref).__name__}")
                collected.append(ref)
                object_id = ref._id
                if object_id in done:
                    bar.update(1)
                elif object_id in counts:
                    counts[object_id] += 1
                else:
                    counts[object_id] = 1
                    future = runtime.future(ref, value=False)
                    pending[object_id] = (ref, future)
                    future.add_done_callback(finished.put)
                while not finished.empty():    # what finished while refs were still coming
                    arrived(finished.get())
                if given is None:              # the next ref may take a while to come
                    show()
            if bar.total is None:
                bar.total = len(collected)
                bar.refresh()
            while counts:
                while not finished.empty():
                    arrived(finished.get())
                if not counts:
                    break
                show()
                wait = None if deadline is None else max(0.0, deadline - time.monotonic())
                try:
                    arrived(finished.get(timeout=wait))
                except queue.Empty:
                    raise timed_out("waiting for them") from None
        finally:        # a timeout or an error: stop waiting for what is left
            for ref, future in pending.values():
                runtime.drop_future(ref, future)
    return given if given is not None else collected


def _refs_until(items: Iterable[ObjectRef[Any]], deadline: float | None,
                timed_out: Callable[[str], GetTimeoutError]) -> Iterator[ObjectRef[Any]]:
    """The refs of ``items``; past ``deadline``, ``timed_out(what)`` is raised. The next
    ref of a streaming generator is waited for only until then; any other iterable is
    checked between items (its ``next`` cannot be interrupted)."""
    if deadline is None:
        yield from items
        return
    if isinstance(items, ObjectRefGenerator):
        while True:
            try:
                ref = items._next_sync(max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                raise timed_out("waiting for the generator's next ref") from None
            if ref is None:
                return
            yield ref
    for ref in items:
        if time.monotonic() > deadline:
            raise timed_out("while its refs were still coming")
        yield ref


def cluster_status() -> dict[str, Any]:
    """The scheduler's summary of the cluster, as ``graphstore status`` prints it.

    Returns:
        A dict of workers, nodes, drivers, resources, tasks by state, and the objects'
        count and bytes.

    Raises:
        GraphstoreError: this process is not connected (call ``init()`` first).
    """
    status: dict[str, Any] = session.get_runtime().request(msg.GetStatus())
    return status


def cluster_resources() -> dict[str, float]:
    """Total resources of the nodes in the cluster.

    As in Ray, each node also offers ``node:<its id>``.

    Returns:
        Resource name to amount, e.g. ``{"CPU": 8.0, "GPU": 1.0, "node:<id>": 1.0}``.

    Raises:
        GraphstoreError: this process is not connected (call ``init()`` first).
    """
    total: dict[str, float] = session.get_runtime().request(msg.GetNodes())["total"]
    return total


def available_resources() -> dict[str, float]:
    """Resources not held by running tasks and actors now, summed over the nodes.

    Returns:
        Resource name to amount; resources entirely in use are left out, as in Ray.

    Raises:
        GraphstoreError: this process is not connected (call ``init()`` first).
    """
    available: dict[str, float] = session.get_runtime().request(msg.GetNodes())["available"]
    return available


def nodes() -> list[dict[str, Any]]:
    """Every node that is or was in the cluster, in Ray's shape.

    Returns:
        A list of dicts, one per node: ``NodeID``, ``Alive`` (and ``alive``),
        ``NodeManagerAddress`` / ``NodeManagerHostname`` / ``NodeManagerPort`` (where its
        first worker serves objects), ``Resources`` (its total resources; ``{}`` once it
        left), plus graphstore's ``AvailableResources`` and ``Workers``. Departed nodes stay
        listed with ``Alive: False``.

    Raises:
        GraphstoreError: this process is not connected (call ``init()`` first).
    """
    out = []
    for node in session.get_runtime().request(msg.GetNodes())["nodes"]:
        address = node.get("address") or ""
        host, _, port = address.removeprefix("tcp://").rpartition(":")
        host = host.strip("[]")
        alive = bool(node.get("alive"))
        out.append({
            "NodeID": node["node_id"], "Alive": alive, "alive": alive,
            "NodeManagerAddress": host, "NodeManagerHostname": node.get("hostname", ""),
            "NodeManagerPort": int(port) if port.isdigit() else 0,
            "ObjectManagerPort": int(port) if port.isdigit() else 0,
            "NodeName": host, "Resources": node.get("resources", {}) if alive else {},
            "AvailableResources": node.get("available", {}) if alive else {},
            "Workers": node.get("workers", 0), "Labels": {},
        })
    return out


def memory_summary() -> dict[str, Any]:
    """Objects by size (where they are, who refers to them) and each store's use, in the
    spirit of ``ray memory``; ``graphstore memory`` prints it.

    Returns:
        A dict of objects (size, where, referenced by, pending tasks, pins) and of each
        store's use.

    Raises:
        GraphstoreError: this process is not connected (call ``init()`` first).
    """
    summary: dict[str, Any] = session.get_runtime().request(msg.GetMemorySummary())
    return summary


def list_tasks(limit: int = 1000) -> list[dict[str, Any]]:
    """Recent task records, newest last.

    Args:
        limit: the most records to return.

    Returns:
        A list of dicts: name, state, times, placement (worker, node, bytes fetched) and,
        for a failed task, its error with the traceback.

    Raises:
        GraphstoreError: this process is not connected (call ``init()`` first).
    """
    records: list[dict[str, Any]] = session.get_runtime().request(msg.GetTaskRecords(limit))
    return records


def graph_data(refs: ObjectRef[Any] | Iterable[ObjectRef[Any]] | None, limit: int
               ) -> dict[str, Any]:
    """The scheduler's task graph in node-link form (see ``graph_export``)."""
    if type(limit) is not int or limit < 1:
        raise ValueError(f"limit must be a positive integer, got {limit!r}")
    roots = None
    if refs is not None:
        items: Any = [refs] if isinstance(refs, ObjectRef) else refs
        try:
            items = list(items)
        except TypeError:
            items = [items]
        for item in items:
            if not isinstance(item, ObjectRef):
                raise TypeError(f"refs must be an ObjectRef or a list of ObjectRefs, got "
                                f"{type(item).__name__}")
        roots = [item._id for item in items]
    graph: dict[str, Any] = session.get_runtime().request(msg.GetTaskGraph(roots, limit),
                                                          timeout=120)
    return graph


def task_graph(refs: ObjectRef[Any] | Iterable[ObjectRef[Any]] | None = None, *,
               limit: int = 10_000) -> "networkx.DiGraph[str]":
    """The task graph as a ``networkx.DiGraph``.

    Nodes are hex ids. Task nodes have ``type="task"``, ``name``, ``state``, ``worker``,
    ``node``, ``pid``, ``submitted_at``, ``started_at``, ``finished_at``, ``duration`` and
    ``error``; object nodes have ``type="object"``, ``state``, ``size``, ``where``,
    ``spilled`` and ``inline``. Edges have ``kind``: ``argument_of`` (object -> task;
    ``nested`` for a ref inside an argument), ``produces`` (task -> object) or
    ``contained_in`` (object -> the object holding a ref to it). The scheduler keeps the
    last ``task_history`` finished tasks and freed objects, and everything live.

    Args:
        refs: ``None`` for the most recent tasks and objects; an ``ObjectRef`` or a list of
            them for those objects and what they were computed from.
        limit: the most tasks and objects to include.

    Returns:
        The graph; ``G.graph["truncated"]`` says whether ``limit`` cut it.

    Raises:
        ValueError: ``limit`` is not a positive integer.
        TypeError: ``refs`` holds something other than a ref.
        GraphstoreError: this process is not connected (call ``init()`` first).
    """
    return graph_export.to_networkx(graph_data(refs, limit))


def visualize(refs: ObjectRef[Any] | Iterable[ObjectRef[Any]] | None = None,
              filename: str = "graph.svg", format: str | None = None, *,
              limit: int = 1000) -> str:
    """Write the task graph (as in ``task_graph``) to ``filename``.

    Tasks are boxes labelled by name, objects ellipses, filled by state.

    Args:
        refs: as for ``task_graph``.
        filename: the file to write.
        format: ``"svg"``, ``"png"`` (laid out by Graphviz's ``dot``, which must be
            installed), ``"dot"``, ``"json"`` (node-link) or ``"graphml"``; default: from
            ``filename``'s extension.
        limit: the most tasks and objects to include.

    Returns:
        The path of the file written.

    Raises:
        GraphvizNotFoundError: ``.svg`` or ``.png`` without Graphviz's ``dot``; names the
            package to install.
        ValueError: an unknown format, or ``limit`` is not a positive integer.
        TypeError: ``refs`` holds something other than a ref.
    """
    fmt = graph_export.format_for(filename, format)
    if fmt in ("svg", "png") and graph_export.find_dot() is None:
        raise GraphvizNotFoundError(graph_export.graphviz_missing_message(fmt))
    return graph_export.write_graph(graph_data(refs, limit), filename, fmt)


def cancel(ref: ObjectRef[Any] | ObjectRefGenerator[Any], *, force: bool = False,
           recursive: bool = True) -> None:
    """Cancel the task or actor call producing ``ref``.

    Not started: it never runs. Running: ``TaskCancelledError`` is raised inside it at its
    next bytecode, also when it is blocked in ``get``/``wait``; a task inside one long C
    call gets it only when the call returns, as in Ray (use ``force=True``). Actor calls
    are always interrupted in place. ``get(ref)`` then raises ``TaskCancelledError``.

    Args:
        ref: the ``ObjectRef`` of the call, or a streaming call's ``ObjectRefGenerator``.
        force: end the worker process running a task at once.
        recursive: also cancel the tasks it submitted.

    Raises:
        TypeError: ``ref`` is not a ref.
        ValueError: ``force=True`` on an actor call (use ``kill()`` to end an actor).
    """
    session.runtime_or_auto_init().submitter.cancel(
        ref, force, recursive)  # type: ignore[arg-type]  # a generator: its task
