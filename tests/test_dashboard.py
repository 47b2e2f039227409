"""The status page's web server on real clusters, over real HTTP: every page and JSON
route, /metrics, the URL init() reports, port fallback, and bad input (404, 400, 405,
foreign Host headers). The browser's view of the pages is in test_dashboard_browser.py."""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

import graphstore
from graphstore import session
from helpers import wait_for

from test_scheduler_metrics import metric_samples, value

MB = 1024 * 1024
PAGES = ["/", "/workers", "/tasks", "/objects", "/actors", "/graph"]
API = ["/api/overview", "/api/workers", "/api/tasks", "/api/objects", "/api/actors",
       "/api/graph"]


@dataclass
class Response:
    status: int
    headers: dict
    body: bytes

    def json(self):
        assert self.headers["content-type"].startswith("application/json"), self.headers
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode()


def http(url: str, method: str = "GET", headers: dict | None = None,
         data: bytes | None = None) -> Response:
    request = urllib.request.Request(url, method=method, headers=headers or {}, data=data)
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return Response(reply.status, {k.lower(): v for k, v in reply.headers.items()},
                            reply.read())
    except urllib.error.HTTPError as error:
        with error:
            return Response(error.code, {k.lower(): v for k, v in error.headers.items()},
                            error.read())


def get_json(url: str) -> dict:
    reply = http(url)
    assert reply.status == 200, (url, reply.status, reply.body[:500])
    return reply.json()


@graphstore.remote
def inc(x):
    return x + 1


@graphstore.remote
def add(a, b, nested):
    return a + b + len(nested)


@graphstore.remote
def make_array(n):
    return np.ones(n, dtype=np.uint8)


def _explode(level):
    if level == 0:
        raise ValueError("kaput at the bottom")
    _explode(level - 1)


@graphstore.remote
def explode():
    _explode(3)


def local_worker_pids() -> set[int]:
    cluster = session.current_local_cluster()
    return {p.pid for p in cluster.workers}


def scheduler_log() -> str:
    cluster = session.current_local_cluster()
    return (cluster.log_dir / "scheduler.log").read_text(errors="replace")


# -- the URL ------------------------------------------------------------------------------

def test_init_prints_the_url_and_returns_it(run_driver):
    run = run_driver("""
        import urllib.request, graphstore
        from graphstore import session
        ctx = graphstore.init(num_cpus=1)
        print("SESSION=" + session.current_local_cluster().session_name, flush=True)
        print("URL=" + ctx.dashboard_url, flush=True)
        print("INFO=" + ctx.address_info["dashboard_url"], flush=True)
        with urllib.request.urlopen(ctx.dashboard_url + "/api/overview") as reply:
            print("STATUS=%d" % reply.status, flush=True)
        graphstore.shutdown()
    """)
    assert run.returncode == 0, run.stderr
    url = run.value("URL")
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", url)
    assert run.value("INFO") == url and run.value("STATUS") == "200"
    assert f"status page at {url}" in run.stderr


def test_cluster_context_carries_the_url(cluster):
    assert cluster.dashboard_url.startswith("http://127.0.0.1:")
    assert f"dashboard_url={cluster.dashboard_url!r}" in repr(cluster)
    # A second driver joining the cluster learns the same URL from the scheduler.
    assert graphstore.init(ignore_reinit_error=True).dashboard_url == cluster.dashboard_url


# -- pages and the API on a real cluster --------------------------------------------------

def test_every_page_is_a_small_html_shell_over_its_api(cluster):
    base = cluster.dashboard_url
    for path in PAGES:
        reply = http(base + path)
        assert reply.status == 200, path
        assert reply.headers["content-type"] == "text/html; charset=utf-8"
        assert "<nav>" in reply.text and 'src="/static/dashboard.js' in reply.text
        assert "script-src 'self'" in reply.headers["content-security-policy"]
    for asset, kind in (("dashboard.js", "javascript"), ("dashboard.css", "text/css")):
        reply = http(f"{base}/static/{asset}")
        assert reply.status == 200 and kind in reply.headers["content-type"]
    for path in API + ["/api", "/api/graph.dot", "/api/graph.svg"]:
        assert http(base + path).status == 200, path


def test_overview_and_workers_describe_the_cluster(cluster):
    base = cluster.dashboard_url
    before = get_json(base + "/api/overview")
    x = graphstore.put(1)
    ref = add.remote(inc.remote(x), inc.remote(x), [x])
    assert graphstore.get(ref) == 5
    array = make_array.remote(3 * MB)       # larger than inline: lives in a store
    assert graphstore.get(array).nbytes == 3 * MB
    # Figures from the scan of live objects may be half a second old.
    overview = wait_for(lambda: (lambda o: o if o["objects"]["stored_bytes"] >= 3 * MB
                                 else None)(get_json(base + "/api/overview")), timeout=15)
    assert overview, "the array never showed up in the overview"
    assert overview["workers"] == 2 and overview["nodes"] == 1 and overview["drivers"] >= 1
    assert overview["resources"]["total"]["CPU"] == 2.0
    assert overview["tasks"]["by_state"]["done"] == before["tasks"]["by_state"]["done"] + 4
    assert overview["tasks"]["submitted"] == before["tasks"]["submitted"] + 4
    assert overview["objects"]["count"] >= 2
    assert overview["scheduler"]["address"] == cluster.address
    assert overview["scheduler"]["dashboard_url"] == base
    pids = local_worker_pids()

    def store_seen():
        workers = get_json(base + "/api/workers")["workers"]
        return workers if sum(w["store_used"] for w in workers) >= 3 * MB else None

    workers = wait_for(store_seen, timeout=15)
    assert workers, "the workers' heartbeats never reported the array's store use"
    assert {w["pid"] for w in workers} == pids
    for row in workers:
        assert row["store_capacity"] > 0 and row["num_cpus"] == 1.0
        assert row["heartbeat_age"] is not None and row["heartbeat_age"] < 5
        assert row["address"].startswith("tcp://127.0.0.1:")
    del array, ref, x


def test_tasks_show_failures_with_their_tracebacks(cluster):
    base = cluster.dashboard_url
    with pytest.raises(ValueError, match="kaput"):
        graphstore.get(explode.remote())
    view = get_json(base + "/api/tasks?state=failed&limit=5")
    assert view["state"] == "failed" and view["tasks"]
    assert all(t["state"] == "failed" for t in view["tasks"])
    newest = view["tasks"][0]
    assert newest["name"] == "explode" and newest["error"] == "ValueError: kaput at the bottom"
    assert newest["pid"] in local_worker_pids() and newest["duration"] is not None
    failure = view["failures"][0]
    assert failure["id"] == newest["id"]
    traceback = failure["traceback"]
    assert traceback.startswith("Traceback (most recent call last):")
    assert traceback.count("_explode") >= 4 and "test_dashboard.py" in traceback
    recent = get_json(base + "/api/tasks?limit=3")
    assert len(recent["tasks"]) <= 3 and recent["tasks"][0]["name"] == "explode"


def test_objects_are_listed_largest_first_with_where_they_live(cluster):
    base = cluster.dashboard_url
    refs = [graphstore.put(np.zeros(n * MB, dtype=np.uint8)) for n in (1, 4, 2)]
    expected = [refs[1].hex(), refs[2].hex(), refs[0].hex()]
    view = wait_for(lambda: (lambda v: v if [r["id"] for r in v["objects"]] == expected
                             else None)(get_json(base + "/api/objects?limit=3")),
                    timeout=15)
    assert view, get_json(base + "/api/objects?limit=3")
    rows = view["objects"]
    assert [r["id"] for r in rows] == [refs[1].hex(), refs[2].hex(), refs[0].hex()]
    assert rows[0]["size"] >= 4 * MB and rows[0]["state"] == "ready"
    assert rows[0]["where"] and rows[0]["where"][0].startswith("store of pid ")
    assert rows[0]["spilled"] is False and rows[0]["holders"] >= 1
    assert len(get_json(base + "/api/objects?limit=1")["objects"]) == 1
    del refs


@graphstore.remote
class Tally:
    def __init__(self):
        self.n = 0

    def add(self):
        self.n += 1
        return self.n


def test_actors_api_lists_live_actors_and_their_state(cluster):
    base = cluster.dashboard_url
    tally = Tally.options(name="tally-for-the-page").remote()
    assert graphstore.get([tally.add.remote() for _ in range(3)]) == [1, 2, 3]

    def row():
        rows = [a for a in get_json(base + "/api/actors")["actors"]
                if a["name"] == "tally-for-the-page"]
        return rows[0] if rows else None
    entry = row()
    assert entry["class_name"] == "Tally" and entry["state"] == "alive"
    assert entry["worker"] and entry["node"] and entry["restarts"] == 0
    # The scheduler hears of finished calls a moment after their caller.
    wait_for(lambda: not row()["pending_calls"], timeout=10, interval=0.1)
    assert row()["pending_calls"] == 0
    graphstore.kill(tally)
    wait_for(lambda: row() is None or row()["state"] == "dead", timeout=20, interval=0.1)
    assert row() is None or row()["state"] == "dead"
    del tally
    wait_for(lambda: row() is None, timeout=20, interval=0.1)
    assert row() is None, "a dead actor without handles stayed listed"


def test_graph_api_and_picture(cluster):
    base = cluster.dashboard_url
    x = graphstore.put(10)
    ref = inc.remote(inc.remote(x))
    assert graphstore.get(ref) == 12
    data = get_json(base + "/api/graph?limit=3")
    assert len(data["nodes"]) == 3 and data["graph"]["truncated"] is True
    assert data["graph"]["total_nodes"] > 3 and data["graph"]["renderable"] is True
    assert re.fullmatch(r"[0-9a-f]{24}", data["graph"]["digest"])
    newest = data["nodes"][-1]
    assert newest["id"] == ref.hex() and newest["type"] == "object"
    assert {(e["source"], e["target"]) for e in data["edges"]} <= {
        (n["id"], m["id"]) for n in data["nodes"] for m in data["nodes"]}
    svg = http(base + "/api/graph.svg?limit=5")
    assert svg.status == 200 and svg.headers["content-type"] == "image/svg+xml"
    assert svg.text.lstrip().startswith("<?xml") and "<svg" in svg.text
    assert svg.headers["x-graph-truncated"] == "true" and svg.headers["x-graph-nodes"] == "5"
    assert ">inc</text>" in svg.text
    dot = http(base + "/api/graph.dot?limit=5")
    assert dot.status == 200 and dot.text.startswith("digraph graphstore {")
    assert dot.headers["content-type"].startswith("text/vnd.graphviz")
    del ref, x


def test_metrics_are_prometheus_text_about_the_cluster(cluster):
    assert graphstore.get(inc.remote(1)) == 2
    reply = http(cluster.dashboard_url + "/metrics")
    assert reply.status == 200
    assert reply.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    samples = metric_samples(reply.text)
    assert value(samples, "graphstore_workers") == 2
    assert value(samples, "graphstore_resources", resource="CPU", kind="total") == 2
    assert value(samples, "graphstore_tasks_finished_total", function="inc",
                 state="done") >= 1
    assert len(samples["graphstore_store_capacity_bytes"]) == 2
    pids = {labels["pid"] for labels, _ in samples["graphstore_store_used_bytes"]}
    assert pids == {str(p) for p in local_worker_pids()}
    for name in ("graphstore_objects", "graphstore_object_bytes",
                 "graphstore_spilled_bytes_total", "graphstore_tasks"):
        assert name in samples


def test_responses_stay_bounded_however_many_tasks_ran(cluster):
    base = cluster.dashboard_url
    assert len(graphstore.get([inc.remote(i) for i in range(1500)])) == 1500
    tasks = http(base + "/api/tasks?limit=1000&failures=100")
    assert len(tasks.json()["tasks"]) == 1000
    assert len(tasks.body) < 1024 * 1024
    graph = get_json(base + "/api/graph?limit=2000")
    assert len(graph["nodes"]) == 2000 and graph["graph"]["truncated"] is True
    assert http(base + "/api/graph?limit=2001").status == 400


def test_spilled_objects_show_on_every_view(fresh_cluster, tmp_path):
    """A 64 MiB store holding 96 MiB: what spilled is marked, counted and reported by the
    worker's heartbeat."""
    ctx = fresh_cluster(num_cpus=1, object_store_memory=64 * MB, spill_to=str(tmp_path))
    base = ctx.dashboard_url
    refs = [graphstore.put(np.full(8 * MB, i, dtype=np.uint8)) for i in range(12)]

    def spilled_objects():
        view = get_json(base + "/api/objects?limit=20")
        return [o for o in view["objects"] if o["spilled"]]

    spilled = wait_for(spilled_objects, timeout=30)
    assert spilled, get_json(base + "/api/objects?limit=20")
    assert any(w.startswith(f"spilled to {tmp_path}") for w in spilled[0]["where"])
    worker = wait_for(lambda: (lambda w: w if w["spilled_bytes"] >= 8 * MB else None)(
        get_json(base + "/api/workers")["workers"][0]), timeout=15)
    assert worker, get_json(base + "/api/workers")
    overview = get_json(base + "/api/overview")
    assert overview["objects"]["spilled_objects"] >= 1
    assert overview["objects"]["spilled_bytes"] >= 8 * MB
    assert overview["store"]["spilled_bytes_total"] >= 8 * MB
    samples = metric_samples(http(base + "/metrics").text)
    assert value(samples, "graphstore_spilled_bytes_total") >= 8 * MB
    graph = graphstore.task_graph(refs)
    assert any(graph.nodes[r.hex()]["spilled"] for r in refs)
    # Spilled objects still read back.
    assert int(graphstore.get(refs[0])[0]) == 0
    del refs


# -- bad input ----------------------------------------------------------------------------

def test_unknown_routes_are_404(cluster):
    base = cluster.dashboard_url
    for path in ("/nope", "/api/nope", "/workers/extra", "/api/overview/x",
                 "/static/nope.js", "/favicon.ico", "/api/graph.png"):
        reply = http(base + path)
        assert reply.status == 404, path
    # A path out of the static directory is refused, and nothing of the file is sent.
    for path in ("/static/../state.py", "/static/%2e%2e/state.py"):
        reply = http(base + path)
        assert reply.status in (403, 404) and b"import" not in reply.body, path
    body = http(base + "/api/nope").json()
    assert body["status"] == 404 and "nothing at /api/nope" in body["error"]
    assert "404" in http(base + "/nope").text


@pytest.mark.parametrize("query, message", [
    ("/api/tasks?limit=abc", "limit must be an integer from 1 to 1000; got 'abc'"),
    ("/api/tasks?limit=0", "limit must be an integer from 1 to 1000; got '0'"),
    ("/api/tasks?limit=1001", "limit must be an integer from 1 to 1000"),
    ("/api/tasks?limit=-5", "limit must be an integer"),
    ("/api/tasks?limit=1e3", "limit must be an integer"),
    ("/api/tasks?limit=", "limit must be an integer"),
    ("/api/tasks?state=running", "state must be one of waiting, queued, assigned, done, "
                                 "failed; got 'running'"),
    ("/api/tasks?limit=1&limit=2", "limit is given more than once"),
    ("/api/tasks?colour=red", "unknown query parameter 'colour'; this route takes limit, "
                              "failures, state"),
    ("/api/overview?limit=5", "unknown query parameter 'limit'; this route takes none"),
    ("/api/graph.svg?limit=501", "limit must be an integer from 1 to 500"),
    ("/api/objects?limit=%00", "limit must be an integer"),
    ("/metrics?x=1", "unknown query parameter 'x'"),
])
def test_malformed_query_parameters_are_400_with_a_message(cluster, query, message):
    reply = http(cluster.dashboard_url + query)
    assert reply.status == 400
    body = reply.json()
    assert body["status"] == 400 and message in body["error"], body


def test_pages_check_their_parameters_too(cluster):
    reply = http(cluster.dashboard_url + "/tasks?state=bogus")
    assert reply.status == 400 and "state must be one of" in reply.text
    assert reply.headers["content-type"].startswith("text/plain")
    assert http(cluster.dashboard_url + "/graph?limit=50").status == 200


def test_nothing_changes_the_cluster(cluster):
    base = cluster.dashboard_url
    before = get_json(base + "/api/overview")
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        for path in ("/", "/api/tasks", "/api/workers", "/metrics"):
            reply = http(base + path, method=method, data=b"{}")
            assert reply.status == 405, (method, path)
            assert "read-only" in reply.body.decode()
    after = get_json(base + "/api/overview")
    assert after["workers"] == before["workers"]
    assert after["tasks"]["submitted"] == before["tasks"]["submitted"]


def test_requests_for_other_host_names_are_refused(cluster):
    """Bound to loopback, the page answers only loopback names (no DNS rebinding)."""
    port = cluster.dashboard_url.rsplit(":", 1)[1]
    for host in ("evil.example", "evil.example:" + port, "127.0.0.1.nip.io"):
        reply = http(cluster.dashboard_url + "/api/overview", headers={"Host": host})
        assert reply.status == 403, host
        assert "bound to loopback" in reply.json()["error"]
    for host in ("localhost:" + port, "127.0.0.1:" + port, "LOCALHOST"):
        assert http(cluster.dashboard_url + "/api/overview",
                    headers={"Host": host}).status == 200, host


def test_scanned_views_never_stall_the_scheduler(cluster):
    """Pages polled hard while tasks run: tasks keep finishing, answers keep coming."""
    import threading
    base = cluster.dashboard_url
    stop = threading.Event()
    answered = []

    def poll():
        while not stop.is_set():
            for path in ("/api/overview", "/api/objects", "/metrics", "/api/graph.svg"):
                answered.append(http(base + path).status)

    pollers = [threading.Thread(target=poll) for _ in range(3)]
    for thread in pollers:
        thread.start()
    try:
        start = time.monotonic()
        assert graphstore.get([inc.remote(i) for i in range(300)]) == list(range(1, 301))
        elapsed = time.monotonic() - start
    finally:
        stop.set()
        for thread in pollers:
            thread.join()
    assert answered and set(answered) == {200}
    assert elapsed < 30


# -- settings and the command line ----------------------------------------------------------

def test_a_taken_port_falls_back_to_a_free_one_with_a_warning(fresh_cluster):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        ctx = fresh_cluster(num_cpus=1, dashboard_port=port)
        url = ctx.dashboard_url
        assert url and not url.endswith(f":{port}")
        assert get_json(url + "/api/overview")["workers"] == 1
        log = scheduler_log()
    assert f"port {port} is already in use" in log and "uses port" in log


def test_dashboard_port_zero_disables_the_page(fresh_cluster, capfd):
    ctx = fresh_cluster(num_cpus=1, dashboard_port=0)
    assert ctx.dashboard_url is None
    assert "status page" not in capfd.readouterr().err
    assert graphstore.get(inc.remote(1)) == 2
    assert "status page at" not in scheduler_log()


def test_dashboard_host_exposes_the_page_beyond_loopback(fresh_cluster):
    ctx = fresh_cluster(num_cpus=1, dashboard_host="0.0.0.0")
    port = ctx.dashboard_url.rsplit(":", 1)[1]
    assert ctx.dashboard_url == f"http://{socket.gethostname()}:{port}"
    reply = http(f"http://127.0.0.1:{port}/api/overview",
                 headers={"Host": f"cluster-head.example:{port}"})
    assert reply.status == 200 and reply.json()["workers"] == 1


def test_a_scheduler_started_by_hand_serves_its_page(cli_cluster):
    cli = cli_cluster(num_workers=1)

    def page_url():
        match = re.search(r"graphstore status page at (http://\S+)",
                          (cli.log_dir / "scheduler.log").read_text())
        return match.group(1) if match else None
    url = wait_for(page_url, timeout=30)
    assert url, (cli.log_dir / "scheduler.log").read_text()
    workers = wait_for(lambda: get_json(url + "/api/workers")["workers"], timeout=15)
    assert [w["pid"] for w in workers] == [cli.workers[0].pid]


def test_status_command_prints_workers_resources_tasks_and_store(cluster, tmp_path):
    assert graphstore.get(inc.remote(41)) == 42
    token = session.current_local_cluster().token
    env = {**os.environ, "GRAPHSTORE_TOKEN": token}
    env.pop("GRAPHSTORE_ADDRESS", None)
    done = subprocess.run([sys.executable, "-m", "graphstore.cli", "status", cluster.address],
                          capture_output=True, text=True, env=env, timeout=60, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert out.startswith(f"======== graphstore status: {cluster.address} ========")
    assert f"Status page: {cluster.dashboard_url}" in out
    assert "1 node(s), 2 worker(s)" in out
    assert re.search(r"^  0\.0/2\.0 CPU$", out, re.M), out
    assert re.search(r"waiting \d+ +queued \d+ +running \d+ +done \d+ +failed \d+", out)
    assert "Object store" in out and "stores:" in out
    for pid in local_worker_pids():
        assert re.search(rf"^ +{pid} ", out, re.M), out
    done = subprocess.run([sys.executable, "-m", "graphstore.cli", "status", cluster.address,
                           "--json"], capture_output=True, text=True, env=env, timeout=60,
                          cwd=tmp_path)
    report = json.loads(done.stdout)
    assert report["overview"]["workers"] == 2 and len(report["workers"]) == 2


def test_static_files_ship_with_the_package():
    from graphstore.scheduler import dashboard
    static = Path(dashboard.STATIC_DIR)
    assert (static / "dashboard.js").is_file() and (static / "dashboard.css").is_file()
    pyproject = (Path(__file__).parent.parent / "pyproject.toml").read_text()
    assert ('"graphstore.scheduler" = ["static/*.js", "static/*.css", "static/*.svg"]'
            in pyproject)
    assert (static / "favicon.svg").is_file()
