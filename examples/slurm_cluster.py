"""graphstore on a SLURM cluster: a scheduler on this (login) node, workers as batch jobs.

Run it where ``sbatch`` works, with graphstore installed where the compute nodes see it
(a shared file system: this Python, or a virtualenv the prologue activates):

    python examples/slurm_cluster.py --jobs 2 --queue compute
    python examples/slurm_cluster.py --adapt --maximum 4 --prologue "source ~/venv/bin/activate"

It prints the job script, scales to ``--jobs`` worker jobs (or adapts to the work),
runs a Monte Carlo estimate of pi across them, shows which job ran what, scales down to
one job (the leaving job's objects are copied to the one that stays first) and cancels
everything at the end.
"""
from __future__ import annotations

import argparse
import collections
import os
import random

import graphstore
from graphstore.deploy import SLURMCluster


@graphstore.remote
def hits(seed: int, n: int) -> tuple[int, str]:
    """Random points of the unit square that fall in the quarter circle, and the SLURM
    job that counted them."""
    rng = random.Random(seed)
    inside = sum(1 for _ in range(n) if rng.random() ** 2 + rng.random() ** 2 <= 1.0)
    return inside, os.environ.get("SLURM_JOB_ID", "?")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2, help="worker jobs (2)")
    parser.add_argument("--adapt", action="store_true",
                        help="scale with the work instead (--maximum jobs at most)")
    parser.add_argument("--maximum", type=int, default=4)
    parser.add_argument("--cores", type=int, default=1, help="CPUs per job (1)")
    parser.add_argument("--memory", default="1GiB", help="memory per job (1GiB)")
    parser.add_argument("--walltime", default="00:10:00")
    parser.add_argument("--queue", default=None, help="partition (site default)")
    parser.add_argument("--account", default=None)
    parser.add_argument("--prologue", action="append", default=[],
                        help="a shell line to run before the worker (repeatable)")
    parser.add_argument("--log-directory", default=None,
                        help="where jobs write their output (default: SLURM's)")
    parser.add_argument("--tasks", type=int, default=40)
    args = parser.parse_args()

    with SLURMCluster(cores=args.cores, memory=args.memory, walltime=args.walltime,
                      queue=args.queue, account=args.account,
                      job_script_prologue=args.prologue, object_store_memory="256MiB",
                      log_directory=args.log_directory) as cluster:
        print(cluster.job_script())
        print(f"scheduler at {cluster.address}; status page {cluster.dashboard_link}")
        if args.adapt:
            cluster.adapt(minimum=0, maximum=args.maximum * cluster.job.processes,
                          interval=0.5)
        else:
            cluster.scale(jobs=args.jobs)
            cluster.wait_for_workers(args.jobs * cluster.job.processes, timeout=300)
        print(f"jobs: {cluster.job_ids()}")

        graphstore.init(address=cluster.address, token=cluster.token)
        try:
            n = 20_000
            results = graphstore.get([hits.remote(seed, n) for seed in range(args.tasks)],
                                     timeout=600)
            pi = 4 * sum(inside for inside, _ in results) / (n * args.tasks)
            print(f"pi ~= {pi:.4f} from {n * args.tasks:,} points")
            by_job = collections.Counter(job for _, job in results)
            print("tasks per job:", dict(sorted(by_job.items())))
            if not args.adapt and args.jobs > 1:
                kept = graphstore.put(list(range(100_000)))
                cluster.scale(jobs=1)
                print(f"scaled down to jobs {cluster.job_ids()}; "
                      f"a put() object is still here: {len(graphstore.get(kept)):,} items")
        finally:
            graphstore.shutdown()
    print("closed: every job cancelled, the scheduler stopped")


if __name__ == "__main__":
    main()
