"""The scheduler's task graph (``scheduler/graph.py``), driven through the state machine
with plain calls: a known DAG, its edges and attributes, ancestry, truncation, and the
bound that keeps memory flat."""
from __future__ import annotations

import json
import pickle

import networkx as nx
import pytest

from graphstore.core import protocol as msg
from graphstore.core.graph_export import to_networkx
from graphstore.scheduler import entities as st
from graphstore.scheduler.graph import TaskGraph

from test_scheduler_state import DRIVER, MB, Harness

ARG, PRODUCES, CONTAINED = "argument_of", "produces", "contained_in"


def graph_of(h: Harness, limit: int = 10_000, roots=None) -> nx.DiGraph:
    return to_networkx(h.s.graph.snapshot(h.s.workers, limit, roots))


class Dag:
    """x (inline put) and big (stored put) feed three tasks:

        load(x) -> a;  transform(x, big) -> b;  combine(a, b, nested=[x]) -> c
        box = put([c])    (an object holding a ref to c)
    """

    def __init__(self, h: Harness, finish: bool = True):
        self.h = h
        self.w = h.worker("w1", cpus=4, node="node-a")
        self.x = h.put()
        self.big = h.put_stored(self.w, 5 * MB)
        self.load, (self.a,) = h.submit(deps=[self.x], name="load")
        self.transform, (self.b,) = h.submit(deps=[self.x, self.big], name="transform")
        self.combine, (self.c,) = h.submit(deps=[self.a, self.b], nested=[self.x],
                                           name="combine")
        if finish:
            h.s.schedule()
            h.done(self.w, self.load)
            h.done(self.w, self.transform)
            h.s.schedule()
            h.done(self.w, self.combine)
            self.box = h.put(contained=[self.c])


def hexes(*ids: bytes) -> set[str]:
    return {i.hex() for i in ids}


def test_known_dag_has_its_nodes_edges_and_attributes():
    h = Harness()
    d = Dag(h)
    g = graph_of(h)
    tasks = {n for n, t in g.nodes(data="type") if t == "task"}
    objects = {n for n, t in g.nodes(data="type") if t == "object"}
    assert tasks == hexes(d.load, d.transform, d.combine)
    assert objects == hexes(d.x, d.big, d.a, d.b, d.c, d.box)
    edges = {(u, v, k) for u, v, k in g.edges(data="kind")}
    X, BIG, A, B, C, BOX = (i.hex() for i in (d.x, d.big, d.a, d.b, d.c, d.box))
    L, T, CO = (i.hex() for i in (d.load, d.transform, d.combine))
    assert edges == {
        (X, L, ARG), (L, A, PRODUCES),
        (X, T, ARG), (BIG, T, ARG), (T, B, PRODUCES),
        (A, CO, ARG), (B, CO, ARG), (X, CO, ARG), (CO, C, PRODUCES),
        (C, BOX, CONTAINED),
    }
    assert g.edges[X, CO]["nested"] is True and g.edges[A, CO]["nested"] is False
    assert g.edges[BIG, T]["position"] == 1
    assert nx.is_directed_acyclic_graph(g)
    assert list(nx.topological_sort(g.subgraph([X, L, A, CO, C])))[0] == X

    combine = g.nodes[CO]
    assert combine["name"] == combine["label"] == "combine"
    assert combine["state"] == st.DONE and combine["node"] == "node-a"
    assert combine["worker"] == d.w.hex() and combine["pid"] == 100
    assert combine["submitted_at"] <= combine["started_at"] <= combine["finished_at"]
    assert combine["duration"] == pytest.approx(combine["finished_at"]
                                                - combine["started_at"])
    assert combine["error"] is None
    big = g.nodes[BIG]
    assert big["size"] == 5 * MB and big["state"] == st.READY and not big["inline"]
    assert big["where"] == ["store of pid 100 on node-a"] and big["spilled"] is False
    assert g.nodes[X]["inline"] is True and g.nodes[X]["where"] == ["inline (scheduler)"]
    assert g.nodes[A]["producer"] == L and g.nodes[X]["producer"] is None
    assert g.graph["truncated"] is False and g.graph["total_nodes"] == 9


def test_live_tasks_show_their_current_state():
    h = Harness()
    d = Dag(h, finish=False)
    g = graph_of(h)
    assert g.nodes[d.combine.hex()]["state"] == st.WAITING
    assert g.nodes[d.c.hex()]["state"] == st.PENDING
    h.s.schedule()
    g = graph_of(h)
    assert g.nodes[d.load.hex()]["state"] == st.ASSIGNED
    assert g.nodes[d.load.hex()]["finished_at"] is None
    assert g.nodes[d.load.hex()]["pid"] == 100


def test_ancestry_of_refs_is_what_they_were_computed_from():
    h = Harness()
    d = Dag(h)
    g = graph_of(h, roots=[d.c])
    assert set(g.nodes) == hexes(d.c, d.combine, d.a, d.b, d.x, d.load, d.transform,
                                 d.big)
    assert g.graph["roots"] == [d.c.hex()] and g.graph["missing_roots"] == []
    assert set(nx.ancestors(g, d.c.hex())) == set(g.nodes) - {d.c.hex()}
    g = graph_of(h, roots=[d.box])
    assert d.box.hex() in g and d.c.hex() in g and d.x.hex() in g
    g = graph_of(h, roots=[d.a, b"\x07" * 16])
    assert set(g.nodes) == hexes(d.a, d.load, d.x)
    assert g.graph["missing_roots"] == [(b"\x07" * 16).hex()]


def test_ancestry_is_cut_at_the_limit_nearest_first():
    h = Harness()
    d = Dag(h)
    g = graph_of(h, limit=3, roots=[d.c])
    assert set(g.nodes) == hexes(d.c, d.combine, d.a)
    assert g.graph["truncated"] is True


def test_recent_graph_keeps_the_newest_nodes_and_says_it_was_truncated():
    h = Harness()
    h.worker("w1", cpus=2)
    ids = []
    for i in range(10):
        t, (r,) = h.submit(name=f"step{i}")
        ids += [t, r]
    h.s.schedule()
    data = h.s.graph.snapshot(h.s.workers, 6)
    assert [n["id"] for n in data["nodes"]] == [i.hex() for i in ids[-6:]]
    assert data["graph"]["truncated"] is True and data["graph"]["total_nodes"] == 20
    assert data["graph"]["limit"] == 6
    # Edges join shown nodes only: each shown task with its shown result.
    assert {(e["source"], e["target"]) for e in data["edges"]} == {
        (ids[k].hex(), ids[k + 1].hex()) for k in (14, 16, 18)}


def test_finished_tasks_and_freed_objects_are_evicted_past_the_bound():
    h = Harness(history_size=5)
    w = h.worker("w1", cpus=2)
    for i in range(50):
        t, (r,) = h.submit(name=f"t{i}")
        h.s.schedule()
        h.done(w, t)
        h.s.decref(DRIVER, [r])  # the driver drops the result: it is freed
    graph = h.s.graph
    assert not h.s.objects and not h.s.tasks
    assert len(graph.finished) == 5 and len(graph.freed) == 5 and len(graph) == 10
    names = [n["name"] for n in graph.snapshot(h.s.workers, 100)["nodes"]
             if n["type"] == "task"]
    assert names == [f"t{i}" for i in range(45, 50)]
    # Live entries are never evicted, however many finished ones come after them.
    keep = h.put()
    for i in range(20):
        t, (r,) = h.submit(name=f"u{i}")
        h.s.schedule()
        h.done(w, t)
        h.s.decref(DRIVER, [r])
    assert graph.has_object(keep) and len(graph) == 11


def test_freed_objects_keep_their_size_and_where_they_were():
    h = Harness()
    w = h.worker("w1", node="node-a")
    big = h.put_stored(w, 3 * MB)
    h.s.objects_spilled(w, msg.ObjectsSpilled("/spill/c/w1-1", [[big, 0, 3 * MB]]))
    h.s.decref(DRIVER, [big])
    assert big not in h.s.objects
    node = graph_of(h).nodes[big.hex()]
    assert node["state"] == "freed" and node["size"] == 3 * MB
    assert node["spilled"] is True and node["where"] == ["spilled to /spill/c/w1-1"]


def test_spilled_objects_are_marked_while_live():
    h = Harness()
    w = h.worker("w1", node="node-a")
    big = h.put_stored(w, 3 * MB)
    assert graph_of(h).nodes[big.hex()]["spilled"] is False
    h.s.objects_spilled(w, msg.ObjectsSpilled("/spill/c/w1-1", [[big, 0, 3 * MB]]))
    node = graph_of(h).nodes[big.hex()]
    assert node["spilled"] is True and node["where"] == ["spilled to /spill/c/w1-1"]


def test_failures_carry_text_down_to_dependents():
    h = Harness()
    d = Dag(h, finish=False)
    h.s.schedule()
    h.s.task_failed(d.w, msg.TaskFailed(
        d.load, [pickle.dumps(ValueError("boom"))], 0.1,
        "Traceback (most recent call last):\n  ...\nValueError: boom"))
    g = graph_of(h)
    load, combine = g.nodes[d.load.hex()], g.nodes[d.combine.hex()]
    assert load["state"] == combine["state"] == st.FAILED
    assert load["error"].endswith("ValueError: boom")
    assert combine["error"] == (f"argument {d.a.hex()} is an error: task load failed "
                                f"with ValueError: boom")
    assert g.nodes[d.a.hex()]["state"] == st.ERROR
    assert g.nodes[d.c.hex()]["state"] == st.ERROR


def test_tasks_failed_by_the_scheduler_say_why():
    h = Harness()
    w = h.worker("w1", cpus=1)
    big, _ = h.submit(cpus=8, name="too-big")
    crashed, _ = h.submit(name="crashed", retries=0)
    h.s.schedule()
    h.s.remove_peer(w)
    records = {r["name"]: r for r in h.s.task_records()}
    assert records["too-big"]["error"].startswith("TaskUnschedulableError: task too-big "
                                                  "asks for num_cpus=8.0")
    assert records["crashed"]["error"].startswith("WorkerCrashedError: the worker running "
                                                  "task crashed")
    g = graph_of(h)
    assert g.nodes[crashed.hex()]["error"] == records["crashed"]["error"]
    assert g.nodes[big.hex()]["state"] == st.FAILED


def test_snapshot_travels_as_msgpack_and_json():
    h = Harness()
    Dag(h)
    data = h.s.graph.snapshot(h.s.workers, 100)
    json.dumps(data, allow_nan=False)
    encoded = msg.encode_batch([msg.Reply(1, None, data)])
    (reply,) = msg.decode_header(encoded[1], [])
    assert reply.value == data


def test_an_empty_graph():
    data = TaskGraph().snapshot({}, 100)
    assert data["nodes"] == [] and data["edges"] == []
    assert data["graph"]["truncated"] is False and data["graph"]["total_nodes"] == 0
    assert data["directed"] is True and data["multigraph"] is False


def test_a_task_reading_one_object_twice_has_one_edge():
    h = Harness()
    h.worker("w1")
    x = h.put()
    t, _ = h.submit(deps=[x, x], name="twice")
    g = graph_of(h)
    assert g.number_of_edges() == 2  # x -> twice, twice -> result
    assert g.edges[x.hex(), t.hex()]["position"] == 0


def test_heartbeats_are_recorded_and_sanitised():
    h = Harness()
    w = h.worker("w1")
    h.s.worker_heartbeat(w, {"store_used": 10, "spilled_bytes": 5, "bad": [1, 2],
                             7: "x", "last_spill_error": None})
    worker = h.s.workers[w]
    assert worker.metrics == {"store_used": 10, "spilled_bytes": 5,
                              "last_spill_error": None}
    assert worker.last_heartbeat > 0
    h.s.worker_heartbeat(b"?" * 16, {"store_used": 1})   # unknown worker: ignored
    h.s.worker_heartbeat(w, ["not", "a", "dict"])         # malformed: ignored
    assert worker.metrics["store_used"] == 10


def test_actor_records_are_empty_until_actors_exist():
    assert Harness().s.actor_records() == []


def test_live_tasks_and_objects_are_read_from_the_state_not_copied():
    """A queued or running task costs the graph no entry of its own: it reads the state
    machine's tables, and keeps only what finished or was freed."""
    h = Harness()
    w = h.worker("w1", cpus=1)
    submitted = [h.submit(name=f"q{i}") for i in range(50)]
    graph = h.s.graph
    assert not graph.finished and not graph.freed
    assert len(graph) == 100
    h.s.schedule()
    first, (result,) = submitted[0]
    h.done(w, first)
    h.s.decref(DRIVER, [result])
    assert list(graph.finished) == [first] and list(graph.freed) == [result]
    assert graph.task(first).state == st.DONE and not graph.has_object(b"\x07" * 16)
    assert graph.producer_of(result) == first and len(graph) == 100
    names = [n["name"] for n in graph.snapshot(h.s.workers, 1000)["nodes"]
             if n["type"] == "task"]
    assert names == [f"q{i}" for i in range(50)]      # in the order they were submitted


def test_newest_first_merges_live_and_finished_tasks_by_submission():
    h = Harness()
    w = h.worker("w1", cpus=1)
    tasks = [h.submit(name=f"t{i}")[0] for i in range(6)]
    h.s.schedule()
    h.done(w, tasks[0])          # finished in another order than submitted
    h.s.schedule()
    h.done(w, tasks[1])
    order = [t.name for t in h.s.graph.tasks_newest_first()]
    assert order == [f"t{i}" for i in range(5, -1, -1)]
    records = [r["name"] for r in h.s.task_records(limit=3)]
    assert records == ["t3", "t4", "t5"]     # the newest three, oldest first


def test_a_task_run_again_for_a_lost_result_is_live_and_newest_again():
    h = Harness()
    h.worker("w1", node="node-a")
    h.worker("w2", node="node-b")
    make, (big,) = h.submit(name="make", retries=3)
    h.s.schedule()
    ran_on = h.s.tasks[make].worker.id
    h.done_stored(ran_on, make, MB)
    h.submit(name="later")
    assert make in h.s.graph.finished
    h.s.remove_peer(ran_on)            # the only copy of its result goes with it
    assert make not in h.s.graph.finished and make in h.s.tasks
    assert h.s.graph.task(make).state in (st.WAITING, st.QUEUED, st.ASSIGNED)
    newest = next(h.s.graph.tasks_newest_first())
    assert newest.id == make
    snapshot = h.s.graph.snapshot(h.s.workers, 1000)
    ids = [n["id"] for n in snapshot["nodes"]]
    assert len(ids) == len(set(ids)), "a node shows twice"
