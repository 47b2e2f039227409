"""The ``graphstore`` command: ``scheduler`` and ``worker`` run a cluster by hand (their
options and start-up live with each service, in its ``cli`` module) and ``stop`` ends
it; ``up`` and ``down`` start and stop one on several machines over SSH; ``memory``,
``status``, ``graph``, ``timeline``, ``list`` and ``logs`` inspect a running one; ``job``
submits programs to it (``job_cli.py``); ``config`` shows the settings this host's
processes would use.

This is the one module above both the services and the client API: an entry point may
import anything, and nothing imports it."""
from __future__ import annotations

import argparse
import sys

from graphstore import job_cli
from graphstore.core.cli_options import add_tls_options, tls_settings
from graphstore.scheduler import cli as scheduler_cli
from graphstore.worker import cli as worker_cli


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="graphstore",
                                     description="graphstore cluster processes")
    sub = parser.add_subparsers(dest="command", required=True)

    scheduler_cli.add_arguments(sub.add_parser("scheduler", help="run a scheduler"))
    worker_cli.add_arguments(sub.add_parser("worker",
                                            help="run a worker that joins a scheduler"))

    memory = sub.add_parser("memory", help="objects, references and store use")
    memory.add_argument("--address", default=None,
                        help="scheduler address (default: GRAPHSTORE_ADDRESS, else the "
                             "newest local cluster on this machine)")
    memory.add_argument("--json", action="store_true", help="print JSON")
    add_tls_options(memory)

    status = sub.add_parser("status", help="workers, resources, tasks by state and store "
                                           "use (like `ray status`)")
    status.add_argument("address", nargs="?", default=None,
                        help="scheduler address (default: GRAPHSTORE_ADDRESS, else the "
                             "newest local cluster on this machine)")
    status.add_argument("--json", action="store_true", help="print JSON")
    add_tls_options(status)

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
    add_tls_options(graph)

    listing = sub.add_parser("list", help="tasks, actors, objects or workers, filtered by "
                                          "the scheduler (like `ray list`)")
    listing.add_argument("kind", choices=["tasks", "actors", "objects", "workers"],
                         help="what to list")
    listing.add_argument("--state", default=None,
                         help="only those in this state (a wrong one lists the valid ones)")
    listing.add_argument("--name", default=None,
                         help="only those of this name: a task's function, an actor's "
                              "class or name, the task that made an object, a worker's "
                              "host")
    listing.add_argument("--limit", type=int, default=100,
                         help="the most rows, newest first (100)")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.add_argument("--address", default=None, help=_ADDRESS_HELP)
    add_tls_options(listing)

    logs = sub.add_parser("logs", help="a worker's or the scheduler's log, fetched through "
                                       "the scheduler (like `ray logs`)")
    logs.add_argument("worker", nargs="?", default=None,
                      help="a worker id (or its first characters), its pid, or "
                           "'scheduler'; none lists every process's log file")
    logs.add_argument("--tail", type=int, default=1000,
                      help="print the last N lines (1000)")
    logs.add_argument("-f", "--follow", action="store_true",
                      help="keep printing new lines until Ctrl-C")
    logs.add_argument("--address", default=None, help=_ADDRESS_HELP)
    add_tls_options(logs)

    stop = sub.add_parser("stop", help="stop the schedulers and workers started with "
                                       "`graphstore scheduler`/`worker` on this host")
    stop.add_argument("--grace", type=float, default=10.0,
                      help="seconds to wait after SIGTERM before SIGKILL (10)")
    stop.add_argument("--pid", type=int, action="append", default=None,
                      help="stop only the service with this pid (repeatable); "
                           "`graphstore down` stops what `up` recorded this way")
    up = sub.add_parser("up", help="start a cluster over SSH from a hosts file: the "
                                   "scheduler on its first host, a worker on each other")
    up.add_argument("hosts_file", metavar="HOSTS_FILE",
                    help="YAML: hosts, connect_options, scheduler_options, "
                         "worker_options, ... (docs/deployment.md, examples/hosts.yaml)")
    down = sub.add_parser("down", help="stop what `graphstore up HOSTS_FILE` started, on "
                                       "every host of the file")
    down.add_argument("hosts_file", metavar="HOSTS_FILE", help="the file given to `up`")
    down.add_argument("--grace", type=float, default=10.0,
                      help="seconds to wait after SIGTERM before SIGKILL (10)")
    config = sub.add_parser("config", help="every effective setting, its value and where "
                                           "it came from (default, file, environment)")
    config.add_argument("--json", action="store_true", help="print JSON")
    timeline = sub.add_parser("timeline", help="write the cluster's recent work as a "
                                               "Chrome trace (open it in Perfetto)")
    timeline.add_argument("-o", "--out", default="timeline.json",
                          help="file to write (timeline.json)")
    timeline.add_argument("--address", default=None,
                          help="scheduler address (default: GRAPHSTORE_ADDRESS, else the "
                               "newest local cluster on this machine)")
    add_tls_options(timeline)
    job_cli.add_arguments(sub.add_parser(
        "job", help="submit a program to the cluster as a job, and follow, stop or list "
                    "jobs (like `ray job`)"))
    return parser


_ADDRESS_HELP = ("scheduler address (default: GRAPHSTORE_ADDRESS, else the newest local "
                 "cluster on this machine)")
#: Seconds between two reads of a followed log.
FOLLOW_INTERVAL = 0.5


def run_config(args) -> int:
    """Print the settings a process started here would use; 2 if they are invalid."""
    import json
    from graphstore.core.config import resolve_settings
    from graphstore.core.config_file import config_files
    from graphstore.core.config_report import format_settings, settings_report
    from graphstore.exceptions import ConfigError
    try:
        settings = resolve_settings()
    except ConfigError as exc:
        print(f"graphstore config: {exc}", file=sys.stderr)
        return 2
    report = settings_report(settings, config_files())
    print(json.dumps(report, indent=2) if args.json else format_settings(report))
    return 0


def _connect_for_tools(address: str | None, args) -> None:
    """Join a cluster as a short-lived client for an inspection command."""
    import graphstore
    from graphstore.local_cluster import resolve_cluster
    tls = {k: v for k, v in tls_settings(args).items() if v is not None}
    address, token, tls = resolve_cluster(address, tls)
    if address is None:
        raise SystemExit("graphstore: no cluster found: pass --address tcp://HOST:PORT "
                         "or set GRAPHSTORE_ADDRESS")
    try:
        graphstore.init(address=address, token=token, log_to_driver=False, **tls)
    except (graphstore.exceptions.AuthenticationError,
            graphstore.exceptions.TLSConfigError,
            graphstore.exceptions.ConfigError,
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


def _print_error(command: str, reply: dict) -> None:
    error = reply["error"]
    print(f"graphstore {command}: {error['text']}", file=sys.stderr)
    if error.get("choices"):
        print("choices:\n  " + "\n  ".join(error["choices"]), file=sys.stderr)


def run_list(args) -> int:
    import json
    import graphstore
    from graphstore import session
    from graphstore.core import protocol as msg
    from graphstore.state_tables import format_listing
    if args.limit < 1:
        print("graphstore list: --limit must be at least 1", file=sys.stderr)
        return 2
    _connect_for_tools(args.address, args)
    try:
        reply = session.get_runtime().request(
            msg.ListState(args.kind, args.state, args.name, args.limit))
    finally:
        graphstore.shutdown()
    if "error" in reply:
        _print_error("list", reply)
        return 2
    print(json.dumps(reply["rows"], indent=2) if args.json else format_listing(reply))
    return 0


def run_logs(args) -> int:
    import time
    import graphstore
    from graphstore import session
    from graphstore.core import protocol as msg
    from graphstore.state_tables import format_table
    if args.tail < 1:
        print("graphstore logs: --tail must be at least 1", file=sys.stderr)
        return 2
    if args.follow and args.worker is None:
        print("graphstore logs: --follow needs a WORKER (or 'scheduler') to follow",
              file=sys.stderr)
        return 2
    _connect_for_tools(args.address, args)
    runtime = session.get_runtime()
    try:
        if args.worker is None:
            reply = runtime.request(msg.FetchLog("", 0, 0))
            rows = [[e["kind"], e["id"][:12], str(e["pid"]), e["hostname"] or "-",
                     e["log_file"] or "(none)"] for e in reply["logs"]]
            print(format_table(["KIND", "ID", "PID", "HOST", "LOG_FILE"], rows))
            print("\nshow one with: graphstore logs scheduler | graphstore logs WORKER_ID "
                  "(or its pid) [--tail N] [--follow]")
            return 0
        reply = runtime.request(msg.FetchLog(args.worker, 0, args.tail))
        if "error" in reply:
            _print_error("logs", reply)
            return 2
        source = reply["source"]
        label = " ".join(filter(None, (source["kind"], source.get("id", "")[:12])))
        print(f"==> {label} pid {source['pid']} on {source['hostname']}: {reply['path']} "
              f"<==", file=sys.stderr, flush=True)
        sys.stdout.write(reply["data"])
        sys.stdout.flush()
        offset = reply["end"]
        while args.follow:
            time.sleep(FOLLOW_INTERVAL)
            reply = runtime.request(msg.FetchLog(args.worker, offset, 0))
            if "error" in reply:          # the worker left
                _print_error("logs", reply)
                return 1
            sys.stdout.write(reply["data"])
            sys.stdout.flush()
            offset = reply["end"]
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        graphstore.shutdown()


def run_stop(args) -> int:
    from graphstore.core import shm
    from graphstore.core.service_records import stop_services
    if args.grace < 0:
        print("graphstore stop: --grace must be at least 0", file=sys.stderr)
        return 2
    pids = set(args.pid) if args.pid else None
    stopped = stop_services(args.grace, pids)
    if not stopped:
        which = f" with pid {', '.join(map(str, sorted(pids)))}" if pids else ""
        print(f"no graphstore scheduler or worker{which} started from the CLI by this "
              f"user is running on this host")
        return 0
    for record in stopped:
        how = "stopped" if record["how"] == "terminated" else \
            "killed (it did not stop within --grace)"
        print(f"{how} {record['role']} pid {record['pid']}")
    # Shared memory of a killed worker (a stopped one removed its own): with --pid, only
    # that of the clusters of the workers stopped.
    if pids is None:
        shm.sweep()
    else:
        from graphstore.worker.server import cluster_id_for
        for scheduler in {r["scheduler"] for r in stopped if r.get("scheduler")}:
            shm.sweep(cluster_id_for(scheduler))
    return 0


def run_up(args) -> int:
    """Start the hosts file's cluster, detached; print how to reach it."""
    from graphstore.deploy.hosts_file import load_hosts_file
    from graphstore.deploy.ssh import SSHCluster, SSHError
    try:
        hosts = load_hosts_file(args.hosts_file)
        spec = hosts.spec
        print(f"starting cluster {spec.name!r}: the scheduler on "
              f"{spec.scheduler.destination}, {len(spec.workers)} workers ...", flush=True)
        cluster = SSHCluster(**hosts.arguments, token_file=hosts.token_file, detach=True)
    except ValueError as exc:
        print(f"graphstore up: {exc}", file=sys.stderr)
        return 2
    except SSHError as exc:
        print(f"graphstore up: {exc}", file=sys.stderr)
        return 1
    print(f"cluster {spec.name!r} is up:")
    for process in cluster.processes:
        print(f"  {process.role:<10} {process.address:<26} on {process.host} "
              f"(pid {process.pid})")
    link = cluster.dashboard_link
    if link:
        scheduler = spec.scheduler
        if "//127.0.0.1:" in link or "//localhost:" in link:
            port = link.rsplit(":", 1)[1].split("/")[0]
            login = "".join(f" {flag} {value}" for flag, value in (
                ("-l", scheduler.connect.user), ("-p", scheduler.connect.port)) if value)
            print(f"status page: {link} on {scheduler.destination}; from here: "
                  f"ssh{login} -N -L {port}:127.0.0.1:{port} {scheduler.destination}, "
                  f"then open http://127.0.0.1:{port}")
        else:
            print(f"status page: {link}")
    print(f"token: {hosts.token_file} (mode 0600)")
    print("connect with:")
    print(f"  export GRAPHSTORE_ADDRESS={cluster.address} "
          f"GRAPHSTORE_TOKEN_FILE={hosts.token_file}")
    print("  graphstore status        # or, in Python: graphstore.init(address=\"auto\")")
    print(f"stop it with: graphstore down {args.hosts_file}")
    return 0


def run_down(args) -> int:
    """Stop what ``up`` started on each host of the file; 1 if a host could not be
    reached (run it again once it can)."""
    from graphstore.deploy.hosts_file import load_hosts_file
    from graphstore.deploy.ssh import stop_cluster
    if args.grace < 0:
        print("graphstore down: --grace must be at least 0", file=sys.stderr)
        return 2
    try:
        hosts = load_hosts_file(args.hosts_file)
    except ValueError as exc:
        print(f"graphstore down: {exc}", file=sys.stderr)
        return 2
    failed = 0
    for result in stop_cluster(hosts.spec, args.grace):
        print(f"{result.role} on {result.host}: " + result.output.replace("\n", "; "))
        failed += not result.ok
    try:
        hosts.token_file.unlink()
    except FileNotFoundError:
        pass
    if failed:
        print(f"graphstore down: {failed} hosts could not be stopped; run it again when "
              f"they can be reached", file=sys.stderr)
        return 1
    return 0


def run_timeline(args) -> int:
    import graphstore
    from graphstore.tracing import write_trace
    _connect_for_tools(args.address, args)
    try:
        trace = graphstore.timeline()
    finally:
        graphstore.shutdown()
    try:
        path = write_trace(trace, args.out)
    except OSError as exc:
        print(f"graphstore timeline: cannot write {args.out}: {exc}", file=sys.stderr)
        return 1
    spans = sum(1 for event in trace if event["ph"] == "X")
    rows = sum(1 for event in trace if event["name"] == "process_name")
    print(f"wrote {path}: {spans} spans from {rows} workers; open it in "
          f"https://ui.perfetto.dev or chrome://tracing")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "list":
        return run_list(args)
    if args.command == "logs":
        return run_logs(args)
    if args.command == "stop":
        return run_stop(args)
    if args.command == "memory":
        return run_memory(args)
    if args.command == "status":
        return run_status(args)
    if args.command == "graph":
        return run_graph(args)
    if args.command == "config":
        return run_config(args)
    if args.command == "timeline":
        return run_timeline(args)
    if args.command == "up":
        return run_up(args)
    if args.command == "down":
        return run_down(args)
    if args.command == "job":
        return job_cli.run(args)
    if args.command == "scheduler":
        return scheduler_cli.run(args)
    if args.command == "worker":
        return worker_cli.run(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
