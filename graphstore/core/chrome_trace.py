"""Profile events as a Chrome trace: the file ``graphstore.timeline()`` writes.

The Trace Event Format (the JSON array form) is what Perfetto (https://ui.perfetto.dev)
and ``chrome://tracing`` open, and what ``ray timeline`` writes. Here:

* one trace *process* per worker (``pid``: a small number, named by a ``process_name``
  metadata event "worker 3f2a1b9c on host (pid 1234)"), since a worker is the unit a
  scheduler places work on;
* one *thread* row per OS process that did the work (``tid``: its pid): the worker itself
  (its task threads, fetches, spills), and the task and actor processes it started.
  Work that overlapped in one process (tasks on several task threads) gets more rows of
  that process, each a properly nested stack (tid ``pid + lane << 22``, named "... #2");
* an "X" (complete) event per span, ``ts``/``dur`` in microseconds of wall-clock time,
  ``cat`` its kind, ``args`` its task id, bytes and peer;
* "s"/"f" flow events from a task to each task that read one of its results, bound to
  the enclosing slices, so the viewer draws an arrow from producer to consumer.

Pure functions, no I/O: the driver builds the trace from what the scheduler keeps
(``GetTimeline``).
"""
from __future__ import annotations

from typing import Iterable

from graphstore.core.formatting import format_bytes
from graphstore.core.profile_events import ProfileEvent

#: Kinds that are runs of user code (the ends of flow arrows).
RUN_KINDS = ("task", "actor-call")
#: Kinds named by the object they moved, shown as "<kind> <size>".
_DATA_KINDS = ("fetch", "transfer", "restore")
#: Lane number shift of a tid: pids on Linux are below 2**22.
_LANE_SHIFT = 22
#: Microseconds a flow's start sits inside the end of its producer's slice.
_FLOW_INSET_US = 1.0


def assign_lanes(spans: list[tuple[float, float]]) -> list[int]:
    """A lane (0, 1, ...) per ``(start, stop)`` span such that each lane is a properly
    nested stack (a span in a lane lies wholly inside or wholly after the ones before),
    using as few lanes as this greedy order finds."""
    order = sorted(range(len(spans)), key=lambda i: (spans[i][0], -spans[i][1]))
    lanes: list[list[float]] = []          # per lane: the stops of its open spans
    out = [0] * len(spans)
    for index in order:
        start, stop = spans[index]
        for number, open_stops in enumerate(lanes):
            while open_stops and open_stops[-1] <= start:
                open_stops.pop()
            if not open_stops or stop <= open_stops[-1]:
                open_stops.append(stop)
                out[index] = number
                break
        else:
            lanes.append([stop])
            out[index] = len(lanes) - 1
    return out


def _worker_label(worker: bytes, info: dict | None) -> str:
    if not info:
        return f"worker {worker.hex()[:8]}"
    return f"worker {worker.hex()[:8]} on {info.get('host', '?')} (pid {info.get('pid')})"


def _thread_label(pid: int, worker_pid, kinds: set, lane: int) -> str:
    if pid == worker_pid:
        label = f"worker process {pid}"
    elif "actor-call" in kinds:
        label = f"actor process {pid}"
    else:
        label = f"task process {pid}"
    return label if lane == 0 else f"{label} #{lane + 1}"


def _slice_name(event: ProfileEvent) -> str:
    if event.kind in _DATA_KINDS or (event.kind == "spill" and event.nbytes):
        return f"{event.kind} {format_bytes(event.nbytes)}"
    return event.name


def build_trace(entries: Iterable, workers: dict) -> list[dict]:
    """The Chrome trace events of ``entries`` (``[seq, worker id, event list, parent
    task ids]`` as ``GetTimeline`` returns them) with the rows named from ``workers``
    (worker id -> {"pid", "host", ...})."""
    rows = []                                # (worker, event, parents)
    for _, worker, event, parents in entries:
        rows.append((bytes(worker), ProfileEvent._make(event), tuple(parents)))
    order = sorted({w for w, _, _ in rows},
                   key=lambda w: (str((workers.get(w) or {}).get("host", "")),
                                  (workers.get(w) or {}).get("pid") or 0, w))
    trace_pid = {w: number for number, w in enumerate(order, 1)}
    trace: list[dict] = []
    for worker in order:
        pid = trace_pid[worker]
        trace.append({"ph": "M", "name": "process_name", "pid": pid, "tid": 0,
                      "args": {"name": _worker_label(worker, workers.get(worker))}})
        trace.append({"ph": "M", "name": "process_sort_index", "pid": pid, "tid": 0,
                      "args": {"sort_index": pid}})
    # Lanes per OS process of each worker.
    by_process: dict[tuple, list[int]] = {}
    for index, (worker, event, _) in enumerate(rows):
        by_process.setdefault((worker, event.pid), []).append(index)
    tids = [0] * len(rows)
    for (worker, os_pid), indices in sorted(by_process.items(),
                                            key=lambda item: (trace_pid[item[0][0]],
                                                              item[0][1])):
        lanes = assign_lanes([(rows[i][1].start, rows[i][1].stop) for i in indices])
        kinds = {rows[i][1].kind for i in indices}
        worker_pid = (workers.get(worker) or {}).get("pid")
        for lane in sorted(set(lanes)):
            tid = os_pid + (lane << _LANE_SHIFT)
            trace.append({"ph": "M", "name": "thread_name", "pid": trace_pid[worker],
                          "tid": tid, "args": {"name": _thread_label(os_pid, worker_pid,
                                                                      kinds, lane)}})
            trace.append({"ph": "M", "name": "thread_sort_index", "pid": trace_pid[worker],
                          "tid": tid, "args": {"sort_index": tid}})
        for index, lane in zip(indices, lanes):
            tids[index] = os_pid + (lane << _LANE_SHIFT)
    runs: dict[bytes, int] = {}              # task id -> its latest run's row
    for index, (worker, event, _) in enumerate(rows):
        args = {"task_id": event.task_id.hex()}
        if event.kind in _DATA_KINDS or event.kind == "spill":
            args.update(what=event.name, bytes=event.nbytes, peer=event.peer)
        trace.append({"ph": "X", "name": _slice_name(event), "cat": event.kind,
                      "ts": event.start * 1e6, "dur": (event.stop - event.start) * 1e6,
                      "pid": trace_pid[worker], "tid": tids[index], "args": args})
        if event.kind in RUN_KINDS:
            previous = runs.get(event.task_id)
            if previous is None or rows[previous][1].start <= event.start:
                runs[event.task_id] = index
    flow_id = 0
    for index, (worker, event, parents) in enumerate(rows):
        if event.kind not in RUN_KINDS:
            continue
        for parent in parents:
            source = runs.get(parent)
            if source is None:
                continue                     # its run is no longer kept
            flow_id += 1
            producer = rows[source][1]
            end_us = producer.stop * 1e6
            inset = min(_FLOW_INSET_US, (producer.stop - producer.start) * 1e6 / 2)
            trace.append({"ph": "s", "id": flow_id, "name": "result", "cat": "flow",
                          "ts": end_us - inset, "pid": trace_pid[rows[source][0]],
                          "tid": tids[source]})
            trace.append({"ph": "f", "bp": "e", "id": flow_id, "name": "result",
                          "cat": "flow", "ts": event.start * 1e6,
                          "pid": trace_pid[worker], "tid": tids[index]})
    return trace
