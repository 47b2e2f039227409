#!/usr/bin/env python
"""Core-API benchmarks: graphstore vs. Ray vs. Dask distributed.

Why this exists
---------------
graphstore's API mirrors Ray's core API (``init``/``remote``/``get``/``put``/
``wait``/``shutdown``).  To know whether it is any good we need to measure the
*same* workloads, written once, on graphstore and on the two systems people
would otherwise use, and publish absolute numbers plus ratios.

How it works
------------
* Each backend is wrapped in a small adapter class (``init``, ``shutdown``,
  ``remote(fn)``, ``submit``, ``get``, ``put``, ``wait``).  Workload functions
  are written once against that adapter, so adding a workload (large-object
  put/get, cross-host transfer, ...) means writing one function and one entry
  in its suite's ``WORKLOADS``.
* Every backend runs in its own fresh child process (this same script with the
  hidden ``--child`` flag), one after the other, so clusters never overlap and
  the startup measurement really is a cold start.  The child prints one JSON
  record per result on stdout, prefixed with ``RESULT_PREFIX``, as soon as it
  has it, so a backend that crashes or hangs half-way still reports what it
  finished.  The parent collects those records and renders a Markdown report.
* Startup can only be measured once per process, so the parent starts
  ``--repeat`` children per backend: the first runs every workload, the others
  only measure startup.  All other workloads are warmed up at a small size
  and then timed ``--repeat`` times inside the first child.  The report shows
  medians.
* Workloads come in suites: ``core`` (startup, many small tasks, small
  objects), ``actors`` (calls on one actor) and ``objects`` (a 200 MB array:
  put, get, task argument, transfer between two hosts, against warm memcpy
  and raw loopback TCP).  A workload that needs a differently shaped cluster
  (two hosts) runs after the others in the same child, on a cluster the
  adapter restarts for it; a workload whose concept one backend lacks is
  reported as N/A there.  For the actors and objects suites the report adds
  a table of the targets set in issues 4 and 3.
* The ``spill`` suite puts 2 GiB through a 512 MiB store that spills to a
  local directory (graphstore and Ray) or to a moto S3 server (graphstore),
  then gets it all back, against a plain sequential write and read of the
  same bytes in the same directory in the same run; each run restarts the
  backend with spilling (``Backend.init_spilling``).  The report adds the
  targets of issue 5.

Where things are
----------------
This file is only the entry point (``main``: options, then the child or the
parent).  Beside it, imported as top-level modules (``benchmarks/`` is
``sys.path[0]``):

* ``tasks.py``: the task bodies and the actor class the workloads run;
* ``backends.py``: the ``Backend`` adapter API and its graphstore, Ray and
  Dask implementations;
* ``workloads/``: ``Metric`` and ``Workload`` (``base.py``), one module per
  suite (``core_api.py``, ``actors.py``, ``objects.py``, ``spill.py``) and
  ``WORKLOADS``, all suites in order (``__init__.py``);
* ``moto_server.py``: the moto S3 server of the spill suite;
* ``records.py``: the JSON records a child prints for the parent;
* ``child.py``: what a child process runs;
* ``runner.py``: the parent starting the children and collecting records;
* ``targets.py``: the issues' targets and their check;
* ``report.py``: the Markdown report.

Usage::

    python benchmarks/core.py [--suite core|objects|spill|all] [--backends graphstore,ray,dask]
                              [--repeat N] [--out docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import os
import sys

# Top-level code must stay import-safe, here and in every module imported
# below: Dask starts its worker processes with the "spawn" method, which
# re-imports this file as ``__mp_main__``.
from backends import ALL_BACKENDS
from child import run_child
from report import render_report
from runner import log, run_backend
from workloads import SUITES, WORKLOADS


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--suite", default="all",
                   help="workloads to run: core, objects, spill or all (default all); "
                        "a comma-separated list also works")
    p.add_argument("--backends", default=",".join(ALL_BACKENDS),
                   help="comma-separated subset of: %(default)s")
    p.add_argument("--repeat", type=int, default=3,
                   help="timed runs per workload; the median is reported (default 3)")
    p.add_argument("--workloads",
                   help="run only these workloads of the chosen suites (comma-separated "
                        "names from workloads/; `first_put` for the first put of each "
                        "fresh process), e.g. --suite objects --workloads "
                        "warm_memcpy,fresh_puts")
    p.add_argument("--out", help="also write the Markdown report to this file")
    p.add_argument("--note", action="append", default=[],
                   help="a remark on the run's conditions for the report "
                        "(e.g. other load on the machine); may be repeated")
    p.add_argument("--timeout", type=float, default=1800,
                   help="seconds before a backend's child process is killed (default 1800)")
    p.add_argument("--child", choices=ALL_BACKENDS, help=argparse.SUPPRESS)
    p.add_argument("--startup-only", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.repeat < 1:
        p.error("--repeat must be >= 1")
    names = [x.strip() for x in args.suite.split(",") if x.strip()]
    if "all" in names:
        names = list(SUITES)
    bad = [x for x in names if x not in SUITES]
    if bad or not names:
        p.error(f"unknown suite(s): {', '.join(bad) or args.suite!r} "
                f"(choose from: {', '.join(SUITES)}, all)")
    suites = tuple(x for x in SUITES if x in names)
    only = None
    if args.workloads:
        only = tuple(x.strip() for x in args.workloads.split(",") if x.strip())
        known = {w.name for w in WORKLOADS} | {"first_put"}
        if not only or set(only) - known:
            p.error(f"unknown workload(s): {', '.join(sorted(set(only) - known))} "
                    f"(choose from: {', '.join(sorted(known))})")

    if args.child:
        return run_child(args.child, args.repeat, args.startup_only, suites, only)

    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = [b for b in backends if b not in ALL_BACKENDS]
    if unknown:
        p.error(f"unknown backend(s): {', '.join(unknown)}")

    results = {b: run_backend(b, args.repeat, args.timeout, suites, only)
               for b in backends}
    report = render_report(results, args.repeat, suites, args.note)
    print(report)
    if args.out:
        out = os.path.abspath(args.out)
        os.makedirs(os.path.dirname(out), exist_ok=True)
        with open(out, "w") as fh:
            fh.write(report)
        log(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
