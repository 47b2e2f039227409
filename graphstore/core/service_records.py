"""Records of the services started by hand on this host, so ``graphstore stop`` can end
them and nothing else.

``graphstore scheduler`` and ``graphstore worker`` each write a small JSON file (role,
pid, the process's start time, its log file) under
``/tmp/graphstore-sessions/cli-<uid>/processes/`` when they start and remove it when they
exit. A local cluster's processes (started by ``init()``, with ``--session``) write none,
so ``graphstore stop`` never touches a driver's cluster. A record is trusted only for a
live process of this user whose start time matches it: a pid reused since, a stale file,
or another user's process is never signalled.
"""
from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from graphstore.core.logs import sessions_root

#: Seconds ``stop_services`` waits after SIGTERM before it sends SIGKILL.
DEFAULT_GRACE_SECONDS = 10.0


def records_dir() -> Path:
    return sessions_root() / f"cli-{os.getuid()}" / "processes"


def process_start_time(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot, from /proc), or None if it
    does not run (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if not fields or fields[0] == "Z":
        return None
    try:
        return int(fields[19])         # field 22 of stat, counted after "pid (comm)"
    except (IndexError, ValueError):
        return None


def write_record(role: str, **details) -> Path | None:
    """Record this process as a service of ``role`` ("scheduler", "worker"); returns the
    file (to ``remove_record`` at exit), or None if it could not be written."""
    directory = records_dir()
    pid = os.getpid()
    record = {"role": role, "pid": pid, "uid": os.getuid(),
              "start_time": process_start_time(pid), "started_at": time.time(), **details}
    path = directory / f"{role}-{pid}.json"
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(record, f)
        os.replace(tmp, path)
    except OSError:
        return None
    return path


def remove_record(path: Path | None) -> None:
    if path is None:
        return
    try:
        path.unlink()
    except OSError:
        pass


def live_records() -> list[dict]:
    """Records of services of this user that still run, schedulers last; stale records
    (the process is gone or the pid was reused) are deleted."""
    found = []
    try:
        paths = sorted(records_dir().glob("*.json"))
    except OSError:
        return []
    for path in paths:
        try:
            if path.stat().st_uid != os.getuid():
                continue
            record = json.loads(path.read_text())
            pid = int(record["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if _is_recorded_process(pid, record):
            record["record"] = str(path)
            found.append(record)
        else:
            remove_record(path)
    found.sort(key=lambda r: (r.get("role") == "scheduler", r["pid"]))
    return found


def _is_recorded_process(pid: int, record: dict) -> bool:
    started = process_start_time(pid)
    if started is None or started != record.get("start_time"):
        return False
    try:
        return os.stat(f"/proc/{pid}").st_uid == os.getuid()
    except OSError:
        return False


def _children() -> dict[int, list[int]]:
    """Parent pid -> its children's pids, from /proc."""
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        tree.setdefault(ppid, []).append(int(entry))
    return tree


def _descendants(pid: int, tree: dict[int, list[int]]) -> list[int]:
    found, todo = [], list(tree.get(pid, ()))
    while todo:
        child = todo.pop()
        found.append(child)
        todo.extend(tree.get(child, ()))
    return found


def stop_services(grace: float = DEFAULT_GRACE_SECONDS,
                  pids: "set[int] | None" = None) -> list[dict]:
    """SIGTERM every recorded service of this user on this host (with ``pids``: only
    those with these pids, as ``graphstore down`` recorded them), SIGKILL those still
    running after ``grace`` seconds; returns their records, each with ``"how"``:
    "terminated" or "killed". Their actor and task processes (children of a worker)
    are waited for too, and killed if they outlive the grace period."""
    records = live_records()
    if pids is not None:
        records = [r for r in records if r["pid"] in pids]
    tree = _children()
    children = [{"pid": child, "start_time": process_start_time(child)}
                for record in records for child in _descendants(record["pid"], tree)]
    for record in records:
        record["how"] = "terminated"
        _signal(record, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not any(_is_recorded_process(r["pid"], r) for r in records):
            break
        time.sleep(0.05)
    while time.monotonic() < deadline:
        if not any(_is_recorded_process(c["pid"], c) for c in children):
            break
        time.sleep(0.05)
    for record in [*records, *children]:
        if _is_recorded_process(record["pid"], record):
            record["how"] = "killed"
            _signal(record, signal.SIGKILL)
    for record in [*records, *children]:
        for _ in range(100):                # SIGKILL is prompt; a moment to be reaped
            if not _is_recorded_process(record["pid"], record):
                break
            time.sleep(0.02)
        if "record" in record:
            remove_record(Path(record["record"]))
    return records


def _signal(record: dict, sig: int) -> None:
    if not _is_recorded_process(record["pid"], record):
        return
    try:
        os.kill(record["pid"], sig)
    except (ProcessLookupError, PermissionError):
        pass
