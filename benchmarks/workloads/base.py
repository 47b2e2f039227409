"""What a workload is, and what every suite's workload functions share.

``Metric`` is one row of a suite's table; ``Workload`` is one function
``fn(backend, size) -> {metric key: value}`` with its sizes, suite, cluster
shape and the metrics it returns.  Each suite module (``core_api``,
``actors``, ``objects``, ``spill``) declares its workloads with these; the
child runs them (``child.py``) and the report renders their metrics
(``report.py``).  Only the work itself is inside the timer (``now``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

from backends import Backend

# GB/s in the benchmarks means 10^9 bytes per second.
GB = 1e9
# ``Metric.only`` of the metrics that exist on graphstore alone.
GS_ONLY = ("graphstore",)


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    unit: str
    higher_is_better: bool
    # Backends where the concept exists; the others show N/A.  None: all.
    only: tuple[str, ...] | None = None
    # (numerator key, denominator key): computed by the parent from the two
    # medians of the same backend instead of being measured.
    derived: tuple[str, str] | None = None

    def applies(self, backend: str) -> bool:
        return self.only is None or backend in self.only


@dataclass(frozen=True)
class Workload:
    name: str
    fn: Callable[[Backend, int], dict[str, float]]
    size: int          # size of each timed run
    warmup_size: int   # size of the untimed warm-up run
    metrics: tuple[Metric, ...]
    description: str
    suite: str = "core"
    # "default": the backend's normal local cluster; "two_hosts": runs after
    # the others, on the cluster made by ``Backend.init_two_hosts``; "spill":
    # runs last, restarting the backend itself (``Backend.init_spilling``).
    cluster: str = "default"
    # Untimed warm-up runs (at warmup_size) before the timed ones.
    warmups: int = 1
    # Untimed pause before each timed run, so that asynchronous frees of the
    # previous run's objects (Ray, Dask) have completed, as they would in a
    # program doing other work between two large puts.
    settle_s: float = 0.0

    def applies(self, backend: str) -> bool:
        """Whether the workload runs on ``backend``: some of its metrics exist
        there (the others are N/A for it)."""
        return any(m.applies(backend) for m in self.metrics)


def now() -> float:
    return time.perf_counter()
