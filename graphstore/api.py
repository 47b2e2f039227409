"""``put``, ``get`` and ``wait``: moving objects in and out of the object store."""
from __future__ import annotations

from typing import Any, Sequence

from graphstore import _state
from graphstore.object_ref import ObjectRef


def put(value: Any) -> ObjectRef:
    """Store ``value`` in the object store and return a ref to it.

    The object is immutable from now on: later changes to ``value`` do not reach it.
    """
    return _state.runtime_or_auto_init().put(value)


def get(refs, *, timeout: float | None = None):
    """The value of a ref, or a list of values for a list of refs (in order).

    Raises the task's error (a ``TaskError`` that is also an instance of the original
    exception class) and ``GetTimeoutError`` after ``timeout`` seconds.
    """
    return _state.runtime_or_auto_init().get(refs, timeout)


def wait(refs: Sequence[ObjectRef], *, num_returns: int = 1, timeout: float | None = None,
         fetch_local: bool = True) -> tuple[list[ObjectRef], list[ObjectRef]]:
    """Wait until ``num_returns`` of ``refs`` are ready or ``timeout`` passes.

    Returns ``(ready, not_ready)``, each in the order of ``refs``.
    """
    return _state.runtime_or_auto_init().wait(refs, num_returns, timeout, fetch_local)


def cluster_status() -> dict:
    """The scheduler's summary: workers, nodes, resources, tasks by state, objects."""
    from graphstore import protocol as msg
    return _state.get_runtime().request(msg.GetStatus())


def cluster_resources() -> dict:
    """Total resources of the workers in the cluster, e.g. ``{"CPU": 8.0}``."""
    return cluster_status()["resources"]
