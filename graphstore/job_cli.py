"""``graphstore job submit|status|logs|stop|list|delete``: Ray's ``ray job`` commands,
on ``JobSubmissionClient``.

``submit`` without ``--no-wait`` follows the job's log until it ends and exits 0 if it
SUCCEEDED, 1 otherwise; Ctrl-C leaves the job running (it belongs to the cluster) and
says how to follow or stop it. A refused request (an unknown id, a duplicate one)
prints the scheduler's reason and exits 2.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

from graphstore.core.cli_options import add_tls_options, tls_settings

_ADDRESS_HELP = ("scheduler address tcp://HOST:PORT, or its status page's http://HOST:PORT "
                 "as with `ray job submit` (default: GRAPHSTORE_ADDRESS, else the newest "
                 "local cluster on this machine)")
#: Seconds between status checks while ``stop`` waits for a job to end.
_STOP_POLL = 0.1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="job_command", required=True)

    def common(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--address", default=None, help=_ADDRESS_HELP)
        add_tls_options(p)
        return p

    submit = common(sub.add_parser(
        "submit", help="run a command on the cluster as a job; follow its log until it "
                       "ends (like `ray job submit`)"))
    submit.add_argument("--working-dir", default=None, metavar="DIR",
                        help="a local directory uploaded as the job's working directory "
                             "(content-addressed: a directory the cluster has already is "
                             "not sent again)")
    submit.add_argument("--runtime-env", default=None, metavar="FILE",
                        help="the job's runtime_env from a YAML (or JSON) file; "
                             "--runtime-env-json and --working-dir override its keys")
    submit.add_argument("--runtime-env-json", default=None, metavar="JSON",
                        help="the job's runtime_env as JSON, e.g. "
                             "'{\"env_vars\": {\"A\": \"1\"}}'")
    submit.add_argument("--metadata-json", default=None, metavar="JSON",
                        help="strings to keep with the job, as a JSON object")
    submit.add_argument("--submission-id", default=None,
                        help="the job's id (default: gssubmit_ and 16 random characters)")
    submit.add_argument("--entrypoint-num-cpus", type=float, default=None, metavar="N",
                        help="CPUs the entrypoint holds on the cluster while it runs (0)")
    submit.add_argument("--no-wait", action="store_true",
                        help="return once the job is submitted, without following its log")
    submit.add_argument("entrypoint", nargs=argparse.REMAINDER,
                        help="the command, after `--`: graphstore job submit -- python "
                             "script.py")

    status = common(sub.add_parser("status", help="a job's status and its message"))
    status.add_argument("submission_id")
    status.add_argument("--json", action="store_true", help="print JSON")

    logs = common(sub.add_parser("logs", help="what a job printed (stdout and stderr)"))
    logs.add_argument("submission_id")
    logs.add_argument("-f", "--follow", action="store_true",
                      help="keep printing new output until the job ends")

    stop = common(sub.add_parser("stop", help="stop a job: SIGTERM, then SIGKILL after "
                                              "3 s; waits until it has stopped"))
    stop.add_argument("submission_id")
    stop.add_argument("--no-wait", action="store_true",
                      help="return once the stop is asked for")

    listing = common(sub.add_parser("list", help="every job the cluster knows"))
    listing.add_argument("--json", action="store_true", help="print JSON")

    delete = common(sub.add_parser("delete", help="forget an ended job (its log file "
                                                  "stays)"))
    delete.add_argument("submission_id")


def _client(args):
    from graphstore.exceptions import GraphstoreError
    from graphstore.job_submission import JobSubmissionClient
    tls = {k: v for k, v in tls_settings(args).items() if v is not None}
    try:
        return JobSubmissionClient(args.address, tls=tls or None)
    except (ValueError, FileNotFoundError, GraphstoreError) as exc:
        raise SystemExit(f"graphstore job {args.job_command}: {exc}") from None


def _refused(args, exc: Exception) -> int:
    print(f"graphstore job {args.job_command}: {exc}", file=sys.stderr)
    return 2


def _json_arg(args, name: str, text: str | None) -> dict | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise SystemExit(f"graphstore job submit: {name} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise SystemExit(f"graphstore job submit: {name} must be a JSON object")
    return value


def _runtime_env_file(path: str) -> dict:
    """``--runtime-env FILE``: a YAML mapping (JSON is YAML too), as Ray reads it."""
    import yaml
    try:
        with open(path) as f:
            value = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as exc:
        raise SystemExit(f"graphstore job submit: cannot read --runtime-env {path}: "
                         f"{exc}") from None
    if not isinstance(value, dict):
        raise SystemExit(f"graphstore job submit: --runtime-env {path} must hold a "
                         f"mapping such as 'env_vars: {{A: \"1\"}}'")
    return value


def run(args) -> int:
    command = {"submit": run_submit, "status": run_status, "logs": run_logs,
               "stop": run_stop, "list": run_list, "delete": run_delete}[args.job_command]
    return command(args)


def run_submit(args) -> int:
    entrypoint = list(args.entrypoint)
    if entrypoint and entrypoint[0] == "--":
        entrypoint = entrypoint[1:]
    if not entrypoint or not " ".join(entrypoint).strip():
        print("graphstore job submit: no entrypoint: give the command after `--`, e.g. "
              "graphstore job submit -- python script.py", file=sys.stderr)
        return 2
    runtime_env = _runtime_env_file(args.runtime_env) if args.runtime_env else {}
    runtime_env.update(_json_arg(args, "--runtime-env-json", args.runtime_env_json) or {})
    metadata = _json_arg(args, "--metadata-json", args.metadata_json)
    if args.working_dir is not None:
        runtime_env["working_dir"] = args.working_dir
    client = _client(args)
    try:
        try:
            sid = client.submit_job(entrypoint=" ".join(entrypoint),
                                    runtime_env=runtime_env or None, metadata=metadata,
                                    submission_id=args.submission_id,
                                    entrypoint_num_cpus=args.entrypoint_num_cpus)
        except (RuntimeError, ValueError, TypeError, NotImplementedError) as exc:
            return _refused(args, exc)
        print(f"Job '{sid}' submitted successfully", file=sys.stderr, flush=True)
        if args.no_wait:
            print(f"Follow its logs: graphstore job logs {sid} --follow\n"
                  f"Its status: graphstore job status {sid}\n"
                  f"Stop it: graphstore job stop {sid}", file=sys.stderr)
            return 0
        print(f"Following its logs until it ends (Ctrl-C leaves it running)",
              file=sys.stderr, flush=True)
        try:
            _print_chunks(client.follow_job_logs(sid))
            info = client.get_job_info(sid)
        except KeyboardInterrupt:
            print(f"\nJob '{sid}' keeps running on the cluster.\n"
                  f"Follow it: graphstore job logs {sid} --follow\n"
                  f"Stop it: graphstore job stop {sid}", file=sys.stderr)
            return 130
        print(f"Job '{sid}' {info.status.value.lower()}: {info.message}", file=sys.stderr)
        return 0 if info.status.value == "SUCCEEDED" else 1
    finally:
        client.close()


def _print_chunks(chunks) -> None:
    for chunk in chunks:
        sys.stdout.write(chunk)
        sys.stdout.flush()


def run_status(args) -> int:
    client = _client(args)
    try:
        info = client.get_job_info(args.submission_id)
    except RuntimeError as exc:
        return _refused(args, exc)
    finally:
        client.close()
    if args.json:
        print(json.dumps(_info_dict(info), indent=2))
    else:
        print(f"Status for job '{args.submission_id}': {info.status.value}")
        print(f"Status message: {info.message}")
    return 0


def run_logs(args) -> int:
    client = _client(args)
    try:
        if args.follow:
            _print_chunks(client.follow_job_logs(args.submission_id))
        else:
            sys.stdout.write(client.get_job_logs(args.submission_id))
            sys.stdout.flush()
        return 0
    except RuntimeError as exc:
        return _refused(args, exc)
    except KeyboardInterrupt:
        return 130
    finally:
        client.close()


def run_stop(args) -> int:
    client = _client(args)
    try:
        running = client.stop_job(args.submission_id)
        if not running:
            info = client.get_job_info(args.submission_id)
            print(f"Job '{args.submission_id}' had already ended: {info.status.value}")
            return 0
        print(f"Stopping job '{args.submission_id}' (SIGTERM, then SIGKILL after 3 s)",
              flush=True)
        if args.no_wait:
            return 0
        while True:
            info = client.get_job_info(args.submission_id)
            if info.status.is_terminal():
                print(f"Job '{args.submission_id}' {info.status.value.lower()}")
                return 0
            time.sleep(_STOP_POLL)
    except RuntimeError as exc:
        return _refused(args, exc)
    except KeyboardInterrupt:
        return 130
    finally:
        client.close()


def run_list(args) -> int:
    from graphstore.state_tables import format_table
    client = _client(args)
    try:
        jobs = client.list_jobs()
    finally:
        client.close()
    if args.json:
        print(json.dumps([_info_dict(info) for info in jobs], indent=2))
        return 0
    rows = [[info.submission_id or "-", info.status.value, _when(info.start_time),
             _when(info.end_time), info.entrypoint[:60]] for info in jobs]
    print(format_table(["SUBMISSION_ID", "STATUS", "STARTED", "ENDED", "ENTRYPOINT"], rows))
    return 0


def run_delete(args) -> int:
    client = _client(args)
    try:
        client.delete_job(args.submission_id)
    except RuntimeError as exc:
        return _refused(args, exc)
    finally:
        client.close()
    print(f"Job '{args.submission_id}' deleted")
    return 0


def _info_dict(info) -> dict:
    import dataclasses
    data = dataclasses.asdict(info)
    data["status"] = info.status.value
    return data


def _when(ms: int | None) -> str:
    if ms is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ms / 1000))
