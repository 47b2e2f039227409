"""The status views (``scheduler/status.py``) and the live scan (``snapshots.py``), on the
state machine alone: what each view says, and that every list is capped. (What /metrics
says of the same state is in test_scheduler_metrics.py.)"""
from __future__ import annotations

import asyncio

from graphstore.core import protocol as msg
from graphstore.scheduler import status
from graphstore.scheduler.snapshots import SLICE, LiveScans
from graphstore.scheduler.status import LiveScan

from test_scheduler_state import MB, Harness


def scan_of(h: Harness) -> LiveScan:
    scan = LiveScan()
    scan.add_objects(h.s.objects.values())
    scan.add_tasks(h.s.tasks.values())
    return scan


def busy_cluster() -> tuple[Harness, dict]:
    """Two workers on two nodes; tasks in every state; inline, stored, spilled objects."""
    h = Harness()
    w1 = h.worker("w1", cpus=2, node="node-a", capacity=100 * MB)
    w2 = h.worker("w2", cpus=1, node="node-b", capacity=50 * MB)
    small = h.put()
    big = h.put_stored(w1, 8 * MB)
    spilled = h.put_stored(w2, 3 * MB)
    h.s.objects_spilled(w2, msg.ObjectsSpilled("/spill/w2-1", [[spilled, 0, 3 * MB]]))
    done, _ = h.submit(name="finished")
    failed, _ = h.submit(name="broken")
    h.s.schedule()
    h.done(h.s.tasks[done].worker.id, done)
    traceback = "Traceback (most recent call last):\n" + "  frame\n" * 3000 + "ValueError: deep"
    h.s.task_failed(h.s.tasks[failed].worker.id,
                    msg.TaskFailed(failed, [b"x"], 0.1, traceback))
    running = [h.submit(name="running")[0] for _ in range(3)]
    h.s.schedule()
    gate, (gate_ret,) = h.submit(name="blocked-on")   # queued: no free CPU
    waiting, _ = h.submit(deps=[gate_ret], name="waiting")
    h.s.worker_heartbeat(w1, {"store_used": 9 * MB, "store_objects": 1,
                              "spilled_bytes": 0, "restored_bytes": 0})
    h.s.worker_heartbeat(w2, {"store_used": 0, "store_objects": 0,
                              "spilled_bytes": 3 * MB, "restored_bytes": MB,
                              "last_spill_error": "OSError: disk full"})
    return h, {"w1": w1, "w2": w2, "small": small, "big": big, "spilled": spilled,
               "running": running, "waiting": waiting, "gate": gate}


def test_overview_counts_everything():
    h, ids = busy_cluster()
    view = status.overview(h.s, scan_of(h), address="tcp://s:1", dashboard_url="http://d")
    assert view["workers"] == 2 and view["nodes"] == 2 and view["drivers"] == 1
    assert view["resources"]["total"]["CPU"] == 3.0
    assert view["resources"]["used"]["CPU"] == 3.0
    assert view["tasks"]["by_state"] == {"waiting": 1, "queued": 1, "assigned": 3,
                                         "done": 1, "failed": 1}
    assert view["tasks"]["submitted"] == 7 and view["tasks"]["live"] == 5
    objects = view["objects"]
    assert objects["spilled_objects"] == 1 and objects["spilled_bytes"] == 3 * MB
    assert objects["stored_bytes"] == 8 * MB
    assert objects["by_state"]["error"] == 1 and objects["by_state"]["pending"] == 5
    assert view["store"] == {"used": 9 * MB, "capacity": 150 * MB, "objects": 1,
                             "spilled_bytes_total": 3 * MB, "restored_bytes_total": MB}
    assert view["scheduler"]["address"] == "tcp://s:1"
    assert view["scheduler"]["dashboard_url"] == "http://d"


def test_workers_rows_use_heartbeats():
    h, ids = busy_cluster()
    view = status.workers(h.s, 10)
    rows = {r["id"]: r for r in view["workers"]}
    w1, w2 = rows[ids["w1"].hex()], rows[ids["w2"].hex()]
    assert w1["node"] == "node-a" and w1["num_cpus"] == 2.0 and w1["running"] == 2
    assert w1["store_used"] == 9 * MB and w1["store_capacity"] == 100 * MB
    assert w2["spilled_bytes"] == 3 * MB and w2["last_spill_error"] == "OSError: disk full"
    assert 0 <= w1["heartbeat_age"] < 5
    assert len(status.workers(h.s, 1)["workers"]) == 1
    assert status.workers(h.s, 1)["total"] == 2


def test_workers_without_a_heartbeat_fall_back_to_the_schedulers_view():
    h = Harness()
    w = h.worker("w1", capacity=10 * MB)
    h.put_stored(w, 2 * MB)
    (row,) = status.workers(h.s, 10)["workers"]
    assert row["store_used"] == 2 * MB and row["last_heartbeat"] is None
    assert row["heartbeat_age"] is None


def test_tasks_are_newest_first_filterable_and_failures_carry_a_cut_traceback():
    h, ids = busy_cluster()
    scan = scan_of(h)
    view = status.tasks(h.s, scan, 100, None, 10)
    names = [t["name"] for t in view["tasks"]]
    assert names == ["waiting", "blocked-on", "running", "running", "running", "broken",
                     "finished"]
    assert view["by_state"]["failed"] == 1
    (failure,) = view["failures"]
    assert failure["name"] == "broken" and failure["error"] == "ValueError: deep"
    assert len(failure["traceback"]) == status.MAX_ERROR_CHARS
    assert failure["traceback"].startswith("…") and failure["traceback"].endswith("deep")
    broken = next(t for t in view["tasks"] if t["name"] == "broken")
    assert broken["error"] == "ValueError: deep" and "traceback" not in broken
    assert broken["pid"] == 100 and broken["duration"] is not None
    only = status.tasks(h.s, scan, 100, "assigned", 0)
    assert [t["state"] for t in only["tasks"]] == ["assigned"] * 3 and not only["failures"]
    assert len(status.tasks(h.s, scan, 2, None, 10)["tasks"]) == 2


def test_objects_are_the_largest_first_and_capped():
    h, ids = busy_cluster()
    scan = scan_of(h)
    view = status.objects(h.s, scan, 2)
    assert [o["id"] for o in view["objects"]] == [ids["big"].hex(), ids["spilled"].hex()]
    big, spilled = view["objects"]
    assert big["where"] == ["store of pid 100 on node-a"] and not big["spilled"]
    assert spilled["spilled"] and spilled["where"] == ["spilled to /spill/w2-1"]
    assert big["producer"] is None and big["holders"] == 1
    assert view["count"] == len(h.s.objects)


def test_the_largest_objects_survive_a_scan_in_slices():
    h = Harness()
    w = h.worker("w1")
    sizes = [(i * 7919) % 1000 for i in range(3000)]
    with h.batch():
        for size in sizes:
            h.put_stored(w, size)
    scan = LiveScan(largest=10)
    objects = list(h.s.objects.values())
    for start in range(0, len(objects), 128):
        scan.add_objects(objects[start:start + 128])
    assert [o.size for o in scan.largest_objects(10)] == sorted(sizes, reverse=True)[:10]
    assert scan.objects == 3000 and scan.object_bytes == sum(sizes)


def test_actors_view_is_empty_for_now():
    view = status.actors(Harness().s, 10)
    assert view["actors"] == [] and view["total"] == 0


def test_live_scans_run_in_slices_and_are_shared():
    h = Harness()
    w = h.worker("w1")
    with h.batch():
        for _ in range(SLICE * 2 + 10):
            h.put_stored(w, 10)
    scans = LiveScans(h.s, max_age=60)

    async def main():
        loop_turns = 0
        stop = False

        async def ticker():
            nonlocal loop_turns
            while not stop:
                loop_turns += 1
                await asyncio.sleep(0)

        tick = asyncio.ensure_future(ticker())
        first, second = await asyncio.gather(scans.get(), scans.get())
        stop = True
        await tick
        return first, second, await scans.get(), loop_turns

    first, second, third, turns = asyncio.run(main())
    assert first is second is third            # one scan served all three
    assert first.objects == SLICE * 2 + 10
    assert turns >= 2                           # the loop ran between slices


def test_a_new_scan_follows_after_max_age():
    h = Harness()
    h.put()
    scans = LiveScans(h.s, max_age=0.0)

    async def main():
        one = await scans.get()
        h.put()
        return one, await scans.get()

    one, two = asyncio.run(main())
    assert one is not two and (one.objects, two.objects) == (1, 2)
