"""``graphstore list``, ``graphstore logs`` and ``graphstore stop`` against a cluster
started by hand (``graphstore scheduler`` + ``graphstore worker`` processes), as an
operator would use them, each command a process of its own.

Every cluster here runs with ``TMPDIR`` pointing into the test's own directory: its log
files and the records ``graphstore stop`` reads live there, so a ``graphstore stop`` of
this test never sees the processes of anyone else on this machine.
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

import graphstore
from graphstore.core import shm
from helpers import process_alive, shm_files, wait_for


@graphstore.remote
def chatty(n):
    import logging
    logging.getLogger("chatty").warning("chatty says %d", n)
    return n


@graphstore.remote
def broken():
    raise ValueError("broken on purpose")


@graphstore.remote
class Counter:
    def __init__(self):
        self.n = 0

    def add(self):
        self.n += 1
        return self.n

    def pid(self):
        return os.getpid()


@graphstore.remote
class Talker:
    def talk(self, text):
        import logging
        logging.getLogger("talker").warning("talker says %s", text)
        return os.getpid()


@pytest.fixture
def hand_cluster(cli_cluster, tmp_path):
    """A scheduler and one worker started by hand, logging JSON lines, with their own
    TMPDIR; ``gs(*args)`` runs a ``graphstore`` command against it."""
    graphstore.shutdown()                  # leave the shared cluster for this test
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    env = {"TMPDIR": str(tmpdir), "GRAPHSTORE_LOG_FORMAT": "json"}
    cli = cli_cluster(num_workers=1, env=env)

    def gs(*args: str, address: bool = True, timeout: float = 60):
        command = [sys.executable, "-m", "graphstore.cli", *args]
        if address:
            command += ["--address", cli.address]
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, **env, "GRAPHSTORE_TOKEN": cli.token})
    cli.gs = gs
    cli.cli_env = env
    graphstore.init(address=cli.address, token=cli.token)
    try:
        assert wait_for(lambda: graphstore.cluster_status()["workers"] == 1, 30)
        yield cli
    finally:
        graphstore.shutdown()


def test_list_filters_tasks_actors_objects_and_workers(hand_cluster):
    gs = hand_cluster.gs
    worker_pid = hand_cluster.workers[0].pid
    done = chatty.remote(1)
    failed = broken.remote()
    assert graphstore.get(done, timeout=30) == 1
    with pytest.raises(ValueError):
        graphstore.get(failed, timeout=30)
    counter = Counter.options(name="the-counter").remote()
    assert graphstore.get(counter.add.remote(), timeout=30) == 1
    big = graphstore.put(np.zeros(300_000, dtype=np.uint8))   # stored, not inline

    tasks = json.loads(gs("list", "tasks", "--json").stdout)
    by_name = {row["name"]: row for row in tasks}
    assert by_name["chatty"]["state"] == "done"
    assert by_name["chatty"]["pid"] == worker_pid
    assert by_name["broken"]["state"] == "failed"
    assert "broken on purpose" in by_name["broken"]["error"]
    failed_only = json.loads(gs("list", "tasks", "--state", "failed", "--json").stdout)
    assert [row["name"] for row in failed_only] == ["broken"]
    assert json.loads(gs("list", "tasks", "--name", "chatty", "--limit", "1",
                         "--json").stdout)[0]["name"] == "chatty"

    actors = json.loads(gs("list", "actors", "--state", "alive", "--json").stdout)
    assert [(a["class_name"], a["name"]) for a in actors] == [("Counter", "the-counter")]
    objects = json.loads(gs("list", "objects", "--state", "ready", "--json").stdout)
    stored = next(o for o in objects if o["id"] == big.hex())
    assert stored["size"] >= 300_000 and stored["name"] is None

    table = gs("list", "workers")
    assert table.returncode == 0, table.stderr
    header, row = table.stdout.splitlines()[:2]
    assert header.split()[:3] == ["WORKER_ID", "STATE", "PID"]
    assert row.split()[1:3] == ["alive", str(worker_pid)]


def test_list_refuses_bad_input_with_the_choices(hand_cluster):
    gs = hand_cluster.gs
    state = gs("list", "tasks", "--state", "running")
    assert state.returncode == 2
    assert "tasks have no state 'running'" in state.stderr
    assert "waiting, queued, assigned, done, failed" in state.stderr
    kind = gs("list", "jobs")
    assert kind.returncode == 2 and "invalid choice: 'jobs'" in kind.stderr
    assert "tasks" in kind.stderr and "workers" in kind.stderr
    limit = gs("list", "objects", "--limit", "0")
    assert limit.returncode == 2 and "--limit" in limit.stderr
    # The scheduler is still there for the next question.
    assert gs("list", "workers", "--json").returncode == 0


def test_logs_show_a_task_s_lines_as_json_with_its_ids(hand_cluster):
    gs = hand_cluster.gs
    worker_pid = hand_cluster.workers[0].pid
    ref = chatty.remote(7)
    assert graphstore.get(ref, timeout=30) == 7
    (task,) = [t for t in graphstore.list_tasks() if t["name"] == "chatty"]
    (worker,) = json.loads(gs("list", "workers", "--json").stdout)

    shown = wait_for(lambda: (lambda r: r if "chatty says 7" in r.stdout else None)(
        gs("logs", str(worker_pid), "--tail", "5")), timeout=15, interval=0.2)
    assert shown, "the task's log line never reached the worker's log"
    assert shown.returncode == 0, shown.stderr
    lines = [json.loads(line) for line in shown.stdout.splitlines()]
    assert 1 <= len(lines) <= 5
    (entry,) = [e for e in lines if e["message"] == "chatty says 7"]
    assert entry["level"] == "WARNING" and entry["logger"] == "chatty"
    assert entry["task_id"] == task["task_id"]
    assert entry["worker_id"] == worker["id"] and entry["node_id"] == worker["node"]
    assert entry["pid"] == worker_pid
    assert f"worker {worker['id'][:12]} pid {worker_pid}" in shown.stderr

    listed = gs("logs")
    assert listed.returncode == 0, listed.stderr
    assert worker["log_file"] in listed.stdout
    assert worker["log_file"].startswith(hand_cluster.cli_env["TMPDIR"])
    scheduler = gs("logs", "scheduler", "--tail", "50")
    assert "joined from" in scheduler.stdout

    unknown = gs("logs", "no-such-worker")
    assert unknown.returncode == 2
    assert "no worker or actor 'no-such-worker'" in unknown.stderr
    assert "scheduler" in unknown.stderr and f"pid {worker_pid}" in unknown.stderr


def test_an_actor_s_process_has_a_log_of_its_own(hand_cluster):
    gs = hand_cluster.gs
    talker = Talker.remote()
    actor_pid = graphstore.get(talker.talk.remote("hello"), timeout=30)
    (actor,) = json.loads(gs("list", "actors", "--name", "Talker", "--json").stdout)
    actor_id = actor["id"]
    assert actor["pid"] == actor_pid
    shown = wait_for(lambda: (lambda r: r if "talker says hello" in r.stdout else None)(
        gs("logs", actor_id[:24], "--tail", "5")), timeout=15, interval=0.2)
    assert shown, "the actor's log line never reached its log file"
    (entry,) = [json.loads(line) for line in shown.stdout.splitlines()
                if "talker says" in line]
    assert entry["actor_id"] == actor_id and entry["pid"] == actor_pid
    assert f"actor {actor_id[:12]} pid {actor_pid}" in shown.stderr
    listed = gs("logs").stdout
    assert f"actor-{actor_pid}.log" in listed
    assert gs("logs", str(actor_pid), "--tail", "1").returncode == 0


def test_logs_follow_prints_new_lines_until_interrupted(hand_cluster, tmp_path):
    worker_id = json.loads(hand_cluster.gs("list", "workers", "--json").stdout)[0]["id"]
    out = tmp_path / "follow.out"
    with open(out, "wb") as sink:
        follower = subprocess.Popen(
            [sys.executable, "-m", "graphstore.cli", "logs", worker_id[:8], "--follow",
             "--tail", "1", "--address", hand_cluster.address],
            stdout=sink, stderr=subprocess.STDOUT,
            env={**os.environ, **hand_cluster.cli_env,
                 "GRAPHSTORE_TOKEN": hand_cluster.token})
    try:
        assert wait_for(lambda: "==> worker" in out.read_text(), 30)
        assert graphstore.get([chatty.remote(100 + i) for i in range(3)],
                              timeout=30) == [100, 101, 102]
        assert wait_for(lambda: all(f"chatty says {100 + i}" in out.read_text()
                                    for i in range(3)), 15), out.read_text()
        follower.send_signal(signal.SIGINT)          # Ctrl-C
        assert follower.wait(15) == 0, out.read_text()
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()


def test_stop_ends_the_cluster_started_by_hand_and_leaves_nothing(hand_cluster):
    gs = hand_cluster.gs
    counter = Counter.remote()
    actor_pid = graphstore.get(counter.pid.remote(), timeout=30)
    graphstore.put(np.ones(300_000, dtype=np.uint8))     # a segment in the store
    graphstore.shutdown()
    cluster_id = hashlib.blake2b(hand_cluster.address.encode(), digest_size=4).hexdigest()
    assert shm_files(f"{shm.PREFIX}{cluster_id}-")        # the store exists

    stopped = gs("stop", "--grace", "10", address=False)
    assert stopped.returncode == 0, stopped.stderr
    worker_pid, scheduler_pid = hand_cluster.workers[0].pid, hand_cluster.scheduler.pid
    assert f"stopped worker pid {worker_pid}" in stopped.stdout
    assert f"stopped scheduler pid {scheduler_pid}" in stopped.stdout
    assert hand_cluster.workers[0].wait(10) == 0
    assert hand_cluster.scheduler.wait(10) == 0
    assert wait_for(lambda: not process_alive(actor_pid), 10)
    assert shm_files(f"{shm.PREFIX}{cluster_id}-") == []

    again = gs("stop", address=False)
    assert again.returncode == 0
    assert "no graphstore scheduler or worker" in again.stdout


def test_stop_pid_ends_only_the_service_with_that_pid(hand_cluster):
    gs = hand_cluster.gs
    worker, scheduler = hand_cluster.workers[0], hand_cluster.scheduler
    graphstore.shutdown()
    # A pid that is no recorded service (this test's own) stops nothing.
    other = gs("stop", "--pid", str(os.getpid()), address=False)
    assert other.returncode == 0, other.stderr
    assert f"no graphstore scheduler or worker with pid {os.getpid()}" in other.stdout
    assert worker.poll() is None and scheduler.poll() is None
    stopped = gs("stop", "--pid", str(worker.pid), "--grace", "10", address=False)
    assert stopped.stdout.strip() == f"stopped worker pid {worker.pid}", stopped.stdout
    assert worker.wait(10) == 0
    assert scheduler.poll() is None                       # left alone
    stopped = gs("stop", "--pid", str(scheduler.pid), address=False)
    assert stopped.stdout.strip() == f"stopped scheduler pid {scheduler.pid}"
    assert scheduler.wait(10) == 0


def test_stop_leaves_a_cluster_started_by_init_alone(run_driver, tmp_path):
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    env = {"TMPDIR": str(tmpdir)}
    gate = tmp_path / "gate"
    driver = run_driver.start(f"""
        import os, time, graphstore
        graphstore.init(num_cpus=1)
        print("up", flush=True)
        while not os.path.exists({str(gate)!r}):
            time.sleep(0.02)
        print("still", graphstore.get(graphstore.put(41)) + 1, flush=True)
        graphstore.shutdown()
    """, env=env)
    driver.wait_for_line("up")
    stopped = subprocess.run([sys.executable, "-m", "graphstore.cli", "stop"],
                             capture_output=True, text=True, timeout=60,
                             env={**os.environ, **env})
    assert stopped.returncode == 0
    assert "no graphstore scheduler or worker" in stopped.stdout
    gate.touch()
    assert driver.wait_for_line("still").strip() == "42"


def test_a_bad_log_format_stops_a_service_at_start_with_a_clear_error(tmp_path):
    started = subprocess.run(
        [sys.executable, "-m", "graphstore.cli", "scheduler", "--port", "0",
         "--token-file", str(tmp_path / "token")],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "TMPDIR": str(tmp_path), "GRAPHSTORE_LOG_FORMAT": "xml"})
    assert started.returncode == 2
    assert "log_format must be one of text, json, got 'xml' (from GRAPHSTORE_LOG_FORMAT)" \
        in started.stderr


@pytest.mark.parametrize("args, error", [
    (["--tail", "0"], "--tail must be at least 1"),
    (["--follow"], "--follow needs a WORKER"),
])
def test_logs_refuses_bad_arguments_before_connecting(args, error):
    done = subprocess.run([sys.executable, "-m", "graphstore.cli", "logs", *args,
                           "--address", "tcp://127.0.0.1:1"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and error in done.stderr
