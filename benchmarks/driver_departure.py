#!/usr/bin/env python
"""A driver leaves holding many refs: how long does the scheduler stop answering the
other drivers?

This process starts a local cluster and a first driver in a process of its own, which
runs ``--tasks`` no-op tasks and holds all their results. This process, the second
driver, then asks the scheduler a question (``graphstore.nodes()``, one round trip)
over and over while the first driver exits; the longest answer while the scheduler
releases the departed driver's refs is the stall every other driver sees.

Usage::

    python benchmarks/driver_departure.py                  # 1,000,000 refs held
    python benchmarks/driver_departure.py --tasks 200000
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
    p.add_argument("--tasks", type=int, default=1_000_000,
                   help="results the leaving driver holds")
    p.add_argument("--watch", type=float, default=15.0,
                   help="seconds to keep asking after the first driver exits")
    args = p.parse_args(argv)

    from graphstore import session
    ctx = graphstore.init(num_cpus=2)
    token = session.current_local_cluster().token
    code = textwrap.dedent(f"""
        import os, sys, graphstore
        graphstore.init(address={ctx.address!r}, token={token!r})

        @graphstore.remote
        def noop(i):
            return i

        refs = [noop.remote(i) for i in range({args.tasks})]
        graphstore.get(refs)
        print("HOLDING", flush=True)
        sys.stdin.readline()
        os._exit(0)             # leave at once, refs and all (as a killed driver does)
    """)
    leaver = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        if leaver.stdout.readline().strip() != "HOLDING":
            raise SystemExit("the first driver failed")
        graphstore.nodes()
        quiet = []
        for _ in range(200):
            start = time.perf_counter()
            graphstore.nodes()
            quiet.append(time.perf_counter() - start)
        leaver.stdin.write("go\n")
        leaver.stdin.flush()
        leaver.wait(60)
        answers = []
        end = time.monotonic() + args.watch
        while time.monotonic() < end:
            start = time.perf_counter()
            graphstore.nodes()
            answers.append(time.perf_counter() - start)
        answers.sort()
        quiet.sort()
        print(f"{args.tasks:,} refs held by the driver that left; round trips of the "
              f"other driver: before it left median {quiet[len(quiet) // 2] * 1e3:.1f} "
              f"ms; {args.watch:g} s after: {len(answers):,} round trips, median "
              f"{answers[len(answers) // 2] * 1e3:.1f} ms, p99 "
              f"{answers[int(len(answers) * 0.99)] * 1e3:.1f} ms, longest "
              f"{answers[-1] * 1e3:.0f} ms", flush=True)
    finally:
        if leaver.poll() is None:
            leaver.kill()
        graphstore.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
