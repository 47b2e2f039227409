"""Every workload, by suite, and the rows of each suite's table.

One module per suite declares its workload functions and ``WORKLOADS``:
``core_api`` (core), ``actors``, ``objects``, ``spill``; ``base`` holds
``Metric`` and ``Workload``.  ``WORKLOADS`` here is their concatenation in
suite order, which is the order the child runs them and the report lists
them.  To add a workload, write ``fn(backend, size) -> {metric: value}``
and a ``Workload(...)`` entry in its suite module's ``WORKLOADS``.
"""

from __future__ import annotations

from . import actors, core_api, objects, spill
from .base import GB, GS_ONLY, Metric, Workload, now
from .core_api import STARTUP
from .objects import DERIVED_METRICS, PUT_FIRST

__all__ = ["ALL_METRICS", "DERIVED_METRICS", "GB", "GS_ONLY", "Metric",
           "PER_PROCESS_SUITES", "PUT_FIRST", "STARTUP", "SUITES", "SUITE_TITLES",
           "WORKLOADS", "Workload", "now", "suite_metrics"]

SUITES = ("core", "actors", "objects", "spill")
SUITE_TITLES = {"core": "Core API", "actors": "Actors",
                "objects": "Large objects (200 MB float64 array)",
                "spill": "Spilling (2 GiB through a 512 MiB store)"}
# Suites measured partly once per fresh process (startup, first put): these
# need ``--repeat`` children per backend; the others need one.
PER_PROCESS_SUITES = ("core", "objects")

WORKLOADS: list[Workload] = (core_api.WORKLOADS + actors.WORKLOADS + objects.WORKLOADS
                             + spill.WORKLOADS)


def suite_metrics(suite: str) -> list[Metric]:
    """The rows of one suite's table, in order."""
    rows = [STARTUP] if suite == "core" else []
    for w in WORKLOADS:
        if w.suite == suite:
            rows += w.metrics
            if w.name == "large_put":
                rows.append(PUT_FIRST)
    if suite == "objects":
        rows += DERIVED_METRICS
    return rows


ALL_METRICS: list[Metric] = [m for s in SUITES for m in suite_metrics(s)]
