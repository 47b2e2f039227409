"""Integration tests of process lifetime and fault handling on real clusters (issue 2).

Processes are killed for real (SIGKILL), and bad bytes are sent to the real scheduler
port over raw sockets. Every test checks the end state from outside: which processes are
alive (psutil), and whether the cluster still serves tasks.
"""
from __future__ import annotations

import asyncio
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import msgpack
import pytest

import graphstore
from helpers import gated, recv_exact, wait_for
from graphstore.core import comm as gs_comm
from graphstore.core.comm import handshake
from graphstore.core import protocol as msg
from graphstore.core.config import PROTOCOL_VERSION
from graphstore.exceptions import (AuthenticationError, ConnectionLostError,
                                   GraphstoreError, WorkerCrashedError)
from graphstore.core.object_ref import new_id

# -- remote functions ---------------------------------------------------------------------


@graphstore.remote
def echo(x):
    return x


@graphstore.remote
def pid_of(x=None):
    return os.getpid()




def _record_attempt(directory: str) -> int:
    """Append this process's pid to ``directory/attempts``; return the attempt number."""
    path = os.path.join(directory, "attempts")
    with open(path, "a") as f:
        f.write(f"{os.getpid()}\n")
    with open(path) as f:
        return len(f.read().split())


@graphstore.remote
def crash_once(directory):
    """The first attempt hangs (the test kills its worker); a retry returns at once."""
    attempt = _record_attempt(directory)
    if attempt == 1:
        time.sleep(60)
    return os.getpid(), attempt, sum(range(100))


@graphstore.remote
def die_every_time(directory):
    _record_attempt(directory)
    os._exit(1)


def attempts(directory: Path) -> list[int]:
    path = directory / "attempts"
    if not path.exists():
        return []
    return [int(p) for p in path.read_text().split()]


def wait_until(predicate, timeout: float, interval: float = 0.05, message: str = ""):
    """``helpers.wait_for`` that fails (with ``message``) when ``timeout`` passes."""
    value = wait_for(predicate, timeout, interval)
    if not value:
        raise AssertionError(message or f"condition not met within {timeout} s")
    return value


def assert_cluster_serves(n: int = 4) -> None:
    assert graphstore.get([echo.remote(i) for i in range(n)], timeout=30) == list(range(n))


# == shutdown and driver exit ==================================================================


def test_shutdown_leaves_no_process(fresh_cluster, local, procs):
    fresh_cluster(num_cpus=2)
    cluster = local()
    session = cluster.session_name
    pids = cluster.pids()
    assert len(pids) == 3
    found = {p.pid for p in procs.session_processes(session_name=session)}
    assert found == set(pids)
    assert_cluster_serves()
    start = time.monotonic()
    graphstore.shutdown()
    assert time.monotonic() - start < 10
    assert not graphstore.is_initialized()
    assert procs.wait_gone(pids, timeout=2) == []
    assert procs.session_processes(session_name=session) == []


def test_exception_inside_init_context_leaves_no_process(fresh_cluster, init_cluster, local,
                                                        procs):
    graphstore.shutdown()
    with pytest.raises(RuntimeError, match="user code failed"):
        with init_cluster(num_cpus=2):
            session = local().session_name
            pids = local().pids()
            assert_cluster_serves()
            raise RuntimeError("user code failed")
    assert not graphstore.is_initialized()
    assert procs.wait_gone(pids, timeout=2) == []
    assert procs.session_processes(session_name=session) == []


DRIVER_WITH_RUNNING_TASKS = """
import os, sys, time, graphstore
from graphstore import session

graphstore.init(num_cpus=2)

@graphstore.remote
def forever():
    time.sleep(120)

@graphstore.remote
def square(x):
    return x * x

assert graphstore.get(square.remote(3)) == 9
refs = [forever.remote() for _ in range(2)]     # both workers busy from now on
time.sleep(0.2)
cluster = session.current_local_cluster()
print("SESSION=" + cluster.session_name, flush=True)
print("PIDS=" + ",".join(str(p) for p in cluster.pids()), flush=True)
print("READY", flush=True)
{ending}
"""


def _driver_cluster(run) -> tuple[str, list[int]]:
    session = run.value("SESSION").strip()
    pids = [int(p) for p in run.value("PIDS").split(",")]
    assert len(pids) == 3
    return session, pids


def test_driver_script_raising_leaves_no_process(run_driver, procs):
    run = run_driver(DRIVER_WITH_RUNNING_TASKS.format(
        ending='raise RuntimeError("user code failed")'))
    assert run.returncode == 1
    assert "RuntimeError: user code failed" in run.stderr
    session, pids = _driver_cluster(run)
    left = procs.wait_gone(pids, timeout=5)
    assert not left, f"left behind after an exception in the driver: {left}"
    assert procs.session_processes(session_name=session) == []


def test_driver_script_exiting_without_shutdown_leaves_no_process(run_driver, procs):
    # Tasks are still running when the driver reaches its end.
    run = run_driver(DRIVER_WITH_RUNNING_TASKS.format(ending='print("END", flush=True)'))
    assert run.returncode == 0, run.stderr
    assert "END" in run.stdout
    session, pids = _driver_cluster(run)
    assert procs.wait_gone(pids, timeout=5) == []
    assert procs.session_processes(session_name=session) == []


def test_sigkill_of_the_driver_leaves_no_process(run_driver, procs):
    driver = run_driver.start(DRIVER_WITH_RUNNING_TASKS.format(ending="time.sleep(120)"),
                              ready_line="READY")
    session = driver.wait_for_line("SESSION=").strip()
    pids = [int(p) for p in driver.wait_for_line("PIDS=").split(",")]
    alive = procs.session_processes(session_name=session)
    assert {p.pid for p in alive} == set(pids)

    os.kill(driver.pid, signal.SIGKILL)
    driver.popen.wait(10)
    killed_at = time.monotonic()
    left = procs.wait_gone(pids, timeout=10)
    elapsed = time.monotonic() - killed_at
    assert not left, f"still running 10 s after the driver was killed: {left}"
    assert elapsed < 5, f"the cluster took {elapsed:.1f} s to notice the driver died"
    assert procs.session_processes(session_name=session) == []


# == worker failures =========================================================================


def test_sigkill_of_a_worker_mid_task_retries_the_task_and_replaces_the_worker(
        fresh_cluster, local, tmp_path):
    fresh_cluster(num_cpus=2)
    cluster = local()
    worker_pids = set(cluster.pids()) - {cluster.scheduler.pid}
    ref = crash_once.remote(str(tmp_path))

    first = wait_until(lambda: attempts(tmp_path), 30, message="the task never started")
    victim = first[0]
    assert victim in worker_pids
    os.kill(victim, signal.SIGKILL)

    pid, attempt, value = graphstore.get(ref, timeout=30)
    assert value == sum(range(100))
    assert attempt == 2
    assert pid != victim
    assert attempts(tmp_path) == [victim, pid]

    # The local cluster starts a replacement, so the capacity comes back.
    wait_until(lambda: graphstore.cluster_status()["workers"] == 2, 20,
               message="the dead worker was not replaced")
    status = graphstore.cluster_status()
    assert status["counts"]["retried"] == 1
    assert status["resources"]["CPU"] == 2.0
    new_pids = set(cluster.pids()) - {cluster.scheduler.pid}
    assert victim not in new_pids and len(new_pids) == 2
    # Both workers, the replacement included, run tasks.
    seen = set()

    def all_seen() -> bool:
        seen.update(graphstore.get([pid_of.remote(i) for i in range(10)], timeout=30))
        return seen == new_pids
    wait_for(all_seen, timeout=30, interval=0)
    assert seen == new_pids


def test_idle_worker_killed_is_replaced(fresh_cluster, local):
    fresh_cluster(num_cpus=2)
    cluster = local()
    victim = cluster.workers[0].pid
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: victim not in cluster.pids() and len(cluster.workers) == 2, 20)
    wait_until(lambda: graphstore.cluster_status()["workers"] == 2, 20)
    assert_cluster_serves(10)


@pytest.mark.parametrize("max_retries", [0, 1, None])
def test_task_whose_worker_always_dies_fails_with_worker_crashed_error(
        fresh_cluster, tmp_path, max_retries):
    fresh_cluster(num_cpus=2)
    fn = die_every_time if max_retries is None else die_every_time.options(
        max_retries=max_retries)
    expected_attempts = (3 if max_retries is None else max_retries) + 1   # default: 3
    ref = fn.remote(str(tmp_path))
    dependent = echo.remote(ref)
    start = time.monotonic()
    with pytest.raises(WorkerCrashedError) as info:
        graphstore.get(ref, timeout=60)
    assert time.monotonic() - start < 30
    text = str(info.value)
    assert "die_every_time" in text and "max_retries" in text
    pids = attempts(tmp_path)
    assert len(pids) == expected_attempts, pids
    assert len(set(pids)) == expected_attempts          # each attempt killed a worker
    with pytest.raises(WorkerCrashedError):
        graphstore.get(dependent, timeout=30)
    # The cluster heals and keeps serving.
    wait_until(lambda: graphstore.cluster_status()["workers"] == 2, 30)
    assert_cluster_serves()


# == scheduler failures ======================================================================


def test_killing_the_scheduler_fails_get_and_stops_the_workers(fresh_cluster, local,
                                                                tmp_path, procs):
    fresh_cluster(num_cpus=2)
    cluster = local()
    session = cluster.session_name
    scheduler_pid = cluster.scheduler.pid
    worker_pids = [p.pid for p in cluster.workers]
    pending = gated.remote(str(tmp_path / "never"), "never")
    ready = echo.remote("ready before")
    assert graphstore.get(ready, timeout=30) == "ready before"

    # get() is already waiting when the scheduler dies.
    killer = threading.Timer(0.5, os.kill, (scheduler_pid, signal.SIGKILL))
    killer.start()
    start = time.monotonic()
    try:
        with pytest.raises(ConnectionLostError) as info:
            graphstore.get(pending, timeout=30)
    finally:
        killer.join()
    assert time.monotonic() - start < 10, "get() hung after the scheduler died"
    assert isinstance(info.value, GraphstoreError)
    assert "scheduler" in str(info.value)

    # New calls fail at once, clearly, instead of hanging.
    start = time.monotonic()
    with pytest.raises(ConnectionLostError):
        graphstore.get(echo.remote(1), timeout=30)
    with pytest.raises(ConnectionLostError):
        graphstore.cluster_status()
    assert time.monotonic() - start < 5
    # An object that was already here is still readable.
    assert graphstore.get(ready, timeout=1) == "ready before"

    # The workers notice and exit on their own (the driver is still alive).
    left = procs.wait_gone(worker_pids, timeout=5)
    assert not left, f"workers still running 5 s after the scheduler died: {left}"

    start = time.monotonic()
    graphstore.shutdown()
    assert time.monotonic() - start < 10
    assert procs.session_processes(session_name=session) == []


def _wait_for_log(path: Path, text: str, count: int = 1, timeout: float = 20) -> str:
    def found():
        content = path.read_text(errors="replace") if path.exists() else ""
        return content if content.count(text) >= count else ""
    return wait_until(found, timeout, message=f"{path} never showed {text!r} x{count}")


def test_killing_a_cli_scheduler_stops_its_cli_workers(cli_cluster):
    cli = cli_cluster(num_workers=2)
    _wait_for_log(cli.log_dir / "scheduler.log", " joined from ", count=2)
    cli.scheduler.send_signal(signal.SIGKILL)
    cli.scheduler.wait(5)
    for worker in cli.workers:
        try:
            worker.wait(5)
        except subprocess.TimeoutExpired:
            pytest.fail("a `graphstore worker` kept running 5 s after its scheduler died")


def _shm_files(cluster_id: str = "") -> set[str]:
    """This machine's store files, or only those of one cluster: other clusters (other
    test runs, other people's) may start and stop on this machine meanwhile."""
    return {name for name in os.listdir("/dev/shm") if name.startswith(f"gs-{cluster_id}")}


def test_cli_scheduler_and_worker_stop_cleanly_on_sigterm(cli_cluster):
    from graphstore.worker.server import cluster_id_for
    cli = cli_cluster(num_workers=1)
    own = cluster_id_for(cli.address) + "-"
    _wait_for_log(cli.log_dir / "scheduler.log", " joined from ")
    # Its store's first arena and lock file (reserves come once it idles).
    wait_until(lambda: len(_shm_files(own)) >= 2, 20,
               message="the worker never made its store's files")
    cli.workers[0].send_signal(signal.SIGTERM)
    assert cli.workers[0].wait(10) == 0
    assert _shm_files(own) == set(), "a worker stopped by SIGTERM left its files"
    cli.scheduler.send_signal(signal.SIGTERM)
    assert cli.scheduler.wait(10) == 0


# == bad input on the scheduler's port =========================================================


def _connect_raw(address: str) -> socket.socket:
    host, port = gs_comm.parse_address(address)
    sock = socket.create_connection((host, port), timeout=10)
    return sock


def _handshake(address: str, token: bytes, version: int = PROTOCOL_VERSION):
    """Do the client side of the handshake on a raw socket; return (socket, status)."""
    sock = _connect_raw(address)
    magic, server_version, nonce = handshake.HELLO.unpack(recv_exact(sock, handshake.HELLO.size))
    assert magic == handshake.MAGIC and server_version == PROTOCOL_VERSION
    client_nonce = os.urandom(16)
    proof = handshake.token_proof(token, b"client", nonce, client_nonce)
    sock.sendall(handshake.ANSWER.pack(handshake.MAGIC, version, client_nonce, proof))
    status, _ = handshake.VERDICT.unpack(recv_exact(sock, handshake.VERDICT.size))
    return sock, status


def _frames(*frames: bytes, count: int | None = None, lengths=None) -> bytes:
    """Raw wire bytes of one batch (optionally lying about count or lengths)."""
    n = len(frames) if count is None else count
    lengths = [len(f) for f in frames] if lengths is None else lengths
    return (struct.pack("!I", n) + b"".join(struct.pack("!Q", x) for x in lengths)
            + b"".join(frames))


def _message(cls, **fields):
    """A protocol message from field names; fields not given are 0 (the protocol grows)."""
    return cls(**{name: fields.get(name, 0) for name in cls.__struct_fields__})


def _batch(*messages) -> bytes:
    return b"".join(bytes(b) for b in msg.encode_batch(list(messages)))


def _read_messages(sock: socket.socket) -> list:
    (count,) = struct.unpack("!I", recv_exact(sock, 4))
    lengths = [struct.unpack("!Q", recv_exact(sock, 8))[0] for _ in range(count)]
    frames = [recv_exact(sock, n) for n in lengths]
    return msg.decode_header(frames[0], frames[1:])


def _register_driver(sock: socket.socket) -> None:
    sock.sendall(_batch(msg.Request(1, msg.RegisterClient(new_id(), os.getpid(), "raw"))))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for m in _read_messages(sock):
            if isinstance(m, msg.Reply) and m.rid == 1:
                assert m.error is None, m.error
                return
    raise AssertionError("no reply to RegisterClient")


def _closed_by_peer(sock: socket.socket, timeout: float = 10.0) -> bool:
    """True once the server closes the connection (EOF or reset)."""
    sock.settimeout(timeout)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            data = sock.recv(65536)
            if not data:
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False
    return False


def _unauthenticated(payload: bytes):
    def send(address, token):
        sock = _connect_raw(address)
        sock.sendall(payload)
        return sock
    return send


def _authenticated(payload: bytes, register: bool = True):
    def send(address, token):
        sock, status = _handshake(address, token)
        assert status == 0
        if register:
            _register_driver(sock)
        sock.sendall(payload)
        return sock
    return send


_GARBAGE = {
    "connect_and_close": _unauthenticated(b""),
    "random_bytes_before_handshake": _unauthenticated(os.urandom(4096)),
    "http_request": _unauthenticated(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + b"\0" * 64),
    "zero_frame_count": _authenticated(struct.pack("!I", 0) + b"\0" * 16),
    "huge_frame_count": _authenticated(struct.pack("!I", 0xFFFFFFFF) + b"\0" * 64),
    "header_over_limit": _authenticated(_frames(b"x", lengths=[2**40])),
    "frame_over_limit": _authenticated(_frames(b"\x90", b"", lengths=[1, 2**62])),
    "undecodable_msgpack": _authenticated(_frames(b"\xc1" * 32)),
    "header_not_a_list": _authenticated(_frames(msgpack.packb({"a": 1}))),
    "unknown_message_code": _authenticated(_frames(msgpack.packb([[250, 1, 2]]))),
    "wrong_number_of_fields": _authenticated(
        _frames(msgpack.packb([[msg.CODES[msg.IncRef]]]))),
    "frame_reference_out_of_range": _authenticated(_frames(msgpack.packb(
        [[msg.CODES[msg.IncRef], msgpack.ExtType(1, struct.pack("!I", 7))]]))),
    "message_before_registering": _authenticated(
        _batch(msg.IncRef([new_id()])), register=False),
    "truncated_batch_then_close": _authenticated(_frames(b"\x91\x91", lengths=[1000])),
}


@pytest.mark.parametrize("kind", list(_GARBAGE))
def test_bad_bytes_on_the_scheduler_port_do_not_hurt_the_cluster(cluster, local, kind):
    scheduler = local().scheduler
    token = local().token.encode()
    bystander = graphstore.put("acknowledged before the garbage")
    sock = _GARBAGE[kind](cluster.address, token)
    try:
        if kind not in ("truncated_batch_then_close", "connect_and_close"):
            assert _closed_by_peer(sock), f"the scheduler kept the connection after {kind}"
    finally:
        sock.close()
    assert scheduler.poll() is None, "the scheduler died"
    assert_cluster_serves()
    assert graphstore.get(bystander, timeout=30) == "acknowledged before the garbage"
    assert graphstore.cluster_status()["workers"] == 2


def test_idle_unauthenticated_connections_do_not_block_the_cluster(cluster, local):
    socks = [_connect_raw(cluster.address) for _ in range(20)]
    try:
        half_open, status = _handshake(cluster.address, local().token.encode())
        socks.append(half_open)   # authenticated, never registers, never sends
        assert status == 0
        start = time.monotonic()
        assert_cluster_serves(20)
        assert time.monotonic() - start < 5
    finally:
        for sock in socks:
            sock.close()
    assert local().scheduler.poll() is None


def test_malformed_message_closes_only_that_connection_and_is_logged(fresh_cluster, local):
    ctx = fresh_cluster(num_cpus=1)
    token = local().token.encode()
    log = Path(ctx.session_dir) / "logs" / "scheduler.log"

    sock, status = _handshake(ctx.address, token)
    port = sock.getsockname()[1]
    _register_driver(sock)
    # A second raw peer, well behaved, must keep its connection.
    other, other_status = _handshake(ctx.address, token)
    assert status == 0 and other_status == 0
    _register_driver(other)

    sock.sendall(_frames(b"\xc1" * 32))
    assert _closed_by_peer(sock)
    sock.close()
    text = _wait_for_log(log, f"127.0.0.1:{port}")
    line = next(l for l in text.splitlines() if f"127.0.0.1:{port}" in l)
    assert "malformed" in line

    other.sendall(_batch(msg.Request(2, msg.Ping())))
    replies = []
    other.settimeout(10)
    while not replies:
        replies = [m for m in _read_messages(other) if isinstance(m, msg.Reply)]
    assert replies[0].rid == 2 and replies[0].value == "pong"
    other.close()
    assert_cluster_serves()


def test_register_worker_with_invalid_resources_does_not_break_the_scheduler(
        fresh_cluster, local):
    ctx = fresh_cluster(num_cpus=1)
    token = local().token.encode()
    sock, status = _handshake(ctx.address, token)
    assert status == 0
    sock.sendall(_batch(msg.Request(1, _message(
        msg.RegisterWorker, worker_id=new_id(), pid=os.getpid(), hostname="raw",
        node_id="raw-node", num_cpus=1.0, resources={"GPU": "lots"}, address=""))))
    # The bad peer stays connected while the others carry on.
    try:
        sock.settimeout(10)
        try:
            _read_messages(sock)            # an error reply, or the connection closes
        except (ConnectionError, socket.timeout):
            pass
        assert local().scheduler.poll() is None
        try:
            status_after = graphstore.cluster_status()
        except Exception as exc:   # noqa: BLE001 - any failure here is the bug
            raise AssertionError(f"cluster_status() fails after the bad registration: "
                                 f"{exc!r}") from None
        assert status_after["workers"] == 1
        assert_cluster_serves()
        # A new driver can still register.
        raw, status = _handshake(ctx.address, token)
        try:
            assert status == 0
            try:
                _register_driver(raw)
            except AssertionError as exc:
                raise AssertionError(f"a new driver cannot register: {exc}") from None
        finally:
            raw.close()
    finally:
        sock.close()
    assert local().scheduler.poll() is None


# == cluster token ===========================================================================


def test_wrong_token_is_refused_and_the_cluster_keeps_serving(cluster, local, run_driver,
                                                              tmp_path):
    ctx = cluster
    # A raw client with a wrong token gets status 2 and is disconnected.
    sock, status = _handshake(ctx.address, b"not the token")
    try:
        assert status == 2
        assert _closed_by_peer(sock)
    finally:
        sock.close()
    # A wrong protocol version is refused too.
    sock, status = _handshake(ctx.address, local().token.encode(), version=PROTOCOL_VERSION + 1)
    try:
        assert status != 0
    finally:
        sock.close()

    # graphstore's own client raises AuthenticationError with advice.
    async def connect_wrong():
        return await gs_comm.connect(ctx.address, b"wrong token", timeout=10)

    with pytest.raises(AuthenticationError, match="GRAPHSTORE_TOKEN"):
        asyncio.run(connect_wrong())

    # A driver with the wrong token: a clear error, no hang.
    run = run_driver(f"""
        import graphstore
        try:
            graphstore.init(address={ctx.address!r}, token="0" * 64)
        except graphstore.exceptions.AuthenticationError as exc:
            print("REFUSED=" + str(exc).replace("\\n", " "), flush=True)
        else:
            print("ACCEPTED", flush=True)
        print("CONNECTED=%s" % graphstore.is_initialized(), flush=True)
    """, timeout=60)
    assert run.returncode == 0, run.stderr
    assert "token" in run.value("REFUSED")
    assert run.value("CONNECTED") == "False"

    # A worker with the wrong token exits with an error and never joins.
    env = dict(os.environ, GRAPHSTORE_TOKEN="f" * 64, PYTHONUNBUFFERED="1")
    log_path = tmp_path / "bad-worker.log"
    with open(log_path, "wb") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "graphstore.cli", "worker", ctx.address, "--num-cpus", "1"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        assert worker.wait(20) != 0
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    assert "token" in log_path.read_text()

    assert graphstore.cluster_status()["workers"] == 2
    assert local().scheduler.poll() is None
    assert_cluster_serves()


# == local cluster files =======================================================================


def test_logs_of_a_running_cluster_survive_newer_sessions(fresh_cluster, run_driver):
    ctx = fresh_cluster(num_cpus=1)
    session_dir = Path(ctx.session_dir)
    assert (session_dir / "logs" / "scheduler.log").exists()
    time.sleep(1.1)   # session names carry the start time in seconds: make ours older
    run = run_driver("""
        import graphstore
        for _ in range(6):
            graphstore.init(num_cpus=1)
            graphstore.shutdown()
        print("DONE", flush=True)
    """, timeout=120)
    assert run.returncode == 0, run.stderr
    assert (session_dir / "logs" / "scheduler.log").exists(), \
        "the running cluster's log directory was deleted"
    assert_cluster_serves()
