"""The status page's live views (``scheduler/status_live.py``): progress by function name,
workers' load, the task stream. The views on the state machine alone (with a task stream
filled by hand), then their JSON routes on a real cluster, with bad query parameters.
The browser's view of them is in test_dashboard_browser.py."""
from __future__ import annotations

import pytest

import graphstore
from graphstore import session
from graphstore.core.profile_events import ProfileEvent
from graphstore.scheduler import status_live
from graphstore.scheduler.task_stream import TaskStream
from helpers import wait_for
from test_dashboard import get_json, http
from test_scheduler_state import Harness


# -- the views on the state machine --------------------------------------------------------

def stream_harness() -> tuple[Harness, bytes, bytes]:
    h = Harness()
    w1, w2 = h.worker("w1"), h.worker("w2")
    assert isinstance(h.s.task_stream, TaskStream)    # the scheduler keeps one
    return h, w1, w2


def test_task_stream_view_gives_entries_after_since_with_their_workers():
    h, w1, w2 = stream_harness()
    h.s.task_stream.record(w1, [ProfileEvent("task", "load", 10.0, 11.0, 100, b"\x01" * 16),
                                ProfileEvent("transfer", "object 01", 11.0, 11.5, 100,
                                             nbytes=4096, peer="tcp://w2:1")])
    h.s.task_stream.record(w2, [ProfileEvent("spill", "2 objects", 12.0, 12.2, 555,
                                             nbytes=10)])
    view = status_live.task_stream(h.s, 0, 100)
    assert [e["seq"] for e in view["entries"]] == [1, 2, 3] and view["seq"] == 3
    first = view["entries"][0]
    assert first == {"seq": 1, "worker": w1.hex()[:12], "pid": 100, "kind": "task",
                     "name": "load", "start": 10.0, "stop": 11.0, "nbytes": 0, "peer": "",
                     "task": "01" * 16}
    assert view["entries"][2]["pid"] == 555 and view["entries"][2]["kind"] == "spill"
    assert set(view["workers"]) == {w1.hex()[:12], w2.hex()[:12]}
    assert view["workers"][w1.hex()[:12]]["pid"] == 100
    assert not view["truncated"] and "note" not in view
    # Incremental polling: only what is new, nothing when nothing is.
    assert [e["seq"] for e in status_live.task_stream(h.s, 2, 100)["entries"]] == [3]
    assert status_live.task_stream(h.s, 3, 100)["entries"] == []
    # More new entries than the limit: the newest, and a flag.
    cut = status_live.task_stream(h.s, 0, 2)
    assert [e["seq"] for e in cut["entries"]] == [2, 3] and cut["truncated"]
    # A since beyond the last (a scheduler restarted under the page) gives nothing.
    assert status_live.task_stream(h.s, 10**9, 100)["entries"] == []


def test_task_stream_names_a_departed_worker_and_degrades_without_a_stream():
    h, w1, _ = stream_harness()
    h.s.task_stream.record(w1, [ProfileEvent("task", "f", 1.0, 2.0, 100)])
    h.s.remove_peer(w1)
    view = status_live.task_stream(h.s, 0, 10)
    assert view["workers"][w1.hex()[:12]]["departed"] is True
    assert view["workers"][w1.hex()[:12]]["pid"] == 100     # the stream remembers it
    bare = Harness()
    if hasattr(bare.s, "task_stream"):
        del bare.s.task_stream
    empty = status_live.task_stream(bare.s, 0, 10)
    assert empty["entries"] == [] and empty["note"] == status_live.NO_STREAM_NOTE


def test_progress_view_lists_names_with_running_and_failed():
    h = Harness()
    w = h.worker("w1")
    t1, _ = h.submit(name="ok")
    t2, _ = h.submit(name="bad")
    h.submit(name="ok")
    h.s.schedule()
    view = status_live.progress(h.s, 10)
    assert [r["name"] for r in view["functions"]] == ["ok", "bad"]
    assert view["functions"][0]["assigned"] + view["functions"][0]["queued"] == 2
    for task_id in (t1, t2):
        h.s.schedule()
        if task_id == t2:
            h.fail(w, task_id)
        else:
            h.done(w, task_id)
    rows = {r["name"]: r for r in status_live.progress(h.s, 10)["functions"]}
    assert (rows["ok"]["done"], rows["ok"]["failed"], rows["bad"]["failed"]) == (1, 0, 1)
    assert rows["ok"]["assigned"] + rows["ok"]["queued"] == 1
    assert view["names"] == 2 and len(status_live.progress(h.s, 1)["functions"]) == 1


def test_worker_load_view_gives_columns_of_recent_samples():
    h = Harness()
    w = h.worker("w1")
    h.s.worker_heartbeat(w, {"cpu": 0.75, "memory": 1000, "store_used": 10})
    view = status_live.worker_load(h.s, 10, 60)
    (row,) = view["workers"]
    assert row["id"] == w.hex()[:12] and row["pid"] == 100
    assert row["samples"]["cpu"] == [0.75] and row["samples"]["memory"] == [1000]
    assert row["samples"]["store_used"] == [10] and 0 <= row["samples"]["age"][0] < 5
    assert view["window"] == 300 and view["interval"] == 1.0


# -- the routes on a real cluster ------------------------------------------------------------

@graphstore.remote
def live_square(x):
    return x * x


@graphstore.remote
def live_refuse(x):
    raise KeyError(x)


def test_progress_route_counts_done_and_failed_by_function(cluster):
    base = cluster.dashboard_url
    assert graphstore.get([live_square.remote(i) for i in range(5)]) == [0, 1, 4, 9, 16]
    refused = [live_refuse.remote(i) for i in range(2)]
    for ref in refused:
        with pytest.raises(KeyError):
            graphstore.get(ref)
    rows = {r["name"]: r for r in get_json(base + "/api/progress")["functions"]}
    assert rows["live_square"]["done"] == 5 and rows["live_square"]["failed"] == 0
    assert rows["live_refuse"]["failed"] == 2 and rows["live_refuse"]["done"] == 0
    assert rows["live_square"]["total"] == 5


def test_worker_load_route_has_cpu_and_memory_samples(cluster):
    base = cluster.dashboard_url

    def sampled():
        workers = get_json(base + "/api/workers/load")["workers"]
        ok = len(workers) == 2 and all(
            any(c is not None for c in w["samples"]["cpu"])
            and any(m for m in w["samples"]["memory"]) for w in workers)
        return workers if ok else None

    workers = wait_for(sampled, timeout=15)
    assert workers, "no worker reported CPU and memory in its heartbeats"
    for row in workers:
        samples = row["samples"]
        assert len(samples["age"]) == len(samples["cpu"]) == len(samples["memory"])
        assert all(m is None or m > 1024 * 1024 for m in samples["memory"])
        assert all(c is None or c >= 0 for c in samples["cpu"])


@pytest.mark.parametrize("query, message", [
    ("/api/task-stream?since=abc", "since must be an integer from 0 to 9007199254740992; "
                                   "got 'abc'"),
    ("/api/task-stream?since=-1", "since must be an integer from 0"),
    ("/api/task-stream?since=" + "9" * 40, "since must be an integer from 0"),
    ("/api/task-stream?since=" + "9" * 5000, "since must be an integer from 0"),
    ("/api/task-stream?since=1.5", "since must be an integer"),
    ("/api/task-stream?limit=0", "limit must be an integer from 1 to 10000"),
    ("/api/task-stream?since=1&since=2", "since is given more than once"),
    ("/api/task-stream?after=3", "unknown query parameter 'after'; this route takes "
                                 "since, limit"),
    ("/api/progress?limit=abc", "limit must be an integer from 1 to 1000"),
    ("/api/progress?limit=100000", "limit must be an integer from 1 to 1000"),
    ("/api/workers/load?seconds=301", "seconds must be an integer from 1 to 300"),
    ("/api/workers/load?seconds=-3", "seconds must be an integer from 1 to 300"),
    ("/api/workers/load?limit=%00", "limit must be an integer"),
])
def test_bad_query_parameters_are_400_and_the_page_lives_on(cluster, query, message):
    base = cluster.dashboard_url
    reply = http(base + query)
    assert reply.status == 400, (query, reply.status, reply.body[:300])
    body = reply.json()
    assert body["status"] == 400 and message in body["error"], body
    for path in ("/api/task-stream?since=0", "/api/progress", "/api/workers/load",
                 "/status"):
        assert http(base + path).status == 200, path


def test_the_status_page_checks_its_own_parameters(cluster):
    base = cluster.dashboard_url
    reply = http(base + "/status?window=1")
    assert reply.status == 400 and "window must be an integer from 5 to 300" in reply.text
    assert http(base + "/status?window=abc").status == 400
    reply = http(base + "/status?window=60&limit=5")
    assert reply.status == 200 and 'data-page="status"' in reply.text


def test_task_stream_route_answers_incremental_polls(cluster):
    base = cluster.dashboard_url
    first = get_json(base + "/api/task-stream?since=0&limit=10")
    assert set(first) >= {"entries", "seq", "since", "truncated", "workers", "now"}
    assert graphstore.get([live_square.remote(i) for i in range(4)]) == [0, 1, 4, 9]
    # The runs arrive with their results: the next poll has them, and only new entries.
    again = get_json(base + f"/api/task-stream?since={first['seq']}")
    assert again["entries"] and all(e["seq"] > first["seq"] for e in again["entries"])
    runs = [e for e in again["entries"] if e["kind"] == "task" and e["name"] == "live_square"]
    assert len(runs) == 4
    pids = {p.pid for p in session.current_local_cluster().workers}
    for run in runs:
        assert run["stop"] >= run["start"] and run["task"]
        assert again["workers"][run["worker"]]["pid"] in pids
    assert get_json(base + "/api/task-stream?since=9007199254740992")["entries"] == []


def test_the_status_page_example_runs(run_driver):
    from helpers import run_example
    run = run_example(run_driver, "status_page.py")
    assert "8 chunks scored, 2 failed their check" in run.stdout
    assert "progress: score: 8 done, 2 failed, 0 running, 0 queued" in run.stdout
    assert "progress: load: 10 done, 0 failed" in run.stdout
    line = next(l for l in run.stdout.splitlines() if l.startswith("task stream:"))
    assert "20 task" in line and "fetch" in line and "spill" in line, line
    assert run.stdout.count("samples, CPU up to") == 2
