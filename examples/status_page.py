"""The status page's live views: the task stream, progress by function, workers' load.

A small pipeline runs on a local cluster with a deliberately small object store: ``load``
makes 4 MB chunks, ``score`` reads them (argument fetches from the store), one chunk in
five fails its check, and a few large ``put`` objects push the store past its threshold
so that it spills. The program then reads the JSON behind the status page's Status tab,

* ``/api/progress``: done, running, queued and failed tasks per function name,
* ``/api/task-stream``: the task runs, fetches and spills each worker process did,
* ``/api/workers/load``: each worker's CPU and memory over the last minutes,

and prints what they say. Open the printed URL's ``/status`` page to see them drawn; pass
``--wait`` to keep the cluster up while you look (Ctrl-C ends it).

Run it with ``python examples/status_page.py [--wait]``.
"""
import json
import sys
import time
import urllib.request
from collections import Counter

import numpy as np

import graphstore

MB = 1024 * 1024
CHUNKS = 10


@graphstore.remote
def load(i):
    """A 4 MB chunk: it lives in a worker's shared-memory store."""
    return np.random.default_rng(i).random(MB // 2)


@graphstore.remote
def score(chunk, i):
    if i % 5 == 4:
        raise ValueError(f"chunk {i} failed its check")
    return float(np.sort(chunk)[len(chunk) // 2])


def read(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as reply:
        return json.load(reply)


def main(wait: bool) -> None:
    context = graphstore.init(num_cpus=2, object_store_memory=96 * MB)
    base = context.dashboard_url
    print(f"status page at {base}/status")

    chunks = [load.remote(i) for i in range(CHUNKS)]
    scores = [score.remote(chunk, i) for i, chunk in enumerate(chunks)]
    failed = 0
    for ref in scores:
        try:
            graphstore.get(ref)
        except ValueError:
            failed += 1
    print(f"{CHUNKS - failed} chunks scored, {failed} failed their check")
    # More than the store holds: older objects spill to disk.
    kept = [graphstore.put(np.ones(30 * MB, dtype=np.uint8)) for _ in range(4)]

    for row in read(base + "/api/progress")["functions"]:
        print(f"progress: {row['name']}: {row['done']} done, {row['failed']} failed, "
              f"{row['assigned']} running, {row['queued'] + row['waiting']} queued")

    # Workers send their figures once a second: wait for two samples of each.
    deadline = time.monotonic() + 15
    while True:
        load_view = read(base + "/api/workers/load")
        cpu_samples = [sum(c is not None for c in w["samples"]["cpu"])
                       for w in load_view["workers"]]
        if all(n >= 1 for n in cpu_samples) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    for worker in load_view["workers"]:
        samples = worker["samples"]
        cpu = [c for c in samples["cpu"] if c is not None]
        memory = [m for m in samples["memory"] if m is not None]
        print(f"worker pid {worker['pid']}: {len(samples['age'])} samples, CPU up to "
              f"{max(cpu, default=0) * 100:.0f}%, memory {memory[-1] / MB:.0f} MB, "
              f"store {samples['store_used'][-1] / MB:.0f} MB")

    # Poll the task stream as the page does: each answer holds what is new since the
    # last one's sequence number. Spills reach it with the workers' next heartbeat.
    kinds, since, polls = Counter(), 0, 0
    deadline = time.monotonic() + 15
    while not kinds["spill"] and time.monotonic() < deadline:
        stream = read(base + f"/api/task-stream?since={since}")
        kinds.update(entry["kind"] for entry in stream["entries"])
        since, polls = stream["seq"], polls + 1
        time.sleep(0.25)
    print("task stream:", ", ".join(f"{kinds[k]} {k}" for k in sorted(kinds)))
    print(f"read in {polls} incremental poll(s), up to sequence number {since}")

    if wait:
        print(f"look at {base}/status (Ctrl-C to stop)")
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            pass
    del kept
    graphstore.shutdown()


if __name__ == "__main__":
    main("--wait" in sys.argv[1:])
