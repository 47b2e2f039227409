"""The scheduler's garbage-collection policy: full collections run from the event loop,
throttled to a share of the time."""
from __future__ import annotations

import asyncio
import gc

import pytest

from graphstore.core import gc_policy


@pytest.fixture
def restore_gc():
    thresholds = gc.get_threshold()
    yield
    gc.set_threshold(*thresholds)


def test_full_collections_run_from_the_loop_and_are_throttled(restore_gc):
    full = []

    def probe(phase, info):
        if phase == "stop" and info["generation"] == 2:
            full.append(info)
    gc.collect()                                        # start from nothing pending
    gc.callbacks.append(probe)

    async def scenario():
        gc_policy.throttle_full_collections(duty=0.5, check_every=0.02)
        assert gc.get_threshold()[2] >= 1_000_000      # never on its own
        await asyncio.sleep(0.1)
        assert full == []                               # nothing to collect for
        gc.collect(1)                                   # as after millions of objects
        await asyncio.sleep(0.1)
        assert len(full) == 1
        gc.collect(1)
        await asyncio.sleep(0.1)
        return len(full)

    try:
        assert asyncio.run(scenario()) == 2
    finally:
        gc.callbacks.remove(probe)
