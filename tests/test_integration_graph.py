"""graphstore.task_graph() and visualize() on real clusters: a known DAG checked through
networkx, every file format, the command line, and the bound on a long run."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import networkx as nx
import numpy as np
import pytest

import graphstore
from graphstore import session
from graphstore.exceptions import GraphvizNotFoundError
from helpers import wait_for

MB = 1024 * 1024


@graphstore.remote
def load(x):
    return x * 2


@graphstore.remote
def transform(x, big):
    return x + int(big.sum())


@graphstore.remote
def combine(a, b, refs):
    return a + b + len(refs)


@graphstore.remote
def fail(x):
    raise KeyError(f"no key {x}")


@graphstore.remote
def step(i):
    return i


def known_dag():
    """x (inline) and big (stored) feed load, transform and combine; box holds c."""
    x = graphstore.put(3)
    big = graphstore.put(np.ones(MB, dtype=np.uint8))
    a = load.remote(x)
    b = transform.remote(x, big)
    c = combine.remote(a, b, [x])
    assert graphstore.get(c) == 6 + (3 + MB) + 1
    box = graphstore.put([c])
    return x, big, a, b, c, box


def task_of(g: nx.DiGraph, obj: str) -> str:
    (task,) = g.predecessors(obj)
    return task


def test_ancestry_of_a_known_dag(cluster):
    x, big, a, b, c, box = known_dag()
    g = graphstore.task_graph([box])
    X, BIG, A, B, C, BOX = (r.hex() for r in (x, big, a, b, c, box))
    L, T, CO = task_of(g, A), task_of(g, B), task_of(g, C)
    assert set(g.nodes) == {X, BIG, A, B, C, BOX, L, T, CO}
    assert {(u, v, k) for u, v, k in g.edges(data="kind")} == {
        (X, L, "argument_of"), (L, A, "produces"),
        (X, T, "argument_of"), (BIG, T, "argument_of"), (T, B, "produces"),
        (A, CO, "argument_of"), (B, CO, "argument_of"), (X, CO, "argument_of"),
        (CO, C, "produces"), (C, BOX, "contained_in")}
    assert g.edges[X, CO]["nested"] is True and g.edges[A, CO]["nested"] is False
    assert nx.is_directed_acyclic_graph(g)
    assert nx.ancestors(g, BOX) == set(g.nodes) - {BOX}
    assert [g.nodes[n]["name"] for n in (L, T, CO)] == ["load", "transform", "combine"]
    pids = {p.pid for p in session.current_local_cluster().workers}
    for task in (L, T, CO):
        attrs = g.nodes[task]
        assert attrs["type"] == "task" and attrs["state"] == "done"
        assert attrs["pid"] in pids and attrs["error"] is None
        assert attrs["started_at"] <= attrs["finished_at"] and attrs["duration"] >= 0
    assert g.nodes[BIG]["size"] >= MB and g.nodes[BIG]["where"][0].startswith("store of pid")
    assert g.nodes[BIG]["inline"] is False and g.nodes[X]["inline"] is True
    assert g.graph["truncated"] is False and g.graph["roots"] == [BOX]
    # One ref alone: its own ancestry only.
    assert set(graphstore.task_graph(a).nodes) == {A, L, X}
    del x, big, a, b, c, box


def test_recent_graph_and_its_limit(cluster):
    refs = [step.remote(i) for i in range(6)]
    assert graphstore.get(refs) == list(range(6))
    g = graphstore.task_graph(limit=4)
    assert g.number_of_nodes() == 4 and g.graph["truncated"] is True
    assert refs[-1].hex() in g and g.graph["total_nodes"] >= 12
    full = graphstore.task_graph()
    for ref in refs:
        assert full.nodes[ref.hex()]["state"] == "ready"
        assert full.nodes[task_of(full, ref.hex())]["name"] == "step"


def test_failures_show_in_the_graph(cluster):
    bad = fail.remote(1)
    after = load.remote(bad)
    with pytest.raises(KeyError):
        graphstore.get(after)
    g = graphstore.task_graph([after])
    failed = g.nodes[task_of(g, bad.hex())]
    assert failed["state"] == "failed" and failed["name"] == "fail"
    assert failed["error"].startswith("Traceback (most recent call last):")
    assert failed["error"].rstrip().endswith("KeyError: 'no key 1'")
    dependent = g.nodes[task_of(g, after.hex())]
    assert dependent["state"] == "failed"
    assert dependent["error"] == (f"argument {bad.hex()} is an error: task fail failed with "
                                  f"KeyError: 'no key 1'")
    assert g.nodes[bad.hex()]["state"] == "error"


def test_visualize_writes_every_format(cluster, tmp_path):
    x, big, a, b, c, box = known_dag()
    written = graphstore.visualize([box], filename=tmp_path / "dag.svg")
    assert written == str(tmp_path / "dag.svg")
    svg = (tmp_path / "dag.svg").read_text()
    assert "<svg" in svg and svg.count('class="node"') == 9
    assert svg.count('class="edge"') == 10
    for name in ("load", "transform", "combine"):
        assert f">{name}</text>" in svg
    graphstore.visualize([box], filename=tmp_path / "dag.png")
    assert (tmp_path / "dag.png").read_bytes()[:4] == b"\x89PNG"
    graphstore.visualize([box], filename=tmp_path / "dag.dot")
    assert (tmp_path / "dag.dot").read_text().count(" -> ") == 10
    graphstore.visualize([box], filename=tmp_path / "dag.json")
    g = nx.node_link_graph(json.loads((tmp_path / "dag.json").read_text()), edges="edges")
    assert g.number_of_nodes() == 9 and g.number_of_edges() == 10
    graphstore.visualize([box], filename=tmp_path / "dag.graphml")
    g = nx.read_graphml(tmp_path / "dag.graphml")
    assert g.number_of_nodes() == 9 and g.nodes[big.hex()]["type"] == "object"
    graphstore.visualize(filename=tmp_path / "recent", format="json", limit=5)
    assert len(json.loads((tmp_path / "recent").read_text())["nodes"]) == 5
    del x, big, a, b, c, box


def test_bad_arguments_are_refused(cluster, tmp_path, monkeypatch):
    with pytest.raises(TypeError, match="refs must be an ObjectRef or a list of ObjectRefs, "
                                        "got str"):
        graphstore.task_graph("abc")
    with pytest.raises(TypeError, match="got int"):
        graphstore.task_graph([graphstore.put(1), 5])
    with pytest.raises(ValueError, match="limit must be a positive integer"):
        graphstore.task_graph(limit=0)
    with pytest.raises(ValueError, match="cannot tell the graph format"):
        graphstore.visualize(filename=tmp_path / "graph.pdf")
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))
    with pytest.raises(GraphvizNotFoundError, match="apt-get install graphviz"):
        graphstore.visualize(filename=tmp_path / "graph.svg")
    graphstore.visualize(filename=tmp_path / "graph.dot")      # no Graphviz needed
    assert (tmp_path / "graph.dot").exists() and not (tmp_path / "graph.svg").exists()


def test_graph_stays_bounded_on_a_long_run(fresh_cluster):
    fresh_cluster(num_cpus=2, task_history=50)
    for _ in range(4):
        assert len(graphstore.get([step.remote(i) for i in range(200)])) == 200
    g = graphstore.task_graph(limit=100_000)
    tasks = [n for n, kind in g.nodes(data="type") if kind == "task"]
    objects = [n for n, kind in g.nodes(data="type") if kind == "object"]
    assert len(tasks) == 50 and len(objects) == 50
    assert g.graph["total_nodes"] == 100 and g.graph["truncated"] is False


def cli(args: list[str], cwd) -> subprocess.CompletedProcess:
    env = {**os.environ, "GRAPHSTORE_TOKEN": session.current_local_cluster().token}
    env.pop("GRAPHSTORE_ADDRESS", None)
    return subprocess.run([sys.executable, "-m", "graphstore.cli", *args], capture_output=True,
                          text=True, env=env, timeout=60, cwd=cwd)


def test_graph_command_writes_the_graph(cluster, tmp_path):
    refs = [step.remote(i) for i in range(3)]
    graphstore.get(refs)
    done = cli(["graph", "--out", "graph.svg", "--address", cluster.address], tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("wrote graph.svg: ")
    assert "<svg" in (tmp_path / "graph.svg").read_text()
    done = cli(["graph", "--out", "g.json", "--limit", "2", "--address", cluster.address],
               tmp_path)
    assert done.returncode == 0, done.stderr
    assert "(truncated: raise --limit for more)" in done.stdout
    data = json.loads((tmp_path / "g.json").read_text())
    assert [n["id"] for n in data["nodes"]][-1] == refs[-1].hex()
    done = cli(["graph", "--out", "g.txt", "--address", cluster.address], tmp_path)
    assert done.returncode == 2 and "cannot tell the graph format" in done.stderr
    done = cli(["graph", "--out", "g", "--format", "dot", "--address", cluster.address],
               tmp_path)
    assert done.returncode == 0 and (tmp_path / "g").read_text().startswith("digraph")
    del refs


def test_the_task_graph_example_runs(run_driver, tmp_path):
    from helpers import run_example
    run = run_example(run_driver, "task_graph.py", str(tmp_path / "out"))
    assert "result computed by 19 tasks: load x6, clean x6, stats x6, merge x1" in run.stdout
    assert "failed task checked:" in run.stdout and "status page at http://" in run.stdout
    assert "<svg" in (tmp_path / "out" / "graph.svg").read_text()
    data = json.loads((tmp_path / "out" / "graph.json").read_text())
    assert any(n.get("name") == "merge" for n in data["nodes"])


@graphstore.remote
class Accumulator:
    def __init__(self):
        self.total = 0

    def add(self, value):
        self.total += value
        return self.total


def test_actor_method_calls_are_nodes_in_order(cluster):
    """Calls show as task nodes with their arguments and results, and each call is
    linked to the next one submitted to the same actor (the method chain, in order)."""
    acc = Accumulator.remote()
    x = graphstore.put(5)
    results = [acc.add.remote(x), acc.add.remote(1), acc.add.remote(2)]
    assert graphstore.get(results) == [5, 6, 8]
    latest = {}     # the scheduler hears of results a moment after the caller

    def calls_done() -> bool:
        g = latest["g"] = graphstore.task_graph(results)
        calls = latest["calls"] = [n for n, a in g.nodes(data=True) if a["type"] == "task"]
        return all(g.nodes[c]["state"] == "done" for c in calls) and len(calls) == 3
    wait_for(calls_done, timeout=10, interval=0.1)
    g, calls = latest["g"], latest["calls"]
    first, second, third = (task_of(g, r.hex()) for r in results)
    assert [g.nodes[c]["name"] for c in (first, second, third)] == ["Accumulator.add"] * 3
    assert all(g.nodes[c]["state"] == "done" and g.nodes[c]["actor"] for c in calls)
    assert g.edges[x.hex(), first]["kind"] == "argument_of"
    assert g.edges[first, second]["kind"] == "next_call"
    assert g.edges[second, third]["kind"] == "next_call"
    assert nx.ancestors(g, results[2].hex()) >= {first, second, x.hex()}
