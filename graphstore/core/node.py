"""Which host ("node") this process is on, as the scheduler's accounting sees it, and the
address other hosts reach it at."""
from __future__ import annotations

import os
import socket

#: Bind addresses meaning "every interface": no peer can connect to them as such.
_WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::"})


def default_node_id() -> str:
    """A name for this host that stays the same across its processes.

    ``GRAPHSTORE_NODE_ID`` overrides it (tests use distinct ids on one machine to act as
    separate hosts).
    """
    override = os.environ.get("GRAPHSTORE_NODE_ID")
    if override:
        return override
    try:
        with open("/etc/machine-id") as f:
            machine = f.read().strip()[:12]
    except OSError:
        machine = ""
    return f"{socket.gethostname()}-{machine}" if machine else socket.gethostname()


def default_store_capacity(workers_on_host: int) -> int:
    """30% of physical memory (as Ray), shared by the host's workers."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        total = 8 * 1024**3
    return max(64 * 1024**2, int(total * 0.3) // max(1, workers_on_host))


def contact_host(bound_host: str, toward: str) -> str:
    """The host name peers should connect to for a server bound to ``bound_host``.

    A concrete address is its own answer. A wildcard bind (``0.0.0.0``, ``::``) names no
    address peers can use, so the answer is this host's address on the route to
    ``toward`` (the scheduler, ``tcp://HOST:PORT``): the interface the rest of the cluster
    reaches this host through, as Dask's ``get_ip`` finds it. No packet is sent.
    """
    if bound_host not in _WILDCARD_HOSTS:
        return bound_host
    from graphstore.core.comm import parse_address
    host, port = parse_address(toward)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect((host, port or 9))
            return probe.getsockname()[0]
    except OSError:
        return socket.gethostname()
