"""``SLURMCluster`` against a real SLURM: munged, slurmctld and slurmd from Debian's
packages, started for this module on this host (``tests/slurm.py``). Worker jobs are
real batch jobs that run ``graphstore worker``; the driver runs real tasks on them.

The module skips only where SLURM cannot run at all (not root, or not installed; the
reason says which); ``.ci/run`` installs the packages.
"""
from __future__ import annotations

import os
import time

import pytest

import graphstore
import slurm as local_slurm
from fixtures.processes import cmdline, session_processes
from graphstore.deploy import SLURMCluster
from graphstore.deploy.slurm import SLURMCommandError
from helpers import process_alive, run_example, wait_for

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def slurm():
    reason = local_slurm.unavailable_reason()
    if reason:
        pytest.skip(reason)
    local_slurm.sweep_stale()
    instance = local_slurm.LocalSlurm(cpus=4, memory_mb=8192).start()
    saved = {k: os.environ.get(k) for k in ("SLURM_CONF", "PYTHONPATH")}
    os.environ["SLURM_CONF"] = str(instance.conf)   # SLURMCluster uses the user's SLURM
    # Jobs get the submitting environment: the workers import this module's functions
    # from the tests folder, as a user's would from a shared file system.
    os.environ["PYTHONPATH"] = os.pathsep.join(
        filter(None, [os.path.dirname(__file__), saved["PYTHONPATH"]]))
    try:
        yield instance
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        instance.stop()


def _cluster(slurm, **kw) -> SLURMCluster:
    args = dict(cores=1, memory="512MiB", walltime="00:10:00",
                log_directory=slurm.dir / "jobs", object_store_memory="128MiB")
    args.update(kw)
    return SLURMCluster(**args)


def _processes_of(cluster: SLURMCluster) -> list:
    """This session's graphstore processes that belong to ``cluster``."""
    return [p for p in session_processes()
            if cluster.address in cmdline(p) or cluster._local.session_name in cmdline(p)]


@graphstore.remote
def where(x):
    time.sleep(0.05)
    return x * x, os.getpid(), os.environ.get("SLURM_JOB_ID")


@graphstore.remote
def put_here(i):
    """Store an object in this worker's store with put() (which leaves no lineage: lost
    with its only copy) and return its ref and this job's id."""
    import numpy as np
    time.sleep(0.05)
    return [graphstore.put(np.full(250_000, i, dtype=np.int32))], \
        os.environ.get("SLURM_JOB_ID")


def test_scale_runs_work_on_worker_jobs_and_close_leaves_nothing(slurm):
    with _cluster(slurm) as cluster:
        assert cluster.address.startswith("tcp://") and "127.0.0.1" not in cluster.address
        cluster.scale(2)
        assert len(cluster.job_ids()) == 2
        rows = cluster.wait_for_workers(2, timeout=60)
        jobs = {row["labels"]["slurm_job_id"] for row in rows}
        assert jobs == set(cluster.job_ids())
        assert set(slurm.jobs()) == jobs

        graphstore.shutdown()      # the session's shared cluster, if a test left it
        graphstore.init(address=cluster.address, token=cluster.token)
        try:
            results = graphstore.get([where.remote(i) for i in range(40)])
            assert [r[0] for r in results] == [i * i for i in range(40)]
            # The tasks ran inside both batch jobs, in the workers the scheduler lists.
            assert {r[2] for r in results} == jobs
            assert {r[1] for r in results} == {row["pid"] for row in rows}

            stored = graphstore.get([put_here.remote(i) for i in range(12)])
            newest = cluster.job_ids()[-1]
            assert newest in {job for _, job in stored}
            cluster.scale(1)
            assert cluster.job_ids() == [j for j in sorted(jobs) if j != newest]
            left = wait_for(lambda: len(cluster.workers()) == 1
                            and newest not in slurm.jobs(), timeout=30)
            assert left, (cluster.workers(), slurm.jobs())
            # The objects put in the cancelled job's store were copied before it went.
            values = graphstore.get([refs[0] for refs, _ in stored], timeout=30)
            assert [int(v[0]) for v in values] == list(range(12))
            assert all(v.shape == (250_000,) and (v == v[0]).all() for v in values)
        finally:
            graphstore.shutdown()
        pids = [row["pid"] for row in rows]
    assert slurm.jobs() == []
    assert wait_for(lambda: not any(process_alive(pid) for pid in pids), timeout=10)
    assert wait_for(lambda: not _processes_of(cluster), timeout=10), _processes_of(cluster)
    cluster.close()                        # a second close does nothing


def test_adapt_grows_with_queued_work_and_shrinks_when_idle(slurm, tmp_path):
    gate = tmp_path / "gate"

    @graphstore.remote
    def held(i):
        deadline = time.monotonic() + 60
        while not os.path.exists(gate) and time.monotonic() < deadline:
            time.sleep(0.02)
        return i

    with _cluster(slurm) as cluster:
        cluster.adapt(minimum=0, maximum=3, interval=0.3, wait_count=2)
        time.sleep(1.0)
        assert cluster.job_ids() == []                       # no work: no job
        graphstore.shutdown()      # the session's shared cluster, if a test left it
        graphstore.init(address=cluster.address, token=cluster.token)
        try:
            refs = [held.remote(i) for i in range(5)]
            # 5 queued one-CPU tasks: jobs up to the maximum, and workers that join.
            assert wait_for(lambda: len(cluster.job_ids()) == 3, timeout=20), \
                cluster.job_ids()
            cluster.wait_for_workers(3, timeout=60)
            gate.touch()
            assert sorted(graphstore.get(refs, timeout=60)) == list(range(5))
        finally:
            graphstore.shutdown()
        # Idle: every job is cancelled (minimum 0), and SLURM lets them go.
        assert wait_for(lambda: cluster.job_ids() == [] and slurm.jobs() == [], timeout=30), \
            (cluster.job_ids(), slurm.jobs())
        assert wait_for(lambda: cluster.workers() == [], timeout=15)
    assert slurm.jobs() == []


def test_job_script_says_what_is_submitted(slurm):
    with _cluster(slurm, cores=2, processes=2, queue=slurm.partition,
                  job_script_prologue=["export GS_PROLOGUE=1"]) as cluster:
        script = cluster.job_script()
        assert f"#SBATCH -p {slurm.partition}" in script
        assert "#SBATCH --cpus-per-task=2" in script and "#SBATCH --mem=512M" in script
        assert "export GS_PROLOGUE=1" in script
        assert f"-m graphstore.worker {cluster.address} " in script
        assert cluster.token not in script
        # Both workers of the one job join, each with its share of the cores.
        cluster.scale(jobs=1)
        rows = cluster.wait_for_workers(2, timeout=60)
        assert len({row["labels"]["slurm_job_id"] for row in rows}) == 1
        assert [row["num_cpus"] for row in rows] == [1.0, 1.0]
    assert slurm.jobs() == []


def test_sbatch_errors_carry_sbatch_stderr(slurm, monkeypatch):
    with _cluster(slurm, queue="no-such-partition") as cluster:
        with pytest.raises(SLURMCommandError, match="(?i)invalid partition"):
            cluster.scale(1)
        assert cluster.job_ids() == []
        monkeypatch.setenv("PATH", "/nonexistent")
        with pytest.raises(SLURMCommandError, match="sbatch not found on PATH"):
            cluster.scale(1)
    assert slurm.jobs() == []


def test_example_runs_on_worker_jobs(slurm, run_driver):
    run = run_example(run_driver, "slurm_cluster.py", "--jobs", "2", "--tasks", "12",
                      "--log-directory", str(slurm.dir / "jobs"), timeout=120)
    assert "#SBATCH --cpus-per-task=1" in run.stdout
    assert "pi ~= 3.1" in run.stdout
    per_job = run.stdout.split("tasks per job: ")[1].splitlines()[0]
    assert per_job.count(":") == 2                       # both jobs ran tasks
    assert "a put() object is still here: 100,000 items" in run.stdout
    assert slurm.jobs() == []


@pytest.mark.parametrize("kw, name", [
    (dict(memory="4 GBs"), "memory"), (dict(walltime="1h"), "walltime"),
    (dict(cores=0), "cores"), (dict(jobs=-1), "jobs"), (dict(port=70000), "port"),
])
def test_bad_arguments_are_refused_before_anything_starts(kw, name):
    before = len(session_processes())
    with pytest.raises(ValueError, match=f"^{name}"):
        SLURMCluster(**kw)
    assert len(session_processes()) == before
