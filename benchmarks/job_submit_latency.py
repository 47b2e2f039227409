#!/usr/bin/env python
"""Time from ``graphstore job submit`` to the job's first output line (issue 18).

Starts a cluster from the command line, as an operator would (``graphstore scheduler
--port 0`` and one ``graphstore worker``, with their own TMPDIR), then runs
``graphstore job submit --address ... -- ENTRYPOINT`` ``--runs`` times for each kind
of entrypoint and times, from just before the submit process is started, the moment
its stdout shows the job's first line. The submit command follows the log as a user
sees it, so the figure includes starting the CLI (Python, imports), connecting, the
scheduler starting the job's supervisor, the entrypoint's own start-up and the
long-polled log read. Entrypoints:

- ``echo``: ``echo first line`` (the job machinery alone);
- ``python``: ``python -c "print('first line')"``;
- ``driver``: a script that imports graphstore, calls ``init()`` (joining the
  cluster) and prints the result of one task.

Also times ``python -m graphstore.cli --help`` (the CLI's own start-up) for
reference. Prints a Markdown table of medians and quartiles.

Usage::

    python benchmarks/job_submit_latency.py --runs 20
"""
from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DRIVER = """\
import graphstore
graphstore.init()

@graphstore.remote
def one():
    return 1

print("first line", graphstore.get(one.remote()), flush=True)
"""


def start_cluster(tmp: Path) -> tuple[str, dict, list[subprocess.Popen]]:
    env = {**os.environ, "TMPDIR": str(tmp), "GRAPHSTORE_CONFIG": os.devnull,
           "PYTHONUNBUFFERED": "1"}
    env.pop("GRAPHSTORE_TOKEN", None)
    env.pop("GRAPHSTORE_ADDRESS", None)
    token_file = tmp / "token"
    log = open(tmp / "scheduler.log", "wb")
    scheduler = subprocess.Popen(
        [sys.executable, "-m", "graphstore.cli", "scheduler", "--port", "0",
         "--token-file", str(token_file), "--dashboard-port", "0"],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 30
    address = None
    while address is None and time.monotonic() < deadline:
        for line in (tmp / "scheduler.log").read_text(errors="replace").splitlines():
            if line.startswith("graphstore scheduler listening at "):
                address = line.split()[-1]
        time.sleep(0.05)
    if address is None:
        scheduler.kill()
        raise SystemExit("the scheduler did not start: "
                         + (tmp / "scheduler.log").read_text())
    env["GRAPHSTORE_TOKEN"] = token_file.read_text().strip()
    worker = subprocess.Popen(
        [sys.executable, "-m", "graphstore.cli", "worker", address, "--num-cpus", "1"],
        stdout=open(tmp / "worker.log", "wb"), stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL, env=env)
    return address, env, [worker, scheduler]


def time_first_line(command: list[str], env: dict) -> float:
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            env=env)
    line = proc.stdout.readline()
    elapsed = time.perf_counter() - start
    proc.stdout.read()
    if proc.wait(60) != 0 or not line.startswith(b"first line"):
        raise RuntimeError(f"{command[-1]!r}: exit {proc.returncode}, first line {line!r}")
    return elapsed


def time_command(command: list[str], env: dict) -> float:
    start = time.perf_counter()
    subprocess.run(command, stdout=subprocess.DEVNULL, env=env, check=True)
    return time.perf_counter() - start


def row(name: str, samples: list[float]) -> str:
    q = statistics.quantiles(samples, n=4) if len(samples) > 1 else samples * 3
    return (f"| {name} | {len(samples)} | {1000 * statistics.median(samples):.0f} | "
            f"{1000 * q[0]:.0f}–{1000 * q[2]:.0f} | {1000 * min(samples):.0f} |")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=20, help="submissions per entrypoint")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="gs-job-latency-") as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "driver.py").write_text(DRIVER)
        address, env, procs = start_cluster(tmp)
        try:
            submit = [sys.executable, "-m", "graphstore.cli", "job", "submit",
                      "--address", address, "--"]
            entrypoints = {
                "echo": "echo first line",
                "python": f"{sys.executable} -c \"print('first line')\"",
                "driver (init + one task)": f"{sys.executable} {tmp / 'driver.py'}",
            }
            time_first_line(submit + [entrypoints["driver (init + one task)"]], env)  # warm
            results: dict[str, list[float]] = {name: [] for name in entrypoints}
            results["`graphstore --help` alone"] = []
            for _ in range(args.runs):          # interleaved: drift hits all alike
                for name, entrypoint in entrypoints.items():
                    results[name].append(time_first_line(submit + [entrypoint], env))
                results["`graphstore --help` alone"].append(time_command(
                    [sys.executable, "-m", "graphstore.cli", "--help"], env))
        finally:
            for proc in procs:
                proc.send_signal(signal.SIGTERM)
            for proc in procs:
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
    print(f"load average {os.getloadavg()[0]:.1f}, {os.cpu_count()} CPUs, "
          f"{args.runs} runs each")
    print("| entrypoint | runs | median ms | quartiles ms | best ms |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, samples in results.items():
        print(row(name, samples))
    return 0


if __name__ == "__main__":
    sys.exit(main())
