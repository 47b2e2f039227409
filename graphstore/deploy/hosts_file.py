"""The hosts file of ``graphstore up`` and ``graphstore down``: a YAML mapping whose keys
are ``SSHCluster``'s arguments, plus ``cluster_name`` and ``token_file``.

```yaml
cluster_name: demo
hosts: [10.0.0.10, 10.0.0.21, 10.0.0.22]     # the scheduler's first
connect_options: {user: gs, identity_file: ~/.ssh/id_ed25519}
worker_options: {num_cpus: 8}
```

Every key is checked before anything connects anywhere; a mistake is a ``ValueError``
naming the file and the key (``hosts.yaml: worker_options.num_cpu: unknown option``).
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from graphstore.deploy.ssh_options import DEFAULT_TIMEOUT, ClusterSpec, cluster_spec

#: The keys a hosts file may have; all but ``hosts`` are optional.
KEYS = ("cluster_name", "hosts", "connect_options", "scheduler_options", "worker_options",
        "remote_python", "remote_dir", "env", "token_file", "timeout")
#: Where ``graphstore up`` writes the token on this machine unless ``token_file`` says.
DEFAULT_TOKEN_FILE = "~/.graphstore/ssh/{name}/token"


@dataclass(frozen=True)
class HostsFile:
    """A checked hosts file: the cluster and where its token goes on this machine."""
    path: Path
    spec: ClusterSpec
    token_file: Path
    #: ``SSHCluster`` arguments as the file gives them.
    arguments: dict


def load_hosts_file(path: str | Path) -> HostsFile:
    """Read and check a hosts file.

    Returns:
        The ``HostsFile``.

    Raises:
        ValueError: the file cannot be read, is not YAML, or a key or value is wrong;
            the message names the file and the key.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ValueError(f"cannot read the hosts file {path}: {exc.strerror or exc}") \
            from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"{path} is not valid YAML: {exc}") from None
    try:
        return _checked(path, data)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def _checked(path: Path, data: Any) -> HostsFile:
    if not isinstance(data, dict):
        raise ValueError(f"the file must be a mapping with at least 'hosts', got "
                         f"{type(data).__name__}")
    for key in data:
        if key not in KEYS:
            close = difflib.get_close_matches(str(key), KEYS, n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"unknown key {key!r}{hint}; known: {', '.join(KEYS)}")
    if "hosts" not in data:
        raise ValueError("no 'hosts': list the scheduler's host, then the workers' hosts")
    name = data.get("cluster_name")
    if name is None:
        name = re.sub(r"[^A-Za-z0-9._-]", "-", path.stem).lstrip("._-") or "cluster"
    arguments = {
        "connect_options": data.get("connect_options"),
        "scheduler_options": data.get("scheduler_options"),
        "worker_options": data.get("worker_options"),
        "remote_python": data.get("remote_python"),
        "remote_dir": data.get("remote_dir"),
        "env": data.get("env"),
        "name": name,
        "timeout": data.get("timeout", DEFAULT_TIMEOUT),
    }
    spec = cluster_spec(data["hosts"], name_key="cluster_name", **arguments)
    token_file = data.get("token_file")
    if token_file is None:
        token_file = DEFAULT_TOKEN_FILE.format(name=spec.name)
    elif not isinstance(token_file, str) or not token_file.strip():
        raise ValueError(f"token_file must be a path, got {token_file!r}")
    return HostsFile(path, spec, Path(token_file).expanduser(),
                     {"hosts": data["hosts"], **arguments})
