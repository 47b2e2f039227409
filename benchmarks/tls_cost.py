#!/usr/bin/env python
"""What mutual TLS costs: the same workloads on a local cluster without and with TLS.

Each mode runs in a fresh child process (this script with ``--child plain|tls``): a
local cluster of two workers on two node ids (so objects cross over TCP), the driver on
the first. Workloads, each warmed up once, then timed ``--repeat`` times (median):

- a 200 MB array put on node-a and read by a task on node-b (one TCP transfer);
- a 200 MB array made by a task on node-b and got by the driver (one TCP transfer);
- 2,000 sequential actor round trips (``get(actor.ping.remote())``), driver -> actor;
- 10,000 pipelined actor calls, then one ``get`` of all;
- 300 sequential round trips of a no-op task.

Certificates come from examples/tls_cluster.py (openssl). Prints a Markdown table.

Run: python benchmarks/tls_cost.py [--repeat 5]
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MB = 1024 * 1024
RESULT = "TLSCOST "


def child(mode: str, repeat: int, certs: str) -> None:
    import numpy as np

    import graphstore
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
    from tls_cluster import make_certificates

    tls = make_certificates(Path(certs)) if mode == "tls" else {}
    graphstore.init(num_cpus=2, worker_node_ids=["node-a", "node-b"], node_id="node-a",
                    log_to_driver=False, dashboard_port=0, **tls)
    on_b = {"resources": {"node:node-b": 0.001}}

    @graphstore.remote
    def length(array):
        return array.size

    @graphstore.remote
    def make(n):
        return np.ones(n, dtype=np.float64)

    @graphstore.remote
    def noop():
        return None

    @graphstore.remote
    class Echo:
        def ping(self, x=None):
            return x

    n = 200 * MB // 8
    array = np.ones(n, dtype=np.float64)

    def to_b():
        ref = graphstore.put(array)
        t0 = time.perf_counter()
        assert graphstore.get(length.options(**on_b).remote(ref)) == n
        return 200 * MB / (time.perf_counter() - t0) / 1e9

    def from_b():
        ref = make.options(**on_b).remote(n)
        graphstore.wait([ref], fetch_local=False)
        t0 = time.perf_counter()
        value = graphstore.get(ref)
        dt = time.perf_counter() - t0
        assert value.size == n
        return 200 * MB / dt / 1e9

    actor = Echo.options(**on_b).remote()
    graphstore.get(actor.ping.remote())

    def round_trips():
        t0 = time.perf_counter()
        for _ in range(2000):
            graphstore.get(actor.ping.remote())
        return (time.perf_counter() - t0) / 2000 * 1e6

    def pipelined():
        t0 = time.perf_counter()
        graphstore.get([actor.ping.remote(i) for i in range(10_000)])
        return 10_000 / (time.perf_counter() - t0)

    def task_round_trips():
        t0 = time.perf_counter()
        for _ in range(300):
            graphstore.get(noop.remote())
        return (time.perf_counter() - t0) / 300 * 1e3

    workloads = {"transfer_to_b_gbps": to_b, "get_from_b_gbps": from_b,
                 "actor_round_trip_us": round_trips, "actor_calls_per_s": pipelined,
                 "task_round_trip_ms": task_round_trips}
    try:
        for name, fn in workloads.items():
            fn()                                        # warm-up
            samples = [fn() for _ in range(repeat)]
            print(RESULT + json.dumps({"mode": mode, "metric": name, "samples": samples}),
                  flush=True)
    finally:
        graphstore.shutdown()


LABELS = {
    "transfer_to_b_gbps": ("200 MB put on node-a, read by a task on node-b", "GB/s"),
    "get_from_b_gbps": ("200 MB made on node-b, got by the driver on node-a", "GB/s"),
    "actor_round_trip_us": ("actor round trip (2,000 sequential calls)", "µs"),
    "actor_calls_per_s": ("actor calls, 10,000 pipelined", "calls/s"),
    "task_round_trip_ms": ("no-op task round trip (300 sequential)", "ms"),
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--child", choices=["plain", "tls"])
    parser.add_argument("--certs", default=None)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.repeat, args.certs)
        return
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="graphstore-tls-bench-") as tmp:
        for mode in ("plain", "tls", "plain", "tls"):       # interleaved: same load
            out = subprocess.run([sys.executable, __file__, "--child", mode, "--repeat",
                                  str(args.repeat), "--certs", tmp], capture_output=True,
                                 text=True, timeout=1800)
            if out.returncode != 0:
                sys.exit(f"{mode} run failed:\n{out.stderr[-3000:]}")
            for line in out.stdout.splitlines():
                if line.startswith(RESULT):
                    record = json.loads(line[len(RESULT):])
                    results.setdefault((record["mode"], record["metric"]), []).extend(
                        record["samples"])
    print("| workload | unit | plain TCP | mutual TLS | TLS ÷ plain |")
    print("| --- | --- | ---: | ---: | ---: |")
    for metric, (label, unit) in LABELS.items():
        plain = statistics.median(results[("plain", metric)])
        tls = statistics.median(results[("tls", metric)])
        print(f"| {label} | {unit} | {plain:,.2f} | {tls:,.2f} | {tls / plain:.2f}× |")


if __name__ == "__main__":
    main()
