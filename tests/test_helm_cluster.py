"""The chart's rendered commands, run: a scheduler and a worker started from what
``helm template`` wrote, as Kubernetes would start those containers.

No Kubernetes runs here, so the kubelet's part is played by ``helm_tools``: each
container's arguments and environment are taken from the manifests as they are, with
Secret and field references resolved and ``$(VAR)`` expanded; a Secret volume becomes a
directory holding its projected keys; the pod's address is 127.0.0.1, and the scheduler
Service's DNS name, checked to be the Service's, is replaced by 127.0.0.1. What this
proves that the static checks cannot: graphstore accepts the rendered command lines and
variables, the probe's path answers on the status page's port, a worker sized by the
values joins with the node id, resources and CPUs the values give, the ``helm test``
pod's command succeeds against it, and a driver (``examples/cluster_driver.py``) runs
tasks, objects and an actor on it; with TLS on, over mutual TLS from the mounted files.
The image itself is not used (no container runtime here): the same ``graphstore``
command runs from this environment.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import urllib.request
from pathlib import Path

import pytest

from helm_tools import container_env, expand, find, installed, render, secret_data
from helpers import EXAMPLES, shm_files, wait_for

HELMS = installed()
if not HELMS and not os.environ.get("CI"):
    pytest.skip("no Helm binary: run `python tests/helm_tools.py install` (.ci/run does)",
                allow_module_level=True)

POD_IP = "127.0.0.1"


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class Pod:
    """What the kubelet would give one container: its environment and arguments, with
    Secret volumes written out under ``root`` and the paths inside them rewritten. The
    pod's own network is this machine's loopback: "every interface" (0.0.0.0) binds
    127.0.0.1, so nothing the test starts listens beyond it."""

    def __init__(self, spec: dict, secrets: dict, fields: dict, root: Path,
                 service_host: str):
        self.container = spec["containers"][0]
        env = container_env(self.container, secrets, fields)
        moved: dict[str, str] = {}
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for mount in self.container.get("volumeMounts", []):
            volume = volumes[mount["name"]]
            if "secret" in volume:
                directory = root / mount["name"]
                directory.mkdir(parents=True)
                data = secrets[volume["secret"]["secretName"]]
                for item in volume["secret"]["items"]:
                    path = directory / item["path"]
                    path.write_text(data[item["key"]])
                    path.chmod(volume["secret"]["defaultMode"])
                moved[mount["mountPath"]] = str(directory)
            elif mount["mountPath"] not in ("/dev/shm", "/tmp"):
                # A disk emptyDir (the spill directory): a directory of the test's.
                directory = root / mount["name"]
                directory.mkdir(parents=True)
                moved[mount["mountPath"]] = str(directory)
        # /tmp is the pod's own emptyDir: here a directory of the test's, as TMPDIR.
        tmp = root / "tmp"
        tmp.mkdir(parents=True)
        self.env = {name: self._local(self._move(value, moved)) for name, value in env.items()}
        self.env["TMPDIR"] = str(tmp)
        args = [self._local(self._move(expand(arg, env), moved))
                for arg in self.container["args"]]
        prefix = f"tcp://{service_host}:"
        self.args = [f"tcp://127.0.0.1:{a[len(prefix):]}" if a.startswith(prefix) else a
                     for a in args]

    @staticmethod
    def _local(value: str) -> str:
        return POD_IP if value == "0.0.0.0" else value

    @staticmethod
    def _move(value: str, moved: dict[str, str]) -> str:
        for mount_path, directory in moved.items():
            if value == mount_path or value.startswith(mount_path + "/"):
                return directory + value[len(mount_path):]
        return value


def _get_json(url: str):
    with urllib.request.urlopen(url, timeout=5) as response:
        assert response.status == 200
        return json.loads(response.read())


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_rendered_scheduler_and_worker_run_a_driver(tls, spawn_cli, run_driver, tmp_path):
    scheduler_port, dashboard_port, worker_port = _free_ports(3)
    values = {"scheduler": {"port": scheduler_port},
              "dashboard": {"port": dashboard_port},
              "worker": {"port": worker_port, "numCpus": 2, "objectStoreMemory": "96Mi",
                         "shmHeadroom": "32Mi", "customResources": {"special": 2},
                         "resources": {"limits": {"memory": "1Gi"}}},
              "settings": {"max_retries": 2, "heartbeat_interval": 0.5}}
    external = {}
    if tls:
        from certs import make_pki
        pki = make_pki(tmp_path / "pki")
        values["tls"] = {"enabled": True, "existingSecret": "gs-tls"}
        external["gs-tls"] = {"tls.crt": pki.cert.read_text(), "tls.key": pki.key.read_text(),
                              "ca.crt": pki.ca.read_text()}
    manifests = render(HELMS[0][1], values, tmp_dir=tmp_path)
    secrets = secret_data(manifests, external)
    service = find(manifests, "Service", "-scheduler")
    service_host = f"{service['metadata']['name']}.gs.svc"
    scheduler_spec = find(manifests, "Deployment", "-scheduler")["spec"]["template"]["spec"]
    worker_spec = find(manifests, "Deployment", "-worker")["spec"]["template"]["spec"]
    test_spec = find(manifests, "Pod", "-test-connection")["spec"]

    scheduler = Pod(scheduler_spec, secrets, {}, tmp_path / "scheduler", service_host)
    started = spawn_cli(scheduler.args, env=scheduler.env, name="scheduler")
    started.wait_for_line("graphstore scheduler listening at ")
    # The probes ask the status page for the path and port the manifest names.
    probe = scheduler.container["readinessProbe"]["httpGet"]
    port = next(p["containerPort"] for p in scheduler.container["ports"]
                if p["name"] == probe["port"])
    assert port == dashboard_port
    assert "routes" in _get_json(f"http://127.0.0.1:{port}{probe['path']}")

    pod_name = "gs-graphstore-worker-5d8f7-x2x9q"
    worker = Pod(worker_spec, secrets, {"status.podIP": POD_IP, "metadata.name": pod_name},
                 tmp_path / "worker", service_host)
    assert any(a.startswith("tcp://127.0.0.1:") for a in worker.args)
    worker_process = spawn_cli(worker.args, env=worker.env, name="worker")
    workers_url = f"http://127.0.0.1:{dashboard_port}/api/workers"
    rows = wait_for(lambda: _get_json(workers_url)["workers"], 30)
    assert rows, worker_process.output()
    row = rows[0]
    assert row["node"] == pod_name
    assert row["address"] == f"tcp://{POD_IP}:{worker_port}"
    assert row["num_cpus"] == 2 and row["resources"]["special"] == 2
    assert row["store_capacity"] == 96 * 1024**2

    # `helm test`: the test pod's command, as rendered.
    tester = Pod(test_spec, secrets, {}, tmp_path / "test", service_host)
    status = spawn_cli(tester.args, env=tester.env, name="helm-test")
    assert status.popen.wait(60) == 0, status.output()
    assert "1 worker(s)" in status.output(), status.output()
    assert pod_name[:20] in status.output()            # its NODE column, maybe cut

    # A driver in the cluster, with the environment a driver pod gets.
    driver_env = {"GRAPHSTORE_ADDRESS": f"tcp://127.0.0.1:{scheduler_port}",
                  **{k: v for k, v in tester.env.items() if k.startswith("GRAPHSTORE_")}}
    run = run_driver(f"""
        import runpy, sys
        sys.argv = ["cluster_driver.py"]
        runpy.run_path({str(EXAMPLES / "cluster_driver.py")!r}, run_name="__main__")
    """, env=driver_env, timeout=90)
    assert run.returncode == 0, run.stderr
    assert run.value("nodes") == "1"
    assert run.value("tasks_ran_on") == pod_name
    assert run.value("sum") == "1000000"
    assert run.value("ramp_last") == "499999"
    assert run.value("counter") == "6"

    # Kubernetes stops pods with SIGTERM: both exit, the worker's shared memory goes.
    from graphstore.core.shm import PREFIX
    from graphstore.worker.server import cluster_id_for
    address = next(a for a in worker.args if a.startswith("tcp://"))
    assert shm_files(f"{PREFIX}{cluster_id_for(address)}-")
    for process in (worker_process, started):
        process.popen.send_signal(signal.SIGTERM)
        assert process.popen.wait(30) is not None
    assert wait_for(lambda: not shm_files(f"{PREFIX}{cluster_id_for(address)}-"), 10)
