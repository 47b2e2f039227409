"""Prometheus metrics: run some work, then read the scheduler's ``/metrics`` the way
Prometheus does, and print a few figures from it.

The status page serves ``/metrics`` in the Prometheus text format; this program fetches it
over HTTP and parses it with ``prometheus_client``'s parser (installed with graphstore):
tasks finished and failed per function, their mean run time from the duration histogram,
how long ready tasks waited for a worker, and each worker's store use. Point a Prometheus
at the same URL and import docs/grafana-dashboard.json into Grafana to watch them live.

Run: python examples/metrics.py
"""
import time
import urllib.request

import numpy as np
from prometheus_client.parser import text_string_to_metric_families

import graphstore


@graphstore.remote
def simulate(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@graphstore.remote
def validate(x: int) -> int:
    if x % 4 == 0:
        raise ValueError(f"{x} is a multiple of 4")
    return x


@graphstore.remote
def make_block(mb: int):
    return np.zeros(mb * 1024 * 1024, dtype=np.uint8)


def scrape(url: str) -> dict:
    """Sample name -> [(labels, value)] of the page's metrics now."""
    with urllib.request.urlopen(url + "/metrics", timeout=30) as reply:
        text = reply.read().decode()
    samples: dict = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def by_labels(samples: dict, name: str, *keys: str) -> dict:
    return {tuple(labels[k] for k in keys): v for labels, v in samples.get(name, [])}


if __name__ == "__main__":
    ctx = graphstore.init(num_cpus=2)
    print("metrics at", ctx.dashboard_url + "/metrics")
    graphstore.get([simulate.remote(0.01 * i) for i in range(8)])
    for ref in [validate.remote(i) for i in range(8)]:
        try:
            graphstore.get(ref)
        except ValueError:
            pass
    blocks = [make_block.remote(4) for _ in range(3)]    # 12 MiB in the workers' stores
    graphstore.wait(blocks, num_returns=len(blocks))
    # Workers report their stores in heartbeats, once a second: wait for the next ones.
    deadline = time.monotonic() + 10
    while True:
        samples = scrape(ctx.dashboard_url)
        stored = sum(v for _, v in samples["graphstore_store_used_bytes"])
        if stored >= 12 * 2**20 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    finished = by_labels(samples, "graphstore_tasks_finished_total", "function", "state")
    runs = by_labels(samples, "graphstore_task_duration_seconds_count", "function")
    seconds = by_labels(samples, "graphstore_task_duration_seconds_sum", "function")
    print("tasks by function:")
    for (function,), count in sorted(runs.items()):
        print(f"  {function}: {finished[function, 'done']:.0f} done, "
              f"{finished[function, 'failed']:.0f} failed, "
              f"mean run {seconds[function,] / count * 1000:.1f} ms")
    waits = samples["graphstore_task_queue_wait_seconds_count"][0][1]
    waited = samples["graphstore_task_queue_wait_seconds_sum"][0][1]
    print(f"queue wait: {waits:.0f} tasks, mean {waited / waits * 1000:.2f} ms")
    used = by_labels(samples, "graphstore_store_used_bytes", "worker", "node")
    capacity = by_labels(samples, "graphstore_store_capacity_bytes", "worker", "node")
    print("stores:")
    for (worker, node), size in sorted(used.items()):
        print(f"  worker {worker} on {node}: {size / 2**20:.1f} MiB of "
              f"{capacity[worker, node] / 2**20:.0f} MiB")
    del blocks
    graphstore.shutdown()
