"""The scheduler's bounded store of profile events, and the checks on events from peers."""
import pytest

from graphstore.core.profile_events import ProfileEvent
from graphstore.scheduler.task_stream import TaskStream


def _event(start, kind="task", name="f", pid=1):
    return ProfileEvent(kind, name, start, start + 1.0, pid)


def test_since_returns_new_entries_in_order_across_workers():
    stream = TaskStream()
    stream.record(b"a", [_event(1), _event(2)])
    stream.record(b"b", [_event(3)], inputs=(b"o1",))
    stream.record(b"a", [_event(4)])
    assert [e.event.start for e in stream.since(0)] == [1, 2, 3, 4]
    assert [e.seq for e in stream.since(2)] == [3, 4]
    assert stream.since(2)[0].worker == b"b" and stream.since(2)[0].inputs == (b"o1",)
    assert stream.since(stream.seq) == []
    assert [e.event.start for e in stream.since(0, limit=2)] == [3, 4]
    assert stream.since(0, limit=0) == []


def test_a_run_recorded_from_its_fields_reads_back_like_its_event():
    stream = TaskStream()
    stream.record_run(b"a", "task", "f", 1.0, 2.0, 7, b"t" * 16, (b"o1",))
    stream.record(b"a", [ProfileEvent("task", "f", 1.0, 2.0, 7, b"t" * 16)], (b"o1",))
    first, second = stream.since(0)
    assert first.event == second.event and type(first.event) is ProfileEvent
    assert first.inputs == second.inputs == (b"o1",) and (first.seq, second.seq) == (1, 2)
    assert [fields for _, fields in stream.events()] == [tuple(first.event)] * 2


def test_each_worker_keeps_only_its_most_recent_events():
    stream = TaskStream(per_worker=3)
    stream.record(b"busy", [_event(i) for i in range(10)])
    stream.record(b"quiet", [_event(100)])
    assert [e.event.start for e in stream.since(0) if e.worker == b"busy"] == [7, 8, 9]
    assert [e.event.start for e in stream.since(0) if e.worker == b"quiet"] == [100]
    assert len(stream) == 4


def test_the_rings_share_a_total_bound_as_workers_come_and_go():
    """However many workers join, the stream holds at most ``total`` events (each ring
    its share, at most ``per_worker``); shrinking keeps each ring's newest events, and a
    dropped ring's share goes back to the others."""
    stream = TaskStream(per_worker=10, total=20, retired_workers=0)
    stream.record(b"a", [_event(i) for i in range(15)])
    assert stream.capacity == 10 and len(stream) == 10            # per_worker binds
    stream.record(b"b", [_event(100 + i) for i in range(15)])
    assert stream.capacity == 10 and len(stream) == 20            # 20 // 2
    stream.record(b"c", [_event(200)])
    assert stream.capacity == 6 and len(stream) <= 20
    kept_a = [e.event.start for e in stream.since(0) if e.worker == b"a"]
    assert kept_a == list(range(9, 15))                            # the newest six
    for i in range(40):
        stream.record(bytes([i]) * 2, [_event(300 + i)] * 3)
    assert stream.capacity == 1 and len(stream) <= 43              # one each at least
    seqs = [e.seq for e in stream.since(0)]
    assert seqs == sorted(seqs) and stream.since(stream.seq) == []
    for i in range(40):
        stream.retire(bytes([i]) * 2)                              # dropped at once
    stream.retire(b"c")
    assert stream.capacity == 10                                    # two rings left
    stream.record(b"a", [_event(500 + i) for i in range(10)])
    assert len([e for e in stream.since(0) if e.worker == b"a"]) == 10
    with pytest.raises(ValueError, match="total"):
        TaskStream(total=0)


def test_retired_workers_history_is_dropped_oldest_first():
    stream = TaskStream(retired_workers=2)
    for worker in (b"w1", b"w2", b"w3"):
        stream.record(worker, [_event(1)])
        stream.retire(worker)
    assert {e.worker for e in stream.since(0)} == {b"w2", b"w3"}


@pytest.mark.parametrize("item, problem", [
    ("task", "a profile event is a list"),
    (["task", "f", 1.0], "a profile event is a list"),
    (["nap", "f", 1.0, 2.0, 1], "unknown profile event kind"),
    (["task", "f", "1", 2.0, 1], "start must be a number"),
    (["task", "f", 2.0, 1.0, 1], "stops"),
    (["task", "f", 1.0, 2.0, 1, "id"], "task_id must be bytes"),
    (["task", "f", 1.0, 2.0, 1, b"", -5], "non-negative"),
    (["task", 7, 1.0, 2.0, 1], "must be text"),
])
def test_bad_events_from_peers_are_refused_with_the_problem_named(item, problem):
    with pytest.raises(ValueError, match=problem):
        ProfileEvent.from_wire(item)


def test_an_event_survives_its_wire_form():
    event = ProfileEvent("transfer", "3f2a", 1.5, 2.5, 42, b"\1" * 16, 1 << 20, "tcp://h:1")
    assert ProfileEvent.from_wire(list(event)) == event
