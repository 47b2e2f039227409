"""Issue 14's single-node envelope, small scale, in CI: every check of
``benchmarks/envelope.py --scale small`` passes on graphstore under ``ulimit -n 1024``
(soft and hard), and no process of the cluster ever holds more than 256 descriptors
into /dev/shm.

The envelope runs once per module, in a process of its own whose descriptor limit is
1024 soft and hard before it starts (it sets the same limit on each check's process,
again before exec, so no graphstore process can lift it). Each check is then one test,
so a failure names the check and carries the harness's error text.
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ENVELOPE = ROOT / "benchmarks" / "envelope.py"
CHECKS = ("returns", "lists", "get", "get_tasks", "hold", "noop", "largest")
NOFILE = 1024
MAX_STORE_FDS = 256
#: The small scale's stores are at most 1 GiB per worker, two workers.
SHM_NEEDED = 2 * 1024**3

pytestmark = pytest.mark.timeout(600)


def _limit_nofile() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, NOFILE))


@pytest.fixture(scope="module")
def envelope(tmp_path_factory):
    st = os.statvfs("/dev/shm")
    free = st.f_bavail * st.f_frsize
    if free < SHM_NEEDED:
        pytest.skip(f"/dev/shm has {free / 1024**3:.1f} GiB free; the small envelope "
                    f"needs {SHM_NEEDED / 1024**3:.0f} GiB (two 1 GiB stores)")
    out = tmp_path_factory.mktemp("envelope") / "results.json"
    run = subprocess.run(
        [sys.executable, str(ENVELOPE), "--scale", "small", "--backends", "graphstore",
         "--checks", ",".join(CHECKS), "--timeout", "150", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=570, preexec_fn=_limit_nofile)
    assert run.returncode == 0, run.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["nofile_limit"] == NOFILE and data["max_store_fds"] == MAX_STORE_FDS
    return {r["check"]: r for r in data["results"]}, run.stdout


@pytest.mark.parametrize("check", CHECKS)
def test_envelope_check_passes_under_ulimit_1024(envelope, check):
    results, _report = envelope
    r = results[check]
    seen = (f"phases {r['phases']}; most descriptors {r['max_fds']} in "
            f"{r['max_fds_proc']}, into /dev/shm {r['max_shm_fds']} in "
            f"{r['max_shm_fds_proc']}")
    # The limit really was 1024/1024, in the driver and in every cluster process.
    assert r["limits"] == [NOFILE, NOFILE], r["limits"]
    assert r["process_limits"], "no process of the check was sampled"
    assert set(r["process_limits"].values()) <= {f"{NOFILE}/{NOFILE}", "?"}, \
        r["process_limits"]
    assert r["status"] == "ok", f"{check} failed: {r['error']} ({seen})"
    assert r["max_shm_fds"] <= MAX_STORE_FDS, \
        f"{r['max_shm_fds_proc']} held {r['max_shm_fds']} descriptors into /dev/shm"
    assert r["passed"], r["error"]
    # Nothing of the cluster outlived the check (processes, /dev/shm segments).
    assert not [n for n in r["notes"] if "outlived" in n or "left running" in n], \
        r["notes"]
