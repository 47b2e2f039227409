"""The type checker over the public API: ``mypy --strict`` on the public modules and on
``tests/typing/check_api.py``, which asserts what users get (``ObjectRef[int]`` from a
``.remote()`` call, ``int`` from ``get``, errors for wrong arguments). The module list
and the settings are ``[tool.mypy]`` in pyproject.toml."""
from __future__ import annotations

import os
from pathlib import Path

import mypy.api as mypy_api
import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(300)
def test_public_modules_and_typing_checks_pass_mypy_strict(tmp_path):
    cwd = os.getcwd()
    os.chdir(ROOT)              # the `files` of [tool.mypy] are relative to the root
    try:
        stdout, stderr, status = mypy_api.run(
            ["--config-file", str(ROOT / "pyproject.toml"),
             "--cache-dir", str(tmp_path / "mypy_cache"), "--no-error-summary"])
    finally:
        os.chdir(cwd)
    assert status == 0, f"mypy found errors:\n{stdout}{stderr}"
    assert not stdout.strip(), stdout


def test_the_package_says_it_is_typed():
    # PEP 561: without py.typed, type checkers ignore the annotations of an installed
    # graphstore. pyproject's package-data puts it in the wheel.
    import importlib.resources
    assert importlib.resources.files("graphstore").joinpath("py.typed").is_file()
