#!/usr/bin/env python
"""What Prometheus metrics cost: the scheduler's bookkeeping per task, a scrape of
``/metrics``, and the no-op task rate while Prometheus-like scrapers poll hard.

- bookkeeping: ``TaskMetrics`` fed as the scheduler feeds it for one task (assigned,
  ran, finished), in this process, with ``--functions`` distinct names (past the cap of
  100 they share one series), in microseconds per task;
- scrape: ``GET /metrics`` on a local cluster of two workers after the tasks below ran
  (every function name has its series), median milliseconds and the size of the text;
- no-op tasks: ``--tasks`` no-op tasks submitted at once and gathered, tasks per second,
  alone and while a process of its own (so the driver's interpreter is not shared)
  scrapes ``/metrics`` every ``--scrape-every`` seconds (far more often than
  Prometheus' 15 s default), median of ``--repeat`` runs.

Prints a Markdown table. Run: python benchmarks/metrics_cost.py [--repeat 5]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
import urllib.request

#: The scraping process: fetches URL every PERIOD seconds until killed, printing a dot
#: per scrape.
SCRAPER = """
import sys, time, urllib.request
url, period = sys.argv[1], float(sys.argv[2])
while True:
    urllib.request.urlopen(url, timeout=30).read()
    print(".", end="", flush=True)
    time.sleep(period)
"""


def bookkeeping_us(functions: int, rounds: int = 200_000) -> float:
    from graphstore.scheduler.metrics import TaskMetrics
    figures = TaskMetrics()
    names = [f"function_{i}" for i in range(functions)]
    start = time.perf_counter()
    for i in range(rounds):
        name = names[i % functions]
        figures.task_assigned(0.0004)
        figures.task_ran(name, 0.003)
        figures.task_finished(name, failed=False)
    return (time.perf_counter() - start) / rounds * 1e6


def scrape(url: str) -> tuple[float, int]:
    start = time.perf_counter()
    with urllib.request.urlopen(url + "/metrics", timeout=30) as reply:
        size = len(reply.read())
    return time.perf_counter() - start, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--functions", type=int, default=250)
    parser.add_argument("--scrape-every", type=float, default=0.05)
    args = parser.parse_args()

    import graphstore

    def make(i: int):
        def noop(x):
            return x
        noop.__name__ = noop.__qualname__ = f"noop_{i}"
        return graphstore.remote(noop)

    functions = [make(i) for i in range(args.functions)]
    ctx = graphstore.init(num_cpus=2)
    try:
        graphstore.get([f.remote(0) for f in functions])     # every name has series

        def rate() -> float:
            start = time.perf_counter()
            graphstore.get([functions[0].remote(i) for i in range(args.tasks)])
            return args.tasks / (time.perf_counter() - start)

        rate()                                                # warm up
        quiet = [rate() for _ in range(args.repeat)]
        scraper = subprocess.Popen(
            [sys.executable, "-c", SCRAPER, ctx.dashboard_url + "/metrics",
             str(args.scrape_every)], stdout=subprocess.PIPE, text=True)
        try:
            scraped = [rate() for _ in range(args.repeat)]
        finally:
            scraper.kill()
            scrapes = scraper.communicate()[0].count(".")
        idle = [scrape(ctx.dashboard_url) for _ in range(20)]
    finally:
        graphstore.shutdown()

    per_task = statistics.median(bookkeeping_us(args.functions) for _ in range(3))
    print("| measure | value |")
    print("| --- | --- |")
    print(f"| bookkeeping per task ({args.functions} function names) | "
          f"{per_task:.2f} µs |")
    print(f"| scrape of /metrics, idle cluster | "
          f"{statistics.median(t for t, _ in idle) * 1000:.1f} ms, "
          f"{idle[-1][1] / 1024:.0f} KiB |")
    print(f"| no-op tasks/s, no scraper | {statistics.median(quiet):,.0f} |")
    print(f"| no-op tasks/s, scraped every {args.scrape_every:g} s "
          f"({scrapes} scrapes) | {statistics.median(scraped):,.0f} |")


if __name__ == "__main__":
    main()
