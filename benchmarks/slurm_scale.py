"""Time from ``SLURMCluster.scale(2)`` to two workers connected, on a real SLURM.

Starts the tests' one-node SLURM on this host (``tests/slurm.py``: munged, slurmctld,
slurmd in a temporary directory; needs root and Debian's slurm-wlm and munge), then per
round: a fresh ``SLURMCluster``, ``scale(2)``, and the wall time until the scheduler
lists both workers; the split says how much of it is SLURM (submit to the batch script
running, read from ``squeue``) and how much is the worker's own start-up. Prints the
median and the spread of the rounds as a Markdown table for docs/benchmarks.md.

    python benchmarks/slurm_scale.py [--rounds 5]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import slurm as local_slurm  # noqa: E402  (tests/slurm.py)


def one_round(instance) -> tuple[float, float, float]:
    """(seconds to two workers, to both jobs RUNNING, to close)."""
    from graphstore.deploy import SLURMCluster
    cluster = SLURMCluster(cores=1, memory="512MiB", walltime="00:10:00",
                           object_store_memory="128MiB", log_directory=instance.dir / "jobs")
    try:
        began = time.perf_counter()
        cluster.scale(2)
        running_at = None
        while True:
            if running_at is None:
                states = instance.run("squeue", "-h", "-o", "%T").stdout.split()
                if states.count("RUNNING") >= 2:
                    running_at = time.perf_counter()
            if len(cluster.workers()) >= 2:
                joined = time.perf_counter()
                break
            if time.perf_counter() - began > 120:
                raise TimeoutError("two workers did not join in 120 s")
            time.sleep(0.02)
        running_at = running_at or joined
    finally:
        closing = time.perf_counter()
        cluster.close()
        closed = time.perf_counter()
    return joined - began, running_at - began, closed - closing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    reason = local_slurm.unavailable_reason()
    if reason:
        raise SystemExit(f"cannot start SLURM here: {reason}")
    local_slurm.sweep_stale()
    instance = local_slurm.LocalSlurm(cpus=4, memory_mb=8192).start()
    os.environ["SLURM_CONF"] = str(instance.conf)
    try:
        one_round(instance)                            # warm-up: imports, page cache
        rounds = [one_round(instance) for _ in range(args.rounds)]
    finally:
        instance.stop()
    joined, running, closed = zip(*rounds)
    print(f"| figure | median | min | max |\n| --- | --- | --- | --- |")
    for label, values in (("`scale(2)` to two workers connected", joined),
                          ("... of which `scale(2)` to both jobs RUNNING", running),
                          ("`close()` (scancel, squeue empty, scheduler stopped)", closed)):
        print(f"| {label} | {statistics.median(values):.2f} s | {min(values):.2f} s | "
              f"{max(values):.2f} s |")
    print(f"\n{args.rounds} rounds after a warm-up; each round a fresh SLURMCluster.")


if __name__ == "__main__":
    main()
