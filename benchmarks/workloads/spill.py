"""The spill suite: 2 GiB through a 512 MiB store that spills, to local disk
and to S3 (a moto server), against plain sequential I/O of the same bytes.

2 GiB (32 objects of 64 MiB) put through a 512 MiB store that spills above
80% of its capacity (``backends.SPILL_THRESHOLD``), then every object got
back once.  Each run restarts the backend with a fresh spill directory (or
S3 prefix) through ``Backend.init_spilling`` and removes it afterwards, so
these workloads run last in the child.  The report checks the targets of
issue 5 (``targets.SPILL_TARGETS``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time

from backends import Backend
from moto_server import shared_moto
from records import note

from .base import GB, GS_ONLY, Metric, Workload, now

SPILL_OBJECT_BYTES = 64 * 2**20
SPILL_BYTES = 2 * 2**30                # 32 objects
SPILL_WARMUP_BYTES = 2**30             # 16 objects: still spills about 600 MB
SPILL_STORE_BYTES = 512 * 2**20
# The spill directories and the plain reference file live here (the system
# temp dir, /tmp: the same disk for all three).
SPILL_PARENT = tempfile.gettempdir()
S3_BUCKET = "graphstore-bench-spill"

_spill_array = None


def spill_array():
    """One 64 MiB float64 array (``arange``: every page written), made once per
    process; element 0 and -1 are set to the object's index before each put so
    that every object is distinct and its restore can be checked."""
    global _spill_array
    if _spill_array is None:
        import numpy as np
        _spill_array = np.arange(SPILL_OBJECT_BYTES // 8, dtype=np.float64)
    return _spill_array


_cache_noted = False


def settle_disk() -> None:
    """Before each timed phase: ``sync``, then drop the page cache (root only),
    so that writes do not pay for earlier phases' dirty pages and reads come
    from the disk rather than from memory."""
    global _cache_noted
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as fh:
            fh.write("3\n")
        dropped = True
    except OSError as e:
        dropped = False
        why = f"{type(e).__name__}: {e}"
    if not _cache_noted:
        _cache_noted = True
        note("spill suite: before each timed phase `sync` ran and the page cache "
             + ("was dropped (`echo 3 > /proc/sys/vm/drop_caches`), so restores and "
                "the plain read come from the disk" if dropped else
                f"could NOT be dropped ({why}), so reads may come from the page cache"))


def plain_file_round_trip(directory: str, n_objects: int) -> dict[str, float]:
    """The reference: the same bytes (the same 64 MiB buffer ``n_objects``
    times) written sequentially to one file in ``directory`` with plain
    unbuffered ``write`` calls, without fsync (as the spillers), then read back
    sequentially with ``readinto`` a preallocated, pre-touched 64 MiB buffer.
    ``fsync`` runs after the timed write and is timed on its own (context)."""
    import numpy as np
    src = memoryview(spill_array()).cast("B")
    path = os.path.join(directory, "plain-reference.bin")
    nbytes = n_objects * SPILL_OBJECT_BYTES
    settle_disk()
    with open(path, "wb", buffering=0) as fh:
        t0 = now()
        for _ in range(n_objects):
            done = 0
            while done < src.nbytes:
                done += fh.write(src[done:])
        t_write = now() - t0
        os.fsync(fh.fileno())
        t_fsync = now() - t0 - t_write
    dst = np.ones(SPILL_OBJECT_BYTES, dtype=np.uint8)   # every page touched
    view = memoryview(dst)
    settle_disk()
    with open(path, "rb", buffering=0) as fh:
        t0 = now()
        for _ in range(n_objects):
            got = 0
            while got < view.nbytes:
                k = fh.readinto(view[got:])
                if not k:
                    raise RuntimeError(f"{path} ended early")
                got += k
        t_read = now() - t0
    os.remove(path)
    return {"plain_write_gbps": nbytes / t_write / GB,
            "plain_write_fsync_gbps": nbytes / (t_write + t_fsync) / GB,
            "plain_read_gbps": nbytes / t_read / GB}


def spill_round_trip(b: Backend, n_objects: int, prefix: str = "") -> dict[str, float]:
    """Put ``n_objects`` 64 MiB arrays (puts wait while the store spills), then
    get each back once (restores), touching one float64 per 4 KiB page and
    checking its index.  The backend is already restarted with spilling."""
    arr = spill_array()
    nbytes = n_objects * SPILL_OBJECT_BYTES
    settle_disk()
    before = b.spill_stats()
    refs = []
    t0 = now()
    for i in range(n_objects):
        arr[0] = arr[-1] = i
        refs.append(b.put_large(arr))
    t_put = now() - t0
    time.sleep(1.0)     # untimed: background spilling past the threshold ends
    middle = b.spill_stats()
    settle_disk()
    t0 = now()
    for i, ref in enumerate(refs):
        x = b.get(ref)
        float(x[::512].sum())               # one float64 in every 4 KiB page
        if x[0] != i or x[-1] != i:
            raise AssertionError(f"object {i} came back as {x[0]}..{x[-1]}")
        del x
    t_get = now() - t0
    after = b.spill_stats()
    del refs
    out = {f"{prefix}spill_gbps": nbytes / t_put / GB,
           f"{prefix}restore_gbps": nbytes / t_get / GB}
    if before is not None and after is not None:
        if after.get("last_spill_error"):
            note(f"{prefix or 'disk '}spilling reported an error: "
                 f"{after['last_spill_error']}")
        spilled = after["spilled_bytes"] - before["spilled_bytes"]
        spill_s = after["spill_seconds"] - before["spill_seconds"]
        restored = after["restored_bytes"] - middle["restored_bytes"]
        restore_s = after["restore_seconds"] - middle["restore_seconds"]
        out.update({
            f"{prefix}spilled_during_put_gb": (middle["spilled_bytes"]
                                               - before["spilled_bytes"]) / GB,
            f"{prefix}restored_gb": restored / GB,
            f"{prefix}counter_spill_gbps": spilled / spill_s / GB if spill_s else 0.0,
            f"{prefix}counter_restore_gbps": restored / restore_s / GB if restore_s else 0.0,
        })
    return out


def spill_disk(b: Backend, nbytes: int) -> dict[str, float]:
    """Spilling to a local directory, paired with the plain file reference in
    the same directory, right before it in the same run."""
    n_objects = nbytes // SPILL_OBJECT_BYTES
    directory = tempfile.mkdtemp(prefix="gs-bench-spill-", dir=SPILL_PARENT)
    try:
        spill_dir = os.path.join(directory, "spill")
        os.makedirs(spill_dir)
        b.init_spilling(SPILL_STORE_BYTES, spill_dir)
        before = plain_file_round_trip(directory, n_objects)
        result = spill_round_trip(b, n_objects)
        after = plain_file_round_trip(directory, n_objects)
    finally:
        try:
            b.shutdown()
        finally:
            shutil.rmtree(directory, ignore_errors=True)
    # The reference is the faster of the two plain round trips around the
    # backend's (each rate separately): page-cache writes on this VM swing by
    # up to 10x with what ran just before (e.g. 0.5 GB/s after a few idle
    # seconds, 5 GB/s right after other I/O), so the better one is the
    # stricter reference.  Both are kept in the samples.
    for key, value in before.items():
        result[key] = max(value, after[key])
        result[key.replace("_gbps", "_before_gbps")] = value
        result[key.replace("_gbps", "_after_gbps")] = after[key]
    result["spill_vs_write"] = result["spill_gbps"] / result["plain_write_gbps"]
    result["restore_vs_read"] = result["restore_gbps"] / result["plain_read_gbps"]
    return result


def spill_s3(b: Backend, nbytes: int) -> dict[str, float]:
    """Spilling to S3: a moto server started once per process."""
    moto = shared_moto(S3_BUCKET)
    prefix = f"{S3_BUCKET}/run-{os.urandom(4).hex()}"
    b.init_spilling(SPILL_STORE_BYTES, f"s3://{prefix}", moto.options)
    try:
        result = spill_round_trip(b, nbytes // SPILL_OBJECT_BYTES, prefix="s3_")
    finally:
        b.shutdown()
    moto.fs.invalidate_cache()
    left = moto.fs.find(prefix)
    if left:
        note(f"S3 spilling left {len(left)} key(s) under s3://{prefix} after shutdown")
        moto.fs.rm(prefix, recursive=True)
    return result


SPILL_BACKENDS = ("graphstore", "ray")

WORKLOADS: list[Workload] = [
    Workload("spill_disk", spill_disk, size=SPILL_BYTES, warmup_size=SPILL_WARMUP_BYTES,
             suite="spill", cluster="spill", settle_s=1.0,
             metrics=(Metric("spill_gbps", "Spill: 2 GiB put through the 512 MiB store "
                             "to local disk (end to end)", "GB/s", True, only=SPILL_BACKENDS),
                      Metric("restore_gbps", "Restore: all 2 GiB got back from local "
                             "disk (end to end)", "GB/s", True, only=SPILL_BACKENDS),
                      Metric("plain_write_gbps", "Plain sequential write of the same "
                             "2 GiB, same directory, no fsync (reference; better of 2 "
                             "per run)", "GB/s", True, only=SPILL_BACKENDS),
                      Metric("plain_read_gbps", "Plain sequential read of it, page cache "
                             "dropped (reference; better of 2 per run)", "GB/s", True,
                             only=SPILL_BACKENDS),
                      Metric("spill_vs_write", "spill ÷ plain write (median of paired "
                             "runs)", "×", True, only=SPILL_BACKENDS),
                      Metric("restore_vs_read", "restore ÷ plain read (median of paired "
                             "runs)", "×", True, only=SPILL_BACKENDS),
                      Metric("plain_write_fsync_gbps", "Plain write including its fsync "
                             "(what the disk itself sustains; context)", "GB/s", True,
                             only=SPILL_BACKENDS),
                      Metric("spilled_during_put_gb", "Bytes spilled while putting "
                             "(store counters)", "GB", True, only=GS_ONLY),
                      Metric("restored_gb", "Bytes restored while getting back "
                             "(store counters)", "GB", True, only=GS_ONLY),
                      Metric("counter_spill_gbps", "Spiller write throughput (store "
                             "counters: spilled bytes ÷ spilling time)", "GB/s", True,
                             only=GS_ONLY),
                      Metric("counter_restore_gbps", "Restore throughput (store counters: "
                             "restored bytes ÷ restoring time)", "GB/s", True,
                             only=GS_ONLY)),
             description="graphstore and Ray (Dask: N/A, see the notes). Each run "
                         "restarts the backend as one worker with a 512 MiB store "
                         "spilling above 80% of it to a fresh directory under "
                         f"{SPILL_PARENT} (graphstore: `init(num_cpus=1, "
                         "object_store_memory=512 MiB, spill_to=DIR, "
                         "spill_threshold=0.8)`; Ray: `init(num_cpus=1, "
                         "object_store_memory=512 MiB, _system_config={"
                         "'object_spilling_config': {'type': 'filesystem', 'params': "
                         "{'directory_path': DIR}}})`, whose spilling threshold is "
                         "0.8 by default). In the same run, before and again after the "
                         "backend's part, the plain reference: the same 2 GiB (the "
                         "same 64 MiB buffer 32 times) written sequentially to one "
                         "file in the same directory with unbuffered `write` calls, "
                         "no fsync (neither spiller fsyncs), then read back with "
                         "`readinto` a preallocated, pre-touched 64 MiB buffer, then "
                         "deleted (the fsync after the write is timed separately, for "
                         "the context row). Each plain rate is the better of the two "
                         "(both are in the samples, `_before`/`_after`): on this VM a "
                         "page-cache write swings by up to 10x with what ran just "
                         "before it (about 0.5 GB/s after a few idle seconds, 5 GB/s "
                         "right after other I/O), and the better one is the stricter "
                         "reference. The backend's part: 32 puts of distinct "
                         "64 MiB float64 arrays (puts wait while the store spills); "
                         "**spill** = 2 GiB ÷ time of the 32 puts; then, after 1 s, "
                         "each object got back once in put order, touching one "
                         "float64 per 4 KiB page and checking the object's index; "
                         "**restore** = 2 GiB ÷ time of the 32 gets. Before each timed "
                         "phase (plain write, plain read, puts, gets): `sync` and the "
                         "page cache dropped (see the notes). graphstore's store "
                         "counters (`memory_summary()['stores']`) show every object "
                         "restored in the get phase (restored bytes row); Ray's "
                         "counters are not readable here (its memory summary needs "
                         "grpc), but timing its gets one by one (a side check when "
                         "this was written) showed each of the 32 taking 23 ms or "
                         "more, i.e. restores (a get from memory takes under 1 ms). "
                         "Both phases include the in-memory part (about 400 MB stays "
                         "in the store), the same for both. The ratio rows are "
                         "medians of the per-run ratios. One untimed warm-up run "
                         "with 1 GiB."),
    Workload("spill_s3", spill_s3, size=SPILL_BYTES, warmup_size=SPILL_WARMUP_BYTES,
             suite="spill", cluster="spill", settle_s=1.0,
             metrics=(Metric("s3_spill_gbps", "S3 (moto server): spill, 2 GiB put "
                             "through the 512 MiB store (end to end)", "GB/s", True,
                             only=GS_ONLY),
                      Metric("s3_restore_gbps", "S3 (moto server): restore, all 2 GiB "
                             "got back (end to end)", "GB/s", True, only=GS_ONLY),
                      Metric("s3_counter_spill_gbps", "S3: spiller write throughput "
                             "(store counters)", "GB/s", True, only=GS_ONLY),
                      Metric("s3_counter_restore_gbps", "S3: restore throughput (store "
                             "counters)", "GB/s", True, only=GS_ONLY),
                      Metric("s3_spilled_during_put_gb", "S3: bytes spilled while "
                             "putting (store counters)", "GB", True, only=GS_ONLY),
                      Metric("s3_restored_gb", "S3: bytes restored while getting back "
                             "(store counters)", "GB", True, only=GS_ONLY)),
             description="graphstore only (no target; Ray's S3 spilling needs "
                         "smart_open and is not benchmarked here). The same workload "
                         "as spill_disk, spilling to `s3://BUCKET/run-ID` on a real "
                         "moto server (`python -m moto.server -H 127.0.0.1 -p PORT`, "
                         "started once per process, objects held in its memory; bucket "
                         "created through s3fs) with `spill_options={'key': 'testing', "
                         "'secret': 'testing', 'client_kwargs': {'endpoint_url': URL, "
                         "'region_name': 'us-east-1'}}`; after each run the prefix is "
                         "checked to be empty (shutdown removes it)."),
]
