#!/usr/bin/env python
"""Two drivers on one cluster (issue 15.5): one floods it with queued tasks, the other
runs a few short ones; how long do the few take?

This process starts a local cluster (``graphstore.init(num_cpus=...)``) and a flooding
driver in a process of its own, which submits ``--flood`` tasks of ``--seconds`` each
and confirms (with a request answered on the same connection) that the scheduler has
them all. This process, the second driver, then submits ``--tasks`` tasks as short and
times their ``get``. First come, first served, they would wait for the whole flood
(500,000 x 10 ms on 2 CPUs: 2,500 s); the issue's target is 2 s.

Usage::

    python benchmarks/two_drivers.py                     # 500,000 queued, 100 short
    python benchmarks/two_drivers.py --flood 20000 --repeat 3
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import textwrap
import time

import graphstore


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--flood", type=int, default=500_000, help="tasks the first driver queues")
    p.add_argument("--tasks", type=int, default=100, help="the second driver's tasks")
    p.add_argument("--seconds", type=float, default=0.01, help="each task's sleep")
    p.add_argument("--num-cpus", type=int, default=2)
    p.add_argument("--repeat", type=int, default=1,
                   help="batches of the second driver's tasks, one after the other")
    args = p.parse_args(argv)

    from graphstore import session
    ctx = graphstore.init(num_cpus=args.num_cpus)
    token = session.current_local_cluster().token
    code = textwrap.dedent(f"""
        import time, graphstore
        graphstore.init(address={ctx.address!r}, token={token!r})

        @graphstore.remote
        def flood(i):
            time.sleep({args.seconds})
            return i

        start = time.monotonic()
        refs = [flood.remote(i) for i in range({args.flood})]
        graphstore.nodes()      # answered after every submission before it
        print("FLOODED", round(time.monotonic() - start, 1), flush=True)
        time.sleep(3600)
    """)
    flooder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                               text=True)
    try:
        line = flooder.stdout.readline().split()
        if not line or line[0] != "FLOODED":
            raise SystemExit("the flooding driver failed")
        print(f"{args.flood:,} tasks of {args.seconds * 1000:g} ms queued by the first "
              f"driver in {line[1]} s", flush=True)

        @graphstore.remote
        def short(i):
            time.sleep(args.seconds)
            return i

        times = []
        for _ in range(args.repeat):
            start = time.monotonic()
            refs = [short.remote(i) for i in range(args.tasks)]
            graphstore.get(refs, timeout=3600)
            times.append(time.monotonic() - start)
            print(f"the second driver's {args.tasks} tasks: {times[-1]:.2f} s", flush=True)
        times.sort()
        print(f"min {times[0]:.2f} s, median {times[len(times) // 2]:.2f} s over "
              f"{len(times)} batch(es); the flood alone is "
              f"{args.flood * args.seconds / args.num_cpus:,.0f} s of work", flush=True)
    finally:
        flooder.kill()
        flooder.wait()
        graphstore.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
