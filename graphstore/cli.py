"""The ``graphstore`` command: ``scheduler`` and ``worker`` run a cluster by hand;
``memory``, ``status`` and ``graph`` inspect a running one."""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import sys

from graphstore.core.config import load_config
from graphstore.core.lifecycle import new_event_loop, setup_logging, stop_on_signals


def _parse_resource(text: str) -> tuple[str, float]:
    name, sep, amount = text.partition("=")
    try:
        if not sep or not name:
            raise ValueError
        return name, float(amount)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected NAME=AMOUNT, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="graphstore",
                                     description="graphstore cluster processes")
    sub = parser.add_subparsers(dest="command", required=True)

    sched = sub.add_parser("scheduler", help="run a scheduler")
    sched.add_argument("--host", default="127.0.0.1",
                       help="interface to bind (default 127.0.0.1, loopback only)")
    sched.add_argument("--port", type=int, default=6380, help="port (0 picks a free one)")
    sched.add_argument("--token-file", default=None,
                       help="the cluster token file (default ~/.graphstore/token): its "
                            "token is used if it exists, else a new one is written there "
                            "(owner-only); GRAPHSTORE_TOKEN overrides both")
    sched.add_argument("--new-token", action="store_true",
                       help="make a new token even if the token file exists")
    sched.add_argument("--dashboard-port", type=int, default=None,
                       help="port of the status page (default 8265; 0 disables it)")
    sched.add_argument("--dashboard-host", default=None,
                       help="interface of the status page (default 127.0.0.1)")
    sched.add_argument("--listen-fd", type=int, default=None, help=argparse.SUPPRESS)
    _tls_options(sched)
    _common(sched)

    worker = sub.add_parser("worker", help="run a worker that joins a scheduler")
    worker.add_argument("address", help="scheduler address, tcp://HOST:PORT")
    worker.add_argument("--num-cpus", type=float, default=None,
                        help="CPU slots this worker offers (default: all CPUs)")
    worker.add_argument("--resource", action="append", type=_parse_resource, default=[],
                        metavar="NAME=AMOUNT", help="a custom resource (repeatable)")
    worker.add_argument("--object-store-memory", type=int, default=None,
                        help="bytes of shared memory for this worker's object store "
                             "(default: 30%% of memory shared by the host's workers)")
    worker.add_argument("--spill-to", default=None, metavar="URL",
                        help="where the store spills: a directory or file:// / s3:// URL")
    worker.add_argument("--spill-option", action="append", default=[],
                        metavar="KEY=VALUE", help="an fsspec/s3fs storage option "
                        "(repeatable), e.g. endpoint_url=http://127.0.0.1:9000")
    worker.add_argument("--spill-threshold", type=float, default=None,
                        help="fraction of the store above which objects spill (0.8)")
    worker.add_argument("--host", default="127.0.0.1",
                        help="interface for the worker's peer server (object transfers; "
                             "default 127.0.0.1: give a reachable address, or 0.0.0.0, "
                             "when other hosts are in the cluster)")
    worker.add_argument("--port", type=int, default=0,
                        help="port of the peer server (default 0: any free port; fix it "
                             "to open it in a firewall)")
    worker.add_argument("--node-id", default=None,
                        help="host identity (default: derived from this machine)")
    worker.add_argument("--token-file", default=None,
                        help="cluster token file (default: GRAPHSTORE_TOKEN or "
                             "~/.graphstore/token)")
    _tls_options(worker)
    _common(worker)

    memory = sub.add_parser("memory", help="objects, references and store use")
    memory.add_argument("--address", default=None,
                        help="scheduler address (default: GRAPHSTORE_ADDRESS, else the "
                             "newest local cluster on this machine)")
    memory.add_argument("--json", action="store_true", help="print JSON")
    _tls_options(memory)

    status = sub.add_parser("status", help="workers, resources, tasks by state and store "
                                           "use (like `ray status`)")
    status.add_argument("address", nargs="?", default=None,
                        help="scheduler address (default: GRAPHSTORE_ADDRESS, else the "
                             "newest local cluster on this machine)")
    status.add_argument("--json", action="store_true", help="print JSON")
    _tls_options(status)

    graph = sub.add_parser("graph", help="write the task graph to a file (.svg, .png, "
                                         ".dot, .json, .graphml)")
    graph.add_argument("--out", default="graph.svg",
                       help="file to write; its extension picks the format (graph.svg)")
    graph.add_argument("--format", default=None,
                       choices=["svg", "png", "dot", "json", "graphml"],
                       help="format, if not the extension's")
    graph.add_argument("--limit", type=int, default=1000,
                       help="the most recent tasks and objects to include (1000)")
    graph.add_argument("--address", default=None,
                       help="scheduler address (default: GRAPHSTORE_ADDRESS, else the "
                            "newest local cluster on this machine)")
    _tls_options(graph)
    return parser


def _tls_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "mutual TLS", "all three or none (default: GRAPHSTORE_TLS_CERT, GRAPHSTORE_TLS_KEY, "
        "GRAPHSTORE_TLS_CA); see docs/security.md")
    group.add_argument("--tls-cert", default=None, metavar="PEM",
                       help="this process's certificate, signed by the cluster CA")
    group.add_argument("--tls-key", default=None, metavar="PEM",
                       help="its private key (unencrypted; keep it mode 0600)")
    group.add_argument("--tls-ca", default=None, metavar="PEM",
                       help="the cluster CA's certificate: peers must present a "
                            "certificate it signed")
    group.add_argument("--tls-check-hostname", action="store_true", default=None,
                       help="also require a server's certificate to name its host")


def _tls_settings(args) -> dict:
    """The TLS options given on the command line (the environment fills the rest)."""
    return {"tls_cert": args.tls_cert, "tls_key": args.tls_key, "tls_ca": args.tls_ca,
            "tls_check_hostname": args.tls_check_hostname}


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--log-level", default=os.environ.get("GRAPHSTORE_LOG_LEVEL", "INFO"))
    parser.add_argument("--watch-stdin", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--session", default=None, help=argparse.SUPPRESS)


def run_scheduler(args) -> int:
    from graphstore.scheduler.server import serve
    from graphstore.core.tls import tls_from_config
    from graphstore.core.token import scheduler_token
    setup_logging(args.log_level)
    try:
        config = load_config(dashboard_port=args.dashboard_port,
                             dashboard_host=args.dashboard_host, **_tls_settings(args))
        tls = tls_from_config(config)
    except ValueError as exc:
        print(f"graphstore scheduler: {exc}", file=sys.stderr)
        return 2
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
    stop_on_signals(lambda: loop.stop())
    try:
        loop.run_until_complete(serve(config, token.encode(), args.host, args.port, sock,
                                      args.watch_stdin, tls=tls))
    except OSError as exc:
        print(f"graphstore scheduler: cannot listen on {args.host}:{args.port}: {exc}",
              file=sys.stderr)
        return 1
    except RuntimeError:
        pass  # stopped by a signal
    return 0


def run_worker(args) -> int:
    from graphstore.core.comm import parse_address
    from graphstore.core.tls import tls_from_config
    from graphstore.core.token import load_token
    from graphstore.worker.server import serve
    setup_logging(args.log_level)
    try:
        parse_address(args.address)
        token = load_token(path=args.token_file)
    except (ValueError, FileNotFoundError) as exc:
        print(f"graphstore worker: {exc}", file=sys.stderr)
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
                 **_tls_settings(args)}
    if options:
        overrides["spill_options"] = options
    try:
        config = load_config(**overrides)
        tls = tls_from_config(config)
    except ValueError as exc:
        print(f"graphstore worker: {exc}", file=sys.stderr)
        return 2
    num_cpus = args.num_cpus if args.num_cpus is not None else (os.cpu_count() or 1)
    loop = new_event_loop()
    asyncio.set_event_loop(loop)
    stop_on_signals(lambda: loop.stop())
    try:
        loop.run_until_complete(serve(config, token, args.address, num_cpus,
                                      dict(args.resource), args.node_id, args.watch_stdin,
                                      host=args.host, port=args.port,
                                      store_capacity=args.object_store_memory, tls=tls))
    except RuntimeError:
        pass  # stopped by a signal
    except Exception as exc:
        logging.getLogger("graphstore.worker").error("worker failed: %s", exc)
        return 1
    return 0


def _connect_for_tools(address: str | None, args) -> None:
    """Join a cluster as a short-lived client for an inspection command."""
    import graphstore
    from graphstore.local_cluster import find_current_cluster
    token = None
    tls = {k: v for k, v in _tls_settings(args).items() if v is not None}
    address = address or os.environ.get("GRAPHSTORE_ADDRESS")
    if address is None:
        current = find_current_cluster()
        if current is None:
            raise SystemExit("graphstore: no cluster found: pass --address tcp://HOST:PORT "
                             "or set GRAPHSTORE_ADDRESS")
        address, token = current["address"], current["token"]
        if not tls and current.get("tls"):
            tls = current["tls"]          # a local cluster started with TLS
    try:
        graphstore.init(address=address, token=token, log_to_driver=False, **tls)
    except (graphstore.exceptions.AuthenticationError,
            graphstore.exceptions.TLSConfigError,
            graphstore.exceptions.ConnectionLostError) as exc:
        raise SystemExit(f"graphstore: {exc}") from None


def run_memory(args) -> int:
    import json
    import graphstore
    from graphstore.cluster_report import format_memory_summary
    _connect_for_tools(args.address, args)
    try:
        summary = graphstore.memory_summary()
    finally:
        graphstore.shutdown()
    print(json.dumps(summary, indent=2) if args.json else format_memory_summary(summary))
    return 0


def run_status(args) -> int:
    import json
    import graphstore
    from graphstore import session
    from graphstore.core import protocol as msg
    from graphstore.cluster_report import format_cluster_status
    _connect_for_tools(args.address, args)
    try:
        report = session.get_runtime().request(msg.GetClusterOverview())
    finally:
        graphstore.shutdown()
    print(json.dumps(report, indent=2) if args.json else format_cluster_status(report))
    return 0


def run_graph(args) -> int:
    import graphstore
    from graphstore.api import graph_data
    from graphstore.exceptions import GraphvizNotFoundError
    from graphstore.core.graph_export import (find_dot, format_for, graphviz_missing_message,
                                         write_graph)
    try:
        fmt = format_for(args.out, args.format)
    except ValueError as exc:
        print(f"graphstore graph: {exc}", file=sys.stderr)
        return 2
    if args.limit < 1:
        print("graphstore graph: --limit must be at least 1", file=sys.stderr)
        return 2
    if fmt in ("svg", "png") and find_dot() is None:
        print(f"graphstore graph: {graphviz_missing_message(fmt)}", file=sys.stderr)
        return 1
    _connect_for_tools(args.address, args)
    try:
        data = graph_data(None, args.limit)
    finally:
        graphstore.shutdown()
    try:
        path = write_graph(data, args.out, fmt)
    except (GraphvizNotFoundError, TimeoutError, RuntimeError, OSError) as exc:
        print(f"graphstore graph: {exc}", file=sys.stderr)
        return 1
    tasks = sum(1 for node in data["nodes"] if node["type"] == "task")
    note = " (truncated: raise --limit for more)" if data["graph"]["truncated"] else ""
    print(f"wrote {path}: {tasks} tasks, {len(data['nodes']) - tasks} objects, "
          f"{len(data['edges'])} edges{note}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "memory":
        return run_memory(args)
    if args.command == "status":
        return run_status(args)
    if args.command == "graph":
        return run_graph(args)
    if args.command == "scheduler":
        return run_scheduler(args)
    if args.command == "worker":
        return run_worker(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
