"""The critical path of a result: the chain of task runs and data moves that took longest.

A result is ready only once its task ran, which started only once every input was there:
each input was produced by another task and maybe moved (fetched from this host's store,
transferred from another host, restored from a spill). The critical path is the chain,
through this graph, whose run and move times add up the most: the work to speed up if
the result should come sooner (shortening anything off the path does not help).

``longest_chain`` is pure: it takes the runs and moves as plain records (the scheduler
gathers them from its task graph and task stream) and walks the graph iteratively, so a
chain of any length costs no recursion.
"""
from __future__ import annotations

from typing import NamedTuple


class Run(NamedTuple):
    """A task's (or actor call's) run: the last one recorded for it."""
    name: str
    kind: str                 # "task" or "actor-call"
    worker: str               # the worker's id (hex), or "" when unknown
    start: float
    stop: float
    inputs: tuple             # ((object id, producing task id or None), ...)


class Move(NamedTuple):
    """An input brought to the task that read it (fetch, transfer or restore)."""
    kind: str
    worker: str
    start: float
    stop: float
    nbytes: int = 0
    peer: str = ""


def longest_chain(target: bytes, runs: dict, moves: dict) -> dict:
    """The chain of runs (``runs``: task id -> ``Run``) and moves (``moves``: (task id,
    object id) -> ``Move``) that ends with the run of ``target`` and whose durations add
    up the most. Inputs whose producer has no run are leaves (a ``put``, or a run no
    longer kept); their move still counts.

    Returns {"steps": [{"name", "kind", "task_id", "worker", "start", "duration",
    "nbytes", "peer", "input"}, ...] first step first, "total": the steps' summed
    seconds, "wall": from the first step's start to the last one's end}. A run's
    ``input`` is the object (hex) the chain came into it through, None for the first.
    """
    if target not in runs:
        raise KeyError(target)
    best: dict[bytes, float] = {}        # task id -> longest chain ending with its run
    choice: dict[bytes, tuple] = {}      # task id -> (object id, producer) it came through
    stack = [(target, False)]
    on_path: set[bytes] = set()
    while stack:
        task_id, expanded = stack.pop()
        if task_id in best:
            continue
        run = runs[task_id]
        if not expanded:
            on_path.add(task_id)
            stack.append((task_id, True))
            for _, producer in run.inputs:
                if producer in runs and producer not in best and producer not in on_path:
                    stack.append((producer, False))
            continue
        on_path.discard(task_id)
        longest, through = 0.0, None
        for object_id, producer in run.inputs:
            move = moves.get((task_id, object_id))
            length = (move.stop - move.start) if move is not None else 0.0
            if producer in best:
                length += best[producer]
            if through is None or length > longest:
                longest, through = length, (object_id, producer)
        best[task_id] = longest + (run.stop - run.start)
        choice[task_id] = through
    steps: list[dict] = []
    task_id = target
    while task_id is not None:
        run = runs[task_id]
        steps.append(_step(run.name, run.kind, task_id, run.worker, run.start, run.stop))
        through, next_id = choice.get(task_id), None
        if through is not None:
            object_id, producer = through
            move = moves.get((task_id, object_id))
            if move is not None or producer in best:
                steps[-1]["input"] = object_id.hex()
            if move is not None:
                steps.append(_step(object_id.hex(), move.kind, task_id, move.worker,
                                   move.start, move.stop, move.nbytes, move.peer))
            if producer in best:
                next_id = producer
        task_id = next_id
    steps.reverse()
    total = sum(step["duration"] for step in steps)
    wall = max(s["start"] + s["duration"] for s in steps) - min(s["start"] for s in steps)
    return {"steps": steps, "total": total, "wall": wall}


def _step(name: str, kind: str, task_id: bytes, worker: str, start: float, stop: float,
          nbytes: int = 0, peer: str = "") -> dict:
    return {"name": name, "kind": kind, "task_id": task_id.hex(), "worker": worker,
            "start": start, "duration": stop - start, "nbytes": nbytes, "peer": peer,
            "input": None}


def mark_path(data: dict, path: dict) -> None:
    """Mark, in node-link graph ``data`` (``TaskGraph.snapshot``), the nodes and edges of
    a critical path (``longest_chain`` plus its "object_id"): ``critical: True`` on each
    run of it, each object it went through and the result, and on the edges between
    them; the path itself goes in ``data["graph"]["critical_path"]``."""
    chain: list[str] = []
    for step in path["steps"]:
        if step["kind"] in ("task", "actor-call"):
            if step["input"] is not None:
                chain.append(step["input"])
            chain.append(step["task_id"])
    chain.append(path["object_id"])
    on_path = set(chain)
    pairs = set(zip(chain, chain[1:]))
    for node in data["nodes"]:
        if node["id"] in on_path:
            node["critical"] = True
    for edge in data["edges"]:
        if (edge["source"], edge["target"]) in pairs:
            edge["critical"] = True
    data["graph"]["critical_path"] = path
