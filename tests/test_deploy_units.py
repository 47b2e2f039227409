"""The pure parts of ``graphstore.deploy``: argument checks, the worker job's batch
script, and the adaptive policy, with no batch system and no process."""
from __future__ import annotations

import subprocess

import pytest

from graphstore.deploy.adaptive import AdaptivePolicy
from graphstore.deploy.job_script import (WorkerJob, check_walltime, parse_memory,
                                          slurm_memory)


# -- sizes and times --------------------------------------------------------------------

@pytest.mark.parametrize("text, size", [
    ("4GB", 4 * 10**9), ("4 GB", 4 * 10**9), ("4GiB", 4 * 2**30), ("4G", 4 * 2**30),
    ("512MiB", 512 * 2**20), ("1.5 gib", int(1.5 * 2**30)), ("100", 100), (2**31, 2**31),
    ("10kB", 10_000), ("3T", 3 * 2**40),
])
def test_parse_memory_reads_decimal_binary_and_slurm_units(text, size):
    assert parse_memory(text) == size


@pytest.mark.parametrize("bad", ["4 GBs", "four GB", "", "-1GB", "4 XB", 0, True, None, 1.5])
def test_parse_memory_names_the_argument(bad):
    with pytest.raises(ValueError, match="^object_store_memory must be"):
        parse_memory(bad, "object_store_memory")


def test_slurm_memory_rounds_up_to_whole_mib():
    assert slurm_memory(2**30) == "1024M"
    assert slurm_memory(2**30 + 1) == "1025M"
    assert slurm_memory(10) == "1M"


@pytest.mark.parametrize("good", ["30", "10:00", "01:30:00", "2-00", "2-12:30",
                                  "1-00:00:00", " 00:05:00 "])
def test_walltime_accepts_slurm_formats(good):
    assert check_walltime(good) == good.strip()


@pytest.mark.parametrize("bad", ["1h", "1:2:3:4", "", "00:30:00;rm -rf /", "1-", 30])
def test_walltime_rejects_anything_else_naming_it(bad):
    with pytest.raises(ValueError, match="^walltime must be"):
        check_walltime(bad)


# -- the job script ---------------------------------------------------------------------

def _job(**kw) -> WorkerJob:
    args = dict(cores=4, memory=8 * 2**30, walltime="01:00:00", python="/opt/venv/bin/python")
    args.update(kw)
    return WorkerJob(**args)


def test_job_script_has_directives_prologue_and_worker_command():
    job = _job(queue="gpu", account="proj1", log_directory="/shared/logs",
               job_extra_directives=["--gres=gpu:1", "--exclusive"],
               job_script_prologue=["module load python", "source /opt/venv/bin/activate"],
               worker_extra_args=["--spill-to", "/scratch/spill"])
    script = job.render("tcp://10.0.0.1:6380", "c1")
    lines = script.splitlines()
    assert lines[0] == "#!/usr/bin/env bash"
    directives = [line for line in lines if line.startswith("#SBATCH")]
    assert directives == [
        "#SBATCH -J graphstore-worker", "#SBATCH -o /shared/logs/graphstore-worker-%j.out",
        "#SBATCH -p gpu", "#SBATCH -A proj1", "#SBATCH -n 1", "#SBATCH --cpus-per-task=4",
        "#SBATCH --mem=8192M", "#SBATCH -t 01:00:00", "#SBATCH --gres=gpu:1",
        "#SBATCH --exclusive"]
    body = lines[len(directives) + 1:]
    assert body[1:3] == ["module load python", "source /opt/venv/bin/activate"]
    assert body[3] == (
        "exec /opt/venv/bin/python -m graphstore.worker tcp://10.0.0.1:6380 --host 0.0.0.0 "
        f"--num-cpus 4 --object-store-memory {int(8 * 2**30 * 0.3)} "
        "--label graphstore_cluster=c1 --label \"slurm_job_id=$SLURM_JOB_ID\" "
        "--spill-to /scratch/spill")
    assert "TOKEN" not in script.upper()


def test_job_script_with_several_workers_per_job_and_skipped_directives():
    job = _job(cores=4, processes=2, object_store_memory=2**30, job_directives_skip=["-t "])
    script = job.render("tcp://h:1", "c1")
    assert "#SBATCH -t" not in script
    assert "--num-cpus 2 --object-store-memory 1073741824" in script
    assert "for i in $(seq 2); do" in script and script.rstrip().endswith("wait")
    assert "exec " not in script


def test_job_script_is_valid_bash():
    script = _job(processes=2).render("tcp://h:1", "c1")
    done = subprocess.run(["bash", "-n"], input=script, text=True, capture_output=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("kw, name", [
    (dict(cores=0), "cores"), (dict(cores=2.5), "cores"), (dict(processes=5), "processes"),
    (dict(processes=0), "processes"), (dict(job_name="a b"), "job_name"),
    (dict(queue="q;rm"), "queue"), (dict(account=""), "account"),
    (dict(job_extra_directives="--exclusive"), "job_extra_directives"),
    (dict(job_script_prologue=["a\nb"]), "job_script_prologue"),
    (dict(object_store_memory=9 * 2**30), "object_store_memory"),
])
def test_bad_job_arguments_name_themselves(kw, name):
    with pytest.raises(ValueError, match=f"^{name}"):
        _job(**kw)


# -- the adaptive policy ----------------------------------------------------------------

def test_policy_grows_at_once_to_cover_queued_and_busy_cpus():
    policy = AdaptivePolicy(minimum=0, maximum=10, cores_per_job=2)
    assert policy.decide(queued_tasks=0, busy_cpus=0, current_jobs=0) == 0
    assert policy.decide(queued_tasks=5, busy_cpus=0, current_jobs=0) == 3
    assert policy.decide(queued_tasks=3, busy_cpus=2, current_jobs=3) == 3
    assert policy.decide(queued_tasks=40, busy_cpus=6, current_jobs=3) == 10   # bounded


def test_policy_shrinks_only_after_wait_count_low_checks_in_a_row():
    policy = AdaptivePolicy(minimum=1, maximum=10, cores_per_job=1, wait_count=3)
    assert policy.decide(0, 0, current_jobs=4) == 4
    assert policy.decide(0, 0, current_jobs=4) == 4
    assert policy.decide(2, 2, current_jobs=4) == 4      # demand again: streak resets
    assert policy.decide(0, 1, current_jobs=4) == 4
    assert policy.decide(0, 1, current_jobs=4) == 4
    assert policy.decide(0, 1, current_jobs=4) == 1      # third low check in a row
    assert policy.decide(0, 0, current_jobs=1) == 1      # never below minimum


def test_policy_keeps_the_minimum_and_leaves_pending_jobs_to_come():
    policy = AdaptivePolicy(minimum=2, maximum=3, cores_per_job=4, wait_count=1)
    assert policy.decide(0, 0, current_jobs=0) == 2
    # Two jobs pending cover 5 queued tasks' worth of 8 CPUs: nothing more is submitted.
    assert policy.decide(5, 0, current_jobs=2) == 2
    assert policy.decide(8, 4, current_jobs=5) == 3      # above maximum: back down
    assert policy.decide(0, 0, current_jobs=3) == 2      # idle: the minimum


@pytest.mark.parametrize("kw", [dict(minimum=-1), dict(maximum=1, minimum=2),
                                dict(cores_per_job=0), dict(wait_count=1.5)])
def test_policy_rejects_bad_bounds(kw):
    args = dict(minimum=0, maximum=4, cores_per_job=1)
    args.update(kw)
    with pytest.raises(ValueError):
        AdaptivePolicy(**args)
