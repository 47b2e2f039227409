"""Task output on the driver: lines with their task's prefix, and live progress bars.

Workers send what tasks print as finished text and live rows (``msg.Output``; see
``graphstore.worker.output``). ``OutputRenderer`` prints them:

* On a terminal, the live rows (a tqdm bar in a task, each task's apart) stay together
  at the bottom, one row per bar, redrawn in place with cursor moves; finished lines are
  printed above them. While that area is shown the driver's own ``sys.stdout`` and
  ``sys.stderr`` writes (``print``, a tqdm bar such as ``graphstore.progress``'s) go
  through it too, through the ``TerminalStream``s that stand in for them: the driver's
  lines are printed above the area and its bar is drawn as the area's last row, instead
  of being drawn over. With no area shown they pass straight through.
* Anywhere else (a pipe, a file, a notebook, pytest's capture) only finished text is
  printed: a bar once, in its final state, when it closes or its task ends; a partial
  line that a task flushed at once, then the rest of it (its prefix again only if
  another task's text came between).

Thread-safety: every public method may be called from any thread (the loop thread
receives output, user threads write through the terminal streams); one lock orders them.
"""
from __future__ import annotations

import os
import sys
import threading
import time
from typing import Callable

from graphstore.core.terminal import LineScreen, clip

#: Stream names a task's output may carry.
_STREAMS = ("stdout", "stderr")


class _Source:
    """One task's (or actor call's) output on one stream, as the driver holds it."""
    __slots__ = ("prefix", "stream", "open", "live")

    def __init__(self, prefix: str, stream: str):
        self.prefix = prefix
        self.stream = stream
        self.open = ""                    # a line begun (flush), not finished yet
        self.live: list[str] = []          # rows redrawn in place


class OutputRenderer:
    """Prints task output on the driver; see the module docstring."""

    def __init__(self, schedule: Callable[[float, Callable[[], None]], None] | None = None,
                 streams: dict | None = None, width: int | None = None):
        """``schedule(delay, fn)`` calls ``fn`` later on some thread (for newlines of
        the driver's own that may be tqdm's cursor moves). For tests: ``streams``,
        ``{"stdout": (file, is_terminal), "stderr": ...}`` (by default ``sys.stdout``
        and ``sys.stderr`` as they are at each use), and the terminal's ``width``."""
        self._lock = threading.RLock()
        self._schedule = schedule
        self._fixed_streams = streams
        self._fixed_width = width
        self._sources: dict[tuple, _Source] = {}
        #: Finished text to print, in order: (stream name or "driver", text).
        self._writes: list[tuple[str, str]] = []
        #: Not on a terminal: the source whose partial line ends each stream.
        self._dangling: dict[str, tuple | None] = {}
        #: The rows of the area as last drawn (the cursor is on the line below them).
        self._drawn: list[str] = []
        #: The driver's own output on the terminal (through the TerminalStreams).
        self._screen = LineScreen()
        self._settle_armed = False
        self._installed: dict[str, TerminalStream] = {}

    # -- the driver's streams ---------------------------------------------------------
    def install(self) -> None:
        """Stand in for ``sys.stdout``/``sys.stderr`` where they are terminals."""
        with self._lock:
            for name in _STREAMS:
                current = getattr(sys, name)
                real = current.real if isinstance(current, TerminalStream) else current
                if _isatty(real):
                    proxy = TerminalStream(self, name, real)
                    setattr(sys, name, proxy)
                    self._installed[name] = proxy

    def uninstall(self) -> None:
        """Give ``sys.stdout``/``sys.stderr`` back (those still ours)."""
        with self._lock:
            for name, proxy in self._installed.items():
                if getattr(sys, name) is proxy:
                    setattr(sys, name, proxy.real)
            self._installed.clear()

    def _stream(self, name: str):
        """(file, is it a terminal) for a stream name.

        While this renderer stands in for the stream, the terminal it wraps, whatever
        ``sys.<name>`` is now: a tee or redirect the user put in front of the stand-in
        writes through it into this renderer, and writing back into them would loop."""
        if self._fixed_streams is not None:
            return self._fixed_streams[name]
        proxy = self._installed.get(name)
        if proxy is not None:
            return proxy.real, True
        current = getattr(sys, name)
        if isinstance(current, TerminalStream):
            return current.real, True
        return current, _isatty(current)

    # -- task output (loop thread) ----------------------------------------------------
    def receive(self, source: bytes, prefix: str, stream: str, text: str,
                live: list | None) -> None:
        """A task's output: finished ``text`` and its ``live`` rows (None: unchanged).
        Printed by the next ``render()``: the caller renders at once when there is
        finished text (so it comes before what the driver does with the task's result),
        and once per burst for live rows alone."""
        if stream not in _STREAMS:
            stream = "stdout"
        key = (source, stream)
        with self._lock:
            entry = self._sources.get(key)
            if entry is None:
                entry = self._sources[key] = _Source(prefix, stream)
            terminal = self._stream(stream)[1]
            if text:
                if terminal:
                    lines = (entry.open + text).split("\n")
                    entry.open = lines.pop()
                    if lines:
                        self._writes.append(
                            (stream, "".join(f"{prefix} {line}\n" for line in lines)))
                else:
                    self._print_text(key, prefix, stream, text)
            if live is not None:
                entry.live = list(live)
            if not entry.open and not entry.live and self._dangling.get(stream) != key:
                del self._sources[key]

    def _print_text(self, key: tuple, prefix: str, stream: str, text: str) -> None:
        """Not on a terminal: ``text`` as lines with the prefix, continuing a partial
        line of the same source if nothing came between."""
        out = []
        dangling = self._dangling.get(stream)
        if dangling is not None and dangling != key:
            out.append("\n")               # end another source's partial line
        lines = text.split("\n")
        for i, line in enumerate(lines):
            last = i == len(lines) - 1
            if last and not line:
                break
            out.append(line if i == 0 and dangling == key else f"{prefix} {line}")
            if not last:
                out.append("\n")
        self._dangling[stream] = key if lines[-1] else None
        self._writes.append((stream, "".join(out)))

    def render(self) -> None:
        """Print what was received, and redraw the live area if it changed."""
        with self._lock:
            self._render()

    def _render(self) -> None:
        writes, self._writes = self._writes, []
        area_name = next((n for n in ("stderr", "stdout") if self._stream(n)[1]), None)
        if area_name is None:
            for name, text in writes:
                _write(self._stream("stdout" if name == "driver" else name)[0], text)
            self._drawn = []
            return
        area = self._stream(area_name)[0]
        on_terminal = []
        for name, text in writes:
            file, terminal = (area, True) if name == "driver" else self._stream(name)
            if terminal:
                on_terminal.append((file, text))
            else:
                _write(file, text)
        width = self._fixed_width or _width(area)
        rows = [clip(row, width - 1) for row in self._rows()]
        if not on_terminal and rows == self._drawn:
            return
        for proxy in self._installed.values():   # the driver's own text, written raw
            _flush(proxy.real)
        # Back to the first row of the area (or of what the driver draws itself when
        # there is none) and clear the screen below.
        up = len(self._drawn) if self._drawn else self._screen.cursor
        pieces = ["\r" + (f"\x1b[{up}A" if up else "") + "\x1b[J"]
        for file, text in on_terminal:
            if file is area:
                pieces.append(text)
            else:
                _write(area, "".join(pieces))
                pieces = []
                _write(file, text)
        pieces.extend(row + "\n" for row in rows)
        _write(area, "".join(pieces))
        self._drawn = rows

    def _rows(self) -> list[str]:
        """The live area: tasks' partial lines and bars, then the driver's own."""
        rows = []
        for entry in self._sources.values():
            if not self._stream(entry.stream)[1]:
                continue
            if entry.open:
                rows.append(f"{entry.prefix} {entry.open}")
            rows.extend(f"{entry.prefix} {row}" for row in entry.live)
        rows.extend(self._screen.live())
        partial = self._screen.partial()
        if partial:
            rows.append(partial)
        return rows

    # -- the driver's own output (user threads) ---------------------------------------
    def driver_write(self, name: str, text: str, real=None) -> None:
        """The driver wrote ``text`` to a terminal stream (``real``, the one its stand-in
        wraps): straight through while no area is shown, else its finished lines above
        the area, the rest in it."""
        with self._lock:
            self._screen.write(text, time.monotonic())
            finished = self._screen.take()
            if not self._drawn:
                (real if real is not None else self._stream(name)[0]).write(text)
            else:
                if finished:
                    self._writes.append(("driver", finished))
                self._render()
            self._arm_settle()

    def driver_flush(self, name: str, real=None) -> None:
        with self._lock:
            self._screen.flush(hand_on=False)
            if not self._drawn:
                _flush(real if real is not None else self._stream(name)[0])
            else:
                self._render()
            self._arm_settle()

    def _arm_settle(self) -> None:
        since = self._screen.pending_since
        if since is None or self._settle_armed or self._schedule is None:
            return
        self._settle_armed = True
        delay = max(0.0, since + self._screen.settle_seconds - time.monotonic())
        self._schedule(delay, self.settle)

    def settle(self) -> None:
        """Newlines of the driver's own that were not tqdm's moves after all."""
        with self._lock:
            self._settle_armed = False
            if self._screen.settle(time.monotonic()):
                finished = self._screen.take()
                if self._drawn:
                    if finished:
                        self._writes.append(("driver", finished))
                    self._render()
            self._arm_settle()

    # -- the end ----------------------------------------------------------------------
    def close(self) -> None:
        """Print what is left and give the streams back. A bar whose task never
        finished it (its worker died, or shutdown came first) is printed in its last
        state where it was not shown live; on a terminal it stays as drawn."""
        with self._lock:
            for key, entry in list(self._sources.items()):
                if self._stream(entry.stream)[1]:
                    continue
                if self._dangling.get(entry.stream) == key:
                    self._writes.append((entry.stream, "\n"))
                    self._dangling[entry.stream] = None
                for row in entry.live:
                    self._writes.append((entry.stream, f"{entry.prefix} {row}\n"))
            self._render()
            self._sources.clear()
            self._dangling.clear()
            self._drawn = []
            self._screen = LineScreen()
        self.uninstall()


class TerminalStream:
    """Stands in for the driver's ``sys.stdout`` or ``sys.stderr`` when it is a
    terminal: writes go through the ``OutputRenderer``, everything else is the real
    stream's (``real``)."""

    def __init__(self, renderer: OutputRenderer, stream: str, real):
        self._renderer = renderer
        self._stream = stream
        self.real = real

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        self._renderer.driver_write(self._stream, text, self.real)
        return len(text)

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        self._renderer.driver_flush(self._stream, self.real)

    def isatty(self) -> bool:
        return True

    def fileno(self) -> int:
        return self.real.fileno()

    def __getattr__(self, name: str):
        return getattr(self.real, name)


def _isatty(file) -> bool:
    try:
        return bool(file.isatty())
    except Exception:
        return False


def _width(file) -> int:
    try:
        return os.get_terminal_size(file.fileno()).columns or 80
    except Exception:
        return 80


def _write(file, text: str) -> None:
    if not text:
        return
    try:
        file.write(text)
        file.flush()
    except Exception:
        pass


def _flush(file) -> None:
    try:
        file.flush()
    except Exception:
        pass
