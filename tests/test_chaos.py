"""Chaos: a 2,000-task DAG with large and small intermediate objects finishes with the
exact result while a worker is SIGKILLed every two seconds and a replacement
``graphstore worker`` joins.

Each worker acts as its own host (``--node-id``), so arguments cross between workers over
TCP, and a killed worker's objects are really gone: they are computed again from lineage.
The report (workers killed, tasks retried, objects rebuilt, wall time against the same
DAG without faults) is printed and written to ``test-artifacts/chaos-report.json``.
"""
from __future__ import annotations

import itertools
import json
import random
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import graphstore
from helpers import wait_for

BLOCKS = 100             # large arrays (1 MiB) made, then transformed: 200 tasks
PIECES = 16              # small slices summed per transformed block: 1,600 tasks
ELEMENTS = 128 * 1024    # int64 elements of a block
TASK_SECONDS = 0.01
RETRIES = 20             # each kill may cost a task or a lost object one attempt
KILL_EVERY = 2.0
WORKERS = 3
ENV = {"GRAPHSTORE_HEARTBEAT_INTERVAL": "0.25", "GRAPHSTORE_WORKER_TIMEOUT": "2"}
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


@graphstore.remote(max_retries=RETRIES)
def source(i: int):
    time.sleep(TASK_SECONDS)
    return np.random.default_rng(i).integers(0, 1000, ELEMENTS, dtype=np.int64)


@graphstore.remote(max_retries=RETRIES)
def transform(block, i: int):
    time.sleep(TASK_SECONDS)
    return (block * 3 + i) % 1009


@graphstore.remote(max_retries=RETRIES)
def piece(block, j: int) -> int:
    time.sleep(TASK_SECONDS)
    width = ELEMENTS // PIECES
    return int(block[j * width:(j + 1) * width].sum()) * (j + 1)


@graphstore.remote(max_retries=RETRIES)
def combine(*parts) -> int:
    time.sleep(TASK_SECONDS)
    return sum(parts) % 1_000_000_007


@graphstore.remote(max_retries=RETRIES)
def add(a: int, b: int) -> int:
    time.sleep(TASK_SECONDS)
    return (a + b) % 1_000_000_007


@graphstore.remote
def total_of(block) -> int:
    return int(block.sum())


def expected_result() -> int:
    """The same DAG, computed here by the plain functions."""
    _source, _transform, _piece, _combine, _add = (
        f._function for f in (source, transform, piece, combine, add))
    sums = []
    for i in range(BLOCKS):
        block = _transform(_source(i), i)
        sums.append(_combine(*(_piece(block, j) for j in range(PIECES))))
    while len(sums) > 1:
        sums = [_add(sums[k], sums[k + 1]) if k + 1 < len(sums) else sums[k]
                for k in range(0, len(sums), 2)]
    return _add(sums[0], 0)


def run_dag() -> tuple[int, int]:
    """Submit the DAG (2,000 tasks) and return (its result, tasks submitted)."""
    submitted = 0
    sums = []
    for i in range(BLOCKS):
        block = transform.remote(source.remote(i), i)
        parts = [piece.remote(block, j) for j in range(PIECES)]
        sums.append(combine.remote(*parts))
        submitted += 2 + PIECES + 1
        del block, parts           # intermediate objects are freed once used
    while len(sums) > 1:
        merged = []
        for k in range(0, len(sums), 2):
            if k + 1 < len(sums):
                merged.append(add.remote(sums[k], sums[k + 1]))
                submitted += 1
            else:
                merged.append(sums[k])
        sums = merged
    final = add.remote(sums[0], 0)
    submitted += 1
    return graphstore.get(final, timeout=600), submitted


@pytest.mark.timeout(600)
def test_dag_survives_a_worker_killed_every_two_seconds(cli_cluster):
    node_ids = itertools.count()
    cli = cli_cluster(num_workers=0, env=ENV)
    for _ in range(WORKERS):
        cli.add_worker("--node-id", f"chaos-host-{next(node_ids)}")
    graphstore.shutdown()
    graphstore.init(address=cli.address, token=cli.token, node_id="chaos-driver")
    try:
        assert wait_for(lambda: graphstore.cluster_status()["workers"] == WORKERS, 30)
        expected = expected_result()
        # Warm up (functions shipped, workers' stores and connections made) so that both
        # timed runs start alike.
        assert graphstore.get(add.remote(total_of.remote(source.remote(0)), 0), timeout=60) >= 0

        start = time.monotonic()
        calm_result, submitted = run_dag()
        calm_seconds = time.monotonic() - start
        assert calm_result == expected
        assert submitted == 2000
        before = graphstore.cluster_status()["counts"]

        stop = threading.Event()
        killed: list[int] = []
        rng = random.Random(7)

        def chaos() -> None:
            while not stop.wait(KILL_EVERY):
                live = [w for w in cli.workers if w.poll() is None]
                victim = rng.choice(live)
                victim.send_signal(signal.SIGKILL)
                victim.wait(10)
                killed.append(victim.pid)
                cli.add_worker("--node-id", f"chaos-host-{next(node_ids)}")

        killer = threading.Thread(target=chaos, daemon=True)
        start = time.monotonic()
        killer.start()
        try:
            result, _ = run_dag()
        finally:
            stop.set()
            killer.join(30)
        chaos_seconds = time.monotonic() - start
        counts = graphstore.cluster_status()["counts"]
        report = {
            "tasks": submitted, "workers": WORKERS, "kill_every_seconds": KILL_EVERY,
            "workers_killed": len(killed),
            "tasks_retried": counts["retried"] - before["retried"],
            "tasks_rerun_for_lost_objects": counts["reconstructed"] - before["reconstructed"],
            "objects_rebuilt": counts["objects_rebuilt"] - before["objects_rebuilt"],
            "objects_lost_for_good": counts["objects_lost"] - before["objects_lost"],
            "result_exact": result == expected,
            "seconds_without_faults": round(calm_seconds, 2),
            "seconds_with_faults": round(chaos_seconds, 2),
            "slowdown": round(chaos_seconds / calm_seconds, 2),
        }
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / "chaos-report.json").write_text(json.dumps(report, indent=2) + "\n")
        print("\nchaos report:", json.dumps(report, indent=2))
        assert result == expected
        assert len(killed) >= 2, report
        assert report["objects_rebuilt"] > 0 or report["tasks_retried"] > 0, report
        # The cluster is whole again and serves.
        assert wait_for(lambda: graphstore.cluster_status()["workers"] == WORKERS, 30)
        assert graphstore.get(add.remote(1, 2), timeout=60) == 3
    finally:
        graphstore.shutdown()
