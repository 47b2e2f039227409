"""Runtime environments: a project's code and data, a local package and a pip requirement
shipped to the tasks and actors that need them (docs/runtime-environments.md).

Everything is made here in a temporary directory and nothing comes from the internet:
the pip requirement is a wheel this script writes with zipfile and installs with
``--no-index --find-links``.

    python examples/runtime_env.py
"""
from __future__ import annotations

import base64
import hashlib
import os
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path

import graphstore
from graphstore.exceptions import RuntimeEnvSetupError


def make_project(root: Path) -> Path:
    """A project directory: a module and a data file read by a relative path."""
    project = root / "project"
    (project / "data").mkdir(parents=True)
    (project / "prices.py").write_text(
        "import csv\n"
        "def total(path='data/prices.csv'):\n"
        "    with open(path) as f:\n"
        "        return sum(float(row['price']) for row in csv.DictReader(f))\n")
    (project / "data" / "prices.csv").write_text("item,price\napple,0.5\npear,0.75\n")
    (project / "notes.log").write_text("not shipped: excluded\n")
    return project


def make_package(root: Path) -> Path:
    """A local package, shipped with py_modules."""
    package = root / "libs" / "fmt_money"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(
        "def fmt(x):\n    return f'EUR {x:.2f}'\n")
    return package


def make_wheel(directory: Path) -> None:
    """A wheel of one module, ``tax_rates``, as pip would find on an index."""
    name, version = "tax_rates", "1.0"
    dist = f"{name}-{version}.dist-info"
    files = {f"{name}/__init__.py": b"VAT = 0.2\n",
             f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\n"
                                 f"Version: {version}\n".encode(),
             f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: example\n"
                              b"Root-Is-Purelib: true\nTag: py3-none-any\n"}
    record = "".join(
        f"{n},sha256={base64.urlsafe_b64encode(hashlib.sha256(d).digest()).rstrip(b'=').decode()},"
        f"{len(d)}\n" for n, d in files.items()) + f"{dist}/RECORD,,\n"
    files[f"{dist}/RECORD"] = record.encode()
    directory.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(directory / f"{name}-{version}-py3-none-any.whl", "w") as zf:
        for entry, data in files.items():
            zf.writestr(entry, data)


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="graphstore-runtime-env-example-"))
    here = os.getcwd()
    try:
        os.chdir(root)             # relative paths in a runtime_env start here
        run(root)
    finally:
        os.chdir(here)
        shutil.rmtree(root, ignore_errors=True)


def run(root: Path) -> None:
    project, package = make_project(root), make_package(root)
    make_wheel(root / "wheels")
    assert project.name == "project"

    # The job's environment: the project everywhere, logs left out.
    graphstore.init(num_cpus=2, include_dashboard=False,
                    runtime_env={"working_dir": "project", "excludes": ["*.log"]})

    @graphstore.remote
    def total():
        import prices                        # only in the working_dir
        return prices.total(), os.path.exists("notes.log")

    print("total from the working_dir:", graphstore.get(total.remote()))

    # A task adds a local package (its working_dir is still the job's).
    @graphstore.remote(runtime_env={"py_modules": [str(package)]})
    def formatted():
        import fmt_money
        import prices
        return fmt_money.fmt(prices.total())

    print("with py_modules:", graphstore.get(formatted.remote()))

    # pip: a virtualenv of this environment, built once per host.
    pip = ["--no-index", f"--find-links={root / 'wheels'}", "tax_rates==1.0"]

    @graphstore.remote(runtime_env={"pip": pip})
    def with_tax():
        import prices
        import tax_rates
        return round(prices.total() * (1 + tax_rates.VAT), 2), sys.prefix != sys.base_prefix

    print("with pip (price, in a venv):", graphstore.get(with_tax.remote()))

    # An actor with its own environment.
    @graphstore.remote(runtime_env={"py_modules": [str(package)],
                                    "env_vars": {"CURRENCY_NOTE": "prices in euros"}})
    class Till:
        def receipt(self):
            import fmt_money
            import prices
            return f"{fmt_money.fmt(prices.total())} ({os.environ['CURRENCY_NOTE']})"

    till = Till.remote()
    print("actor:", graphstore.get(till.receipt.remote()))

    # A requirement that cannot be installed fails its task with pip's own words.
    @graphstore.remote(runtime_env={"pip": ["--no-index", "no_such_package_here"]})
    def broken():
        return "never runs"

    try:
        graphstore.get(broken.remote())
    except RuntimeEnvSetupError as exc:
        print("set-up failed as expected:", str(exc).strip().splitlines()[-1])

    print("packages uploaded:", graphstore.cluster_status()["counts"]["packages_uploaded"])
    graphstore.shutdown()


if __name__ == "__main__":
    main()
