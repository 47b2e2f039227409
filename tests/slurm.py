"""A real SLURM on this machine for the tests: munged, slurmctld and one slurmd.

Everything lives in a temporary directory of its own: a fresh munge key and munged
socket, a generated ``slurm.conf`` (one node, this host's short hostname, with
``CPUs=4`` so several one-CPU worker jobs run at once on a small machine;
``config_overrides`` lets it claim more than the hardware has), state, spool and log
directories, and pid files. No cgroup plugin is used (``proctrack/linuxproc``,
``task/none``), so it runs in a container. The daemons run in the foreground as
children of the test process; ``stop()`` ends them and any job still running.

SLURM's commands find this instance through ``SLURM_CONF`` (``env()``); nothing under
``/etc`` is read or written. The daemons need root (slurmd starts jobs as their user):
``unavailable_reason()`` says why SLURM cannot run here, and tests skip with it.

A killed test run leaves its daemons behind: the directory's name holds the owner's pid
(``gsslurm-<pid>-...``), and ``sweep_stale()`` stops the daemons of owners that are gone
(never those of a live run).
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

#: Temporary directories of these tests start with this, then the owner's pid.
PREFIX = "gsslurm-"
_DIR = re.compile(rf"^{PREFIX}(\d+)-")
DAEMONS = ("slurmd", "slurmctld", "munged")
_SBIN = ("/usr/sbin", "/sbin", "/usr/bin", "/bin")


class SlurmUnavailable(Exception):
    """SLURM cannot run here; the message says why (tests skip with it)."""


def _find(name: str) -> str | None:
    return shutil.which(name) or next(
        (f"{d}/{name}" for d in _SBIN if os.access(f"{d}/{name}", os.X_OK)), None)


def unavailable_reason() -> str | None:
    """Why a SLURM cannot be started here, or None if it can."""
    if os.geteuid() != 0:
        return "slurmd runs jobs as their user and needs root"
    missing = [n for n in ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel",
                           "sinfo") if _find(n) is None]
    if missing:
        return (f"SLURM is not installed ({', '.join(missing)} missing): "
                f"apt-get install slurm-wlm munge")
    return None


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class LocalSlurm:
    """One SLURM cluster of one node on this host, in a temporary directory."""

    def __init__(self, cpus: int = 4, memory_mb: int = 8192, partition: str = "debug"):
        self.cpus = cpus
        self.memory_mb = memory_mb
        self.partition = partition
        self.node = socket.gethostname().split(".")[0]
        self.dir = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-"))
        # munged insists that every directory above its socket is searchable by all.
        os.chmod(self.dir, 0o755)
        self.conf = self.dir / "slurm.conf"
        self.procs: dict[str, subprocess.Popen] = {}

    def env(self) -> dict:
        """The environment in which SLURM commands use this cluster."""
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    # -- start -------------------------------------------------------------------------
    def start(self, timeout: float = 30.0) -> "LocalSlurm":
        try:
            self._write_files()
            self._start_munge()
            self._spawn("slurmctld", [_find("slurmctld"), "-D", "-i", "-f", str(self.conf)])
            self._spawn("slurmd", [_find("slurmd"), "-D", "-N", self.node,
                                   "-f", str(self.conf)])
            self._wait_idle(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _write_files(self) -> None:
        for sub in ("munge", "state", "spool", "log", "jobs"):
            (self.dir / sub).mkdir(mode=0o755)
        key = self.dir / "munge" / "munge.key"
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(os.urandom(128))
        (self.dir / "plugstack.conf").write_text("")
        ctld_port, slurmd_port = _free_ports(2)
        d = self.dir
        self.conf.write_text(f"""\
ClusterName=gstest
SlurmctldHost={self.node}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={d}/munge/munge.sock
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd.pid
SlurmctldLogFile={d}/log/slurmctld.log
SlurmdLogFile={d}/log/slurmd.log
PlugStackConfig={d}/plugstack.conf
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
SlurmdParameters=config_overrides
InactiveLimit=0
MinJobAge=2
KillWait=3
NodeName={self.node} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={self.memory_mb} State=UNKNOWN
PartitionName={self.partition} Nodes={self.node} Default=YES MaxTime=INFINITE State=UP
""")

    def _spawn(self, name: str, argv: list) -> subprocess.Popen:
        log = open(self.dir / "log" / f"{name}.out", "ab")
        try:
            proc = subprocess.Popen([str(a) for a in argv], stdin=subprocess.DEVNULL,
                                    stdout=log, stderr=subprocess.STDOUT, env=self.env(),
                                    start_new_session=True)
        finally:
            log.close()
        self.procs[name] = proc
        (self.dir / f"{name}.child").write_text(str(proc.pid))
        return proc

    def _start_munge(self) -> None:
        m = self.dir / "munge"
        self._spawn("munged", [_find("munged"), "-F", f"--socket={m}/munge.sock",
                               f"--key-file={m}/munge.key", f"--pid-file={m}/munged.pid",
                               f"--seed-file={m}/munged.seed",
                               f"--log-file={self.dir}/log/munged.log"])
        deadline = time.monotonic() + 10
        while not (m / "munge.sock").exists():
            self._check_alive()
            if time.monotonic() > deadline:
                raise SlurmUnavailable(f"munged made no socket in 10 s: {self.log_tail()}")
            time.sleep(0.02)

    def _check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise SlurmUnavailable(f"{name} exited with code {proc.returncode}: "
                                       f"{self.log_tail()}")

    def _wait_idle(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            self._check_alive()
            done = self.run("sinfo", "-h", "-N", "-o", "%T", check=False)
            last = (done.stdout + done.stderr).strip()
            if done.returncode == 0 and last == "idle":
                return
            time.sleep(0.1)
        raise SlurmUnavailable(f"the node did not become idle in {timeout:.0f} s "
                               f"(sinfo says {last!r}): {self.log_tail()}")

    # -- use ---------------------------------------------------------------------------
    def run(self, *argv: str, check: bool = True,
            timeout: float = 20.0) -> subprocess.CompletedProcess:
        """Run a SLURM command against this cluster."""
        done = subprocess.run([_find(argv[0]) or argv[0], *argv[1:]], capture_output=True,
                              text=True, env=self.env(), timeout=timeout,
                              stdin=subprocess.DEVNULL)
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): "
                               f"{done.stderr.strip()}")
        return done

    def jobs(self) -> list[str]:
        """Ids of the jobs SLURM still lists (pending, running or completing)."""
        out = self.run("squeue", "-h", "-o", "%i").stdout
        return out.split()

    def log_tail(self, chars: int = 1500) -> str:
        parts = []
        for path in sorted((self.dir / "log").glob("*")):
            try:
                text = path.read_text(errors="replace")[-chars:]
            except OSError:
                continue
            parts.append(f"--- {path.name}\n{text}")
        return "\n".join(parts)

    # -- stop --------------------------------------------------------------------------
    def stop(self) -> None:
        """Cancel every job, stop the daemons, remove the directory."""
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            self.run("scancel", "--full", "-u", str(os.getuid()), check=False)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                done = self.run("squeue", "-h", "-o", "%i", check=False)
                if done.returncode != 0 or not done.stdout.strip():
                    break
                time.sleep(0.1)
        for name in DAEMONS:
            proc = self.procs.get(name)
            if proc is None:
                continue
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self.procs.clear()
        shutil.rmtree(self.dir, ignore_errors=True)


def sweep_stale() -> list[str]:
    """Stop the daemons of runs whose owner process is gone; returns their directories."""
    swept = []
    root = Path(tempfile.gettempdir())
    for path in root.glob(f"{PREFIX}*"):
        match = _DIR.match(path.name)
        if match is None or not path.is_dir():
            continue
        if _pid_alive(int(match.group(1))):
            continue
        for name in DAEMONS:
            try:
                pid = int((path / f"{name}.child").read_text())
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except (OSError, ValueError):
                continue
            if str(path).encode() in cmdline or name.encode() in cmdline:
                try:
                    os.killpg(pid, signal.SIGKILL)
                except OSError:
                    pass
        shutil.rmtree(path, ignore_errors=True)
        swept.append(str(path))
    return swept
