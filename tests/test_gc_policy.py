"""The scheduler's garbage-collection policy: full collections run from the event loop,
after enough allocation, throttled to a share of the time. In a fresh interpreter: the
test process's own threads (clusters of earlier tests) would allocate meanwhile."""
from __future__ import annotations

import subprocess
import sys
import textwrap

SCENARIO = textwrap.dedent("""
    import asyncio, gc
    from graphstore.core import gc_policy

    full = []
    gc.collect()                                  # start from nothing pending
    gc.callbacks.append(lambda phase, info: phase == "stop" and info["generation"] == 2
                        and full.append(info))

    async def scenario():
        gc_policy.throttle_full_collections(duty=0.5, check_every=0.02)
        assert gc.get_threshold()[2] >= 1_000_000, gc.get_threshold()   # never alone
        await asyncio.sleep(0.1)
        assert full == [], full                   # nothing to collect for
        gc.collect(1)                             # as after millions of allocations
        await asyncio.sleep(0.1)
        assert len(full) == 1, full
        gc.collect(1)
        await asyncio.sleep(0.1)
        assert len(full) == 2, full
    asyncio.run(scenario())
    print("ok")
""")


def test_full_collections_run_from_the_loop_after_enough_allocation():
    run = subprocess.run([sys.executable, "-c", SCENARIO], capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr


def test_collector_paused_nests_across_threads_and_restores_the_setting():
    import gc
    import threading
    from graphstore.core.gc_policy import collector_paused
    assert gc.isenabled()
    inside, release = threading.Event(), threading.Event()

    def other():
        with collector_paused():
            inside.set()
            release.wait(10)

    thread = threading.Thread(target=other)
    with collector_paused():
        thread.start()
        assert inside.wait(10) and not gc.isenabled()
    assert not gc.isenabled()          # the other thread is still inside
    release.set()
    thread.join(10)
    assert gc.isenabled()
    gc.disable()                       # off before: stays off after
    try:
        with collector_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


DRIVER = textwrap.dedent("""
    import gc, sys, time
    import graphstore
    from graphstore.core import gc_policy

    gc.set_threshold(1234, 11, 12)                  # the process's own setting
    full = []
    gc.callbacks.append(lambda phase, info: phase == "stop" and info["generation"] == 2
                        and full.append(info))
    throttle = sys.argv[1] == "on"
    graphstore.init(num_cpus=1, throttle_driver_gc=throttle)
    during = gc.get_threshold()
    if throttle:
        assert during[0] == 100_000 and during[2] >= 1_000_000, during
        # A full collection runs from graphstore's I/O thread once enough allocation
        # happened (here: one middle-generation collection, as after millions).
        full.clear()
        gc.collect(1)
        deadline = time.monotonic() + 10
        while not full and time.monotonic() < deadline:
            time.sleep(0.05)
        assert full, "no full collection ran from the loop"
    else:
        assert during == (1234, 11, 12), during
    graphstore.shutdown()
    assert gc.get_threshold() == (1234, 11, 12), gc.get_threshold()
    print("ok")
""")


def test_a_driver_throttles_full_collections_while_connected_and_restores_its_own():
    for mode in ("on", "off"):
        run = subprocess.run([sys.executable, "-c", DRIVER, mode], capture_output=True,
                             text=True, timeout=120)
        assert run.returncode == 0 and run.stdout.strip().endswith("ok"), (mode, run.stderr)
