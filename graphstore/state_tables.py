"""The tables ``graphstore list`` prints, in the spirit of ``ray list``: one row per
task, actor, object or worker, with the columns that matter for that kind.

Pure formatting of the scheduler's ``ListState`` reply (see ``scheduler/listing.py``), so
it is unit-tested without a cluster; ``--json`` prints the rows as they came instead.
"""
from __future__ import annotations

import time

from graphstore.core.formatting import format_bytes


def _clock(timestamp) -> str:
    if not timestamp:
        return "-"
    return time.strftime("%H:%M:%S", time.localtime(timestamp))


def _seconds(value) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.0f}ms" if value < 1 else f"{value:.1f}s"


def _short(value, width: int = 12) -> str:
    """A worker's id cut to 12 characters: each worker's ids start with a random prefix
    of its own (tasks, actors and objects of one driver share theirs: shown whole)."""
    if value is None:
        return "-"
    text = str(value)
    return text[:width]


def _where(row: dict) -> str:
    where = row.get("where") or []
    return "; ".join(where) if where else "-"


#: kind -> [(header, how to show a row's cell)].
COLUMNS = {
    "tasks": [
        ("TASK_ID", lambda r: r["id"]),
        ("NAME", lambda r: r.get("name") or "-"),
        ("STATE", lambda r: r["state"]),
        ("TYPE", lambda r: r.get("type", "task")),
        ("WORKER", lambda r: _short(r.get("worker") or r.get("actor"))),
        ("NODE", lambda r: r.get("node") or "-"),
        ("SUBMITTED", lambda r: _clock(r.get("submitted_at"))),
        ("DURATION", lambda r: _seconds(r.get("duration"))),
        ("ERROR", lambda r: (r.get("error") or "")[:60]),
    ],
    "actors": [
        ("ACTOR_ID", lambda r: r["id"]),
        ("CLASS", lambda r: r.get("class_name") or "-"),
        ("NAME", lambda r: r.get("name") or "-"),
        ("STATE", lambda r: r["state"]),
        ("PID", lambda r: str(r.get("pid") or "-")),
        ("WORKER", lambda r: _short(r.get("worker"))),
        ("NODE", lambda r: r.get("node") or "-"),
        ("RESTARTS", lambda r: str(r.get("restarts", 0))),
        ("PENDING_CALLS", lambda r: str(r.get("pending_calls", 0))),
    ],
    "objects": [
        ("OBJECT_ID", lambda r: r["id"]),
        ("STATE", lambda r: r["state"]),
        ("SIZE", lambda r: format_bytes(r.get("size"))),
        ("MADE_BY", lambda r: r.get("name") or "put"),
        ("WHERE", _where),
        ("CREATED", lambda r: _clock(r.get("created_at"))),
    ],
    "workers": [
        ("WORKER_ID", lambda r: _short(r["id"])),
        ("STATE", lambda r: r["state"]),
        ("PID", lambda r: str(r["pid"])),
        ("HOST", lambda r: r.get("name") or "-"),
        ("NODE", lambda r: r.get("node") or "-"),
        ("CPUS", lambda r: f"{r.get('num_cpus', 0):g}"),
        ("RUNNING", lambda r: str(r.get("running", 0))),
        ("STORE", lambda r: f"{format_bytes(r.get('store_used'))}/"
                            f"{format_bytes(r.get('store_capacity'))}"),
        ("STARTED", lambda r: _clock(r.get("registered_at"))),
    ],
}


def format_table(headers: list[str], rows: list[list[str]]) -> str:
    """Columns padded to their widest cell, two spaces apart; the last one unpadded."""
    widths = [max([len(h)] + [len(row[i]) for row in rows]) for i, h in enumerate(headers)]

    def line(cells):
        padded = [c.ljust(w) for c, w in zip(cells[:-1], widths[:-1])] + [cells[-1]]
        return "  ".join(padded).rstrip()
    return "\n".join([line(headers)] + [line(row) for row in rows])


def format_listing(reply: dict) -> str:
    """The table for a ``ListState`` reply, with a line saying how many rows and
    whether more matched than ``--limit`` let through."""
    kind, rows = reply["kind"], reply["rows"]
    columns = COLUMNS[kind]
    table = format_table([h for h, _ in columns],
                         [[show(row) for _, show in columns] for row in rows])
    note = f"{len(rows)} {kind}"
    if reply.get("truncated"):
        note += " shown; more match: raise --limit or narrow --state/--name"
    return f"{table}\n\n{note}" if rows else f"no {kind} match"
