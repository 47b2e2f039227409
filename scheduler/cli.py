"""The scheduler's command line: ``graphstore scheduler`` and ``python -m
graphstore.scheduler`` (which a local cluster runs) both parse and start it here."""
from __future__ import annotations

import argparse
import asyncio
import socket
import sys

from graphstore.core.cli_options import (add_process_options, add_tls_options,
                                         log_file_for, tls_settings)
from graphstore.core.config import load_config
from graphstore.core.lifecycle import new_event_loop, run_until_signalled, setup_logging
from graphstore.core.service_records import remove_record, write_record


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1",
                        help="interface to bind (default 127.0.0.1, loopback only)")
    parser.add_argument("--port", type=int, default=6380, help="port (0 picks a free one)")
    parser.add_argument("--token-file", default=None,
                        help="the cluster token file (default ~/.graphstore/token): its "
                             "token is used if it exists, else a new one is written there "
                             "(owner-only); GRAPHSTORE_TOKEN overrides both")
    parser.add_argument("--new-token", action="store_true",
                        help="make a new token even if the token file exists")
    parser.add_argument("--dashboard-port", type=int, default=None,
                        help="port of the status page (default 8265; 0 disables it)")
    parser.add_argument("--dashboard-host", default=None,
                        help="interface of the status page (default 127.0.0.1)")
    parser.add_argument("--listen-fd", type=int, default=None, help=argparse.SUPPRESS)
    add_tls_options(parser)
    add_process_options(parser)


def run(args: argparse.Namespace) -> int:
    """Run a scheduler until a signal stops it; the process's exit code."""
    from graphstore.core.tls import tls_from_config
    from graphstore.core.token import scheduler_token
    from graphstore.scheduler.server import serve
    try:
        config = load_config(dashboard_port=args.dashboard_port,
                             dashboard_host=args.dashboard_host, **tls_settings(args))
        tls = tls_from_config(config)
    except ValueError as exc:
        print(f"graphstore scheduler: {exc}", file=sys.stderr)
        return 2
    log_file = setup_logging(args.log_level, config.log_format,
                             log_file_for(args, "scheduler"))
    try:
        token, path, made = scheduler_token(args.token_file, args.new_token)
    except (OSError, ValueError) as exc:
        print(f"graphstore scheduler: {exc}", file=sys.stderr)
        return 2
    if made:
        print(f"cluster token written to {path} (mode 0600); give it to workers and "
              f"drivers as GRAPHSTORE_TOKEN or the same file", flush=True)
    elif path is not None:
        print(f"cluster token read from {path}", flush=True)
    sock = None
    if args.listen_fd is not None:
        sock = socket.socket(fileno=args.listen_fd)
        sock.setblocking(False)
    loop = new_event_loop()
    asyncio.set_event_loop(loop)
    # ``graphstore stop`` finds schedulers started by hand (not a local cluster's).
    record = None if args.session else write_record(
        "scheduler", port=args.port, log_file=str(log_file) if log_file else None)
    try:
        # A signal cancels the scheduler: its cleanup (the status page) runs on the way out.
        run_until_signalled(loop, serve(config, token.encode(), args.host, args.port, sock,
                                        args.watch_stdin, tls=tls))
    except OSError as exc:
        print(f"graphstore scheduler: cannot listen on {args.host}:{args.port}: {exc}",
              file=sys.stderr)
        return 1
    finally:
        remove_record(record)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="graphstore scheduler",
                                     description="run a graphstore scheduler")
    add_arguments(parser)
    return run(parser.parse_args(argv))
