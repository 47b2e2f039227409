"""What a runtime_env costs: packing and uploading a working_dir, the second upload of
the same files, the first task of an environment (fetch, unpack, process start), the
next task (process reused), and a pip venv from a local wheel.

graphstore only (Ray's runtime_env agent is not comparable offline). Run on a quiet
machine; figures go to docs/benchmarks.md.

    python benchmarks/runtime_env_setup.py [--mib 100] [--files 200]
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import os
import statistics
import tempfile
import time
import zipfile
from pathlib import Path

import graphstore
from graphstore.runtime.packages_client import upload_package


def make_wheel(directory: Path) -> None:
    name, version = "bench_wheel", "1.0"
    dist = f"{name}-{version}.dist-info"
    files = {f"{name}/__init__.py": b"X = 1\n",
             f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\n"
                                 f"Version: {version}\n".encode(),
             f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: bench\n"
                              b"Root-Is-Purelib: true\nTag: py3-none-any\n"}
    record = "".join(
        f"{n},sha256={base64.urlsafe_b64encode(hashlib.sha256(d).digest()).rstrip(b'=').decode()},"
        f"{len(d)}\n" for n, d in files.items()) + f"{dist}/RECORD,,\n"
    files[f"{dist}/RECORD"] = record.encode()
    with zipfile.ZipFile(directory / f"{name}-{version}-py3-none-any.whl", "w") as zf:
        for entry, data in files.items():
            zf.writestr(entry, data)


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mib", type=int, default=100, help="size of the working_dir")
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="gs-bench-renv-"))
    size = args.mib * 2**20 // args.files
    wheels = root / "wheels"
    wheels.mkdir()
    make_wheel(wheels)
    rows = {"pack+upload": [], "second upload": [], "first task": [], "next task": [],
            "first pip task": []}
    for run in range(args.repeat):
        wd = root / f"wd{run}"         # other bytes each run: nothing cached
        wd.mkdir()
        for i in range(args.files):
            (wd / f"f{i:04d}.bin").write_bytes(os.urandom(size))
        (wd / "mod.py").write_text("X = 1\n")
        graphstore.init(num_cpus=2, include_dashboard=False,
                        runtime_env_cache_dir=str(root / f"cache{run}"),
                        max_package_bytes=2 * args.mib * 2**20)

        @graphstore.remote
        def use():
            import mod
            return mod.X

        seconds, _ = timed(lambda: upload_package(wd))
        rows["pack+upload"].append(seconds)
        seconds, _ = timed(lambda: upload_package(wd))
        rows["second upload"].append(seconds)
        task = use.options(runtime_env={"working_dir": str(wd)})
        seconds, _ = timed(lambda: graphstore.get(task.remote()))
        rows["first task"].append(seconds)
        seconds, _ = timed(lambda: graphstore.get(task.remote()))
        rows["next task"].append(seconds)
        pip = use.options(runtime_env={"working_dir": str(wd), "pip": [
            "--no-index", f"--find-links={wheels}", f"bench_wheel==1.0"]})
        seconds, _ = timed(lambda: graphstore.get(pip.remote()))
        rows["first pip task"].append(seconds)
        graphstore.shutdown()
    print(f"working_dir: {args.files} files, {args.mib} MiB of random bytes; "
          f"median of {args.repeat} fresh clusters")
    for name, values in rows.items():
        print(f"{name:>16}: {statistics.median(values) * 1000:9.1f} ms  "
              f"(min {min(values) * 1000:.1f}, max {max(values) * 1000:.1f})")


if __name__ == "__main__":
    main()
