"""The scheduler's task figures (``scheduler/metrics.py``) and its Prometheus collector
(``scheduler/prometheus.py``) on the state machine alone: bucket boundaries, the cap on
function names, bad durations from the network, and what a scrape says about a cluster
driven through ``SchedulerState``, read back with ``prometheus_client``'s own parser."""
from __future__ import annotations

import math

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from graphstore.core import protocol as msg
from graphstore.scheduler import prometheus
from graphstore.scheduler.metrics import (DURATION_BUCKETS, MAX_NAME_CHARS, OTHER,
                                          Histogram, TaskMetrics)

from test_scheduler_state import MB, Harness
from test_scheduler_status import busy_cluster, scan_of


# -- reading /metrics (shared with the integration tests) -------------------------------

def metric_samples(text: str) -> dict[str, list[tuple[dict, float]]]:
    """Sample name (``..._total``, ``..._bucket``, ...) -> [(labels, value)], parsed by
    ``prometheus_client``; every family must be graphstore's and appear once."""
    out: dict[str, list[tuple[dict, float]]] = {}
    seen = set()
    for family in text_string_to_metric_families(text):
        assert family.name.startswith("graphstore_"), family.name
        assert family.name not in seen, f"family {family.name} twice"
        seen.add(family.name)
        for sample in family.samples:
            out.setdefault(sample.name, []).append((sample.labels, sample.value))
    return out


def value(samples: dict, name: str, **labels) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    assert name in samples, f"no samples of {name}; have {sorted(samples)}"
    want = {k: str(v) for k, v in labels.items()}
    return sum(v for have, v in samples[name]
               if all(have.get(k) == x for k, x in want.items()))


def scrape(h: Harness) -> dict:
    return metric_samples(prometheus.exposition(h.s, scan_of(h)).decode())


# -- the histogram ------------------------------------------------------------------------

def test_a_value_on_a_bound_counts_in_that_bucket_as_prometheus_le_says():
    histogram = Histogram((0.1, 1.0, 10.0))
    for v in (0.0, 0.1, 0.1000001, 1.0, 5, 10.0, 11.0, 1e9):
        assert histogram.observe(v)
    assert histogram.cumulative() == [("0.1", 2), ("1.0", 4), ("10.0", 6), ("+Inf", 8)]
    assert histogram.count == 8
    assert histogram.sum == pytest.approx(0.1 + 0.1000001 + 1.0 + 5 + 10.0 + 11.0 + 1e9)


@pytest.mark.parametrize("bad", [-0.001, math.nan, math.inf, "1.5", None, True, [1.0]])
def test_a_duration_that_is_no_valid_number_is_refused_not_counted(bad):
    histogram = Histogram(DURATION_BUCKETS)
    assert histogram.observe(bad) is False
    assert histogram.count == 0 and histogram.sum == 0.0
    assert histogram.cumulative()[-1] == ("+Inf", 0)


def test_bucket_bounds_must_increase():
    for bounds in ((), (1.0, 0.5), (1.0, 1.0)):
        with pytest.raises(ValueError, match="increasing"):
            Histogram(bounds)


# -- task figures -------------------------------------------------------------------------

def test_runs_and_outcomes_are_kept_by_function():
    figures = TaskMetrics()
    figures.task_ran("load", 0.002)
    figures.task_ran("load", 0.3)
    figures.task_finished("load", failed=False)
    figures.task_finished("load", failed=False)
    figures.task_ran("fit", 2.0)
    figures.task_finished("fit", failed=True)
    figures.task_finished("never-ran", failed=True)     # failed by the scheduler
    assert figures.finished == {"load": {"done": 2, "failed": 0},
                                "fit": {"done": 0, "failed": 1},
                                "never-ran": {"done": 0, "failed": 1}}
    assert figures.durations["load"].count == 2
    assert figures.durations["load"].sum == pytest.approx(0.302)
    assert "never-ran" not in figures.durations
    assert list(figures.functions()) == ["load", "fit", "never-ran"]


def test_names_past_the_cap_share_the_other_series():
    figures = TaskMetrics(max_functions=3)
    for i in range(10):
        figures.task_ran(f"f{i}", 0.01)
        figures.task_finished(f"f{i}", failed=False)
    figures.task_finished("f1", failed=True)            # a known name keeps its own
    assert set(figures.finished) == {"f0", "f1", "f2", OTHER}
    assert figures.finished[OTHER] == {"done": 7, "failed": 0}
    assert figures.finished["f1"] == {"done": 1, "failed": 1}
    assert figures.durations[OTHER].count == 7
    assert sum(h.count for h in figures.durations.values()) == 10


def test_long_and_odd_names_are_bounded():
    figures = TaskMetrics(max_functions=5)
    figures.task_finished("x" * 10_000, failed=False)
    figures.task_finished(None, failed=False)            # not text: counted, as OTHER
    (long_name,) = [n for n in figures.finished if n.startswith("x")]
    assert len(long_name) == MAX_NAME_CHARS
    assert figures.finished[OTHER]["done"] == 1


def test_bad_durations_are_counted_apart():
    figures = TaskMetrics()
    figures.task_ran("f", "soon")
    figures.task_ran("f", -1)
    figures.task_ran("f", 0.5)
    assert figures.invalid_durations == 2
    assert figures.durations["f"].count == 1


def test_the_cap_must_be_positive():
    with pytest.raises(ValueError, match="max_functions"):
        TaskMetrics(max_functions=0)


# -- the state machine feeds them ---------------------------------------------------------

def test_the_scheduler_counts_each_finished_task_once_by_its_function():
    h = Harness()
    w = h.worker("w1", cpus=4)
    ok = [h.submit(name="ok")[0] for _ in range(3)]
    bad, (bad_ret,) = h.submit(name="bad")
    dependent, _ = h.submit(deps=[bad_ret], name="after-bad")   # waits, then fails
    h.s.schedule()
    for t in ok:
        h.done(w, t, duration=0.02)
    h.fail(w, bad, duration=0.3)
    figures = h.s.task_metrics
    assert figures.finished["ok"] == {"done": 3, "failed": 0}
    assert figures.finished["bad"] == {"done": 0, "failed": 1}
    assert figures.finished["after-bad"] == {"done": 0, "failed": 1}
    assert figures.durations["ok"].count == 3
    assert figures.durations["ok"].cumulative()[:4] == [
        ("0.001", 0), ("0.005", 0), ("0.01", 0), ("0.05", 3)]
    assert figures.durations["bad"].sum == pytest.approx(0.3)
    assert "after-bad" not in figures.durations          # it never ran
    assert figures.queue_wait.count == 4                  # the four that were assigned
    assert sum(c["done"] + c["failed"] for c in figures.finished.values()) == \
        h.s.counts["done"] + h.s.counts["failed"]


def test_a_retried_run_is_a_run_but_not_a_finished_task():
    h = Harness()
    w = h.worker("w1")
    t, _ = h.submit(name="flaky", retries=1)
    h.s.schedule()
    h.s.task_failed(w, msg.TaskFailed(t, [b"x"], 0.1, "ValueError", retriable=True))
    h.s.schedule()
    h.done(w, t, duration=0.2)
    figures = h.s.task_metrics
    assert figures.durations["flaky"].count == 2
    assert figures.finished["flaky"] == {"done": 1, "failed": 0}
    assert figures.queue_wait.count == 2                  # queued twice, assigned twice


def test_a_task_queued_behind_a_busy_worker_waits_in_the_histogram():
    h = Harness()
    w = h.worker("w1", cpus=1)
    first, _ = h.submit(name="first")
    second, _ = h.submit(name="second")
    h.s.schedule()
    h.s.tasks[second].queued_at -= 7.0      # as if it had been ready for 7 s already
    h.done(w, first)
    h.s.schedule()
    assert h.s.tasks[second].state == "assigned"
    # The first waited for nothing, the second about 7 s.
    buckets = dict(h.s.task_metrics.queue_wait.cumulative())
    assert buckets["5.0"] == 1 and buckets["10.0"] == 2


def test_a_report_with_a_duration_that_is_no_number_still_finishes_its_task():
    h = Harness()
    w = h.worker("w1")
    t, (ret,) = h.submit(name="odd")
    h.s.schedule()
    h.done(w, t, duration="soon")          # what a buggy or hostile peer might send
    assert h.s.objects[ret].state == "ready"
    figures = h.s.task_metrics
    assert figures.finished["odd"] == {"done": 1, "failed": 0}
    assert figures.invalid_durations == 1 and figures.durations["odd"].count == 0
    assert h.s.function_durations == {}    # nothing learned from it
    t2, _ = h.submit(name="odd")           # the scheduler still places the next one
    h.s.schedule()
    h.done(w, t2, duration=0.25)
    assert figures.durations["odd"].count == 1


# -- the collector ------------------------------------------------------------------------

def test_a_scrape_reports_the_cluster_in_prometheus_text():
    h, ids = busy_cluster()
    samples = scrape(h)
    assert value(samples, "graphstore_workers") == 2
    assert value(samples, "graphstore_nodes") == 2
    assert value(samples, "graphstore_tasks", state="assigned") == 3
    assert value(samples, "graphstore_tasks", state="waiting") == 1
    assert value(samples, "graphstore_tasks_finished_total", state="failed") == 1
    assert value(samples, "graphstore_tasks_finished_total", function="finished",
                 state="done") == 1
    assert value(samples, "graphstore_task_duration_seconds_count", function="broken") == 1
    assert value(samples, "graphstore_object_bytes", where="spilled") == 3 * MB
    assert value(samples, "graphstore_resources", resource="CPU", kind="used") == 3
    used = {labels["node"]: v for labels, v in samples["graphstore_store_used_bytes"]}
    assert used == {"node-a": 9 * MB, "node-b": 0}
    assert value(samples, "graphstore_spilled_bytes_total") == 3 * MB
    assert value(samples, "graphstore_restored_bytes_total", node="node-b") == MB
    worker_ids = {labels["worker"]
                  for labels, _ in samples["graphstore_store_capacity_bytes"]}
    assert worker_ids == {ids["w1"].hex()[:12], ids["w2"].hex()[:12]}


def test_histogram_buckets_are_cumulative_and_end_with_the_count():
    h = Harness()
    w = h.worker("w1", cpus=5)
    durations = [0.0005, 0.003, 0.003, 0.7, 4000.0]
    tasks = [h.submit(name="work")[0] for _ in durations]
    h.s.schedule()
    for t, d in zip(tasks, durations):
        h.done(w, t, duration=d)
    samples = scrape(h)
    buckets = {labels["le"]: v
               for labels, v in samples["graphstore_task_duration_seconds_bucket"]
               if labels["function"] == "work"}
    assert buckets["0.001"] == 1 and buckets["0.005"] == 3 and buckets["1.0"] == 4
    assert buckets["1800.0"] == 4 and buckets["+Inf"] == 5
    assert value(samples, "graphstore_task_duration_seconds_count", function="work") == 5
    assert value(samples, "graphstore_task_duration_seconds_sum", function="work") == \
        pytest.approx(sum(durations))
    assert value(samples, "graphstore_task_queue_wait_seconds_count") == 5


def test_labels_from_the_network_are_escaped_by_the_client_library():
    h = Harness()
    odd = 'odd "node"\\name\nx'
    h.worker("w1", node=odd)
    t, _ = h.submit(name='fn "quoted"\nline')
    h.s.schedule()
    h.done(b"w1".ljust(16, b"."), t)
    samples = scrape(h)
    (labels, _), = samples["graphstore_store_capacity_bytes"]
    assert labels["node"] == odd
    assert value(samples, "graphstore_tasks_finished_total", function='fn "quoted"\nline',
                 state="done") == 1


def test_heartbeat_figures_that_are_not_numbers_read_as_zero():
    h = Harness()
    w = h.worker("w1")
    h.s.worker_heartbeat(w, {"spilled_bytes": "lots", "transfer_received_bytes": None,
                             "transfer_sent_bytes": 12, "store_used": 5})
    samples = scrape(h)
    assert value(samples, "graphstore_spilled_bytes_total") == 0
    assert value(samples, "graphstore_transferred_bytes_total", direction="received") == 0
    assert value(samples, "graphstore_transferred_bytes_total", direction="sent") == 12
    assert value(samples, "graphstore_store_used_bytes") == 5


def test_scrapes_never_touch_the_default_registry():
    before = {m.name for m in REGISTRY.collect()}
    scrape(busy_cluster()[0])
    after = {m.name for m in REGISTRY.collect()}
    assert not any(name.startswith("graphstore_") for name in after)
    assert before == after
