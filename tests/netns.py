"""Separate hosts on one machine: Linux network namespaces joined by a bridge.

The multi-host tests run the scheduler, the driver and each worker host as if on
machines of their own. Every worker host is a network namespace with one end of a veth
pair; the other end is a port of a bridge in the root namespace, which has the first
address of the subnet. The hosts reach each other and the root namespace over plain L2,
so no sysctl, route or firewall rule changes::

    root namespace (scheduler, driver)
      bridge gsmh<pid>br  10.77.N.1/24
        +-- gsmh<pid>h1 <== veth ==> eth0 10.77.N.2/24   namespace gsmh<pid>-h1
        +-- gsmh<pid>h2 <== veth ==> eth0 10.77.N.3/24   namespace gsmh<pid>-h2

``<pid>`` is the pytest process owning them; ``N`` is the first /24 of 10.77.0.0/16 no
interface of this machine uses yet. Cutting a host's link (``ip link set gsmh<pid>hK
down``) drops its carrier without touching its processes, as a pulled cable would.

Every name starts with ``gsmh<pid>``: ``sweep_stale()`` removes what a killed run left
behind (its owner pid is gone) and leaves concurrent runs alone. Processes are started in
a namespace with ``ip netns exec`` and found again with ``ip netns pids``, so teardown
kills every process there, also those its own processes started (actor processes).
"""
from __future__ import annotations

import ipaddress
import os
import re
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import psutil

#: Every namespace and link of these tests starts with this (then the owner's pid).
PREFIX = "gsmh"
_LINK = re.compile(rf"^{PREFIX}(\d+)(br|h\d+)$")
_NETNS = re.compile(rf"^{PREFIX}(\d+)-h\d+$")
#: Subnets are taken from here, one /24 per run.
_POOL = ipaddress.ip_network("10.77.0.0/16")
#: iproute2's ``ip``, also when the sbin directories are not on PATH.
IP = shutil.which("ip") or next(
    (p for p in ("/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip") if os.access(p, os.X_OK)), None)


class NetnsUnavailable(Exception):
    """Namespaces cannot be made here; the message says why (tests skip with it)."""


class NetnsError(RuntimeError):
    """An ``ip`` command failed."""


def ip(*args: str, check: bool = True, timeout: float = 10.0) -> str:
    """Run ``ip ARGS``; its stdout, or NetnsError with its stderr."""
    try:
        done = subprocess.run([IP or "ip", *args], capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NetnsError(f"ip {' '.join(args)}: {exc}") from None
    if check and done.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)} failed ({done.returncode}): "
                         f"{done.stderr.strip()}")
    return done.stdout


def unavailable_reason() -> str | None:
    """Why namespaces cannot be made here, or None if they may be (tried at setup)."""
    if not sys.platform.startswith("linux"):
        return f"network namespaces need Linux (this is {sys.platform})"
    if os.geteuid() != 0:
        return "making network namespaces and veth pairs needs root"
    if IP is None:
        return "iproute2's `ip` command is not installed (apt-get install iproute2)"
    return None


# -- names ------------------------------------------------------------------------------

def _owner_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return False
    except psutil.AccessDenied:
        return True


def _netns_names() -> list[str]:
    # Lines look like "name (id: 3)" or "name".
    return [line.split()[0] for line in ip("netns", "list").splitlines() if line.strip()]


def _link_names() -> list[str]:
    names = []
    for line in ip("-o", "link", "show").splitlines():
        # "12: gsmh123h1@if2: <BROADCAST,...": the name ends at "@" or ":".
        parts = line.split(":", 2)
        if len(parts) >= 2:
            names.append(parts[1].strip().split("@")[0])
    return names


def netns_pids(netns: str) -> list[int]:
    """Processes living in ``netns`` (an empty list when it is gone)."""
    out = ip("netns", "pids", netns, check=False)
    return [int(p) for p in out.split() if p.isdigit()]


def kill_netns_processes(netns: str, timeout: float = 5.0) -> None:
    """SIGKILL every process in ``netns`` until none is left (they may fork meanwhile)."""
    from helpers import wait_for
    pids: list[int] = []

    def none_left() -> bool:
        pids[:] = [p for p in netns_pids(netns) if p != os.getpid()]
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return not pids
    if not wait_for(none_left, timeout, interval=0.05):
        raise NetnsError(f"processes {pids} in namespace {netns} would not die")


def _remove(netns: list[str], links: list[str]) -> list[str]:
    """Kill processes in, then delete, the namespaces and links; the errors, as text."""
    errors = []
    for name in netns:
        try:
            kill_netns_processes(name)
        except NetnsError as exc:
            errors.append(str(exc))
    present = set(_link_names())
    # Deleting a veth's root end deletes its peer at once; deleting only the namespace
    # would leave that to the kernel, later.
    for name in sorted(links, key=lambda n: n.endswith("br")):
        if name in present:
            try:
                ip("link", "del", name)
            except NetnsError as exc:
                errors.append(str(exc))
    for name in netns:
        if name in set(_netns_names()):
            try:
                ip("netns", "del", name)
            except NetnsError as exc:
                errors.append(str(exc))
    return errors


def sweep_stale() -> list[str]:
    """Remove namespaces and links of runs whose pytest process is gone; their names."""
    stale_ns = [n for n in _netns_names()
                if (m := _NETNS.match(n)) and not _owner_alive(int(m.group(1)))]
    stale_links = [n for n in _link_names()
                   if (m := _LINK.match(n)) and not _owner_alive(int(m.group(1)))]
    if stale_ns or stale_links:
        errors = _remove(stale_ns, stale_links)
        if errors:
            raise NetnsError("could not remove what an earlier run left: "
                             + "; ".join(errors))
    return stale_ns + stale_links


def _free_subnet() -> ipaddress.IPv4Network:
    """The first /24 of the pool that no address or route of this machine is in."""
    used = []
    for line in ip("-o", "-4", "addr", "show").splitlines() + \
            ip("-4", "route", "show").splitlines():
        for word in line.split():
            try:
                used.append(ipaddress.ip_network(word, strict=False))
            except ValueError:
                continue
    for subnet in _POOL.subnets(new_prefix=24):
        if not any(subnet.overlaps(u) for u in used if u.prefixlen > 0):
            return subnet
    raise NetnsError(f"no free /24 left in {_POOL}")


# -- the network ------------------------------------------------------------------------

@dataclass
class Host:
    """One worker host: a namespace whose ``eth0`` has ``ip``, and the veth's root end."""
    index: int
    netns: str
    veth: str
    ip: str

    def command(self, argv: list[str]) -> list[str]:
        """``argv`` to run inside this host's namespace."""
        return [IP or "ip", "netns", "exec", self.netns, *argv]

    def pids(self) -> list[int]:
        return netns_pids(self.netns)

    def link_bytes(self) -> tuple[int, int]:
        """Bytes (received from the host, sent to it) through its link, counted at the
        root end of its veth."""
        stats = Path("/sys/class/net") / self.veth / "statistics"
        return (int((stats / "rx_bytes").read_text()),
                int((stats / "tx_bytes").read_text()))


class HostNetwork:
    """A bridge with an address in the root namespace, and hosts plugged into it.

    ``add_host()`` makes a namespace; ``cut(host)``/``mend(host)`` take its link down and
    up; ``close()`` kills every process in the namespaces and removes everything (safe to
    call twice, and after a failed set-up).
    """

    def __init__(self):
        reason = unavailable_reason()
        if reason:
            raise NetnsUnavailable(reason)
        self.tag = f"{PREFIX}{os.getpid()}"
        self.bridge = f"{self.tag}br"
        self.hosts: list[Host] = []
        self._netns: list[str] = []
        self._links: list[str] = []
        self.subnet: ipaddress.IPv4Network | None = None
        self.gateway = ""
        try:
            sweep_stale()
            # A previous network of this same process that a failed teardown left.
            _remove([n for n in _netns_names() if n.startswith(self.tag + "-")],
                    [n for n in _link_names() if n.startswith(self.tag)])
            self.subnet = _free_subnet()
            self.gateway = str(self.subnet.network_address + 1)
            self._links.append(self.bridge)
            ip("link", "add", self.bridge, "type", "bridge")
            ip("addr", "add", f"{self.gateway}/{self.subnet.prefixlen}", "dev", self.bridge)
            ip("link", "set", self.bridge, "up")
        except NetnsError as exc:
            self.close()
            raise NetnsUnavailable(f"could not make a bridge for the test hosts: {exc}") \
                from None
        except BaseException:
            self.close()
            raise

    def add_host(self) -> Host:
        index = len(self.hosts) + 1
        netns, veth = f"{self.tag}-h{index}", f"{self.tag}h{index}"
        address = str(self.subnet.network_address + 1 + index)
        self._netns.append(netns)
        self._links.append(veth)
        try:
            ip("netns", "add", netns)
            ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns)
            ip("link", "set", veth, "master", self.bridge)
            ip("link", "set", veth, "up")
            ip("-n", netns, "addr", "add", f"{address}/{self.subnet.prefixlen}", "dev",
               "eth0")
            ip("-n", netns, "link", "set", "eth0", "up")
            ip("-n", netns, "link", "set", "lo", "up")
        except NetnsError as exc:
            raise NetnsUnavailable(f"could not make a network namespace: {exc}") from None
        host = Host(index, netns, veth, address)
        self.hosts.append(host)
        return host

    def cut(self, host: Host) -> None:
        """Pull the host's cable: its processes keep running, unreachable."""
        ip("link", "set", host.veth, "down")

    def mend(self, host: Host) -> None:
        ip("link", "set", host.veth, "up")

    def close(self) -> None:
        netns, self._netns = self._netns, []
        links, self._links = self._links, []
        errors = _remove(netns, links)
        if errors:
            raise NetnsError("; ".join(errors))

    def leftovers(self) -> list[str]:
        """Namespaces and links of this network still present (empty after close)."""
        return ([n for n in _netns_names() if n.startswith(self.tag + "-")]
                + [n for n in _link_names() if n.startswith(self.tag)])
