"""Building the Chrome trace from the scheduler's profile events (pure, no cluster)."""
from __future__ import annotations

import json

from graphstore.core.chrome_trace import assign_lanes, build_trace

W1, W2 = b"\x01" * 16, b"\x02" * 16
WORKERS = {W1: {"pid": 100, "host": "alpha", "node": "n1", "address": "tcp://a:1"},
           W2: {"pid": 200, "host": "beta", "node": "n2", "address": "tcp://b:1"}}
T1, T2, T3 = b"\x11" * 16, b"\x12" * 16, b"\x13" * 16


def _entries():
    return [
        [1, W1, ["task", "load", 10.0, 11.0, 100, T1, 0, ""], []],
        [2, W2, ["transfer", "ab" * 16, 11.2, 11.5, 200, T2, 4 << 20, "tcp://a:1"], []],
        [3, W2, ["task", "use", 11.1, 12.0, 200, T2, 0, ""], [T1]],
        [4, W2, ["actor-call", "Acc.add", 12.5, 12.75, 300, T3, 0, ""], [T2, b"\x99" * 16]],
        [5, W1, ["spill", "3 objects", 13.0, 13.5, 100, b"", 1 << 20, "/tmp/s/f"], []],
    ]


def _by_ph(trace, ph):
    return [e for e in trace if e["ph"] == ph]


def test_lanes_keep_nested_spans_together_and_split_overlapping_ones():
    assert assign_lanes([(0, 10), (1, 2), (3, 9), (4, 5)]) == [0, 0, 0, 0]
    assert assign_lanes([(0, 10), (5, 15), (10, 12)]) == [0, 1, 0]
    assert assign_lanes([(0, 1), (1, 2), (2, 3)]) == [0, 0, 0]
    assert assign_lanes([(0, 4), (1, 5), (2, 6)]) == [0, 1, 2]
    assert assign_lanes([]) == []


def test_every_span_is_a_complete_event_in_microseconds_on_its_process_row():
    trace = build_trace(_entries(), WORKERS)
    json.loads(json.dumps(trace))                      # plain JSON
    spans = _by_ph(trace, "X")
    assert [e["name"] for e in spans] == ["load", "transfer 4.0 MiB", "use", "Acc.add",
                                          "spill 1.0 MiB"]
    load, transfer, use, call, spill = spans
    assert load["ts"] == 10.0e6 and load["dur"] == 1.0e6 and load["cat"] == "task"
    assert transfer["args"] == {"task_id": T2.hex(), "what": "ab" * 16, "bytes": 4 << 20,
                                "peer": "tcp://a:1"}
    assert spill["args"]["peer"] == "/tmp/s/f"
    # One trace process per worker; threads are the OS processes that did the work.
    assert load["pid"] == spill["pid"] != use["pid"] == call["pid"]
    assert (load["tid"], transfer["tid"], use["tid"], call["tid"]) == (100, 200, 200, 300)
    names = {(e["pid"], e["tid"]): e["args"]["name"] for e in _by_ph(trace, "M")
             if e["name"] == "thread_name"}
    assert names == {(1, 100): "worker process 100", (2, 200): "worker process 200",
                     (2, 300): "actor process 300"}
    processes = {e["pid"]: e["args"]["name"] for e in _by_ph(trace, "M")
                 if e["name"] == "process_name"}
    assert processes == {1: f"worker {W1.hex()[:8]} on alpha (pid 100)",
                         2: f"worker {W2.hex()[:8]} on beta (pid 200)"}


def test_flow_arrows_go_from_a_producer_to_each_consumer_of_its_results():
    trace = build_trace(_entries(), WORKERS)
    starts, finishes = _by_ph(trace, "s"), _by_ph(trace, "f")
    assert len(starts) == len(finishes) == 2            # the unknown parent has none
    spans = {e["name"]: e for e in _by_ph(trace, "X")}
    for start, finish, producer, consumer in zip(starts, finishes, ("load", "use"),
                                                 ("use", "Acc.add")):
        assert start["id"] == finish["id"] and finish["bp"] == "e"
        p, c = spans[producer], spans[consumer]
        assert (start["pid"], start["tid"]) == (p["pid"], p["tid"])
        assert p["ts"] <= start["ts"] <= p["ts"] + p["dur"]      # inside the producer
        assert (finish["pid"], finish["tid"]) == (c["pid"], c["tid"])
        assert c["ts"] <= finish["ts"] <= c["ts"] + c["dur"]     # inside the consumer


def test_concurrent_tasks_of_one_process_get_rows_of_their_own():
    entries = [[1, W1, ["task", "a", 0.0, 2.0, 100, T1, 0, ""], []],
               [2, W1, ["fetch", "cd" * 16, 0.1, 0.2, 100, T1, 10, "tcp://a:1"], []],
               [3, W1, ["task", "b", 1.0, 3.0, 100, T2, 0, ""], []]]
    trace = build_trace(entries, {})
    a, fetch, b = _by_ph(trace, "X")
    assert a["tid"] == fetch["tid"] == 100 and b["tid"] != 100
    names = {e["tid"]: e["args"]["name"] for e in _by_ph(trace, "M")
             if e["name"] == "thread_name"}
    assert names[b["tid"]] == "task process 100 #2"     # a worker not named: plain pid
    assert [e["args"]["name"] for e in _by_ph(trace, "M")
            if e["name"] == "process_name"] == [f"worker {W1.hex()[:8]}"]


def test_no_events_make_an_empty_trace():
    assert build_trace([], WORKERS) == []
