"""What a program draws on a terminal, as lines: finished ones and live ones.

A task's ``print()`` output is lines; a tqdm bar is one line redrawn in place: ``"\\r"``
and the new state, again and again, a newline only when the bar closes. Nested bars, and
a bar of a second task in the same process (tqdm numbers the bars of a whole process),
are drawn a few rows lower with tqdm's cursor moves: newlines down, ``ESC[A`` back up.

``LineScreen`` reads such a stream and tells apart what is *finished* (lines that will
not change: hand them on once) from what is *live* (rows that may still be redrawn: show
their latest state). A worker keeps one per running task and stream
(``graphstore.worker.output``); a driver on a terminal keeps one for its own output
(``graphstore.runtime.output``), to draw it together with the tasks' bars.

A lone newline is ambiguous: ``print()`` ends its line with a ``write("\\n")``, and tqdm
moves to a lower row with the same ``write("\\n")``. tqdm follows that newline with a
``flush()`` and comes back up (``ESC[A``) at once; ``print()`` does not. So a newline
written alone from a bar row (or a fresh, empty one) is a *pending* move down: the next write (without a flush
between) or plain text (not redrawn after ``"\\r"``) makes it a real newline; coming back
up makes it a cursor move; if neither happens within ``settle`` seconds
(``LineScreen.settle``) it is a real newline after all.

Pure: no I/O, no clock (callers pass ``now``), not thread-safe (one owner at a time).
"""
from __future__ import annotations

import re
import unicodedata

#: Seconds after which a newline that was not followed by tqdm's move back up counts as
#: a finished line (tqdm moves back within microseconds).
SETTLE_SECONDS = 0.2
#: Rows one screen keeps live at most; a program that goes further down finishes the
#: rows above.
MAX_ROWS = 64
#: Characters a live row keeps at most (a terminal row is far shorter).
MAX_ROW_CHARS = 2000

# CSI sequences (ESC [ params final), other two-character escapes, "\r", "\n", runs of
# anything else.
_TOKENS = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[@-Z\\-_]|\x1b|\r|\n|[^\r\n\x1b]+")
_ESCAPE = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[@-Z\\-_]|\x1b")


class _Row:
    __slots__ = ("text", "bar", "sent", "touched", "stale")

    def __init__(self):
        self.text = ""        # what the row shows now
        self.bar = False      # redrawn in place ("\r"): only its last state matters
        self.sent = 0         # characters already handed on as a partial line (flush)
        self.touched = False  # written to (a row only passed through is not)
        #: The cursor came down onto this row's old text and nothing rewrote it yet: a
        #: bar that closed on a row above it (tqdm's ``leave``) left it behind.
        self.stale = False


class LineScreen:
    """The rows one program (one task's stdout or stderr) drew, finished and live."""

    def __init__(self, settle: float = SETTLE_SECONDS):
        self.settle_seconds = settle
        self._rows = [_Row()]
        self._cursor = 0
        self._cr = False                # after "\r": the next text replaces the row
        #: Rows the cursor went down by lone newlines that may still be tqdm's moves.
        self._pending = 0
        self._pending_since = 0.0
        self._unflushed_newline = False
        self._out: list[str] = []

    # -- input --------------------------------------------------------------------------
    def write(self, text: str, now: float) -> None:
        """What the program wrote."""
        if not text:
            return
        if self._unflushed_newline:
            # A lone newline followed by a write, not a flush: print()'s, not tqdm's move
            # (tqdm flushes after moving). A move back up is the exception.
            self._unflushed_newline = False
            if not text.startswith("\x1b["):
                self._resolve()
        if text.count("\n") == len(text):
            self._newlines(len(text), now)
            return
        row = self._rows[self._cursor]
        if (self._pending == 0 and not row.bar and (not self._cr or not row.text)
                and self._cursor == len(self._rows) - 1
                and "\r" not in text and "\x1b" not in text):
            self._cr = False
            self._plain(text)              # the common case: print()ed text
            return
        saw_cr = False
        for token in _TOKENS.findall(text):
            first = token[0]
            if first == "\n":
                self._pending = 0          # a newline among other text is a real one
                self._down(1)
            elif first == "\r":
                self._carriage_return()
                saw_cr = True
            elif first == "\x1b":
                self._escape(token, now)
            else:
                self._text(token, saw_cr)
        self._commit_above()

    def write_fast(self, text: str) -> str | None:
        """``write`` then ``take`` for the common case, plain text on a plain row: the
        finished text; None (nothing done) when ``write`` is needed instead."""
        if self._pending or self._out or len(self._rows) != 1 or "\r" in text \
                or "\x1b" in text:
            return None
        row = self._rows[0]
        if row.bar or row.stale or (self._cr and row.text):
            return None
        self._cr = False
        if "\n" not in text:
            row.text += text
            row.touched = True
            return ""
        if not row.touched and text.count("\n") == len(text):
            return None                    # a lone newline from a fresh row: tqdm's?
        head, _, tail = text.rpartition("\n")
        finished = row.text[row.sent:] + head + "\n"
        row.text, row.sent, row.touched = tail, 0, bool(tail)
        return finished

    def flush(self, hand_on: bool = True) -> None:
        """The program flushed: a partial plain line is handed on now (``take``), unless
        not ``hand_on`` (it then stays ``partial()`` until its newline)."""
        self._unflushed_newline = False
        if self._pending:
            return
        row = self._rows[self._cursor]
        if self._cr and row.text and not row.bar:
            self._mark_bar(row)            # print(..., end="\r", flush=True)
        if hand_on and not row.bar and len(row.text) > row.sent:
            self._out.append(row.text[row.sent:])
            row.sent = len(row.text)

    def settle(self, now: float, *, force: bool = False) -> bool:
        """Newlines that tqdm did not come back from within ``settle`` seconds are real
        (``force``: they are, whatever the time: the program wrote elsewhere since);
        True if that finished rows."""
        if self._pending and (force or now - self._pending_since >= self.settle_seconds):
            self._resolve()
            return True
        return False

    # -- output -------------------------------------------------------------------------
    def take(self) -> str:
        """Finished text since the last call: whole lines, and after ``flush()`` the
        rest of a partial plain line (continued by the next text)."""
        if not self._out:
            return ""
        text = "".join(self._out)
        self._out.clear()
        return text

    def live(self) -> list[str]:
        """The rows that may still change (bars), top to bottom, trailing spaces cut."""
        if len(self._rows) == 1 and not self._rows[0].bar:
            return []
        rows = []
        for i, row in enumerate(self._rows):
            if row.stale or (i == self._cursor and not row.bar):
                continue                   # left behind, or text that comes out finished
            text = row.text.rstrip()
            if text.strip():
                rows.append(text[:MAX_ROW_CHARS])
        return rows

    def partial(self) -> str:
        """The plain line being written (not yet finished, not handed on)."""
        if self._pending:
            return ""
        row = self._rows[self._cursor]
        return "" if row.bar or row.stale else row.text[row.sent:]

    @property
    def cursor(self) -> int:
        """The row the cursor is on, counted from the first row not finished."""
        return self._cursor

    @property
    def pending_since(self) -> float | None:
        """When newlines began that may still be cursor moves (see ``settle``)."""
        return self._pending_since if self._pending else None

    def finish(self) -> str:
        """The program ended: every row as a finished line (a bar in its last state, an
        erased one not at all), and the screen starts afresh."""
        self._pending = 0
        self._commit_above()
        out = self._out
        for i, row in enumerate(self._rows):
            if row.stale:
                continue
            if i == 0 and not row.bar:
                if row.text[row.sent:] or row.sent:
                    out.append(row.text[row.sent:] + "\n")
            elif row.text.strip():
                out.append(row.text.rstrip() + "\n")
        text = "".join(out)
        self.__init__(self.settle_seconds)
        return text

    # -- the model ----------------------------------------------------------------------
    def _plain(self, text: str) -> None:
        row = self._rows[self._cursor]
        head, newline, tail = text.rpartition("\n")
        if newline:
            self._out.append(row.text[row.sent:] + head + "\n")
            row.text, row.sent = tail, 0
            row.touched = bool(tail)       # a fresh row, as after a lone newline
        else:
            row.text += text
            row.touched = True

    def _newlines(self, count: int, now: float) -> None:
        for _ in range(count):
            row = self._rows[self._cursor]
            if row.bar or not row.touched:
                if not self._pending:     # maybe tqdm moving down to a lower bar
                    self._pending_since = now
                self._pending += 1
            else:
                self._pending = 0
            self._down(1)
        self._unflushed_newline = self._pending > 0
        if len(self._rows) > MAX_ROWS:
            self._pending = 0
        self._commit_above()

    def _down(self, count: int) -> None:
        self._cursor += count
        while len(self._rows) <= self._cursor:
            self._rows.append(_Row())
        row = self._rows[self._cursor]
        row.stale = bool(row.text)
        self._cr = True                    # at the start of the row

    def _carriage_return(self) -> None:
        row = self._rows[self._cursor]
        if row.text:
            self._mark_bar(row)
        self._cr = True

    def _mark_bar(self, row: _Row) -> None:
        if row.sent:                       # a partial line was handed on: end it
            self._out.append("\n")
            row.sent = 0
        row.bar = True

    def _escape(self, token: str, now: float) -> None:
        if not token.startswith("\x1b["):
            return
        final, params = token[-1], token[2:-1]
        if final == "m":                   # colours: part of the text
            self._text(token, False)
            return
        count = int(params) if params.isdigit() else 1
        if final == "A":                   # up: tqdm back from a lower bar
            self._cursor = max(0, self._cursor - count)
            self._pending = max(0, self._pending - count)
            self._cr = False
        elif final == "B":
            if not self._pending:
                self._pending_since = now
            self._pending += count
            self._down(count)
        elif final == "K":                 # erase in line
            self._replace(self._rows[self._cursor], "")

    def _text(self, text: str, after_cr: bool) -> None:
        row = self._rows[self._cursor]
        if self._pending and not after_cr:
            # Plain text on a lower row: the newlines were real ones.
            self._resolve()
            row = self._rows[self._cursor]
        if self._cr:
            self._cr = False
            if row.stale:                  # what was left behind is overwritten
                row.text, row.bar = "", False
            elif row.text:
                self._mark_bar(row)
            self._replace(row, text)
            row.bar = row.bar or after_cr
        else:
            row.text += text
            row.stale = False
        row.touched = True
        if row.bar and len(row.text) > 4 * MAX_ROW_CHARS:
            row.text = row.text[-MAX_ROW_CHARS:]   # a bar redrawn without "\r" ever

    @staticmethod
    def _replace(row: _Row, text: str) -> None:
        row.text = text
        row.sent = 0
        row.stale = False

    def _resolve(self) -> None:
        self._pending = 0
        self._commit_above()

    def _commit_above(self) -> None:
        """Rows above the cursor are finished unless the cursor may still come back."""
        if self._pending or self._cursor == 0:
            return
        out = self._out
        for row in self._rows[:self._cursor]:
            if row.stale:
                continue
            if row.bar:
                if row.text.strip():
                    out.append(row.text.rstrip() + "\n")
            else:
                out.append(row.text[row.sent:] + "\n")
        del self._rows[:self._cursor]
        self._cursor = 0


# -- drawing rows on a terminal ----------------------------------------------------------

def display_width(text: str) -> int:
    """Columns ``text`` takes on a terminal (escapes take none, wide characters two)."""
    text = _ESCAPE.sub("", text)
    if text.isascii():
        return len(text)
    return sum(_char_width(c) for c in text)


def clip(text: str, width: int) -> str:
    """``text`` cut to at most ``width`` columns, escapes kept (so colours still end)."""
    if text.isascii() and "\x1b" not in text:
        return text[:width]
    out, used, pos = [], 0, 0
    for match in _ESCAPE.finditer(text):
        used = _clip_run(text[pos:match.start()], width, used, out)
        out.append(match.group())
        pos = match.end()
    _clip_run(text[pos:], width, used, out)
    return "".join(out)


def _clip_run(run: str, width: int, used: int, out: list) -> int:
    for c in run:
        w = _char_width(c)
        if used + w > width:
            return width + 1
        out.append(c)
        used += w
    return used


def _char_width(c: str) -> int:
    if c.isascii():
        return 1 if c.isprintable() else 0
    if unicodedata.combining(c):
        return 0
    return 2 if unicodedata.east_asian_width(c) in "WF" else 1
