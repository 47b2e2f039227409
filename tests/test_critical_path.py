"""The critical path of a result: pure on hand-built graphs, then through the scheduler's
state (its task graph and task stream), driven with plain method calls."""
from __future__ import annotations

import pytest

from graphstore.core import protocol as msg
from graphstore.scheduler.critical_path import Move, Run, longest_chain, mark_path
from test_scheduler_state import Harness


def _id(n: int) -> bytes:
    return n.to_bytes(16, "big")


A, B, C, D = _id(1), _id(2), _id(3), _id(4)
OA, OB, OC = _id(11), _id(12), _id(13)


def _names(path):
    return [(s["kind"], s["name"]) for s in path["steps"]]


def test_a_chain_is_its_own_critical_path():
    runs = {A: Run("a", "task", "w1", 0.0, 1.0, ()),
            B: Run("b", "task", "w1", 1.0, 3.0, ((OA, A),)),
            C: Run("c", "task", "w1", 3.0, 3.5, ((OB, B),))}
    path = longest_chain(C, runs, {})
    assert _names(path) == [("task", "a"), ("task", "b"), ("task", "c")]
    assert path["total"] == pytest.approx(3.5) and path["wall"] == pytest.approx(3.5)
    assert [s["task_id"] for s in path["steps"]] == [A.hex(), B.hex(), C.hex()]
    assert path["steps"][1] == {"name": "b", "kind": "task", "task_id": B.hex(),
                                "worker": "w1", "start": 1.0, "duration": 2.0,
                                "nbytes": 0, "peer": "", "input": OA.hex()}
    assert path["steps"][0]["input"] is None


def test_a_diamond_takes_its_slower_branch():
    runs = {A: Run("source", "task", "w1", 0.0, 1.0, ()),
            B: Run("fast", "task", "w1", 1.0, 1.5, ((OA, A),)),
            C: Run("slow", "task", "w2", 1.0, 4.0, ((OA, A),)),
            D: Run("join", "task", "w1", 4.0, 5.0, ((OB, B), (OC, C)))}
    path = longest_chain(D, runs, {})
    assert _names(path) == [("task", "source"), ("task", "slow"), ("task", "join")]
    assert path["total"] == pytest.approx(5.0)


def test_a_transfer_on_the_path_counts_and_can_decide_it():
    # The short branch's result crossed hosts, slowly: that branch becomes critical.
    runs = {A: Run("source", "task", "w1", 0.0, 1.0, ()),
            B: Run("near", "task", "w1", 1.0, 2.0, ((OA, A),)),
            C: Run("far", "task", "w2", 1.0, 1.5, ((OA, A),)),
            D: Run("join", "task", "w1", 4.0, 5.0, ((OB, B), (OC, C)))}
    moves = {(D, OC): Move("transfer", "w1", 1.6, 3.9, 1 << 30, "tcp://w2:1"),
             (D, OB): Move("fetch", "w1", 3.9, 3.95, 10, "tcp://w1:1")}
    path = longest_chain(D, runs, moves)
    assert _names(path) == [("task", "source"), ("task", "far"), ("transfer", OC.hex()),
                            ("task", "join")]
    transfer = path["steps"][2]
    assert transfer["duration"] == pytest.approx(2.3) and transfer["nbytes"] == 1 << 30
    assert transfer["peer"] == "tcp://w2:1" and transfer["task_id"] == D.hex()
    assert path["total"] == pytest.approx(1.0 + 0.5 + 2.3 + 1.0)


def test_inputs_without_a_recorded_run_end_the_chain():
    runs = {B: Run("b", "task", "w1", 1.0, 2.0, ((OA, A), (OC, None)))}
    moves = {(B, OC): Move("restore", "w1", 0.5, 0.9, 100, "/spill/f")}
    path = longest_chain(B, runs, moves)
    assert _names(path) == [("restore", OC.hex()), ("task", "b")]
    assert path["steps"][1]["input"] == OC.hex()
    with pytest.raises(KeyError):
        longest_chain(A, runs, moves)


def test_a_long_chain_needs_no_recursion():
    runs = {_id(1): Run("t", "task", "w", 0.0, 1.0, ())}
    for n in range(2, 5000):
        runs[_id(n)] = Run("t", "task", "w", n - 1.0, float(n), ((_id(10**6 + n), _id(n - 1)),))
    path = longest_chain(_id(4999), runs, {})
    assert len(path["steps"]) == 4999 and path["total"] == pytest.approx(4999.0)


def test_the_path_is_marked_on_the_graph_nodes_and_edges_it_runs_through():
    runs = {A: Run("source", "task", "w1", 0.0, 1.0, ()),
            B: Run("fast", "task", "w1", 1.0, 1.5, ((OA, A),)),
            C: Run("slow", "task", "w2", 1.0, 4.0, ((OA, A),)),
            D: Run("join", "task", "w1", 4.0, 5.0, ((OB, B), (OC, C)))}
    path = {**longest_chain(D, runs, {}), "object_id": _id(14).hex()}
    ids = [A, B, C, D, OA, OB, OC, _id(14)]
    data = {"graph": {}, "nodes": [{"id": i.hex()} for i in ids],
            "edges": [{"source": s.hex(), "target": t.hex()} for s, t in (
                (A, OA), (OA, B), (OA, C), (B, OB), (C, OC), (OB, D), (OC, D),
                (D, _id(14)))]}
    mark_path(data, path)
    assert {n["id"] for n in data["nodes"] if n.get("critical")} == \
        {i.hex() for i in (A, OA, C, OC, D, _id(14))}
    assert {(e["source"], e["target"]) for e in data["edges"] if e.get("critical")} == \
        {(s.hex(), t.hex()) for s, t in ((A, OA), (OA, C), (C, OC), (OC, D), (D, _id(14)))}
    assert data["graph"]["critical_path"] is path


# -- through the scheduler's state ---------------------------------------------------------

def _run(h, worker, task_id, returns, start, stop, extra=()):
    events = [*extra, ["task", h.s.tasks[task_id].name, start, stop, 7, task_id, 0, ""]]
    h.s.task_done(worker, msg.TaskDone(task_id, [[r, [b"v"], [], 1, None] for r in returns],
                                       stop - start, events))


def test_the_scheduler_finds_the_path_from_its_graph_and_task_stream():
    h = Harness()
    w = h.worker("w1", cpus=4)
    a, (oa,) = h.submit(name="source")
    h.s.schedule()
    _run(h, w, a, [oa], 0.0, 1.0)
    b, (ob,) = h.submit(deps=[oa], name="fast")
    c, (oc,) = h.submit(deps=[oa], name="slow")
    h.s.schedule()
    _run(h, w, b, [ob], 1.0, 1.2)
    _run(h, w, c, [oc], 1.0, 3.0)
    d, (od,) = h.submit(deps=[ob, oc], name="join")
    h.s.schedule()
    with pytest.raises(ValueError, match="has not finished"):
        h.s.critical_path(od)
    transfer = ["transfer", oc.hex(), 3.0, 3.5, 7, d, 1000, "tcp://w2:1"]
    _run(h, w, d, [od], 3.0, 4.0, [transfer])
    path = h.s.critical_path(od)
    assert _names(path) == [("task", "source"), ("task", "slow"), ("transfer", oc.hex()),
                            ("task", "join")]
    assert path["object_id"] == od.hex() and path["steps"][0]["worker"] == w.hex()
    with pytest.raises(ValueError, match="was put, not computed by a task"):
        h.s.critical_path(h.put())
    with pytest.raises(ValueError, match="not known to the scheduler"):
        h.s.critical_path(b"\x00" * 16)


def test_without_recorded_runs_the_scheduler_says_why():
    h = Harness()
    w = h.worker("w1")
    t, (r,) = h.submit()
    h.s.schedule()
    h.s.task_done(w, msg.TaskDone(t, [[r, [b"v"], [], 1, None]], 0.5))   # recording off
    with pytest.raises(ValueError, match="record_timeline is off"):
        h.s.critical_path(r)
