"""Which host ("node") this process is on, as the scheduler's accounting sees it."""
from __future__ import annotations

import os
import socket


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
