"""The task graph: run a small pipeline, then look at what it did.

A map-reduce over chunks of an array: ``load`` makes each chunk, ``clean`` and ``stats``
transform it, ``merge`` reduces the partial results, and one chunk fails on purpose. The
program then

* asks for the graph as a ``networkx.DiGraph`` and walks it (which tasks the result was
  computed from, the longest chain, the failure's traceback);
* writes it as ``graph.svg`` (Graphviz) and ``graph.json`` (node-link) into the current
  directory, or the directory given as the first argument;
* prints the status page's URL; pass ``--wait`` to keep the cluster up to look at it.

Run it with ``python examples/task_graph.py [OUTPUT_DIR] [--wait]``. The SVG needs
Graphviz's ``dot`` (``apt-get install graphviz``); without it, the .dot file is written
instead.
"""
import sys
import time
from collections import Counter
from pathlib import Path

import networkx as nx
import numpy as np

import graphstore
from graphstore.exceptions import GraphvizNotFoundError

CHUNKS = 6


@graphstore.remote
def load(i):
    """A chunk of 250,000 float64 (2 MB: it lives in a worker's shared-memory store)."""
    return np.random.default_rng(i).normal(loc=i, size=250_000)


@graphstore.remote
def clean(chunk):
    return chunk[np.abs(chunk - chunk.mean()) < 3 * chunk.std()]


@graphstore.remote
def stats(chunk):
    return {"n": chunk.size, "sum": float(chunk.sum())}


@graphstore.remote
def merge(*parts):
    n = sum(p["n"] for p in parts)
    return {"n": n, "mean": sum(p["sum"] for p in parts) / n}


@graphstore.remote
def checked(chunk, limit):
    if chunk.max() > limit:
        raise ValueError(f"a value above {limit} in a chunk of {chunk.size}")
    return chunk


def main(out_dir: Path, wait: bool) -> None:
    context = graphstore.init()
    print(f"local cluster at {context.address}; status page at {context.dashboard_url}")

    chunks = [load.remote(i) for i in range(CHUNKS)]
    parts = [stats.remote(clean.remote(chunk)) for chunk in chunks]
    result = merge.remote(*parts)
    print("merged:", graphstore.get(result))

    failing = checked.remote(chunks[-1], 5.0)
    try:
        graphstore.get(failing)
    except ValueError as exc:
        print("expected failure:", str(exc).splitlines()[-1])

    # The ancestry of the result: every task and object it was computed from.
    graph = graphstore.task_graph(result)
    tasks = [n for n, kind in graph.nodes(data="type") if kind == "task"]
    tasks.sort(key=lambda n: graph.nodes[n]["submitted_at"])
    counts = Counter(graph.nodes[n]["name"] for n in tasks)   # in submission order
    print(f"result computed by {len(tasks)} tasks: "
          + ", ".join(f"{name} x{count}" for name, count in counts.items()))
    chain = nx.dag_longest_path(graph)
    print("longest chain:", " -> ".join(graph.nodes[n].get("name") or graph.nodes[n]["label"]
                                        for n in chain))
    busiest = max(tasks, key=lambda n: graph.nodes[n]["duration"] or 0.0)
    print(f"slowest task: {graph.nodes[busiest]['name']} "
          f"({graph.nodes[busiest]['duration'] * 1000:.1f} ms on worker pid "
          f"{graph.nodes[busiest]['pid']})")

    # The recent graph holds the failure too.
    recent = graphstore.task_graph()
    for node, attrs in recent.nodes(data=True):
        if attrs["type"] == "task" and attrs["state"] == "failed":
            print(f"failed task {attrs['name']}:\n{attrs['error']}")

    out_dir.mkdir(parents=True, exist_ok=True)
    print("wrote", graphstore.visualize(filename=out_dir / "graph.json"))
    try:
        print("wrote", graphstore.visualize(filename=out_dir / "graph.svg"))
    except GraphvizNotFoundError as exc:
        print(exc)
        print("wrote", graphstore.visualize(filename=out_dir / "graph.dot"))

    if wait:
        print(f"look at {context.dashboard_url} (Ctrl-C to stop)")
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            pass
    graphstore.shutdown()


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--wait"]
    main(Path(args[0]) if args else Path("."), "--wait" in sys.argv[1:])
