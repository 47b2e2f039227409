"""``SLURMCluster``: a scheduler on this host (a SLURM login node) and workers as SLURM
batch jobs, in the manner of dask-jobqueue.

The scheduler is started the way ``graphstore.init()`` starts its own (a
``LocalCluster`` with no local worker), listening on an address the compute nodes reach.
Each worker job runs ``graphstore worker`` pointed at it, labelled with the job's id,
so the cluster maps workers to jobs from the scheduler's own worker list. The cluster
token travels in the job's environment (``GRAPHSTORE_TOKEN``, which ``sbatch`` passes to
the job), never in the script or on a command line.

``scale()`` submits jobs with ``sbatch --parsable`` and cancels them with ``scancel``;
``adapt()`` runs ``AdaptivePolicy`` (``adaptive.py``) in a thread against the
scheduler's queued work. The job script is built by ``WorkerJob`` (``job_script.py``).
"""
from __future__ import annotations

import logging
import math
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import weakref
from pathlib import Path
from typing import Any

from graphstore.core.config import load_config
from graphstore.core.node import contact_host
from graphstore.core.tls import tls_from_config
from graphstore.deploy.adaptive import AdaptivePolicy
from graphstore.deploy.job_script import WorkerJob, check_walltime, parse_memory
from graphstore.deploy.scheduler_link import SchedulerLink
from graphstore.exceptions import GraphstoreError
from graphstore.local_cluster import LocalCluster

logger = logging.getLogger("graphstore.deploy.slurm")

#: The label every worker of a job carries: the job's id.
JOB_LABEL = "slurm_job_id"
#: The label that says which SLURMCluster a worker belongs to.
CLUSTER_LABEL = "graphstore_cluster"


class SLURMCommandError(GraphstoreError, RuntimeError):
    """A SLURM command (``sbatch``, ``scancel``, ``squeue``) is missing or failed; the
    message carries its standard error."""


def _default_host() -> str:
    """This host's address on its default route: the one compute nodes most likely
    reach (no packet is sent); the host name if there is no route."""
    host = contact_host("0.0.0.0", "tcp://8.8.8.8:53")
    return host if host != socket.gethostname() else socket.gethostbyname(host)


class SLURMCluster:
    """A graphstore cluster whose workers are SLURM jobs.

    The scheduler runs in a child process of this one (it stops when this process
    ends, even when killed); workers join it from the compute nodes as their jobs
    start. Connect a driver with ``graphstore.init(address=cluster.address)``.

    Args:
        cores: CPUs of one job (``--cpus-per-task``), shared by its workers.
        memory: memory of one job (``--mem``), e.g. ``"4GB"``, ``"4GiB"``, ``"4G"``.
        processes: workers per job (each gets ``cores // processes`` CPUs).
        walltime: a job's time limit in SLURM's format (``"01:00:00"``).
        queue: the partition (``-p``); None: the site's default.
        account: the account to charge (``-A``).
        job_name: the jobs' name (``-J``).
        job_extra_directives: more ``#SBATCH`` options, e.g. ``["--gres=gpu:1"]``.
        job_directives_skip: generated directives to leave out (any containing one
            of these strings).
        job_script_prologue: shell lines run before the worker starts, e.g.
            ``["source /shared/venv/bin/activate"]``.
        worker_extra_args: more ``graphstore worker`` options.
        object_store_memory: bytes of each worker's object store (default: 30% of
            its share of ``memory``).
        python: the Python that runs the worker on the compute nodes (default: this
            process's, which suits a shared file system).
        log_directory: where jobs write their output (``-o``); None: SLURM's default,
            ``slurm-JOBID.out`` in the submitting directory.
        host: the address the scheduler listens on; it must be reachable from the
            compute nodes (default: this host's address on its default route).
        port: the scheduler's port (0: any free one).
        jobs: jobs to submit at once.
        retire_timeout: seconds a running job's workers get, before it is cancelled,
            to finish their tasks and copy away the objects only they hold.

    Raises:
        ValueError: an argument is malformed (the message names it).
        SLURMCommandError: ``jobs`` was given and ``sbatch`` is missing or failed.
    """

    def __init__(self, cores: int = 1, memory: int | str = "2GiB", processes: int = 1,
                 walltime: str = "00:30:00", queue: str | None = None,
                 account: str | None = None, job_name: str = "graphstore-worker",
                 job_extra_directives: list[str] | None = None,
                 job_directives_skip: list[str] | None = None,
                 job_script_prologue: list[str] | None = None,
                 worker_extra_args: list[str] | None = None,
                 object_store_memory: int | str | None = None, python: str | None = None,
                 log_directory: str | os.PathLike | None = None, host: str | None = None,
                 port: int = 0, jobs: int = 0, retire_timeout: float = 60.0):
        self.job = WorkerJob(
            cores=cores, memory=parse_memory(memory, "memory"), processes=processes,
            walltime=check_walltime(walltime), queue=queue, account=account,
            job_name=job_name, job_extra_directives=list(job_extra_directives or []),
            job_directives_skip=list(job_directives_skip or []),
            job_script_prologue=list(job_script_prologue or []),
            worker_extra_args=list(worker_extra_args or []),
            object_store_memory=(None if object_store_memory is None else
                                 parse_memory(object_store_memory, "object_store_memory")),
            python=python or sys.executable,
            log_directory=str(log_directory) if log_directory is not None else None)
        if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 0:
            raise ValueError(f"jobs must be a whole number >= 0, got {jobs!r}")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port < 65536:
            raise ValueError(f"port must be a port number (0: any free one), got {port!r}")
        config = load_config()
        tls = tls_from_config(config)
        self._startup_timeout = config.startup_timeout
        self.retire_timeout = float(retire_timeout)
        self._lock = threading.RLock()
        #: Job id -> submission time, oldest first, for jobs not known to have ended.
        self._jobs: dict[str, float] = {}
        #: Jobs cancelled that SLURM may still list (completing): close() waits for them.
        self._leaving: set[str] = set()
        self._adaptive: _AdaptiveLoop | None = None
        self._closed = False
        self._local = LocalCluster(0, scheduler_host=host or _default_host(),
                                   scheduler_port=port,
                                   tls=tls.settings() if tls else None)
        self._link: SchedulerLink | None = None
        try:
            self.address: str = self._local.start()
            """The scheduler, ``tcp://HOST:PORT``: give it to ``graphstore.init``."""
            self._link = SchedulerLink(self.address, self._local.token.encode(), tls,
                                       timeout=self._startup_timeout)
        except BaseException:
            self._local.shutdown()
            raise
        self.name = self._local.cluster_id
        """The cluster's name: every worker of its jobs carries the label
        ``graphstore_cluster=<name>``."""
        self._script = self._local.session_dir / "worker-job.sh"
        self._script.write_text(self.job_script())
        # Jobs are cancelled even if close() is never called.
        self._finalizer = weakref.finalize(self, _cancel_jobs, self._jobs, self._lock)
        if jobs:
            try:
                self.scale(jobs=jobs)
            except BaseException:
                self.close()
                raise

    # -- what it is --------------------------------------------------------------------
    @property
    def dashboard_link(self) -> str | None:
        """The scheduler's status page, or None if it has none."""
        return self._link.dashboard_url if self._link else None

    @property
    def token(self) -> str:
        """The cluster token (drivers on other hosts need it: ``init(token=...)``)."""
        return self._local.token

    @property
    def log_dir(self) -> Path:
        """The scheduler's log directory (on this host)."""
        return self._local.log_dir

    def job_script(self) -> str:
        """The batch script each worker job runs (``#SBATCH`` directives, the prologue,
        the worker command).

        Returns:
            The script's text.
        """
        return self.job.render(self.address, self._local.cluster_id)

    def job_ids(self) -> list[str]:
        """Ids of the jobs this cluster submitted that have not ended, oldest first.

        Returns:
            SLURM job ids.
        """
        with self._lock:
            return list(self._jobs)

    def workers(self) -> list[dict]:
        """The scheduler's rows of this cluster's connected workers (``id``, ``pid``,
        ``hostname``, ``labels``, ``running``, ``store_objects``, ...).

        Returns:
            One dict per worker; ``row["labels"]["slurm_job_id"]`` is its job.
        """
        rows = self._require_link().overview()["workers"]
        return [r for r in rows if r.get("labels", {}).get(CLUSTER_LABEL) == self.name]

    def wait_for_workers(self, n: int, timeout: float = 120.0) -> list[dict]:
        """Block until at least ``n`` workers of this cluster are connected.

        Returns:
            The workers' rows (see ``workers()``).

        Raises:
            TimeoutError: fewer joined in time; the message says what SLURM says of
                the jobs (pending and why, or ended).
        """
        deadline = time.monotonic() + timeout
        while True:
            rows = self.workers()
            if len(rows) >= n:
                return rows
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(rows)} of {n} workers joined within {timeout:g} s;"
                                   f" jobs: {self._describe_jobs()}")
            time.sleep(0.1)

    # -- scaling -----------------------------------------------------------------------
    def scale(self, n: int | None = None, jobs: int | None = None) -> None:
        """Have ``n`` workers (``jobs`` jobs): submit jobs to grow, cancel the newest to
        shrink. Jobs still pending in the queue are cancelled before running ones; a
        running job's workers first finish their tasks and copy the objects only they
        hold to the workers that stay (up to ``retire_timeout`` seconds).

        Args:
            n: workers wanted (rounded up to whole jobs of ``processes`` workers).
            jobs: jobs wanted, instead of ``n``.

        Raises:
            ValueError: neither or both of ``n`` and ``jobs``, or a negative number.
            SLURMCommandError: ``sbatch`` or ``scancel`` is missing or failed.
        """
        if (n is None) == (jobs is None):
            raise ValueError("scale() takes n (workers) or jobs, not both nor neither")
        count = n if jobs is None else jobs
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError(f"scale() needs a whole number >= 0, got {count!r}")
        if self._adaptive is not None:
            self._adaptive.stop()
            self._adaptive = None
        target = count if jobs is not None else math.ceil(count / self.job.processes)
        self._scale_jobs(target, idle_only=False)

    def _scale_jobs(self, target: int, idle_only: bool) -> None:
        with self._lock:
            self._check_open()
            self._forget_ended()
            have = len(self._jobs)
            if target > have:
                for _ in range(target - have):
                    self._submit()
                return
            if target < have:
                chosen = self._jobs_to_cancel(have - target, idle_only)
                self._retire(chosen)
                self._cancel(chosen)

    def _retire(self, job_ids: list[str]) -> None:
        """Let the jobs' workers finish their tasks and copy the objects only they hold
        to the workers that stay (the scheduler's ``RetireWorkers``), for up to
        ``retire_timeout`` seconds, so that cancelling the jobs loses nothing."""
        chosen = set(job_ids)
        ids = [bytes.fromhex(r["id"]) for r in self.workers()
               if r["labels"].get(JOB_LABEL) in chosen]
        if not ids:
            return
        link = self._require_link()
        deadline = time.monotonic() + self.retire_timeout
        while True:
            left = link.retire(ids)
            if not left["objects"] and not left["tasks"]:
                if left["stuck"]:
                    logger.warning("%d objects of jobs %s have no other worker to go to "
                                   "and are lost with them", left["stuck"],
                                   ", ".join(job_ids))
                return
            if time.monotonic() > deadline:
                logger.warning("jobs %s are cancelled with %d tasks still running and %d "
                               "objects not copied after %g s (retire_timeout); tasks are "
                               "retried elsewhere, objects rebuilt where possible",
                               ", ".join(job_ids), left["tasks"], left["objects"],
                               self.retire_timeout)
                return
            time.sleep(0.05)

    def adapt(self, minimum: int = 0, maximum: int = 10, interval: float = 1.0,
              wait_count: int = 3, minimum_jobs: int | None = None,
              maximum_jobs: int | None = None) -> None:
        """Scale with the work: as many jobs as the running and queued tasks need,
        between the bounds. Growing is immediate; a job is cancelled only once
        ``wait_count`` checks in a row wanted fewer, and only a job whose workers run
        nothing. ``scale()`` ends adapting.

        Args:
            minimum: workers to keep at least.
            maximum: workers to have at most.
            interval: seconds between two checks of the scheduler's queue.
            wait_count: checks in a row that must want fewer jobs before one is
                cancelled.
            minimum_jobs: the lower bound in jobs instead of workers.
            maximum_jobs: the upper bound in jobs instead of workers.

        Raises:
            ValueError: bounds that are negative, or a maximum below the minimum.
        """
        lo = minimum_jobs if minimum_jobs is not None else \
            math.ceil(minimum / self.job.processes)
        hi = maximum_jobs if maximum_jobs is not None else maximum // self.job.processes
        if not isinstance(interval, (int, float)) or not interval > 0:
            raise ValueError(f"interval must be a positive number of seconds, "
                             f"got {interval!r}")
        policy = AdaptivePolicy(lo, hi, float(self.job.cores), wait_count)
        self._check_open()
        if self._adaptive is not None:
            self._adaptive.stop()
        self._adaptive = _AdaptiveLoop(self, policy, float(interval))
        self._adaptive.start()

    def _adapt_step(self, policy: AdaptivePolicy) -> None:
        report = self._require_link().overview()
        overview = report["overview"]
        queued = overview["tasks"]["by_state"].get("queued", 0)
        busy = overview["resources"]["used"].get("CPU", 0.0)
        with self._lock:
            self._forget_ended()
            current = len(self._jobs)
        target = policy.decide(queued, busy, current)
        if target != current:
            logger.info("adapt: %d queued tasks, %.0f CPUs busy: %d -> %d jobs", queued,
                        busy, current, target)
            self._scale_jobs(target, idle_only=True)

    # -- SLURM commands ----------------------------------------------------------------
    def _submit(self) -> str:
        self._script.write_text(self.job_script())
        env = {**os.environ, "GRAPHSTORE_TOKEN": self._local.token}
        done = _run(["sbatch", "--parsable", str(self._script)], env=env)
        job_id = done.stdout.strip().split(";")[0]
        if not job_id.split("_")[0].isdigit():
            raise SLURMCommandError(f"sbatch printed no job id: {done.stdout!r} "
                                    f"{done.stderr.strip()!r}")
        self._jobs[job_id] = time.time()
        logger.info("submitted worker job %s", job_id)
        return job_id

    def _cancel(self, job_ids: list[str]) -> None:
        if not job_ids:
            return
        _run(["scancel", *job_ids])
        for job_id in job_ids:
            self._jobs.pop(job_id, None)
            self._leaving.add(job_id)
        logger.info("cancelled worker jobs %s", ", ".join(job_ids))

    def _queue_states(self, job_ids=None) -> dict[str, str]:
        """SLURM's state of each of our jobs (``job_ids``, else those not ended) it
        still lists (``PENDING``, ``RUNNING``, ``COMPLETING``, ...); a job not listed
        has ended."""
        ids = list(self._jobs if job_ids is None else job_ids)
        if not ids:
            return {}
        done = _run(["squeue", "-h", "-j", ",".join(ids), "-o", "%i %T %r"], check=False)
        if done.returncode != 0:
            if "Invalid job id" in done.stderr:     # every one of them has ended
                return {}
            raise SLURMCommandError(f"squeue failed ({done.returncode}): "
                                    f"{done.stderr.strip()}")
        states = {}
        for line in done.stdout.splitlines():
            parts = line.split(None, 2)
            if len(parts) >= 2:
                states[parts[0]] = " ".join(parts[1:])
        return states

    def _forget_ended(self) -> None:
        states = self._queue_states()
        for job_id in list(self._jobs):
            if job_id not in states:
                logger.warning("worker job %s ended (time limit, failure or scancel)",
                               job_id)
                del self._jobs[job_id]

    def _jobs_to_cancel(self, count: int, idle_only: bool) -> list[str]:
        """The ``count`` jobs to cancel: pending ones first, then running ones, newest
        first; with ``idle_only``, only jobs none of whose workers runs a task."""
        states = self._queue_states()
        rows = self.workers()
        busy_jobs = {r["labels"].get(JOB_LABEL) for r in rows
                     if r.get("running") or r.get("queued")}
        newest_first = list(reversed(self._jobs))
        pending = [j for j in newest_first if states.get(j, "").startswith("PENDING")]
        running = [j for j in newest_first if j not in pending]
        if idle_only:
            running = [j for j in running if j not in busy_jobs]
        return (pending + running)[:count]

    def _describe_jobs(self) -> str:
        try:
            states = self._queue_states()
        except SLURMCommandError as exc:
            return str(exc)
        with self._lock:
            ids = list(self._jobs)
        if not ids:
            return "none submitted"
        return "; ".join(f"{j}: {states.get(j, 'ended')}" for j in ids)

    # -- lifecycle ---------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise GraphstoreError("this SLURMCluster is closed")

    def _require_link(self) -> SchedulerLink:
        self._check_open()
        assert self._link is not None
        return self._link

    def close(self, timeout: float = 30.0) -> None:
        """Cancel every job, wait until SLURM no longer lists them, stop the scheduler.
        Calling it again does nothing.

        Raises:
            SLURMCommandError: ``scancel`` failed (the scheduler is stopped anyway).
        """
        if self._closed:
            return
        if self._adaptive is not None:
            self._adaptive.stop()
            self._adaptive = None
        try:
            with self._lock:
                ids = list(self._jobs)
                if ids:
                    _run(["scancel", *ids])
                ids += sorted(self._leaving)
                deadline = time.monotonic() + timeout
                while ids and time.monotonic() < deadline:
                    if not self._queue_states(ids):
                        break
                    time.sleep(0.1)
                self._jobs.clear()
                self._leaving.clear()
        finally:
            self._closed = True
            self._finalizer.detach()
            if self._link is not None:
                self._link.close()
            self._local.shutdown()

    def __enter__(self) -> "SLURMCluster":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{len(self._jobs)} jobs"
        return (f"SLURMCluster({self.address!r}, {state}, cores={self.job.cores}, "
                f"processes={self.job.processes})")


class _AdaptiveLoop:
    """The thread that applies an ``AdaptivePolicy`` every ``interval`` seconds."""

    def __init__(self, cluster: SLURMCluster, policy: AdaptivePolicy, interval: float):
        self._cluster = weakref.ref(cluster)
        self.policy = policy
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="graphstore-slurm-adapt",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            cluster = self._cluster()
            if cluster is None:
                return
            try:
                cluster._adapt_step(self.policy)
            except Exception as exc:       # a failed check is retried at the next one
                if self._stop.is_set():
                    return
                logger.warning("adapt: %s", exc)
            del cluster
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        if threading.current_thread() is not self._thread and self._thread.is_alive():
            self._thread.join(timeout=30)


def _run(argv: list[str], env: dict | None = None, check: bool = True,
         timeout: float = 60.0) -> subprocess.CompletedProcess:
    """Run a SLURM command; ``SLURMCommandError`` with its stderr when it is missing or
    fails (with ``check``)."""
    path = shutil.which(argv[0])
    if path is None:
        raise SLURMCommandError(f"{argv[0]} not found on PATH: run this on a host where "
                                f"SLURM's commands work (a login node), or install them "
                                f"(Debian: apt-get install slurm-client)")
    try:
        done = subprocess.run([path, *argv[1:]], capture_output=True, text=True, env=env,
                              timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise SLURMCommandError(f"{' '.join(argv)} did not answer in {timeout:g} s: is "
                                f"slurmctld up?") from None
    if check and done.returncode != 0:
        raise SLURMCommandError(f"{' '.join(argv)} failed (exit {done.returncode}): "
                                f"{done.stderr.strip() or done.stdout.strip()}")
    return done


def _cancel_jobs(jobs: dict, lock) -> None:
    """Finalizer: cancel the jobs of a cluster that was never closed."""
    with lock:
        ids = list(jobs)
        jobs.clear()
    if ids:
        try:
            _run(["scancel", *ids], check=False)
        except SLURMCommandError:
            pass


__all__ = ["SLURMCluster", "SLURMCommandError"]
