"""``graphstore.worker.output.TaskOutputStream``: what a task writes, as messages.

No processes: the stream sends to a list, the clock is a fake one, and the ticker is a
recorder whose due calls the test makes itself.
"""
from __future__ import annotations

import io

import pytest
from tqdm import tqdm

from graphstore.core import protocol as msg
from graphstore.runtime import current_task
from graphstore.worker import output
from graphstore.worker.output import LIVE_INTERVAL, TaskOutputStream


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Ticker:
    def __init__(self):
        self.due: dict = {}

    def call_at(self, stream, when):
        self.due[stream] = min(when, self.due.get(stream, when))


@pytest.fixture
def clock(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(output.time, "monotonic", clock)
    return clock


@pytest.fixture
def task():
    current_task.task = (b"t" * 16, "work")
    yield current_task.task
    current_task.task = None


def run_ticker(stream, ticker, clock) -> None:
    """Make the ticker's calls, as its thread would, the clock jumping to each."""
    while stream in ticker.due:
        clock.now = max(clock.now, ticker.due.pop(stream))
        again = stream.tick(clock.now)
        if again is not None:
            ticker.call_at(stream, again)


def make_stream(name="stderr"):
    sent: list[msg.TaskOutput] = []
    ticker = Ticker()
    stream = TaskOutputStream(name, io.StringIO(), sent.append, ticker)
    return stream, sent, ticker


def test_lines_go_out_as_written_with_the_prefix(task, clock):
    stream, sent, _ = make_stream("stdout")
    print("hello", file=stream)
    print("partial", end="", file=stream)
    assert [(m.prefix, m.stream, m.text, m.live) for m in sent] == [
        (f"(work pid={stream._pid})", "stdout", "hello\n", None)]
    stream.flush()
    assert sent[-1].text == "partial"
    stream.finish_task(task)
    assert sent[-1].text == "\n" and len(sent) == 3


def test_outside_a_task_writes_go_to_the_fallback():
    stream, sent, _ = make_stream()
    current_task.task = None
    print("worker log", file=stream)
    assert sent == [] and stream._fallback.getvalue() == "worker log\n"


def test_a_fast_bar_is_throttled_and_its_last_state_is_sent(task, clock):
    stream, sent, ticker = make_stream()
    bar = tqdm(total=1000, file=stream, mininterval=0, desc="fast",
               bar_format="{desc}: {n}")
    for _ in range(1000):                  # all within one instant of the fake clock
        bar.update(1)
    live = [m.live for m in sent if m.live is not None]
    assert live == [["fast: 0"]]          # the first state; the rest is held back
    assert ticker.due[stream] == pytest.approx(clock.now + LIVE_INTERVAL)
    clock.now += LIVE_INTERVAL
    assert stream.tick(clock.now) is None  # nothing more is waiting after this
    assert sent[-1].live == ["fast: 1000"]
    bar.close()
    before = len(sent)
    print("next", file=stream)             # the bar's newline was a real one
    assert [(m.text, m.live) for m in sent[before:]] == [("fast: 1000\n", []),
                                                         ("next\n", None)]
    stream.finish_task(task)
    assert len(sent) == before + 2         # nothing was left


def test_a_closed_bar_is_finished_by_the_ticker_when_nothing_follows(task, clock):
    stream, sent, ticker = make_stream()
    with tqdm(total=2, file=stream, mininterval=0, desc="b", bar_format="{desc}: {n}") \
            as bar:
        bar.update(2)
    assert all(not m.text for m in sent)
    run_ticker(stream, ticker, clock)
    assert sent[-1].text == "b: 2\n" and sent[-1].live == []
    stream.finish_task(task)
    assert sent[-1].text == "b: 2\n"       # nothing more to send at the end


def test_writing_to_the_other_stream_finishes_a_closed_bar(task, clock):
    stream, sent, _ = make_stream("stderr")
    other = TaskOutputStream("stdout", io.StringIO(), sent.append, Ticker())
    stream.sibling, other.sibling = other, stream
    with tqdm(total=1, file=stream, mininterval=0, desc="b", bar_format="{desc}: {n}") \
            as bar:
        bar.update(1)
    print("result", file=other)
    assert [(m.stream, m.text) for m in sent if m.text] == [("stderr", "b: 1\n"),
                                                           ("stdout", "result\n")]


def test_the_end_of_a_task_clears_its_live_rows(task, clock):
    stream, sent, _ = make_stream()
    bar = tqdm(total=10, file=stream, mininterval=0, desc="cut", bar_format="{desc}: {n}")
    bar.update(3)
    stream.finish_task(task)
    assert sent[-1].text == "cut: 3\n" and sent[-1].live == []
    bar.disable = True
