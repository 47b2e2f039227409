"""Task figures for Prometheus, kept as tasks finish: duration histograms by function,
finished and failed counts by function, and how long ready tasks wait for a worker.

Pure bookkeeping, no I/O: the scheduler's state machine calls it once per finished or
assigned task, and ``scheduler/prometheus.py`` reads it at scrape time. Memory is bounded
whatever the run: a histogram is a fixed row of bucket counts, and at most
``max_functions`` distinct function names get rows of their own; later names share the
row of ``OTHER`` (Prometheus keeps one time series per label value, so an unbounded label
would grow the scraper's memory as well as ours).
"""
from __future__ import annotations

import math
from bisect import bisect_left
from typing import Iterator

#: Upper bounds (seconds) of the task duration buckets: from no-op tasks to long jobs.
DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0,
                    1800.0)
#: Upper bounds (seconds) of the queue wait buckets: from an idle cluster to a backlog.
QUEUE_WAIT_BUCKETS = (0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0,
                      300.0)
#: Distinct function names with series of their own; the rest count under ``OTHER``.
#: Each costs 18 series per scrape (its histogram's buckets, sum and count; done and
#: failed), so the cap bounds both this process's memory and every scrape's size.
MAX_FUNCTIONS = 100
#: The label of every function past ``MAX_FUNCTIONS`` (parentheses: no Python name).
OTHER = "(other)"
#: Longest function name kept in a label (a name comes from the submitting program).
MAX_NAME_CHARS = 200
_INF = math.inf


class Histogram:
    """Counts of observations per bucket (``value <= bound``, as Prometheus' ``le``),
    with their sum; values that are not finite, non-negative numbers are refused."""

    __slots__ = ("bounds", "counts", "sum", "count")

    def __init__(self, bounds: tuple[float, ...]):
        if list(bounds) != sorted(set(bounds)) or not bounds:
            raise ValueError(f"bucket bounds must be increasing and distinct, got {bounds}")
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)     # the last one is +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, value) -> bool:
        """Count ``value``; False (and nothing counted) if it is not a valid duration."""
        kind = type(value)
        if (kind is not float and kind is not int) or not 0 <= value < _INF:
            return False        # NaN fails the comparison too
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1
        return True

    def cumulative(self) -> list[tuple[str, int]]:
        """``(le, observations <= le)`` per bucket, ending with ``("+Inf", count)``."""
        out = []
        total = 0
        for bound, n in zip(self.bounds, self.counts):
            total += n
            out.append((repr(float(bound)), total))
        out.append(("+Inf", self.count))
        return out


class TaskMetrics:
    """What finished tasks add up to, by function name (see the module docstring)."""

    def __init__(self, max_functions: int = MAX_FUNCTIONS,
                 duration_buckets: tuple[float, ...] = DURATION_BUCKETS,
                 queue_wait_buckets: tuple[float, ...] = QUEUE_WAIT_BUCKETS):
        if max_functions < 1:
            raise ValueError(f"max_functions must be at least 1, got {max_functions}")
        self.max_functions = max_functions
        self.duration_buckets = duration_buckets
        #: function label -> run durations reported by workers (done or failed runs).
        self.durations: dict[str, Histogram] = {}
        #: function label -> {"done": n, "failed": n}.
        self.finished: dict[str, dict[str, int]] = {}
        #: Seconds from ready (all arguments exist) to assignment to a worker.
        self.queue_wait = Histogram(queue_wait_buckets)
        #: Reports whose duration was not a valid number (counted, not observed).
        self.invalid_durations = 0
        self._names: set[str] = set()

    def label(self, name) -> str:
        """The label ``name`` counts under: itself (cut) while there is room, else
        ``OTHER``."""
        try:
            if name in self._names:     # the common case: a name seen before, as it is
                return name
        except TypeError:               # unhashable: no str, so OTHER below
            pass
        if not isinstance(name, str):
            name = OTHER
        name = name[:MAX_NAME_CHARS]
        if name in self._names:
            return name
        if len(self._names) < self.max_functions:
            self._names.add(name)
            return name
        return OTHER

    def task_ran(self, name, duration) -> bool:
        """A worker reported a run of a task of ``name`` that took ``duration`` seconds
        (it may have raised; retried runs count too). False if ``duration`` is no valid
        number of seconds (then only ``invalid_durations`` counts it)."""
        try:
            histogram = self.durations.get(name)    # a known name that is its own label
        except TypeError:
            histogram = None
        if histogram is None:
            key = self.label(name)
            histogram = self.durations.get(key)
            if histogram is None:
                histogram = self.durations[key] = Histogram(self.duration_buckets)
        if histogram.observe(duration):
            return True
        self.invalid_durations += 1
        return False

    def task_finished(self, name, failed: bool) -> None:
        """A task of ``name`` reached its end: done, or failed (on a worker, or by the
        scheduler: an argument failed, no node can run it, its worker died)."""
        try:
            counts = self.finished.get(name)        # a known name that is its own label
        except TypeError:
            counts = None
        if counts is None:
            key = self.label(name)
            counts = self.finished.get(key)
            if counts is None:
                counts = self.finished[key] = {"done": 0, "failed": 0}
        counts["failed" if failed else "done"] += 1

    def task_assigned(self, waited: float) -> None:
        """A ready task went to a worker after ``waited`` seconds in the queue."""
        self.queue_wait.observe(waited)

    def functions(self) -> Iterator[str]:
        """Every label with figures, in the order first seen."""
        seen = dict.fromkeys(self.finished)
        seen.update(dict.fromkeys(self.durations))
        return iter(seen)
