"""Real OpenSSH servers, one in each network-namespace host of ``netns.py``.

Each host runs ``sshd -D`` from the system's openssh-server with a configuration of its
own in a temporary directory: its own host key (made here with ``ssh-keygen``), listening
on the host's address only, key login for the user running the tests from one freshly
made client key, nothing else. The client side gets a known-hosts file holding exactly
those host keys, so the tests run ``ssh`` with strict host key checking.

The servers live in the namespaces: ``HostNetwork.close()`` (and ``netns.sweep_stale()``
after a killed run) kills them with everything else there. The hosts share this
machine's filesystem and Python (like an NFS home), but every connection, token copy
and process start of an SSH cluster still goes through these servers.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

from helpers import wait_for

#: The server and the client tools, also when the sbin directories are not on PATH.
SSHD = shutil.which("sshd") or next(
    (p for p in ("/usr/sbin/sshd", "/sbin/sshd") if os.access(p, os.X_OK)), None)
SSH = shutil.which("ssh")
SSH_KEYGEN = shutil.which("ssh-keygen")
#: sshd's privilege separation directory, compiled in; Debian's init script makes it.
PRIVSEP_DIR = Path("/run/sshd")
PORT = 22


def unavailable_reason() -> str | None:
    """Why real sshd servers cannot run here, or None."""
    if SSHD is None:
        return "sshd is not installed (apt-get install openssh-server)"
    if SSH is None or SSH_KEYGEN is None:
        return "the OpenSSH client is not installed (apt-get install openssh-client)"
    if os.geteuid() != 0 and not PRIVSEP_DIR.is_dir():
        return f"{PRIVSEP_DIR} is missing and only root can make it"
    return None


def keygen(path: Path) -> Path:
    """A new ed25519 key pair at ``path`` (and ``path.pub``), no passphrase."""
    subprocess.run([SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", "gstest",
                    "-f", str(path)], check=True, capture_output=True, timeout=30)
    return path


class SSHServer:
    """``sshd`` in ``host``'s namespace, configured from ``directory``."""

    def __init__(self, host, directory: Path, authorized_keys: Path, port: int = PORT):
        self.host = host
        self.port = port
        self.dir = directory
        directory.mkdir(parents=True)
        self.host_key = keygen(directory / "ssh_host_ed25519_key")
        self.pid_file = directory / "sshd.pid"
        self.log = directory / "sshd.log"
        self.config = directory / "sshd_config"
        self.config.write_text("\n".join([
            f"ListenAddress {host.ip}:{port}",
            f"HostKey {self.host_key}",
            f"PidFile {self.pid_file}",
            f"AuthorizedKeysFile {authorized_keys}",
            "PermitRootLogin prohibit-password",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            # The temporary directory is not owned the way sshd insists on for ~/.ssh.
            "StrictModes no",
            "PrintMotd no",
            "LogLevel VERBOSE",
        ]) + "\n")
        self.popen: subprocess.Popen | None = None

    def start(self) -> None:
        if os.geteuid() == 0:
            PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
        with open(self.log, "wb") as log:
            # -D: stay in the foreground (this Popen is the server); -e: log to stderr.
            self.popen = subprocess.Popen(
                self.host.command([SSHD, "-D", "-e", "-f", str(self.config)]),
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        listening = f"Server listening on {self.host.ip} port {self.port}"
        if not wait_for(lambda: listening in self.log.read_text(errors="replace")
                        or self.popen.poll() is not None, 15, interval=0.02) \
                or self.popen.poll() is not None:
            raise RuntimeError(f"sshd did not start in {self.host.netns}:\n"
                               f"{self.log.read_text(errors='replace')}")

    def known_hosts_line(self) -> str:
        key_type, key = self.host_key.with_suffix(".pub").read_text().split()[:2]
        name = self.host.ip if self.port == 22 else f"[{self.host.ip}]:{self.port}"
        return f"{name} {key_type} {key}\n"

    def stop(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(5)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(
            errors="replace")
    except OSError:
        return ""


class SSHHosts:
    """``count`` hosts on ``network``, each with its own sshd, and a client key and
    known-hosts file that log in to all of them as the current user."""

    def __init__(self, network, directory: Path, count: int):
        self.network = network
        self.dir = directory
        self.client_key = keygen(directory / "client_key")
        self.authorized_keys = directory / "authorized_keys"
        self.authorized_keys.write_text(self.client_key.with_suffix(".pub").read_text())
        self.known_hosts = directory / "known_hosts"
        self.servers: list[SSHServer] = []
        for _ in range(count):
            host = network.add_host()
            server = SSHServer(host, directory / f"sshd-{host.index}", self.authorized_keys)
            self.servers.append(server)
            server.start()
        self.known_hosts.write_text("".join(s.known_hosts_line() for s in self.servers))

    @property
    def hosts(self):
        return [server.host for server in self.servers]

    @property
    def user(self) -> str:
        import pwd
        return pwd.getpwuid(os.getuid()).pw_name

    def connect_options(self, **more) -> dict:
        """``connect_options`` that reach these servers and nothing else: this run's key
        and known hosts, strict checking, no user ssh configuration."""
        return {"user": self.user, "identity_file": str(self.client_key),
                "known_hosts_file": str(self.known_hosts), "host_key_checking": "yes",
                "config_file": os.devnull, "connect_timeout": 15, **more}

    def processes(self, host) -> dict[int, str]:
        """Processes in ``host``'s namespace other than sshd's: pid -> command line."""
        found = {}
        for pid in host.pids():
            line = _cmdline(pid)
            if line and not line.startswith(SSHD) and "sshd:" not in line \
                    and pid != os.getpid():
                found[pid] = line
        return found

    def leftovers(self) -> dict[int, str]:
        """Every process in the hosts but their sshd servers and sessions."""
        return {pid: line for host in self.hosts
                for pid, line in self.processes(host).items()}

    def graphstore_processes(self) -> dict[int, str]:
        """graphstore processes in any of the hosts (not the shells that started them)."""
        return {pid: line for pid, line in self.leftovers().items()
                if "graphstore" in line
                and os.path.basename(line.split(" ", 1)[0]) not in ("sh", "bash", "dash")}

    def sshd_pids(self) -> list[int]:
        """Live sshd processes of these servers (listeners and sessions)."""
        return [pid for host in self.hosts for pid in host.pids()
                if _cmdline(pid).startswith(SSHD) or "sshd:" in _cmdline(pid)]

    def close(self) -> None:
        for server in self.servers:
            server.stop()

