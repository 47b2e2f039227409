"""Security of real clusters: strangers' bytes never run, wrong tokens and wrong TLS
certificates are refused with clear errors, mutual TLS end to end, listeners stay on
loopback unless told otherwise (and warn when they do not, without TLS).

Every test runs real scheduler and worker processes (``graphstore scheduler`` and
``graphstore worker`` by hand, or ``init()``'s local cluster) over TCP. Certificates come
from ``certs.make_pki``. The hypothesis fuzz test of bad input is test_fuzz.py; the TLS
details of one connection are test_tls.py.
"""
from __future__ import annotations

import os
import pickle
import socket
import ssl
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

import graphstore
from graphstore import session
from graphstore.core import comm as comm_module
from graphstore.core.comm import handshake
from graphstore.core import protocol as p
from graphstore.exceptions import (AuthenticationError, ConnectionLostError, TLSConfigError,
                                   TLSError)

from certs import make_pki
from helpers import wait_for
from test_fuzz import answer, encoded, recv_exact


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


@graphstore.remote
def add(a, b):
    return a + b


@graphstore.remote
def where():
    return os.getpid()


@graphstore.remote
def total(array):
    return int(array.sum())


@graphstore.remote
def ramp(n):
    return np.arange(n, dtype=np.int64)


@graphstore.remote
class Accumulator:
    def __init__(self):
        self.sum = 0

    def add(self, array):
        self.sum += int(array.sum())
        return self.sum

    def value(self):
        return self.sum


# -- a cluster by hand ------------------------------------------------------------------

class HandCluster:
    """``graphstore scheduler`` and workers started from the command line."""

    def __init__(self, spawn_cli, tmp_path: Path, *, scheduler_args=(), worker_args=(),
                 node_ids=("node-a",), env=None):
        tmp_path.mkdir(parents=True, exist_ok=True)
        self.token_file = tmp_path / "token"
        self.env = dict(env or {})
        self.scheduler = spawn_cli(["scheduler", "--port", "0", "--dashboard-port", "0",
                                    "--token-file", str(self.token_file), *scheduler_args],
                                   env=self.env, name="scheduler")
        self.address = self.scheduler.wait_for_line("graphstore scheduler listening at ")
        self.token = self.token_file.read_text().strip()
        self.workers = [spawn_cli(["worker", self.address, "--num-cpus", "1",
                                   "--token-file", str(self.token_file), "--node-id", node,
                                   *worker_args], env=self.env, name=f"worker-{node}")
                        for node in node_ids]

    def join(self, **init_kwargs):
        """Connect this process as a driver and wait for every worker."""
        graphstore.init(address=self.address, token=self.token, log_to_driver=False,
                        startup_timeout=10, **init_kwargs)
        assert wait_for(lambda: graphstore.cluster_status()["workers"] == len(self.workers),
                        timeout=30), [w.output() for w in self.workers]

    def alive(self) -> bool:
        return all(proc.popen.poll() is None for proc in [self.scheduler, *self.workers])

    def log(self) -> str:
        return "\n".join(proc.output() for proc in [self.scheduler, *self.workers])


@pytest.fixture
def hand_cluster(spawn_cli, tmp_path):
    """Factory for ``HandCluster``; this process is disconnected before and after."""
    graphstore.shutdown()
    made = []

    def start(**kwargs):
        cluster = HandCluster(spawn_cli, tmp_path / f"cluster-{len(made)}", **kwargs)
        made.append(cluster)
        return cluster

    try:
        yield start
    finally:
        graphstore.shutdown()


def serves_tasks(expected: int = 3) -> bool:
    return graphstore.get(add.remote(1, 2), timeout=30) == expected


# -- a stranger's pickle never runs ---------------------------------------------------------

class CreatesFile:
    """Unpickling this object creates ``path``: the stand-in for attacker code."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _evil_batch(path: Path) -> bytes:
    """A driver's registration, a function whose code is the payload, a task that runs
    it, and a put whose value is the payload: everything a worker would unpickle."""
    payload = pickle.dumps(CreatesFile(path), protocol=5)
    function_hash = b"F" * 16
    return encoded([
        p.RegisterClient(os.urandom(16), 1, "stranger"),
        p.RegisterFunction(function_hash, payload),
        p.SubmitTask(b"T" * 16, function_hash, "evil", [payload], [], [], [b"R" * 16], 0.0,
                     None, 0, None),
        p.PutObject(b"O" * 16, [payload], [], None),
        p.Request(1, p.AllocateObject(b"A" * 16, 1024, True)),
        p.Request(2, p.FetchObject(b"O" * 16)),
    ])


def _send_unauthenticated(address: str, data: bytes, how: str) -> bytes:
    """Send ``data`` without a handshake, or after a wrong-token one; return what came
    back once the server closed the connection."""
    host, port = comm_module.parse_address(address)
    with socket.create_connection((host, port), timeout=10) as sock:
        hello = recv_exact(sock, handshake.HELLO.size)
        if how == "wrong token":
            sock.sendall(answer(b"not the cluster token", hello))
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        received = b""
        sock.settimeout(10)
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            received += chunk
    return received


def test_a_strangers_pickle_never_runs(fresh_cluster, tmp_path):
    """The payload would create a file when unpickled (checked last, with the token). Sent
    as well-formed frames before the handshake or after a wrong-token one, to the
    scheduler and to a worker, it never runs, and both keep serving."""
    fresh_cluster(num_cpus=2, worker_node_ids=["near", "far"], node_id="near",
                  dashboard_port=0)
    local = session.current_local_cluster()
    workers = session.get_runtime().cluster_info["workers"]
    targets = {"scheduler": local.address, "worker": workers[0][2]}
    marker = tmp_path / "pwned"
    data = _evil_batch(marker)
    for name, address in targets.items():
        for how in ("no handshake", "wrong token"):
            received = _send_unauthenticated(address, data, how)
            if how == "wrong token":        # the refusal, nothing else
                status, _ = handshake.VERDICT.unpack(received)
                assert status == 2, (name, received)
            else:
                assert received == b"", (name, received)
            time.sleep(0.2)
            assert not marker.exists(), f"{name} ran a stranger's pickle ({how})"
            array = np.arange(30_000, dtype=np.int64)
            assert serves_tasks()
            assert graphstore.get(total.options(resources={"node:far": 0.001}).remote(
                graphstore.put(array)), timeout=30) == int(array.sum())
    log = (local.log_dir / "scheduler.log").read_text()
    assert log.count("wrong cluster token") >= 1 and "not a graphstore peer" in log

    # Control: the same bytes from a peer that knows the token do reach a worker, which
    # unpickles the function's code: the payload is live.
    host, port = comm_module.parse_address(local.address)
    with socket.create_connection((host, port), timeout=10) as sock:
        hello = recv_exact(sock, handshake.HELLO.size)
        sock.sendall(answer(local.token.encode(), hello))
        assert handshake.VERDICT.unpack(recv_exact(sock, handshake.VERDICT.size))[0] == 0
        sock.sendall(data)
        assert wait_for(marker.exists, timeout=20), "the control payload never ran"
    marker.unlink()
    assert serves_tasks()


# -- wrong tokens and certificates: clear errors for the client -----------------------------

def test_wrong_token_is_refused_with_a_clear_error(hand_cluster):
    cluster = hand_cluster()
    with pytest.raises(AuthenticationError, match="rejected this process's cluster token: "
                                                  "set GRAPHSTORE_TOKEN"):
        graphstore.init(address=cluster.address, token="0" * 64, startup_timeout=10)
    assert not graphstore.is_initialized()
    cluster.join()
    assert serves_tasks()
    assert "refused connection" in cluster.scheduler.output()
    assert cluster.alive()


def test_mutual_tls_cluster_refuses_wrong_certificates_with_clear_errors(hand_cluster, pki,
                                                                         tmp_path):
    cluster = hand_cluster(scheduler_args=pki.cli_args(), worker_args=pki.cli_args(),
                           env={"GRAPHSTORE_HANDSHAKE_TIMEOUT": "1"})
    attempts = [
        ("a certificate from another CA",
         pki.tls(tls_cert=pki.foreign_cert, tls_key=pki.foreign_key), TLSError,
         f"refused this process's certificate {pki.foreign_cert}: it is not signed by the "
         f"CA the server trusts"),
        ("an expired certificate",
         pki.tls(tls_cert=pki.expired_cert, tls_key=pki.expired_key), TLSError,
         "it has expired"),
        ("a CA that did not sign the server's certificate", pki.tls(tls_ca=pki.other_ca),
         TLSError, "refused the server's certificate: it is not signed by the cluster CA"),
        ("a key that does not belong to the certificate", pki.tls(tls_key=pki.stray_key),
         TLSConfigError, f"private key {pki.stray_key} \\(tls_key\\) does not belong to the "
                         f"certificate {pki.cert}"),
        ("a certificate without its key", {"tls_cert": str(pki.cert), "tls_ca": str(pki.ca)},
         TLSConfigError, "TLS is half configured: tls_cert and tls_ca are set but tls_key "
                         "is not"),
        ("a missing certificate file", pki.tls(tls_cert=tmp_path / "nowhere.pem"),
         TLSConfigError, "cannot read the TLS certificate file"),
        ("no TLS at all (no client certificate)", {}, ConnectionLostError,
         "if the cluster uses TLS, give this process its certificate too"),
    ]
    for what, settings, error, message in attempts:
        with pytest.raises(error, match=message):
            graphstore.init(address=cluster.address, token=cluster.token,
                            startup_timeout=10, **settings)
        assert not graphstore.is_initialized(), what
    assert cluster.alive()
    cluster.join(**pki.tls())
    assert serves_tasks()
    log = cluster.scheduler.output()
    assert "certificate failed verification: unable to get local issuer" in log
    assert "certificate has expired" in log
    assert "no TLS handshake within 1 s" in log


def test_a_tls_client_on_a_plain_cluster_is_told_so(hand_cluster, pki):
    cluster = hand_cluster()
    with pytest.raises(TLSError, match="the server does not speak TLS"):
        graphstore.init(address=cluster.address, token=cluster.token, startup_timeout=10,
                        **pki.tls())
    assert wait_for(lambda: "this server runs without TLS" in cluster.scheduler.output(),
                    timeout=10), cluster.scheduler.output()
    cluster.join()
    assert serves_tasks()


# -- mutual TLS end to end ----------------------------------------------------------------

def _peer_certificate(address: str, pki) -> dict:
    """Connect to ``address`` as a TLS client with the cluster's certificate; return the
    server's certificate (proof the listener speaks mutual TLS)."""
    host, port = comm_module.parse_address(address)
    context = ssl.create_default_context(cafile=str(pki.ca))
    context.check_hostname = False
    context.load_cert_chain(str(pki.cert), str(pki.key))
    with socket.create_connection((host, port), timeout=10) as raw:
        with context.wrap_socket(raw) as tls:
            hello = tls.recv(handshake.HELLO.size)
            assert hello[:4] == handshake.MAGIC
            return tls.getpeercert()


def _plain_hello(address: str) -> bytes:
    """What a listener sends a plain TCP client within a moment (TLS: nothing)."""
    host, port = comm_module.parse_address(address)
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.settimeout(0.3)
        try:
            return sock.recv(64)
        except TimeoutError:
            return b""


def test_tls_cluster_from_the_command_line_end_to_end(hand_cluster, pki, tmp_path):
    """Scheduler and two workers on two node ids, all with certificates; a driver with
    TLS runs tasks whose objects cross between the workers, and actor calls."""
    cluster = hand_cluster(scheduler_args=pki.cli_args(), worker_args=pki.cli_args(),
                           node_ids=("node-a", "node-b"))
    cluster.join(node_id="node-a", **pki.tls())
    assert "mutual TLS" in cluster.scheduler.output()

    # Objects cross: a put on node-a read by a task on node-b and back, both ways.
    data = np.arange(2_000_000, dtype=np.int64)                    # 16 MB
    ref = graphstore.put(data)
    on_b = {"resources": {"node:node-b": 0.001}}
    on_a = {"resources": {"node:node-a": 0.001}}
    assert graphstore.get(total.options(**on_b).remote(ref), timeout=60) == int(data.sum())
    made_on_b = ramp.options(**on_b).remote(3_000_000)
    assert graphstore.get(total.options(**on_a).remote(made_on_b), timeout=60) == \
        int(np.arange(3_000_000).sum())
    assert np.array_equal(graphstore.get(made_on_b, timeout=60), np.arange(3_000_000))
    assert len({graphstore.get(where.options(**on).remote()) for on in (on_a, on_b)}) == 2

    # Actor calls (an actor on node-b, called with an object from node-a), and many small
    # calls on the direct caller -> actor connection.
    acc = Accumulator.options(**on_b).remote()
    assert graphstore.get(acc.add.remote(ref), timeout=60) == int(data.sum())
    refs = [acc.add.remote(np.ones(10, dtype=np.int64)) for _ in range(200)]
    assert graphstore.get(refs, timeout=60)[-1] == int(data.sum()) + 2000
    assert graphstore.get(acc.value.remote()) == int(data.sum()) + 2000

    # Every listener speaks TLS only: the scheduler, both workers' peer servers and the
    # actor's process. A plain client gets no graphstore greeting from any of them.
    runtime = session.get_runtime()
    status = runtime.request(p.GetActor(acc._actor_id, 0))
    assert status[0] == "alive"
    listeners = [cluster.address, *[w[2] for w in runtime.cluster_info["workers"]],
                 status[1]]
    for address in listeners:
        subject = dict(x[0] for x in _peer_certificate(address, pki)["subject"])
        assert subject["commonName"] == "node", address
        assert _plain_hello(address) == b"", address

    # The inspection commands take the same options.
    graphstore.shutdown()
    import subprocess
    env = {**os.environ, "GRAPHSTORE_TOKEN": cluster.token}
    done = subprocess.run([sys.executable, "-m", "graphstore.cli", "status", cluster.address,
                           "--json", *pki.cli_args()], capture_output=True, text=True,
                          env=env, timeout=60, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert '"workers": 2' in done.stdout
    refused = subprocess.run([sys.executable, "-m", "graphstore.cli", "status",
                              cluster.address, "--tls-cert", str(pki.cert)],
                             capture_output=True, text=True, env=env, timeout=60,
                             cwd=tmp_path)
    assert refused.returncode != 0 and "TLS is half configured" in refused.stderr
    # A job, submitted over TLS: its driver joins with the scheduler's TLS files.
    code = "'import graphstore; graphstore.init(); print(\"tls job\", len(graphstore.nodes()))'"
    job = subprocess.run([sys.executable, "-m", "graphstore.cli", "job", "submit",
                          "--address", cluster.address, *pki.cli_args(), "--",
                          sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, timeout=60, cwd=tmp_path)
    assert job.returncode == 0, job.stderr
    assert "tls job 2" in job.stdout
    assert cluster.alive()


def test_tls_local_cluster_from_init(fresh_cluster, pki, tmp_path):
    """init() with certificates starts its scheduler and workers with them; objects cross
    between two workers and an actor answers, over TLS."""
    ctx = fresh_cluster(num_cpus=2, worker_node_ids=["near", "far"], node_id="near",
                        **pki.tls())
    local = session.current_local_cluster()
    assert "mutual TLS" in (local.log_dir / "scheduler.log").read_text()
    assert _plain_hello(ctx.address) == b""
    data = np.arange(1_000_000, dtype=np.int64)
    far = {"resources": {"node:far": 0.001}}
    assert graphstore.get(total.options(**far).remote(graphstore.put(data)),
                          timeout=60) == int(data.sum())
    assert np.array_equal(graphstore.get(ramp.options(**far).remote(1_000_000)),
                          np.arange(1_000_000))
    acc = Accumulator.options(**far).remote()
    assert graphstore.get([acc.add.remote(data) for _ in range(3)])[-1] == 3 * int(data.sum())
    # What `graphstore status` with no address reads: the cluster's TLS files too.
    assert local.tls == {**pki.tls(), "tls_check_hostname": False}
    # It takes them from the environment as well.
    import subprocess
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("GRAPHSTORE_")},
           "GRAPHSTORE_TOKEN": local.token, **pki.env()}
    done = subprocess.run([sys.executable, "-m", "graphstore.cli", "status", ctx.address,
                           "--json"], capture_output=True, text=True, env=env, timeout=60,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert '"workers": 2' in done.stdout


def test_bad_tls_settings_stop_the_command_line_at_once(spawn_cli, pki, tmp_path):
    half = spawn_cli(["scheduler", "--port", "0", "--tls-cert", str(pki.cert)],
                     name="half")
    assert half.popen.wait(30) == 2
    assert "TLS is half configured: tls_cert is set but tls_key and tls_ca are not" in \
        half.output()
    missing = spawn_cli(["worker", "tcp://127.0.0.1:1", "--tls-cert", str(pki.cert),
                         "--tls-key", str(tmp_path / "gone-key.pem"), "--tls-ca",
                         str(pki.ca)], env={"GRAPHSTORE_TOKEN": "ab" * 32}, name="missing")
    assert missing.popen.wait(30) == 2
    assert f"cannot read the TLS private key file {tmp_path / 'gone-key.pem'} (tls_key)" in \
        missing.output()
    env_half = spawn_cli(["scheduler", "--port", "0"], env={
        "GRAPHSTORE_TLS_KEY": str(pki.key), "GRAPHSTORE_TOKEN": "ab" * 32}, name="envhalf")
    assert env_half.popen.wait(30) == 2
    assert "tls_key is set but tls_cert and tls_ca are not" in env_half.output()


# -- where servers listen -------------------------------------------------------------------

def _listening(pid: int) -> list[tuple[str, int]]:
    return [conn.laddr[:2] for conn in psutil.Process(pid).net_connections(kind="inet")
            if conn.status == psutil.CONN_LISTEN]


def test_every_listener_binds_loopback_by_default(fresh_cluster):
    """Scheduler, status page, workers' peer servers and actor processes."""
    ctx = fresh_cluster(num_cpus=2)
    acc = Accumulator.remote()
    assert graphstore.get(acc.value.remote()) == 0
    local = session.current_local_cluster()
    pids = [local.scheduler.pid, *[w.pid for w in local.workers]]
    for worker in local.workers:
        pids += [c.pid for c in psutil.Process(worker.pid).children()]
    found = {}
    for pid in pids:
        for host, port in _listening(pid):
            found[(host, port)] = pid
    ports = {port for _, port in found}
    assert int(ctx.address.rsplit(":", 1)[1]) in ports
    assert int(ctx.dashboard_url.rsplit(":", 1)[1]) in ports
    assert len(found) >= 2 + 2 + 1, found      # scheduler, page, 2 workers, the actor
    assert all(host == "127.0.0.1" for host, _ in found), found
    log = "".join(path.read_text() for path in local.log_dir.glob("*.log"))
    assert "not a loopback address" not in log and "beyond loopback" not in log


def test_non_loopback_without_tls_logs_a_warning(hand_cluster, pki):
    exposed = hand_cluster(scheduler_args=["--host", "0.0.0.0"],
                           worker_args=["--host", "0.0.0.0"])
    exposed.join()
    assert serves_tasks()
    assert wait_for(lambda: "WARNING" in exposed.workers[0].output(), timeout=10)
    scheduler_log = exposed.scheduler.output()
    assert "WARNING" in scheduler_log
    assert ("the scheduler listens on 0.0.0.0:" in scheduler_log
            and "which is not a loopback address, without TLS" in scheduler_log)
    assert "the worker's peer server (and its actors' processes) listens on 0.0.0.0:" in \
        exposed.workers[0].output()
    graphstore.shutdown()

    with_tls = hand_cluster(scheduler_args=["--host", "0.0.0.0", *pki.cli_args()],
                            worker_args=["--host", "0.0.0.0", *pki.cli_args()])
    with_tls.join(**pki.tls())
    assert serves_tasks()
    assert "not a loopback address" not in with_tls.log()


def test_status_page_beyond_loopback_logs_a_warning(fresh_cluster):
    """(It is read-only: test_dashboard.py checks that no route changes anything.)"""
    fresh_cluster(num_cpus=1, dashboard_host="0.0.0.0")
    assert serves_tasks()
    log = (session.current_local_cluster().log_dir / "scheduler.log").read_text()
    assert "WARNING" in log and "the status page listens on 0.0.0.0 port" in log
    assert "no login and no TLS" in log


# -- the example ------------------------------------------------------------------------

def test_the_tls_cluster_example_runs(run_driver, tmp_path):
    """examples/tls_cluster.py makes its certificates with the openssl commands of
    docs/security.md and runs a TLS local cluster."""
    from helpers import run_example
    certs = tmp_path / "certs"
    run = run_example(run_driver, "tls_cluster.py", str(certs))
    assert "every connection mutual TLS" in run.stdout
    assert "host-b summed the 40 MB array from host-a: 12499997500000" in run.stdout
    assert "2 workers on 2 hosts" in run.stdout
    assert "scheduler, workers and actor spoke TLS" in run.stdout
    from graphstore.core.tls import TLSConfig
    tls = TLSConfig(certs / "node.pem", certs / "node-key.pem", certs / "ca.pem",
                    check_hostname=True)       # valid for 127.0.0.1 and localhost
    assert tls.cert == str(certs / "node.pem")
    assert (certs / "node-key.pem").stat().st_mode & 0o077 == 0


# -- separate hosts (network namespaces), per-host certificates ----------------------------

@graphstore.remote
def host_digest(array):
    import hashlib
    from graphstore import session
    return session.get_runtime().node_id, hashlib.sha256(array.data).hexdigest()


@graphstore.remote
def host_ramp(n):
    import numpy as np
    return np.arange(n, dtype=np.int64)


@graphstore.remote
def call_from_here(actor, array):
    import graphstore
    from graphstore import session
    return session.get_runtime().node_id, graphstore.get(actor.add.remote(array))


@pytest.mark.timeout(90)
def test_tls_across_separate_hosts_with_per_host_certificates(multihost_cluster, tmp_path):
    """The scheduler on the bridge and two worker hosts in network namespaces, each with
    a certificate for its own address only, and host names checked: objects and actor
    calls cross real links over TLS, and a peer whose certificate names another address
    is refused."""
    import hashlib
    from certs import make_ca, make_node_cert
    network = multihost_cluster.network
    pki_dir = tmp_path / "pki"
    pki_dir.mkdir()
    ca = make_ca(pki_dir, "cluster")
    first = network.subnet.network_address + 2         # the next hosts' addresses
    addresses = {"scheduler": network.gateway, "host-a": str(first),
                 "host-b": str(first + 1)}
    files = {name: make_node_cert(pki_dir, ca, name, hosts=(address,))
             for name, address in addresses.items()}
    multihost_cluster.env.update({
        "GRAPHSTORE_TLS_CERT": str(files["scheduler"][0]),
        "GRAPHSTORE_TLS_KEY": str(files["scheduler"][1]),
        "GRAPHSTORE_TLS_CA": str(ca.path), "GRAPHSTORE_TLS_CHECK_HOSTNAME": "1"})
    graphstore.shutdown()
    multihost_cluster.start_scheduler()
    for name in ("host-a", "host-b"):
        worker = multihost_cluster.add_worker(name, "--tls-cert", str(files[name][0]),
                                              "--tls-key", str(files[name][1]))
        assert worker.ip == addresses[name]
    driver_tls = {"tls_cert": str(files["scheduler"][0]),
                  "tls_key": str(files["scheduler"][1]), "tls_ca": str(ca.path),
                  "tls_check_hostname": True}
    graphstore.init(address=multihost_cluster.address, token=multihost_cluster.token,
                    **driver_tls)
    assert "mutual TLS" in multihost_cluster.scheduler_log.read_text()
    a, b = multihost_cluster.workers

    n = 2 * 1024 * 1024
    made_on_a = host_ramp.options(resources={"node:host-a": 0.01}).remote(n)
    graphstore.wait([made_on_a], timeout=30)
    _, b_rx = b.link_bytes()
    node, digest = graphstore.get(host_digest.options(
        resources={"node:host-b": 0.01}).remote(made_on_a), timeout=60)
    expected = hashlib.sha256(np.arange(n, dtype=np.int64).data).hexdigest()
    assert (node, digest) == ("host-b", expected)
    assert b.link_bytes()[1] - b_rx >= n * 8        # it crossed host B's link
    assert np.array_equal(graphstore.get(made_on_a, timeout=60), np.arange(n))

    acc = Accumulator.options(resources={"node:host-a": 0.01}).remote()
    node, total = graphstore.get(call_from_here.options(
        resources={"node:host-b": 0.01}).remote(acc, made_on_a), timeout=60)
    assert (node, total) == ("host-b", int(np.arange(n).sum()))
    assert graphstore.get(acc.value.remote(), timeout=30) == total

    # Host A's listener shows a certificate for host A's address only: a client that
    # checks host names and expects any other address refuses it.
    runtime = session.get_runtime()
    address_a = next(w[2] for w in runtime.cluster_info["workers"] if w[1] == "host-a")
    host, port = comm_module.parse_address(address_a)
    assert host == addresses["host-a"]
    context = ssl.create_default_context(cafile=str(ca.path))
    context.load_cert_chain(str(files["scheduler"][0]), str(files["scheduler"][1]))
    with socket.create_connection((host, port), timeout=10) as raw:
        with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
            context.wrap_socket(raw, server_hostname=addresses["host-b"])
    with socket.create_connection((host, port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname=host) as tls:
            assert tls.recv(4) == handshake.MAGIC
