"""/metrics on real clusters, read over HTTP and parsed with ``prometheus_client``'s parser:
the counts match what ran (tasks by function, failures, duration histograms), an object
moved between two workers on different nodes shows as bytes transferred, a store too
small for its objects shows bytes spilled, every worker has its store gauges, and a peer
that sends nonsense in its heartbeat leaves the page (and the scheduler) serving. The
Grafana dashboard in docs/ reads only metrics the real page serves, and
examples/metrics.py runs."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

import graphstore
from graphstore import session
from graphstore.core import protocol as msg
from graphstore.core.object_ref import new_id
from helpers import run_example, wait_for

from test_dashboard import http
from test_integration_lifecycle import _batch, _handshake, _read_messages
from test_scheduler_metrics import metric_samples, value

MB = 1024 * 1024
STORE = 64 * MB
DASHBOARD = Path(__file__).resolve().parent.parent / "docs" / "grafana-dashboard.json"
METRIC_NAME = re.compile(r"\bgraphstore_[a-zA-Z0-9_]+")


@graphstore.remote
def square(x):
    return x * x


@graphstore.remote
def boom(x):
    raise ValueError(f"boom {x}")


@graphstore.remote
def make_block(n):
    return np.full(n, 7, dtype=np.uint8)


@graphstore.remote
def nbytes_of(block):
    return int(block.nbytes)


@graphstore.remote
class Tally:
    def __init__(self):
        self.total = 0

    def add(self, x):
        self.total += x
        return self.total


def on(node: str) -> dict:
    return {"resources": {f"node:{node}": 0.001}}


def scrape(base: str) -> dict:
    reply = http(base + "/metrics")
    assert reply.status == 200, reply.body[:500]
    assert reply.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    return metric_samples(reply.text)


def test_metrics_count_what_ran_moved_and_spilled(fresh_cluster, tmp_path):
    ctx = fresh_cluster(num_cpus=2, worker_node_ids=["near", "far"], node_id="near",
                        object_store_memory=STORE, spill_to=str(tmp_path))
    base = ctx.dashboard_url
    assert graphstore.get([square.remote(i) for i in range(6)]) == [i * i for i in range(6)]
    failing = [boom.remote(i) for i in range(3)]
    for ref in failing:
        with pytest.raises(ValueError, match="boom"):
            graphstore.get(ref)
    # An 8 MiB result made on one node, read by a task on the other: one transfer.
    block = make_block.options(**on("near")).remote(8 * MB)
    assert graphstore.get(nbytes_of.options(**on("far")).remote(block)) == 8 * MB
    tally = Tally.remote()
    assert graphstore.get(tally.add.remote(2)) == 2
    # 96 MiB of puts into the 64 MiB store on the driver's node: some of it spills.
    held = [graphstore.put(np.full(8 * MB, i, dtype=np.uint8)) for i in range(12)]

    workers = session.get_runtime().cluster_info["workers"]
    node_of = {worker_id.hex()[:12]: node for worker_id, node, _ in workers}
    assert sorted(node_of.values()) == ["far", "near"]

    def settled():
        samples = scrape(base)
        moved = value(samples, "graphstore_transferred_bytes_total", direction="received",
                      node="far")
        spilled = value(samples, "graphstore_spilled_bytes_total", node="near")
        return samples if moved >= 8 * MB and spilled >= 8 * MB else None

    samples = wait_for(settled, timeout=30, interval=0.2)   # heartbeats come each second
    assert samples, scrape(base)

    # Tasks by function and outcome match what ran.
    finished = {(labels["function"], labels["state"]): v
                for labels, v in samples["graphstore_tasks_finished_total"]}
    assert finished[("square", "done")] == 6 and finished[("square", "failed")] == 0
    assert finished[("boom", "done")] == 0 and finished[("boom", "failed")] == 3
    assert finished[("make_block", "done")] == 1 and finished[("nbytes_of", "done")] == 1
    # The duration histogram counts every finished run of each function.
    for function, runs in (("square", 6), ("boom", 3), ("make_block", 1), ("nbytes_of", 1)):
        assert value(samples, "graphstore_task_duration_seconds_count",
                     function=function) == runs
        assert value(samples, "graphstore_task_duration_seconds_bucket", function=function,
                     le="+Inf") == runs
        assert value(samples, "graphstore_task_duration_seconds_sum", function=function) > 0
    assert value(samples, "graphstore_task_queue_wait_seconds_count") >= 11
    assert value(samples, "graphstore_tasks_submitted_total") >= 11

    # The transfer: received on the far worker, sent by the near one.
    assert value(samples, "graphstore_transferred_bytes_total", direction="received",
                 node="far") >= 8 * MB
    assert value(samples, "graphstore_transferred_bytes_total", direction="sent",
                 node="near") >= 8 * MB
    assert value(samples, "graphstore_transferred_objects_total", direction="received",
                 node="far") >= 1
    # Spilling, on the near worker's store.
    assert value(samples, "graphstore_spilled_objects_total", node="near") >= 1
    assert value(samples, "graphstore_spilled_live_objects") >= 1
    assert value(samples, "graphstore_object_bytes", where="spilled") >= 8 * MB

    # Store gauges for every worker, labelled with its id and node.
    for name in ("graphstore_store_used_bytes", "graphstore_store_capacity_bytes",
                 "graphstore_store_objects", "graphstore_running_tasks"):
        labelled = {labels["worker"]: labels["node"] for labels, _ in samples[name]}
        assert labelled == node_of, name
    capacity = {labels["worker"]: v
                for labels, v in samples["graphstore_store_capacity_bytes"]}
    assert set(capacity.values()) == {float(STORE)}
    used = {labels["node"]: v for labels, v in samples["graphstore_store_used_bytes"]}
    assert 0 < used["near"] <= STORE

    # Workers, actors, objects.
    assert value(samples, "graphstore_workers") == 2
    assert value(samples, "graphstore_nodes") == 2
    assert value(samples, "graphstore_actors", state="alive") == 1
    assert value(samples, "graphstore_objects", state="ready") >= 12
    del held, block, failing


def test_a_peer_sending_nonsense_figures_leaves_metrics_serving(fresh_cluster, local):
    ctx = fresh_cluster(num_cpus=1)
    sock, status = _handshake(ctx.address, local().token.encode())
    assert status == 0
    worker_id = new_id()
    try:
        # A zero-CPU worker (no task is ever placed on it) whose heartbeat is nonsense.
        sock.sendall(_batch(msg.Request(1, msg.RegisterWorker(
            worker_id, os.getpid(), "raw", "raw-node", 0.0, {}, "", 1000))))
        sock.settimeout(10)
        replies = []
        while not replies:
            replies = [m for m in _read_messages(sock) if isinstance(m, msg.Reply)]
        assert replies[0].error is None, replies[0].error
        sock.sendall(_batch(msg.WorkerHeartbeat({
            "store_used": "plenty", "spilled_bytes": -5, "restored_bytes": float("nan"),
            "transfer_received_bytes": [1, 2], "transfer_sent_bytes": 2 ** 62,
            "store_objects": None})))
        raw = worker_id.hex()[:12]

        def raw_worker_seen():
            samples = scrape(ctx.dashboard_url)
            workers = {labels["worker"]
                       for labels, _ in samples["graphstore_spilled_bytes_total"]}
            return samples if raw in workers else None

        samples = wait_for(raw_worker_seen, timeout=15)
        assert samples, scrape(ctx.dashboard_url)
        assert value(samples, "graphstore_spilled_bytes_total", worker=raw) == 0
        assert value(samples, "graphstore_restored_bytes_total", worker=raw) == 0
        assert value(samples, "graphstore_transferred_bytes_total", worker=raw,
                     direction="received") == 0
        assert value(samples, "graphstore_transferred_bytes_total", worker=raw,
                     direction="sent") == float(2 ** 62)
        assert value(samples, "graphstore_store_capacity_bytes", worker=raw) == 1000
        assert value(samples, "graphstore_workers") == 2
    finally:
        sock.close()
    assert local().scheduler.poll() is None
    assert graphstore.get(square.remote(3), timeout=30) == 9
    assert value(scrape(ctx.dashboard_url), "graphstore_tasks_finished_total",
                 function="square", state="done") == 1


def test_the_grafana_dashboard_reads_only_metrics_the_scheduler_serves(fresh_cluster):
    """Every PromQL query of docs/grafana-dashboard.json names series that a real
    /metrics has, so the dashboard cannot drift from the metrics."""
    board = json.loads(DASHBOARD.read_text())
    assert [i["name"] for i in board["__inputs"]] == ["DS_PROMETHEUS"]
    assert board["__inputs"][0]["pluginId"] == "prometheus"
    assert board["schemaVersion"] >= 38 and board["uid"] and board["title"]
    ctx = fresh_cluster(num_cpus=1)
    assert graphstore.get(square.remote(2)) == 4
    # Series, and families declared with none yet (no actor ran: graphstore_actors).
    text = http(ctx.dashboard_url + "/metrics").text
    served = set(metric_samples(text))
    served.update(f.name for f in text_string_to_metric_families(text))

    queries = []
    ids = set()
    for panel in board["panels"]:
        assert panel["id"] not in ids, panel["id"]
        ids.add(panel["id"])
        assert set(panel["gridPos"]) == {"h", "w", "x", "y"}, panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
        assert panel["targets"], panel["title"]
        for query in panel["targets"]:
            assert query["datasource"]["uid"] == "${DS_PROMETHEUS}"
            queries.append((panel["title"], query["expr"]))
    for variable in board["templating"]["list"]:
        assert variable["datasource"]["uid"] == "${DS_PROMETHEUS}"
        queries.append((f"${variable['name']}", variable["query"]["query"]))
    for where, expr in queries:
        names = METRIC_NAME.findall(expr)
        assert names, f"{where}: {expr!r} reads no graphstore metric"
        missing = sorted(set(names) - served)
        assert not missing, f"{where}: {expr!r} reads {missing}, which /metrics lacks"

    # The views the documentation promises.
    exprs = " ".join(expr for _, expr in queries)
    for needed in ("rate(graphstore_tasks_finished_total",
                   "histogram_quantile(0.95, sum by (le, function) "
                   "(rate(graphstore_task_duration_seconds_bucket",
                   "rate(graphstore_task_queue_wait_seconds_bucket",
                   "rate(graphstore_transferred_bytes_total",
                   "rate(graphstore_spilled_bytes_total",
                   "graphstore_store_used_bytes / graphstore_store_capacity_bytes"):
        assert needed in exprs, needed


def test_the_metrics_example_runs(run_driver):
    run = run_example(run_driver, "metrics.py")
    out = run.stdout
    assert re.search(r"^metrics at http://127\.0\.0\.1:\d+/metrics$", out, re.M), out
    assert re.search(r"^  simulate: 8 done, 0 failed, mean run \d+\.\d ms$", out, re.M), out
    assert re.search(r"^  validate: 6 done, 2 failed, ", out, re.M), out
    assert re.search(r"^  make_block: 3 done, 0 failed, ", out, re.M), out
    assert re.search(r"^queue wait: 19 tasks, mean ", out, re.M), out
    stores = re.findall(r"^  worker [0-9a-f]{12} on \S+: ([\d.]+) MiB of \d+ MiB$", out,
                        re.M)
    assert len(stores) == 2 and sum(map(float, stores)) >= 12.0, out
