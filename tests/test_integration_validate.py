"""A live scheduler with ``validate_state`` on: it recounts its bookkeeping after every
event while tasks, failures, retries after a crashed worker and actors run, and its
decision log lines carry the stimulus id of the event that caused them."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

import graphstore


def test_validating_scheduler_runs_tasks_actors_and_retries(fresh_cluster, tmp_path):
    ctx = fresh_cluster(num_cpus=2, validate_state=True, log_format="json")
    marker = str(tmp_path / "crashed-once")

    @graphstore.remote(max_retries=1)
    def crash_once(path):
        if not os.path.exists(path):
            open(path, "w").close()
            os._exit(1)                  # takes its worker with it: retried elsewhere
        return 7

    @graphstore.remote
    def add(a, b):
        return a + b

    @graphstore.remote
    def boom():
        raise ValueError("boom")

    @graphstore.remote
    class Counter:
        def __init__(self):
            self.n = 0

        def incr(self):
            self.n += 1
            return self.n

    assert graphstore.get(crash_once.remote(marker), timeout=60) == 7
    refs = [add.remote(i, graphstore.put(i)) for i in range(50)]
    assert graphstore.get(add.remote(refs[0], refs[1]), timeout=60) == 2
    assert graphstore.get(refs, timeout=60) == [2 * i for i in range(50)]
    with pytest.raises(ValueError, match="boom"):
        graphstore.get(boom.remote(), timeout=60)
    counter = Counter.remote()
    assert graphstore.get([counter.incr.remote() for _ in range(20)], timeout=60)[-1] == 20
    graphstore.kill(counter)
    del refs

    lines = [json.loads(line) for line in
             (Path(ctx.session_dir) / "logs" / "scheduler.log").read_text().splitlines()
             if line.startswith("{")]
    assert lines, "the scheduler wrote no JSON log lines"
    assert not [e for e in lines if "state invalid" in e["message"]]
    retried = [e for e in lines if " is retried " in e["message"]
               and "crash_once" in e["message"]]
    assert retried, "no log line says the crashed task is retried"
    # The worker's connection closing is the event that retried it.
    assert re.fullmatch(r"closed-\d+", retried[0]["stimulus_id"]), retried[0]
