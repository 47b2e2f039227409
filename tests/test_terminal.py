"""``graphstore.core.terminal``: what a task draws, as finished lines and live rows.

Pure: no processes, no clock (times are passed in). tqdm draws into a small file object
that feeds a ``LineScreen``, as a worker's task stream does.
"""
from __future__ import annotations

import pytest
from tqdm import tqdm

from graphstore.core.terminal import SETTLE_SECONDS, LineScreen, clip, display_width


class Feed:
    """A file a program writes to; every state the screen went through is kept."""

    def __init__(self):
        self.screen = LineScreen()
        self.now = 0.0
        self.finished: list[str] = []
        self.lives: list[list[str]] = []

    def write(self, text: str) -> int:
        self.screen.write(text, self.now)
        self._collect()
        return len(text)

    def flush(self) -> None:
        self.screen.flush()
        self._collect()

    def _collect(self) -> None:
        text = self.screen.take()
        if text:
            self.finished.append(text)
        if self.screen.pending_since is not None:
            return                 # maybe inside tqdm's move to a lower row: not shown
        live = self.screen.live()
        if not self.lives or self.lives[-1] != live:
            self.lives.append(live)

    def text(self) -> str:
        return "".join(self.finished)

    def finish(self) -> str:
        return self.text() + self.screen.finish()


def bar(file, n=5, **kwargs):
    """A tqdm bar that redraws at every step (no timing involved)."""
    kwargs.setdefault("mininterval", 0)
    kwargs.setdefault("ascii", True)
    return tqdm(range(n), file=file, **kwargs)


def test_printed_lines_come_out_whole_and_at_once():
    f = Feed()
    print("one", file=f)
    print("two\nthree", file=f)
    assert f.text() == "one\ntwo\nthree\n"
    assert f.lives == [[]]
    print(file=f)                  # an empty line: a lone newline from an empty row
    print("four", file=f)
    assert f.text() == "one\ntwo\nthree\n\nfour\n"


def test_a_partial_line_is_handed_on_at_flush_and_continued():
    f = Feed()
    print("loading", end="", file=f)
    assert f.text() == ""                      # not flushed: nothing yet
    f.flush()
    assert f.text() == "loading"
    print("... done", file=f)
    assert f.text() == "loading... done\n"
    assert f.finish() == "loading... done\n"   # nothing more at the end


def test_a_last_line_without_newline_is_finished_when_the_program_ends():
    f = Feed()
    print("no newline", end="", file=f)
    assert f.finish() == "no newline\n"
    f = Feed()
    print("flushed", end="", file=f, flush=True)
    assert f.finish() == "flushed\n"           # the newline that ends the flushed part


def test_a_tqdm_bar_is_one_live_row_then_one_finished_line():
    f = Feed()
    for _ in bar(f, 4, desc="steps"):
        pass
    states = [live for live in f.lives if live]
    assert all(len(live) == 1 for live in states)
    assert list(dict.fromkeys(s[0].split("|")[0] for s in states)) == [
        "steps:   0%", "steps:  25%", "steps:  50%", "steps:  75%", "steps: 100%"]
    # tqdm ended the bar with a lone newline: maybe a move down, until more comes.
    assert f.text() == ""
    print("after", file=f)
    lines = f.text().splitlines()
    assert len(lines) == 2 and lines[1] == "after"
    assert lines[0].startswith("steps: 100%|##########| 4/4")
    assert "\r" not in f.text() and f.screen.live() == []


def test_a_closed_bar_settles_into_a_finished_line():
    f = Feed()
    for _ in bar(f, 3, desc="alone"):
        pass
    assert f.screen.take() == ""
    assert f.screen.pending_since == 0.0
    assert not f.screen.settle(SETTLE_SECONDS / 2)     # tqdm could still come back up
    assert f.screen.settle(SETTLE_SECONDS)
    assert f.screen.take().startswith("alone: 100%")
    assert f.screen.live() == [] and f.screen.pending_since is None


def test_a_bar_never_closed_leaves_its_last_state_when_the_program_ends():
    f = Feed()
    b = bar(f, 10, desc="cut")
    for i, _ in enumerate(b):
        if i == 3:
            break
    assert f.screen.live()[0].startswith("cut:  30%")
    out = f.finish()
    assert out.startswith("cut:  30%") and out.count("\n") == 1
    b.disable = True                            # nothing more from it


def test_nested_bars_are_two_live_rows_and_finish_as_tqdm_leaves_them():
    f = Feed()
    for _ in bar(f, 2, desc="outer"):
        for _ in bar(f, 3, desc="inner"):
            pass
        # the inner bar is being drawn below the outer one
    assert any(len(live) == 2 and live[0].startswith("outer") and
               live[1].startswith("inner") for live in f.lives)
    out = f.finish().splitlines()
    # tqdm closes an inner bar on the outer bar's row (leave=True): each finished inner
    # bar is a line, then the outer bar's last state.
    assert [line.split(":")[0] for line in out] == ["inner", "inner", "outer"]
    assert out[0].startswith("inner: 100%") and out[2].startswith("outer: 100%")


def test_a_second_bar_of_the_process_is_drawn_as_its_own_row():
    """tqdm numbers the bars of a whole process: a task whose bar is the process's
    second is drawn one row down, and back; its rows are its own (no blank row)."""
    f = Feed()
    for _ in bar(f, 3, desc="second", position=1):
        assert len(f.screen.live()) == 1
    assert [live[0].split("|")[0] for live in f.lives[:3]] == [
        "second:   0%", "second:  33%", "second:  67%"]
    # tqdm closes it on the task's first row (leave=True): one line, the last state.
    out = f.finish().splitlines()
    assert len(out) == 1 and out[0].startswith("second: 100%")

    f = Feed()
    for _ in bar(f, 3, desc="erased", position=1, leave=False):
        pass
    assert f.finish() == ""                    # leave=False: tqdm erases it


def test_tqdm_write_above_a_bar_is_a_finished_line_at_once():
    f = Feed()
    b = bar(f, 3, desc="w")
    for i in b:
        tqdm.write(f"message {i}", file=f)
        assert f.text().splitlines()[-1] == f"message {i}"
        assert f.screen.live()[0].startswith("w:")
    out = f.finish().splitlines()
    assert out[:3] == ["message 0", "message 1", "message 2"]
    assert len(out) == 4 and out[3].startswith("w: 100%")


def test_carriage_return_progress_by_hand():
    f = Feed()
    for pct in (0, 50, 100):
        print(f"{pct}%", end="\r", file=f, flush=True)
    assert f.text() == ""                       # redrawn in place: never a partial line
    assert [live for live in f.lives if live] == [["0%"], ["50%"], ["100%"]]
    print("done", file=f)
    assert f.finish() == "done\n"


def test_a_flushed_line_redrawn_with_carriage_return_is_ended_first():
    f = Feed()
    print("loading", end="", file=f, flush=True)
    print("\rready", end="", file=f, flush=True)
    assert f.text() == "loading\n"              # the driver's open line is ended
    assert f.screen.live() == ["ready"]
    assert f.finish() == "loading\nready\n"


def test_escapes():
    f = Feed()
    f.write("\x1b[31mred\x1b[0m\x1b[?25l plain\x1b\n")
    assert f.text() == "\x1b[31mred\x1b[0m plain\n"       # colours stay, the rest goes
    f.write("\rabc\x1b[K")
    assert f.screen.live() == []                          # erased in line
    f.write("\rxyz")
    assert f.screen.live() == ["xyz"]


def test_many_lone_newlines_with_flushes_do_not_grow_the_screen():
    f = Feed()
    f.write("\rbar")
    for _ in range(200):
        f.write("\n")
        f.flush()
    assert len(f.screen.live()) <= 1
    assert "bar\n" in f.finish()


@pytest.mark.parametrize("text, width, expected", [
    ("abcdef", 3, "abc"),
    ("\x1b[31mabcdef\x1b[0m", 3, "\x1b[31mabc\x1b[0m"),
    ("日本語", 4, "日本"),
    ("ab", 10, "ab"),
])
def test_clip(text, width, expected):
    assert clip(text, width) == expected
    assert display_width(clip(text, width)) <= width


def test_display_width():
    assert display_width("abc") == 3
    assert display_width("\x1b[1mabc\x1b[0m") == 3
    assert display_width("█▏") == 2
    assert display_width("日本") == 4


def test_a_line_in_one_write_then_a_lower_bar_adds_no_blank_line():
    f = Feed()
    f.write("logged\n")                        # logging writes message and newline at once
    for _ in bar(f, 2, desc="lower", position=1):
        pass
    out = f.finish().splitlines()
    assert out[0] == "logged" and len(out) == 2 and out[1].startswith("lower: 100%")


def test_write_fast_leaves_anything_but_plain_text_to_write():
    screen = LineScreen()
    assert screen.write_fast("abc") == ""
    assert screen.write_fast("def\ngh") == "abcdef\n"
    assert screen.write_fast("\rbar") is None      # a carriage return: the full model
    screen.write("\rbar", 0.0)
    assert screen.write_fast("more") is None       # a bar is shown
    fresh = LineScreen()
    assert fresh.write_fast("\n") is None           # a lone newline may be tqdm's move
