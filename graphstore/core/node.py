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


def visible_gpu_ids() -> list[str] | None:
    """The GPU ids ``CUDA_VISIBLE_DEVICES`` names, or None when it is not set (then every
    GPU of the host is visible). As in Ray, an empty value or ``NoDevFiles`` means none."""
    value = os.environ.get("CUDA_VISIBLE_DEVICES")
    if value is None:
        return None
    value = value.strip()
    if value in ("", "NoDevFiles"):
        return []
    return [part.strip() for part in value.split(",") if part.strip()]


def detect_gpus() -> int:
    """GPUs this host offers: those ``CUDA_VISIBLE_DEVICES`` names if it is set, else
    the GPUs ``nvidia-smi -L`` lists (0 without it), as Ray counts them."""
    visible = visible_gpu_ids()
    if visible is not None:
        return len(visible)
    import shutil
    import subprocess
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return 0
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return 0
    if out.returncode != 0:
        return 0
    return sum(1 for line in out.stdout.splitlines() if line.startswith("GPU "))


def physical_gpu_ids(indices) -> list[str]:
    """The GPU ids of this host's GPU ``indices`` (0..n-1 as the scheduler counts them):
    through ``CUDA_VISIBLE_DEVICES`` when it is set, as Ray maps them."""
    visible = visible_gpu_ids()
    if visible is None:
        return [str(i) for i in indices]
    return [visible[i] if i < len(visible) else str(i) for i in indices]
