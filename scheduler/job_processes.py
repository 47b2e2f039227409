"""The processes of jobs: started, watched, stopped and reaped by the scheduler.

Each job runs as a supervisor process (``graphstore/job_supervisor.py``, run from its
file so that it starts without importing the graphstore package) in a new session, so it and its entrypoint form a process group of their own that no
terminal owns: closing or killing the terminal that submitted the job does not touch
it. Its stdout and stderr go to the job's log file. Two pipes tie it to the scheduler:

- its standard input, which the scheduler never writes: when the scheduler dies, even
  of SIGKILL, the supervisor reads EOF and ends the job's process group;
- a status pipe (``--status-fd``) on which it reports ``running``, ``setup_failed`` and
  its entrypoint's exit code. Its EOF means the supervisor has exited: the scheduler
  kills whatever is left of the job's process group (before reaping, so the group id
  cannot have been reused) and records how the job ended in the ``JobTable``.

``stop`` sends SIGTERM to the job's process group and SIGKILL ``STOP_GRACE`` seconds
later if it is still there; ``shutdown`` does that to every job, synchronously, when the
scheduler stops. Decisions about statuses stay in ``jobs.py``.
"""
from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from graphstore.scheduler.jobs import JobRecord, JobTable

logger = logging.getLogger("graphstore.scheduler")

#: Seconds between SIGTERM and SIGKILL when a job is stopped (Ray waits 3 s too).
STOP_GRACE = 3.0
#: The job spec's variable in the supervisor's environment (job_supervisor.SPEC_ENV).
SPEC_ENV = "GRAPHSTORE_JOB_SPEC"
#: Bytes of the log's end a failed job's message quotes.
_TAIL_BYTES = 4096


class JobProcess:
    """One running supervisor: its ``Popen``, the read end of its status pipe and what
    it reported."""
    __slots__ = ("popen", "status_fd", "buffer", "exit_code", "kill_timer")

    def __init__(self, popen: subprocess.Popen, status_fd: int):
        self.popen = popen
        self.status_fd = status_fd
        self.buffer = b""
        self.exit_code: int | None = None
        self.kill_timer: asyncio.TimerHandle | None = None


class JobProcesses:
    """Starts and watches the supervisors of the jobs in ``table``."""

    def __init__(self, table: JobTable, log_dir: Path, environment: dict[str, str]):
        self.table = table
        self.log_dir = log_dir
        #: What every supervisor gets on top of the scheduler's environment: the
        #: address, the token, TLS files.
        self.environment = dict(environment)
        self.processes: dict[str, JobProcess] = {}

    def start(self, record: JobRecord) -> None:
        """Start the supervisor of a job just submitted; a failure to start marks the
        job FAILED with the reason."""
        sid = record.submission_id
        spec = {"submission_id": sid, "entrypoint": record.entrypoint,
                "runtime_env": record.runtime_env,
                "entrypoint_num_cpus": record.entrypoint_num_cpus}
        env = {**os.environ, **self.environment, SPEC_ENV: json.dumps(spec),
               "PYTHONUNBUFFERED": "1"}
        read_fd, write_fd = os.pipe()
        try:
            supervisor = _supervisor_file()
            self.log_dir.mkdir(parents=True, exist_ok=True)
            # Owner-only: a job's output may hold what its owner would not share.
            log_fd = os.open(record.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            with open(log_fd, "ab", buffering=0) as log:
                popen = subprocess.Popen(
                    [sys.executable, "-c", _BOOT, supervisor,
                     "--status-fd", str(write_fd)],
                    stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT,
                    pass_fds=(write_fd,), start_new_session=True, env=env)
        except OSError as exc:
            os.close(read_fd)
            os.close(write_fd)
            logger.warning("job %s could not be started: %s", sid, exc)
            self.table.start_failed(sid, str(exc))
            return
        os.close(write_fd)
        process = JobProcess(popen, read_fd)
        self.processes[sid] = process
        self.table.process_started(sid, popen.pid)
        os.set_blocking(read_fd, False)
        asyncio.get_running_loop().add_reader(read_fd, self._readable, sid)
        logger.info("job %s started (pid %s): %s", sid, popen.pid, record.entrypoint)

    def _readable(self, sid: str) -> None:
        process = self.processes.get(sid)
        if process is None:
            return
        try:
            data = os.read(process.status_fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            process.buffer += data
            *lines, process.buffer = process.buffer.split(b"\n")
            for line in lines:
                self._on_event(sid, process, line)
            return
        asyncio.get_running_loop().remove_reader(process.status_fd)
        os.close(process.status_fd)
        self._reap(sid, process)

    def _drain(self, sid: str, process: JobProcess) -> None:
        """Read what an exited supervisor left in its status pipe (its exit code)."""
        try:
            while data := os.read(process.status_fd, 65536):
                process.buffer += data
        except OSError:
            pass
        *lines, process.buffer = process.buffer.split(b"\n")
        for line in lines:
            self._on_event(sid, process, line)

    def _on_event(self, sid: str, process: JobProcess, line: bytes) -> None:
        try:
            event = json.loads(line)
            kind = event["event"]
        except (ValueError, KeyError, TypeError):
            logger.warning("job %s: unreadable status line %r", sid, line[:200])
            return
        if kind == "running":
            self.table.entrypoint_started(sid)
        elif kind == "setup_failed":
            self.table.setup_failed(sid, str(event.get("message", "")))
        elif kind == "exited" and type(event.get("code")) is int:
            process.exit_code = event["code"]

    def _reap(self, sid: str, process: JobProcess) -> None:
        """The supervisor closed its status pipe (it exited): end what is left of the
        job's group while the group id is still ours, then collect the exit code."""
        _signal_group(process.popen.pid, signal.SIGKILL)
        try:
            code = process.popen.wait(timeout=5)
        except subprocess.TimeoutExpired:        # closed the pipe but lives: kill it
            process.popen.kill()
            code = process.popen.wait()
        self._finish(sid, process, code)

    def _finish(self, sid: str, process: JobProcess, code: int) -> None:
        self.processes.pop(sid, None)
        if process.kill_timer is not None:
            process.kill_timer.cancel()
        if process.popen.stdin is not None:
            try:
                process.popen.stdin.close()
            except OSError:
                pass
        exit_code = process.exit_code if process.exit_code is not None else code
        record = self.table.jobs.get(sid)
        tail = _log_tail(record.log_path) if record is not None else ""
        record = self.table.exited(sid, exit_code, tail)
        if record is not None:
            logger.info("job %s ended %s (exit code %s)", sid, record.status, exit_code)

    def stop(self, sid: str) -> bool:
        """Stop a job: SIGTERM to its process group now, SIGKILL after ``STOP_GRACE``.
        Returns whether it had not ended. Raises ``JobRequestError`` for an unknown id."""
        if not self.table.request_stop(sid):
            return False
        process = self.processes.get(sid)
        if process is not None:
            _signal_group(process.popen.pid, signal.SIGTERM)
            if process.kill_timer is None:
                process.kill_timer = asyncio.get_running_loop().call_later(
                    STOP_GRACE, _signal_group, process.popen.pid, signal.SIGKILL)
        return True

    def shutdown(self, grace: float = STOP_GRACE) -> None:
        """Stop every job and wait for its processes (the scheduler is stopping): no
        job outlives its scheduler."""
        if not self.processes:
            return
        for sid, process in self.processes.items():
            self.table.request_stop(sid)
            _signal_group(process.popen.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for process in self.processes.values():
            try:
                process.popen.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for sid, process in list(self.processes.items()):
            _signal_group(process.popen.pid, signal.SIGKILL)
            code = process.popen.wait()
            try:
                asyncio.get_event_loop().remove_reader(process.status_fd)
            except Exception:
                pass          # the loop is closing: nothing reads any more
            self._drain(sid, process)
            try:
                os.close(process.status_fd)
            except OSError:
                pass
            self._finish(sid, process, code)


#: Runs the supervisor's file without importing the graphstore package first (which
#: ``-m graphstore.job_supervisor`` would: 0.2 to 0.4 s of imports before every job).
_BOOT = ("import importlib.util, sys; "
         "spec = importlib.util.spec_from_file_location('graphstore_job_supervisor', "
         "sys.argv[1]); module = importlib.util.module_from_spec(spec); "
         "spec.loader.exec_module(module); sys.exit(module.main(sys.argv[2:]))")


def _supervisor_file() -> str:
    """Where ``graphstore/job_supervisor.py`` is (found, not imported: the services do
    not import the client API)."""
    spec = importlib.util.find_spec("graphstore.job_supervisor")
    if spec is None or spec.origin is None:
        raise OSError("graphstore/job_supervisor.py is missing from this installation")
    return spec.origin


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def _log_tail(path: str) -> str:
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            f.seek(max(0, size - _TAIL_BYTES))
            return f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
