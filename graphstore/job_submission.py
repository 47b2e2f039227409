"""Jobs: programs run on the cluster's scheduler host, as Ray's ``ray.job_submission``.

``JobSubmissionClient`` submits a shell command (the *entrypoint*) to a running cluster,
where the scheduler starts it in a process group of its own with its output going to
a log file: the job belongs to the cluster and runs on when the submitting terminal
closes. The client asks for the job's status and logs, follows its logs, stops it and
lists jobs. Everything travels over the scheduler's token-checked connection (there is
no separate job server); ``graphstore job ...`` on the command line uses this client.

Inside the job, ``graphstore.init()`` with no address joins the cluster that runs it.
"""
from __future__ import annotations

import asyncio
import dataclasses
import enum
import json
import os
import socket
import urllib.parse
import urllib.request
from typing import Any, AsyncIterator, Iterator, cast

from graphstore.core import protocol as msg
from graphstore.core.comm import connect
from graphstore.core.comm.addressing import parse_address
from graphstore.core.config import load_config
from graphstore.core.loop_thread import LoopThread
from graphstore.core.object_ref import new_id
from graphstore.core.tls import tls_from_config, tls_from_settings
from graphstore.core.token import load_token

__all__ = ["JobInfo", "JobStatus", "JobSubmissionClient"]

#: Seconds one long-polled log read may wait on the scheduler for new output.
FOLLOW_WAIT = 10.0


class JobStatus(str, enum.Enum):
    """The status of a job, as Ray's ``JobStatus``."""

    #: The job has not started its entrypoint yet (its working_dir or CPUs are being
    #: prepared).
    PENDING = "PENDING"
    #: The entrypoint runs.
    RUNNING = "RUNNING"
    #: The job was stopped (``stop_job``, ``graphstore job stop``, scheduler shutdown).
    STOPPED = "STOPPED"
    #: The entrypoint exited with code 0.
    SUCCEEDED = "SUCCEEDED"
    #: The entrypoint exited with another code, or the job could not start.
    FAILED = "FAILED"

    def __str__(self) -> str:
        return self.value

    def is_terminal(self) -> bool:
        """Whether the job has ended.

        Returns:
            True for STOPPED, SUCCEEDED and FAILED: statuses that never change again.
        """
        return self in (JobStatus.STOPPED, JobStatus.SUCCEEDED, JobStatus.FAILED)


@dataclasses.dataclass
class JobInfo:
    """What the scheduler knows about a job, as Ray's ``JobInfo``.

    Attributes:
        status: the job's ``JobStatus``.
        entrypoint: the shell command it runs.
        submission_id: its id (``gssubmit_...`` unless the submitter chose one).
        message: a sentence on the status: why it failed, with the end of its log.
        error_type: for a failed job, Ray's ``JobErrorType`` name
            (``JOB_ENTRYPOINT_COMMAND_ERROR``, ``RUNTIME_ENV_SETUP_FAILURE``, ...).
        start_time: when it was submitted, Unix time in milliseconds.
        end_time: when it ended, Unix time in milliseconds, or None.
        metadata: what the submitter attached.
        runtime_env: its runtime environment (a working_dir as its package URI).
        entrypoint_num_cpus: CPUs held on the cluster while it runs.
        driver_exit_code: the entrypoint's exit code once it ended (negative: killed by
            that signal).
        driver_pid: the process id of its supervisor on the scheduler's host.
        log_path: its log file on the scheduler's host.
    """
    status: JobStatus
    entrypoint: str
    submission_id: str | None = None
    message: str | None = None
    error_type: str | None = None
    start_time: int | None = None
    end_time: int | None = None
    metadata: dict[str, str] | None = None
    runtime_env: dict[str, Any] | None = None
    entrypoint_num_cpus: float | None = None
    driver_exit_code: int | None = None
    driver_pid: int | None = None
    log_path: str | None = None

    @classmethod
    def _from_wire(cls, info: dict[str, Any]) -> "JobInfo":
        known = {f.name for f in dataclasses.fields(cls)}
        fields = {k: v for k, v in info.items() if k in known}
        fields["status"] = JobStatus(fields["status"])
        return cls(**fields)


def scheduler_address_from_status_page(url: str, timeout: float = 10.0) -> str:
    """The scheduler's ``tcp://`` address, asked of its status page at ``url``.

    Ray's job client takes the dashboard's ``http://`` address; here the page only tells
    where the scheduler is, and jobs go over the scheduler's own connection. A scheduler
    bound to every interface (``0.0.0.0``) is reached on the page's host.

    Args:
        url: the status page, e.g. ``http://127.0.0.1:8265``.
        timeout: seconds to wait for the page.

    Returns:
        ``tcp://HOST:PORT`` of the scheduler serving that page.

    Raises:
        ValueError: the page cannot be reached or does not name a scheduler.
    """
    parts = urllib.parse.urlsplit(url)
    overview_url = f"{parts.scheme}://{parts.netloc}/api/overview"
    try:
        with urllib.request.urlopen(overview_url, timeout=timeout) as reply:
            overview = json.load(reply)
        address = overview["scheduler"]["address"]
        host, port = parse_address(address)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{url!r} is a web address, and {overview_url} did not say where "
                         f"the scheduler is ({exc}); pass the scheduler's tcp://HOST:PORT"
                         ) from None
    if host in ("0.0.0.0", "::", "") and parts.hostname:
        host = parts.hostname
    return f"tcp://[{host}]:{port}" if ":" in host else f"tcp://{host}:{port}"


class JobSubmissionClient:
    """Submits jobs to a running cluster and asks about them, as Ray's.

    Opens one connection to the scheduler (authenticated with the cluster token, mutual
    TLS when configured) and holds it until ``close()``; usable as a context manager.
    It does not make this process a driver: ``graphstore.init()`` stays free.

    Args:
        address: the scheduler's ``tcp://host:port``, or its status page's
            ``http://host:port`` (what Ray users pass: the scheduler's address is read
            from the page's ``/api/overview``; the jobs still go over the
            token-checked scheduler connection). Default: ``GRAPHSTORE_ADDRESS``,
            else the newest local cluster on this machine.
        token: the cluster token. Default: the local cluster's when ``address`` was
            found that way, else ``GRAPHSTORE_TOKEN``, else the token file.
        tls: ``{"tls_cert", "tls_key", "tls_ca"}`` files for a cluster with mutual TLS
            (default: the ``tls_*`` settings).
        timeout: seconds to connect.

    Raises:
        ValueError: no address was given or found, it is not a ``tcp://`` address, or a
            status page's address whose page does not answer.
        ConnectionLostError: the scheduler cannot be reached.
        AuthenticationError: the cluster refused the token.
    """

    def __init__(self, address: str | None = None, *, token: str | None = None,
                 tls: dict[str, Any] | None = None, timeout: float = 10.0) -> None:
        from graphstore.local_cluster import resolve_cluster
        address, record_token, tls = resolve_cluster(address, tls)
        if address is None:
            raise ValueError("no cluster address: pass address='tcp://HOST:PORT', set "
                             "GRAPHSTORE_ADDRESS, or start a cluster on this machine")
        if address.startswith(("http://", "https://")):
            address = scheduler_address_from_status_page(address, timeout)
        if not address.startswith("tcp://"):
            raise ValueError(f"address must be tcp://HOST:PORT, got {address!r}")
        self.address = address
        token_bytes = token.encode() if token else (
            record_token.encode() if record_token else load_token())
        self._token = token_bytes
        if tls:
            tls_config = tls_from_settings(tls.get("tls_cert"), tls.get("tls_key"),
                                           tls.get("tls_ca"),
                                           bool(tls.get("tls_check_hostname")))
        else:
            tls_config = tls_from_config(load_config())
        #: The same TLS files as ``init()`` keywords, for an upload's connection.
        self._tls_settings = tls_config.settings() if tls_config is not None else {}
        self._loop_thread = LoopThread(name="graphstore-jobs")

        async def open_connection() -> Any:
            comm = await connect(address, token_bytes, tls=tls_config, timeout=timeout)
            comm.handler = lambda c, m: None    # cluster news for drivers: not needed
            asyncio.ensure_future(comm.read_loop())
            await comm.request(msg.RegisterClient(new_id(), os.getpid(),
                                                  socket.gethostname(), "default"),
                               timeout=timeout)
            return comm
        try:
            self._comm = self._loop_thread.run(open_connection(), timeout=timeout + 5)
        except BaseException:
            self._loop_thread.stop()
            raise

    # -- connection -------------------------------------------------------------------
    def close(self) -> None:
        """Close the connection to the scheduler (jobs run on)."""
        comm, self._comm = getattr(self, "_comm", None), None
        if comm is not None:
            try:
                self._loop_thread.run(comm.close(), timeout=5)
            except Exception:
                pass
            self._loop_thread.stop()

    def __enter__(self) -> "JobSubmissionClient":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def _request(self, message: Any, timeout: float | None = 30.0) -> dict[str, Any]:
        if self._comm is None:
            raise RuntimeError("this JobSubmissionClient is closed")
        wait = None if timeout is None else timeout + 5
        reply = self._loop_thread.run(self._comm.request(message, timeout=timeout), wait)
        return _checked(reply)

    async def _request_async(self, message: Any,
                             timeout: float | None = 30.0) -> dict[str, Any]:
        if self._comm is None:
            raise RuntimeError("this JobSubmissionClient is closed")
        future = asyncio.run_coroutine_threadsafe(
            self._comm.request(message, timeout=timeout), self._loop_thread.loop)
        return _checked(await asyncio.wrap_future(future))

    # -- jobs -------------------------------------------------------------------------
    def submit_job(self, *, entrypoint: str, runtime_env: dict[str, Any] | None = None,
                   metadata: dict[str, str] | None = None,
                   submission_id: str | None = None,
                   entrypoint_num_cpus: float | None = None,
                   job_id: str | None = None) -> str:
        """Submit a job; it starts at once on the scheduler's host and runs to its end.

        Args:
            entrypoint: the shell command to run, e.g. ``"python script.py"``.
            runtime_env: its runtime environment: ``env_vars`` for the entrypoint and
                every task and actor of the job; ``working_dir``, a local directory
                uploaded as a content-addressed package (nothing is sent when the
                cluster has it already), unpacked on the scheduler's host and made
                the entrypoint's current directory.
            metadata: strings to keep with the job.
            submission_id: the job's id (default: ``gssubmit_`` and 16 random
                characters); letters, digits, ``_``, ``-`` and ``.``.
            entrypoint_num_cpus: CPUs the entrypoint holds on the cluster while it
                runs; the job waits PENDING until a node has them free (default 0).
            job_id: Ray's deprecated name of ``submission_id``.

        Returns:
            The job's submission id.

        Raises:
            ValueError: the entrypoint is empty, or ``job_id`` and ``submission_id``
                disagree.
            TypeError: runtime_env or metadata is not a dict.
            NotImplementedError: a runtime_env key graphstore does not implement.
            PackageError: the working_dir cannot be packed (missing, larger than
                ``max_package_bytes``).
            RuntimeError: the scheduler refused it: a duplicate or invalid id, a bad
                runtime_env (its text says which).
        """
        if job_id is not None:
            if submission_id is not None and submission_id != job_id:
                raise ValueError("job_id is the deprecated name of submission_id: give "
                                 "one of them")
            submission_id = job_id
        if not isinstance(entrypoint, str) or not entrypoint.strip():
            raise ValueError("entrypoint must be a non-empty shell command, e.g. "
                             "'python script.py'")
        if runtime_env is not None and not isinstance(runtime_env, dict):
            raise TypeError(f"runtime_env must be a dict, got {type(runtime_env).__name__}")
        if metadata is not None and not isinstance(metadata, dict):
            raise TypeError(f"metadata must be a dict, got {type(metadata).__name__}")
        runtime_env = self._resolve_runtime_env(dict(runtime_env or {}))
        cpus = entrypoint_num_cpus if entrypoint_num_cpus is not None else 0.0
        if isinstance(cpus, bool) or not isinstance(cpus, (int, float)) or cpus < 0:
            raise ValueError(f"entrypoint_num_cpus must be a number >= 0, got "
                             f"{entrypoint_num_cpus!r}")
        reply = self._request(msg.SubmitJob(submission_id, entrypoint, runtime_env,
                                            dict(metadata or {}), float(cpus)))
        return str(reply["submission_id"])

    def _resolve_runtime_env(self, runtime_env: dict[str, Any]) -> dict[str, Any]:
        """The runtime_env checked, a local ``working_dir`` (and ``py_modules``) packed
        and uploaded: the job gets their URIs. A package the cluster has already is not
        sent again. Uploading needs a driver connection: this process's own when it is
        connected to this cluster, else one opened for the upload and closed after."""
        from graphstore.core.packages import is_package_uri, resolve_runtime_env
        from graphstore.runtime.packages_client import upload_package
        paths = [runtime_env.get("working_dir"), *(runtime_env.get("py_modules") or [])]
        if all(p is None or is_package_uri(p) for p in paths):
            return resolve_runtime_env(runtime_env, upload=_no_upload)
        import graphstore
        from graphstore import session
        connected = session.connected_address()
        if connected is not None and connected != self.address:
            raise RuntimeError(f"this process is connected to another cluster "
                               f"({connected}); submit jobs with a local working_dir from "
                               f"a process connected to {self.address} or to none")
        if connected is None:
            graphstore.init(address=self.address, token=self._token.decode(),
                            log_to_driver=False, configure_logging=False,
                            **self._tls_settings)
        try:
            return resolve_runtime_env(runtime_env, upload=upload_package)
        finally:
            if connected is None:
                graphstore.shutdown()

    def stop_job(self, job_id: str) -> bool:
        """Stop a job: SIGTERM to its processes, SIGKILL 3 s later if they are still
        there. Returns at once; the job becomes STOPPED when its processes have exited.

        Args:
            job_id: the job's submission id.

        Returns:
            True if the job had not ended yet, False if it had.

        Raises:
            RuntimeError: no job has that id.
        """
        return bool(self._request(msg.StopJob(job_id))["stopped"])

    def delete_job(self, job_id: str) -> bool:
        """Forget an ended job (its log file stays on the scheduler's host).

        Args:
            job_id: the job's submission id.

        Returns:
            True once it is deleted.

        Raises:
            RuntimeError: no job has that id, or it has not ended (stop it first).
        """
        return bool(self._request(msg.DeleteJob(job_id))["deleted"])

    def get_job_info(self, job_id: str) -> JobInfo:
        """Everything the scheduler knows about a job.

        Args:
            job_id: the job's submission id.

        Returns:
            Its ``JobInfo``.

        Raises:
            RuntimeError: no job has that id.
        """
        return JobInfo._from_wire(self._request(msg.GetJob(job_id))["job"])

    def get_job_status(self, job_id: str) -> JobStatus:
        """A job's status.

        Args:
            job_id: the job's submission id.

        Returns:
            Its ``JobStatus``.

        Raises:
            RuntimeError: no job has that id.
        """
        return self.get_job_info(job_id).status

    def list_jobs(self) -> list[JobInfo]:
        """Every job the scheduler knows, oldest first.

        Returns:
            A ``JobInfo`` per job.
        """
        return [JobInfo._from_wire(info) for info in self._request(msg.ListJobs())["jobs"]]

    def get_job_logs(self, job_id: str) -> str:
        """What a job printed so far (stdout and stderr).

        Args:
            job_id: the job's submission id.

        Returns:
            Its log's text (of a running job: up to its last complete line).

        Raises:
            RuntimeError: no job has that id, or its log cannot be read.
        """
        parts: list[str] = []
        offset = 0
        while True:
            reply = self._request(msg.ReadJobLog(job_id, offset, 0, 0.0))
            if not reply["data"]:
                return "".join(parts)
            parts.append(reply["data"])
            offset = reply["end"]

    def follow_job_logs(self, job_id: str) -> Iterator[str]:
        """Chunks of a job's log from its start, as they are written, until it ends:
        the synchronous form of ``tail_job_logs``.

        Args:
            job_id: the job's submission id.

        Yields:
            Text chunks (whole lines while the job runs).

        Raises:
            RuntimeError: no job has that id.
            ConnectionLostError: the scheduler went away before the job ended.
        """
        offset = 0
        while True:
            reply = self._request(msg.ReadJobLog(job_id, offset, 0, FOLLOW_WAIT),
                                  timeout=FOLLOW_WAIT + 30)
            chunk, offset, done = _advance(reply, offset)
            if chunk:
                yield chunk
            if done:
                return

    async def tail_job_logs(self, job_id: str) -> AsyncIterator[str]:
        """Follow a job's log from its start until it ends, as Ray's: ``async for
        chunk in client.tail_job_logs(job_id): print(chunk, end="")``.

        Args:
            job_id: the job's submission id.

        Yields:
            Text chunks, as the job writes them.

        Raises:
            RuntimeError: no job has that id.
            ConnectionLostError: the scheduler went away before the job ended.
        """
        offset = 0
        while True:
            reply = await self._request_async(
                msg.ReadJobLog(job_id, offset, 0, FOLLOW_WAIT), timeout=FOLLOW_WAIT + 30)
            chunk, offset, done = _advance(reply, offset)
            if chunk:
                yield chunk
            if done:
                return


def _no_upload(path: Any, **kwargs: Any) -> str:
    raise AssertionError("nothing to upload")       # only URIs were given


def _advance(reply: dict[str, Any], offset: int) -> tuple[str, int, bool]:
    """``(text, next offset, done)`` of one log read: done once the job has ended and
    nothing is left to read."""
    data = reply["data"]
    done = not data and JobStatus(reply["status"]).is_terminal()
    return data, (reply["end"] if data else offset), done


def _checked(reply: Any) -> dict[str, Any]:
    """A reply, or the ``RuntimeError`` its error record describes (as Ray raises)."""
    if isinstance(reply, dict) and "error" in reply:
        raise RuntimeError(reply["error"]["text"])
    return cast(dict[str, Any], reply)
