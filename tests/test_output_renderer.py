"""``graphstore.runtime.output.OutputRenderer``: task output as the driver prints it.

No processes: output is handed to the renderer as the runtime does (``receive`` then
``render``) and written to ``io.StringIO``s. For a terminal, a small emulator replays
what was written (carriage returns, newlines and the renderer's cursor moves) to check
what a user would see, not the escape codes.
"""
from __future__ import annotations

import io

from tqdm import tqdm

from graphstore.runtime.output import OutputRenderer, TerminalStream
from helpers import Terminal

F, G = "(f pid=1)", "(g pid=2)"


def plain():
    out, err = io.StringIO(), io.StringIO()
    renderer = OutputRenderer(streams={"stdout": (out, False), "stderr": (err, False)})
    return renderer, out, err


def terminal(width=200):
    """A renderer whose stdout and stderr are one terminal."""
    tty = io.StringIO()
    renderer = OutputRenderer(streams={"stdout": (tty, True), "stderr": (tty, True)},
                              width=width)
    return renderer, tty


def seen(tty: io.StringIO) -> list[str]:
    return Terminal.shows(tty.getvalue())


def send(renderer, source, prefix, stream, text="", live=None):
    renderer.receive(source, prefix, stream, text, live)
    renderer.render()


# -- not on a terminal ------------------------------------------------------------------

def test_lines_get_their_task_prefix():
    renderer, out, err = plain()
    send(renderer, b"t1", F, "stdout", "one\ntwo\n")
    send(renderer, b"t1", F, "stderr", "three\n")
    assert out.getvalue() == f"{F} one\n{F} two\n"
    assert err.getvalue() == f"{F} three\n"


def test_a_bar_is_printed_once_in_its_final_state():
    renderer, out, err = plain()
    for pct in (0, 25, 50, 75, 100):
        send(renderer, b"t1", F, "stderr", live=[f"bar: {pct:3d}%"])
    assert err.getvalue() == ""
    send(renderer, b"t1", F, "stderr", "bar: 100%\n", [])
    assert err.getvalue() == f"{F} bar: 100%\n"
    assert out.getvalue() == ""


def test_a_partial_line_is_continued_and_ended_when_another_task_prints():
    renderer, out, _ = plain()
    send(renderer, b"t1", F, "stdout", "load")
    assert out.getvalue() == f"{F} load"
    send(renderer, b"t1", F, "stdout", "ing\n")
    assert out.getvalue() == f"{F} load" + "ing\n"
    send(renderer, b"t1", F, "stdout", "x")
    send(renderer, b"t2", G, "stdout", "y\n")        # another task: the line is ended
    send(renderer, b"t1", F, "stdout", "z\n")        # and taken up again with the prefix
    assert out.getvalue().splitlines() == [f"{F} loading", f"{F} x", f"{G} y", f"{F} z"]


def test_close_prints_bars_no_task_finished():
    renderer, out, err = plain()
    send(renderer, b"t1", F, "stderr", live=["bar:  40%"])
    send(renderer, b"t2", G, "stdout", "half a line")
    renderer.close()
    assert err.getvalue() == f"{F} bar:  40%\n"
    assert out.getvalue() == f"{G} half a line\n"


# -- on a terminal ----------------------------------------------------------------------

def test_live_bars_of_two_tasks_are_redrawn_in_place_on_rows_of_their_own():
    renderer, tty = terminal()
    for step in range(5):
        send(renderer, b"t1", F, "stderr", live=[f"a: {step}/4"])
        send(renderer, b"t2", G, "stderr", live=[f"b: {step}/4"])
        assert seen(tty) == [f"{F} a: {step}/4", f"{G} b: {step}/4"]
    # A finished line goes above the bars; the bars stay below, once each.
    send(renderer, b"t1", F, "stdout", "a line\n")
    assert seen(tty) == [f"{F} a line", f"{F} a: 4/4", f"{G} b: 4/4"]
    # The first bar closes: its final state is a line, the other bar stays live.
    send(renderer, b"t1", F, "stderr", "a: done\n", [])
    assert seen(tty) == [f"{F} a line", f"{F} a: done", f"{G} b: 4/4"]
    send(renderer, b"t2", G, "stderr", "b: done\n", [])
    assert seen(tty) == [f"{F} a line", f"{F} a: done", f"{G} b: done"]
    assert renderer._rows() == []


def test_a_partial_line_is_shown_live_and_completed_in_place():
    renderer, tty = terminal()
    send(renderer, b"t1", F, "stdout", "waiting")
    assert seen(tty) == [f"{F} waiting"]
    send(renderer, b"t1", F, "stdout", "... done\n")
    assert seen(tty) == [f"{F} waiting... done"]


def test_live_rows_are_cut_to_the_terminal_width():
    renderer, tty = terminal(width=20)
    send(renderer, b"t1", F, "stderr", live=["x" * 100])
    assert seen(tty) == [(F + " " + "x" * 100)[:19]]
    send(renderer, b"t1", F, "stderr", "y" * 30 + "\n", [])   # lines are not cut
    assert seen(tty) == [F + " " + "y" * 30]


def test_the_drivers_own_output_passes_through_and_takes_turns_with_task_bars():
    renderer, tty = terminal()
    stdout = TerminalStream(renderer, "stdout", tty)
    stderr = TerminalStream(renderer, "stderr", tty)
    print("before", file=stdout)
    assert tty.getvalue() == "before\n"            # no bars: written as it is
    bar = tqdm(total=3, desc="driver", file=stderr, mininterval=0, ascii=True,
               bar_format="{desc}: {n}/{total}")
    bar.update(1)
    assert seen(tty) == ["before", "driver: 1/3"]
    # A task's bar appears: the driver's bar stays the last row, drawn once.
    send(renderer, b"t1", F, "stderr", live=["task: 10%"])
    assert seen(tty) == ["before", f"{F} task: 10%", "driver: 1/3"]
    bar.update(1)
    tqdm.write("driver line", file=stderr)         # tqdm's way to print under a bar
    send(renderer, b"t1", F, "stdout", "task line\n")
    assert seen(tty) == ["before", "driver line", f"{F} task line", f"{F} task: 10%",
                         "driver: 2/3"]
    send(renderer, b"t1", F, "stderr", "task: 100%\n", [])
    bar.update(1)
    bar.close()
    print("after", file=stdout)                    # the driver's closed bar is a line
    assert seen(tty) == ["before", "driver line", f"{F} task line", f"{F} task: 100%",
                         "driver: 3/3", "after"]
    assert renderer._rows() == []


def test_a_task_line_does_not_glue_to_the_drivers_bar():
    renderer, tty = terminal()
    stderr = TerminalStream(renderer, "stderr", tty)
    bar = tqdm(total=2, desc="driver", file=stderr, mininterval=0,
               bar_format="{desc}: {n}/{total}")
    bar.update(1)
    send(renderer, b"t1", F, "stdout", "hello\n")
    assert seen(tty) == [f"{F} hello", "driver: 1/2"]
    bar.close()


class _FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def test_stand_ins_write_to_their_terminal_whatever_is_in_front_of_them(monkeypatch):
    """A tee put in front of the stand-in after ``init()`` (it writes into the stand-in)
    must not loop back into itself, and a stream redirected for a while does not take
    what is written through a handle on the stand-in."""
    import contextlib
    import sys
    tty_out, tty_err = _FakeTerminal(), _FakeTerminal()
    monkeypatch.setattr(sys, "stdout", tty_out)
    monkeypatch.setattr(sys, "stderr", tty_err)
    renderer = OutputRenderer()
    renderer.install()
    try:
        assert isinstance(sys.stdout, TerminalStream) and isinstance(sys.stderr, TerminalStream)
        handle = sys.stderr                      # e.g. a logging handler made after init
        captured = io.StringIO()
        with contextlib.redirect_stderr(captured):
            handle.write("to the terminal\n")
        assert captured.getvalue() == "" and tty_err.getvalue() == "to the terminal\n"

        class Tee:
            def __init__(self, inner):
                self.inner, self.copy = inner, io.StringIO()

            def write(self, text):
                self.copy.write(text)
                return self.inner.write(text)

            def flush(self):
                self.inner.flush()

        tee = Tee(sys.stdout)
        sys.stdout = tee
        print("hello")                           # RecursionError before the fix
        renderer.receive(b"t", F, "stdout", "from a task\n", None)
        renderer.render()
        assert tee.copy.getvalue() == "hello\n"
        assert tty_out.getvalue() == f"hello\n{F} from a task\n"
    finally:
        sys.stdout = tty_out
        renderer.uninstall()
