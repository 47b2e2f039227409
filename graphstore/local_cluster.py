"""The embedded default: a scheduler and workers on this machine, owned by the driver.

The driver binds the scheduler's listening socket itself and hands it over, so workers
and the driver can connect while the scheduler is still starting: all processes start at
once. Each child gets a pipe on stdin; when the driver exits for any reason the kernel
closes it and the children exit too. A monitor thread replaces workers that die, so the
cluster keeps its capacity.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from graphstore.core import shm
from graphstore.core.logs import sessions_root
from graphstore.core.node import default_store_capacity
from graphstore.core.token import ENV_VAR as TOKEN_ENV_VAR
from graphstore.core.token import new_token

logger = logging.getLogger("graphstore.local_cluster")

_KEEP_SESSIONS = 5


def _sessions_root() -> Path:
    return sessions_root()


def current_cluster_file() -> Path:
    return _sessions_root() / "current_cluster.json"


def find_current_cluster() -> dict | None:
    """The newest local cluster on this machine whose driver still runs, if any."""
    try:
        record = json.loads(current_cluster_file().read_text())
        os.kill(int(record["pid"]), 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return record


def resolve_cluster(address: str | None, tls: dict | None = None
                    ) -> tuple[str | None, str | None, dict | None]:
    """The cluster a client joins (a job client, an inspection command): ``address``,
    else ``GRAPHSTORE_ADDRESS``, else the newest local cluster on this machine, whose
    token and TLS files come with it. Returns ``(address, token, tls)``; the address is
    None when none is found, the token None when the caller's own applies."""
    address = address or os.environ.get("GRAPHSTORE_ADDRESS")
    if address is not None:
        return address, None, tls
    current = find_current_cluster()
    if current is None:
        return None, None, tls
    if not tls and current.get("tls"):
        tls = current["tls"]              # a local cluster started with TLS
    return current["address"], current["token"], tls


def _prune_old_sessions(root: Path) -> None:
    try:
        sessions = sorted(root.glob("session_*"), key=lambda p: p.stat().st_mtime)
    except OSError:
        return
    for old in sessions[:-_KEEP_SESSIONS]:
        if _session_alive(old):
            continue
        shutil.rmtree(old, ignore_errors=True)


def _session_alive(session: Path) -> bool:
    """Whether the driver that owns a session directory still runs."""
    try:
        pid = int((session / "driver.pid").read_text())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return False
    return True


class LocalCluster:
    def __init__(self, num_workers: int, *, cpus_per_worker: float = 1.0,
                 resources: dict | None = None, env: dict | None = None,
                 node_ids: list[str] | None = None, store_capacity: int = 0,
                 tls: dict | None = None, num_gpus: float = 0,
                 scheduler_host: str = "127.0.0.1", scheduler_port: int = 0):
        if num_workers < 0:
            raise ValueError(f"a local cluster's number of workers must be >= 0, "
                             f"got {num_workers}")
        #: Workers started here; 0 for a scheduler alone, whose workers join from other
        #: hosts (a batch system's jobs).
        self.num_workers = num_workers
        #: Where the scheduler listens: loopback, unless workers join from other hosts.
        self.scheduler_host = scheduler_host
        self.scheduler_port = scheduler_port
        self.cpus_per_worker = cpus_per_worker
        self.resources = dict(resources or {})
        #: GPUs of this host, offered by the first worker (each worker is told its
        #: count, so none counts the host's GPUs again).
        self.num_gpus = num_gpus
        #: TLS settings (files) its processes use, also told to ``graphstore status``.
        self.tls = tls
        self.token = new_token()
        self.node_ids = list(node_ids or [])
        self.store_capacity = store_capacity or default_store_capacity(num_workers)
        root = _sessions_root()
        root.mkdir(parents=True, exist_ok=True)
        _prune_old_sessions(root)
        self.session_dir = Path(tempfile.mkdtemp(
            prefix=time.strftime("session_%Y%m%d-%H%M%S_"), dir=root))
        self.log_dir = self.session_dir / "logs"
        self.log_dir.mkdir()
        (self.session_dir / "driver.pid").write_text(str(os.getpid()))
        self.session_name = self.session_dir.name
        self.cluster_id = self.session_name.replace("_", "").replace("-", "")[-20:]
        self._env = self._child_env({**(env or {}), "GRAPHSTORE_CLUSTER_ID": self.cluster_id})
        shm.sweep()  # segments of earlier clusters whose processes were all killed
        self.address = ""
        self.scheduler: subprocess.Popen | None = None
        self.workers: list[subprocess.Popen] = []
        self._worker_count = 0
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._monitor: threading.Thread | None = None
        self.replaced_workers = 0

    def _child_env(self, overrides: dict) -> dict:
        env = dict(os.environ)
        env[TOKEN_ENV_VAR] = self.token
        env.update({k: str(v) for k, v in overrides.items()})
        # Modules the driver can import, its children can import too.
        paths = [p or os.getcwd() for p in sys.path]
        env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    def _spawn(self, args: list[str], log_name: str, pass_fds=()) -> subprocess.Popen:
        log = open(self.log_dir / log_name, "ab", buffering=0)
        try:
            return subprocess.Popen(
                [sys.executable, *args, "--watch-stdin", "--session", self.session_name],
                stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT,
                env=self._env, pass_fds=pass_fds, close_fds=True, cwd=os.getcwd())
        finally:
            log.close()

    def start(self) -> str:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.scheduler_host, self.scheduler_port))
        sock.listen(1024)
        host, port = sock.getsockname()
        self.address = f"tcp://{host}:{port}"
        try:
            self.scheduler = self._spawn(
                ["-m", "graphstore.scheduler", "--listen-fd", str(sock.fileno())],
                "scheduler.log", pass_fds=(sock.fileno(),))
        finally:
            sock.close()
        for _ in range(self.num_workers):
            self._start_worker()
        self._monitor = threading.Thread(target=self._watch_workers,
                                         name="graphstore-local-cluster", daemon=True)
        self._monitor.start()
        self._announce()
        return self.address

    def _announce(self) -> None:
        """Let ``graphstore memory``/``status`` in another terminal find this cluster."""
        record = {"address": self.address, "token": self.token, "pid": os.getpid(),
                  "session_dir": str(self.session_dir), "tls": self.tls}
        path = current_cluster_file()
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(record, f)
        os.replace(tmp, path)

    def _start_worker(self) -> subprocess.Popen:
        self._worker_count += 1
        args = ["-m", "graphstore.worker", self.address, "--num-cpus",
                str(self.cpus_per_worker), "--object-store-memory", str(self.store_capacity)]
        if self.node_ids:
            args += ["--node-id", self.node_ids[(self._worker_count - 1) % len(self.node_ids)]]
        if self.resources and self._worker_count == 1:
            for name, amount in self.resources.items():
                args += ["--resource", f"{name}={amount}"]
        args += ["--num-gpus", str(self.num_gpus if self._worker_count == 1 else 0)]
        proc = self._spawn(args, f"worker-{self._worker_count}.log")
        proc.worker_args = args  # type: ignore[attr-defined]
        proc.log_name = f"worker-{self._worker_count}.log"  # type: ignore[attr-defined]
        self.workers.append(proc)
        return proc

    def _watch_workers(self) -> None:
        """Replace workers that die, while the cluster is up."""
        while not self._stopping.wait(0.2):
            if self.scheduler is not None and self.scheduler.poll() is not None:
                logger.error("the graphstore scheduler exited (code %s); see %s",
                             self.scheduler.returncode, self.log_dir / "scheduler.log")
                return
            with self._lock:
                if self._stopping.is_set():
                    return
                for proc in list(self.workers):
                    if proc.poll() is None:
                        continue
                    self.workers.remove(proc)
                    self._close_pipe(proc)
                    logger.warning("worker pid %s exited with code %s; starting a "
                                   "replacement", proc.pid, proc.returncode)
                    self.replaced_workers += 1
                    self._worker_count += 1
                    log_name = f"worker-{self._worker_count}.log"
                    replacement = self._spawn(proc.worker_args, log_name)
                    replacement.worker_args = proc.worker_args  # type: ignore[attr-defined]
                    replacement.log_name = log_name  # type: ignore[attr-defined]
                    self.workers.append(replacement)

    def failed_process_report(self) -> str | None:
        """If a process of this cluster has exited, say which and show its log tail."""
        procs = [("scheduler", self.scheduler, "scheduler.log")]
        procs += [(f"worker pid {p.pid}", p, p.log_name) for p in self.workers]
        for name, proc, log in procs:
            if proc is not None and proc.poll() is not None:
                text = ""
                if log:
                    try:
                        text = (self.log_dir / log).read_text()[-2000:]
                    except OSError:
                        pass
                return f"the {name} exited with code {proc.returncode}\n{text}"
        return None

    @staticmethod
    def _close_pipe(proc: subprocess.Popen) -> None:
        try:
            if proc.stdin is not None:
                proc.stdin.close()
        except OSError:
            pass

    def pids(self) -> list[int]:
        procs = [self.scheduler, *self.workers]
        return [p.pid for p in procs if p is not None]

    def shutdown(self, timeout: float = 5.0) -> None:
        """Stop every process; nothing of this cluster is left running afterwards."""
        self._stopping.set()
        with self._lock:
            procs = [p for p in [*self.workers, self.scheduler] if p is not None]
        for proc in procs:
            self._close_pipe(proc)
        deadline = time.monotonic() + timeout
        for proc in procs:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(1.0)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._monitor is not None and self._monitor is not threading.current_thread():
            self._monitor.join(timeout=1)
        shm.sweep(self.cluster_id)
