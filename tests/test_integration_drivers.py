"""Several drivers on one cluster (issue 15.5): one driver's flood of queued tasks does not
hold back another driver's few, because the scheduler's ready queues serve drivers in
turn (``scheduler/placement.py``, ``ReadyQueue``). Real processes: a local cluster, a
flooding driver in a process of its own, this process as the second driver.
"""
from __future__ import annotations

import time

import graphstore

#: The flood: 20,000 tasks of 10 ms on 2 CPUs, 100 s of work queued at once.
FLOOD_TASKS = 20_000
TASK_SECONDS = 0.01


def test_a_flooding_driver_does_not_hold_back_another_driver(fresh_cluster, local,
                                                            run_driver):
    ctx = fresh_cluster(num_cpus=2)
    flood = run_driver.start(f"""
        import time, graphstore
        graphstore.init(address={ctx.address!r}, token={local().token!r})

        @graphstore.remote
        def flood(i):
            time.sleep({TASK_SECONDS})
            return i

        refs = [flood.remote(i) for i in range({FLOOD_TASKS})]
        # A request answered on the same connection: every submission before it has
        # reached the scheduler.
        graphstore.nodes()
        print("FLOODED", flush=True)
        time.sleep(600)
    """, ready_line="FLOODED", timeout=120)

    @graphstore.remote
    def short(i):
        time.sleep(TASK_SECONDS)
        return i * 2

    start = time.monotonic()
    refs = [short.remote(i) for i in range(100)]
    assert graphstore.get(refs, timeout=60) == [i * 2 for i in range(100)]
    elapsed = time.monotonic() - start
    # Behind the flood (first come, first served) they would wait 100 s; taken in turn
    # with it, their own 1 s of work on two CPUs, doubled, plus slack for a busy machine.
    assert elapsed < 20, f"100 short tasks took {elapsed:.1f} s behind a flood"
    assert flood.popen.poll() is None, flood.stderr()
