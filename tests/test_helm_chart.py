"""The Helm chart (``deploy/helm/graphstore``), rendered by the real ``helm`` and checked
where no Kubernetes runs.

This machine has no Kubernetes cluster, so nothing here installs the chart. Instead:

* the official Helm binaries (3.17 and 4.1, from ``tests/helm_tools.py``; ``.ci/run``
  installs them) render it for the default values and for value sets that turn on TLS,
  S3 spilling, eight GPU workers with custom resources, a NodePort Service, an Ingress
  and a NetworkPolicy, no status page, an existing token Secret and extra settings; both
  majors must render the same manifests;
* every manifest is validated against the official Kubernetes JSON schemas of the oldest
  version the chart supports and the newest ``kubernetes-validate`` ships, in strict mode
  (an unknown field is an error);
* what the schemas cannot see is checked against graphstore's own code: the worker's
  command names the scheduler Service's DNS name and port, every Secret, key, volume and
  named port referred to exists, /dev/shm is a memory-backed emptyDir sized from the
  values and mounted where the store lives (``graphstore.core.shm``), the token is never
  a literal, every ``GRAPHSTORE_*`` variable is a documented one and graphstore's own
  settings parser accepts the rendered values, and the rendered command lines parse with
  ``graphstore``'s own argument parser;
* bad values fail at ``helm template`` with a message naming the key
  (``values.schema.json`` and the chart's own checks).

``tests/test_helm_cluster.py`` runs the rendered commands as processes.
"""
from __future__ import annotations

import json
import os
import re
import tomllib
from pathlib import Path

import pytest
import yaml

from helm_tools import (CHART, ROOT, RenderError, container_env, expand, find, installed,
                        render, secret_data)

from graphstore.cli import build_parser
from graphstore.core import shm
from graphstore.core.config import resolve_settings, setting_types
from graphstore.core.logs import LOG_FORMATS

HELMS = installed()
if not HELMS and not os.environ.get("CI"):
    pytest.skip("no Helm binary: run `python tests/helm_tools.py install` (.ci/run does)",
                allow_module_level=True)

#: Kubernetes versions validated against: the chart's oldest (Chart.yaml kubeVersion)
#: and the newest kubernetes-validate knows.
KUBE_VERSIONS = ("1.27.0", "1.37.0")
#: Settings the chart sets itself, from values sections of their own.
MANAGED_SETTINGS = {"tls_cert", "tls_key", "tls_ca", "tls_check_hostname",
                    "object_store_memory", "spill_to", "spill_options", "dashboard_port",
                    "dashboard_host"}
GIB = 1024**3
MIB = 1024**2

#: name -> (values, Secrets those values name as existing: {name: {key: text}}).
VALUE_SETS: dict[str, tuple[dict, dict]] = {
    "defaults": ({}, {}),
    "tls": ({"tls": {"enabled": True, "existingSecret": "gs-tls"}},
            {"gs-tls": {"tls.crt": "CERT", "tls.key": "KEY", "ca.crt": "CA"}}),
    "gpu-workers": ({"worker": {
        "replicas": 8, "numCpus": 4, "numGpus": 1, "objectStoreMemory": "6Gi",
        "shmHeadroom": "512Mi",
        "customResources": {"special": 2, "example.com/fpga": 0.5},
        "resources": {"requests": {"cpu": "4", "memory": "16Gi"},
                      "limits": {"memory": "16Gi", "nvidia.com/gpu": 1}},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists",
                         "effect": "NoSchedule"}],
        "nodeSelector": {"accelerator": "gpu"}}}, {}),
    "s3-spill": ({"worker": {"spill": {
        "to": "s3://bucket/graphstore", "credentialsSecret": "s3-creds",
        "options": {"endpoint_url": "http://minio.storage:9000",
                    "client_kwargs": {"region_name": "eu-west-1"}}}},
                  "serviceAccount": {"annotations": {
                      "eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/gs"}}},
                 {"s3-creds": {"AWS_ACCESS_KEY_ID": "AKIA", "AWS_SECRET_ACCESS_KEY": "S"}}),
    "nodeport": ({"scheduler": {"service": {"type": "NodePort", "nodePorts": {
        "scheduler": 30680, "dashboard": 30265}}}}, {}),
    "ingress-netpol": ({"dashboard": {"ingress": {
        "enabled": True, "className": "nginx", "host": "graphstore.example.com",
        "annotations": {"nginx.ingress.kubernetes.io/auth-type": "basic"},
        "tls": [{"secretName": "gs-dashboard-tls", "hosts": ["graphstore.example.com"]}]}},
        "networkPolicy": {"enabled": True, "dashboardFrom": [{"namespaceSelector": {
            "matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}]}}, {}),
    "no-dashboard": ({"dashboard": {"enabled": False}, "serviceAccount": {"create": False}},
                     {}),
    "existing-token": ({"token": {"existingSecret": "team-token", "secretKey": "gs"}},
                       {"team-token": {"gs": "f" * 64}}),
    "settings": ({"settings": {"max_retries": 5, "log_format": "json",
                               "transfer_bandwidth": 1e9, "max_lineage_bytes": 536870912,
                               "record_timeline": False, "spill_threshold": 0.7},
                  "scheduler": {"logLevel": "DEBUG"}}, {}),
}


def _key_named(message: str, dotted: str) -> bool:
    """Whether Helm's error names the value's key: Helm 3 says ``worker.replicas``, Helm 4
    ``/worker/replicas``, the chart's own checks ``worker.replicas:``."""
    return dotted in message or "/" + dotted.replace(".", "/") in message


def _quantity(text) -> int:
    """An independent reading of a Kubernetes quantity in bytes (the oracle for the
    chart's template helper)."""
    if isinstance(text, (int, float)):
        return int(text)
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6,
             "G": 10**9, "T": 10**12, "": 1}
    match = re.fullmatch(r"([0-9.]+(?:[eE][-+]?[0-9]+)?)([A-Za-z]*)", str(text))
    assert match, text
    return int(float(match.group(1)) * units[match.group(2)])


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> dict[str, dict[str, list[dict]]]:
    """{value set: {helm version: manifests}}, every set rendered by every Helm."""
    tmp = tmp_path_factory.mktemp("helm")
    return {name: {version: render(path, values, tmp_dir=tmp) for version, path in HELMS}
            for name, (values, _) in VALUE_SETS.items()}


def _newest(rendered_set: dict[str, list[dict]]) -> list[dict]:
    return rendered_set[HELMS[0][0]]


def _containers(manifests: list[dict]) -> dict[str, tuple[dict, dict]]:
    """{component: (pod spec, its one container)} of the scheduler, workers and test pod."""
    found = {}
    for m in manifests:
        if m["kind"] == "Deployment":
            spec = m["spec"]["template"]["spec"]
        elif m["kind"] == "Pod":
            spec = m["spec"]
        else:
            continue
        component = (m["spec"]["template"]["metadata"]["labels"] if m["kind"] == "Deployment"
                     else m["metadata"]["labels"])["app.kubernetes.io/component"]
        assert len(spec["containers"]) == 1
        found[component] = (spec, spec["containers"][0])
    assert set(found) == {"scheduler", "worker", "test"}, found.keys()
    return found


def _env_items(container: dict) -> dict[str, dict]:
    return {item["name"]: item for item in container.get("env", [])}


def test_helm_is_here_in_ci():
    # In CI the chart must be rendered: .ci/run installs Helm before the tests.
    assert HELMS, "no Helm binary although CI is set: .ci/run should have installed it"
    assert {version.split(".")[0] for version, _ in HELMS} == {"v3", "v4"}


# -- the schemas --------------------------------------------------------------------------

@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("name", VALUE_SETS)
def test_manifests_validate_against_kubernetes_schemas(rendered, name, kube_version):
    import kubernetes_validate
    manifests = _newest(rendered[name])
    for manifest in manifests:
        try:
            kubernetes_validate.validate(manifest, kube_version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            raise AssertionError(
                f"{manifest['kind']} {manifest['metadata']['name']} ({name}) is not valid "
                f"Kubernetes {kube_version}: {exc.message} at "
                f"{'.'.join(map(str, exc.path))}") from None
    kinds = sorted(m["kind"] for m in manifests)
    expected = ["Deployment", "Deployment", "Pod", "Secret", "Service", "ServiceAccount"]
    if name == "existing-token":
        expected.remove("Secret")
    if name == "no-dashboard":
        expected.remove("ServiceAccount")
    if name == "ingress-netpol":
        expected += ["Ingress", "NetworkPolicy"]
    assert kinds == sorted(expected)


@pytest.mark.parametrize("name", VALUE_SETS)
def test_helm_3_and_4_render_the_same_manifests(rendered, name):
    if len(HELMS) < 2:
        pytest.skip("one Helm major installed")
    by_version = rendered[name]
    # The generated token is random per render; everything else must be equal.
    normal = {}
    for version, manifests in by_version.items():
        normal[version] = [m for m in manifests if m["kind"] != "Secret"]
    first, *others = normal.values()
    for other in others:
        assert other == first


def test_chart_lints_strictly_for_every_value_set(tmp_path):
    import subprocess
    for version, helm in HELMS:
        for name, (values, _) in VALUE_SETS.items():
            values_file = tmp_path / f"{name}.yaml"
            values_file.write_text(yaml.safe_dump(values))
            result = subprocess.run([str(helm), "lint", "--strict", str(CHART),
                                     "--values", str(values_file)],
                                    capture_output=True, text=True, timeout=60,
                                    env={**os.environ, "HELM_CACHE_HOME": str(tmp_path),
                                         "HELM_CONFIG_HOME": str(tmp_path),
                                         "HELM_DATA_HOME": str(tmp_path)})
            assert result.returncode == 0, f"helm {version} lint ({name}):\n{result.stdout}"


def test_kubernetes_older_than_the_chart_supports_is_refused():
    with pytest.raises(RenderError, match="kubeVersion"):
        render(HELMS[0][1], kube_version="1.26.0")
    assert render(HELMS[0][1], kube_version=KUBE_VERSIONS[0])


# -- what the schemas cannot see ----------------------------------------------------------

@pytest.mark.parametrize("name", VALUE_SETS)
def test_workers_and_test_pod_dial_the_scheduler_service(rendered, name):
    manifests = _newest(rendered[name])
    service = find(manifests, "Service", "-scheduler")
    namespace = "gs"
    pods = _containers(manifests)
    _, scheduler = pods["scheduler"]
    # The Service selects the scheduler's pod, and its port leads to the scheduler's.
    deployment = find(manifests, "Deployment", "-scheduler")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    port = next(p for p in service["spec"]["ports"] if p["name"] == "scheduler")
    container_port = next(p for p in scheduler["ports"] if p["name"] == port["targetPort"])
    scheduler_args = build_parser().parse_args(scheduler["args"])
    assert scheduler_args.command == "scheduler"
    assert scheduler_args.port == container_port["containerPort"]
    assert scheduler_args.host == "0.0.0.0"          # the Service and port-forward reach it
    expected = f"tcp://{service['metadata']['name']}.{namespace}.svc:{port['port']}"
    _, worker = pods["worker"]
    worker_args = build_parser().parse_args(worker["args"])
    assert worker_args.command == "worker" and worker_args.address == expected
    _, test = pods["test"]
    test_args = build_parser().parse_args(test["args"])
    assert test_args.command == "status" and test_args.address == expected


@pytest.mark.parametrize("name", VALUE_SETS)
def test_every_reference_resolves(rendered, name):
    """Secrets and their keys, volumes, named ports, the Ingress backend and the
    NetworkPolicy's pods: each name used is one that exists."""
    manifests = _newest(rendered[name])
    values, external = VALUE_SETS[name]
    secrets = secret_data(manifests, external)
    for component, (spec, container) in _containers(manifests).items():
        env = container_env(container, secrets, {"status.podIP": "10.1.2.3",
                                                 "metadata.name": f"{component}-pod"})
        assert env["GRAPHSTORE_TOKEN"]
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for mount in container.get("volumeMounts", []):
            volume = volumes[mount["name"]]
            if "secret" in volume:
                source = secrets[volume["secret"]["secretName"]]
                for item in volume["secret"].get("items", []):
                    assert item["key"] in source, (item, volume)
        names = {p["name"] for p in container.get("ports", [])}
        for probe in ("readinessProbe", "livenessProbe"):
            if probe in container:
                action = container[probe].get("httpGet") or container[probe]["tcpSocket"]
                assert action["port"] in names
        if spec.get("serviceAccountName") not in (None, "default"):
            find(manifests, "ServiceAccount", spec["serviceAccountName"])
    service = find(manifests, "Service", "-scheduler")
    if name == "ingress-netpol":
        backend = find(manifests, "Ingress")["spec"]["rules"][0]["http"]["paths"][0]
        backend = backend["backend"]["service"]
        assert backend["name"] == service["metadata"]["name"]
        assert backend["port"]["name"] in {p["name"] for p in service["spec"]["ports"]}
        policy = find(manifests, "NetworkPolicy")
        selector = policy["spec"]["podSelector"]["matchLabels"]
        for deployment in (find(manifests, "Deployment", "-scheduler"),
                           find(manifests, "Deployment", "-worker")):
            assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
        # Drivers labelled as clients are let in: the test pod carries the label.
        client = policy["spec"]["ingress"][0]["from"][1]["podSelector"]["matchLabels"]
        assert client.items() <= find(manifests, "Pod")["metadata"]["labels"].items()
        _, scheduler = _containers(manifests)["scheduler"]
        assert policy["spec"]["ingress"][1]["ports"][0]["port"] in {
            p["name"] for p in scheduler["ports"]}
    if values.get("dashboard", {}).get("enabled") is False:
        assert [p["name"] for p in service["spec"]["ports"]] == ["scheduler"]


@pytest.mark.parametrize("name", VALUE_SETS)
def test_shared_memory_is_a_memory_emptydir_where_the_store_lives(rendered, name):
    manifests = _newest(rendered[name])
    values, _ = VALUE_SETS[name]
    worker_values = values.get("worker", {})
    spec, worker = _containers(manifests)["worker"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in worker["volumeMounts"]}
    env = _env_items(worker)
    # The store's segments go to GRAPHSTORE_SHM_DIR, else /dev/shm: a tmpfs of its own.
    store_dir = env.get("GRAPHSTORE_SHM_DIR", {}).get("value", "/dev/shm")
    assert store_dir == shm.SHM_DIR == "/dev/shm"
    volume = volumes[mounts[store_dir]]
    assert volume["emptyDir"]["medium"] == "Memory"
    store = _quantity(worker_values.get("objectStoreMemory", "1Gi"))
    headroom = _quantity(worker_values.get("shmHeadroom", "256Mi"))
    assert int(env["GRAPHSTORE_OBJECT_STORE_MEMORY"]["value"]) == store
    assert _quantity(volume["emptyDir"]["sizeLimit"]) == store + headroom
    # tmpfs pages count against the pod's memory limit: the limit leaves room beyond it.
    limit = _quantity(worker["resources"]["limits"]["memory"])
    assert limit > store + headroom
    # A read-only root filesystem, with /tmp (logs, process records) writable.
    assert worker["securityContext"]["readOnlyRootFilesystem"] is True
    assert "emptyDir" in volumes[mounts["/tmp"]]


@pytest.mark.parametrize("name", VALUE_SETS)
def test_the_token_is_never_written_out(rendered, name):
    manifests = _newest(rendered[name])
    values, external = VALUE_SETS[name]
    secrets = secret_data(manifests, external)
    token_ref = {"name": values.get("token", {}).get("existingSecret") or "gs-graphstore-token",
                 "key": values.get("token", {}).get("secretKey", "token")}
    token = secrets[token_ref["name"]][token_ref["key"]]
    assert len(token) >= 32
    if not values.get("token", {}).get("existingSecret"):
        assert re.fullmatch(r"[0-9a-f]{64}", token)     # 256 random bits, as hex
    for component, (_, container) in _containers(manifests).items():
        item = _env_items(container)["GRAPHSTORE_TOKEN"]
        assert item == {"name": "GRAPHSTORE_TOKEN",
                        "valueFrom": {"secretKeyRef": token_ref}}, component
        assert not any("token" in arg for arg in container.get("args", []))
    for manifest in manifests:
        if manifest["kind"] == "Secret":
            continue
        assert manifest["kind"] != "ConfigMap"
        text = yaml.safe_dump(manifest)
        assert token not in text and "GRAPHSTORE_TOKEN_FILE" not in text


def _documented_variables() -> set[str]:
    text = (ROOT / "docs" / "configuration.md").read_text()
    return set(re.findall(r"`(GRAPHSTORE_[A-Z_]+)", text))


@pytest.mark.parametrize("name", VALUE_SETS)
def test_settings_reach_processes_through_documented_variables(rendered, name):
    """Every GRAPHSTORE_* variable the chart sets is a setting or a documented variable,
    and graphstore's own settings parser accepts what the chart rendered."""
    manifests = _newest(rendered[name])
    values, external = VALUE_SETS[name]
    secrets = secret_data(manifests, external)
    documented = _documented_variables()
    types = setting_types()
    for component, (_, container) in _containers(manifests).items():
        env = container_env(container, secrets, {"status.podIP": "10.1.2.3",
                                                 "metadata.name": f"{component}-pod"})
        ours = {k: v for k, v in env.items() if k.startswith("GRAPHSTORE_")}
        for variable in ours:
            assert variable[len("GRAPHSTORE_"):].lower() in types or variable in documented, (
                f"{component} sets {variable}, which docs/configuration.md does not list")
        settings = resolve_settings(environ={**ours, "GRAPHSTORE_CONFIG": os.devnull})
        for setting, value in values.get("settings", {}).items():
            assert settings[setting].value == value and settings[setting].kind == "env"
        tls = values.get("tls", {})
        if tls.get("enabled"):
            assert settings["tls_check_hostname"].value is False   # pods dial pod IPs
            assert {settings[s].value for s in ("tls_cert", "tls_key", "tls_ca")} == {
                "/etc/graphstore/tls/tls.crt", "/etc/graphstore/tls/tls.key",
                "/etc/graphstore/tls/ca.crt"}
        else:
            assert not any(v.startswith("GRAPHSTORE_TLS") for v in ours)
        if component == "scheduler":
            dashboard = values.get("dashboard", {})
            assert settings["dashboard_port"].value == (
                0 if dashboard.get("enabled") is False else 8265)
            assert settings["dashboard_host"].value == "0.0.0.0"
        if component == "worker":
            spill = values.get("worker", {}).get("spill", {})
            assert settings["spill_to"].value == spill.get("to", "/var/lib/graphstore/spill")
            assert settings["spill_options"].value == spill.get("options", {})
            assert env["GRAPHSTORE_NODE_ID"] == "worker-pod"


@pytest.mark.parametrize("name", VALUE_SETS)
def test_tls_files_are_mounted_from_the_secret(rendered, name):
    manifests = _newest(rendered[name])
    values, external = VALUE_SETS[name]
    for component, (spec, container) in _containers(manifests).items():
        env = _env_items(container)
        if not values.get("tls", {}).get("enabled"):
            assert not any(v.get("secret") for v in spec.get("volumes", []))
            continue
        volumes = {v["name"]: v for v in spec["volumes"]}
        for variable in ("GRAPHSTORE_TLS_CERT", "GRAPHSTORE_TLS_KEY", "GRAPHSTORE_TLS_CA"):
            path = Path(env[variable]["value"])
            mount = next(m for m in container["volumeMounts"]
                         if Path(m["mountPath"]) == path.parent)
            assert mount["readOnly"] is True
            secret = volumes[mount["name"]]["secret"]
            assert secret["secretName"] == values["tls"]["existingSecret"]
            item = next(i for i in secret["items"] if i["path"] == path.name)
            assert item["key"] in external[secret["secretName"]], component


@pytest.mark.parametrize("name", VALUE_SETS)
def test_worker_command_line_parses_and_spills_to_a_volume(rendered, name):
    manifests = _newest(rendered[name])
    values, external = VALUE_SETS[name]
    worker_values = values.get("worker", {})
    spec, worker = _containers(manifests)["worker"]
    env = container_env(worker, secret_data(manifests, external),
                        {"status.podIP": "10.1.2.3", "metadata.name": "w-0"})
    args = build_parser().parse_args([expand(a, env) for a in worker["args"]])
    assert args.host == "10.1.2.3" and args.port == 7001
    assert args.num_cpus == worker_values.get("numCpus", 1)
    assert args.num_gpus == worker_values.get("numGpus")
    assert dict(args.resource) == {k: float(v) for k, v in
                                   worker_values.get("customResources", {}).items()}
    assert args.object_store_memory is None     # set by GRAPHSTORE_OBJECT_STORE_MEMORY
    assert find(manifests, "Deployment", "-worker")["spec"]["replicas"] == worker_values.get(
        "replicas", 2)
    spill_to = env["GRAPHSTORE_SPILL_TO"]
    if spill_to.startswith("s3://"):
        assert worker["envFrom"] == [{"secretRef": {"name": "s3-creds"}}]
        assert "AWS_SECRET_ACCESS_KEY" in env          # from the Secret, not a literal
        assert "AWS_SECRET_ACCESS_KEY" not in _env_items(worker)
    else:
        mount = next(m for m in worker["volumeMounts"] if m["mountPath"] == spill_to)
        volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
        assert _quantity(volume["emptyDir"]["sizeLimit"]) == 10 * GIB


def test_image_and_chart_versions_follow_pyproject(rendered):
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == version
    for _, container in _containers(_newest(rendered["defaults"])).values():
        assert container["image"] == f"graphstore:{version}"


def test_settings_schema_matches_graphstores_settings():
    """values.schema.json lists exactly the settings the chart does not set itself, each
    with its type: a misspelt setting fails at install, not in a pod."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    properties = schema["properties"]["settings"]["properties"]
    json_types = {int: "integer", float: "number", bool: "boolean", str: "string"}
    expected = {name: json_types[kind] for name, kind in setting_types().items()
                if name not in MANAGED_SETTINGS}
    assert {name: p["type"] for name, p in properties.items()} == expected
    assert properties["log_format"]["enum"] == list(LOG_FORMATS)
    assert schema["properties"]["settings"]["additionalProperties"] is False


@pytest.mark.parametrize("size", [1073741824, "1Gi", "1536Mi", "1.5Gi", "2G", "2e9",
                                  "3000000k", 4 * GIB])
def test_object_store_size_accepts_bytes_and_quantities(size):
    manifests = render(HELMS[0][1], {"worker": {
        "objectStoreMemory": size, "resources": {"limits": {"memory": "8Gi"}}}})
    spec, worker = _containers(manifests)["worker"]
    env = _env_items(worker)
    assert int(env["GRAPHSTORE_OBJECT_STORE_MEMORY"]["value"]) == _quantity(size)
    shm_volume = next(v for v in spec["volumes"] if v["name"] == "shm")
    assert int(shm_volume["emptyDir"]["sizeLimit"]) == _quantity(size) + 256 * MIB


# -- bad values ---------------------------------------------------------------------------

BAD_VALUES = [
    ({"worker": {"replicas": "three"}}, "worker.replicas"),
    ({"worker": {"replica": 3}}, "replica"),
    ({"worker": {"objectStoreMemory": "lots"}}, "worker.objectStoreMemory"),
    ({"worker": {"objectStoreMemory": 1000}}, "worker.objectStoreMemory"),
    ({"worker": {"numCpus": 0}}, "worker.numCpus"),
    ({"worker": {"port": 70000}}, "worker.port"),
    ({"worker": {"spill": {"to": "gs://bucket"}}}, "worker.spill.to"),
    ({"worker": {"spill": {"options": {"secret": "plain-text"}}}}, "worker.spill.options"),
    ({"scheduler": {"service": {"type": "Public"}}}, "scheduler.service.type"),
    ({"settings": {"max_retires": 3}}, "max_retires"),
    ({"settings": {"max_retries": "lots"}}, "settings.max_retries"),
    ({"settings": {"log_format": "xml"}}, "settings.log_format"),
    ({"settings": {"tls_cert": "/x.pem"}}, "tls_cert"),
    ({"tls": {"enabled": True}}, "tls.existingSecret"),
    ({"dashboard": {"enabled": False, "ingress": {"enabled": True}}},
     "dashboard.ingress.enabled"),
    ({"dashboard": {"port": 6380}}, "dashboard.port"),
    ({"worker": {"objectStoreMemory": "4Gi"}}, "worker.resources.limits.memory"),
    ({"worker": {"resources": {"limits": {"memory": "2 gigs"}}}},
     "worker.resources.limits.memory"),
]


@pytest.mark.parametrize("values,key", BAD_VALUES, ids=[k for _, k in BAD_VALUES])
def test_bad_values_fail_naming_the_key(values, key):
    for version, helm in HELMS:
        with pytest.raises(RenderError) as failure:
            render(helm, values)
        assert _key_named(str(failure.value), key), (version, str(failure.value))


# -- the examples docs/deployment.md walks through -----------------------------------------

EXAMPLE_DIR = ROOT / "examples" / "kubernetes"


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_example_values_render_valid_manifests(kube_version, tmp_path):
    import kubernetes_validate
    values = yaml.safe_load((EXAMPLE_DIR / "values.yaml").read_text())
    manifests = render(HELMS[0][1], values, kube_version=kube_version, tmp_dir=tmp_path)
    for manifest in manifests:
        kubernetes_validate.validate(manifest, kube_version, strict=True)
    _, worker = _containers(manifests)["worker"]
    env = _env_items(worker)
    assert env["GRAPHSTORE_SPILL_TO"]["value"] == values["worker"]["spill"]["to"]
    assert "GRAPHSTORE_TLS_CA" in env
    # Its anti-affinity selects this release's workers (the release the docs install: gs).
    spec = find(manifests, "Deployment", "-worker")["spec"]["template"]
    term = spec["spec"]["affinity"]["podAntiAffinity"][
        "preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]
    assert term["labelSelector"]["matchLabels"].items() <= spec["metadata"]["labels"].items()


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_example_driver_job_joins_the_charts_cluster(rendered, kube_version):
    import kubernetes_validate
    job = yaml.safe_load((EXAMPLE_DIR / "driver-job.yaml").read_text())
    kubernetes_validate.validate(job, kube_version, strict=True)
    manifests = _newest(rendered["defaults"])        # release gs in namespace gs
    pod = job["spec"]["template"]
    container = pod["spec"]["containers"][0]
    env = _env_items(container)
    _, worker = _containers(manifests)["worker"]
    assert env["GRAPHSTORE_ADDRESS"]["value"] == build_parser().parse_args(
        worker["args"]).address
    assert env["GRAPHSTORE_TOKEN"] == _env_items(worker)["GRAPHSTORE_TOKEN"]
    find(manifests, "Secret", env["GRAPHSTORE_TOKEN"]["valueFrom"]["secretKeyRef"]["name"])
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["networkPolicy"]["clientPodLabels"].items() <= pod["metadata"]["labels"].items()
    # `kubectl create configmap gs-driver --from-file=examples/cluster_driver.py` keys the
    # script by its file name, which the command runs from the mount.
    mount = next(m for m in container["volumeMounts"] if m["name"] == "script")
    assert container["command"] == ["python", f"{mount['mountPath']}/cluster_driver.py"]
    assert (ROOT / "examples" / "cluster_driver.py").exists()
    app_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    assert container["image"].endswith(f":{app_version}")    # the workers' image


def test_names_fit_kubernetes_limits_for_the_longest_release_name(tmp_path):
    """Helm allows release names of 53 characters; every name the chart derives from one
    must still be a valid Kubernetes name (Services: DNS labels of at most 63)."""
    release = "r" * 53
    manifests = render(HELMS[0][1], {"dashboard": {"ingress": {"enabled": True}},
                                     "networkPolicy": {"enabled": True}},
                       release=release, tmp_dir=tmp_path)
    label = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")
    subdomain = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
    for manifest in manifests:
        name = manifest["metadata"]["name"]
        pattern = label if manifest["kind"] == "Service" else subdomain
        assert pattern.fullmatch(name), (manifest["kind"], name)
        for value in manifest["metadata"].get("labels", {}).values():
            assert len(value) <= 63, (manifest["kind"], value)
    _, worker = _containers(manifests)["worker"]
    service = find(manifests, "Service", "-scheduler")["metadata"]["name"]
    assert build_parser().parse_args(worker["args"]).address.startswith(
        f"tcp://{service}.gs.svc:")
