"""What ``graphstore list`` and ``graphstore logs WORKER`` ask of the scheduler, answered
from a real ``SchedulerState`` driven by hand (no sockets), and the tables printed."""
from __future__ import annotations

from graphstore.scheduler import listing
from graphstore.state_tables import format_listing, format_table
from graphstore.core import protocol as msg
from test_scheduler_actors import Actors
from test_scheduler_state import Harness


def _cluster():
    h = Harness()
    a = h.worker("a", cpus=2, node="node-a")
    b = h.worker("b", node="node-b")
    done, _ = h.submit(name="load")
    failed, _ = h.submit(name="train")
    running, (result,) = h.submit(name="prepare")
    waiting, _ = h.submit(deps=[result], name="load")    # waits for "prepare"
    h.s.schedule()
    h.done(h.s.tasks[done].worker.id, done)
    h.fail(h.s.tasks[failed].worker.id, failed)
    return h, a, b, done, failed, waiting


def test_tasks_are_filtered_by_state_and_name_in_the_scheduler():
    h, a, b, done, failed, waiting = _cluster()
    every = listing.list_state(h.s, "tasks", None, None, 100)
    assert len(every["rows"]) == 4
    assert {done.hex(), failed.hex(), waiting.hex()} <= {r["id"] for r in every["rows"]}
    assert every["rows"][0]["id"] == waiting.hex()          # newest first
    assert every["rows"][0]["state"] == "waiting"
    only_failed = listing.list_state(h.s, "tasks", "failed", None, 100)["rows"]
    assert [r["id"] for r in only_failed] == [failed.hex()]
    assert "boom" in only_failed[0]["error"]
    loads = listing.list_state(h.s, "tasks", None, "load", 100)["rows"]
    assert {r["id"] for r in loads} == {done.hex(), waiting.hex()}
    assert listing.list_state(h.s, "tasks", "done", "train", 100)["rows"] == []


def test_limit_keeps_the_newest_and_says_more_matched():
    h, *_ = _cluster()
    reply = listing.list_state(h.s, "tasks", None, None, 2)
    assert len(reply["rows"]) == 2 and reply["truncated"] is True
    assert listing.list_state(h.s, "tasks", None, None, 4)["truncated"] is False


def test_objects_and_workers_rows():
    h, a, b, *_ = _cluster()
    stored = h.put_stored(b, 12345)
    objects = listing.list_state(h.s, "objects", "ready", None, 100)["rows"]
    row = next(r for r in objects if r["id"] == stored.hex())
    assert row["size"] == 12345 and row["name"] is None and row["where"]
    made_by_load = listing.list_state(h.s, "objects", None, "load", 100)["rows"]
    assert made_by_load and all(r["name"] == "load" for r in made_by_load)
    workers = listing.list_state(h.s, "workers", "alive", None, 100)["rows"]
    assert {r["id"] for r in workers} == {a.hex(), b.hex()}
    assert {r["node"] for r in workers} == {"node-a", "node-b"}


def test_bad_kind_state_or_limit_is_an_error_record_naming_the_choices():
    h, *_ = _cluster()
    bad_state = listing.list_state(h.s, "tasks", "running", None, 10)
    assert "running" in bad_state["error"]["text"]
    assert bad_state["error"]["choices"] == ["waiting", "queued", "assigned", "done",
                                             "failed"]
    bad_kind = listing.list_state(h.s, "jobs", None, None, 10)
    assert bad_kind["error"]["choices"] == ["tasks", "actors", "objects", "workers"]
    assert "alive" in listing.list_state(h.s, "actors", "done", None, 10)["error"]["text"]
    assert "limit" in listing.list_state(h.s, "tasks", None, None, 0)["error"]["text"]
    assert "limit" in listing.list_state(h.s, "tasks", None, None, 10**9)["error"]["text"]


def test_a_process_is_found_by_id_prefix_or_pid_and_mistakes_list_the_choices():
    h = Actors()
    first = h.worker("aa1", cpus=2)
    second = h.worker("aa2")
    h.s.workers[second].pid = 4343
    actor_id, _ = h.create()
    h.s.schedule()
    h.start(actor_id)                              # its process has pid 4242
    host = h.s.actors[actor_id].worker
    find = listing.find_log_source
    assert find(h.s, first.hex()).id == first
    assert find(h.s, second.hex()[:6].upper()).id == second
    assert find(h.s, "4343") == ("worker", second, 4343, h.s.workers[second])
    assert find(h.s, "4242") == ("actor", actor_id, 4242, host)
    assert find(h.s, actor_id.hex()[:20]).kind == "actor"
    ambiguous = find(h.s, first.hex()[:2])         # "aa" starts both workers
    assert "2 processes" in ambiguous["error"]["text"]
    assert len(ambiguous["error"]["choices"]) == 3              # scheduler + both
    unknown = find(h.s, "zz")
    assert "no worker or actor 'zz'" in unknown["error"]["text"]
    assert unknown["error"]["choices"][0] == "scheduler"
    assert any("pid 4343" in c for c in unknown["error"]["choices"])
    assert any(c.startswith("actor ") for c in unknown["error"]["choices"])
    h.s.kill_actor(msg.KillActor(actor_id, True))  # a dead actor's process is gone
    assert "error" in find(h.s, "4242")


def test_tables_fit_their_columns():
    h, *_ = _cluster()
    text = format_listing(listing.list_state(h.s, "tasks", None, None, 100))
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["TASK_ID", "NAME", "STATE"]
    assert any("train" in line and "failed" in line for line in lines)
    assert lines[-1] == "4 tasks"
    assert format_listing({"kind": "actors", "rows": [], "truncated": False}) == \
        "no actors match"
    assert "raise --limit" in format_listing(listing.list_state(h.s, "tasks", None, None, 1))
    assert format_table(["A", "LONGER"], [["x", "y"], ["wide-cell", "z"]]).splitlines() == \
        ["A          LONGER", "x          y", "wide-cell  z"]
