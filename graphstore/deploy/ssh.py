"""``SSHCluster``: a scheduler on the first host and a worker on each other host, started
over SSH; ``stop_cluster`` stops what was started (``graphstore down``).

The order, which keeps a failed start from leaving anything behind:

1. every host is checked at once (ssh connects and logs in, its Python imports
   graphstore); any failure stops here, before a process was started anywhere;
2. ``graphstore scheduler`` starts on the first host with a new token, in that host's
   directory for the cluster; its address and token are read back over ssh;
3. on every other host the token is written (from ssh's standard input) to a file only
   the user reads, and ``graphstore worker`` starts; each start waits until its worker
   has joined, all hosts at once;
4. if anything fails, what was started is stopped and ``SSHError`` names each host that
   did not come up, with the tail of its output.

Each process records its pid in its directory on its host; stopping runs
``graphstore stop --pid`` there (SIGTERM, then SIGKILL after a grace period), which
trusts only a live service whose record matches and sweeps the shared memory of the
workers it stopped. A ``detach=False`` cluster (the default) is tied to this process as
a local cluster is: its processes watch their ssh connection and stop when this process
exits, however it exits.
"""
from __future__ import annotations

import logging
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from graphstore.deploy.ssh_options import (DEFAULT_TIMEOUT, ClusterSpec, HostSpec,
                                           cluster_spec)
from graphstore.deploy.ssh_scripts import (END, parse_start, preflight_script,
                                           start_scheduler_script, start_worker_script,
                                           stop_script)
from graphstore.deploy.ssh_session import (NOT_FOUND, SSH_FAILED, RemoteScript, SSHError,
                                           run_scripts, ssh_failure)

logger = logging.getLogger("graphstore.deploy")

#: Seconds added to a wait for ssh itself (connecting, logging in) and the remote shell.
SSH_SLACK = 15.0
_TOKEN = re.compile(r"^[0-9a-f]{32,}$")
_ADDRESS = re.compile(r"^tcp://\S+:\d+$")


@dataclass(frozen=True)
class SSHProcess:
    """A process an ``SSHCluster`` started: its role (``scheduler``, ``worker-<i>``),
    the ssh destination of its host, its pid there and its address."""
    role: str
    host: str
    pid: int
    address: str


@dataclass(frozen=True)
class StopResult:
    """What stopping one host's process said: ``ok`` and the remote output, or the
    error."""
    role: str
    host: str
    ok: bool
    output: str


def _local_version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("graphstore")
    except PackageNotFoundError:
        return ""


def _wait_budget(spec: ClusterSpec, host: HostSpec) -> float:
    return spec.timeout + host.connect.connect_timeout + SSH_SLACK


def check_hosts(spec: ClusterSpec) -> None:
    """Connect to every host at once and check that its Python imports graphstore.

    Raises:
        SSHError: naming every host that cannot be reached, refused the login, or has
            no usable graphstore, with what ssh or Python said.
    """
    unique: dict[tuple, HostSpec] = {}
    for host in spec.hosts:
        unique.setdefault((host.destination, host.connect, host.python), host)
    hosts = list(unique.values())
    budget = max(host.connect.connect_timeout for host in hosts) + 60.0
    results = run_scripts([(h, preflight_script(spec, h)) for h in hosts], budget)
    errors = []
    mine = _local_version()
    for host, (status, out, err) in zip(hosts, results):
        python = " ".join(host.python)
        if status == SSH_FAILED:
            errors.append(ssh_failure(host.destination, err))
        elif status is None:
            errors.append(SSHError(f"{host.destination}: no answer within {budget:g} s",
                                   host.destination, err))
        elif status == NOT_FOUND:
            errors.append(SSHError(
                f"{host.destination}: {python} is not there; set remote_python to the "
                f"Python that has graphstore on that host\nthe shell said: {err.strip()}",
                host.destination, err))
        elif status != 0 or "version" not in out:
            errors.append(SSHError(
                f"{host.destination}: {python} cannot run graphstore; install graphstore "
                f"there (the same version as here, {mine or 'unknown'}) or set "
                f"remote_python\nPython said: {_last_lines(err or out, 6)}",
                host.destination, err))
        else:
            theirs = (out.split("version", 1)[1].split() or [""])[0]
            if mine and theirs and theirs != mine:
                logger.warning("%s has graphstore %s, this machine %s: use the same "
                               "version everywhere", host.destination, theirs, mine)
    if errors:
        raise _combined(errors)


def _last_lines(text: str, n: int) -> str:
    return "\n".join(text.strip().splitlines()[-n:]) or "(nothing)"


def _combined(errors: list[SSHError]) -> SSHError:
    if len(errors) == 1:
        return errors[0]
    message = f"{len(errors)} hosts failed:\n" + "\n".join(f"- {e}" for e in errors)
    return SSHError(message, None, "\n".join(e.output for e in errors))


def stop_hosts(spec: ClusterSpec, hosts: list[HostSpec], grace: float
               ) -> list[StopResult]:
    """Stop the process recorded on each of ``hosts`` (at once): SIGTERM, SIGKILL after
    ``grace`` seconds, then its workers' shared memory is swept. A host with nothing
    recorded (never started, or stopped already) is left as it is.

    Returns:
        One ``StopResult`` per host, in order; a host that could not be reached is
        ``ok=False`` with the reason.
    """
    if not hosts:
        return []
    budget = grace + max(h.connect.connect_timeout for h in hosts) + 60.0
    results = run_scripts([(h, stop_script(spec, h, grace)) for h in hosts], budget)
    reports = []
    for host, (status, out, err) in zip(hosts, results):
        if status == 0:
            text = "nothing was running" if out.strip() == "gs-ssh nothing" else out.strip()
            reports.append(StopResult(host.role, host.destination, True, text))
        elif status == SSH_FAILED:
            reports.append(StopResult(host.role, host.destination, False,
                                      str(ssh_failure(host.destination, err))))
        else:
            why = "no answer" if status is None else f"exit status {status}"
            reports.append(StopResult(host.role, host.destination, False,
                                      f"stopping failed ({why}): "
                                      f"{_last_lines(err + out, 6)}"))
    return reports


def stop_cluster(spec: ClusterSpec, grace: float = 10.0) -> list[StopResult]:
    """Stop what was started for ``spec`` on its hosts: the workers (at once), then the
    scheduler. Safe to call again: what is stopped stays stopped.

    Returns:
        One ``StopResult`` per host, workers first.
    """
    return stop_hosts(spec, list(spec.workers), grace) + \
        stop_hosts(spec, [spec.scheduler], grace)


class SSHCluster:
    """A graphstore cluster on machines reached over SSH: the scheduler on the first host,
    a worker on each of the others (list a host twice for two workers there).

    The cluster is up when the constructor returns; connect with
    ``graphstore.init(address=cluster.address, token=cluster.token)``. Every host needs
    SSH access with a key (ssh runs in batch mode, no password prompts) and a Python with
    graphstore, the same version as here.

    ```python
    import graphstore
    from graphstore.deploy import SSHCluster

    with SSHCluster(["10.0.0.10", "10.0.0.21", "10.0.0.22"],
                    connect_options={"user": "gs"},
                    worker_options={"num_cpus": 8}) as cluster:
        graphstore.init(address=cluster.address, token=cluster.token)
        ...
    ```

    Args:
        hosts: ssh destinations (``host``, ``user@host``, ``ssh://user@host:port``, or
            an alias of ``~/.ssh/config``), the scheduler's first. An entry may be a
            mapping with ``host`` and its own ``connect_options``, ``worker_options`` or
            ``remote_python``.
        connect_options: how ssh connects: ``user``, ``port``, ``identity_file``,
            ``known_hosts_file``, ``host_key_checking`` (``"yes"``, ``"accept-new"``,
            ``"no"``), ``config_file``, ``connect_timeout`` (10 s) and ``options``
            (any other ``ssh -o NAME=VALUE``). Unset ones are the user's ssh
            configuration's.
        scheduler_options: ``graphstore scheduler`` options: ``host`` (default: the
            first host's name: the address workers and drivers reach it at), ``port``
            (6380; 0 picks a free one), ``dashboard_port``, ``dashboard_host``,
            ``tls_cert``/``tls_key``/``tls_ca``, ``log_level``.
        worker_options: ``graphstore worker`` options for every worker: ``host``
            (default: its host's name), ``port``, ``node_id``, ``num_cpus``,
            ``num_gpus``, ``resources`` and ``labels`` (mappings), ``object_store_memory``,
            ``spill_to``, ``spill_options`` (a mapping), ``spill_threshold``, TLS files,
            ``log_level``.
        remote_python: the Python on the hosts (default: this one's path, right where
            hosts share a filesystem or an identical install); a command line such as
            ``"/opt/venv/bin/python"`` or ``"conda run -n gs python"``.
        remote_dir: each host's directory for this cluster's files (pid, token, logs),
            relative to the remote home (default ``.graphstore/ssh/<name>``).
        env: environment variables for the remote processes (not for secrets: they
            are on a command line there).
        name: the cluster's name (default: a new random one).
        token_file: also write the cluster token here, on this machine (mode 0600).
        timeout: seconds the scheduler, and then the workers, have to come up.
        detach: ``False`` ties the remote processes to this process (they stop when
            it exits, even if it is killed); ``True`` leaves them running until
            ``close()`` or ``graphstore down`` (what ``graphstore up`` does).

    Attributes:
        address: the scheduler's ``tcp://host:port``.
        token: the cluster token.
        dashboard_link: the status page's URL on the scheduler's host (None if off).
        processes: the ``SSHProcess`` of the scheduler and of each worker.
        spec: the checked configuration (``ClusterSpec``).

    Raises:
        ValueError: an option is wrong; the message names it.
        SSHError: a host could not be reached, refused the login, has no usable
            graphstore, or its process did not come up in time (the message has the
            tail of its output). Nothing started is left running.
    """

    def __init__(self, hosts: list[Any], connect_options: dict[str, Any] | None = None,
                 scheduler_options: dict[str, Any] | None = None,
                 worker_options: dict[str, Any] | None = None,
                 remote_python: str | None = None, *, remote_dir: str | None = None,
                 env: dict[str, str] | None = None, name: str | None = None,
                 token_file: str | os.PathLike[str] | None = None,
                 timeout: float = DEFAULT_TIMEOUT, detach: bool = False):
        self.spec = cluster_spec(hosts, connect_options=connect_options,
                                 scheduler_options=scheduler_options,
                                 worker_options=worker_options,
                                 remote_python=remote_python, remote_dir=remote_dir,
                                 env=env, name=name or f"cluster-{secrets.token_hex(4)}",
                                 timeout=timeout)
        self.detach = bool(detach)
        self.token_file = Path(token_file).expanduser() if token_file else None
        self.address = ""
        self.token = ""
        self.dashboard_link: str | None = None
        self.processes: list[SSHProcess] = []
        self._to_stop: list[HostSpec] = []        # this cluster may run a process there
        self._sessions: list[RemoteScript] = []   # attached: the ssh of each process
        self._closed = False
        try:
            check_hosts(self.spec)
            self._start_scheduler()
            self._start_workers()
        except BaseException:
            try:
                self._stop(grace=2.0)
            except Exception:
                logger.exception("stopping what had started failed")
            raise

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], *, detach: bool = False
                  ) -> "SSHCluster":
        """Start the cluster a hosts file describes (the file of ``graphstore up``;
        its keys are this class's arguments), tied to this process unless ``detach``.

        Returns:
            The started cluster. Its token is not written to the file's
            ``token_file``: that is ``graphstore up``'s.

        Raises:
            ValueError: the file cannot be read or a key is wrong; names the key.
            SSHError: as the constructor.
        """
        from graphstore.deploy.hosts_file import load_hosts_file
        return cls(**load_hosts_file(path).arguments, detach=detach)

    @property
    def name(self) -> str:
        """The cluster's name (its directory on each host)."""
        return self.spec.name

    def __repr__(self) -> str:
        state = "closed" if self._closed else self.address
        return (f"SSHCluster({self.name!r}, {state}, "
                f"{len(self.spec.workers)} workers)")

    def __enter__(self) -> "SSHCluster":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
            return
        try:
            self.close()
        except SSHError as error:      # keep the exception that is on its way out
            logger.error("%s", error)

    # -- starting ------------------------------------------------------------------------

    def _launch(self, host: HostSpec, script: str, stdin_text: str = "") -> RemoteScript:
        session = RemoteScript(host, script, stdin_text=stdin_text,
                               keep_stdin=not self.detach)
        if not self.detach:
            self._sessions.append(session)
        return session

    def _await(self, session: RemoteScript, what: str, deadline: float):
        """The ``StartReport`` of a start script, or the SSHError saying why it failed."""
        lines, ended = session.read_until(END, deadline)
        report = parse_start(lines)
        host = session.host
        destination = host.destination
        if report.status == "running":
            return SSHError(f"{what} on {destination}: cluster {self.name!r} already runs "
                            f"there (pid {report.pid}); stop it first (`graphstore down`), "
                            f"or give this one another name", destination)
        error = session.connection_error() if not ended else None
        if report.pid is not None or (not ended and error is None):
            self._to_stop.append(host)        # started, or it may have been
        if not ended:
            if error is None and not session.running:
                error = SSHError(f"{what} on {destination}: the start script failed (exit "
                                 f"status {session.popen.returncode})\n"
                                 f"{_last_lines(session.stderr, 10)}", destination,
                                 session.stderr)
            if error is None:
                error = SSHError(f"{what} on {destination}: no answer over ssh in time",
                                 destination, session.stderr)
            return error
        if report.status != "ready":
            why = {"exited": "exited", "timeout": f"did not come up within "
                                                  f"{self.spec.timeout:g} s"}.get(
                report.status, report.status or "failed")
            return SSHError(f"{what} on {destination} {why}; the end of its output "
                            f"({self.spec.role_dir(session.host)}/out.log there):\n"
                            f"{report.log_tail or '(nothing)'}", destination,
                            report.log_tail)
        return report

    def _start_scheduler(self) -> None:
        host = self.spec.scheduler
        session = self._launch(host, start_scheduler_script(self.spec, not self.detach))
        report = self._await(session, "the scheduler",
                             time.monotonic() + _wait_budget(self.spec, host))
        if self.detach:
            session.close()
        if isinstance(report, SSHError):
            raise report
        address = report.values.get("address", "")
        token = report.values.get("token", "")
        if not _ADDRESS.match(address) or not _TOKEN.match(token):
            raise SSHError(f"the scheduler on {host.destination} started but its address "
                           f"or token could not be read back:\n{report.log_tail}",
                           host.destination, report.log_tail)
        self.address, self.token = address, token
        self.dashboard_link = report.values.get("dashboard") or None
        self.processes.append(SSHProcess(host.role, host.destination, report.pid or 0,
                                         address))
        if self.token_file is not None:
            from graphstore.core.token import write_token_file
            write_token_file(token, self.token_file)

    def _start_workers(self) -> None:
        sessions = [(host, self._launch(host, start_worker_script(
                        self.spec, host, self.address, not self.detach),
                        stdin_text=self.token + "\n"))
                    for host in self.spec.workers]
        deadline = time.monotonic() + max(_wait_budget(self.spec, h)
                                          for h, _ in sessions)
        errors = []
        for host, session in sessions:
            report = self._await(session, f"the worker {host.role}", deadline)
            if self.detach:
                session.close()
            if isinstance(report, SSHError):
                errors.append(report)
                continue
            self.processes.append(SSHProcess(host.role, host.destination,
                                             report.pid or 0,
                                             report.values.get("worker", "")))
        if errors:
            raise _combined(errors)

    # -- stopping ------------------------------------------------------------------------

    def _stop(self, grace: float) -> list[StopResult]:
        if self._closed:
            return []
        self._closed = True
        started = list(dict.fromkeys(self._to_stop))
        results = stop_hosts(self.spec, [h for h in started if h.role != "scheduler"],
                             grace)
        results += stop_hosts(self.spec, [h for h in started if h.role == "scheduler"],
                              grace)
        for session in self._sessions:
            session.close()
        self._sessions.clear()
        if self.token_file is not None:
            try:
                self.token_file.unlink()
            except FileNotFoundError:
                pass
        return results

    def close(self, grace: float = 10.0) -> None:
        """Stop the workers, then the scheduler (SIGTERM, then SIGKILL after ``grace``
        seconds); their workers' shared memory is swept. Safe to call twice.

        Raises:
            SSHError: a host could not be reached to stop its process (the others were
                stopped); the message names it.
        """
        failed = [r for r in self._stop(grace) if not r.ok]
        if failed:
            raise SSHError("could not stop everything:\n" + "\n".join(
                f"- {r.role} on {r.host}: {r.output}" for r in failed),
                failed[0].host if len(failed) == 1 else None)
