"""Workers' load over time: the sampler of a worker's processes (``worker/process_load.py``,
on real processes) and the scheduler's bounded rings of samples
(``scheduler/worker_load.py``), fed through heartbeats of the state machine."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from graphstore.scheduler.worker_load import WorkerLoadHistory
from graphstore.worker.process_load import ProcessLoad, cpu_seconds, resident_memory
from test_scheduler_state import Harness

MB = 1024 * 1024


def spin(cpu_seconds_wanted: float) -> None:
    start = time.process_time()
    while time.process_time() - start < cpu_seconds_wanted:
        pass


def test_cpu_is_the_cpu_time_used_between_samples():
    load = ProcessLoad()
    first = load.sample([os.getpid()])
    assert first["cpu"] is None and first["processes"] == 1
    before = cpu_seconds(os.getpid())
    spin(0.3)
    second = load.sample([os.getpid()])
    used = cpu_seconds(os.getpid()) - before
    assert used >= 0.25
    assert second["cpu"] is not None and second["cpu"] > 0


def test_memory_counts_resident_pages_of_every_process_given():
    load = ProcessLoad()
    child = subprocess.Popen([sys.executable, "-c",
                              "import sys; b = bytearray(60 * 2**20); b[::4096] = b'x' * "
                              "len(b[::4096]); print('ready', flush=True); sys.stdin.read()"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert child.stdout.readline() == b"ready\n"
        alone = load.sample([os.getpid()])
        both = load.sample([os.getpid(), child.pid, child.pid])
        assert both["processes"] == 2
        assert both["memory"] - alone["memory"] >= 50 * MB
        assert resident_memory(child.pid) >= 50 * MB
    finally:
        child.stdin.close()
        child.wait(timeout=10)
    after = load.sample([os.getpid(), child.pid])
    assert after["processes"] == 1          # a process gone is skipped, not an error
    assert cpu_seconds(child.pid) is None and resident_memory(child.pid) is None


def test_the_ring_keeps_one_sample_per_interval_and_a_bounded_window():
    history = WorkerLoadHistory(seconds=10, interval=1.0)
    assert history.per_worker == 10
    for step in range(100):
        history.record(b"w", 1000.0 + step * 0.25, {"cpu": 0.5, "memory": 10,
                                                     "store_used": step})
    samples = history.samples(b"w")
    assert len(samples) == 10 == len(history)
    assert [s.time for s in samples] == [1015.0 + i for i in range(10)]
    assert samples[-1].store_used == 96
    assert [s.time for s in history.samples(b"w", since=1022.5)] == [1023.0, 1024.0]
    history.forget(b"w")
    assert history.samples(b"w") == [] and len(history) == 0


@pytest.mark.parametrize("value", ["1", -1, float("nan"), float("inf"), True, None, [1]])
def test_bad_figures_from_a_worker_become_gaps(value):
    history = WorkerLoadHistory()
    history.record(b"w", 1.0, {"cpu": value, "memory": value, "store_used": value})
    (sample,) = history.samples(b"w")
    assert sample.cpu is None and sample.memory is None and sample.store_used is None


def test_heartbeats_feed_the_history_and_a_departed_worker_is_forgotten():
    h = Harness()
    w = h.worker("w1")
    h.s.worker_heartbeat(w, {"cpu": 1.5, "memory": 123, "store_used": 7, "x": "text"})
    h.s.worker_heartbeat(w, "not a dict")
    (sample,) = h.s.worker_load.samples(w)
    assert (sample.cpu, sample.memory, sample.store_used) == (1.5, 123, 7)
    h.s.remove_peer(w)
    assert h.s.worker_load.samples(w) == []
