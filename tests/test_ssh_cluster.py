"""SSH clusters (issue 18): ``graphstore up``/``down`` and ``SSHCluster`` against real
sshd servers, one in each of three network-namespace hosts (``fixtures/ssh.py``).

The hosts share this machine's filesystem and Python, as machines with an NFS home
would; every connection, token copy and process start still goes through their sshd.
The driver is this test process, in the root namespace: it reaches the hosts over the
bridge, as a laptop reaches a cluster. Each test ends with no graphstore process left in
any host (the ``ssh_hosts`` fixture checks).
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

import graphstore
from graphstore.deploy import SSHCluster, SSHError
from helpers import run_example, wait_for

pytestmark = pytest.mark.timeout(120)

#: Small stores: three hosts' workers share this machine's /dev/shm.
STORE = 64 * 1024**2


@graphstore.remote
def where():
    import os
    from graphstore import session
    return session.get_runtime().node_id, os.getpid()


@graphstore.remote
def make_array(seed, n):
    import numpy as np
    return np.random.default_rng(seed).integers(0, 2**62, size=n, dtype=np.int64)


@graphstore.remote
def digest(array):
    import hashlib
    from graphstore import session
    return session.get_runtime().node_id, hashlib.sha256(array.data).hexdigest()


def on(node_id: str) -> dict:
    return {"resources": {f"node:{node_id}": 0.01}}


def cluster_hosts(ssh_hosts, **first_worker_options) -> list:
    """The scheduler on the first host, workers ``host-b`` and ``host-c`` on the others
    (node ids of their own: the namespaces share one hostname and machine id)."""
    a, b, c = ssh_hosts.hosts
    return [a.ip,
            {"host": b.ip, "worker_options": {"node_id": "host-b", **first_worker_options}},
            {"host": c.ip, "worker_options": {"node_id": "host-c"}}]


def common_options(ssh_hosts, tmp_path: Path) -> dict:
    return {"connect_options": ssh_hosts.connect_options(),
            "worker_options": {"num_cpus": 1, "object_store_memory": STORE,
                               "spill_to": str(tmp_path / "spill")},
            "remote_dir": str(tmp_path / "remote"),
            # The remote processes read no configuration file of this machine's user,
            # and keep their service records apart from other clusters' on this machine.
            "env": {"GRAPHSTORE_CONFIG": os.devnull, "TMPDIR": str(tmp_path)}}


def gs(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "graphstore.cli", *args],
                          capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def command_lines() -> list[str]:
    lines = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                lines.append(Path(f"/proc/{entry}/cmdline").read_bytes().decode(
                    errors="replace"))
            except OSError:
                pass
    return lines


def run_across_hosts(b, c) -> None:
    """Tasks land on both worker hosts, and a large object made on B is read on C: its
    bytes cross B's and C's links."""
    nodes = {graphstore.get(where.options(**on(n)).remote(), timeout=30)[0]
             for n in ("host-b", "host-c")}
    assert nodes == {"host-b", "host-c"}
    n = 1024 * 1024                                       # 8 MiB of int64
    ref = make_array.options(**on("host-b")).remote(5, n)
    graphstore.wait([ref], timeout=30)
    sent_by_b, received_by_c = b.link_bytes()[0], c.link_bytes()[1]
    node, sha = graphstore.get(digest.options(**on("host-c")).remote(ref), timeout=60)
    expected = np.random.default_rng(5).integers(0, 2**62, size=n, dtype=np.int64)
    assert (node, sha) == ("host-c", hashlib.sha256(expected.data).hexdigest())
    assert b.link_bytes()[0] - sent_by_b >= expected.nbytes
    assert c.link_bytes()[1] - received_by_c >= expected.nbytes
    np.testing.assert_array_equal(graphstore.get(ref, timeout=60), expected)


def test_up_runs_a_cluster_across_hosts_and_down_stops_it(ssh_hosts, tmp_path):
    a, b, c = ssh_hosts.hosts
    options = common_options(ssh_hosts, tmp_path)
    token_file = tmp_path / "local" / "token"
    hosts_file = tmp_path / "hosts.yaml"
    hosts_file.write_text(yaml.safe_dump({
        "cluster_name": "demo", "hosts": cluster_hosts(ssh_hosts),
        "token_file": str(token_file), **options}))

    up = gs("up", str(hosts_file))
    assert up.returncode == 0, up.stdout + up.stderr
    address = f"tcp://{a.ip}:6380"                # the default port, on the first host
    ssh_hosts.addresses.append(address)
    assert f"scheduler  {address}" in up.stdout
    assert f"worker-1   tcp://{b.ip}:" in up.stdout and f"on {c.ip}" in up.stdout
    # The status page stays on the scheduler's loopback: up says how to tunnel to it.
    assert f"ssh -l {ssh_hosts.user} -N -L 8265:127.0.0.1:8265 {a.ip}" in up.stdout
    assert f"GRAPHSTORE_ADDRESS={address} GRAPHSTORE_TOKEN_FILE={token_file}" in up.stdout
    assert token_file.stat().st_mode & 0o777 == 0o600
    token = token_file.read_text().strip()
    # The token reached each worker host's directory, owner-only, and no command line.
    for role in ("worker-1", "worker-2"):
        copy = tmp_path / "remote" / role / "token"
        assert copy.read_text().strip() == token
        assert copy.stat().st_mode & 0o777 == 0o600
    assert not [line for line in command_lines() if token in line]
    # Detached: up has exited, the cluster runs on.
    graphstore.init(address=address, token=token)
    assert graphstore.cluster_status()["workers"] == 2
    run_across_hosts(b, c)

    # A second `up` of the same cluster refuses, and leaves the first one running.
    again = gs("up", str(hosts_file))
    assert again.returncode == 1
    assert "cluster 'demo' already runs there" in again.stderr
    assert graphstore.get(where.options(**on("host-c")).remote(), timeout=30)[0] == "host-c"
    graphstore.shutdown()

    pids = [int(p) for p in (tmp_path / "remote" / r / "pid" for r in
                             ("scheduler", "worker-1", "worker-2")) for p in [p.read_text()]]
    assert set(pids) <= set(ssh_hosts.graphstore_processes())
    down = gs("down", str(hosts_file))
    assert down.returncode == 0, down.stdout + down.stderr
    assert f"worker-1 on {b.ip}: stopped worker pid {pids[1]}" in down.stdout
    assert f"scheduler on {a.ip}: stopped scheduler pid {pids[0]}" in down.stdout
    assert not ssh_hosts.graphstore_processes()
    assert not token_file.exists()
    assert not (tmp_path / "remote" / "worker-1" / "token").exists()
    # The stores were removed with their workers.
    from graphstore.core import shm
    from graphstore.worker.server import cluster_id_for
    assert not [n for n in os.listdir(shm.SHM_DIR)
                if n.startswith(f"{shm.PREFIX}{cluster_id_for(address)}-")]
    # Idempotent.
    down = gs("down", str(hosts_file))
    assert down.returncode == 0, down.stdout + down.stderr
    assert down.stdout.count("nothing was running") == 3


def test_the_ssh_cluster_example_runs_from_a_hosts_file(ssh_hosts, tmp_path, run_driver):
    hosts_file = tmp_path / "hosts.yaml"
    hosts_file.write_text(yaml.safe_dump({
        "hosts": cluster_hosts(ssh_hosts), "scheduler_options": {"port": 0},
        **common_options(ssh_hosts, tmp_path)}))
    run = run_example(run_driver, "ssh_cluster.py", str(hosts_file))
    for line in ("cluster 'hosts' up in", f"at tcp://{ssh_hosts.hosts[0].ip}:",
                 f"worker-2 on {ssh_hosts.hosts[2].ip}: pid", "worker hosts: 2",
                 "an object made on host-b was summed on host-c: 1999999000000",
                 "cluster stopped"):
        assert line in run.stdout, run.stdout
    assert not ssh_hosts.graphstore_processes()


def test_sshcluster_is_a_context_manager(ssh_hosts, tmp_path):
    with SSHCluster(cluster_hosts(ssh_hosts), scheduler_options={"port": 0},
                    **common_options(ssh_hosts, tmp_path)) as cluster:
        ssh_hosts.addresses.append(cluster.address)
        assert cluster.address.startswith(f"tcp://{ssh_hosts.hosts[0].ip}:")
        assert [p.role for p in cluster.processes] == ["scheduler", "worker-1", "worker-2"]
        assert set(p.pid for p in cluster.processes) == set(ssh_hosts.graphstore_processes())
        assert cluster.dashboard_link.startswith("http://127.0.0.1:")
        graphstore.init(address=cluster.address, token=cluster.token)
        assert graphstore.get(where.options(**on("host-c")).remote(), timeout=30)[0] \
            == "host-c"
        graphstore.shutdown()
    assert not ssh_hosts.graphstore_processes()
    assert "closed" in repr(cluster)
    cluster.close()                                        # twice is fine


def test_a_killed_driver_takes_its_sshcluster_down(ssh_hosts, tmp_path, run_driver):
    options = common_options(ssh_hosts, tmp_path)
    driver = run_driver.start(f"""
        import time
        from graphstore.deploy import SSHCluster
        cluster = SSHCluster({cluster_hosts(ssh_hosts)!r}, **{options!r})
        print("up", cluster.address, flush=True)
        time.sleep(600)
    """)
    address = driver.wait_for_line("up ", timeout=60).strip()
    ssh_hosts.addresses.append(address)
    assert len(ssh_hosts.graphstore_processes()) == 3
    driver.popen.kill()
    driver.popen.wait()
    # Its ssh connections close; each process sees its standard input end and stops.
    assert wait_for(lambda: not ssh_hosts.graphstore_processes(), 20), \
        ssh_hosts.graphstore_processes()
    remote_dir = str(tmp_path / "remote")
    assert wait_for(lambda: not [line for line in command_lines()
                                 if line.startswith("ssh") and remote_dir in line], 10)


@pytest.mark.parametrize("case", ["refused", "login", "python"])
def test_a_host_that_cannot_be_used_is_named_and_nothing_starts(ssh_hosts, tmp_path, case):
    a, b, c = ssh_hosts.hosts
    hosts = cluster_hosts(ssh_hosts)
    options = common_options(ssh_hosts, tmp_path)
    if case == "refused":          # nothing listens on that port
        hosts[2] = {"host": c.ip, "connect_options": {"port": 2222}}
        expected = ["Connection refused", "is sshd running"]
    elif case == "login":          # a key the hosts do not know
        from sshd import keygen
        key = keygen(tmp_path / "stranger")
        hosts[2] = {"host": c.ip, "connect_options": {"identity_file": str(key)}}
        expected = ["authentication failed", "Permission denied (publickey)"]
    else:                          # a Python without graphstore (no site-packages)
        hosts[2] = {"host": c.ip, "remote_python": f"{sys.executable} -S"}
        expected = ["cannot run graphstore", "No module named 'graphstore'"]
    with pytest.raises(SSHError) as failed:
        SSHCluster(hosts, **options)
    message = str(failed.value)
    assert failed.value.host == c.ip, message
    for text in expected:
        assert text in message
    assert a.ip not in message and b.ip not in message
    assert not ssh_hosts.graphstore_processes()
    assert not (tmp_path / "remote").exists()             # nothing was even started


def test_a_worker_that_does_not_come_up_is_named_with_its_log_and_the_rest_stops(
        ssh_hosts, tmp_path):
    _, b, c = ssh_hosts.hosts
    # Host C's worker is told to listen on an address that host does not have.
    hosts = cluster_hosts(ssh_hosts)
    hosts[2]["worker_options"]["host"] = "10.77.255.254"
    with pytest.raises(SSHError) as failed:
        SSHCluster(hosts, scheduler_options={"port": 0}, timeout=20,
                   **common_options(ssh_hosts, tmp_path))
    message = str(failed.value)
    assert message.startswith(f"the worker worker-2 on {c.ip} exited"), message
    assert "cannot listen for peers on 10.77.255.254" in message       # its log's tail
    assert b.ip not in message
    # The scheduler and host B's worker, which had started, were stopped.
    assert not ssh_hosts.graphstore_processes()
    assert not (tmp_path / "remote" / "worker-1" / "pid").exists()


def test_bad_hosts_files_are_refused_naming_the_key(tmp_path):
    bad = tmp_path / "hosts.yaml"
    bad.write_text("hosts: [10.0.0.1, 10.0.0.2]\nworker_options: {num_cpu: 2}\n")
    done = gs("up", str(bad))
    assert done.returncode == 2
    assert ("worker_options: unknown option 'num_cpu' (did you mean 'num_cpus'?)"
            in done.stderr), done.stderr
    bad.write_text("hosts: [10.0.0.1, 10.0.0.2\n")
    done = gs("down", str(bad))
    assert done.returncode == 2 and "is not valid YAML" in done.stderr
    assert "line 2" in done.stderr
