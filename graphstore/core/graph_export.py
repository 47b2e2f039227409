"""The task graph as a ``networkx.DiGraph``, Graphviz DOT, SVG/PNG, JSON or GraphML.

The scheduler answers a graph request in node-link form (see ``scheduler/graph.py``):
``{"directed": true, "graph": {...}, "nodes": [{"id": ..., ...}], "edges": [{"source":
..., "target": ..., "kind": ...}]}``. This module turns that into the formats users ask
for. DOT is written here (no pydot); SVG and PNG go through Graphviz's ``dot`` program;
JSON is the node-link data itself (``networkx.node_link_graph(data, edges="edges")``
reads it back); GraphML goes through networkx. The scheduler's status page uses
``to_dot`` too, so the picture on the page and the file a user writes agree.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from graphstore.exceptions import GraphvizNotFoundError

#: Fill colours by node state (tasks and objects).
STATE_COLORS = {
    "waiting": "#d9d9d9", "queued": "#9ecae1", "assigned": "#fdd835", "done": "#a1d99b",
    "failed": "#fb6a4a", "pending": "#ffffff", "ready": "#c7e9c0", "error": "#fcbba1",
    "freed": "#f0f0f0",
}
#: Border colour of objects with a spilled copy.
SPILLED_COLOR = "#6a51a3"
#: Border and edge colour of a critical path (``graphstore.critical_path``).
CRITICAL_COLOR = "#d62728"
#: Formats ``write_graph`` knows, by file extension.
FORMATS = {".dot": "dot", ".gv": "dot", ".svg": "svg", ".png": "png", ".json": "json",
           ".graphml": "graphml"}


def graphviz_missing_message(fmt: str) -> str:
    return (f"writing {fmt.upper()} needs Graphviz's `dot` program, which is not on PATH: "
            f"install Graphviz (Debian/Ubuntu: `sudo apt-get install graphviz`; Fedora: "
            f"`sudo dnf install graphviz`; macOS: `brew install graphviz`; conda: "
            f"`conda install graphviz`), or write .dot, .json or .graphml, which need no "
            f"Graphviz")


def find_dot() -> str | None:
    """The path of Graphviz's ``dot``, or None."""
    return shutil.which("dot")


# -- networkx -----------------------------------------------------------------------------

def to_networkx(data: dict):
    """A ``networkx.DiGraph`` of node-link ``data``: node keys are hex ids, node and edge
    attributes as the scheduler sent them, graph attributes in ``G.graph``."""
    import networkx as nx
    graph = nx.DiGraph()
    graph.graph.update(data.get("graph", {}))
    for node in data["nodes"]:
        attrs = dict(node)
        graph.add_node(attrs.pop("id"), **attrs)
    for edge in data["edges"]:
        attrs = dict(edge)
        graph.add_edge(attrs.pop("source"), attrs.pop("target"), **attrs)
    return graph


def _graphml_safe(graph):
    """A copy GraphML can hold: lists become text, missing values are left out."""
    import networkx as nx

    def clean(attrs: dict) -> dict:
        out = {}
        for key, value in attrs.items():
            if value is None:
                continue
            if isinstance(value, (list, tuple)):
                value = "; ".join(str(v) for v in value)
            elif isinstance(value, dict):
                value = json.dumps(value)
            out[key] = value
        return out

    safe = nx.DiGraph()
    safe.graph.update(clean(graph.graph))
    for node, attrs in graph.nodes(data=True):
        safe.add_node(node, **clean(attrs))
    for source, target, attrs in graph.edges(data=True):
        safe.add_edge(source, target, **clean(attrs))
    return safe


# -- DOT ----------------------------------------------------------------------------------

def _quote(text) -> str:
    text = str(text).replace("\\", "\\\\").replace('"', '\\"')
    return '"' + text.replace("\r", "").replace("\n", "\\n") + '"'


def _attrs(**attrs) -> str:
    return "[" + ", ".join(f"{k}={_quote(v)}" for k, v in attrs.items() if v is not None) + "]"


def _tooltip(node: dict) -> str:
    if node.get("type") == "task":
        lines = [f"task {node.get('name')} ({node.get('state')})"]
        if node.get("pid") is not None:
            lines.append(f"worker pid {node.get('pid')} on {node.get('node')}")
        if node.get("duration") is not None:
            lines.append(f"ran {node['duration']:.3f} s")
        if node.get("error"):
            lines.append(str(node["error"]).strip().splitlines()[-1][:300])
    else:
        lines = [f"object {node.get('id')} ({node.get('state')}), {node.get('size')} bytes"]
        lines += [str(w) for w in node.get("where") or ()]
    return "\n".join(lines)


def to_dot(data: dict, *, title: str | None = None) -> str:
    """Graphviz DOT text of node-link ``data``: tasks as boxes labelled by name, objects
    as ellipses labelled by id and size, both filled by state; spilled objects have a
    purple border; nested arguments are dashed edges, containment dotted ones. Nodes and
    edges marked ``critical`` (a critical path) are drawn thick and red."""
    info = data.get("graph", {})
    lines = ["digraph graphstore {",
             '  graph [rankdir="TB", fontname="Helvetica", fontsize="11", '
             'labelloc="t", nodesep="0.25", ranksep="0.35"];',
             '  node [fontname="Helvetica", fontsize="10", style="filled", '
             'penwidth="1"];',
             '  edge [color="#555555", arrowsize="0.6"];']
    if title is None and info.get("truncated"):
        title = (f"the {len(data['nodes']):,} most recent of {info.get('total_nodes', 0):,} "
                 f"nodes" if not info.get("roots") else
                 f"ancestry cut at {len(data['nodes']):,} nodes")
    if title:
        lines.append(f"  label={_quote(title)};")
    for node in data["nodes"]:
        state = node.get("state", "")
        fill = STATE_COLORS.get(state, "#ffffff")
        critical = bool(node.get("critical"))
        if node.get("type") == "task":
            attrs = _attrs(label=node.get("label") or node.get("name"), shape="box",
                           style="rounded,filled", fillcolor=fill, tooltip=_tooltip(node),
                           color=CRITICAL_COLOR if critical else None,
                           penwidth="3" if critical else None)
        else:
            style = "filled,dashed" if state == "freed" else "filled"
            spilled = bool(node.get("spilled"))
            color = CRITICAL_COLOR if critical else SPILLED_COLOR if spilled else None
            attrs = _attrs(label=node.get("label"), shape="ellipse", style=style,
                           fillcolor=fill, fontsize="9", color=color,
                           penwidth="3" if critical else "2.5" if spilled else None,
                           tooltip=_tooltip(node))
        lines.append(f"  {_quote(node['id'])} {attrs};")
    for edge in data["edges"]:
        kind = edge.get("kind")
        style = None
        if kind == "contained_in":
            style = "dotted"
        elif edge.get("nested"):
            style = "dashed"
        critical = bool(edge.get("critical"))
        attrs = _attrs(style=style, tooltip=kind,
                       color=CRITICAL_COLOR if critical else None,
                       penwidth="2.5" if critical else None)
        lines.append(f"  {_quote(edge['source'])} -> {_quote(edge['target'])} {attrs};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def render(dot_text: str, fmt: str, timeout: float = 120.0) -> bytes:
    """Run Graphviz's ``dot`` on ``dot_text``; ``GraphvizNotFoundError`` if missing."""
    dot = find_dot()
    if dot is None:
        raise GraphvizNotFoundError(graphviz_missing_message(fmt))
    try:
        done = subprocess.run([dot, f"-T{fmt}"], input=dot_text.encode(),
                              capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise TimeoutError(f"Graphviz took more than {timeout:g} s to lay out the graph; "
                           f"ask for fewer nodes (limit=) or write .dot/.json") from None
    if done.returncode != 0:
        raise RuntimeError(f"Graphviz `dot -T{fmt}` failed (exit code {done.returncode}): "
                           f"{done.stderr.decode(errors='replace').strip()[:2000]}")
    return done.stdout


# -- files --------------------------------------------------------------------------------

def format_for(filename: str | os.PathLike, format: str | None = None) -> str:
    """The output format: ``format`` if given, else from the file's extension."""
    if format is not None:
        fmt = format.lower().lstrip(".")
        fmt = {"gv": "dot"}.get(fmt, fmt)
        if fmt not in set(FORMATS.values()):
            raise ValueError(f"unknown graph format {format!r}; use one of "
                             f"{', '.join(sorted(set(FORMATS.values())))}")
        return fmt
    suffix = Path(filename).suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"cannot tell the graph format from {str(filename)!r}: name the "
                         f"file .svg, .png, .dot, .json or .graphml, or pass format=")
    return FORMATS[suffix]


def write_graph(data: dict, filename: str | os.PathLike, format: str | None = None) -> str:
    """Write node-link ``data`` to ``filename``; returns the path written."""
    fmt = format_for(filename, format)
    path = Path(filename)
    if fmt == "json":
        path.write_text(json.dumps(data, indent=1))
    elif fmt == "graphml":
        import networkx as nx
        nx.write_graphml(_graphml_safe(to_networkx(data)), path)
    elif fmt == "dot":
        path.write_text(to_dot(data))
    else:
        path.write_bytes(render(to_dot(data), fmt))
    return str(path)
