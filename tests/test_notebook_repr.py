"""Notebook cards without a notebook: the HTML of ``notebook_repr`` and
``core/notebook_views`` from hand-made answers (escaping, links, states, answers that
make no sense), the scheduler's ``descriptions`` on the state machine alone, and the
``Describe*`` messages at the protocol's door. The real notebook: ``test_notebook.py``."""
from __future__ import annotations

import re

import pytest

from graphstore import notebook_repr
from graphstore.core import notebook_views
from graphstore.core import protocol as msg
from graphstore.core.object_ref import ObjectRef
from graphstore.exceptions import TaskError
from graphstore.scheduler import descriptions

from test_scheduler_actors import Actors
from test_scheduler_state import DRIVER, MB, Harness

EVIL = "<script>alert('x')</script>"


def cell_text(page: str) -> str:
    """The words a reader sees: tags dropped, whitespace folded (entities kept)."""
    return " ".join(re.sub(r"<[^>]+>", " ", page).split())


def test_card_escapes_every_text_it_is_given():
    page = notebook_repr.render_card(
        EVIL, state=EVIL, rows=[(EVIL, EVIL), ("n", 42)], note=EVIL, details=EVIL,
        details_title=EVIL)
    assert "<script>" not in page
    # title, state, label, value, note, the details' title and text
    assert page.count("&lt;script&gt;") == 7
    assert "&#x27;x&#x27;" in page or "&#39;x&#39;" in page
    assert ">42<" in page


def test_card_links_only_http_urls_and_escapes_them():
    page = notebook_repr.render_card("t", rows=[
        ("good", "status", "http://127.0.0.1:8265/?a=1&b=\"2\""),
        ("bad", "click me", "javascript:alert(1)"),
        ("none", None, "http://left.out/")])
    assert 'href="http://127.0.0.1:8265/?a=1&amp;b=&quot;2&quot;"' in page
    assert "javascript:" not in page
    assert "click me" in page and "left.out" not in page
    assert page.count("<a ") == 1


def test_card_folds_details_only_when_asked():
    closed = notebook_repr.render_card("t", details="text", details_title="more")
    opened = notebook_repr.render_card("t", details="text", details_title="more",
                                       details_open=True)
    assert "<details style" in closed and "<details open" in opened
    assert "<details" not in notebook_repr.render_card("t")


def test_never_raise_falls_back_to_the_escaped_plain_repr():
    def broken():
        raise KeyError("no <such> key")
    page = notebook_repr.never_raise(broken, lambda: "ObjectRef(<ab>)")
    assert "<pre>ObjectRef(&lt;ab&gt;)</pre>" in page
    assert "KeyError" in page and "&lt;such&gt;" in page

    def no_repr():
        raise RuntimeError("repr broken too")
    assert "(no repr)" in notebook_repr.never_raise(broken, no_repr)


# -- TaskError ------------------------------------------------------------------------

def test_task_error_card_shows_task_type_message_and_escaped_traceback():
    traceback = ("Traceback (most recent call last):\n  File \"job.py\", line 3, in f\n"
                 f"    raise ValueError({EVIL!r})\nValueError: {EVIL}\n")
    error = TaskError(f"f{EVIL}", traceback, ValueError(EVIL), pid=4242)
    error = error.as_instanceof_cause()
    assert isinstance(error, ValueError)
    page = error._repr_html_()
    assert "<script>" not in page
    text = cell_text(page)
    assert "TaskError: ValueError in task f&lt;script&gt;" in text
    assert "Process 4242" in text
    assert "Message ValueError: &lt;script&gt;" in text
    assert '  File &quot;job.py&quot;, line 3, in f\n' in page   # indentation kept
    assert "<details open" in page and "Remote traceback (4 lines)" in page
    assert repr(error) == repr(error)                             # plain repr untouched


def test_a_long_traceback_starts_folded():
    traceback = "Traceback:\n" + "  frame\n" * 200 + "RuntimeError: deep"
    page = TaskError("g", traceback, RuntimeError("deep"))._repr_html_()
    assert "<details style" in page and "Remote traceback (202 lines)" in page


# -- cluster, object and actor cards from answers --------------------------------------

KNOWN_CLUSTER = {"address": "tcp://127.0.0.1:1234",
                 "dashboard_url": "http://127.0.0.1:8265",
                 "num_workers": 2, "resources": {"CPU": 2.0, "node:a": 1.0},
                 "session_dir": "/tmp/s"}


def test_cluster_card_with_an_answer():
    answer = {"address": "tcp://127.0.0.1:1234", "workers": 3, "nodes": 2,
              "resources": {"total": {"CPU": 3.0, "GPU": 1.0, "node:a": 1.0},
                            "used": {"CPU": 1.0}},
              "store": {"used": 3 * MB, "capacity": 30 * MB, "objects": 2,
                        "spilled_bytes_total": MB,
                        "restored_bytes_total": 0},
              "objects": 5, "tasks": {"live": 4, "done": 10, "failed": 1}}
    page = notebook_views.cluster_html(KNOWN_CLUSTER, answer, None)
    text = cell_text(page)
    assert '<a href="http://127.0.0.1:8265"' in page
    for part in ("graphstore cluster connected", "Scheduler tcp://127.0.0.1:1234",
                 "Workers 3 on 2 nodes",
                 "CPUs 1 of 3 in use", "Resources GPU 1", "3.0 MiB of 30.0 MiB used",
                 "Spilled 1.0 MiB", "Tasks 4 live, 10 done, 1 failed"):
        assert part in text, (part, text)
    assert "node:a" not in text


def test_cluster_card_without_a_cluster_says_so_and_shows_what_init_returned():
    page = notebook_views.cluster_html({**KNOWN_CLUSTER, "dashboard_url": None}, None,
                                       notebook_views.NOT_CONNECTED)
    text = cell_text(page)
    assert "not connected" in text and "Workers 2" in text and "CPUs 2" in text
    assert "include_dashboard=False" in text and "<a " not in page


def test_cluster_card_refuses_a_script_link_from_the_network():
    page = notebook_views.cluster_html({**KNOWN_CLUSTER, "dashboard_url": "javascript:x()"},
                                       None, None)
    assert "<a " not in page and "javascript:x()" in page


@pytest.mark.parametrize("answer, expected", [
    ({"state": "pending", "size": 0, "producer": "slow", "producer_state": "queued"},
     ["pending", "Size not known yet", "Made by slow (queued)"]),
    ({"state": "ready", "size": 2 * MB, "inline": False, "spilled": "/spill/f-1",
      "stores": [{"worker": "ab" * 8, "pid": 7, "node": "node-a"}]},
     ["ready", "Size 2.0 MiB", "store of worker abababab (pid 7) on node node-a",
      "spilled to /spill/f-1"]),
    ({"state": "ready", "size": 5, "inline": True, "stores": []},
     ["Size 5 B", "inline (small"]),
    ({"state": "error", "size": 0, "producer": "boom", "producer_state": "failed",
      "error": f"ValueError: {EVIL}"},
     ["error", "Error ValueError: &lt;script&gt;", "Made by boom (failed)"]),
    ({"state": "freed", "size": 9}, ["freed: no ref holds it any more"]),
    ({"state": "unknown"}, ["the scheduler does not know this object"]),
])
def test_object_card_by_state(answer, expected):
    page = notebook_views.object_html("cd" * 16, answer, None)
    text = cell_text(page)
    assert "<script>" not in page and "cd" * 16 in text
    for part in expected:
        assert part in text, (part, text)


def test_actor_card_with_and_without_an_answer():
    known = {"class_name": "Counter", "actor_id": "ef" * 16,
             "methods": [f"m{i:02}" for i in range(40)]}
    answer = {"state": "alive", "name": "c1", "namespace": "ns", "detached": True,
              "pid": 99, "node": "node-a", "worker": "12" * 8, "restarts": 1,
              "max_restarts": -1, "pending_calls": 2}
    text = cell_text(notebook_views.actor_html(known, answer, None))
    for part in ("Actor Counter", "alive", "Name c1 (namespace ns), detached",
                 "Runs in pid 99 on node node-a (started by worker 12121212)",
                 "Restarts 1 of unlimited", "Calls pending 2", "m29, … (40 in all)"):
        assert part in text, (part, text)
    text = cell_text(notebook_views.actor_html(known, {**answer, "state": "dead"}, None))
    assert "dead" in text and "Ran in pid 99" in text and "Runs in" not in text
    text = cell_text(notebook_views.actor_html(known, None, notebook_views.NOT_CONNECTED))
    assert "not connected" in text and "Class Counter" in text and "Runs in" not in text


def test_answers_that_make_no_sense_still_draw_through_the_guard():
    """A scheduler of another version, or a corrupt answer: the card may be wrong, but
    the repr does not raise."""
    for answer in ({"state": "ready", "stores": "nonsense", "size": "huge"},
                   {"state": 3, "stores": [None]}, {}):
        page = notebook_repr.never_raise(
            lambda: notebook_views.object_html("00" * 16, answer, None), lambda: "plain")
        assert page.startswith("<")


def test_a_ref_draws_with_no_cluster_at_all():
    import graphstore
    graphstore.shutdown()            # whatever an earlier test left connected
    text = cell_text(ObjectRef(b"\x01" * 16)._repr_html_())
    assert "not connected" in text and "01" * 16 in text


def test_ask_without_a_runtime_does_not_ask():
    assert notebook_views.ask(None, msg.DescribeCluster()) == (None,
                                                               notebook_views.NOT_CONNECTED)


# -- the scheduler's descriptions ------------------------------------------------------

def test_describe_cluster_counts_workers_resources_and_store():
    h = Harness()
    w1 = h.worker("w1", cpus=2, node="node-a", capacity=100 * MB)
    h.worker("w2", cpus=1, node="node-b", capacity=50 * MB, resources={"GPU": 1.0})
    h.s.worker_heartbeat(w1, {"store_used": 9 * MB, "store_objects": 1,
                              "spilled_bytes": 2 * MB})
    h.put()
    h.submit()
    h.s.schedule()
    view = descriptions.describe_cluster(h.s, address="tcp://s:1", dashboard_url="http://d")
    assert view["workers"] == 2 and view["nodes"] == 2 and view["drivers"] == 1
    assert view["resources"]["total"]["CPU"] == 3.0
    assert view["resources"]["total"]["GPU"] == 1.0
    assert view["resources"]["used"]["CPU"] == 1.0
    assert view["store"] == {"used": 9 * MB, "capacity": 150 * MB, "objects": 1,
                             "spilled_bytes_total": 2 * MB, "restored_bytes_total": 0}
    assert view["objects"] == 2 and view["tasks"]["live"] == 1
    assert view["address"] == "tcp://s:1" and view["dashboard_url"] == "http://d"


def test_describe_object_in_each_state():
    h = Harness()
    w1 = h.worker("w1", node="node-a")
    small = h.put()
    big = h.put_stored(w1, 8 * MB)
    spilled = h.put_stored(w1, 3 * MB)
    h.s.objects_spilled(w1, msg.ObjectsSpilled("/spill/w1-1", [[spilled, 0, 3 * MB]]))
    task, (result,) = h.submit(name="boom")
    h.s.schedule()
    assert descriptions.describe_object(h.s, result)["state"] == "pending"
    assert descriptions.describe_object(h.s, result)["producer"] == "boom"
    h.fail(w1, task)

    view = descriptions.describe_object(h.s, small)
    assert view["state"] == "ready" and view["inline"] and view["stores"] == []
    view = descriptions.describe_object(h.s, big)
    assert view["size"] == 8 * MB and not view["inline"] and view["spilled"] is None
    assert view["stores"] == [{"worker": w1.hex(), "pid": 100, "node": "node-a",
                               "address": "tcp://w1:1"}]
    assert descriptions.describe_object(h.s, spilled)["spilled"] == "/spill/w1-1"
    view = descriptions.describe_object(h.s, result)
    assert view["state"] == "error" and view["error"] == "ValueError: boom"
    assert view["producer_state"] == "failed"

    h.s.decref(DRIVER, [big])
    assert descriptions.describe_object(h.s, big)["state"] == "freed"
    assert descriptions.describe_object(h.s, b"\0" * 16)["state"] == "unknown"
    assert descriptions.describe_object(h.s, b"short")["state"] == "unknown"


def test_describe_actor():
    h = Actors()
    h.worker("w1", cpus=1)
    actor_id, _ = h.create(name="counter", max_restarts=2)
    h.s.schedule()
    h.start(actor_id)
    view = descriptions.describe_actor(h.s, actor_id)
    assert view["state"] == "alive" and view["class_name"] == "Counter"
    assert view["name"] == "counter" and view["namespace"] == "default"
    assert view["pid"] == 4242 and view["max_restarts"] == 2
    assert descriptions.describe_actor(h.s, b"\0" * 16) == {"id": "00" * 16,
                                                             "state": "unknown"}


# -- at the protocol's door ------------------------------------------------------------

@pytest.mark.parametrize("item", [
    [msg.CODES[msg.DescribeObject], "not-an-id"],
    [msg.CODES[msg.DescribeActor], 7],
    [msg.CODES[msg.DescribeCluster], "extra"],
])
def test_malformed_describe_messages_are_refused_naming_the_problem(item):
    import msgpack
    with pytest.raises(ValueError, match="Describe"):
        msg.decode_header(msgpack.packb([item], use_bin_type=True), [])
