"""The worker's command line: ``graphstore worker`` and ``python -m graphstore.worker``
(which a local cluster runs) both parse and start it here."""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

from graphstore.core.cli_options import (add_process_options, add_tls_options,
                                         log_file_for, parse_label, parse_resource,
                                         tls_settings)
from graphstore.core.config import load_config
from graphstore.core.lifecycle import new_event_loop, run_until_signalled, setup_logging
from graphstore.core.service_records import remove_record, write_record


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("address", help="scheduler address, tcp://HOST:PORT")
    parser.add_argument("--num-cpus", type=float, default=None,
                        help="CPU slots this worker offers (default: all CPUs)")
    parser.add_argument("--num-gpus", type=float, default=None,
                        help="GPUs this worker offers (default: those CUDA_VISIBLE_DEVICES "
                             "names, else those `nvidia-smi -L` lists, else none)")
    parser.add_argument("--resource", action="append", type=parse_resource, default=[],
                        metavar="NAME=AMOUNT", help="a custom resource (repeatable)")
    parser.add_argument("--object-store-memory", type=int, default=None,
                        help="bytes of shared memory for this worker's object store "
                             "(default: 30%% of memory shared by the host's workers)")
    parser.add_argument("--spill-to", default=None, metavar="URL",
                        help="where the store spills: a directory or file:// / s3:// URL")
    parser.add_argument("--spill-option", action="append", default=[],
                        metavar="KEY=VALUE", help="an fsspec/s3fs storage option "
                        "(repeatable), e.g. endpoint_url=http://127.0.0.1:9000")
    parser.add_argument("--spill-threshold", type=float, default=None,
                        help="fraction of the store above which objects spill (0.8)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="interface for the worker's peer server (object transfers; "
                             "default 127.0.0.1: give a reachable address, or 0.0.0.0, "
                             "when other hosts are in the cluster)")
    parser.add_argument("--port", type=int, default=0,
                        help="port of the peer server (default 0: any free port; fix it "
                             "to open it in a firewall)")
    parser.add_argument("--node-id", default=None,
                        help="host identity (default: derived from this machine)")
    parser.add_argument("--token-file", default=None,
                        help="cluster token file (default: GRAPHSTORE_TOKEN or "
                             "~/.graphstore/token)")
    parser.add_argument("--label", action="append", type=parse_label, default=[],
                        metavar="KEY=VALUE",
                        help="a name for this worker, shown in `graphstore list workers` "
                             "and the status page (repeatable); deployments use it to "
                             "find their workers, e.g. slurm_job_id=1234")
    add_tls_options(parser)
    add_process_options(parser)


def run(args: argparse.Namespace) -> int:
    """Run a worker until its scheduler goes or a signal stops it; the exit code."""
    from graphstore.core.comm import parse_address
    from graphstore.core.tls import tls_from_config
    from graphstore.core.token import load_token
    from graphstore.worker.server import serve
    try:
        parse_address(args.address)
        token = load_token(path=args.token_file)
    except (ValueError, FileNotFoundError) as exc:
        print(f"graphstore worker: {exc}", file=sys.stderr)
        return 2
    from graphstore.core.protocol import MAX_LABELS
    if len(dict(args.label)) > MAX_LABELS:
        print(f"graphstore worker: at most {MAX_LABELS} --label options, got "
              f"{len(dict(args.label))}", file=sys.stderr)
        return 2
    options = {}
    for item in args.spill_option:
        key, sep, value = item.partition("=")
        if not sep or not key:
            print(f"graphstore worker: --spill-option expects KEY=VALUE, got {item!r}",
                  file=sys.stderr)
            return 2
        options[key] = value
    overrides = {"spill_to": args.spill_to, "spill_threshold": args.spill_threshold,
                 **tls_settings(args)}
    if options:
        overrides["spill_options"] = options
    try:
        config = load_config(**overrides)
        tls = tls_from_config(config)
    except ValueError as exc:
        print(f"graphstore worker: {exc}", file=sys.stderr)
        return 2
    log_file = setup_logging(args.log_level, config.log_format,
                             log_file_for(args, "worker"))
    num_cpus = args.num_cpus if args.num_cpus is not None else (os.cpu_count() or 1)
    resources = dict(args.resource)
    if "GPU" not in resources:
        from graphstore.core.node import detect_gpus
        gpus = args.num_gpus if args.num_gpus is not None else detect_gpus()
        if gpus < 0 or gpus != int(gpus):
            print(f"graphstore worker: --num-gpus must be a whole number, got {gpus:g}",
                  file=sys.stderr)
            return 2
        if gpus:
            resources["GPU"] = float(gpus)
    loop = new_event_loop()
    asyncio.set_event_loop(loop)
    # ``graphstore stop`` finds workers started by hand (not a local cluster's).
    record = None if args.session else write_record(
        "worker", scheduler=args.address, log_file=str(log_file) if log_file else None)
    try:
        # A signal cancels the worker: its cleanup (task processes stopped, its
        # shared-memory files unlinked) runs on the way out.
        run_until_signalled(loop, serve(config, token, args.address, num_cpus, resources,
                                        args.node_id, args.watch_stdin, host=args.host,
                                        port=args.port,
                                        store_capacity=args.object_store_memory,
                                        tls=tls, labels=dict(args.label)))
    except Exception as exc:
        logging.getLogger("graphstore.worker").error("worker failed: %s", exc)
        return 1
    finally:
        remove_record(record)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="graphstore worker",
                                     description="run a graphstore worker that joins a "
                                                 "scheduler")
    add_arguments(parser)
    return run(parser.parse_args(argv))
