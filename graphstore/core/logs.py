"""The log of every graphstore process: where it goes, what a line looks like, and
reading it back for ``graphstore logs``.

A scheduler or worker logs to stderr (as before) and to a file of its own in the log
directory of its host, rotated so it never grows past ``MAX_LOG_BYTES`` times
``LOG_BACKUPS + 1``. With ``log_format="json"`` every line, on stderr and in the file, is
one JSON object: time, level, logger, message, and the ids of what the line is about
(task, actor, worker, node) where this process knows them.

Ids come from two places: ``set_process_ids`` (a worker's own id and node, an actor
process's actor) and a task-id source the process registers (``set_task_id_source``),
read on the logging thread, so a line logged inside a task carries that task's id.
``read_log`` serves a byte range or the last lines of a log file; it is pure file I/O,
so the scheduler and the workers answer log requests with the same function.
"""
from __future__ import annotations

import datetime
import json
import logging
import logging.handlers
import os
import sys
import tempfile
from pathlib import Path
from typing import Callable

#: Values of the ``log_format`` setting.
LOG_FORMATS = ("text", "json")
#: Bytes of one log file before it is rotated, and how many rotated files are kept.
MAX_LOG_BYTES = 10 * 1024 * 1024
LOG_BACKUPS = 3
#: The most bytes one ``read_log`` call returns (a request's reply stays small).
MAX_READ_BYTES = 1024 * 1024

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s"

_process_ids: dict[str, str] = {}
_task_id_source: Callable[[], "bytes | None"] | None = None
_log_file: Path | None = None


def sessions_root() -> Path:
    """Where graphstore keeps session directories on this host (logs, process records)."""
    return Path(tempfile.gettempdir()) / "graphstore-sessions"


def default_log_dir(session: str | None) -> Path:
    """A local cluster's processes log in its session directory; processes started by
    hand (``graphstore scheduler``/``worker``) in one directory per user."""
    if session:
        return sessions_root() / session / "logs"
    return sessions_root() / f"cli-{os.getuid()}" / "logs"


def actor_log_name(pid: int) -> str:
    """The log file of an actor process, in its worker's log directory."""
    return f"actor-{int(pid)}.log"


def check_log_format(value) -> str:
    if value not in LOG_FORMATS:
        raise ValueError(f"log_format must be one of {', '.join(LOG_FORMATS)}, got {value!r}")
    return value


# -- ids ----------------------------------------------------------------------------------

def set_process_ids(**ids: "bytes | str | None") -> None:
    """Ids every line of this process carries (``worker_id``, ``node_id``, ``actor_id``);
    bytes are shown in hex, None removes one."""
    for name, value in ids.items():
        if value is None:
            _process_ids.pop(name, None)
        else:
            _process_ids[name] = value.hex() if isinstance(value, bytes) else str(value)


def set_task_id_source(source: "Callable[[], bytes | None] | None") -> None:
    """``source()`` gives the id of the task the calling thread runs, or None."""
    global _task_id_source
    _task_id_source = source


class IdsFilter(logging.Filter):
    """Adds ``task_id``, ``actor_id``, ``worker_id`` and ``node_id`` to each record
    (None where unknown); never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        task_id = None
        source = _task_id_source
        if source is not None:
            try:
                task_id = source()
            except Exception:
                task_id = None
        record.task_id = task_id.hex() if isinstance(task_id, bytes) else task_id
        for name in ("actor_id", "worker_id", "node_id"):
            if not hasattr(record, name) or getattr(record, name) is None:
                setattr(record, name, _process_ids.get(name))
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (ISO 8601, UTC), level, logger, message, pid, the
    ids ``IdsFilter`` added, the scheduler's ``stimulus_id`` when the record carries one,
    and the traceback of an exception if there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.datetime.fromtimestamp(
                record.created, datetime.timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        for name in ("task_id", "actor_id", "worker_id", "node_id", "stimulus_id"):
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        return json.dumps(entry, default=str)


def formatter_for(log_format: str) -> logging.Formatter:
    return JsonFormatter() if check_log_format(log_format) == "json" \
        else logging.Formatter(TEXT_FORMAT)


# -- handlers -----------------------------------------------------------------------------

def configure_process_logging(level: str = "INFO", log_format: str = "text",
                              log_file: "str | Path | None" = None) -> Path | None:
    """The root logger of a service process: stderr, and ``log_file`` (rotated) if given.
    Returns the log file, or None if it could not be opened (a warning says why: a
    service runs on without it)."""
    global _log_file
    formatter = formatter_for(log_format)
    root = logging.getLogger()
    root.setLevel(getattr(logging, str(level).upper(), logging.INFO))
    ids = IdsFilter()
    stream = logging.StreamHandler(sys.stderr)
    handlers: list[logging.Handler] = [stream]
    problem = None
    if log_file is not None:
        path = Path(log_file)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            handlers.append(logging.handlers.RotatingFileHandler(
                path, maxBytes=MAX_LOG_BYTES, backupCount=LOG_BACKUPS, encoding="utf-8"))
            _log_file = path
        except OSError as exc:
            problem = f"cannot write the log file {path}: {exc}; logging to stderr only"
    for handler in handlers:
        handler.setFormatter(formatter)
        handler.addFilter(ids)
        root.addHandler(handler)
    if problem:
        logging.getLogger("graphstore").warning(problem)
    return _log_file


def current_log_file() -> Path | None:
    """This process's log file, if it writes one."""
    return _log_file


# -- reading ------------------------------------------------------------------------------

def read_log(path: "str | Path", offset: int = 0, tail: int = 0,
             max_bytes: int = MAX_READ_BYTES, whole_lines: bool = True) -> dict:
    """Part of a log file: with ``tail``, its last ``tail`` lines; else the bytes from
    ``offset`` on. At most ``max_bytes`` (capped at ``MAX_READ_BYTES``) are returned.

    Returns ``{"path", "size", "start", "end", "data"}``: ``data`` is the text of bytes
    ``start`` to ``end``; the next read from where this one stopped passes
    ``offset=end``. An ``offset`` past the end (the file was rotated meanwhile) starts
    again from 0. ``whole_lines=False`` also returns a last line not ended yet (the log
    of a process that has exited). A missing file raises ``FileNotFoundError``."""
    if type(offset) is not int or offset < 0:
        raise ValueError(f"offset must be a non-negative integer, got {offset!r}")
    if type(tail) is not int or tail < 0:
        raise ValueError(f"tail must be a non-negative integer, got {tail!r}")
    max_bytes = max(1, min(int(max_bytes), MAX_READ_BYTES))
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if tail:
            start = _tail_start(f, size, tail, max_bytes)
        else:
            start = offset if offset <= size else 0
        f.seek(start)
        data = f.read(min(max_bytes, size - start))
    if not tail and whole_lines:
        # A line still being written waits for the next read (unless one line alone
        # fills the read: then it goes out in pieces).
        cut = data.rfind(b"\n")
        if cut >= 0:
            data = data[:cut + 1]
        elif len(data) < max_bytes:
            data = b""
    return {"path": str(path), "size": size, "start": start, "end": start + len(data),
            "data": data.decode("utf-8", errors="replace")}


def _tail_start(f, size: int, lines: int, max_bytes: int) -> int:
    """Offset of the start of the last ``lines`` lines (a final newline ends the last
    line, it does not start a new one), at most ``max_bytes`` before the end."""
    limit = max(0, size - max_bytes)
    pos = size
    newlines = 0
    skip_final = True
    while pos > limit:
        step = min(64 * 1024, pos - limit)
        pos -= step
        f.seek(pos)
        chunk = f.read(step)
        for index in range(len(chunk) - 1, -1, -1):
            if chunk[index] != 0x0A:
                skip_final = False
                continue
            if skip_final and pos + index == size - 1:
                skip_final = False
                continue
            newlines += 1
            if newlines == lines:
                return pos + index + 1
    return limit
