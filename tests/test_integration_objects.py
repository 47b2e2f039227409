"""The shared-memory object store on real local clusters (issue 3).

Presence in shared memory is checked through the stores' own status and /dev/shm, not
only through results. "Hosts" are workers given distinct node ids on this machine.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import graphstore
from helpers import wait_for
from graphstore.core import shm
from graphstore.exceptions import ObjectStoreFullError, TaskError

MB = 1024 * 1024


def _segments(cluster_id: str | None = None) -> list[str]:
    prefix = f"{shm.PREFIX}{cluster_id}-" if cluster_id else shm.PREFIX
    return sorted(n for n in os.listdir(shm.SHM_DIR) if n.startswith(prefix))


def _cluster_id() -> str:
    return graphstore.session.current_local_cluster().cluster_id


def _stores() -> list[dict]:
    return graphstore.memory_summary()["stores"]


@pytest.fixture
def cluster():
    graphstore.init(num_cpus=2, object_store_memory=512 * MB)
    try:
        yield
    finally:
        cluster_id = _cluster_id()
        graphstore.shutdown()
        assert _segments(cluster_id) == [], "shutdown left shared-memory segments behind"


@pytest.fixture
def two_hosts():
    graphstore.init(num_cpus=2, worker_node_ids=["node-a", "node-b"], node_id="node-a",
                    object_store_memory=512 * MB)
    try:
        yield
    finally:
        cluster_id = _cluster_id()
        graphstore.shutdown()
        assert _segments(cluster_id) == []


@graphstore.remote
def total(x):
    return float(np.asarray(x).sum())


@graphstore.remote
def describe(x):
    return {"writeable": bool(x.flags.writeable), "pid": os.getpid(), "sum": float(x.sum())}


@graphstore.remote
def make_array(n):
    return np.arange(n, dtype=np.float64)


def test_large_put_lives_in_a_store_and_get_is_zero_copy_and_read_only(cluster):
    array = np.random.rand(4 * MB // 8)
    ref = graphstore.put(array)
    summary = graphstore.memory_summary()
    (entry,) = [o for o in summary["objects"] if o["object_id"] == ref.hex()]
    assert entry["size"] >= array.nbytes and entry["where"] != "inline (scheduler)"
    assert sum(s["used"] for s in summary["stores"]) >= array.nbytes
    assert any(n.startswith(f"{shm.PREFIX}{_cluster_id()}-") and not n.endswith(".lock")
               for n in _segments())
    got = graphstore.get(ref)
    assert got.flags.writeable is False
    np.testing.assert_array_equal(got, array)
    with pytest.raises(ValueError):
        got[0] = 1.0
    # The array views shared memory: the process maps the segment.
    pinned = graphstore.memory_summary()
    (entry,) = [o for o in pinned["objects"] if o["object_id"] == ref.hex()]
    assert entry["pinned_by"] == 1


def test_a_large_put_lands_in_the_reserve_the_driver_mapped_beforehand(cluster):
    """Each store keeps pre-faulted reserve segments; the driver maps them with their
    page tables filled before its large puts, so those puts only copy."""
    runtime = graphstore.session.get_runtime()
    stores = _stores()
    count = graphstore.session.get_runtime().config.store_reserve_count
    reserves = wait_for(lambda: [n for s in _stores() for n in s["reserves"]]
                        if all(len(s["reserves"]) == count for s in _stores()) else None,
                        timeout=10)
    assert reserves and len(reserves) == count * len(stores), "a store has no reserves"
    # The driver maps each store's reserves (asking again after a put used one).
    assert wait_for(lambda: all(runtime.mappings.has(n) for n in reserves)
                    or runtime.objects.premap_reserves(), timeout=10)
    # Large enough for a dedicated segment (smaller objects share arenas).
    size = max(s["dedicated_above"] for s in stores) + MB
    array = np.arange(size // 8, dtype=np.float64)
    ref = graphstore.put(array)
    (location,) = runtime._local[ref._id][2]
    assert location[2] in reserves            # the put used a mapped reserve
    np.testing.assert_array_equal(graphstore.get(ref), array)
    # The store makes a new reserve once idle, and the driver maps that one too.
    del ref
    following = wait_for(lambda: [n for s in _stores() for n in s["reserves"]
                                  if n not in reserves], timeout=10)
    assert following and wait_for(lambda: any(runtime.mappings.has(n) for n in following),
                                  timeout=10)


def test_small_objects_stay_inline(cluster):
    ref = graphstore.put(np.arange(10))
    (entry,) = [o for o in graphstore.memory_summary()["objects"]
                if o["object_id"] == ref.hex()]
    assert entry["where"] == "inline (scheduler)"


def test_array_outlives_its_refs(cluster):
    ref = graphstore.put(np.full(2 * MB, 7, dtype=np.uint8))
    got = graphstore.get(ref)
    del ref
    assert wait_for(lambda: graphstore.memory_summary()["total_objects"] == 0, timeout=10)
    # Reuse of the freed memory must not touch an array still in use.
    for _ in range(3):
        graphstore.put(np.zeros(2 * MB, dtype=np.uint8))
    assert int(got.sum()) == 7 * 2 * MB


def test_tasks_read_large_arguments_from_shared_memory(cluster):
    array = np.random.rand(2 * MB // 8)
    ref = graphstore.put(array)
    info = graphstore.get(describe.remote(ref))
    assert info["writeable"] is False           # a view of the segment, not a copy
    assert info["sum"] == pytest.approx(float(array.sum()))


def test_large_results_stay_in_the_producing_store(cluster):
    ref = make_array.remote(MB)
    result = graphstore.get(ref)
    assert result[-1] == MB - 1 and result.flags.writeable is False
    (entry,) = [o for o in graphstore.memory_summary()["objects"]
                if o["object_id"] == ref.hex()]
    assert entry["where"][0].startswith("worker pid=")


def test_freed_objects_release_store_memory(cluster):
    refs = [graphstore.put(np.ones(MB)) for _ in range(4)]
    assert sum(s["used"] for s in _stores()) >= 4 * 8 * MB
    del refs
    assert wait_for(lambda: sum(s["used"] for s in _stores()) == 0, timeout=10)


def test_unpicklable_out_of_band_arrays_still_work(cluster):
    strided = np.arange(400_000, dtype=np.float64)[::2]          # not contiguous
    objects = np.array([{"a": i} for i in range(30_000)], dtype=object)
    np.testing.assert_array_equal(graphstore.get(graphstore.put(strided)), strided)
    assert graphstore.get(graphstore.put(objects))[-1] == {"a": 29_999}
    assert graphstore.get(total.remote(strided)) == pytest.approx(float(strided.sum()))


def test_object_bigger_than_any_store_is_refused_with_sizes():
    graphstore.init(num_cpus=1, object_store_memory=16 * MB)
    try:
        with pytest.raises(ObjectStoreFullError) as info:
            graphstore.put(np.zeros(32 * MB, dtype=np.uint8))
        assert "capacity" in str(info.value) and "16,777,216" in str(info.value)
        with pytest.raises(TaskError) as info:
            graphstore.get(make_array.remote(4 * MB))
        assert isinstance(info.value, ObjectStoreFullError)
        assert graphstore.get(total.remote(np.ones(10))) == 10.0   # still serving
    finally:
        graphstore.shutdown()


def test_cross_host_transfer_lands_in_the_consumer_store(two_hosts):
    array = np.random.rand(8 * MB // 8)
    ref = graphstore.put(array)                         # node-a: the driver's host
    on_b = describe.options(resources={"node:node-b": 0.001})
    info = graphstore.get(on_b.remote(ref))
    assert info["sum"] == pytest.approx(float(array.sum()))
    (entry,) = [o for o in graphstore.memory_summary()["objects"]
                if o["object_id"] == ref.hex()]
    assert sorted(w.split("node=")[1] for w in entry["where"]) == ["node-a", "node-b"]
    (record,) = [r for r in graphstore.list_tasks() if r["name"] == "describe"]
    assert record["placement"]["node"] == "node-b"
    assert record["placement"]["missing_bytes"] >= array.nbytes


def test_concurrent_fetches_of_one_object_are_merged(two_hosts):
    ref = graphstore.put(np.ones(16 * MB // 8))
    on_b = total.options(resources={"node:node-b": 0.001})
    results = graphstore.get([on_b.remote(ref) for _ in range(4)])
    assert results == [float(16 * MB // 8)] * 4
    store_b = [s for s in _stores() if s["node"] == "node-b"][0]
    assert store_b["allocated"] == 1                      # one transfer, one copy


def test_consumer_runs_where_its_50mb_argument_is(two_hosts):
    produced = make_array.options(resources={"node:node-b": 0.001}).remote(50 * MB // 8)
    graphstore.wait([produced], num_returns=1, timeout=60)
    result = graphstore.get(total.remote(produced))
    assert result == pytest.approx(float(np.arange(50 * MB // 8).sum()))
    records = {r["name"]: r for r in graphstore.list_tasks()}
    assert records["total"]["placement"]["node"] == "node-b"
    assert records["total"]["placement"]["missing_bytes"] == 0


def test_driver_on_another_host_fetches_over_tcp(two_hosts):
    ref = make_array.options(resources={"node:node-b": 0.001}).remote(MB)
    got = graphstore.get(ref)                           # the driver is on node-a
    assert got[-1] == MB - 1


def _run_driver(script: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(script)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_segments_are_swept_after_the_driver_is_killed():
    proc = _run_driver("""
        import sys, time, numpy as np, graphstore
        graphstore.init(num_cpus=2, object_store_memory=256 * 1024 * 1024)
        refs = [graphstore.put(np.ones(1_000_000)) for _ in range(3)]
        print("CLUSTER_ID=" + graphstore.session.current_local_cluster().cluster_id,
              flush=True)
        time.sleep(120)
    """)
    try:
        # init() announces the status page on stderr (merged here) before this line.
        line = ""
        while line is not None and not line.startswith("CLUSTER_ID="):
            line = proc.stdout.readline() or None
        cluster_id = line.strip()[len("CLUSTER_ID="):] if line else ""
        assert cluster_id, proc.stdout.read()
        assert len(_segments(cluster_id)) >= 3
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        # The workers see their stdin close and clean up after themselves.
        assert wait_for(lambda: _segments(cluster_id) == [], timeout=15), \
            _segments(cluster_id)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_segments_of_a_killed_worker_are_swept(cluster):
    refs = [graphstore.put(np.ones(MB)) for _ in range(2)]
    cluster_id = _cluster_id()
    local = graphstore.session.current_local_cluster()
    stores = _stores()
    victim = [s for s in stores if s["objects"]][0]
    os.kill(victim["pid"], signal.SIGKILL)
    tag_segments = lambda: [n for n in _segments(cluster_id)  # noqa: E731
                            if n.startswith(victim_prefix(victim, cluster_id))
                            and not n.endswith(".lock")]
    assert wait_for(lambda: local.replaced_workers >= 1, timeout=10)
    # The other worker of the host took the objects over (their segments keep their
    # names) and removed the rest of what the dead one left; once the objects are
    # freed, nothing of it is left.
    assert all(float(graphstore.get(ref, timeout=30)[0]) == 1.0 for ref in refs)
    del refs
    assert wait_for(lambda: tag_segments() == [], timeout=15), tag_segments()


def victim_prefix(store: dict, cluster_id: str) -> str:
    return f"{shm.PREFIX}{cluster_id}-{store['worker'][:12]}"


def test_memory_cli_lists_objects_and_stores(cluster):
    ref = graphstore.put(np.ones(MB))
    local = graphstore.session.current_local_cluster()
    env = dict(os.environ, GRAPHSTORE_TOKEN=local.token)
    out = subprocess.run([sys.executable, "-m", "graphstore.cli", "memory", "--address",
                          local.address], capture_output=True, text=True, timeout=60,
                         env=env)
    assert out.returncode == 0, out.stderr
    assert ref.hex() in out.stdout and "object stores" in out.stdout
    assert "driver pid=" in out.stdout
