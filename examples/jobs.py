"""Jobs: programs handed to a running cluster, as with ``ray job submit`` (docs/jobs.md).

This script plays both parts. As the operator it starts a cluster from the command line
(``graphstore scheduler`` and ``graphstore worker``, logging into a temporary
directory). As the user it writes a small project, submits it as a job with its
working directory through ``JobSubmissionClient``, follows the job's output, submits
the same directory again (nothing is uploaded the second time), and stops a job that
would run for a minute. At the end it stops the cluster, which leaves nothing running.

    python examples/jobs.py

The same from a shell, against any cluster::

    graphstore job submit --address tcp://HOST:PORT --working-dir project -- python main.py
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import graphstore
from graphstore.job_submission import JobStatus, JobSubmissionClient

MAIN = """\
import graphstore
import words                   # a module of the working directory

graphstore.init()              # no address: the cluster that runs this job

@graphstore.remote
def count(line):
    import words               # tasks run in the working directory too
    return words.count(line)

lines = open("data/poem.txt").read().splitlines()
counts = graphstore.get([count.remote(line) for line in lines])
print(f"{len(lines)} lines, {sum(counts)} words: {counts}")
"""


def make_project(root: Path) -> Path:
    project = root / "project"
    (project / "data").mkdir(parents=True)
    (project / "main.py").write_text(MAIN)
    (project / "words.py").write_text("def count(line):\n    return len(line.split())\n")
    (project / "data" / "poem.txt").write_text(
        "so much depends\nupon\na red wheel\nbarrow\n")
    return project


def start_cluster(root: Path) -> tuple[str, str, list[subprocess.Popen]]:
    """``graphstore scheduler --port 0`` and one 2-CPU ``graphstore worker``."""
    env = {**os.environ, "TMPDIR": str(root), "PYTHONUNBUFFERED": "1"}
    env.pop("GRAPHSTORE_TOKEN", None)
    token_file = root / "token"
    scheduler = subprocess.Popen(
        [sys.executable, "-m", "graphstore.cli", "scheduler", "--port", "0",
         "--token-file", str(token_file), "--dashboard-port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
        env=env, text=True)
    address = ""
    for line in scheduler.stdout:
        if line.startswith("graphstore scheduler listening at "):
            address = line.split()[-1]
            break
    if not address:
        raise SystemExit(f"the scheduler did not start (exit code {scheduler.wait()})")
    scheduler.stdout.close()
    token = token_file.read_text().strip()
    worker = subprocess.Popen(
        [sys.executable, "-m", "graphstore.cli", "worker", address, "--num-cpus", "2"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
        env={**env, "GRAPHSTORE_TOKEN": token})
    return address, token, [worker, scheduler]


def stop_cluster(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        proc.send_signal(signal.SIGTERM)       # the scheduler stops its jobs first
    for proc in procs:
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="graphstore-jobs-") as tmp:
        root = Path(tmp)
        project = make_project(root)
        address, token, procs = start_cluster(root)
        print(f"cluster at {address}")
        try:
            with JobSubmissionClient(address, token=token) as client:
                run_jobs(client, project, address, token)
        finally:
            stop_cluster(procs)


def run_jobs(client: JobSubmissionClient, project: Path, address: str,
             token: str) -> None:
    # 1. A job with its working directory, followed until it ends.
    job = client.submit_job(entrypoint=f"{sys.executable} main.py",
                            runtime_env={"working_dir": str(project)},
                            metadata={"example": "jobs.py"})
    print(f"submitted {job}")
    for chunk in client.follow_job_logs(job):
        print(f"  | {chunk}", end="")
    info = client.get_job_info(job)
    print(f"{job}: {info.status} (exit code {info.driver_exit_code})")
    assert info.status is JobStatus.SUCCEEDED, info.message

    # 2. The same directory again: its package is on the cluster already.
    again = client.submit_job(entrypoint=f"{sys.executable} main.py",
                              runtime_env={"working_dir": str(project)})
    graphstore.init(address=address, token=token, log_to_driver=False)
    try:
        uploaded = graphstore.cluster_status()["counts"]["packages_uploaded"]
    finally:
        graphstore.shutdown()
    output = "".join(client.follow_job_logs(again))
    print(f"second job {again}: {client.get_job_status(again)}, {output.strip()!r}; "
          f"packages uploaded so far: {uploaded}")
    assert uploaded == 1

    # 3. A long job, stopped: SIGTERM to its whole process group.
    long_job = client.submit_job(entrypoint="echo working; sleep 60")
    while "working" not in client.get_job_logs(long_job):
        time.sleep(0.05)
    print(f"stopping {long_job}: {client.stop_job(long_job)}")
    while not client.get_job_status(long_job).is_terminal():
        time.sleep(0.05)
    print(f"{long_job}: {client.get_job_status(long_job)}")

    print("jobs:")
    for info in client.list_jobs():
        print(f"  {info.submission_id}  {info.status.value:9}  {info.entrypoint}")


if __name__ == "__main__":
    main()
