"""``timeline()`` and ``critical_path()``: what the cluster did, when, and what took longest.

Workers record when each task, argument fetch, transfer, spill, restore and actor call
really started and ended; the scheduler keeps the recent ones per worker (its task
stream). ``timeline()`` turns them into a Chrome trace (``graphstore.core.chrome_trace``),
as ``ray.timeline()`` does; ``critical_path()`` asks the scheduler for the chain of runs
and moves that led to a result (``scheduler/critical_path.py``).
"""
from __future__ import annotations

import json
import os

from graphstore import session
from graphstore.core import protocol as msg
from graphstore.core.chrome_trace import build_trace
from graphstore.core.object_ref import ObjectRef


def timeline_data(since: int = 0) -> dict:
    """The profile events the scheduler keeps, after sequence number ``since``."""
    return session.get_runtime().request(msg.GetTimeline(since), timeout=120)


def write_trace(trace: list, filename: str | os.PathLike) -> str:
    """Write Chrome trace events as JSON; returns the path written."""
    path = os.fspath(filename)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(trace, f)
    return path


def timeline(filename: str | os.PathLike | None = None) -> list[dict]:
    """The cluster's recent work as Chrome trace events, as ``ray.timeline()``.

    One row per worker process, one bar per task run, argument fetch, transfer, spill,
    restore and actor call (their real start and end, measured where the work ran), and
    arrows from each task to the tasks that read its results. The scheduler keeps the
    last ``task_stream_events`` events of each worker; with ``record_timeline=False``
    nothing is recorded. Safe to call from any thread of the driver.

    Args:
        filename: also write the events there as JSON, to open in
            https://ui.perfetto.dev or ``chrome://tracing``.

    Returns:
        The trace events (Chrome trace event format: dicts with ``ph``, ``ts``, ``dur``,
        ``pid``, ``tid``, ``name``, ``args``).

    Raises:
        OSError: ``filename`` cannot be written.
        GraphstoreError: not connected to a cluster (call ``init()`` first).
    """
    data = timeline_data()
    trace = build_trace(data["entries"], data["workers"])
    if filename is not None:
        write_trace(trace, filename)
    return trace


def critical_path(ref: ObjectRef) -> dict:
    """The chain of task runs and input moves (fetches, transfers, restores) whose times
    add up the most among those that led to the finished ``ref``: what to speed up for
    it to come sooner. Safe to call from any thread of the driver.

    Args:
        ref: a finished task's result.

    Returns:
        ``{"object_id", "steps": [{"name", "kind", "task_id", "worker", "start",
        "duration", "nbytes", "peer"}, ...], "total", "wall"}``, first step first;
        ``total`` is the steps' summed seconds, ``wall`` the seconds from the first start
        to the last end.

    Raises:
        TypeError: ``ref`` is not an ``ObjectRef``.
        ValueError: the ref has no path, and why (not finished yet, made by ``put``, or
            forgotten by the scheduler's bounded history).
    """
    if not isinstance(ref, ObjectRef):
        raise TypeError(f"critical_path() takes an ObjectRef, got {type(ref).__name__}")
    path = session.get_runtime().request(msg.GetCriticalPath(ref._id), timeout=120)
    if "problem" in path:
        raise ValueError(path["problem"])
    return path


def format_critical_path(path: dict) -> str:
    """A critical path as lines of text: one step a line, then the total."""
    lines = []
    for step in path["steps"]:
        where = f"worker {step['worker'][:8]}" if step["worker"] else "?"
        what = step["name"] if step["kind"] in ("task", "actor-call") else \
            f"object …{step['name'][-8:]} ({step['nbytes']:,} bytes)"
        lines.append(f"{step['duration'] * 1000:10.1f} ms  {step['kind']:<10} {what}  "
                     f"on {where}")
    lines.append(f"{path['total'] * 1000:10.1f} ms  total ({len(path['steps'])} steps, "
                 f"{path['wall'] * 1000:.1f} ms from first start to last end)")
    return "\n".join(lines)
