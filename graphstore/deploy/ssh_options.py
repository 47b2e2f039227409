"""What an SSH cluster is made of, checked: its hosts, the ``ssh`` options, and the
options of its scheduler and workers, turned into ``ssh`` and ``graphstore`` command lines.

Pure: no process is started here. ``SSHCluster`` and ``graphstore up``/``down`` both build
their ``ClusterSpec`` with ``cluster_spec``, so the Python API and the hosts file accept
the same keys and a mistake gets the same message naming the key. Scheduler and worker
options are the ``graphstore scheduler``/``graphstore worker`` flags in snake case
(``num_cpus`` is ``--num-cpus``): the processes are started through those commands.
"""
from __future__ import annotations

import difflib
import os
import re
import shlex
import sys
from dataclasses import dataclass
from typing import Any, Callable, Mapping

#: Directory of a cluster's files on each host, relative to the remote home.
DEFAULT_REMOTE_DIR = ".graphstore/ssh"
#: Seconds to wait for the scheduler, and for each worker, to come up.
DEFAULT_TIMEOUT = 60.0
#: Seconds ``ssh`` may take to connect (its ``ConnectTimeout``) unless told otherwise.
DEFAULT_CONNECT_TIMEOUT = 10.0
#: Port of the scheduler unless ``scheduler_options`` give one (``graphstore scheduler``'s).
DEFAULT_SCHEDULER_PORT = 6380

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SSH_OPTION = re.compile(r"^[A-Za-z][A-Za-z0-9]*$")
#: ``host_key_checking`` values, as ``ssh -o StrictHostKeyChecking`` spells them.
HOST_KEY_CHECKING = ("yes", "accept-new", "no")


# -- value checks: each returns the value to use or raises ValueError naming the key ------

def _fail(key: str, wanted: str, value: Any) -> ValueError:
    return ValueError(f"{key} must be {wanted}, got {value!r}")


def _text(key: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip() or "\n" in value or "\0" in value:
        raise _fail(key, "a non-empty string on one line", value)
    return value


def _port(key: str, value: Any, lowest: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lowest <= value <= 65535:
        raise _fail(key, f"a port number from {lowest} to 65535", value)
    return value


def _positive_int(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise _fail(key, "a positive whole number", value)
    return value


def _number(key: str, value: Any, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value \
            or value < 0 or (positive and value == 0):
        raise _fail(key, "a positive number" if positive else "a number of at least 0",
                    value)
    return value


def _fraction(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not 0 < value <= 1:
        raise _fail(key, "a fraction in (0, 1]", value)
    return value


def _amounts(key: str, value: Any) -> dict:
    if not isinstance(value, Mapping) or not value:
        raise _fail(key, "a mapping of resource names to amounts", value)
    for name, amount in value.items():
        if not isinstance(name, str) or not name or "=" in name or " " in name:
            raise _fail(f"{key} name", "a name without '=' or spaces", name)
        _number(f"{key}.{name}", amount)
    return dict(value)


def _strings(key: str, value: Any) -> dict:
    if not isinstance(value, Mapping) or not value:
        raise _fail(key, "a mapping of names to values", value)
    out = {}
    for name, item in value.items():
        if not isinstance(name, str) or not name or "=" in name:
            raise _fail(f"{key} name", "a name without '='", name)
        if isinstance(item, bool) or not isinstance(item, (str, int, float)):
            raise _fail(f"{key}.{name}", "a string or a number", item)
        out[name] = str(item)
    return out


def _labels(key: str, value: Any) -> dict:
    labels = _strings(key, value)
    for name, text in labels.items():
        if len(name) > 128 or len(text) > 256:
            raise _fail(f"{key}.{name}", "a label of at most 256 characters under a key "
                                         "of at most 128", text)
    return labels


def _level(key: str, value: Any) -> str:
    levels = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
    if not isinstance(value, str) or value.upper() not in levels:
        raise _fail(key, f"one of {', '.join(levels)}", value)
    return value.upper()


def _host_key_checking(key: str, value: Any) -> str:
    # YAML reads a bare yes/no as a boolean.
    if value is True:
        return "yes"
    if value is False:
        return "no"
    if value not in HOST_KEY_CHECKING:
        raise _fail(key, f"one of {', '.join(HOST_KEY_CHECKING)}", value)
    return value


def _path(key: str, value: Any) -> str:
    return os.path.expanduser(_text(key, value))


#: Scheduler options: name -> check. Each is ``graphstore scheduler --<name with dashes>``.
SCHEDULER_OPTIONS: dict[str, Callable[[str, Any], Any]] = {
    "host": _text,
    "port": _port,
    "dashboard_port": _port,
    "dashboard_host": _text,
    "tls_cert": _text,
    "tls_key": _text,
    "tls_ca": _text,
    "log_level": _level,
}

#: Worker options: name -> check. Each is ``graphstore worker --<name with dashes>``;
#: ``resources``, ``labels`` and ``spill_options`` are mappings, given as repeated flags.
WORKER_OPTIONS: dict[str, Callable[[str, Any], Any]] = {
    "host": _text,
    "port": _port,
    "node_id": _text,
    "num_cpus": lambda k, v: _number(k, v, positive=True),
    "num_gpus": _number,
    "resources": _amounts,
    "labels": _labels,
    "object_store_memory": _positive_int,
    "spill_to": _text,
    "spill_options": _strings,
    "spill_threshold": _fraction,
    "tls_cert": _text,
    "tls_key": _text,
    "tls_ca": _text,
    "log_level": _level,
}

#: ``connect_options``: how ``ssh`` reaches the hosts. Anything else goes in ``options``
#: (``ssh -o NAME=VALUE``); the user's ``~/.ssh/config`` applies as always.
CONNECT_OPTIONS: dict[str, Callable[[str, Any], Any]] = {
    "user": _text,
    "port": lambda k, v: _port(k, v, lowest=1),
    "identity_file": _path,
    "known_hosts_file": _path,
    "host_key_checking": _host_key_checking,
    "config_file": _path,
    "connect_timeout": lambda k, v: _number(k, v, positive=True),
    "options": _strings,
}


def _unknown(key: str, name: Any, known) -> ValueError:
    close = difflib.get_close_matches(str(name), list(known), n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ValueError(f"{key}: unknown option {name!r}{hint}; known: "
                      f"{', '.join(sorted(known))}")


def check_options(key: str, options: Any,
                  checks: Mapping[str, Callable[[str, Any], Any]]) -> dict:
    """``options`` checked against ``checks``; ValueError names ``key`` and the option."""
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise _fail(key, "a mapping of option names to values", options)
    checked = {}
    for name, value in options.items():
        if name not in checks:
            raise _unknown(key, name, checks)
        if value is None:
            continue
        checked[name] = checks[name](f"{key}.{name}", value)
    return checked


def check_remote_python(key: str, value: Any) -> tuple[str, ...]:
    """``remote_python`` as an argv: a path, or a command line (``"conda run -n x
    python"``)."""
    text = _text(key, value)
    try:
        argv = tuple(shlex.split(text))
    except ValueError as exc:
        raise ValueError(f"{key} is not a valid command line ({exc}): {value!r}") from None
    if not argv:
        raise _fail(key, "a Python command", value)
    return argv


def check_env(key: str, env: Any) -> dict[str, str]:
    if env is None:
        return {}
    values = _strings(key, env) if env else {}
    for name in values:
        if not _ENV_NAME.match(name):
            raise _fail(f"{key} name", "an environment variable name", name)
    return values


def check_name(key: str, value: Any) -> str:
    if not isinstance(value, str) or not _NAME.match(value):
        raise _fail(key, "letters, digits, '.', '_' or '-' (at most 64, not starting "
                         "with a punctuation mark)", value)
    return value


def check_destination(key: str, value: Any) -> str:
    """An ``ssh`` destination: ``host``, ``user@host`` or ``ssh://[user@]host[:port]``."""
    text = _text(key, value)
    if text.startswith("-") or any(c.isspace() for c in text):
        raise _fail(key, "an ssh destination (host, user@host or ssh://user@host:port)",
                    value)
    return text


def host_part(destination: str) -> str:
    """The machine's name or address in an ``ssh`` destination (no user, no port)."""
    rest = destination
    uri = rest.startswith("ssh://")
    if uri:
        rest = rest[len("ssh://"):]
    rest = rest.rsplit("@", 1)[-1]
    if rest.startswith("["):                     # [v6 address] or [v6]:port
        return rest[1:].split("]", 1)[0]
    if uri and rest.count(":") == 1:
        rest = rest.split(":", 1)[0]
    return rest


# -- the spec -------------------------------------------------------------------------------

@dataclass(frozen=True)
class ConnectOptions:
    """How ``ssh`` reaches a host; ``None`` leaves the user's ssh configuration in
    charge."""
    user: str | None = None
    port: int | None = None
    identity_file: str | None = None
    known_hosts_file: str | None = None
    host_key_checking: str | None = None
    config_file: str | None = None
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    #: Other ``ssh -o`` options, as (name, value) pairs.
    options: tuple[tuple[str, str], ...] = ()

    def ssh_argv(self, destination: str, remote_command: str) -> list[str]:
        """The ``ssh`` command running ``remote_command`` on ``destination``: no
        terminal, no password prompt (``BatchMode``), the given options first."""
        argv = ["ssh", "-T", "-o", "BatchMode=yes",
                "-o", f"ConnectTimeout={max(1, round(self.connect_timeout))}"]
        if self.config_file:
            argv += ["-F", self.config_file]
        if self.user:
            argv += ["-l", self.user]
        if self.port:
            argv += ["-p", str(self.port)]
        if self.identity_file:
            argv += ["-i", self.identity_file]
        if self.known_hosts_file:
            argv += ["-o", f"UserKnownHostsFile={self.known_hosts_file}"]
        if self.host_key_checking:
            argv += ["-o", f"StrictHostKeyChecking={self.host_key_checking}"]
        for name, value in self.options:
            argv += ["-o", f"{name}={value}"]
        return [*argv, "--", destination, remote_command]


def make_connect_options(key: str, options: Any) -> ConnectOptions:
    checked = check_options(key, options, CONNECT_OPTIONS)
    for name in checked.get("options", {}):
        if not _SSH_OPTION.match(name):
            raise _fail(f"{key}.options name", "an ssh option name (ssh_config(5))", name)
    checked["options"] = tuple(checked.get("options", {}).items())
    return ConnectOptions(**checked)


@dataclass(frozen=True, eq=False)
class HostSpec:
    """One entry of the hosts list: where ``ssh`` goes and how the process there runs.

    ``role`` is ``"scheduler"`` for the first entry and ``"worker-<i>"`` for the others
    (``i`` from 1): it names the process's directory on its host, so a host listed twice
    keeps two apart."""
    role: str
    destination: str
    connect: ConnectOptions
    python: tuple[str, ...]
    options: dict


@dataclass(frozen=True)
class ClusterSpec:
    """A checked SSH cluster: its name, hosts (scheduler first) and shared settings."""
    name: str
    hosts: tuple[HostSpec, ...]
    remote_dir: str
    env: dict[str, str]
    timeout: float

    @property
    def scheduler(self) -> HostSpec:
        return self.hosts[0]

    @property
    def workers(self) -> tuple[HostSpec, ...]:
        return self.hosts[1:]

    def role_dir(self, host: HostSpec) -> str:
        """The directory of ``host``'s process on its host (relative: to the home)."""
        return f"{self.remote_dir}/{host.role}"


_HOST_KEYS = ("host", "connect_options", "worker_options", "remote_python")


def cluster_spec(hosts: Any, *, connect_options: Any = None, scheduler_options: Any = None,
                 worker_options: Any = None, remote_python: Any = None,
                 remote_dir: Any = None, env: Any = None, name: Any = None,
                 timeout: Any = DEFAULT_TIMEOUT, name_key: str = "name") -> ClusterSpec:
    """Check everything an SSH cluster is given; ValueError names the offending key
    (the hosts file uses the same keys, ``name_key`` being its ``cluster_name``)."""
    name = check_name(name_key, name)
    if isinstance(hosts, (str, bytes)) or not isinstance(hosts, (list, tuple)):
        raise _fail("hosts", "a list of hosts (the scheduler's first)", hosts)
    if len(hosts) < 2:
        raise ValueError(f"hosts must list at least two hosts: the scheduler's, then one "
                         f"per worker (list the scheduler's host again to run a worker "
                         f"there too), got {list(hosts)!r}")
    connect = check_options("connect_options", connect_options, CONNECT_OPTIONS)
    scheduler = check_options("scheduler_options", scheduler_options, SCHEDULER_OPTIONS)
    worker = check_options("worker_options", worker_options, WORKER_OPTIONS)
    python = check_remote_python("remote_python", remote_python or sys.executable)
    specs = []
    for index, entry in enumerate(hosts):
        key = f"hosts[{index}]"
        if isinstance(entry, Mapping):
            for entry_key in entry:
                if entry_key not in _HOST_KEYS:
                    raise _unknown(key, entry_key, _HOST_KEYS)
            if "host" not in entry:
                raise ValueError(f"{key} needs a 'host': the ssh destination")
            destination = check_destination(f"{key}.host", entry["host"])
            own_connect = check_options(f"{key}.connect_options",
                                        entry.get("connect_options"), CONNECT_OPTIONS)
            own_worker = check_options(f"{key}.worker_options",
                                       entry.get("worker_options"), WORKER_OPTIONS)
            if index == 0 and own_worker:
                raise ValueError(f"{key}.worker_options: the first host runs the "
                                 f"scheduler, not a worker (list it again to run one)")
            own_python = (check_remote_python(f"{key}.remote_python",
                                              entry["remote_python"])
                          if entry.get("remote_python") is not None else python)
        else:
            destination = check_destination(key, entry)
            own_connect, own_worker, own_python = {}, {}, python
        merged_connect = {**connect, **own_connect}
        if "options" in connect and "options" in own_connect:
            merged_connect["options"] = {**connect["options"], **own_connect["options"]}
        if index == 0:
            role, options = "scheduler", dict(scheduler)
            options.setdefault("host", host_part(destination))
            options.setdefault("port", DEFAULT_SCHEDULER_PORT)
        else:
            role, options = f"worker-{index}", {**worker, **own_worker}
            options.setdefault("host", host_part(destination))
        specs.append(HostSpec(role, destination,
                              make_connect_options(f"{key}.connect_options",
                                                   merged_connect),
                              own_python, options))
    if remote_dir is None:
        directory = f"{DEFAULT_REMOTE_DIR}/{name}"
    else:
        directory = _text("remote_dir", remote_dir)
        if directory.startswith("~/"):
            directory = directory[2:]          # relative paths are the home's
        directory = directory.rstrip("/") or "/"
    return ClusterSpec(name, tuple(specs), directory, check_env("env", env),
                       _number("timeout", timeout, positive=True))


# -- graphstore command lines ----------------------------------------------------------------

def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def scheduler_args(options: Mapping[str, Any]) -> list[str]:
    """``graphstore scheduler`` flags for checked scheduler options."""
    args: list[str] = []
    for name, value in options.items():
        args += [_flag(name), str(value)]
    return args


def worker_args(options: Mapping[str, Any]) -> list[str]:
    """``graphstore worker`` flags for checked worker options."""
    args: list[str] = []
    for name, value in options.items():
        if name == "resources":
            for resource, amount in value.items():
                args += ["--resource", f"{resource}={amount:g}"]
        elif name == "labels":
            for label, text in value.items():
                args += ["--label", f"{label}={text}"]
        elif name == "spill_options":
            for option, text in value.items():
                args += ["--spill-option", f"{option}={text}"]
        else:
            args += [_flag(name), f"{value:g}" if isinstance(value, float) else str(value)]
    return args
