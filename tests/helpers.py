"""Helpers shared by several test modules (pytest puts this folder on sys.path)."""
from __future__ import annotations

import os
import re
import socket
import time
from pathlib import Path

import graphstore
from graphstore.core import shm


def shm_files(prefix: str) -> list[str]:
    """Names in the shared-memory directory that start with ``prefix``."""
    return sorted(n for n in os.listdir(shm.SHM_DIR) if n.startswith(prefix))


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, not reaped yet, counts as dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def wait_for(predicate, timeout: float = 20.0, interval: float = 0.05):
    """Poll ``predicate`` until it returns something true (returned) or ``timeout``
    seconds pass (then its last value is returned). The one poller of the test suite."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return predicate()


@graphstore.remote
def gated(path, value=None):
    """Return ``value`` once the file ``path`` exists (at most 60 s): holds a task
    pending without depending on timing."""
    if not wait_for(lambda: os.path.exists(path), timeout=60, interval=0.005):
        raise TimeoutError(f"gate {path} never opened")
    return value


class Gate:
    """A file whose creation releases ``gated`` tasks."""

    def __init__(self, path: Path):
        self.path = str(path)

    def open(self) -> None:
        Path(self.path).touch()


def recv_exact(sock: socket.socket, n: int) -> bytes:
    """Exactly ``n`` bytes from a raw socket (for tests that speak the wire by hand)."""
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError(f"closed after {len(data)} of {n} bytes")
        data += chunk
    return data


EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(run_driver, name: str, *args: str, timeout: float = 120):
    """Run ``examples/<name>`` to the end in a driver process of its own (with ``args``
    as its command line); returns the ``DriverRun``, checked to have succeeded."""
    argv = [name, *args]
    run = run_driver(f"""
        import runpy, sys
        sys.argv = {argv!r}
        runpy.run_path({str(EXAMPLES / name)!r}, run_name="__main__")
    """, timeout=timeout)
    assert run.returncode == 0, run.stderr
    return run


# -- what a terminal shows -------------------------------------------------------------

class Terminal:
    """Replays ``\\r``, ``\\n``, ``ESC[nA``, ``ESC[J`` and ``ESC[K`` onto rows."""

    @classmethod
    def shows(cls, text: str) -> list[str]:
        """The lines a terminal shows after ``text`` was written to it."""
        terminal = cls()
        terminal.feed(text)
        return terminal.lines()

    def __init__(self):
        self.rows = [""]
        self.row = self.col = 0

    def feed(self, text: str) -> None:
        for token in re.findall(r"\x1b\[\d*[A-Za-z]|\r|\n|[^\r\n\x1b]+", text):
            if token == "\r":
                self.col = 0
            elif token == "\n":
                self.row += 1
                self.col = 0
                if self.row == len(self.rows):
                    self.rows.append("")
            elif token.startswith("\x1b["):
                n, final = int(token[2:-1] or 1), token[-1]
                if final == "A":
                    self.row = max(0, self.row - n)
                elif final == "J":
                    self.rows[self.row] = self.rows[self.row][:self.col]
                    del self.rows[self.row + 1:]
                elif final == "K":
                    self.rows[self.row] = self.rows[self.row][:self.col]
            else:
                line = self.rows[self.row].ljust(self.col)
                self.rows[self.row] = line[:self.col] + token + line[self.col + len(token):]
                self.col += len(token)

    def lines(self) -> list[str]:
        rows = [r.rstrip() for r in self.rows]
        while rows and not rows[-1]:
            rows.pop()
        return rows
