"""The timeline and the critical path: run a small pipeline, then see where time went.

Four chunks are loaded and summarised in parallel, one of them on purpose slower than the
others; a merge combines the summaries and an actor keeps a running total. The program
then

* writes ``trace.json`` (Chrome trace events: one row per worker process, a bar per
  task, argument fetch, transfer, spill, restore and actor call, arrows from each task to
  the tasks that read its results) into the current directory, or the directory given as
  the first argument: open it in https://ui.perfetto.dev or ``chrome://tracing``;
* prints the critical path of the result: the chain of task runs and data moves whose
  times add up the most, which is what to speed up for the result to come sooner (here,
  the slow chunk's load);
* prints the status page's graph view of that path; pass ``--wait`` to keep the cluster
  up to look at it.

Run it with ``python examples/timeline.py [OUTPUT_DIR] [--wait]``.
"""
import json
import sys
import time
from pathlib import Path

import numpy as np

import graphstore
from graphstore.tracing import format_critical_path

CHUNKS = 4


@graphstore.remote
def load(i):
    """A chunk of 250,000 float64 (2 MB: it lives in a worker's shared-memory store)."""
    if i == CHUNKS - 1:
        time.sleep(1.0)                  # the slow source the critical path points at
    return np.random.default_rng(i).normal(loc=i, size=250_000)


@graphstore.remote
def summarise(chunk):
    return {"n": chunk.size, "sum": float(chunk.sum())}


@graphstore.remote
def merge(*parts):
    n = sum(p["n"] for p in parts)
    return {"n": n, "mean": sum(p["sum"] for p in parts) / n}


@graphstore.remote
class RunningTotal:
    def __init__(self):
        self.total = 0.0

    def add(self, summary):
        self.total += summary["mean"]
        return self.total


def main(out_dir: Path, wait: bool) -> None:
    context = graphstore.init()
    print(f"local cluster at {context.address}; status page at {context.dashboard_url}")

    parts = [summarise.remote(load.remote(i)) for i in range(CHUNKS)]
    result = merge.remote(*parts)
    total = RunningTotal.remote()
    print("merged:", graphstore.get(result))
    print("running total:", graphstore.get(total.add.remote(result)))
    # Spans travel with the message that ends the work, spills and restores with the
    # workers' heartbeats (once a second): give the last ones a moment to arrive.
    time.sleep(1.5)

    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "trace.json"
    trace = graphstore.timeline(str(path))
    rows = [e["args"]["name"] for e in trace if e["name"] == "process_name"]
    spans = [e for e in trace if e["ph"] == "X"]
    arrows = sum(1 for e in trace if e["ph"] == "s")
    print(f"wrote {path}: {len(spans)} spans on {len(rows)} worker rows, {arrows} arrows "
          f"(open it in https://ui.perfetto.dev)")
    assert json.loads(path.read_text()) == trace

    print(f"critical path of the merged result:\n"
          f"{format_critical_path(graphstore.critical_path(result))}")
    print(f"on the graph page: {context.dashboard_url}/graph?critical={result.hex()}")

    if wait:
        print("Ctrl-C to stop")
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            pass
    graphstore.shutdown()


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--wait"]
    main(Path(args[0]) if args else Path("."), "--wait" in sys.argv[1:])
