"""``graphstore.timeline()``, ``graphstore timeline`` and ``critical_path()`` on a real
cluster: two workers posing as two hosts (so results cross between them over TCP), small
stores (so objects spill and are restored), an actor call; the trace is written, loaded
back and checked for its structure, and against the driver's own wall clock."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

import graphstore
from graphstore.util.scheduling_strategies import NodeAffinitySchedulingStrategy
from helpers import wait_for

MB = 1024 * 1024


@graphstore.remote
def make(i: int):
    return np.full(4 * MB, i, dtype=np.uint8)


@graphstore.remote
def pair(a, b):
    return int(a[0]) + int(b[0])


@graphstore.remote
def total(*sums):
    return sum(sums)


@graphstore.remote
def boom():
    raise ValueError("boom")


@graphstore.remote
class Tally:
    def add(self, value):
        return value + 1


def _only_spilled(refs) -> list[int]:
    """Indexes of the refs whose objects are in a spill file and in no store's memory."""
    where = {o["object_id"]: o["where"] for o in graphstore.memory_summary()["objects"]}
    return [i for i, ref in enumerate(refs)
            if isinstance(where.get(ref.hex()), list) and where[ref.hex()]
            and all(w.startswith("spilled") for w in where[ref.hex()])]


def _x_events(trace):
    return [e for e in trace if e["ph"] == "X"]


def _kinds(trace):
    return {e["cat"] for e in _x_events(trace)}


def _run_traced_dag(fresh_cluster, local, tmp_path) -> dict:
    """A small DAG run between the driver's before and after wall-clock readings."""
    fresh_cluster(num_cpus=2, object_store_memory=24 * MB,
                  worker_node_ids=["host-a", "host-b"], spill_to=str(tmp_path / "spill"))
    before = time.time()

    def on(host: str):
        return make.options(scheduling_strategy=NodeAffinitySchedulingStrategy(host, False))

    parts = [on(("host-a", "host-b")[i % 2]).remote(i) for i in range(4)]
    # Each pair reads one part from the other "host": a transfer over TCP.
    sums = [pair.remote(parts[0], parts[1]), pair.remote(parts[2], parts[3])]
    graphstore.get(sums, timeout=60)
    # More than host-a's store keeps: its oldest objects spill, and a task reading two
    # of them has them restored.
    filler = [on("host-a").remote(i) for i in range(4, 10)]
    graphstore.wait(filler, num_returns=len(filler), timeout=60)
    refs = parts + filler
    assert wait_for(lambda: len(_only_spilled(refs)) >= 2, timeout=30)
    first, second = _only_spilled(refs)[:2]
    sums.append(pair.remote(refs[first], refs[second]))
    result = total.remote(*sums)
    assert graphstore.get(result, timeout=60) == sum(range(4)) + first + second
    tally = Tally.remote()
    assert graphstore.get(tally.add.remote(result), timeout=60) == \
        sum(range(4)) + first + second + 1
    with pytest.raises(ValueError, match="boom"):      # a failed run has its span too
        graphstore.get(boom.remote(), timeout=60)
    after = time.time()
    wanted = {"task", "actor-call", "transfer", "spill", "restore"}
    # Heartbeats bring spills within a second; the call's span with its result.
    assert wait_for(lambda: wanted <= _kinds(graphstore.timeline()), timeout=20), \
        _kinds(graphstore.timeline())
    return {"result": result, "before": before, "after": after, "refs": refs,
            "local": local()}


def test_trace_cli_and_critical_path_of_a_small_dag(fresh_cluster, local, tmp_path):
    """One cluster for the three checks (starting one costs seconds)."""
    traced_dag = _run_traced_dag(fresh_cluster, local, tmp_path)
    _check_the_trace(traced_dag, tmp_path)
    _check_the_critical_path(traced_dag)
    _check_the_cli(traced_dag, tmp_path)


def _check_the_trace(traced_dag, tmp_path):
    """Each worker process has its row, each span its times, results their arrows."""
    path = tmp_path / "trace.json"
    returned = graphstore.timeline(str(path))
    trace = json.loads(path.read_text())
    assert trace == returned
    spans = _x_events(trace)
    for event in spans:
        assert {"name", "cat", "ts", "dur", "pid", "tid", "args"} <= event.keys(), event
        assert event["dur"] >= 0
    runs = [e for e in spans if e["cat"] in ("task", "actor-call")]
    assert sorted(e["name"] for e in runs) == \
        ["Tally.add", "boom"] + ["make"] * 10 + ["pair"] * 3 + ["total"]
    # Real run times, measured where the work ran: inside the driver's wall clock.
    before_us, after_us = traced_dag["before"] * 1e6, traced_dag["after"] * 1e6
    for event in runs:
        assert before_us <= event["ts"] and event["ts"] + event["dur"] <= after_us, event
    # Rows: one trace process per worker, named by its pid; a thread row per OS process.
    worker_pids = {w.pid for w in traced_dag["local"].workers}
    process_names = [e["args"]["name"] for e in trace if e["name"] == "process_name"]
    assert len(process_names) == 2
    assert {int(name.rsplit("pid ", 1)[1].rstrip(")")) for name in process_names} == \
        worker_pids
    thread_names = {(e["pid"], e["tid"]): e["args"]["name"] for e in trace
                    if e["name"] == "thread_name"}
    assert {(e["pid"], e["tid"]) for e in spans} <= thread_names.keys()
    assert {f"worker process {pid}" for pid in worker_pids} <= set(thread_names.values())
    call = next(e for e in runs if e["cat"] == "actor-call")
    assert thread_names[(call["pid"], call["tid"])].startswith("actor process")
    # Data moved between the two "hosts" over TCP, spilled and came back.
    transfers = [e for e in spans if e["cat"] == "transfer"]
    assert all(e["args"]["bytes"] >= 4 * MB and e["args"]["peer"].startswith("tcp://")
               for e in transfers)
    assert any(e["args"]["bytes"] > 0 for e in spans if e["cat"] == "spill")
    # Flow arrows: from every make to total, and from total to the actor call.
    by_id = {}
    for event in trace:
        if event["ph"] in ("s", "f"):
            by_id.setdefault(event["id"], {})[event["ph"]] = event

    def enclosing(point):
        return next(e for e in runs if (e["pid"], e["tid"]) == (point["pid"], point["tid"])
                    and e["ts"] <= point["ts"] <= e["ts"] + e["dur"])

    arrows = sorted((enclosing(f["s"])["name"], enclosing(f["f"])["name"])
                    for f in by_id.values())
    assert arrows == [("make", "pair")] * 6 + [("pair", "total")] * 3 + \
        [("total", "Tally.add")]


def _check_the_critical_path(traced_dag):
    """The path ends with the result's task and starts with a part that fed it."""
    path = graphstore.critical_path(traced_dag["result"])
    steps = path["steps"]
    assert steps[0]["kind"] == "task" and steps[0]["name"] == "make"
    assert steps[-1]["kind"] == "task" and steps[-1]["name"] == "total"
    assert all(step["duration"] >= 0 for step in steps)
    assert path["total"] == pytest.approx(sum(step["duration"] for step in steps))
    for step in steps:
        assert traced_dag["before"] <= step["start"]
        assert step["start"] + step["duration"] <= traced_dag["after"]
    assert [s["name"] for s in steps if s["kind"] == "task"] == ["make", "pair", "total"]
    moves = [step for step in steps if step["kind"] not in ("task", "actor-call")]
    assert len(moves) <= 1 and all(m["nbytes"] >= 4 * MB for m in moves)
    with pytest.raises(ValueError, match="was put, not computed by a task"):
        graphstore.critical_path(graphstore.put(1))
    with pytest.raises(TypeError, match="takes an ObjectRef"):
        graphstore.critical_path("not a ref")


def _check_the_cli(traced_dag, tmp_path):
    """``graphstore timeline -o`` writes the trace; an unwritable path is an error."""
    out = tmp_path / "cli-trace.json"
    env = {**os.environ, "GRAPHSTORE_TOKEN": traced_dag["local"].token}
    run = subprocess.run([sys.executable, "-m", "graphstore.cli", "timeline", "-o",
                          str(out), "--address", graphstore.session._driver.address],
                         capture_output=True, text=True, timeout=60, env=env,
                         stdin=subprocess.DEVNULL)
    assert run.returncode == 0, run.stderr
    assert f"wrote {out}" in run.stdout and "2 workers" in run.stdout
    trace = json.loads(out.read_text())
    assert {e["name"] for e in _x_events(trace) if e["cat"] == "task"} == \
        {"make", "pair", "total", "boom"}
    unwritable = subprocess.run([sys.executable, "-m", "graphstore.cli", "timeline", "-o",
                                 str(tmp_path / "missing" / "t.json"), "--address",
                                 graphstore.session._driver.address],
                                capture_output=True, text=True, timeout=60, env=env,
                                stdin=subprocess.DEVNULL)
    assert unwritable.returncode == 1 and "cannot write" in unwritable.stderr


def test_the_timeline_example_runs(run_driver, tmp_path):
    from helpers import run_example
    run = run_example(run_driver, "timeline.py", str(tmp_path / "out"))
    trace = json.loads((tmp_path / "out" / "trace.json").read_text())
    names = {e["name"] for e in _x_events(trace)}
    assert {"load", "summarise", "merge", "RunningTotal.add"} <= names, names
    assert "on 2 worker rows" in run.stdout and "open it in https://ui.perfetto.dev" in run.stdout
    # The slow chunk's load (a second of sleep) leads the critical path.
    text = run.stdout.split("critical path of the merged result:\n")[1]
    path = text.split(" total (")[0].splitlines()[:-1]       # the steps, before the total
    assert "task       load" in path[0] and float(path[0].split()[0]) >= 1000
    assert "task       merge" in path[-1]
    assert "/graph?critical=" in run.stdout
