"""The job table (``scheduler/jobs.py``) driven without processes: every status a job
can take, the transitions between them, and the requests it refuses. ``validate()``
runs after every step."""
from __future__ import annotations

import pytest

from graphstore.scheduler.jobs import (FAILED, PENDING, RUNNING, STOPPED, SUCCEEDED,
                                       TRANSITIONS, InvalidJobTransition, JobRequestError,
                                       JobTable, failure_message)


@pytest.fixture
def table():
    table = JobTable()
    yield table
    table.validate()


def submit(table, sid=None, entrypoint="python main.py", **kwargs):
    record = table.submit(sid, entrypoint, kwargs.get("runtime_env"),
                          kwargs.get("metadata"), kwargs.get("cpus"), "/logs/", now=100.0)
    table.validate()
    return record


def test_a_job_runs_to_success(table):
    record = submit(table, "job-1", metadata={"owner": "ann"})
    assert record.status == PENDING and record.start_time == 100_000
    assert record.log_path == "/logs/job-driver-job-1.log"
    table.process_started("job-1", 4242)
    table.entrypoint_started("job-1")
    assert record.status == RUNNING and record.pid == 4242
    table.validate()
    table.exited("job-1", 0, now=101.5)
    assert (record.status, record.driver_exit_code, record.end_time) == (SUCCEEDED, 0,
                                                                          101_500)
    info = record.info()
    assert info["metadata"] == {"owner": "ann"} and info["status"] == "SUCCEEDED"


def test_an_id_is_made_when_none_is_given(table):
    first, second = submit(table), submit(table)
    assert first.submission_id.startswith("gssubmit_") and len(first.submission_id) == 25
    assert first.submission_id != second.submission_id
    assert list(table.jobs) == [first.submission_id, second.submission_id]


def test_a_failing_entrypoint_quotes_its_exit_code_and_log(table):
    record = submit(table, "bad")
    table.entrypoint_started("bad")
    table.exited("bad", 3, log_tail="Traceback ...\nValueError: boom\n")
    assert record.status == FAILED and record.error_type == "JOB_ENTRYPOINT_COMMAND_ERROR"
    assert "exit code 3" in record.message and "ValueError: boom" in record.message
    missing = submit(table, "missing")
    table.entrypoint_started("missing")
    table.exited("missing", 127, log_tail="/bin/sh: 1: nosuch: not found\n")
    assert "not found (exit code 127)" in missing.message
    assert "nosuch: not found" in missing.message


def test_setup_failure_fails_a_pending_job_with_the_reason(table):
    record = submit(table, "setup")
    table.setup_failed("setup", "working_dir gspkg://x could not be fetched")
    assert record.status == PENDING
    table.exited("setup", 1)
    assert record.status == FAILED and record.error_type == "RUNTIME_ENV_SETUP_FAILURE"
    assert "could not be fetched" in record.message


def test_a_job_that_cannot_start_fails_at_once(table):
    record = submit(table, "nostart")
    table.start_failed("nostart", "No such file or directory: python")
    assert record.status == FAILED and "could not be started" in record.message
    assert record.end_time is not None


def test_stop_makes_a_job_stopped_whatever_its_exit_code(table):
    running = submit(table, "run")
    table.entrypoint_started("run")
    assert table.request_stop("run") is True
    assert table.request_stop("run") is True           # asked twice: still True
    table.exited("run", -15)
    assert running.status == STOPPED and running.driver_exit_code == -15
    assert table.request_stop("run") is False          # ended: nothing to stop
    pending = submit(table, "pend")
    table.request_stop("pend")
    table.exited("pend", 143)
    assert pending.status == STOPPED


def test_an_exit_before_the_entrypoint_ran_is_a_failure(table):
    record = submit(table, "early")
    table.exited("early", 0)
    assert record.status == FAILED and "before the entrypoint ran" in record.message


def test_reports_after_the_end_change_nothing(table):
    record = submit(table, "done")
    table.entrypoint_started("done")
    table.exited("done", 0)
    assert table.exited("done", 1) is None
    table.entrypoint_started("done")
    table.setup_failed("done", "late")
    assert record.status == SUCCEEDED and record.driver_exit_code == 0


def test_only_listed_transitions_are_taken(table):
    record = submit(table, "t")
    assert (PENDING, SUCCEEDED) not in TRANSITIONS
    with pytest.raises(InvalidJobTransition, match="PENDING -> SUCCEEDED"):
        table._transition(record, SUCCEEDED)
    assert record.status == PENDING


@pytest.mark.parametrize("sid, entrypoint, kwargs, kind, text", [
    (None, "", {}, "invalid", "entrypoint is empty"),
    (None, "   ", {}, "invalid", "entrypoint is empty"),
    ("../etc", "ls", {}, "invalid", "is not valid"),
    ("a" * 129, "ls", {}, "invalid", "is not valid"),
    (None, "ls", {"metadata": {"k": 1}}, "invalid", "metadata"),
    (None, "ls", {"runtime_env": {"env_vars": {"A": 1}}}, "invalid", "env_vars"),
    (None, "ls", {"cpus": -1}, "invalid", "entrypoint_num_cpus"),
    (None, "ls", {"runtime_env": {"config": b"bytes"}}, "invalid", "must be JSON"),
    (None, "ls", {"runtime_env": {"working_dir": 3}}, "invalid", "working_dir"),
])
def test_bad_submissions_are_refused_with_the_reason(table, sid, entrypoint, kwargs, kind,
                                                     text):
    with pytest.raises(JobRequestError, match=text) as raised:
        submit(table, sid, entrypoint, **kwargs)
    assert raised.value.kind == kind
    assert not table.jobs


def test_duplicate_unknown_and_live_deletes_are_refused(table):
    submit(table, "same")
    with pytest.raises(JobRequestError, match="already exists") as raised:
        submit(table, "same")
    assert raised.value.kind == "duplicate"
    with pytest.raises(JobRequestError, match="graphstore job list") as raised:
        table.get("nope")
    assert raised.value.kind == "not_found"
    with pytest.raises(JobRequestError, match="stop it first") as raised:
        table.delete("same")
    assert raised.value.kind == "not_terminal"
    table.request_stop("same")
    table.exited("same", -15)
    table.delete("same")
    assert not table.jobs
    submit(table, "same")                         # the id is free again


def test_failure_message_names_signals_and_keeps_the_log_short():
    assert "signal 9" in failure_message(-9, "", RUNNING)
    text = failure_message(1, "x" * 10_000, RUNNING)
    assert len(text) < 2200
