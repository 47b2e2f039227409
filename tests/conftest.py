"""Fixtures shared by the test suite.

Integration tests run real local clusters: a scheduler and worker subprocesses talking
over TCP. Everything here exists so that they never leave a process behind:

* every process this pytest session starts inherits ``GSTEST_SESSION_MARKER`` in its
  environment, which identifies it even after it was re-parented to init (a driver script
  killed with SIGKILL leaves its cluster orphaned for a moment);
* ``shared_cluster`` (session scope) starts ``graphstore.init(num_cpus=2)`` once and shuts
  it down at the end; ``cluster`` (function scope) hands it to a test, restarting it if a
  previous test replaced or damaged it;
* ``fresh_cluster`` starts a private cluster for one test and stops it afterwards;
* ``run_driver`` runs a driver script with ``sys.executable`` and always kills it and its
  children afterwards; ``cli_cluster`` runs ``graphstore scheduler``/``worker`` by hand;
* ``procs`` (process helpers), ``local`` (the in-process ``LocalCluster``) and
  ``init_cluster`` (``init`` with the fixtures' start-up timeout) are small helpers;
* ``_graphstore_process_safety_net`` (session scope, autouse) kills any graphstore process
  of this session still alive at the end, and then fails the run loudly;
* for spilling: ``moto_s3`` (session scope) is a real moto S3 server subprocess on a free
  loopback port, always killed at the end; ``s3_spot`` gives a test a fresh bucket on it;
  ``flaky_s3`` is a test's own moto server it may stop and start again on the same port;
  ``moto_s3_with_auth`` checks credentials (an IAM user, its key, a bucket);
  ``spawn_cli`` runs ``python -m graphstore.cli ...`` with a given environment and kills
  it at teardown;
* for several hosts on this one machine: ``host_network`` is a bridge and network
  namespaces (``netns.py``), skipped with the reason where they cannot be made (not root,
  no ``ip``); ``multihost_cluster`` runs ``graphstore scheduler`` on the bridge and one
  ``graphstore worker`` per namespace; all its processes, namespaces, links and shared
  memory are gone after each test (``netns.sweep_stale`` removes a killed run's).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

#: Environment variable every child of this pytest session inherits.
SESSION_MARKER_ENV = "GSTEST_SESSION_MARKER"
SESSION_MARKER = uuid.uuid4().hex
os.environ[SESSION_MARKER_ENV] = SESSION_MARKER

#: Command-line fragments of graphstore service processes.
SERVICE_MARKERS = ("graphstore.scheduler", "graphstore.worker", "graphstore.cli")
#: Driver scripts written by ``run_driver`` are named like this.
DRIVER_PREFIX = "gstest_driver_"


# -- finding processes ------------------------------------------------------------------

def _cmdline(proc: psutil.Process) -> str:
    try:
        return " ".join(proc.cmdline())
    except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
        return ""


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return False
    except psutil.AccessDenied:
        return True


def session_processes(*, session_name: str | None = None,
                      include_drivers: bool = False) -> list[psutil.Process]:
    """Live graphstore processes started (directly or not) by this pytest session.

    ``session_name`` narrows to one local cluster (its ``--session`` argument).
    """
    me = os.getpid()
    found: dict[int, psutil.Process] = {}
    markers = SERVICE_MARKERS + ((DRIVER_PREFIX,) if include_drivers else ())
    # Our own descendants (cheap, and works even if environ is unreadable) ...
    candidates = list(psutil.Process(me).children(recursive=True))
    # ... and orphans that inherited our marker.
    for proc in psutil.process_iter():
        if proc.pid == me:
            continue
        try:
            if proc.environ().get(SESSION_MARKER_ENV) == SESSION_MARKER:
                candidates.append(proc)
        except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
            continue
    for proc in candidates:
        cmd = _cmdline(proc)
        if not any(m in cmd for m in markers):
            continue
        if session_name is not None and session_name not in cmd:
            continue
        if _alive(proc):
            found[proc.pid] = proc
    return list(found.values())


def wait_gone(procs, timeout: float) -> list[psutil.Process]:
    """Poll until every process in ``procs`` has exited; return those still alive."""
    procs = [p if isinstance(p, psutil.Process) else _process_or_none(p) for p in procs]
    procs = [p for p in procs if p is not None]
    deadline = time.monotonic() + timeout
    while True:
        alive = [p for p in procs if _alive(p)]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.05)


def _process_or_none(pid: int) -> psutil.Process | None:
    try:
        return psutil.Process(pid)
    except psutil.NoSuchProcess:
        return None


def kill_all(procs) -> None:
    for proc in procs:
        try:
            proc.kill()
        except (psutil.NoSuchProcess, psutil.ZombieProcess, ProcessLookupError):
            pass
    for proc in procs:
        try:
            proc.wait(timeout=5)
        except (psutil.NoSuchProcess, psutil.TimeoutExpired, psutil.ZombieProcess,
                ChildProcessError):
            pass


def kill_tree(pid: int) -> None:
    """SIGKILL ``pid`` and every descendant it has (collected before killing)."""
    try:
        parent = psutil.Process(pid)
        procs = parent.children(recursive=True) + [parent]
    except psutil.NoSuchProcess:
        return
    kill_all(procs)


class ProcTools:
    """Process helpers, handed to tests by the ``procs`` fixture."""
    session_processes = staticmethod(session_processes)
    wait_gone = staticmethod(wait_gone)
    kill_all = staticmethod(kill_all)
    kill_tree = staticmethod(kill_tree)
    alive = staticmethod(_alive)
    marker_env = SESSION_MARKER_ENV
    marker = SESSION_MARKER


@pytest.fixture
def procs() -> type[ProcTools]:
    return ProcTools


# -- the safety net ---------------------------------------------------------------------

@pytest.fixture(scope="session", autouse=True)
def _graphstore_process_safety_net():
    """At session end: no graphstore process of this session may be left running.

    Autouse and session-scoped, so it is set up first and torn down last, after every
    cluster fixture has shut its cluster down. Leftovers are killed, then the run fails.
    """
    yield
    problems = []
    import graphstore
    if graphstore.is_initialized():
        # A test connected without a fixture and never called shutdown(); stop its
        # cluster now, and let the process check below judge what is left.
        sys.stderr.write("\n[conftest] graphstore was still initialized at session end; "
                         "calling shutdown()\n")
        graphstore.shutdown()
    # Processes exit asynchronously after their pipe or scheduler goes away: give them
    # a few seconds before calling them leftovers.
    leftovers = session_processes(include_drivers=True)
    if leftovers:
        leftovers = wait_gone(leftovers, timeout=5.0)
    if leftovers:
        described = "\n".join(f"  pid {p.pid}: {_cmdline(p)}" for p in leftovers)
        kill_all(leftovers)
        problems.append(f"{len(leftovers)} graphstore process(es) started by this test "
                        f"session were still running at its end (now killed):\n"
                        f"{described}")
    if problems:
        message = "GRAPHSTORE PROCESS LEAK\n" + "\n".join(problems)
        sys.stderr.write("\n" + "!" * 78 + "\n" + message + "\n" + "!" * 78 + "\n")
        pytest.fail(message, pytrace=False)


# -- clusters ---------------------------------------------------------------------------

#: Seconds ``init()`` may wait for workers in fixtures and driver scripts: well above a
#: normal start (< 1 s here) yet short enough that a failed start does not eat the
#: suite's time budget.
FIXTURE_STARTUP_TIMEOUT = 10.0


def init_local_cluster(**kwargs):
    """``graphstore.init(**kwargs)`` for fixtures, with ``FIXTURE_STARTUP_TIMEOUT``."""
    import graphstore
    kwargs.setdefault("startup_timeout", FIXTURE_STARTUP_TIMEOUT)
    return graphstore.init(**kwargs)


@pytest.fixture
def init_cluster():
    """``graphstore.init`` for tests that start a cluster themselves (``with init(...)``),
    with the fixtures' start-up timeout. The caller shuts it down."""
    return init_local_cluster


def _current_address() -> str | None:
    from graphstore import session
    driver = session._driver
    return driver.address if driver is not None else None


class SharedCluster:
    """The session's shared ``init(num_cpus=2)`` cluster, restarted when needed."""

    NUM_CPUS = 2

    def __init__(self):
        self.ctx = None
        self.starts = 0

    def _healthy(self) -> bool:
        import graphstore
        if self.ctx is None or _current_address() != self.ctx.address:
            return False
        try:
            status = graphstore.cluster_status()
        except Exception:
            return False
        return status["workers"] == self.NUM_CPUS and not status["tasks"]

    def ensure(self):
        import graphstore
        if not self._healthy():
            graphstore.shutdown()
            self.ctx = init_local_cluster(num_cpus=self.NUM_CPUS)
            self.starts += 1
        return self.ctx

    def close(self) -> None:
        import graphstore
        if self.ctx is not None and _current_address() == self.ctx.address:
            graphstore.shutdown()
        self.ctx = None


@pytest.fixture(scope="session")
def shared_cluster():
    """A local cluster of 2 one-CPU workers, started once and shut down at session end."""
    shared = SharedCluster()
    shared.ensure()
    yield shared
    shared.close()


@pytest.fixture
def cluster(shared_cluster):
    """The shared cluster, (re)started if a previous test replaced or damaged it.

    Tests using it must leave it as they found it: no running tasks, no dead workers.
    """
    return shared_cluster.ensure()


@pytest.fixture
def fresh_cluster():
    """Factory: ``fresh_cluster(**init_kwargs)`` starts a private local cluster.

    Replaces whatever cluster this process is connected to; stops it at teardown and
    checks that its processes are gone.
    """
    import graphstore
    from graphstore import session
    started = []

    def start(**kwargs):
        kwargs.setdefault("num_cpus", 2)
        graphstore.shutdown()
        ctx = init_local_cluster(**kwargs)
        local = session.current_local_cluster()
        started.append(local.session_name if local is not None else None)
        return ctx

    yield start
    graphstore.shutdown()
    for session_name in started:
        if session_name is None:
            continue
        left = wait_gone(session_processes(session_name=session_name), timeout=5.0)
        if left:
            kill_all(left)
            pytest.fail(f"fresh cluster {session_name} left processes behind after "
                        f"shutdown(): {[p.pid for p in left]}")


def local_cluster():
    """The ``LocalCluster`` this process owns (graphstore internals; for pids)."""
    from graphstore import session
    return session.current_local_cluster()


@pytest.fixture
def local():
    """Returns a callable giving the in-process ``LocalCluster`` (to find its pids)."""
    return local_cluster


# -- driver scripts ---------------------------------------------------------------------

@dataclass
class DriverRun:
    returncode: int | None
    stdout: str
    stderr: str
    pid: int

    def lines(self) -> list[str]:
        return self.stdout.splitlines()

    def value(self, key: str) -> str:
        """The text after ``KEY=`` on the first stdout line starting with it."""
        for line in self.stdout.splitlines():
            if line.startswith(key + "="):
                return line[len(key) + 1:]
        raise AssertionError(f"driver printed no {key}= line\nstdout:\n{self.stdout}\n"
                             f"stderr:\n{self.stderr}")


@dataclass
class DriverProcess:
    """A driver script still running; read its stdout file while it runs."""
    popen: subprocess.Popen
    stdout_path: Path
    stderr_path: Path
    children: list = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def wait_for_line(self, prefix: str, timeout: float = 30.0) -> str:
        """Wait until stdout has a line starting with ``prefix``; return its remainder."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.stdout().splitlines():
                if line.startswith(prefix):
                    return line[len(prefix):]
            if self.popen.poll() is not None:
                # One last read: the line may have been written just before exit.
                for line in self.stdout().splitlines():
                    if line.startswith(prefix):
                        return line[len(prefix):]
                raise AssertionError(
                    f"driver exited with code {self.popen.returncode} before printing "
                    f"{prefix!r}\nstdout:\n{self.stdout()}\nstderr:\n{self.stderr()}")
            time.sleep(0.02)
        raise AssertionError(f"driver did not print {prefix!r} within {timeout} s\n"
                             f"stdout:\n{self.stdout()}\nstderr:\n{self.stderr()}")


@pytest.fixture
def run_driver(tmp_path):
    """Run driver scripts with ``sys.executable``; everything is killed at teardown.

    ``run_driver(code, timeout=60, env=None)`` runs to completion and returns a
    ``DriverRun``; ``run_driver.start(code, env=None, ready_line=None)`` returns a
    ``DriverProcess``.
    """
    started: list[DriverProcess] = []
    counter = [0]

    def _launch(code: str, env: dict | None) -> DriverProcess:
        counter[0] += 1
        n = counter[0]
        script = tmp_path / f"{DRIVER_PREFIX}{n}.py"
        script.write_text(textwrap.dedent(code))
        out_path = tmp_path / f"{DRIVER_PREFIX}{n}.stdout"
        err_path = tmp_path / f"{DRIVER_PREFIX}{n}.stderr"
        full_env = dict(os.environ)
        full_env.pop("GRAPHSTORE_TOKEN", None)
        full_env.pop("GRAPHSTORE_ADDRESS", None)
        full_env["PYTHONUNBUFFERED"] = "1"
        # A cluster that fails to start fails the test in seconds, not after 60 s.
        full_env["GRAPHSTORE_STARTUP_TIMEOUT"] = str(FIXTURE_STARTUP_TIMEOUT)
        full_env.update(env or {})
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            popen = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.DEVNULL,
                                     stdout=out, stderr=err, env=full_env, cwd=tmp_path)
        driver = DriverProcess(popen, out_path, err_path)
        started.append(driver)
        return driver

    def run(code: str, timeout: float = 60.0, env: dict | None = None) -> DriverRun:
        driver = _launch(code, env)
        try:
            returncode = driver.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            kill_tree(driver.pid)
            driver.popen.wait()
            raise AssertionError(f"driver script did not finish within {timeout} s\n"
                                 f"stdout:\n{driver.stdout()}\nstderr:\n{driver.stderr()}")
        return DriverRun(returncode, driver.stdout(), driver.stderr(), driver.pid)

    def start(code: str, env: dict | None = None, ready_line: str | None = None,
              timeout: float = 30.0) -> DriverProcess:
        """Launch a driver; with ``ready_line``, wait until it prints that line."""
        driver = _launch(code, env)
        if ready_line is not None:
            driver.wait_for_line(ready_line, timeout)
        return driver

    run.start = start  # type: ignore[attr-defined]
    try:
        yield run
    finally:
        for driver in started:
            if driver.popen.poll() is None:
                kill_tree(driver.pid)
            try:
                driver.popen.wait(5)
            except subprocess.TimeoutExpired:
                pass
        # Anything the drivers started that outlived them (their clusters notice the
        # closed pipe and exit within a moment; give them that moment, then kill).
        left = [p for p in session_processes(include_drivers=True)
                if DRIVER_PREFIX in _cmdline(p) or _started_by_a_driver(p, started)]
        left = wait_gone(left, timeout=5.0)
        kill_all(left)


def _started_by_a_driver(proc: psutil.Process, drivers: list[DriverProcess]) -> bool:
    """True for a service process of a local cluster one of ``drivers`` started.

    Our driver scripts print their cluster's ``--session`` name as ``SESSION=...``; a
    marked service process that is no descendant of pytest is an orphaned driver child too.
    """
    names = []
    for driver in drivers:
        try:
            for line in driver.stdout().splitlines():
                if line.startswith("SESSION="):
                    names.append(line[len("SESSION="):].strip())
        except OSError:
            pass
    cmd = _cmdline(proc)
    if any(name and name in cmd for name in names):
        return True
    try:
        ours = {p.pid for p in psutil.Process().children(recursive=True)}
    except psutil.NoSuchProcess:
        return False
    return proc.pid not in ours


# -- CLI clusters -----------------------------------------------------------------------

@dataclass
class CliCluster:
    address: str
    token: str
    token_file: Path
    scheduler: subprocess.Popen
    workers: list
    log_dir: Path
    #: ``add_worker(*args)`` starts one more ``graphstore worker`` (killed at teardown).
    add_worker: object = None

    def env(self) -> dict:
        return {"GRAPHSTORE_TOKEN": self.token}


@pytest.fixture
def cli_cluster(tmp_path):
    """Factory: ``cli_cluster(num_workers=1)`` runs ``graphstore scheduler --port 0`` and
    ``graphstore worker`` by hand, as an operator would; all are killed at teardown."""
    popens: list[subprocess.Popen] = []

    def spawn(args: list[str], log: Path, env: dict) -> subprocess.Popen:
        with open(log, "wb") as out:
            popen = subprocess.Popen([sys.executable, "-m", "graphstore.cli", *args],
                                     stdin=subprocess.DEVNULL, stdout=out,
                                     stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
        popens.append(popen)
        return popen

    def start(num_workers: int = 1, worker_args: tuple = (), env: dict | None = None
              ) -> CliCluster:
        log_dir = tmp_path / f"cli-{len(popens)}"
        log_dir.mkdir()
        token_file = log_dir / "token"
        env = {**os.environ, **(env or {})}
        env.pop("GRAPHSTORE_TOKEN", None)
        env["PYTHONUNBUFFERED"] = "1"
        sched_log = log_dir / "scheduler.log"
        scheduler = spawn(["scheduler", "--port", "0", "--token-file", str(token_file)],
                          sched_log, env)
        address = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            text = sched_log.read_text(errors="replace")
            for line in text.splitlines():
                if line.startswith("graphstore scheduler listening at "):
                    address = line.split(" at ", 1)[1].strip()
            if address:
                break
            if scheduler.poll() is not None:
                raise AssertionError(f"scheduler exited early:\n{text}")
            time.sleep(0.02)
        assert address and address.startswith("tcp://"), sched_log.read_text()
        token = token_file.read_text().strip()
        assert token, "the scheduler wrote an empty token file"
        workers = []

        def add_worker(*args: str) -> subprocess.Popen:
            worker = spawn(["worker", address, "--num-cpus", "1",
                            "--token-file", str(token_file), *(args or worker_args)],
                           log_dir / f"worker-{len(workers)}.log", env)
            workers.append(worker)
            return worker

        for _ in range(num_workers):
            add_worker()
        return CliCluster(address, token, token_file, scheduler, workers, log_dir,
                          add_worker)

    try:
        yield start
    finally:
        for popen in popens:
            if popen.poll() is None:
                popen.send_signal(signal.SIGKILL)
        for popen in popens:
            try:
                popen.wait(5)
            except subprocess.TimeoutExpired:
                pass


# -- S3 (a real moto server) and hand-started CLI processes, for the spilling tests -----

def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    import socket
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class MotoServer:
    """A real moto S3 server: ``python -m moto.server`` as a subprocess on loopback.

    ``stop()`` kills it (its state, buckets included, lives in its memory and is gone);
    ``start()`` again brings a fresh one up on the same port.
    """

    def __init__(self, log_path: Path, port: int | None = None, env: dict | None = None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.env = dict(env or {})
        self.popen: subprocess.Popen | None = None
        self._fs = None

    def start(self, timeout: float = 30.0) -> "MotoServer":
        import urllib.request
        env = dict(os.environ)
        env.update(self.env)
        with open(self.log_path, "ab") as log:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                 str(self.port)], stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        while True:
            try:
                urllib.request.urlopen(self.url + "/moto-api/", timeout=1).close()
                return self
            except OSError:
                pass
            if self.popen.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"moto server on port {self.port} did not come up:\n"
                                   f"{self.log_path.read_text(errors='replace')[-3000:]}")
            time.sleep(0.05)

    def stop(self) -> None:
        popen, self.popen = self.popen, None
        self._fs = None
        if popen is None:
            return
        if popen.poll() is None:
            popen.kill()
        try:
            popen.wait(10)
        except subprocess.TimeoutExpired:
            pass

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def options(self, key: str = "testing", secret: str = "testing", **extra) -> dict:
        """graphstore ``spill_options`` (s3fs storage options) for this server."""
        return {"key": key, "secret": secret,
                "client_kwargs": {"endpoint_url": self.url, "region_name": "us-east-1"},
                **extra}

    @property
    def fs(self):
        """An s3fs filesystem on this server (fresh after each ``start``)."""
        if self._fs is None:
            import s3fs
            self._fs = s3fs.S3FileSystem(skip_instance_cache=True, **self.options())
        return self._fs

    def create_bucket(self, name: str, key: str = "testing", secret: str = "testing") -> str:
        """Create a bucket through s3fs. (No region_name here: with one, s3fs sends a
        LocationConstraint, which S3 refuses for us-east-1, the default region.)"""
        import s3fs
        fs = s3fs.S3FileSystem(key=key, secret=secret, skip_instance_cache=True,
                               client_kwargs={"endpoint_url": self.url})
        fs.mkdir(name)
        return name

    def keys(self, path: str) -> list[str]:
        """Every key under ``bucket/prefix`` now (no listing cache)."""
        fs = self.fs
        fs.invalidate_cache()
        try:
            return sorted(fs.find(path))
        except FileNotFoundError:
            return []


@pytest.fixture(scope="session")
def moto_s3(tmp_path_factory):
    """A real moto S3 server for the whole session; always killed at the end."""
    server = MotoServer(tmp_path_factory.mktemp("moto") / "moto.log")
    try:
        server.start()
        yield server
    finally:
        server.stop()


@dataclass
class S3Spot:
    """A fresh bucket on the session's moto server, and a spill URL inside it."""
    server: MotoServer
    bucket: str
    prefix: str

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    @property
    def path(self) -> str:
        return f"{self.bucket}/{self.prefix}"

    def options(self, **extra) -> dict:
        return self.server.options(**extra)

    def keys(self) -> list[str]:
        return self.server.keys(self.path)


@pytest.fixture
def s3_spot(moto_s3):
    """A new bucket (created through s3fs) for one test; spill to ``s3_spot.url``."""
    bucket = moto_s3.create_bucket(f"gstest-{uuid.uuid4().hex[:12]}")
    return S3Spot(moto_s3, bucket, "spill")


@pytest.fixture
def flaky_s3(tmp_path):
    """A moto server of this test's own, which the test may stop and start again on the
    same port (``stop()``, ``start()``); killed at teardown."""
    server = MotoServer(tmp_path / "moto-flaky.log")
    try:
        server.start()
        yield server
    finally:
        server.stop()


@dataclass
class AuthS3:
    server: MotoServer
    key: str
    secret: str
    bucket: str


@pytest.fixture
def moto_s3_with_auth(tmp_path):
    """A moto server that checks credentials (INITIAL_NO_AUTH_ACTION_COUNT), with one IAM
    user allowed everything, its access key, and a bucket; killed at teardown."""
    import json
    import boto3  # a dependency of moto; s3fs has no IAM calls
    # The first 3 requests (the IAM calls below) run before any user exists.
    server = MotoServer(tmp_path / "moto-auth.log",
                        env={"INITIAL_NO_AUTH_ACTION_COUNT": "3"})
    try:
        server.start()
        iam = boto3.client("iam", endpoint_url=server.url, region_name="us-east-1",
                           aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap")
        iam.create_user(UserName="gstest")
        iam.put_user_policy(UserName="gstest", PolicyName="everything",
                            PolicyDocument=json.dumps({
                                "Version": "2012-10-17",
                                "Statement": [{"Effect": "Allow", "Action": "*",
                                               "Resource": "*"}]}))
        key = iam.create_access_key(UserName="gstest")["AccessKey"]
        iam.close()
        bucket = server.create_bucket(f"gstest-auth-{uuid.uuid4().hex[:8]}",
                                      key=key["AccessKeyId"], secret=key["SecretAccessKey"])
        yield AuthS3(server, key["AccessKeyId"], key["SecretAccessKey"], bucket)
    finally:
        server.stop()


@dataclass
class CliProcess:
    popen: subprocess.Popen
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for_line(self, prefix: str, timeout: float = 30.0) -> str:
        """Wait for an output line starting with ``prefix``; return the rest of it."""
        deadline = time.monotonic() + timeout
        while True:
            for line in self.output().splitlines():
                if line.startswith(prefix):
                    return line[len(prefix):].strip()
            if self.popen.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"no line {prefix!r} (exit code {self.popen.poll()}):"
                                     f"\n{self.output()}")
            time.sleep(0.02)


@pytest.fixture
def spawn_cli(tmp_path):
    """Factory: ``spawn_cli(args, env={...}, name="worker")`` runs
    ``python -m graphstore.cli ARGS`` (output in ``tmp_path/<name>.log``) with the given
    environment overrides, e.g. ``GRAPHSTORE_TOKEN``; everything is killed at teardown."""
    started: list[subprocess.Popen] = []

    def spawn(args: list[str], env: dict | None = None, name: str = "cli") -> CliProcess:
        full_env = dict(os.environ)
        for variable in ("GRAPHSTORE_TOKEN", "GRAPHSTORE_ADDRESS"):
            full_env.pop(variable, None)
        full_env["PYTHONUNBUFFERED"] = "1"
        full_env.update(env or {})
        log = tmp_path / f"{name}-{len(started)}.log"
        with open(log, "wb") as out:
            popen = subprocess.Popen([sys.executable, "-m", "graphstore.cli", *args],
                                     stdin=subprocess.DEVNULL, stdout=out,
                                     stderr=subprocess.STDOUT, env=full_env, cwd=tmp_path)
        started.append(popen)
        return CliProcess(popen, log)

    try:
        yield spawn
    finally:
        for popen in started:
            if popen.poll() is None:
                popen.kill()
        for popen in started:
            try:
                popen.wait(5)
            except subprocess.TimeoutExpired:
                pass


@pytest.fixture
def cluster_id():
    """A cluster id of its own for a unit test of shared-memory segments; whatever is
    left under it is removed afterwards."""
    import uuid as _uuid

    from graphstore.core import shm
    from helpers import shm_files
    cid = "t" + _uuid.uuid4().hex[:12]
    yield cid
    for name in shm_files(f"{shm.PREFIX}{cid}-"):
        shm.unlink(name)


# -- several hosts: network namespaces ------------------------------------------------------

@pytest.fixture
def host_network():
    """A bridge in the root namespace and worker hosts in network namespaces (see
    ``netns.py``); skips the test, with the reason, where they cannot be made. At
    teardown every process in the namespaces is killed and everything is removed, also
    when the test failed."""
    from netns import HostNetwork, NetnsUnavailable
    try:
        network = HostNetwork()
    except NetnsUnavailable as exc:
        pytest.skip(f"multi-host tests need network namespaces: {exc}")
    try:
        yield network
    finally:
        network.close()
        left = network.leftovers()
        assert not left, f"namespaces or links left after teardown: {left}"


@dataclass
class WorkerHost:
    """A ``graphstore worker`` running in a namespace of its own, as a separate host."""
    host: "object"           # netns.Host: namespace, veth, address
    node_id: str
    popen: subprocess.Popen
    log: Path
    token_file: Path

    @property
    def ip(self) -> str:
        return self.host.ip

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def pids(self) -> list[int]:
        """Processes on this host: the worker and the actor processes it started."""
        return self.host.pids()

    def link_bytes(self) -> tuple[int, int]:
        """Bytes (sent by this host, received by it) so far over its link."""
        return self.host.link_bytes()


class MultiHostCluster:
    """``graphstore scheduler`` on the bridge's address (root namespace) and workers, one
    per namespace, each with its own address, node id, token file copy and spill
    directory; the test process is the driver. Everything is started with stdin a pipe
    from pytest and ``--watch-stdin``: if pytest dies, they all exit. ``env`` is the
    processes' environment (add settings such as ``GRAPHSTORE_WORKER_TIMEOUT`` to it
    before ``start``)."""

    def __init__(self, network, tmp_path: Path):
        self.network = network
        self.dir = tmp_path
        self.address = ""
        self.token = ""
        self.token_file = tmp_path / "scheduler" / "token"
        self.scheduler: subprocess.Popen | None = None
        self.scheduler_log = tmp_path / "scheduler" / "scheduler.log"
        self.workers: list[WorkerHost] = []
        self._popens: list[subprocess.Popen] = []
        self.env = dict(os.environ)
        for variable in ("GRAPHSTORE_TOKEN", "GRAPHSTORE_TOKEN_FILE", "GRAPHSTORE_ADDRESS",
                         "GRAPHSTORE_NODE_ID"):
            self.env.pop(variable, None)
        self.env["PYTHONUNBUFFERED"] = "1"

    def _spawn(self, argv: list[str], log: Path) -> subprocess.Popen:
        with open(log, "wb") as out:
            popen = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=out,
                                     stderr=subprocess.STDOUT, env=self.env, cwd=self.dir)
        self._popens.append(popen)
        return popen

    def start_scheduler(self) -> str:
        self.scheduler_log.parent.mkdir()
        self.scheduler = self._spawn(
            [sys.executable, "-m", "graphstore.cli", "scheduler", "--host",
             self.network.gateway, "--port", "0", "--token-file", str(self.token_file),
             "--dashboard-port", "0", "--watch-stdin"], self.scheduler_log)
        prefix = "graphstore scheduler listening at "
        deadline = time.monotonic() + 30
        while not self.address:
            for line in self.scheduler_log.read_text(errors="replace").splitlines():
                if line.startswith(prefix):
                    self.address = line[len(prefix):].strip()
            if self.address:
                break
            if self.scheduler.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the scheduler did not start:\n"
                                     f"{self.scheduler_log.read_text(errors='replace')}")
            time.sleep(0.02)
        self.token = self.token_file.read_text().strip()
        return self.address

    def add_worker(self, node_id: str, *args: str, num_cpus: int = 1,
                   wait: bool = True) -> WorkerHost:
        """A new host (namespace) running ``graphstore worker`` with ``--host`` its own
        address (unless ``args`` give one) and ``--node-id node_id``."""
        from netns import NetnsUnavailable
        try:
            host = self.network.add_host()
        except NetnsUnavailable as exc:
            pytest.skip(f"multi-host tests need network namespaces: {exc}")
        home = self.dir / node_id
        home.mkdir()
        # As an operator copies the token file to each machine (mode 0600).
        token_file = home / "token"
        fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self.token + "\n")
        options = list(args)
        if "--host" not in options:
            options += ["--host", host.ip]
        log = home / "worker.log"
        popen = self._spawn(host.command(
            [sys.executable, "-m", "graphstore.cli", "worker", self.address,
             "--node-id", node_id, "--num-cpus", str(num_cpus),
             "--object-store-memory", str(256 * 1024**2),
             "--spill-to", str(home / "spill"), "--token-file", str(token_file),
             "--watch-stdin", *options]), log)
        worker = WorkerHost(host, node_id, popen, log, token_file)
        self.workers.append(worker)
        if wait:
            self.wait_joined(worker)
        return worker

    def wait_joined(self, worker: WorkerHost, timeout: float = 30.0) -> None:
        """Until the scheduler logs the worker joining from its host's address."""
        needle = f" joined from {worker.ip}:"
        deadline = time.monotonic() + timeout
        while needle not in self.scheduler_log.read_text(errors="replace"):
            if worker.popen.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"worker {worker.node_id} did not join (exit code "
                                     f"{worker.popen.poll()}):\n{worker.output()}")
            time.sleep(0.02)

    def start(self, *node_ids: str) -> list[WorkerHost]:
        """Scheduler, one worker host per node id, and this process as the driver."""
        import graphstore
        graphstore.shutdown()           # leave the shared local cluster for this test
        self.start_scheduler()
        for node_id in node_ids:
            self.add_worker(node_id)
        graphstore.init(address=self.address, token=self.token)
        return list(self.workers)

    def close(self) -> None:
        import graphstore
        from graphstore.core import shm
        from graphstore.worker.server import cluster_id_for
        from netns import kill_netns_processes
        try:
            if _current_address() == self.address:
                graphstore.shutdown()
        finally:
            try:
                for host in self.network.hosts:   # workers and the actor processes they made
                    kill_netns_processes(host.netns)
            finally:
                for popen in self._popens:
                    if popen.poll() is None:
                        popen.kill()
                for popen in self._popens:
                    try:
                        popen.wait(5)
                    except subprocess.TimeoutExpired:
                        pass
                    if popen.stdin is not None:
                        popen.stdin.close()
                if self.address:
                    # Segments of workers killed above (their owners are dead now).
                    shm.sweep(cluster_id_for(self.address))


@pytest.fixture
def multihost_cluster(host_network, tmp_path):
    """A ``MultiHostCluster`` on ``host_network``: ``start("host-a", "host-b")`` runs the
    scheduler, a worker per host and connects this process; all is stopped at teardown."""
    cluster = MultiHostCluster(host_network, tmp_path)
    try:
        yield cluster
    finally:
        cluster.close()
