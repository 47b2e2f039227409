"""Fault tolerance: retried errors, a killed worker, and objects computed again.

Run: python examples/fault_tolerance.py

The local cluster's two workers act as two hosts (``worker_node_ids``), so each large
object lives in one worker's store only, as it would on separate machines. Killing that
worker loses the object; graphstore runs the tasks that made it again (its lineage) and
``get`` returns the same value. An object made by ``put()`` has no lineage: losing it
gives ``ObjectLostError``, which says so. See docs/fault-tolerance.md.
"""
from __future__ import annotations

import os
import re
import signal
import tempfile
import time

import numpy as np

import graphstore


@graphstore.remote
def make_block(seed: int):
    """8 MiB of numbers, the same for the same seed."""
    return np.random.default_rng(seed).integers(0, 100, 1024 * 1024, dtype=np.int64)


@graphstore.remote
def scale(block, k: int):
    return block * k


@graphstore.remote
def put_in_a_task():
    """put() inside a task stores the value in that worker's store."""
    return [graphstore.put(np.ones(1024 * 1024))]


@graphstore.remote(max_retries=5, retry_exceptions=[ConnectionError])
def flaky_download(counter_file: str) -> str:
    """Fails twice with ConnectionError (retried), then succeeds."""
    with open(counter_file, "a") as f:
        f.write("x")
    attempts = len(open(counter_file).read())
    if attempts < 3:
        raise ConnectionError(f"the server hung up (attempt {attempts})")
    return f"downloaded on attempt {attempts}"


def store_pid_of(ref) -> int:
    """The pid of the worker whose store holds ``ref`` (from memory_summary)."""
    for entry in graphstore.memory_summary()["objects"]:
        if entry["object_id"] == ref.hex():
            for where in entry["where"]:
                match = re.search(r"worker pid=(\d+)", where)
                if match:
                    return int(match.group(1))
    raise LookupError(f"no store holds {ref.hex()}")


def main() -> None:
    graphstore.init(num_cpus=2, worker_node_ids=["host-a", "host-b"], node_id="laptop")
    try:
        # 1. Application errors the task names are retried.
        with tempfile.TemporaryDirectory() as tmp:
            print(graphstore.get(flaky_download.remote(os.path.join(tmp, "n"))))

        # 2. A lost object is computed again from its lineage, even though the block it
        #    was made from has been freed meanwhile.
        scaled = scale.remote(make_block.remote(7), 3)
        expected = graphstore.get(scaled)
        victim = store_pid_of(scaled)
        before = graphstore.cluster_status()["counts"]
        os.kill(victim, signal.SIGKILL)
        print(f"killed worker pid {victim}, which held the only copy")
        start = time.monotonic()
        again = graphstore.get(scaled)
        counts = graphstore.cluster_status()["counts"]
        assert np.array_equal(again, expected)
        print(f"got the same {again.nbytes / 2**20:.0f} MiB back after "
              f"{time.monotonic() - start:.2f} s: "
              f"{counts['reconstructed'] - before['reconstructed']} tasks ran again, "
              f"{counts['objects_rebuilt'] - before['objects_rebuilt']} objects rebuilt")

        # 3. put() leaves no lineage: the loss is reported, naming the object and why.
        [held] = graphstore.get(put_in_a_task.remote())
        os.kill(store_pid_of(held), signal.SIGKILL)
        try:
            graphstore.get(held)
        except graphstore.exceptions.ObjectLostError as exc:
            print(f"ObjectLostError: {exc}")
        # The local cluster has replaced the killed workers; work goes on.
        print("after the faults:", graphstore.get(scale.remote(make_block.remote(1), 2))[:3])
    finally:
        graphstore.shutdown()


if __name__ == "__main__":
    main()
