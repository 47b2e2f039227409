"""How far each function's tasks have come: counts per task name, kept as states change.

The status page's progress pane draws one bar per function name (done, running, queued,
failed), as Dask's progress view does per task prefix. The scheduler moves a task's count
from one state to the next where the state changes (``SchedulerState.transition``, ``transitions.py``),
so a poll reads the counts in O(names), never by scanning every task. Pure bookkeeping,
no I/O.

Counts of finished tasks accumulate since the scheduler started. The number of names is
bounded: past ``max_names``, the name seen first among those with nothing live (only done
or failed tasks) is forgotten. Names keep the order they were first seen in, so bars stay
in place from one poll to the next.
"""
from __future__ import annotations

#: The states counted, in the order a row lists them ("assigned" is shown as running).
STATES = ("waiting", "queued", "assigned", "done", "failed")
_INDEX = {state: index for index, state in enumerate(STATES)}
_LIVE = (_INDEX["waiting"], _INDEX["queued"], _INDEX["assigned"])
#: Where each state counts in a row (``add`` and ``move`` return a name's row).
STATE_INDEX = _INDEX
#: The states that keep a row: a name's row is the same list for as long as it has a
#: task in one of them, so the holder of such a task may move its count in the row
#: directly (the scheduler's transitions do, as Dask's tasks keep their TaskGroup).
LIVE_STATES = frozenset(STATES[i] for i in _LIVE)


class TaskProgress:
    """Task counts by name and state."""

    def __init__(self, max_names: int = 1000):
        if max_names < 1:
            raise ValueError(f"max_names must be at least 1, got {max_names}")
        self.max_names = max_names
        #: name -> [waiting, queued, assigned, done, failed], in the order first seen.
        self._counts: dict[str, list[int]] = {}

    def add(self, name: str, state: str) -> list[int]:
        """A new task (or actor call) called ``name`` entered ``state``; returns the
        name's row (see ``LIVE_STATES``)."""
        row = self._counts.get(name)
        if row is None:
            row = self._row(name)
        row[_INDEX[state]] += 1
        if len(self._counts) > self.max_names:
            self._forget_one_finished()
        return row

    def move(self, name: str, old: str, new: str) -> list[int] | None:
        """A task called ``name`` went from ``old`` to ``new``; returns the name's row."""
        if old == new:
            return self._counts.get(name)
        row = self._counts.get(name)
        if row is None:
            row = self._row(name)
        index = _INDEX[old]
        if row[index] > 0:    # a name forgotten while it had live tasks never is; guard
            row[index] -= 1
        row[_INDEX[new]] += 1
        return row

    def _row(self, name: str) -> list[int]:
        row = self._counts.get(name)
        if row is None:
            row = self._counts[name] = [0, 0, 0, 0, 0]
        return row

    def _forget_one_finished(self) -> None:
        for name, row in self._counts.items():
            if not any(row[i] for i in _LIVE):
                del self._counts[name]
                return

    def counts(self, name: str) -> dict[str, int]:
        row = self._counts.get(name, [0, 0, 0, 0, 0])
        return dict(zip(STATES, row))

    def rows(self, limit: int) -> list[dict]:
        """Up to ``limit`` names in the order first seen, each with its counts and total;
        when there are more, those with live tasks are kept first, then the newest."""
        names = list(self._counts)
        if len(names) > limit:
            live = [n for n in names if any(self._counts[n][i] for i in _LIVE)][:limit]
            keep = set(live)
            for name in reversed(names):
                if len(keep) >= limit:
                    break
                keep.add(name)
            names = [n for n in names if n in keep]
        out = []
        for name in names:
            row = self._counts[name]
            record = {"name": name, **dict(zip(STATES, row))}
            record["total"] = sum(row)
            out.append(record)
        return out

    def __len__(self) -> int:
        return len(self._counts)
