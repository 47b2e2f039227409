"""The scheduler's Prometheus metrics: a ``prometheus_client`` collector over its state.

Nothing is counted here: at scrape time ``ClusterCollector.collect`` reads the state
machine (``SchedulerState``), its task figures (``metrics.TaskMetrics``), the workers'
heartbeat figures and a ``LiveScan`` of live objects and tasks, and yields metric
families. ``exposition`` renders them with ``generate_latest`` on a registry of its own,
never the process-wide default one, so nothing else a process registers leaks into
``/metrics`` and the collector holds no reference beyond one scrape (as Dask's scheduler
collector reads the scheduler's state when scraped).

Per-worker series carry ``worker`` (the first 12 hex digits of its id), ``node`` and
``pid``; function series carry ``function`` (capped, see ``metrics.py``).
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily,
                                    HistogramMetricFamily, Metric)
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from graphstore.scheduler.entities import WorkerState
    from graphstore.scheduler.state import SchedulerState
    from graphstore.scheduler.status import LiveScan

#: The ``Content-Type`` of ``exposition``'s text.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
WORKER_LABELS = ["worker", "node", "pid"]


def worker_labels(worker: "WorkerState") -> list[str]:
    return [worker.id.hex()[:12], str(worker.node.id), str(worker.pid)]


def _number(value) -> float:
    """A heartbeat figure as a sample value: 0 for what is no finite, non-negative number
    (a worker may send nothing, or text; counters never go below zero)."""
    if type(value) in (int, float) and math.isfinite(value) and value >= 0:
        return float(value)
    return 0.0


class ClusterCollector(Collector):
    """Metric families of one scrape, built from ``state`` and ``scan``."""

    def __init__(self, state: "SchedulerState", scan: "LiveScan"):
        self.state = state
        self.scan = scan

    def collect(self) -> Iterator[Metric]:
        yield from self._cluster()
        yield from self._tasks()
        yield from self._objects()
        yield from self._workers()

    def _cluster(self) -> Iterator[Metric]:
        state = self.state
        yield GaugeMetricFamily("graphstore_workers", "Workers connected to the scheduler.",
                                value=len(state.workers))
        yield GaugeMetricFamily("graphstore_nodes", "Nodes (hosts) with at least one "
                                "worker.", value=len(state.nodes))
        yield GaugeMetricFamily("graphstore_drivers", "Drivers connected to the "
                                "scheduler.", value=len(state.drivers))
        actors = GaugeMetricFamily("graphstore_actors", "Actors by state (dead ones while "
                                   "the scheduler remembers them).", labels=["state"])
        by_state: dict[str, int] = {}
        for actor in list(state.actors.values()):
            by_state[actor.state] = by_state.get(actor.state, 0) + 1
        for name, count in sorted(by_state.items()):
            actors.add_metric([name], count)
        yield actors
        resources = GaugeMetricFamily("graphstore_resources", "Resources of the cluster's "
                                      "nodes: in total, and held by tasks and actors now.",
                                      labels=["resource", "kind"])
        total = state.cluster_resources()
        used = state.cluster_resources(used=True)
        names = sorted(n for n in total if not n.startswith("node:"))
        for name in names:
            resources.add_metric([name, "total"], total[name])
        for name in names:
            resources.add_metric([name, "used"], used.get(name, 0.0))
        yield resources
        yield GaugeMetricFamily("graphstore_graph_nodes", "Tasks and objects the task "
                                "graph holds.", value=len(state.graph))

    def _tasks(self) -> Iterator[Metric]:
        state, figures = self.state, self.state.task_metrics
        live = GaugeMetricFamily("graphstore_tasks", "Live tasks by state: waiting for "
                                 "arguments, queued for a worker, assigned to one.",
                                 labels=["state"])
        for name, count in self.scan.task_states.items():
            live.add_metric([name], count)
        yield live
        yield CounterMetricFamily("graphstore_tasks_submitted", "Tasks submitted since the "
                                  "scheduler started.", value=state.counts["submitted"])
        yield CounterMetricFamily("graphstore_task_retries", "Task runs retried (worker "
                                  "died, or retry_exceptions).",
                                  value=state.counts["retried"])
        finished = CounterMetricFamily(
            "graphstore_tasks_finished", "Tasks finished since the scheduler started, by "
            "function and outcome (failed includes tasks the scheduler failed: an argument "
            "failed, no node fits, the worker died).", labels=["function", "state"])
        durations = HistogramMetricFamily(
            "graphstore_task_duration_seconds", "How long task runs took on their "
            "workers, measured there, by function (failed and retried runs too).",
            labels=["function"])
        for function in figures.functions():
            counts = figures.finished.get(function)
            if counts is not None:
                finished.add_metric([function, "done"], counts["done"])
                finished.add_metric([function, "failed"], counts["failed"])
            histogram = figures.durations.get(function)
            if histogram is not None:
                durations.add_metric([function], histogram.cumulative(), histogram.sum)
        yield finished
        yield durations
        wait = figures.queue_wait
        queue_wait = HistogramMetricFamily(
            "graphstore_task_queue_wait_seconds", "How long ready tasks (every argument "
            "exists) waited for a worker.")
        queue_wait.add_metric([], wait.cumulative(), wait.sum)
        yield queue_wait
        yield CounterMetricFamily("graphstore_task_duration_invalid", "Task reports whose "
                                  "duration was not a valid number (not in the histogram).",
                                  value=figures.invalid_durations)

    def _objects(self) -> Iterator[Metric]:
        scan = self.scan
        objects = GaugeMetricFamily("graphstore_objects", "Live objects by state.",
                                    labels=["state"])
        for name, count in scan.object_states.items():
            objects.add_metric([name], count)
        yield objects
        where = GaugeMetricFamily("graphstore_object_bytes", "Bytes of live objects: "
                                  "inline in the scheduler, in stores, spilled.",
                                  labels=["where"])
        where.add_metric(["inline"], scan.inline_bytes)
        where.add_metric(["store"], scan.stored_bytes)
        where.add_metric(["spilled"], scan.spilled_bytes)
        yield where
        yield GaugeMetricFamily("graphstore_spilled_live_objects", "Live objects with a "
                                "spilled copy.", value=scan.spilled_objects)

    def _workers(self) -> Iterator[Metric]:
        workers = list(self.state.workers.values())

        def gauge(name: str, text: str, value) -> GaugeMetricFamily:
            family = GaugeMetricFamily(name, text, labels=WORKER_LABELS)
            for w in workers:
                family.add_metric(worker_labels(w), value(w))
            return family

        def counter(name: str, text: str, key: str) -> CounterMetricFamily:
            family = CounterMetricFamily(name, text, labels=WORKER_LABELS)
            for w in workers:
                family.add_metric(worker_labels(w), _number(w.metrics.get(key)))
            return family

        yield gauge("graphstore_store_used_bytes", "Bytes of objects in each worker's "
                    "store.",
                    lambda w: _number(w.metrics.get("store_used", w.stored_bytes)))
        yield gauge("graphstore_store_capacity_bytes", "Capacity of each worker's store.",
                    lambda w: w.store_capacity)
        yield gauge("graphstore_store_objects", "Objects in each worker's store.",
                    lambda w: _number(w.metrics.get("store_objects", len(w.objects))))
        arenas = GaugeMetricFamily(
            "graphstore_store_arena_bytes", "Bytes of each worker's store arenas, and of "
            "them allocated to objects (the difference is free space, fragmented or not).",
            labels=[*WORKER_LABELS, "kind"])
        for w in workers:
            arenas.add_metric([*worker_labels(w), "arenas"],
                              _number(w.metrics.get("store_arena_bytes")))
            arenas.add_metric([*worker_labels(w), "allocated"],
                              _number(w.metrics.get("store_arena_allocated")))
        yield arenas
        yield gauge("graphstore_running_tasks", "Tasks holding a slot on each worker.",
                    lambda w: w.running)
        yield gauge("graphstore_worker_rss_bytes", "Resident memory of each worker process "
                    "(not its store's shared memory).",
                    lambda w: _number(w.metrics.get("rss")))
        yield counter("graphstore_spilled_bytes", "Bytes each worker's store spilled since "
                      "the worker started.", "spilled_bytes")
        yield counter("graphstore_spilled_objects", "Objects each worker's store spilled "
                      "since the worker started.", "spilled_objects")
        yield counter("graphstore_restored_bytes", "Bytes each worker's store read back "
                      "from spill files since the worker started.", "restored_bytes")
        yield counter("graphstore_restored_objects", "Objects each worker's store read "
                      "back from spill files since the worker started.", "restored_objects")
        for unit, noun in (("bytes", "Bytes"), ("objects", "Objects")):
            family = CounterMetricFamily(
                f"graphstore_transferred_{unit}", f"{noun} each worker received from "
                f"workers on other hosts, and sent to other hosts (workers and drivers), "
                f"since it started.", labels=[*WORKER_LABELS, "direction"])
            for w in workers:
                for direction in ("received", "sent"):
                    family.add_metric([*worker_labels(w), direction], _number(
                        w.metrics.get(f"transfer_{direction}_{unit}")))
            yield family


def exposition(state: "SchedulerState", scan: "LiveScan") -> bytes:
    """The Prometheus text format of the cluster's figures now."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ClusterCollector(state, scan))
    return generate_latest(registry)
