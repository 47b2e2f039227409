"""The shell scripts an SSH cluster runs on its hosts, and what their output says.

Pure text: ``ssh_session`` sends a script as ``sh -c '<script>'``, so it works whatever
the user's login shell is, and no script carries a secret: the token reaches a worker on
the script's standard input and is written, by shell builtins, to a file only the user
can read. Processes are started through the ordinary ``graphstore scheduler`` and
``graphstore worker`` commands, whose service records ``graphstore stop --pid`` trusts
to stop them again.

Each process of a cluster has a directory on its host (``ClusterSpec.role_dir``) holding
``pid`` (what ``graphstore down`` stops), ``token``, ``out.log`` (the process's
stdout and stderr) and ``logs/`` (its log file). A start script prints structured lines
``gs-ssh <what> <value>`` and ends with ``gs-ssh end``; ``parse_start`` reads them back.
"""
from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from typing import Iterable

from graphstore.deploy.ssh_options import (ClusterSpec, HostSpec, scheduler_args,
                                           worker_args)

#: Every structured line of a script's output starts with this.
TAG = "gs-ssh"
#: The last line a start script prints; an attached process keeps running after it.
END = f"{TAG} end"
#: What ``graphstore scheduler`` and ``graphstore worker`` print once they are ready.
SCHEDULER_READY = "graphstore scheduler listening at "
STATUS_PAGE = "graphstore status page at "
WORKER_READY = "graphstore worker "
WORKER_JOINED = " joined "
#: Lines of a process's output a start script sends back (the tail of ``out.log``).
LOG_LINES = 30
#: Seconds between two looks at a starting process.
POLL_SECONDS = 0.1


def quote_argv(argv: Iterable[str]) -> str:
    return " ".join(shlex.quote(a) for a in argv)


def remote_command(script: str) -> str:
    """The command ``ssh`` sends: ``script`` run by ``sh``, whatever the login shell."""
    return "exec sh -c " + shlex.quote(script)


def _prelude(spec: ClusterSpec) -> list[str]:
    lines = ["set -e", "umask 077"]
    lines += [f"export {name}={shlex.quote(value)}" for name, value in spec.env.items()]
    return lines


def preflight_script(spec: ClusterSpec, host: HostSpec) -> str:
    """Checks that ``host``'s Python imports graphstore's command line; prints the
    installed version (``gs-ssh version X``)."""
    check = ("import importlib.metadata as m, graphstore.cli; "
             f"print({TAG!r}, 'version', m.version('graphstore'))")
    return "\n".join([*_prelude(spec), f"exec {quote_argv(host.python)} -c "
                                       f"{shlex.quote(check)}"])


def _refuse_if_running(spec: ClusterSpec, host: HostSpec) -> list[str]:
    """Lines that end the script, printing ``status running``, if the process recorded
    in ``host``'s directory still runs: a second ``up`` must not lose the first's pid."""
    d = shlex.quote(spec.role_dir(host))
    return [
        f"if [ -f {d}/pid ]; then",
        f"  old=$(cat {d}/pid 2>/dev/null || true)",
        '  case "$old" in ""|*[!0-9]*) ;; *)',
        '    case "$(cat /proc/$old/stat 2>/dev/null)" in ""|*") Z "*|*") X "*) ;; *)',
        f'      echo "{TAG} pid $old"; echo "{TAG} status running"; echo "{END}"; exit 0;;',
        "    esac;;",
        "  esac",
        "fi",
    ]


def _start_lines(spec: ClusterSpec, host: HostSpec, command: list[str], ready: str,
                 attached: bool) -> list[str]:
    """Start ``command`` in ``host``'s directory, record its pid, and wait until its
    output has a line starting with ``ready`` or it exits (or the timeout passes)."""
    d = shlex.quote(spec.role_dir(host))
    polls = max(1, int(spec.timeout / POLL_SECONDS))
    if attached:
        # Standard input stays the ssh channel (fd 3 carries it past the background
        # list's /dev/null): when the driver's side closes, the process sees EOF and
        # stops (--watch-stdin), also when the driver was killed.
        launch = f"{quote_argv(command)} --watch-stdin <&3 3<&- >\"$d/out.log\" 2>&1 &"
    else:
        # Detached: its own session, no terminal, nothing tied to this ssh connection.
        launch = f"nohup setsid {quote_argv(command)} </dev/null >\"$d/out.log\" 2>&1 &"
    return [
        f"d={d}",
        launch,
        "pid=$!",
        'echo "$pid" >"$d/pid"',
        f'echo "{TAG} pid $pid"',
        "i=0; status=timeout",
        f'while [ "$i" -lt {polls} ]; do',
        f'  if grep -q -e {shlex.quote("^" + ready)} "$d/out.log"; then status=ready; break; fi',
        # A zombie (exited, not yet reaped by this shell) counts as gone.
        '  case "$(cat /proc/$pid/stat 2>/dev/null)" in ""|*") Z "*|*") X "*) '
        "status=exited; break;; esac",
        f"  sleep {POLL_SECONDS}; i=$((i+1))",
        "done",
        f'echo "{TAG} status $status"',
    ]


def _tail_and_end(attached: bool) -> list[str]:
    lines = [f'echo "{TAG} log"', f'tail -n {LOG_LINES} "$d/out.log" || true',
             f'echo "{END}"']
    if attached:
        lines += ['[ "$status" = ready ] && wait "$pid" || true']
    return lines


def start_scheduler_script(spec: ClusterSpec, attached: bool) -> str:
    """Start ``graphstore scheduler`` on the first host with a new token in its
    directory; print its pid, address, status page and token, and the tail of its
    output."""
    host = spec.scheduler
    d = spec.role_dir(host)
    command = [*host.python, "-m", "graphstore.cli", "scheduler",
               "--token-file", f"{d}/token", "--new-token", "--log-dir", f"{d}/logs",
               *scheduler_args(host.options)]
    lines = [*_prelude(spec),
             # The token must be the one in the file this script reads back.
             "unset GRAPHSTORE_TOKEN GRAPHSTORE_TOKEN_FILE",
             *_refuse_if_running(spec, host),
             f"mkdir -p {shlex.quote(d)}/logs",
             f"rm -f {shlex.quote(d)}/pid {shlex.quote(d)}/out.log",
             *(["exec 3<&0"] if attached else []),
             *_start_lines(spec, host, command, SCHEDULER_READY, attached)]
    lines += [
        'if [ "$status" = ready ]; then',
        # The status page line follows the address at once, if there is a page.
        "  j=0",
        f'  while [ "$j" -lt 10 ] && ! grep -q -e {shlex.quote("^" + STATUS_PAGE)} '
        f'"$d/out.log"; do sleep {POLL_SECONDS}; j=$((j+1)); done',
        f'  echo "{TAG} address $(grep -m 1 -e {shlex.quote("^" + SCHEDULER_READY)} '
        f'"$d/out.log" | cut -c {len(SCHEDULER_READY) + 1}-)"',
        f'  echo "{TAG} dashboard $(grep -m 1 -e {shlex.quote("^" + STATUS_PAGE)} '
        f'"$d/out.log" | cut -c {len(STATUS_PAGE) + 1}-)"',
        f'  echo "{TAG} token $(cat "$d/token")"',
        "fi",
        *_tail_and_end(attached),
    ]
    return "\n".join(lines)


def start_worker_script(spec: ClusterSpec, host: HostSpec, address: str,
                        attached: bool) -> str:
    """Write the token read from standard input (its first line) to the worker's
    directory, start ``graphstore worker`` there and wait until it has joined."""
    d = spec.role_dir(host)
    command = [*host.python, "-m", "graphstore.cli", "worker", address,
               "--token-file", f"{d}/token", "--log-dir", f"{d}/logs",
               *worker_args(host.options)]
    lines = [*_prelude(spec),
             *_refuse_if_running(spec, host),
             f"mkdir -p {shlex.quote(d)}/logs",
             f"rm -f {shlex.quote(d)}/pid {shlex.quote(d)}/out.log {shlex.quote(d)}/token",
             # Builtins only: the token is on no command line.
             "IFS= read -r token",
             f'[ -n "$token" ] || {{ echo "{TAG} status no-token"; exit 3; }}',
             f"printf '%s\\n' \"$token\" >{shlex.quote(d)}/token",
             "unset token",
             *(["exec 3<&0"] if attached else []),
             *_start_lines(spec, host, command, WORKER_READY + "tcp", attached),
             f'if [ "$status" = ready ]; then echo "{TAG} worker $(grep -m 1 -e '
             f'{shlex.quote("^" + WORKER_READY + "tcp")} "$d/out.log" | '
             f'cut -d " " -f 3)"; fi',
             *_tail_and_end(attached)]
    return "\n".join(lines)


def stop_script(spec: ClusterSpec, host: HostSpec, grace: float) -> str:
    """Stop the process recorded in ``host``'s directory (SIGTERM, then SIGKILL after
    ``grace`` seconds) with ``graphstore stop --pid``, which stops only a live service
    whose record matches, and sweeps its shared memory; then forget the pid and the
    token. Nothing recorded: nothing to do."""
    d = shlex.quote(spec.role_dir(host))
    stop = [*host.python, "-m", "graphstore.cli", "stop", "--grace", f"{grace:g}"]
    return "\n".join([
        *_prelude(spec),
        f"d={d}",
        'if [ ! -f "$d/pid" ]; then',
        f'  echo "{TAG} nothing"; rm -f "$d/token"; exit 0',
        "fi",
        'pid=$(cat "$d/pid")',
        'case "$pid" in',
        f'  ""|*[!0-9]*) echo "{TAG} nothing"; rm -f "$d/pid" "$d/token"; exit 0;;',
        "esac",
        f'{quote_argv(stop)} --pid "$pid"',
        'rm -f "$d/pid" "$d/token"',
    ])


# -- reading a start script's output ---------------------------------------------------------

@dataclass
class StartReport:
    """What a start script printed: the process's pid, how the wait ended (``ready``,
    ``exited``, ``timeout``), what it announced, and the tail of its output."""
    pid: int | None = None
    status: str = ""
    values: dict[str, str] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)
    ended: bool = False

    @property
    def log_tail(self) -> str:
        return "\n".join(self.log)


def parse_start(lines: Iterable[str]) -> StartReport:
    """The ``StartReport`` of a start script's output lines (``ended`` once ``END``
    was read; lines after it are not the script's)."""
    report = StartReport()
    in_log = False
    for line in lines:
        if line == END:
            report.ended = True
            break
        if in_log:
            report.log.append(line)
            continue
        tag, _, rest = line.partition(" ")
        if tag != TAG:
            continue
        what, _, value = rest.partition(" ")
        if what == "log":
            in_log = True
        elif what == "pid" and value.isdigit():
            report.pid = int(value)
        elif what == "status":
            report.status = value
        elif what:
            report.values[what] = value.strip()
    return report
