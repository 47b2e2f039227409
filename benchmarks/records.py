"""The records a child process reports to the parent, one JSON line each.

A child (``core.py --child BACKEND``) prints every result on stdout as soon as
it has it, as ``RESULT_PREFIX`` followed by a JSON object, so that a backend
that crashes or hangs half-way still reports what it finished.  The parent
(``runner.py``) keeps the lines with the prefix and ignores everything else a
backend may print.  Kinds: ``meta`` (version), ``samples`` (metric, values),
``error`` (workload, message), ``note`` (message), ``unavailable`` (reason).
"""

from __future__ import annotations

import json
from typing import Any

RESULT_PREFIX = "@@BENCH@@ "


def emit(**record: Any) -> None:
    print(RESULT_PREFIX + json.dumps(record), flush=True)


def note(message: str) -> None:
    """A remark for the report's notes (e.g. how zero-copy was established)."""
    emit(kind="note", message=message)
