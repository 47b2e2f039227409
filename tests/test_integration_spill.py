"""Spilling to disk and to S3 on real local clusters (issue 5).

S3 is a real moto server (a subprocess on a loopback port, see ``moto_s3`` and friends in
fixtures/s3.py); disk is a real temporary directory. What is checked is what lands in the
directory or the bucket, the stores' own status, and that every object comes back bit for
bit, both through ``get()`` and as a task argument (restored inside a worker).

Data is random bytes (incompressible), each array from its own seed, so a restore that
returned another object's bytes, a truncated object or a stale buffer would show.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import graphstore
from helpers import wait_for
from graphstore.exceptions import GraphstoreError, ObjectLostError, ObjectStoreFullError

MB = 1024 * 1024
STORE = 64 * MB            # object_store_memory per worker in these tests
THRESHOLD = 0.8            # the default spill_threshold


# -- helpers ----------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _data(seed: int, size: int) -> np.ndarray:
    return np.frombuffer(np.random.default_rng(seed).bytes(size), dtype=np.uint8)


def _sha(array) -> str:
    return hashlib.sha256(memoryview(array)).hexdigest()


@graphstore.remote
def sha256_of(x) -> str:
    """Runs in a worker: the argument was restored there (or mapped) before the call."""
    assert isinstance(x, np.ndarray) and x.dtype == np.uint8
    return hashlib.sha256(memoryview(x)).hexdigest()


@graphstore.remote
def make_array(seed: int, size: int):
    return _data(seed, size)


def _stores() -> list[dict]:
    return graphstore.memory_summary()["stores"]


def _assert_within_capacity(stores: list[dict]) -> None:
    for store in stores:
        assert store["used"] <= store["capacity"], store
        assert store["used"] + store["pooled"] <= store["capacity"], store


def _settled(threshold: float = THRESHOLD, timeout: float = 30.0) -> list[dict]:
    """Wait until every store is at or below its spill threshold and the spill counts
    stopped moving; return the stores' summaries."""
    last = [None]

    def quiet():
        stores = _stores()
        counts = [(s["spilled_objects"], s["used"]) for s in stores]
        below = all(s["used"] <= threshold * s["capacity"] for s in stores)
        done = below and counts == last[0]
        last[0] = counts
        return stores if done else None

    stores = wait_for(quiet, timeout=timeout, interval=0.2)
    assert stores, f"spilling did not settle below {threshold:.0%} within {timeout} s: " \
                   f"{_stores()}"
    return stores


_SPILLED = re.compile(r"^spilled: (.+) @ (\d+)$")


def _spill_locations(summary: dict) -> dict[str, tuple[str, bool]]:
    """object id (hex) -> (spill path, whether a copy is also in a store's memory)."""
    out = {}
    for obj in summary["objects"]:
        where = obj["where"]
        if isinstance(where, str):
            continue
        spills = [m.group(1) for m in map(_SPILLED.match, where) if m]
        if spills:
            out[obj["object_id"]] = (spills[0], len(spills) < len(where))
    return out


def _agreed_spill_files(list_files) -> tuple[dict, dict, object]:
    """The memory summary, its spill locations and ``list_files()`` (the target's files
    or keys) once the two agree: a spill in flight has written its file before the
    scheduler lists it (a fraction of a second against moto), so a settled store can
    still be one file ahead. After 30 s the last, disagreeing, look is returned."""
    last = {}

    def agree():
        summary = graphstore.memory_summary()
        spilled = _spill_locations(summary)
        files = list_files()
        last.update(summary=summary, spilled=spilled, files=files)
        return set(files) == {path for path, _ in spilled.values()}

    wait_for(agree, timeout=30)
    return last["summary"], last["spilled"], last["files"]


def _files(directory: Path) -> dict[str, int]:
    """path -> size of every file under ``directory``."""
    out = {}
    for root, _, names in os.walk(directory):
        for name in names:
            path = os.path.join(root, name)
            try:
                out[path] = os.path.getsize(path)
            except FileNotFoundError:
                pass
    return out


def _worker_logs(local) -> str:
    log_dir = Path(local().log_dir)
    return "\n".join(p.read_text(errors="replace") for p in sorted(log_dir.glob("worker-*")))


def _check_all(refs: dict, data: dict) -> None:
    """Every object, by get() in the driver and as a task argument, bit for bit."""
    for i, ref in refs.items():
        value = graphstore.get(ref, timeout=60)
        assert value.dtype == np.uint8 and value.shape == data[i].shape
        assert np.array_equal(value, data[i]), f"object {i} came back different"
        del value
    digests = graphstore.get([sha256_of.remote(ref) for ref in refs.values()], timeout=120)
    assert digests == [_sha(data[i]) for i in refs], "a task saw different bytes"


def _cli(*args: str, env: dict | None = None, timeout: float = 60.0):
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "graphstore.cli", *args],
                          capture_output=True, text=True, timeout=timeout, env=full_env,
                          stdin=subprocess.DEVNULL)


# -- disk --------------------------------------------------------------------------------

def test_disk_spill_restores_bit_for_bit_and_deletes_files(fresh_cluster, local, tmp_path):
    spill_dir = tmp_path / "spill"          # does not exist yet
    fresh_cluster(num_cpus=2, object_store_memory=STORE, spill_to=str(spill_dir))
    cluster_dir = spill_dir / local().cluster_id
    data = {i: _data(i, 16 * MB) for i in range(16)}      # 256 MB through 2 x 64 MB
    refs = {}
    for i, array in data.items():
        refs[i] = graphstore.put(array)
        _assert_within_capacity(_stores())

    _assert_within_capacity(_settled())
    summary, spilled, files = _agreed_spill_files(lambda: _files(cluster_dir))
    stores = summary["stores"]
    _assert_within_capacity(stores)
    # At least what does not fit in the two stores' thresholds is out of memory.
    assert summary["spilled_bytes"] >= 256 * MB - 2 * THRESHOLD * STORE, summary
    assert summary["spilled_objects"] >= 3
    assert sum(s["spilled_bytes"] for s in stores) >= summary["spilled_bytes"]
    assert all(s["spill_url"] == "file://" + str(spill_dir) for s in stores), stores
    assert any(s["spill_throughput"] > 0 for s in stores)

    assert files, f"nothing was written under {cluster_dir}"
    assert set(files) == {path for path, _ in spilled.values()}, (files, spilled)
    assert sum(files.values()) >= summary["spilled_bytes"]
    assert all(Path(p).parent == cluster_dir for p in files)

    _check_all(refs, data)
    stores = _stores()
    _assert_within_capacity(stores)
    assert sum(s["restored_objects"] for s in stores) >= summary["spilled_objects"]
    assert any(s["restore_throughput"] > 0 for s in stores)

    # Freeing objects deletes their spill files (one 16 MB object per file), only theirs.
    spilled = _spill_locations(graphstore.memory_summary())
    by_hex = {ref.hex(): i for i, ref in refs.items()}
    freed = [by_hex[h] for h in list(spilled)[: max(1, len(spilled) // 2)]]
    freed_paths = {spilled[refs[i].hex()][0] for i in freed}
    kept_paths = {p for h, (p, _) in spilled.items() if by_hex[h] not in freed}
    for i in freed:
        del refs[i]
    assert wait_for(lambda: not freed_paths & set(_files(cluster_dir))), \
        f"spill files of freed objects were not deleted: {freed_paths & set(_files(cluster_dir))}"
    assert kept_paths <= set(_files(cluster_dir)), "a live object's spill file was deleted"

    # Shutdown removes the cluster's directory, files of live objects included.
    assert kept_paths and refs
    graphstore.shutdown()
    assert not cluster_dir.exists(), "shutdown() left the cluster's spill directory"
    assert spill_dir.is_dir(), "shutdown() removed the user's directory itself"


def test_spilled_memory_is_reused_while_held_arrays_keep_their_bytes(fresh_cluster,
                                                                    tmp_path):
    """Stores give the memory of spilled objects to restores and puts, but never the
    bytes of an object some process still reads (its lease holds the region)."""
    fresh_cluster(num_cpus=2, object_store_memory=STORE, spill_to=str(tmp_path / "spill"))
    data = {i: _data(i, 8 * MB) for i in range(24)}        # 192 MB through 2 x 64 MB
    refs = {i: graphstore.put(array) for i, array in data.items()}
    held = {i: graphstore.get(refs[i]) for i in range(0, 24, 4)}
    for _ in range(2):                # every object restored, and spilled again, twice
        _check_all(refs, data)
    for i, array in held.items():
        assert np.array_equal(array, data[i]), f"held array {i} changed under its reader"
    stores = _stores()
    placed = sum(s["allocated"] for s in stores) * 8 * MB
    assert placed > 2 * sum(s["capacity"] for s in stores), stores   # space reused
    assert sum(s["revoked"] for s in stores) > 0, stores    # held ones were asked back


def test_disk_small_objects_spilled_together_share_a_file_until_the_last_is_freed(
        fresh_cluster, local, tmp_path):
    fresh_cluster(num_cpus=1, object_store_memory=STORE, spill_to=str(tmp_path))
    cluster_dir = tmp_path / local().cluster_id
    data = {i: _data(1000 + i, MB) for i in range(50)}     # 50 MB: below the threshold
    refs = {i: graphstore.put(array) for i, array in data.items()}
    # 40 MB needs room that only many small objects together make: one spill round.
    data[50] = _data(1050, 40 * MB)
    refs[50] = graphstore.put(data[50])
    _settled()
    spilled = _spill_locations(graphstore.memory_summary())
    paths = [path for path, _ in spilled.values()]
    assert len(spilled) >= 20, spilled
    assert set(_files(cluster_dir)) == set(paths)
    shared = max(set(paths), key=paths.count)
    assert paths.count(shared) >= 2, "small objects spilled together were not fused"

    # A fused file stays while any object in it lives, and goes with the last one.
    by_hex = {ref.hex(): i for i, ref in refs.items()}
    members = [by_hex[h] for h, (p, _) in spilled.items() if p == shared]
    last = members.pop()
    for i in members:
        del refs[i]
    time.sleep(1.0)         # time enough for a (wrong) delete to happen
    assert os.path.exists(shared), "a fused spill file was deleted while in use"
    value = graphstore.get(refs[last], timeout=30)
    assert np.array_equal(value, data[last])
    del value, refs[last]
    assert wait_for(lambda: not os.path.exists(shared)), "the fused file was never deleted"

    # The others (a sample: each restore costs a round trip) still read back exactly.
    sample = {i: refs[i] for i in list(refs)[::5]}
    _check_all(sample, data)


def test_a_stream_of_small_puts_is_spilled_in_fused_writes(fresh_cluster, local, tmp_path):
    fresh_cluster(num_cpus=1, object_store_memory=STORE, spill_to=str(tmp_path))
    refs = [graphstore.put(_data(1100 + i, MB)) for i in range(96)]    # 96 x 1 MB
    _settled()
    spilled = _spill_locations(graphstore.memory_summary())
    files = _files(tmp_path / local().cluster_id)
    assert len(spilled) >= 40
    assert 3 * len(files) <= len(spilled), \
        f"{len(spilled)} objects of 1 MB were spilled into {len(files)} files"
    del refs


def test_disk_keep_spilled_keeps_the_directory_at_shutdown(fresh_cluster, local, tmp_path):
    fresh_cluster(num_cpus=1, object_store_memory=STORE, spill_to=str(tmp_path),
                  keep_spilled=True)
    cluster_dir = tmp_path / local().cluster_id
    refs = [graphstore.put(_data(i, 16 * MB)) for i in range(6)]
    _settled()
    assert _files(cluster_dir)
    graphstore.shutdown()
    del refs
    assert cluster_dir.is_dir(), "keep_spilled=True: the cluster's spill directory went"


def test_disk_keep_spilled_keeps_the_files_of_live_objects(fresh_cluster, local, tmp_path):
    for attempt in range(2):            # racy: two shutdowns make a miss likelier to show
        spill_dir = tmp_path / str(attempt)
        fresh_cluster(num_cpus=1, object_store_memory=STORE, spill_to=str(spill_dir),
                      keep_spilled=True)
        cluster_dir = spill_dir / local().cluster_id
        refs = [graphstore.put(_data(i, 16 * MB)) for i in range(6)]
        _settled()
        files = _files(cluster_dir)
        assert files
        graphstore.shutdown()
        del refs
        # A spill round may still be writing a file when the snapshot is taken (the
        # counts move only when it ends): a file may grow or appear, never go or shrink.
        after = _files(cluster_dir)
        lost = {path: size for path, size in files.items() if after.get(path, -1) < size}
        assert not lost, f"keep_spilled=True: spill files must stay; gone or cut: {lost}"


def test_spill_settings_from_the_environment(fresh_cluster, local, tmp_path, monkeypatch):
    monkeypatch.setenv("GRAPHSTORE_SPILL_TO", "file://" + str(tmp_path))
    monkeypatch.setenv("GRAPHSTORE_SPILL_THRESHOLD", "0.5")
    fresh_cluster(num_cpus=1, object_store_memory=STORE)
    data = {i: _data(50 + i, 16 * MB) for i in range(3)}   # 48 MB: over 50%, under 80%
    refs = {i: graphstore.put(a) for i, a in data.items()}
    stores = _settled(threshold=0.5)
    assert stores[0]["spilled_objects"] >= 1, stores
    assert stores[0]["spill_url"] == "file://" + str(tmp_path)
    assert _files(tmp_path / local().cluster_id)
    _check_all(refs, data)


def test_disk_target_failing_later_keeps_objects_in_memory_and_recovers(
        fresh_cluster, local, tmp_path):
    fresh_cluster(num_cpus=1, object_store_memory=STORE, spill_to=str(tmp_path),
                  spill_wait_timeout=2.0)
    cluster_dir = tmp_path / local().cluster_id
    data = {i: _data(200 + i, 20 * MB) for i in range(4)}
    refs = {i: graphstore.put(data[i]) for i in (0, 1)}     # 40 MB: below the threshold
    # The "disk" breaks: a regular file where the cluster's directory goes.
    shutil.rmtree(cluster_dir, ignore_errors=True)
    cluster_dir.write_bytes(b"not a directory")
    refs[2] = graphstore.put(data[2])                        # 60 MB: must spill, cannot

    store = wait_for(lambda: (s := _stores()[0])["last_spill_error"] and s, timeout=20)
    assert store, f"no spill error reported: {_stores()}"
    assert store["spill_errors"] >= 1 and store["spilled_objects"] == 0
    assert "Exists" in store["last_spill_error"] or "directory" in store["last_spill_error"], \
        store["last_spill_error"]
    assert store["used"] >= 3 * 20 * MB, "memory was released although nothing was spilled"
    for i in (0, 1, 2):                                     # nothing acknowledged is lost
        value = graphstore.get(refs[i], timeout=30)
        assert np.array_equal(value, data[i])
        del value
    assert "failed" in _worker_logs(local), "the spill error was not logged"

    # A put that needs room waits for spilling, then fails clearly, naming the sizes.
    start = time.monotonic()
    with pytest.raises(ObjectStoreFullError) as info:
        graphstore.put(data[3])
    assert time.monotonic() - start >= 1.5, "the put did not wait for spilling"
    assert f"{STORE:,}" in str(info.value) and re.search(r"20,97\d,\d{3}", str(info.value)), \
        str(info.value)

    cluster_dir.unlink()                                    # the disk is back
    refs[3] = graphstore.put(data[3])
    stores = _settled()
    assert stores[0]["spilled_objects"] >= 1, stores
    assert _files(cluster_dir)
    _check_all(refs, data)


def test_put_failing_because_the_spill_target_fails_names_the_spill_error(
        fresh_cluster, local, tmp_path):
    fresh_cluster(num_cpus=1, object_store_memory=STORE, spill_to=str(tmp_path),
                  spill_wait_timeout=1.0)
    cluster_dir = tmp_path / local().cluster_id
    refs = [graphstore.put(_data(300 + i, 20 * MB)) for i in range(2)]
    shutil.rmtree(cluster_dir, ignore_errors=True)
    cluster_dir.write_bytes(b"not a directory")
    refs.append(graphstore.put(_data(302, 20 * MB)))
    assert wait_for(lambda: _stores()[0]["last_spill_error"], timeout=20)
    with pytest.raises(ObjectStoreFullError) as info:
        graphstore.put(_data(303, 20 * MB))
    text = str(info.value)
    assert "spill" in text.lower() and str(tmp_path) in text and "Exists" in text, text


# -- S3 ----------------------------------------------------------------------------------

def test_s3_spill_keys_restore_bit_for_bit_and_are_deleted(fresh_cluster, local, s3_spot):
    fresh_cluster(num_cpus=2, object_store_memory=STORE, spill_to=s3_spot.url,
                  spill_options=s3_spot.options())
    cluster_prefix = f"{s3_spot.path}/{local().cluster_id}/"
    assert s3_spot.keys() == [], "the init() probe left a key behind"
    data = {i: _data(100 + i, 16 * MB) for i in range(12)}   # 192 MB through 2 x 64 MB
    refs = {}
    for i, array in data.items():
        refs[i] = graphstore.put(array)
    _assert_within_capacity(_settled())
    summary, spilled, keys = _agreed_spill_files(s3_spot.keys)
    stores = summary["stores"]
    _assert_within_capacity(stores)
    assert all(s["spill_url"] == s3_spot.url for s in stores), stores
    assert summary["spilled_bytes"] >= 192 * MB - 2 * THRESHOLD * STORE, summary

    assert keys and all(k.startswith(cluster_prefix) for k in keys), keys
    assert set(keys) == {path for path, _ in spilled.values()}, (keys, spilled)
    # The bytes really are in the bucket: an object's array is inside its key.
    by_hex = {ref.hex(): i for i, ref in refs.items()}
    some_hex, (some_key, _) = next(iter(spilled.items()))
    blob = s3_spot.server.fs.cat_file(some_key)
    assert data[by_hex[some_hex]].tobytes() in blob
    del blob

    # The status through the CLI, as JSON, shows the same.
    run = _cli("memory", "--json", "--address", graphstore.session._driver.address,
               env={"GRAPHSTORE_TOKEN": local().token})
    assert run.returncode == 0, run.stderr
    reported = json.loads(run.stdout)
    assert reported["spilled_bytes"] > 0 and reported["spilled_objects"] >= 1
    assert any(s["spilled_objects"] > 0 and s["spill_throughput"] > 0
               for s in reported["stores"])
    assert any(o["where"] != "inline (scheduler)" and any("spilled: " in w for w in o["where"])
               for o in reported["objects"])

    _check_all(refs, data)
    assert sum(s["restored_objects"] for s in _stores()) >= len(spilled)

    _settled()
    spilled = _spill_locations(graphstore.memory_summary())
    freed = [by_hex[h] for h in list(spilled)[:2]]
    freed_keys = {spilled[refs[i].hex()][0] for i in freed}
    for i in freed:
        del refs[i]
    assert wait_for(lambda: not freed_keys & set(s3_spot.keys())), \
        "keys of freed objects were not deleted"
    # The rest stay referenced through shutdown: their keys go with the prefix.
    assert set(s3_spot.keys()) == {p for h, (p, _) in spilled.items() if by_hex[h] in refs}
    graphstore.shutdown()
    assert s3_spot.keys() == [], "shutdown() left keys under the spill prefix"


def test_s3_spilled_objects_survive_sigkill_of_the_worker_that_spilled_them(
        fresh_cluster, local, s3_spot):
    fresh_cluster(num_cpus=2, object_store_memory=STORE, spill_to=s3_spot.url,
                  spill_options=s3_spot.options())
    data = {i: _data(400 + i, 16 * MB) for i in range(10)}   # 160 MB through 2 x 64 MB
    refs = {i: graphstore.put(a) for i, a in data.items()}
    stores = _settled()
    victim = max(stores, key=lambda s: s["spilled_objects"])
    assert victim["spilled_objects"] >= 1, stores
    tag = victim["worker"][:12]           # spill files are named <worker tag>-<random>
    summary = graphstore.memory_summary()
    spilled = _spill_locations(summary)
    by_hex = {ref.hex(): i for i, ref in refs.items()}
    written_by_victim = {by_hex[h]: path for h, (path, in_memory) in spilled.items()
                         if path.rsplit("/", 1)[1].startswith(tag + "-") and not in_memory}
    assert written_by_victim, (tag, spilled)

    os.kill(victim["pid"], signal.SIGKILL)
    assert wait_for(lambda: local().replaced_workers >= 1, timeout=20)
    assert wait_for(lambda: (lambda s: len(s) == 2 and victim["pid"] not in
                             [x["pid"] for x in s])(_stores()), timeout=20)

    # What the dead worker spilled is restored by another worker, from S3.
    assert set(written_by_victim.values()) <= set(s3_spot.keys())
    survivors = {i: refs[i] for i in written_by_victim}
    _check_all(survivors, data)

    # Freeing them deletes the dead worker's keys too (another worker does it).
    for i in written_by_victim:
        del refs[i]
    del survivors
    assert wait_for(lambda: not set(written_by_victim.values()) & set(s3_spot.keys())), \
        "keys written by the dead worker were not deleted when their objects were freed"


def test_an_unspilled_object_of_a_killed_worker_is_reported_lost(fresh_cluster, local,
                                                                 tmp_path):
    # One worker: nobody on the host can take its objects over when it dies (with two,
    # the other keeps them: tests/test_ray_task_crash.py).
    fresh_cluster(num_cpus=1, object_store_memory=STORE, spill_to=str(tmp_path))
    ref = graphstore.put(_data(450, 16 * MB))               # in memory, never spilled
    (obj,) = [o for o in graphstore.memory_summary()["objects"] if o["object_id"] == ref.hex()]
    (where,) = obj["where"]
    pid = int(re.search(r"pid=(\d+)", where).group(1))
    os.kill(pid, signal.SIGKILL)
    assert wait_for(lambda: local().replaced_workers >= 1, timeout=20)
    assert wait_for(lambda: len(_stores()) == 1, timeout=20)
    with pytest.raises(ObjectLostError, match="died"):
        graphstore.get(ref, timeout=30)


def test_put_larger_than_free_memory_waits_for_spilling(fresh_cluster, s3_spot):
    fresh_cluster(num_cpus=1, object_store_memory=STORE, spill_to=s3_spot.url,
                  spill_options=s3_spot.options())
    data = {i: _data(500 + i, 16 * MB) for i in range(3)}   # 48 MB: below the threshold
    refs = {i: graphstore.put(a) for i, a in data.items()}
    assert _stores()[0]["spilled_objects"] == 0
    # 40 MB does not fit in the 16 MB left: the put waits while two objects spill.
    data[3] = _data(503, 40 * MB)
    refs[3] = graphstore.put(data[3])
    store = _stores()[0]
    assert store["spilled_objects"] >= 2, store
    _assert_within_capacity([store])
    # A task result that does not fit waits the same way.
    refs[4] = make_array.remote(504, 40 * MB)
    data[4] = _data(504, 40 * MB)
    assert graphstore.get(sha256_of.remote(refs[4]), timeout=60) == _sha(data[4])
    # An object above the spill threshold (but within capacity) still round-trips.
    data[5] = _data(505, 60 * MB)
    refs[5] = graphstore.put(data[5])
    _check_all(refs, data)
    assert len(s3_spot.keys()) >= 3

    # Nothing can make room for an object larger than the whole store: fail at once,
    # naming both sizes.
    start = time.monotonic()
    with pytest.raises(ObjectStoreFullError) as info:
        graphstore.put(_data(506, 70 * MB))
    assert time.monotonic() - start < 10, "an impossible put waited for spilling"
    text = str(info.value)
    assert f"{STORE:,}" in text and re.search(r"73,400,\d{3}", text), text


# -- bad input at init() -----------------------------------------------------------------

def _bad_target(request, tmp_path, case: str) -> tuple[str, dict | None, list[str]]:
    """(spill_to, spill_options, substrings the error must contain) for ``case``."""
    if case == "missing bucket":
        server = request.getfixturevalue("moto_s3")
        return ("s3://gstest-no-such-bucket/spill", server.options(),
                ["s3://gstest-no-such-bucket/spill", "bucket does not exist"])
    if case == "unreachable endpoint":
        port = _free_port()
        options = {"key": "testing", "secret": "testing",
                   "client_kwargs": {"endpoint_url": f"http://127.0.0.1:{port}",
                                     "region_name": "us-east-1"}}
        return ("s3://gstest-bucket/spill", options,
                ["s3://gstest-bucket/spill", f"http://127.0.0.1:{port}", "connect"])
    if case in ("unknown access key", "wrong secret"):
        auth = request.getfixturevalue("moto_s3_with_auth")
        url = f"s3://{auth.bucket}/spill"
        if case == "unknown access key":
            return (url, auth.server.options(key="AKIANOSUCHKEY0000000", secret="x"),
                    [url, "Access Key Id you provided does not exist"])
        return (url, auth.server.options(key=auth.key, secret="not-the-secret"),
                [url, "signature"])
    if case == "directory path is a file":
        blocker = tmp_path / "a-file"
        blocker.write_text("not a directory")
        return (str(blocker), None, [str(blocker), "NotADirectoryError"])
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["missing bucket", "unreachable endpoint",
                                  "unknown access key", "wrong secret",
                                  "directory path is a file"])
def test_init_with_an_unusable_spill_target_fails_first_and_leaves_nothing(
        request, fresh_cluster, procs, tmp_path, case):
    spill_to, options, expected = _bad_target(request, tmp_path, case)
    graphstore.shutdown()
    before = {p.pid for p in procs.session_processes()}
    with pytest.raises(GraphstoreError) as info:
        fresh_cluster(num_cpus=1, object_store_memory=STORE, spill_to=spill_to,
                      spill_options=options)
    text = str(info.value)
    for part in expected:
        assert part in text, f"the error does not name {part!r}: {text}"
    assert not graphstore.is_initialized()
    time.sleep(0.2)
    left = [p for p in procs.session_processes() if p.pid not in before]
    assert left == [], f"a failed init() left processes: {[p.pid for p in left]}"


# -- S3 failing later --------------------------------------------------------------------

def test_s3_stopping_mid_run_keeps_objects_and_spilling_resumes(fresh_cluster, local,
                                                                 flaky_s3):
    flaky_s3.create_bucket("gstest-flaky")
    url = "s3://gstest-flaky/spill"
    # Fewer botocore retries than the default, so a failed spill is noticed in a second
    # (the defaults retry for about ten).
    options = flaky_s3.options(config_kwargs={"retries": {"max_attempts": 1}})
    fresh_cluster(num_cpus=1, object_store_memory=STORE, spill_to=url,
                  spill_options=options, spill_wait_timeout=3.0)
    data = {i: _data(600 + i, 20 * MB) for i in range(5)}
    refs = {i: graphstore.put(data[i]) for i in (0, 1)}       # below the threshold

    flaky_s3.stop()                                           # S3 goes away
    refs[2] = graphstore.put(data[2])                         # over the threshold
    store = wait_for(lambda: (s := _stores()[0])["last_spill_error"] and s, timeout=30)
    assert store, f"the failure is not reported: {_stores()}"
    assert store["spill_errors"] >= 1 and store["spilled_objects"] == 0, store
    assert flaky_s3.url in store["last_spill_error"] or "connect" in \
        store["last_spill_error"].lower(), store["last_spill_error"]
    assert f"spilling to {url} failed" in _worker_logs(local), "the failure was not logged"
    for i in (0, 1, 2):                                       # all still in memory
        value = graphstore.get(refs[i], timeout=30)
        assert np.array_equal(value, data[i])
        del value
    with pytest.raises(ObjectStoreFullError) as info:         # no room, none can be made
        graphstore.put(data[3])
    assert f"{STORE:,}" in str(info.value), str(info.value)

    flaky_s3.start()                                          # back, on the same port
    flaky_s3.create_bucket("gstest-flaky")                    # (a new moto is empty)
    refs[3] = graphstore.put(data[3])
    refs[4] = graphstore.put(data[4])
    stores = _settled()
    assert stores[0]["spilled_objects"] >= 2, stores
    assert flaky_s3.keys("gstest-flaky/spill"), "nothing reached the bucket after recovery"
    _check_all(refs, data)


# -- the worker command line -------------------------------------------------------------

def _cli_cluster(spawn_cli, worker_args: list[str]):
    token = secrets.token_hex(16)
    env = {"GRAPHSTORE_TOKEN": token}
    scheduler = spawn_cli(["scheduler", "--port", "0"], env=env, name="scheduler")
    address = scheduler.wait_for_line("graphstore scheduler listening at ")
    worker = spawn_cli(["worker", address, "--num-cpus", "1", *worker_args], env=env,
                       name="worker")
    return token, address, worker


def test_worker_cli_spill_flags(spawn_cli, s3_spot):
    from graphstore.worker.server import cluster_id_for
    server = s3_spot.server
    token, address, worker = _cli_cluster(spawn_cli, [
        "--object-store-memory", str(STORE), "--spill-to", s3_spot.url,
        "--spill-option", f"endpoint_url={server.url}",
        "--spill-option", "key=testing", "--spill-option", "secret=testing",
        "--spill-threshold", "0.5"])
    graphstore.shutdown()
    graphstore.init(address=address, token=token, log_to_driver=False)
    try:
        assert wait_for(lambda: graphstore.cluster_status()["workers"] == 1, timeout=30), \
            worker.output()
        data = {i: _data(700 + i, 16 * MB) for i in range(3)}  # 48 MB: > 50%, < 80%
        refs = {i: graphstore.put(a) for i, a in data.items()}
        stores = _settled(threshold=0.5)
        assert stores[0]["spilled_objects"] >= 1 and stores[0]["spill_url"] == s3_spot.url
        keys = s3_spot.keys()
        assert keys and all(k.startswith(f"{s3_spot.path}/{cluster_id_for(address)}/")
                            for k in keys), keys
        _check_all(refs, data)
        refs.clear()
        assert wait_for(lambda: s3_spot.keys() == []), "keys of freed objects remain"
    finally:
        graphstore.shutdown()


def test_worker_cli_rejects_a_malformed_spill_option():
    run = _cli("worker", "tcp://127.0.0.1:1", "--spill-option", "endpoint_url",
               env={"GRAPHSTORE_TOKEN": "x" * 32}, timeout=30)
    assert run.returncode == 2
    assert "--spill-option expects KEY=VALUE" in run.stderr and "endpoint_url" in run.stderr


def test_worker_cli_with_an_unusable_spill_target_refuses_to_start(spawn_cli, moto_s3):
    token, address, worker = _cli_cluster(spawn_cli, [
        "--object-store-memory", str(STORE),
        "--spill-to", "s3://gstest-no-such-bucket/spill",
        "--spill-option", f"endpoint_url={moto_s3.url}",
        "--spill-option", "key=testing", "--spill-option", "secret=testing"])
    graphstore.shutdown()
    graphstore.init(address=address, token=token, log_to_driver=False)
    try:
        joined = wait_for(lambda: worker.popen.poll() is not None
                          or graphstore.cluster_status()["workers"] > 0, timeout=30)
        assert joined
        assert graphstore.cluster_status()["workers"] == 0, \
            "a worker that cannot spill joined the cluster"
        assert worker.popen.wait(10) != 0
        assert "s3://gstest-no-such-bucket/spill" in worker.output()
    finally:
        graphstore.shutdown()


def test_graphstore_memory_text_shows_spilling(fresh_cluster, local, tmp_path):
    fresh_cluster(num_cpus=1, object_store_memory=STORE, spill_to=str(tmp_path))
    refs = [graphstore.put(_data(800 + i, 16 * MB)) for i in range(5)]
    _settled()
    graphstore.get(refs[0])
    run = _cli("memory", "--address", graphstore.session._driver.address,
               env={"GRAPHSTORE_TOKEN": local().token})
    assert run.returncode == 0, run.stderr
    stores_part = run.stdout.split("--- objects")[0]
    header = run.stdout.split("--- objects")[1].splitlines()[0]
    assert "spilled" in stores_part and "/s" in stores_part, run.stdout
    assert "spilled" in header, header
