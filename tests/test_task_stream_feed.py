"""The scheduler keeps the profile events workers send with their outcomes: the runs'
spans land in the task stream of the worker that ran them, with the ids of their inputs,
whose producers become the trace's parents when it is read; bad events from a peer are
dropped with a warning, and the outcome they came with stands. Also the recorder that
collects spans in a worker's threads."""
from __future__ import annotations

import logging
import threading

import pytest

from graphstore.core import protocol as msg
from graphstore.core.profile_events import ProfileEvent, checked_fields
from graphstore.core.span_recorder import SpanRecorder
from test_scheduler_actors import PROCESS, Actors
from test_scheduler_state import DRIVER, Harness


def _span(task_id: bytes, name: str = "f", start: float = 10.0, kind: str = "task"):
    return [kind, name, start, start + 0.5, 4242, task_id, 0, ""]


def test_a_finished_tasks_spans_are_kept_with_the_producers_of_its_inputs():
    h = Harness()
    w = h.worker("w1")
    first, (a,) = h.submit(name="load")
    h.s.schedule()
    h.s.task_done(w, msg.TaskDone(first, [[a, [b"v"], [], 1, None]], 0.5,
                                  [_span(first, "load")]))
    second, (b,) = h.submit(deps=[a], name="use")
    h.s.schedule()
    fetch = ["fetch", a.hex(), 11.0, 11.1, 4242, second, 1 << 20, "tcp://w1:1"]
    h.s.task_done(w, msg.TaskDone(second, [[b, [b"v"], [], 1, None]], 0.5,
                                  [fetch, _span(second, "use", 11.0)]))
    entries = h.s.task_stream.since(0)
    assert [(e.event.kind, e.event.name) for e in entries] == [
        ("task", "load"), ("fetch", a.hex()), ("task", "use")]
    assert {e.worker for e in entries} == {w}
    assert entries[0].inputs == () and entries[2].inputs == (a,)
    assert entries[1].event.nbytes == 1 << 20 and entries[1].event.peer == "tcp://w1:1"
    timeline = h.s.timeline(0)
    assert timeline["seq"] == 3 and timeline["workers"][w]["address"] == "tcp://w1:1"
    assert timeline["entries"][2] == [3, w, _span(second, "use", 11.0), [first]]
    assert h.s.timeline(2)["entries"] == timeline["entries"][2:]


def test_a_run_reported_by_its_start_is_kept_as_the_span_a_worker_would_send():
    """What a recording worker sends: the run's start time beside its duration (and
    the fetches inside it as events); the scheduler fills in kind, name, task id and
    the pid of the process that reported it."""
    h = Harness()
    w = h.worker("w1")
    first, (a,) = h.submit(name="load")
    h.s.schedule()
    h.s.task_done(w, msg.TaskDone(first, [[a, [b"v"], [], 1, None]], 0.5, None, 10.0))
    second, (b,) = h.submit(deps=[a], name="use")
    h.s.schedule()
    fetch = ["fetch", a.hex(), 11.0, 11.1, 100, second, 1 << 20, "tcp://w1:1"]
    h.s.task_done(w, msg.TaskDone(second, [[b, [b"v"], [], 1, None]], 0.25, [fetch],
                                  11.0))
    entries = h.s.task_stream.since(0)
    assert [tuple(e.event) for e in entries] == [
        ("task", "load", 10.0, 10.5, 100, first, 0, ""), tuple(fetch),
        ("task", "use", 11.0, 11.25, 100, second, 0, "")]
    assert type(entries[0].event) is ProfileEvent
    assert [e.inputs for e in entries] == [(), (a,), (a,)]
    assert h.s.timeline(0)["entries"][2] == [3, w, list(entries[2].event), [first]]
    # Recording off: nothing is sent, nothing is kept.
    third, (c,) = h.submit(name="quiet")
    h.s.schedule()
    h.s.task_done(w, msg.TaskDone(third, [[c, [b"v"], [], 1, None]], 0.5))
    assert h.s.task_stream.seq == 3


def test_a_failed_run_and_a_run_in_a_task_process_are_kept_by_their_process():
    h = Harness()
    w = h.worker("w1", cpus=4, resources={"GPU": 1})
    task, _ = h.submit(name="boom")
    h.s.schedule()
    h.s.task_failed(w, msg.TaskFailed(task, [b"error"], 0.5, "ValueError: no", False,
                                      None, None, 20.0))
    gpu_task, ret = h.submit(name="on_gpu", resources={"GPU": 1})
    h.s.schedule()
    ((_, start),) = h.take(msg.StartTaskProcess)
    h.s.register_task_process(start.process_id, msg.RegisterTaskProcess(
        start.process_id, w, 4343, "host"))
    h.s.task_done(start.process_id, msg.TaskDone(gpu_task, [[ret[0], [b"v"], [], 1, None]],
                                                 1.0, None, 30.0))
    assert [(e.worker, tuple(e.event)) for e in h.s.task_stream.since(0)] == [
        (w, ("task", "boom", 20.0, 20.5, 100, task, 0, "")),
        (w, ("task", "on_gpu", 30.0, 31.0, 4343, gpu_task, 0, ""))]


@pytest.mark.parametrize("started, duration", [
    (float("nan"), 0.5), (float("inf"), 0.5), (-float("inf"), 0.5), ("10.0", 0.5),
    (10, 0.5), ([10.0], 0.5), (1.7e308, 1e308)])       # the last one ends at infinity
def test_a_bad_start_time_is_dropped_with_a_warning_and_the_result_stands(caplog,
                                                                          started,
                                                                          duration):
    h = Harness()
    w = h.worker("w1")
    task, (r,) = h.submit(name="f")
    h.s.schedule()
    h.s.want(DRIVER, [r])
    h.take()
    done = msg.TaskDone(task, [[r, [b"v"], [], 1, None]], duration, None, started)
    (done,) = msg.decode_header(msg.encode_batch([done])[1], [])   # passes the wire
    with caplog.at_level(logging.WARNING, logger="graphstore.scheduler"):
        h.s.task_done(w, done)
    assert h.s.task_stream.since(0) == []
    assert "dropped the task span of f from worker" in caplog.text
    assert "started must be a finite float" in caplog.text
    assert h.s.objects[r].state == "ready"
    assert [m.object_id for _, m in h.take() if type(m) is msg.ObjectReady] == [r]


def test_parents_are_the_producers_the_graph_remembers_when_the_trace_is_read():
    """A run's arrows come from the tasks that made its arguments, looked up when the
    trace is read: also once those arguments were freed, while the task graph keeps
    their records (``task_history``); a put has no producer."""
    h = Harness(history_size=2)
    w = h.worker("w1")
    put = h.put()
    make, (a,) = h.submit(name="make")
    h.s.schedule()
    h.s.task_done(w, msg.TaskDone(make, [[a, [b"v"], [], 1, None]], 0.5, None, 1.0))
    use, (b,) = h.submit(deps=[a, put, a], name="use")
    h.s.schedule()
    h.s.task_done(w, msg.TaskDone(use, [[b, [b"v"], [], 1, None]], 0.5, None, 2.0))
    h.s.decref(DRIVER, [a, put])
    assert a not in h.s.objects and h.s.graph.has_object(a)          # freed, remembered
    assert [e[3] for e in h.s.timeline(0)["entries"]] == [[], [make]]
    for _ in range(2):                     # two more freed objects push a's record out
        h.s.decref(DRIVER, [h.put()])
    assert not h.s.graph.has_object(a)
    assert [e[3] for e in h.s.timeline(0)["entries"]] == [[], []]


def test_bad_events_are_dropped_with_a_warning_and_the_result_stands(caplog):
    h = Harness()
    w = h.worker("w1")
    task, (r,) = h.submit()
    h.s.schedule()
    h.s.want(DRIVER, [r])
    h.take()
    bad = [["nap", "f", 1.0, 2.0, 1], "junk", _span(task)]
    with caplog.at_level(logging.WARNING, logger="graphstore.scheduler"):
        h.s.task_done(w, msg.TaskDone(task, [[r, [b"v"], [], 1, None]], 0.5, bad))
    assert [e.event.kind for e in h.s.task_stream.since(0)] == ["task"]
    assert "dropped 2 bad profile event(s) from worker" in caplog.text
    assert "unknown profile event kind 'nap'" in caplog.text
    assert h.s.objects[r].state == "ready"
    ready = [m for _, m in h.take() if type(m) is msg.ObjectReady]
    assert [m.object_id for m in ready] == [r]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="graphstore.scheduler"):
        h.s.worker_heartbeat(w, {"store_used": 1}, {"not": "a list"})
    assert "events must be a list, got dict" in caplog.text
    assert h.s.workers[w].metrics == {"store_used": 1}


def test_heartbeat_spans_and_a_departed_workers_history():
    h = Harness()
    w = h.worker("w1")
    spill = ["spill", "3 objects", 5.0, 6.0, 4242, b"", 3 << 20, "/tmp/spill/x"]
    h.s.worker_heartbeat(w, {}, [spill])
    h.s.remove_peer(w)
    (entry,) = h.s.task_stream.since(0)
    assert entry.event.kind == "spill" and entry.worker == w and entry.inputs == ()
    assert w in h.s.timeline(0)["workers"]     # its row keeps its name after it left


@pytest.mark.parametrize("item, problem", [
    (["task", "f", float("nan"), 2.0, 1, b"", 0, ""], "finite"),
    (["task", "f", 1.0, float("inf"), 1, b"", 0, ""], "finite"),
    (["task", "f", 2.0, 1.0, 1, b"", 0, ""], "stops"),
    (["task", ["f"], 1.0, 2.0, 1, b"", 0, ""], "must be text"),
    ([["task"], "f", 1.0, 2.0, 1, b"", 0, ""], "unknown profile event kind"),
    (["task", "f", 1.0, 2.0, 1, b"", -1, ""], "non-negative"),
])
def test_the_schedulers_quick_check_refuses_what_from_wire_refuses(item, problem):
    with pytest.raises(ValueError, match=problem):
        checked_fields(item)
    good = ["transfer", "ab", 1.0, 2.5, 7, b"\1" * 16, 10, "tcp://h:1"]
    assert checked_fields(good) == tuple(good) and type(checked_fields(good)) is tuple
    assert checked_fields(["task", "f", 1, 2, 7]) == ("task", "f", 1, 2, 7, b"", 0, "")


def test_spans_of_a_task_thread_are_its_own_and_the_rest_are_bounded():
    recorder = SpanRecorder(enabled=True, buffer_size=2)
    results = {}

    def task(task_id):
        recorder.begin(task_id)
        recorder.add("fetch", "obj", 1.0, 2.0, 10, "tcp://h:1")
        results[task_id] = recorder.end()

    threads = [threading.Thread(target=task, args=(bytes([i]) * 16,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert {k: [s[5] for s in v] for k, v in results.items()} == {k: [k] for k in results}
    for name in ("a", "b", "c"):           # outside a task: the newest two are kept
        recorder.add("spill", name, 1.0, 2.0, 5, "/tmp/s")
    assert [s[1] for s in recorder.drain()] == ["b", "c"] and recorder.drain() == []
    assert recorder.end() is None          # this thread began nothing
    recorder.begin(b"t" * 16)
    assert recorder.end() is None          # a task that recorded no span sends none
    off = SpanRecorder(enabled=False, buffer_size=10)
    off.add("spill", "x", 1.0, 2.0)
    assert off.drain() == []


def test_bad_events_pass_the_wire_checks_so_the_outcome_is_not_lost():
    """The decoder lets any ``events`` through (the scheduler checks them one by one):
    a malformed event must not close the worker's connection with its result."""
    done = msg.TaskDone(b"t" * 16, [[b"r" * 16, [b"v"], [], 1, None]], 0.5,
                        [["task", 5, "x", None, -1], "junk"])
    (decoded,) = msg.decode_header(msg.encode_batch([done])[1], [])
    assert decoded.events == done.events
    assert decoded.results == [tuple(r) for r in done.results]  # records decode as tuples
    beat = msg.WorkerHeartbeat({"store_used": 1}, {"not": "a list"})
    (decoded,) = msg.decode_header(msg.encode_batch([beat])[1], [])
    assert decoded == beat


def test_an_actor_calls_run_is_kept_on_its_workers_row_by_the_actors_process():
    h = Actors()
    w = h.worker("w1", cpus=2)
    actor_id, _ = h.create()
    h.start(actor_id)
    call_id, ret = h.call(actor_id)
    h.s.actor_call_done(PROCESS, msg.ActorCallDone(
        call_id, actor_id, [[ret, [b"1"], [], 1, None, None]], 0.25, None, None, 40.0))
    (entry,) = h.s.task_stream.since(0)
    assert entry.worker == w
    assert tuple(entry.event) == ("actor-call", "Counter.add", 40.0, 40.25, 4242, call_id,
                                  0, "")
