"""The job table: every job submitted to this scheduler (``graphstore job submit``,
``JobSubmissionClient``), its status and what happened to it. Pure: no processes, no
files, no sockets; ``job_processes.py`` runs the processes and reports what they do.

A job's status follows Ray's ``JobStatus`` and moves only along ``TRANSITIONS``::

    PENDING --entrypoint started--> RUNNING --exit 0--------> SUCCEEDED
       |                               |------exit != 0---> FAILED
       |                               '------stopped-----> STOPPED
       '--setup failed / could not start / exited before it ran--> FAILED
       '--stopped before it ran---------------------------------> STOPPED

A job is PENDING while its supervisor prepares it (fetches its working_dir, reserves
its CPUs) and RUNNING once its entrypoint command runs. The job ends when its
supervisor process exits: a stop asked for makes it STOPPED whatever the exit code.
Refused requests (an unknown id, a duplicate one, an empty entrypoint) raise
``JobRequestError`` with a ``kind`` the server sends back as a record.
"""
from __future__ import annotations

import json
import re
import secrets
import string
import time
from typing import Any

PENDING, RUNNING, STOPPED, SUCCEEDED, FAILED = (
    "PENDING", "RUNNING", "STOPPED", "SUCCEEDED", "FAILED")
STATUSES = (PENDING, RUNNING, STOPPED, SUCCEEDED, FAILED)
TERMINAL = frozenset((STOPPED, SUCCEEDED, FAILED))

#: (start, finish) pairs a job may take; anything else is a bug (``InvalidJobTransition``).
TRANSITIONS = frozenset({
    (PENDING, RUNNING), (PENDING, FAILED), (PENDING, STOPPED),
    (RUNNING, SUCCEEDED), (RUNNING, FAILED), (RUNNING, STOPPED),
})

#: Ray's ``JobErrorType`` values for the failures graphstore can tell apart.
SETUP_FAILURE = "RUNTIME_ENV_SETUP_FAILURE"
ENTRYPOINT_FAILED = "JOB_ENTRYPOINT_COMMAND_ERROR"
START_FAILURE = "JOB_SUPERVISOR_ACTOR_START_FAILURE"

#: A submission id is used in file names: letters, digits, ``_``, ``-`` and ``.``.
SUBMISSION_ID_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
#: The longest entrypoint command accepted (bytes of its text).
MAX_ENTRYPOINT = 64 * 1024
#: Characters of the log's end that a failed job's message quotes.
MESSAGE_LOG_CHARS = 2000


class JobRequestError(Exception):
    """A request the job table refuses; ``kind`` is ``"not_found"``, ``"invalid"``,
    ``"duplicate"`` or ``"not_terminal"``."""

    def __init__(self, kind: str, text: str):
        super().__init__(text)
        self.kind = kind
        self.text = text


class InvalidJobTransition(Exception):
    """A status change ``TRANSITIONS`` does not allow: a bug in graphstore."""


def new_submission_id() -> str:
    """``gssubmit_`` and 16 random letters and digits, as Ray's ``raysubmit_...``."""
    alphabet = string.ascii_letters + string.digits
    return "gssubmit_" + "".join(secrets.choice(alphabet) for _ in range(16))


class JobRecord:
    """One job: what was asked, its status, and how it ended."""
    __slots__ = ("submission_id", "entrypoint", "runtime_env", "metadata",
                 "entrypoint_num_cpus", "status", "message", "error_type", "start_time",
                 "end_time", "driver_exit_code", "pid", "log_path", "stop_requested",
                 "setup_error")

    def __init__(self, submission_id: str, entrypoint: str, runtime_env: dict,
                 metadata: dict, entrypoint_num_cpus: float, log_path: str, now: float):
        self.submission_id = submission_id
        self.entrypoint = entrypoint
        self.runtime_env = runtime_env
        self.metadata = metadata
        self.entrypoint_num_cpus = entrypoint_num_cpus
        self.status = PENDING
        self.message = "the job's process is starting"
        self.error_type: str | None = None
        self.start_time = int(now * 1000)
        self.end_time: int | None = None
        self.driver_exit_code: int | None = None
        self.pid: int | None = None
        self.log_path = log_path
        self.stop_requested = False
        #: Why the supervisor could not prepare the job, when it said so.
        self.setup_error: str | None = None

    def info(self) -> dict[str, Any]:
        """The record as the wire and ``JobInfo`` carry it (times in ms, as Ray)."""
        return {"submission_id": self.submission_id, "status": self.status,
                "entrypoint": self.entrypoint, "message": self.message,
                "error_type": self.error_type, "start_time": self.start_time,
                "end_time": self.end_time, "metadata": dict(self.metadata),
                "runtime_env": self.runtime_env,
                "entrypoint_num_cpus": self.entrypoint_num_cpus,
                "driver_exit_code": self.driver_exit_code, "driver_pid": self.pid,
                "log_path": self.log_path}


class JobTable:
    """Every job this scheduler was given, by submission id, in submission order."""

    def __init__(self) -> None:
        self.jobs: dict[str, JobRecord] = {}

    # -- requests ---------------------------------------------------------------------
    def submit(self, submission_id: str | None, entrypoint: str, runtime_env: dict | None,
               metadata: dict | None, entrypoint_num_cpus: float | None, log_dir: str,
               now: float | None = None) -> JobRecord:
        """Check a submission and record it PENDING. Raises ``JobRequestError``."""
        if type(entrypoint) is not str or not entrypoint.strip():
            raise JobRequestError("invalid", "the entrypoint is empty: give the command to "
                                             "run, e.g. 'python script.py'")
        if len(entrypoint.encode()) > MAX_ENTRYPOINT:
            raise JobRequestError("invalid", f"the entrypoint is longer than "
                                             f"{MAX_ENTRYPOINT} bytes")
        if "\0" in entrypoint:
            raise JobRequestError("invalid", "the entrypoint contains a NUL character")
        if submission_id is None or submission_id == "":
            submission_id = new_submission_id()
            while submission_id in self.jobs:
                submission_id = new_submission_id()
        elif type(submission_id) is not str or not SUBMISSION_ID_RE.match(submission_id):
            raise JobRequestError(
                "invalid", f"submission id {submission_id!r} is not valid: use up to 128 "
                           f"letters, digits, '_', '-' or '.', not starting with '-' or '.'")
        elif submission_id in self.jobs:
            raise JobRequestError(
                "duplicate", f"a job with submission id {submission_id!r} already exists "
                             f"({self.jobs[submission_id].status}); choose another id, or "
                             f"`graphstore job delete` the old one once it has ended")
        runtime_env = {} if runtime_env is None else runtime_env
        if type(runtime_env) is not dict:
            raise JobRequestError("invalid", "runtime_env must be a dict")
        try:
            json.dumps(runtime_env)
        except (TypeError, ValueError) as exc:
            raise JobRequestError("invalid", f"runtime_env must be JSON: {exc}") from None
        if not isinstance(runtime_env.get("working_dir", ""), str):
            raise JobRequestError("invalid", "runtime_env['working_dir'] must be a "
                                             "package URI (a string)")
        env_vars = runtime_env.get("env_vars", {})
        if type(env_vars) is not dict or not all(
                type(k) is str and type(v) is str for k, v in env_vars.items()):
            raise JobRequestError("invalid", "runtime_env['env_vars'] must map strings to "
                                             "strings")
        metadata = {} if metadata is None else metadata
        if type(metadata) is not dict or not all(
                type(k) is str and type(v) is str for k, v in metadata.items()):
            raise JobRequestError("invalid", "metadata must map strings to strings")
        cpus = 0.0 if entrypoint_num_cpus is None else entrypoint_num_cpus
        if type(cpus) not in (int, float) or not 0 <= cpus < 1e6:
            raise JobRequestError("invalid", f"entrypoint_num_cpus must be a number >= 0, "
                                             f"got {entrypoint_num_cpus!r}")
        now = time.time() if now is None else now
        log_path = f"{log_dir.rstrip('/')}/job-driver-{submission_id}.log"
        record = JobRecord(submission_id, entrypoint, runtime_env, metadata, float(cpus),
                           log_path, now)
        self.jobs[submission_id] = record
        return record

    def get(self, submission_id: str) -> JobRecord:
        """The job of that id. Raises ``JobRequestError("not_found")`` naming how to list
        the jobs there are."""
        record = self.jobs.get(submission_id) if type(submission_id) is str else None
        if record is None:
            known = len(self.jobs)
            raise JobRequestError(
                "not_found", f"no job with submission id {submission_id!r} "
                             f"({known} job(s) known); list them with `graphstore job list`")
        return record

    def request_stop(self, submission_id: str) -> bool:
        """Mark a job to stop. Returns whether it had not ended (the caller then signals
        its process); stopping an ended job changes nothing."""
        record = self.get(submission_id)
        if record.status in TERMINAL:
            return False
        if not record.stop_requested:
            record.stop_requested = True
            record.message = "stopping: SIGTERM sent to the job's processes"
        return True

    def delete(self, submission_id: str) -> JobRecord:
        """Forget an ended job (its log file stays). Raises ``JobRequestError``
        ("not_terminal") for a job still PENDING or RUNNING."""
        record = self.get(submission_id)
        if record.status not in TERMINAL:
            raise JobRequestError(
                "not_terminal", f"job {submission_id!r} is {record.status}: stop it first "
                                f"(`graphstore job stop {submission_id}`)")
        del self.jobs[submission_id]
        return record

    def running(self) -> list[JobRecord]:
        """Jobs not ended yet, oldest first."""
        return [r for r in self.jobs.values() if r.status not in TERMINAL]

    # -- what the processes report -------------------------------------------------------
    def process_started(self, submission_id: str, pid: int) -> None:
        record = self.jobs[submission_id]
        record.pid = pid
        record.message = "preparing the job (runtime_env, entrypoint CPUs)"

    def entrypoint_started(self, submission_id: str) -> None:
        """The supervisor started the entrypoint command: PENDING -> RUNNING."""
        record = self.jobs.get(submission_id)
        if record is None or record.status != PENDING:
            return
        self._transition(record, RUNNING)
        record.message = "the job is running" if not record.stop_requested \
            else record.message

    def setup_failed(self, submission_id: str, reason: str) -> None:
        """The supervisor could not prepare the job; it exits next (``exited``)."""
        record = self.jobs.get(submission_id)
        if record is not None and record.status == PENDING:
            record.setup_error = reason

    def start_failed(self, submission_id: str, reason: str,
                     now: float | None = None) -> None:
        """No process could be started for the job: PENDING -> FAILED at once."""
        record = self.jobs[submission_id]
        self._transition(record, FAILED)
        record.error_type = START_FAILURE
        record.message = f"the job could not be started: {reason}"
        record.end_time = int((time.time() if now is None else now) * 1000)

    def exited(self, submission_id: str, exit_code: int, log_tail: str = "",
               now: float | None = None) -> JobRecord | None:
        """The job's supervisor exited with ``exit_code`` (negative: killed by that
        signal): the job ends STOPPED, SUCCEEDED or FAILED."""
        record = self.jobs.get(submission_id)
        if record is None or record.status in TERMINAL:
            return None
        record.driver_exit_code = exit_code
        record.end_time = int((time.time() if now is None else now) * 1000)
        if record.stop_requested:
            self._transition(record, STOPPED)
            record.message = "the job was stopped"
        elif record.setup_error is not None:
            self._transition(record, FAILED)
            record.error_type = SETUP_FAILURE
            record.message = f"runtime_env setup failed: {record.setup_error}"
        elif record.status == RUNNING and exit_code == 0:
            self._transition(record, SUCCEEDED)
            record.message = "the job finished successfully"
        else:
            message = failure_message(exit_code, log_tail, record.status)
            self._transition(record, FAILED)
            record.error_type = ENTRYPOINT_FAILED
            record.message = message
        return record

    def _transition(self, record: JobRecord, finish: str) -> None:
        if (record.status, finish) not in TRANSITIONS:
            raise InvalidJobTransition(f"job {record.submission_id}: {record.status} -> "
                                       f"{finish} is not a valid transition")
        record.status = finish

    # -- checks -------------------------------------------------------------------------
    def validate(self) -> None:
        """Raise ``AssertionError`` if a record contradicts itself (for tests)."""
        for sid, record in self.jobs.items():
            assert sid == record.submission_id, sid
            assert record.status in STATUSES, record.status
            ended = record.status in TERMINAL
            assert (record.end_time is not None) == ended, (sid, record.status)
            if record.status == SUCCEEDED:
                assert record.driver_exit_code == 0 and not record.stop_requested
            if record.status == STOPPED:
                assert record.stop_requested, sid
            if record.status == FAILED:
                assert record.error_type is not None, sid


def failure_message(exit_code: int, log_tail: str, status: str) -> str:
    """Why a job failed, as Ray words it: the exit code, what it means when it says
    something (127: command not found), and the end of its log."""
    if exit_code < 0:
        what = f"the job's process was killed by signal {-exit_code}"
    elif exit_code == 127:
        what = "the entrypoint command was not found (exit code 127)"
    elif exit_code == 126:
        what = "the entrypoint command could not be executed (exit code 126)"
    elif status == PENDING:
        what = f"the job's supervisor exited with code {exit_code} before the entrypoint ran"
    else:
        what = f"the entrypoint command failed with exit code {exit_code}"
    tail = log_tail[-MESSAGE_LOG_CHARS:].strip()
    return f"{what}; last lines of its log:\n{tail}" if tail else what
