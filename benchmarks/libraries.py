#!/usr/bin/env python
"""Library benchmarks (issue 16): Dask collections and multiprocessing.Pool on graphstore,
Dask distributed and Ray, in one run on one machine.

* ``array``: a 4 GiB ``dask.array`` of float64 in 64 MiB chunks, ``(x + x.T).mean(axis=0)``
  (every output chunk reads two input chunks, half of them made by the other worker).
* ``dataframe``: a ``dask.dataframe`` of 20 million rows in 40 partitions made by
  ``from_map``, grouped by a 1,000-value key: ``agg(x=mean, y=sum, n=count)``.
* ``pool``: ``Pool.map`` of a trivial function over 10,000 items with ``chunksize=1``.

Each (backend, workload) runs in a fresh child process: a cluster of two worker processes
(graphstore's local cluster with 2 CPUs; Dask's ``LocalCluster(n_workers=2,
threads_per_worker=1)``; Ray with 2 CPUs running Dask graphs through ``ray_dask_get`` and
``ray.util.multiprocessing.Pool``), one warm-up at a small size, then ``--repeat`` timed
runs; the table shows the median and graphstore's speed-up over each other backend.
Dask's threaded scheduler in the driver (no cluster) and the standard library's
``multiprocessing.Pool`` are shown for reference.

Usage::

    python benchmarks/libraries.py [--workloads array,dataframe,pool]
        [--backends graphstore,dask,ray,local] [--repeat 3] [--scale 1.0] [--out FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

WORKLOADS = ("array", "dataframe", "pool")
BACKENDS = ("graphstore", "dask", "ray", "local")
LABELS = {"graphstore": "graphstore", "dask": "Dask distributed LocalCluster",
          "ray": "Ray (ray_dask_get, ray.util.multiprocessing)",
          "local": "reference: Dask threads / stdlib multiprocessing.Pool"}
PREFIX = "LIBRESULT "


# -- the workloads (run in the child) ------------------------------------------------------
def array_workload(scale: float):
    import dask.array as da
    side = max(1, round(8 * scale ** 0.5))        # 8 x 8 chunks of 2896 x 2896 float64
    x = da.random.random((side * 2896, side * 2896), chunks=(2896, 2896))
    return lambda get: (x + x.T).mean(axis=0).compute(scheduler=get)


def _partition(index: int, rows: int):
    import numpy as np
    import pandas as pd
    rng = np.random.default_rng(index)
    return pd.DataFrame({"key": rng.integers(0, 1000, rows),
                         "x": rng.random(rows), "y": rng.random(rows)})


def dataframe_workload(scale: float):
    import dask.dataframe as dd
    import pandas as pd
    rows = max(1000, int(500_000 * scale))
    meta = pd.DataFrame({"key": pd.Series([], dtype="int64"),
                         "x": pd.Series([], dtype="float64"),
                         "y": pd.Series([], dtype="float64")})
    df = dd.from_map(_partition, range(40), rows=rows, meta=meta)
    query = df.groupby("key").agg(x=("x", "mean"), y=("y", "sum"), n=("x", "count"))
    return lambda get: query.compute(scheduler=get)


def _square(value):
    return value * value


def run_pool(pool_class, scale: float):
    items = list(range(max(100, int(10_000 * scale))))
    with pool_class(2) as pool:
        start = time.perf_counter()
        result = pool.map(_square, items, chunksize=1)
        elapsed = time.perf_counter() - start
    assert result == [v * v for v in items]
    return elapsed


def child(backend: str, workload: str, repeat: int, scale: float) -> None:
    def report(seconds):
        print(PREFIX + json.dumps({"backend": backend, "workload": workload,
                                   "seconds": seconds}), flush=True)

    if workload == "pool":
        pool_class = _pool_class(backend)
        run_pool(pool_class, 0.01)
        for _ in range(repeat):
            report(run_pool(pool_class, scale))
        _stop(backend)
        return
    get = _dask_scheduler(backend)
    make = array_workload if workload == "array" else dataframe_workload
    make(0.02 if workload == "array" else 0.01)(get)
    run = make(scale)
    for _ in range(repeat):
        start = time.perf_counter()
        run(get)
        report(time.perf_counter() - start)
    _stop(backend)


def _dask_scheduler(backend: str):
    if backend == "graphstore":
        import graphstore
        import graphstore.dask
        graphstore.init(num_cpus=2, log_to_driver=False)
        return graphstore.dask.get
    if backend == "dask":
        from distributed import Client, LocalCluster
        global _client
        _client = Client(LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                      dashboard_address=None))
        return _client.get
    if backend == "ray":
        import ray
        from ray.util.dask import ray_dask_get
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        return ray_dask_get
    return "threads"


def _pool_class(backend: str):
    if backend == "graphstore":
        import graphstore
        from graphstore.util.multiprocessing import Pool
        graphstore.init(num_cpus=2, log_to_driver=False)
        return Pool
    if backend == "ray":
        import ray
        from ray.util.multiprocessing import Pool
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        return Pool
    if backend == "local":
        from multiprocessing import Pool
        return Pool
    raise NotImplementedError("Dask has no multiprocessing.Pool")


def _stop(backend: str) -> None:
    if backend == "graphstore":
        import graphstore
        graphstore.shutdown()
    elif backend == "ray":
        import ray
        ray.shutdown()
    elif backend == "dask":
        cluster = _client.cluster
        _client.close()
        cluster.close()


# -- the parent ----------------------------------------------------------------------------
def measure(backend: str, workload: str, repeat: int, scale: float, timeout: float):
    if backend == "dask" and workload == "pool":
        return None, "no Pool in Dask"
    command = [sys.executable, os.path.abspath(__file__), "--child", backend,
               "--workloads", workload, "--repeat", str(repeat), "--scale", str(scale)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, f"timed out after {timeout:.0f} s"
    times = [json.loads(line[len(PREFIX):])["seconds"]
             for line in done.stdout.splitlines() if line.startswith(PREFIX)]
    if not times:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        return None, "failed: " + " | ".join(tail)[-300:]
    return times, ""


def render(results: dict, workloads, backends, repeat: int, scale: float) -> str:
    lines = [f"Library workloads (`python benchmarks/libraries.py`, scale {scale}, median of "
             f"{repeat}, {time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} cores)", "",
             "| workload | " + " | ".join(LABELS[b] for b in backends) + " |",
             "|---|" + "---|" * len(backends)]
    for workload in workloads:
        ours = results.get(("graphstore", workload), (None, ""))[0]
        ours_median = statistics.median(ours) if ours else None
        cells = []
        for backend in backends:
            times, why = results.get((backend, workload), (None, "not run"))
            if not times:
                cells.append(f"n/a ({why})")
                continue
            median = statistics.median(times)
            cell = f"{median:.2f} s"
            if backend != "graphstore" and ours_median:
                cell += f" (graphstore {median / ours_median:.2f}x faster)"
            cells.append(cell)
        lines.append(f"| {workload} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--scale", type=float, default=1.0,
                        help="fraction of the full data sizes (1.0: 4 GiB, 20M rows, 10k)")
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--out", help="also write the Markdown table to this file")
    parser.add_argument("--child", choices=BACKENDS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    workloads = [w for w in args.workloads.split(",") if w]
    if args.child:
        child(args.child, workloads[0], args.repeat, args.scale)
        return 0
    backends = [b for b in args.backends.split(",") if b]
    results = {}
    for workload in workloads:
        for backend in backends:
            results[(backend, workload)] = measure(backend, workload, args.repeat,
                                                   args.scale, args.timeout)
            times, why = results[(backend, workload)]
            print(f"{workload:10s} {backend:10s} "
                  f"{' '.join(f'{t:.2f}' for t in times) if times else why}", flush=True)
    table = render(results, workloads, backends, args.repeat, args.scale)
    print(table)
    if args.out:
        with open(args.out, "w") as out:
            out.write(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
