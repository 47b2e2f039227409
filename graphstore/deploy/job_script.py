"""A worker job's batch script: the arguments users give (``cores``, ``memory``,
``walltime``, ...) checked and turned into ``#SBATCH`` directives and a worker command.

Pure: no process is started and nothing is read from the system, so every argument
error is found before anything is submitted, and the script can be printed
(``SLURMCluster.job_script()``) and tested as text.
"""
from __future__ import annotations

import math
import re
import shlex
from dataclasses import dataclass, field

_UNITS = {
    "": 1, "b": 1,
    "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4,          # SLURM's own: binary
    "kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")
# SLURM's time formats: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S.
_WALLTIME = re.compile(r"^(?:\d+|\d+:\d{1,2}|\d+:\d{1,2}:\d{1,2}|\d+-\d+|\d+-\d+:\d{1,2}"
                       r"|\d+-\d+:\d{1,2}:\d{1,2})$")
_JOB_NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def parse_memory(value: int | str, argument: str = "memory") -> int:
    """Bytes from ``value``: an int, or text such as ``"4GB"``, ``"4 GiB"``, ``"512M"``.

    ``kB/MB/GB/TB`` are powers of 1000, ``KiB/MiB/GiB/TiB`` and SLURM's bare
    ``K/M/G/T`` powers of 1024.

    Returns:
        The size in bytes, at least 1.

    Raises:
        ValueError: naming ``argument``, for text that is not a size or a size below 1.
    """
    if isinstance(value, bool):
        raise ValueError(f"{argument} must be a size such as '4GB', got {value!r}")
    if isinstance(value, int):
        size = value
    else:
        match = _SIZE.match(value) if isinstance(value, str) else None
        unit = match.group(2).lower() if match else None
        if match is None or unit not in _UNITS:
            raise ValueError(f"{argument} must be a size such as '4GB', '512MiB' or '8G', "
                             f"got {value!r}")
        size = int(float(match.group(1)) * _UNITS[unit])
    if size < 1:
        raise ValueError(f"{argument} must be at least one byte, got {value!r}")
    return size


def slurm_memory(size: int) -> str:
    """``--mem``'s value for ``size`` bytes: whole MiB, rounded up (SLURM's ``M``)."""
    return f"{max(1, math.ceil(size / 1024**2))}M"


def check_walltime(value: str) -> str:
    """``value`` if it is one of SLURM's time formats (``"30"`` minutes,
    ``"01:30:00"``, ``"2-00:00:00"``, ...).

    Returns:
        The walltime, stripped.

    Raises:
        ValueError: naming ``walltime``, for any other text.
    """
    text = value.strip() if isinstance(value, str) else None
    if not text or not _WALLTIME.match(text):
        raise ValueError(f"walltime must be SLURM time such as '01:30:00', '90' (minutes) "
                         f"or '1-12:00:00' (days-hours:minutes:seconds), got {value!r}")
    return text


def _check_directives(values, argument: str) -> list[str]:
    if isinstance(values, str) or not all(isinstance(v, str) for v in values):
        raise ValueError(f"{argument} must be a list of strings, got {values!r}")
    for v in values:
        if "\n" in v or "\r" in v:
            raise ValueError(f"{argument} entries must be single lines, got {v!r}")
    return list(values)


@dataclass(frozen=True)
class WorkerJob:
    """What one worker job asks SLURM for and runs: checked at construction."""

    cores: int
    memory: int
    processes: int = 1
    walltime: str = "00:30:00"
    queue: str | None = None
    account: str | None = None
    job_name: str = "graphstore-worker"
    job_extra_directives: list[str] = field(default_factory=list)
    job_directives_skip: list[str] = field(default_factory=list)
    job_script_prologue: list[str] = field(default_factory=list)
    worker_extra_args: list[str] = field(default_factory=list)
    object_store_memory: int | None = None
    python: str = "python3"
    log_directory: str | None = None
    shebang: str = "#!/usr/bin/env bash"

    def __post_init__(self) -> None:
        if isinstance(self.cores, bool) or not isinstance(self.cores, int) or self.cores < 1:
            raise ValueError(f"cores must be a whole number of CPUs, at least 1, "
                             f"got {self.cores!r}")
        if isinstance(self.processes, bool) or not isinstance(self.processes, int) \
                or not 1 <= self.processes <= self.cores:
            raise ValueError(f"processes (workers per job) must be a whole number from 1 "
                             f"to cores ({self.cores}), got {self.processes!r}")
        if not _JOB_NAME.match(str(self.job_name)):
            raise ValueError(f"job_name must be 1-64 letters, digits, '.', '_' or '-', "
                             f"got {self.job_name!r}")
        for name in ("queue", "account"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str)
                                      or not re.match(r"^[A-Za-z0-9._,-]+$", value)):
                raise ValueError(f"{name} must be a SLURM {name} name, got {value!r}")
        for name in ("job_extra_directives", "job_directives_skip", "job_script_prologue",
                     "worker_extra_args"):
            object.__setattr__(self, name, _check_directives(getattr(self, name), name))
        if self.object_store_memory is not None and \
                self.object_store_memory * self.processes > self.memory:
            raise ValueError(f"object_store_memory ({self.object_store_memory:,} bytes per "
                             f"worker, {self.processes} per job) does not fit in memory "
                             f"({self.memory:,} bytes per job)")

    @property
    def cores_per_worker(self) -> int:
        return self.cores // self.processes

    @property
    def store_bytes(self) -> int:
        """Each worker's object store: ``object_store_memory``, else 30% of its share
        of the job's memory (Ray's default fraction)."""
        if self.object_store_memory is not None:
            return self.object_store_memory
        return max(64 * 1024**2, int(self.memory * 0.3) // self.processes)

    def directives(self) -> list[str]:
        """The ``#SBATCH`` lines, in SLURM's option spelling."""
        lines = [f"-J {self.job_name}"]
        if self.log_directory:
            lines.append(f"-o {self.log_directory}/{self.job_name}-%j.out")
        if self.queue:
            lines.append(f"-p {self.queue}")
        if self.account:
            lines.append(f"-A {self.account}")
        lines += ["-n 1", f"--cpus-per-task={self.cores}", f"--mem={slurm_memory(self.memory)}",
                  f"-t {self.walltime}"]
        skip = self.job_directives_skip
        lines = [line for line in lines if not any(s in line for s in skip)]
        return [f"#SBATCH {line}" for line in lines + self.job_extra_directives]

    def worker_command(self, scheduler_address: str, cluster_name: str) -> list[str]:
        """One worker's command line. The job's id is a label, so the cluster finds the
        job's workers among the scheduler's; ``$SLURM_JOB_ID`` is expanded by the shell."""
        return [self.python, "-m", "graphstore.worker", scheduler_address,
                "--host", "0.0.0.0", "--num-cpus", str(self.cores_per_worker),
                "--object-store-memory", str(self.store_bytes),
                "--label", f"graphstore_cluster={cluster_name}",
                "--label", "slurm_job_id=$SLURM_JOB_ID", *self.worker_extra_args]

    def render(self, scheduler_address: str, cluster_name: str) -> str:
        """The whole batch script. The cluster token is not in it: the job inherits it
        from the submitting environment (``GRAPHSTORE_TOKEN``)."""
        command = " ".join(_quote(a) for a in self.worker_command(scheduler_address,
                                                                 cluster_name))
        lines = [self.shebang, *self.directives(), "", *self.job_script_prologue]
        if self.processes == 1:
            lines.append(f"exec {command}")
        else:
            lines += [f"for i in $(seq {self.processes}); do", f"  {command} &", "done",
                      "wait"]
        return "\n".join(lines) + "\n"


def _quote(arg: str) -> str:
    """Shell-quote ``arg``, leaving ``$SLURM_JOB_ID`` for the shell to expand."""
    if "$SLURM_JOB_ID" in arg:
        return '"' + arg.replace('"', '\\"') + '"'
    return shlex.quote(arg)
