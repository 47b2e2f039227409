"""The actors suite: calls on one actor, pipelined and one at a time.

One actor (a process of its own in graphstore and Ray, a Dask actor in a
worker), a ``tasks.BenchCounter``, created untimed before each run.  The
report checks the targets of issue 4 (``targets.ACTOR_TARGETS``).
"""

from __future__ import annotations

import time

from backends import Backend
from tasks import BenchCounter

from .base import Metric, Workload, now


# Untimed pause after making an actor: both graphstore and Ray start a process for the
# next actor in the background, which would compete for this machine's 2 cores.
ACTOR_SETTLE_S = 1.5


def actor_calls(b: Backend, n: int) -> dict[str, float]:
    actor = b.make_actor(BenchCounter)
    start = b.get_calls([b.call(actor, "inc")])[0]      # untimed: the actor is up
    time.sleep(ACTOR_SETTLE_S)
    t0 = now()
    refs = [b.call(actor, "inc") for _ in range(n)]
    results = b.get_calls(refs)
    dt = now() - t0
    expected = list(range(start + 1, start + n + 1))
    if b.name == "dask":      # Dask runs an actor's calls on a thread pool, in any order
        results = sorted(results)
    assert results == expected, "calls ran out of order"
    return {"actor_calls_per_s": n / dt}


def actor_round_trips(b: Backend, n: int) -> dict[str, float]:
    actor = b.make_actor(BenchCounter)
    b.get_calls([b.call(actor, "inc")])
    time.sleep(ACTOR_SETTLE_S)
    t0 = now()
    for _ in range(n):
        b.get_calls([b.call(actor, "inc")])
    dt = now() - t0
    return {"actor_round_trips_per_s": n / dt}


WORKLOADS: list[Workload] = [
    Workload("actor_calls", actor_calls, size=5000, warmup_size=200, suite="actors",
             metrics=(Metric("actor_calls_per_s", "5,000 calls on one actor, submitted "
                             "then gathered", "calls/s", True),),
             description="5,000 calls of a counter method on one actor submitted, then "
                         "all results fetched (checked in order); 5,000 / elapsed."),
    Workload("actor_round_trips", actor_round_trips, size=300, warmup_size=20,
             suite="actors",
             metrics=(Metric("actor_round_trips_per_s", "300 sequential call+get round "
                             "trips on one actor", "round trips/s", True),),
             description="300 times: call the actor's counter method and get its result."),
]
