"""The core suite: startup, many small tasks and small objects.

Startup (``STARTUP``) can only be measured once per fresh process, so the
child measures it itself (``child.run_workloads``) and the parent starts
``--repeat`` children for it; the workloads here are ordinary timed runs.
"""

from __future__ import annotations

import os

from backends import Backend
from tasks import add, leaf, noop

from .base import Metric, Workload, now


def many_noop_tasks(b: Backend, n: int) -> dict[str, float]:
    f = b.remote(noop)
    t0 = now()
    refs = [b.submit(f) for _ in range(n)]
    results = b.get(refs)
    dt = now() - t0
    assert len(results) == n
    return {"noop_tasks_per_s": n / dt}


def sequential_round_trips(b: Backend, n: int) -> dict[str, float]:
    f = b.remote(noop)
    t0 = now()
    for _ in range(n):
        b.get(b.submit(f))
    dt = now() - t0
    return {"round_trips_per_s": n / dt}


def tree_reduction(b: Backend, leaves: int) -> dict[str, float]:
    assert leaves > 0 and leaves & (leaves - 1) == 0, "leaves must be a power of two"
    leaf_f, add_f = b.remote(leaf), b.remote(add)
    t0 = now()
    level = [b.submit(leaf_f, i) for i in range(leaves)]
    while len(level) > 1:
        # Refs are passed directly: the system resolves the dependency.
        level = [b.submit(add_f, level[i], level[i + 1])
                 for i in range(0, len(level), 2)]
    total = b.get(level[0])
    dt = now() - t0
    assert total == sum(leaf(i) for i in range(leaves)), total
    return {"dag_tasks_per_s": (2 * leaves - 1) / dt}


def small_put_get(b: Backend, n: int) -> dict[str, float]:
    data = [os.urandom(1024) for _ in range(n)]  # distinct 1 KiB objects
    t0 = now()
    refs = [b.put(d) for d in data]
    t_put = now() - t0
    t0 = now()
    out = [b.get(r) for r in refs]
    t_get = now() - t0
    assert out == data
    return {"puts_per_s": n / t_put, "gets_per_s": n / t_get}


STARTUP = Metric("startup_s", "Startup: init() to first task result", "s",
                 higher_is_better=False)

WORKLOADS: list[Workload] = [
    Workload("noop_tasks", many_noop_tasks, size=5000, warmup_size=200,
             metrics=(Metric("noop_tasks_per_s", "5,000 no-op tasks, submit all then get",
                             "tasks/s", True),),
             description="5,000 no-op tasks submitted, then all results fetched "
                         "with one get; 5,000 / (first submit to results)."),
    Workload("round_trips", sequential_round_trips, size=300, warmup_size=20,
             metrics=(Metric("round_trips_per_s", "300 sequential submit+get round trips",
                             "round trips/s", True),),
             description="300 times: submit one no-op task and get its result."),
    Workload("tree_reduction", tree_reduction, size=1024, warmup_size=64,
             metrics=(Metric("dag_tasks_per_s", "Binary-tree reduction, 1,024 leaves (2,047 tasks)",
                             "tasks/s", True),),
             description="1,024 leaf tasks each return a small int; internal nodes "
                         "add two refs passed directly as arguments; "
                         "2,047 / (first submit to root result)."),
    Workload("small_put_get", small_put_get, size=5000, warmup_size=200,
             metrics=(Metric("puts_per_s", "5,000 puts of distinct 1 KiB bytes", "puts/s", True),
                      Metric("gets_per_s", "5,000 gets of those refs, one at a time",
                             "gets/s", True)),
             description="5,000 puts of distinct os.urandom(1024) objects (Dask: "
                         "client.scatter, one at a time), then 5,000 single gets "
                         "of the same refs (Dask: future.result())."),
]
