"""Writing the task graph: DOT written by hand and laid out by the real Graphviz, node-link
JSON and GraphML read back through networkx, and the error when Graphviz is missing."""
from __future__ import annotations

import json
import shutil

import networkx as nx
import pytest

from graphstore.core import graph_export
from graphstore.exceptions import GraphvizNotFoundError
from graphstore.core.graph_export import format_for, render, to_dot, to_networkx, write_graph

from test_scheduler_graph import Dag
from test_scheduler_state import Harness


@pytest.fixture
def dag_data() -> tuple[Dag, dict]:
    h = Harness()
    d = Dag(h)
    return d, h.s.graph.snapshot(h.s.workers, 1000)


def test_dot_is_laid_out_by_graphviz(dag_data):
    d, data = dag_data
    text = to_dot(data)
    assert text.startswith("digraph graphstore {") and text.rstrip().endswith("}")
    svg = render(text, "svg").decode()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    for name in ("load", "transform", "combine"):
        assert f">{name}</text>" in svg
    # Every node and edge made it into the picture.
    assert svg.count('class="node"') == len(data["nodes"])
    assert svg.count('class="edge"') == len(data["edges"])


def test_dot_colours_nodes_by_state_and_marks_spilled_objects():
    data = {"graph": {}, "edges": [], "nodes": [
        {"id": "aa", "type": "task", "label": "ok", "name": "ok", "state": "done"},
        {"id": "bb", "type": "task", "label": "bad", "name": "bad", "state": "failed",
         "error": "Traceback\nValueError: x"},
        {"id": "cc", "type": "object", "label": "obj", "state": "ready", "size": 5,
         "spilled": True, "where": ["spilled to /x"]},
        {"id": "dd", "type": "object", "label": "gone", "state": "freed", "size": 5},
    ]}
    text = to_dot(data)
    line = {n: next(l for l in text.splitlines() if l.strip().startswith(f'"{n}"'))
            for n in ("aa", "bb", "cc", "dd")}
    assert 'fillcolor="#a1d99b"' in line["aa"] and 'shape="box"' in line["aa"]
    assert 'fillcolor="#fb6a4a"' in line["bb"] and "ValueError: x" in line["bb"]
    assert 'color="#6a51a3"' in line["cc"] and 'shape="ellipse"' in line["cc"]
    assert 'style="filled,dashed"' in line["dd"]


def test_dot_escapes_names_graphviz_would_misread():
    weird = 'we"ird\\name\nwith {braces} -> and; <html>'
    data = {"graph": {}, "nodes": [
        {"id": "t1", "type": "task", "label": weird, "name": weird, "state": "done"},
        {"id": "o1", "type": "object", "label": "x", "state": "ready", "size": 1}],
        "edges": [{"source": "t1", "target": "o1", "kind": "produces"}]}
    svg = render(to_dot(data), "svg").decode()
    assert svg.count('class="node"') == 2 and svg.count('class="edge"') == 1
    assert "&lt;html&gt;" in svg and "<html>" not in svg


def test_truncated_graphs_say_so_in_the_picture():
    data = {"graph": {"truncated": True, "total_nodes": 5000}, "edges": [], "nodes": [
        {"id": "t1", "type": "task", "label": "x", "name": "x", "state": "done"}]}
    assert 'label="the 1 most recent of 5,000 nodes"' in to_dot(data)


def test_json_is_node_link_that_networkx_reads_back(dag_data, tmp_path):
    d, data = dag_data
    path = write_graph(data, tmp_path / "g.json")
    loaded = json.loads((tmp_path / "g.json").read_text())
    g = nx.node_link_graph(loaded, edges="edges")
    expected = to_networkx(data)
    assert path == str(tmp_path / "g.json")
    assert isinstance(g, nx.DiGraph)
    assert set(g.nodes) == set(expected.nodes)
    assert set(g.edges) == set(expected.edges)
    assert g.nodes[d.combine.hex()]["name"] == "combine"
    assert g.edges[d.c.hex(), d.box.hex()]["kind"] == "contained_in"


def test_graphml_keeps_structure_and_attributes(dag_data, tmp_path):
    d, data = dag_data
    write_graph(data, tmp_path / "g.graphml")
    g = nx.read_graphml(tmp_path / "g.graphml")
    assert set(g.edges) == set(to_networkx(data).edges)
    node = g.nodes[d.big.hex()]
    assert node["type"] == "object" and node["size"] == 5 * 1024 * 1024
    assert node["where"] == "store of pid 100 on node-a" and node["spilled"] is False
    assert g.nodes[d.combine.hex()]["state"] == "done"
    assert "error" not in g.nodes[d.combine.hex()]     # None is left out
    assert g.edges[d.x.hex(), d.combine.hex()]["nested"] is True


def test_svg_and_png_files(dag_data, tmp_path):
    _, data = dag_data
    write_graph(data, tmp_path / "g.svg")
    assert "<svg" in (tmp_path / "g.svg").read_text()
    write_graph(data, tmp_path / "g.png")
    assert (tmp_path / "g.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    write_graph(data, tmp_path / "picture", format="svg")
    assert "<svg" in (tmp_path / "picture").read_text()
    write_graph(data, tmp_path / "g.gv")
    assert (tmp_path / "g.gv").read_text().startswith("digraph")


@pytest.mark.parametrize("name, fmt, expected", [
    ("a.svg", None, "svg"), ("a.PNG", None, "png"), ("a.dot", None, "dot"),
    ("a.gv", None, "dot"), ("a.json", None, "json"), ("a.graphml", None, "graphml"),
    ("a.txt", "json", "json"), ("a", ".SVG", "svg"), ("a.svg", "gv", "dot"),
])
def test_format_comes_from_format_or_extension(name, fmt, expected):
    assert format_for(name, fmt) == expected


def test_unknown_formats_are_refused_with_the_choices():
    with pytest.raises(ValueError, match=r"name the file \.svg, \.png, \.dot, \.json or "
                                         r"\.graphml"):
        format_for("graph.txt")
    with pytest.raises(ValueError, match="unknown graph format 'pdf'; use one of dot, "
                                         "graphml, json, png, svg"):
        format_for("graph.svg", "pdf")


def test_missing_graphviz_names_the_package_and_other_formats_still_work(
        dag_data, tmp_path, monkeypatch):
    _, data = dag_data
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    assert graph_export.find_dot() is None
    with pytest.raises(GraphvizNotFoundError) as info:
        write_graph(data, tmp_path / "g.svg")
    text = str(info.value)
    assert "apt-get install graphviz" in text and "`dot`" in text
    assert ".dot, .json or .graphml" in text
    assert isinstance(info.value, RuntimeError)
    assert not (tmp_path / "g.svg").exists()
    for name in ("g.dot", "g.json", "g.graphml"):
        write_graph(data, tmp_path / name)
        assert (tmp_path / name).stat().st_size > 0


def test_graphviz_errors_are_reported():
    assert shutil.which("dot"), "Graphviz must be installed for these tests (.ci/run)"
    with pytest.raises(RuntimeError, match="Graphviz `dot -Tsvg` failed"):
        render("digraph { this is not dot", "svg")
