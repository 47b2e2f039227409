"""Jobs on a cluster started by hand (``graphstore scheduler`` + ``graphstore worker``):
``graphstore job submit|status|logs|stop|list`` as processes of their own, and
``JobSubmissionClient`` from the test.

Each cluster runs with ``TMPDIR`` in the test's own directory, so its log files (and
the jobs' logs) are the test's. A job is a process group on the scheduler's host; each
test checks that the groups of its jobs are gone when the job is.
"""
from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

import graphstore
from graphstore.job_submission import JobStatus, JobSubmissionClient
from helpers import wait_for

#: A driver program the jobs run: tasks on the cluster, the job's variables, output.
SCRIPT = """\
import os, sys
import graphstore

graphstore.init()                       # no address: the job's cluster

@graphstore.remote
def square(x):
    return x * x

@graphstore.remote
def flag():
    return os.environ.get("JOB_FLAG", "unset")

print("squares", graphstore.get([square.remote(i) for i in range(4)]), flush=True)
print("task sees JOB_FLAG =", graphstore.get(flag.remote()), flush=True)
print("to stderr", file=sys.stderr, flush=True)
"""


def group_members(pgid: int) -> list[int]:
    """Live processes of process group ``pgid``."""
    members = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                members.append(proc.pid)
        except (ProcessLookupError, psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    return members


@pytest.fixture
def jobs_cluster(cli_cluster, tmp_path):
    """A scheduler and one 1-CPU worker started by hand with their own TMPDIR;
    ``gs(sub, *args)`` runs ``graphstore job SUB --address ... ARGS``, ``client`` is a
    ``JobSubmissionClient`` on it."""
    graphstore.shutdown()                  # leave the shared cluster for this test
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    env = {"TMPDIR": str(tmpdir)}
    cli = cli_cluster(num_workers=1, env=env)
    cli.job_env = {**os.environ, **env, "GRAPHSTORE_TOKEN": cli.token}
    cli.job_env.pop("GRAPHSTORE_ADDRESS", None)

    def gs(sub: str, *args: str, timeout: float = 60, cwd=None):
        return subprocess.run([sys.executable, "-m", "graphstore.cli", "job", sub,
                               "--address", cli.address, *args], capture_output=True,
                              text=True, timeout=timeout, env=cli.job_env,
                              cwd=cwd or tmp_path)
    cli.gs = gs
    cli.script = tmp_path / "driver_script.py"
    cli.script.write_text(SCRIPT)
    cli.client = JobSubmissionClient(cli.address, token=cli.token)
    started: list[str] = []
    cli.started = started
    try:
        yield cli
    finally:
        try:
            pids = [info.driver_pid for info in cli.client.list_jobs() if info.driver_pid]
        except Exception:                # the test killed the scheduler
            pids = []
        cli.client.close()
        cli.scheduler.send_signal(signal.SIGTERM)     # stops the jobs still running
        cli.scheduler.wait(15)
        left = wait_for(lambda: not any(group_members(p) for p in pids), timeout=10)
        assert left, f"job processes outlived the scheduler: " \
                     f"{[group_members(p) for p in pids]}"


def wait_status(client, sid, *statuses, timeout=30.0):
    found = wait_for(lambda: client.get_job_status(sid) in statuses, timeout=timeout,
                     interval=0.02)
    assert found, f"job {sid} is {client.get_job_status(sid)}, not {statuses}"


def test_submit_runs_a_driver_on_the_cluster_and_streams_its_output(jobs_cluster):
    gs = jobs_cluster.gs
    env_file = jobs_cluster.script.with_name("env.yaml")
    env_file.write_text("env_vars:\n  JOB_FLAG: 'on'\n")
    run = gs("submit", "--submission-id", "first-job", "--runtime-env", str(env_file),
             "--metadata-json", '{"owner": "tests"}', "--",
             sys.executable, str(jobs_cluster.script))
    assert run.returncode == 0, run.stderr
    assert "squares [0, 1, 4, 9]" in run.stdout
    # The job's runtime_env is the default one of its tasks, as in Ray.
    assert "task sees JOB_FLAG = on" in run.stdout
    assert "to stderr" in run.stdout                 # the log holds both streams
    assert "Job 'first-job' succeeded" in run.stderr

    status = gs("status", "first-job")
    assert status.returncode == 0 and "SUCCEEDED" in status.stdout
    logs = gs("logs", "first-job")
    assert logs.stdout.startswith("squares [0, 1, 4, 9]\n")
    listed = json.loads(gs("list", "--json").stdout)
    (job,) = listed
    assert job["submission_id"] == "first-job" and job["status"] == "SUCCEEDED"
    assert job["metadata"] == {"owner": "tests"} and job["driver_exit_code"] == 0
    assert job["runtime_env"] == {"env_vars": {"JOB_FLAG": "on"}}
    assert job["log_path"].endswith("/job-driver-first-job.log")
    table = gs("list").stdout.splitlines()
    assert table[0].split()[:2] == ["SUBMISSION_ID", "STATUS"]
    assert table[1].split()[:2] == ["first-job", "SUCCEEDED"]


def test_a_failing_job_exits_1_and_says_why(jobs_cluster):
    gs = jobs_cluster.gs
    failed = gs("submit", "--", sys.executable, "-c",
                "'import sys; print(\"about to fail\"); sys.exit(3)'")
    assert failed.returncode == 1
    assert "about to fail" in failed.stdout
    assert "failed: the entrypoint command failed with exit code 3" in failed.stderr
    missing = gs("submit", "--submission-id", "missing", "--", "no-such-command-xyz")
    assert missing.returncode == 1
    info = jobs_cluster.client.get_job_info("missing")
    assert info.status is JobStatus.FAILED and info.driver_exit_code == 127
    assert info.error_type == "JOB_ENTRYPOINT_COMMAND_ERROR"
    assert "not found" in info.message and "no-such-command-xyz" in info.message
    assert "no-such-command-xyz: not found" in jobs_cluster.client.get_job_logs("missing")
    # A working_dir the cluster does not have: the job cannot be prepared.
    unknown = "gspkg://" + "0" * 64 + ".zip"
    sid = jobs_cluster.client.submit_job(entrypoint="true",
                                         runtime_env={"working_dir": unknown})
    wait_status(jobs_cluster.client, sid, JobStatus.FAILED)
    info = jobs_cluster.client.get_job_info(sid)
    assert info.error_type == "RUNTIME_ENV_SETUP_FAILURE"
    assert "runtime_env setup failed" in info.message and unknown in info.message
    assert "runtime_env setup failed" in jobs_cluster.client.get_job_logs(sid)


def test_bad_requests_are_refused_and_the_scheduler_serves_on(jobs_cluster):
    gs, client = jobs_cluster.gs, jobs_cluster.client
    empty = gs("submit", "--")
    assert empty.returncode == 2 and "no entrypoint" in empty.stderr
    with pytest.raises(ValueError, match="non-empty"):
        client.submit_job(entrypoint="  ")
    unknown = gs("status", "no-such-job")
    assert unknown.returncode == 2
    assert "no job with submission id 'no-such-job'" in unknown.stderr
    assert "graphstore job list" in unknown.stderr
    for call in (client.get_job_info, client.stop_job, client.get_job_logs,
                 client.delete_job):
        with pytest.raises(RuntimeError, match="no job with submission id"):
            call("no-such-job")
    client.submit_job(entrypoint="sleep 30", submission_id="dup")
    with pytest.raises(RuntimeError, match="already exists"):
        client.submit_job(entrypoint="true", submission_id="dup")
    with pytest.raises(RuntimeError, match="is not valid"):
        client.submit_job(entrypoint="true", submission_id="../../etc/passwd")
    with pytest.raises(RuntimeError, match="stop it first"):
        client.delete_job("dup")
    bad_json = gs("submit", "--runtime-env-json", "{nope", "--", "true")
    assert bad_json.returncode != 0 and "not valid JSON" in bad_json.stderr
    missing = gs("submit", "--runtime-env", "no-such-env.yaml", "--", "true")
    assert missing.returncode != 0 and "cannot read --runtime-env" in missing.stderr

    # A follower that disconnects mid-follow: its long poll ends, nothing breaks.
    follower = JobSubmissionClient(jobs_cluster.address, token=jobs_cluster.token)
    chunks = follower.follow_job_logs("dup")
    import threading
    reader = threading.Thread(target=lambda: list(_until_error(chunks)), daemon=True)
    reader.start()
    time.sleep(0.3)
    follower.close()
    reader.join(15)
    assert not reader.is_alive()
    assert client.stop_job("dup") is True
    wait_status(client, "dup", JobStatus.STOPPED)
    assert client.delete_job("dup") is True
    assert [j.submission_id for j in client.list_jobs()] == []


def _until_error(iterator):
    try:
        yield from iterator
    except Exception:
        return


def test_stop_ends_the_job_s_whole_process_group(jobs_cluster):
    client = jobs_cluster.client
    # A shell that starts a child of its own: stop must reach both.
    sid = client.submit_job(entrypoint="sleep 60 & echo started $!; wait")
    wait_status(client, sid, JobStatus.RUNNING)
    text = wait_for(lambda: client.get_job_logs(sid), timeout=15)
    assert text.startswith("started ")
    child = int(text.split()[1])
    info = client.get_job_info(sid)
    assert child in group_members(info.driver_pid)
    assert info.driver_pid not in psutil.Process().children(recursive=True)

    stop = jobs_cluster.gs("stop", sid)
    assert stop.returncode == 0 and f"Job '{sid}' stopped" in stop.stdout
    info = client.get_job_info(sid)
    assert info.status is JobStatus.STOPPED and info.message == "the job was stopped"
    assert wait_for(lambda: not group_members(info.driver_pid), timeout=10)
    assert client.stop_job(sid) is False              # ended already


def test_a_job_survives_the_submitting_process(jobs_cluster, tmp_path):
    gate = tmp_path / "gate"
    script = tmp_path / "gated.py"
    script.write_text(textwrap.dedent(f"""\
        import os, time
        print("waiting", flush=True)
        while not os.path.exists({str(gate)!r}):
            time.sleep(0.01)
        print("finished after the gate", flush=True)
        """))
    submit = subprocess.Popen(
        [sys.executable, "-m", "graphstore.cli", "job", "submit", "--address",
         jobs_cluster.address, "--submission-id", "orphaned", "--", sys.executable,
         str(script)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        env=jobs_cluster.job_env, start_new_session=True)
    try:
        assert submit.stdout.readline() == b"waiting\n"    # the job runs and streams
        os.killpg(submit.pid, signal.SIGKILL)              # the submitter's terminal
        submit.wait(10)
    finally:
        if submit.poll() is None:
            submit.kill()
        submit.stdout.close()
    client = jobs_cluster.client
    assert client.get_job_status("orphaned") is JobStatus.RUNNING
    gate.touch()
    wait_status(client, "orphaned", JobStatus.SUCCEEDED)
    assert client.get_job_logs("orphaned").endswith("finished after the gate\n")


def test_job_submission_client_api(jobs_cluster, tmp_path):
    client = jobs_cluster.client
    sid = client.submit_job(
        entrypoint=f"{sys.executable} {jobs_cluster.script}",
        runtime_env={"env_vars": {"JOB_FLAG": "api"}}, metadata={"k": "v"})
    assert sid.startswith("gssubmit_")

    async def tail():
        return [chunk async for chunk in client.tail_job_logs(sid)]
    text = "".join(asyncio.run(tail()))
    assert "squares [0, 1, 4, 9]" in text and "JOB_FLAG = api" in text
    info = client.get_job_info(sid)
    assert info.status is JobStatus.SUCCEEDED and info.status.is_terminal()
    assert info.metadata == {"k": "v"} and info.end_time >= info.start_time
    assert client.get_job_logs(sid) == text
    assert [j.submission_id for j in client.list_jobs()] == [sid]
    assert client.delete_job(sid) is True and client.list_jobs() == []
    # The CLI's `follow` from a job's start sees what `tail` saw.
    sid = client.submit_job(entrypoint="echo one; sleep 0.3; printf 'two, no newline'")
    assert "".join(client.follow_job_logs(sid)) == "one\ntwo, no newline"
    assert client.get_job_status(sid) is JobStatus.SUCCEEDED


def test_the_status_page_address_finds_the_scheduler_as_ray_s_dashboard_address(
        jobs_cluster):
    """Ray users pass the dashboard's http:// address; the page names the scheduler."""
    log = (jobs_cluster.log_dir / "scheduler.log").read_text()
    url = log.split("status page at ", 1)[1].split()[0]
    assert url.startswith("http://")
    with JobSubmissionClient(url, token=jobs_cluster.token) as client:
        assert client.address == jobs_cluster.address
        sid = client.submit_job(entrypoint="echo via the page")
        wait_status(client, sid, JobStatus.SUCCEEDED)
        assert client.get_job_logs(sid) == "via the page\n"
    # The CLI too (its --address given last wins over the fixture's tcp:// one).
    done = jobs_cluster.gs("submit", "--address", url, "--", "echo", "cli via page")
    assert done.returncode == 0 and "cli via page" in done.stdout
    with pytest.raises(ValueError, match="did not say where the scheduler is"):
        JobSubmissionClient("http://127.0.0.1:9/", token=jobs_cluster.token, timeout=2)


def test_working_dir_is_uploaded_once_and_is_the_job_s_cwd(jobs_cluster, tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    (project / "helper.py").write_text("VALUE = 'from the working dir'\n")
    (project / "data.txt").write_text("relative data\n")
    (project / "main.py").write_text(textwrap.dedent("""\
        import graphstore, helper

        graphstore.init()       # the job's working_dir is its tasks' too

        @graphstore.remote
        def read():
            import helper
            return open("data.txt").read().strip() + " in a task"

        print(helper.VALUE, open("data.txt").read().strip(), flush=True)
        print(graphstore.get(read.remote()), flush=True)
        """))
    first = jobs_cluster.gs("submit", "--working-dir", ".", "--", sys.executable,
                            "main.py", cwd=project)
    assert first.returncode == 0, first.stderr
    assert "from the working dir relative data" in first.stdout
    assert "relative data in a task" in first.stdout
    graphstore.init(address=jobs_cluster.address, token=jobs_cluster.token)
    try:
        uploaded = graphstore.cluster_status()["counts"]["packages_uploaded"]
        assert uploaded == 1
        second = jobs_cluster.gs("submit", "--working-dir", str(project), "--",
                                 sys.executable, "main.py")
        assert second.returncode == 0 and "relative data" in second.stdout
        # The same directory: the second job sent nothing but the question.
        assert graphstore.cluster_status()["counts"]["packages_uploaded"] == 1
    finally:
        graphstore.shutdown()
    uris = {j.runtime_env["working_dir"] for j in jobs_cluster.client.list_jobs()}
    assert len(uris) == 1 and uris.pop().startswith("gspkg://")


def test_entrypoint_cpus_are_held_while_the_job_runs(jobs_cluster):
    client = jobs_cluster.client
    holder = client.submit_job(entrypoint="sleep 60", entrypoint_num_cpus=1)
    wait_status(client, holder, JobStatus.RUNNING)
    # The cluster's one CPU is held: a second such job waits PENDING ...
    waiting = client.submit_job(entrypoint="echo got the CPU", entrypoint_num_cpus=1)
    time.sleep(1.0)
    assert client.get_job_status(waiting) is JobStatus.PENDING
    client.stop_job(holder)
    # ... and runs once the first one gives it back.
    wait_status(client, waiting, JobStatus.SUCCEEDED)
    assert client.get_job_logs(waiting) == "got the CPU\n"


def test_a_killed_scheduler_takes_its_jobs_with_it(jobs_cluster):
    client = jobs_cluster.client
    sid = client.submit_job(entrypoint="sleep 60")
    wait_status(client, sid, JobStatus.RUNNING)
    pgid = client.get_job_info(sid).driver_pid
    assert group_members(pgid)
    jobs_cluster.scheduler.send_signal(signal.SIGKILL)
    jobs_cluster.scheduler.wait(10)
    assert wait_for(lambda: not group_members(pgid), timeout=15), \
        "a job outlived its scheduler"


def test_the_jobs_example_runs(run_driver):
    from helpers import run_example
    run = run_example(run_driver, "jobs.py")
    assert "4 lines, 8 words: [3, 1, 3, 1]" in run.stdout
    assert "packages uploaded so far: 1" in run.stdout
    assert "STOPPED" in run.stdout
