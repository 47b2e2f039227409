"""The import contract of docs/architecture.md, checked with import-linter.

Imports go one way: ``graphstore.cli`` (the entry point) > the services (``scheduler/``,
``worker/``) and the client API > ``graphstore.runtime`` > ``graphstore.core`` >
``graphstore.exceptions``. The contracts live in pyproject.toml. import-linter reads a
package from one directory tree, while setuptools installs ``scheduler/`` and ``worker/``
as ``graphstore.scheduler`` and ``graphstore.worker``: the test lays the sources out as
installed, in a temporary directory, and lints that.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _installed_layout(target: Path) -> Path:
    """Copy the package's sources to ``target`` the way setuptools installs them."""
    package_dirs = PYPROJECT["tool"]["setuptools"]["package-dir"]
    for package, source in sorted(package_dirs.items()):
        destination = target.joinpath(*package.split("."))
        shutil.copytree(ROOT / source, destination, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__", "static"))
    return target


def _lint(tree: Path, config: Path) -> subprocess.CompletedProcess:
    # Console scripts sit beside the interpreter (a venv's or pyenv's bin/), even before
    # a shell's PATH or shims know of them.
    beside = Path(sys.executable).with_name("lint-imports")
    lint_imports = str(beside) if beside.exists() else shutil.which("lint-imports")
    if lint_imports is None:
        pytest.fail("lint-imports is missing: pip install -e '.[test]' installs it")
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run([lint_imports, "--no-cache", "--config", str(config)],
                          cwd=tree, env=env, capture_output=True, text=True, timeout=120)


def test_imports_keep_the_contract(tmp_path):
    tree = _installed_layout(tmp_path / "tree")
    done = _lint(tree, ROOT / "pyproject.toml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Contracts: 5 kept, 0 broken." in done.stdout, done.stdout


def test_every_module_of_the_package_is_in_a_layer():
    """A new top-level module must be placed in the contract, not slip past it."""
    layers = PYPROJECT["tool"]["importlinter"]["contracts"][0]["layers"]
    named = {part.strip() for layer in layers
             for part in layer.replace("|", ":").split(":")}
    top_level = {f"graphstore.{p.stem}" for p in (ROOT / "graphstore").iterdir()
                 if (p.suffix == ".py" and p.stem != "__init__")
                 or (p.is_dir() and (p / "__init__.py").exists())}
    top_level |= {"graphstore.scheduler", "graphstore.worker"}
    assert top_level == named


def test_a_backward_import_breaks_the_contract(tmp_path):
    """The check can fail: the foundation importing the runtime is reported."""
    tree = _installed_layout(tmp_path / "tree")
    with open(tree / "graphstore" / "core" / "node.py", "a") as f:
        f.write("\nfrom graphstore.runtime import context  # noqa\n")
    done = _lint(tree, ROOT / "pyproject.toml")
    assert done.returncode != 0
    assert "graphstore.core.node -> graphstore.runtime.context" in done.stdout, done.stdout
