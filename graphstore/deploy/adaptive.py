"""How many worker jobs a cluster should have for the work it holds: the policy behind
``SLURMCluster.adapt()``, a pure class (no I/O, no clock) fed one observation per
interval, so that its decisions can be tested without a batch system.

The target is the CPUs the work wants (tasks running or holding a worker's slot, plus
tasks queued for a worker) divided by the CPUs of one job, rounded up and kept within
``[minimum, maximum]``. Growing happens at once: queued work waits for every job still
pending in the batch queue, so a job is never submitted twice for the same demand.
Shrinking waits until ``wait_count`` observations in a row wanted fewer jobs (a burst's
gaps do not cancel jobs that the next burst needs), as Dask's ``Adaptive`` does.
"""
from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class AdaptivePolicy:
    """Jobs wanted for the observed work, bounded, with a cooldown before shrinking."""

    minimum: int
    maximum: int
    cores_per_job: float
    wait_count: int = 3

    def __post_init__(self) -> None:
        for name in ("minimum", "maximum", "wait_count"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a whole number >= 0, got {value!r}")
        if self.maximum < self.minimum:
            raise ValueError(f"maximum ({self.maximum}) must be at least minimum "
                             f"({self.minimum})")
        if not self.cores_per_job > 0:
            raise ValueError(f"cores_per_job must be positive, got {self.cores_per_job!r}")
        self._low_streak = 0

    def wanted(self, queued_tasks: int, busy_cpus: float) -> int:
        """Jobs the work asks for, within the bounds (no cooldown)."""
        demand = max(0.0, busy_cpus) + max(0, queued_tasks)
        jobs = math.ceil(demand / self.cores_per_job - 1e-9)
        return min(self.maximum, max(self.minimum, jobs))

    def decide(self, queued_tasks: int, busy_cpus: float, current_jobs: int) -> int:
        """The number of jobs to have after this observation.

        Args:
            queued_tasks: tasks ready to run that no worker has taken yet.
            busy_cpus: CPUs in use by running tasks and actors.
            current_jobs: jobs submitted and not ended (pending ones count: they will
                bring their workers).

        Returns:
            ``current_jobs`` when nothing should change, more to grow, fewer to shrink.
        """
        target = self.wanted(queued_tasks, busy_cpus)
        if target > current_jobs:
            self._low_streak = 0
            return target
        if target == current_jobs:
            self._low_streak = 0
            return current_jobs
        self._low_streak += 1
        if self._low_streak < self.wait_count:
            return current_jobs
        self._low_streak = 0
        return target
