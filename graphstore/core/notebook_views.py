"""What the notebook cards of the cluster, a ref and an actor handle say.

``ask`` puts the one cheap question a card needs to the scheduler (``DescribeCluster``,
``DescribeObject``, ``DescribeActor``: no scan of objects or tasks) and never raises:
when the cluster is gone, or does not answer within ``ASK_TIMEOUT`` seconds, it says
why instead. The ``*_html`` functions turn what is known locally plus that answer (or
that reason) into a card (``graphstore.notebook_repr``); they are pure, so they are
tested with hand-made answers.
"""
from __future__ import annotations

import asyncio

from graphstore import notebook_repr
from graphstore.core.formatting import format_bytes
from graphstore.exceptions import ConnectionLostError

#: Seconds a card waits for the scheduler's answer before drawing without it.
ASK_TIMEOUT = 2.0
#: The note of a card drawn with no cluster to ask.
NOT_CONNECTED = "not connected to a cluster (graphstore.shutdown() was called, or the " \
                "connection was lost): showing what was known locally"
#: The most method names an actor card lists.
MAX_METHODS = 30


def ask(runtime, message) -> tuple[dict | None, str | None]:
    """``(answer, None)``, or ``(None, why there is none)``; never raises.

    ``runtime``: the process's runtime, or None when graphstore is not connected."""
    if runtime is None or getattr(runtime, "closed", False):
        return None, NOT_CONNECTED
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is not None and running is getattr(runtime, "loop", None):
        # A blocking request from the loop that must serve it would never return.
        return None, "not asked: drawn on graphstore's event-loop thread"
    try:
        answer = runtime.request(message, timeout=ASK_TIMEOUT)
    except ConnectionLostError:
        return None, NOT_CONNECTED
    except TimeoutError:
        return None, f"the scheduler did not answer within {ASK_TIMEOUT:g} s"
    except Exception as exc:
        return None, f"the scheduler did not answer ({type(exc).__name__}: {exc})"
    if not isinstance(answer, dict):
        return None, f"the scheduler gave an unexpected answer ({type(answer).__name__})"
    return answer, None


def _number(x) -> str:
    """``2.0`` -> ``"2"``, ``0.5`` -> ``"0.5"``."""
    try:
        return f"{float(x):g}"
    except (TypeError, ValueError):
        return str(x)


def _count(n, noun: str) -> str:
    """``_count(1, "node")`` -> ``"1 node"``, ``_count(2, "node")`` -> ``"2 nodes"``."""
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _other_resources(resources: dict) -> str | None:
    """Resources beyond CPUs (``node:<id>`` markers left out), or None if there are none."""
    names = sorted(k for k in resources
                   if k != "CPU" and not str(k).startswith("node:"))
    if not names:
        return None
    return ", ".join(f"{name} {_number(resources[name])}" for name in names)


# -- the cluster ---------------------------------------------------------------------

def cluster_html(known: dict, answer: dict | None, problem: str | None) -> str:
    """The card of what ``init()`` returned. ``known``: its ``address``,
    ``dashboard_url``, ``num_workers``, ``resources`` and ``session_dir``; ``answer``: a
    ``DescribeCluster`` answer, or None with ``problem`` saying why."""
    address = known.get("address")
    dashboard = known.get("dashboard_url")
    rows: list[tuple] = [("Scheduler", address)]
    if dashboard:
        rows.append(("Status page", dashboard, dashboard))
    else:
        rows.append(("Status page", "none (started with include_dashboard=False)"))
    if answer is not None:
        resources = answer.get("resources") or {}
        total, used = resources.get("total") or {}, resources.get("used") or {}
        store = answer.get("store") or {}
        tasks = answer.get("tasks") or {}
        nodes = answer.get("nodes", 0)
        rows += [
            ("Workers", f"{answer.get('workers', 0)} on {_count(nodes, 'node')}"),
            ("CPUs", f"{_number(used.get('CPU', 0))} of {_number(total.get('CPU', 0))} "
                     f"in use"),
            ("Resources", _other_resources(total)),
            ("Object store", f"{format_bytes(store.get('used'))} of "
                             f"{format_bytes(store.get('capacity'))} used, "
                             f"{_count(store.get('objects', 0), 'object')} in stores"),
            ("Spilled", format_bytes(store.get("spilled_bytes_total"))
             if store.get("spilled_bytes_total") else None),
            ("Objects", f"{answer.get('objects', 0)} live"),
            ("Tasks", f"{tasks.get('live', 0)} live, {tasks.get('done', 0)} done, "
                      f"{tasks.get('failed', 0)} failed"),
        ]
    else:
        resources = known.get("resources") or {}
        rows += [("Workers", known.get("num_workers")),
                 ("CPUs", _number(resources["CPU"]) if "CPU" in resources else None),
                 ("Resources", _other_resources(resources))]
    rows.append(("Session directory", known.get("session_dir")))
    return notebook_repr.render_card(
        "graphstore cluster", state="connected" if answer is not None else "not connected",
        rows=rows, note=problem)


# -- an object ------------------------------------------------------------------------

def _where(answer: dict) -> str | None:
    places = []
    if answer.get("inline"):
        places.append("inline (small: kept by the scheduler, sent in messages)")
    for store in answer.get("stores") or []:
        places.append(f"store of worker {str(store.get('worker', ''))[:8]} "
                      f"(pid {store.get('pid')}) on node {store.get('node')}")
    if answer.get("spilled"):
        places.append(f"spilled to {answer['spilled']}")
    return "; ".join(places) or None


def object_html(object_hex: str, answer: dict | None, problem: str | None) -> str:
    """The card of an ``ObjectRef``; ``answer``: a ``DescribeObject`` answer, or None
    with ``problem`` saying why."""
    rows: list[tuple] = [("ID", object_hex)]
    state = None
    if answer is not None:
        state = answer.get("state")
        if state == "pending":
            size = "not known yet"
        elif state in ("unknown", "error"):
            size = None
        else:
            size = format_bytes(answer.get("size"))
        producer = answer.get("producer")
        made_by = None
        if producer:
            made_by = producer + (f" ({answer['producer_state']})"
                                  if answer.get("producer_state") else "")
        rows += [("Size", size), ("Where", _where(answer)), ("Made by", made_by),
                 ("Error", answer.get("error"))]
        if state == "unknown" and problem is None:
            problem = "the scheduler does not know this object (freed long ago, or " \
                      "made by another cluster)"
        elif state == "freed" and problem is None:
            problem = "freed: no ref holds it any more"
    return notebook_repr.render_card("ObjectRef", state=state or "not connected",
                                     rows=rows, note=problem)


# -- an actor ---------------------------------------------------------------------------

def actor_html(known: dict, answer: dict | None, problem: str | None) -> str:
    """The card of an actor handle. ``known``: its ``class_name``, ``actor_id`` (hex)
    and ``methods``; ``answer``: a ``DescribeActor`` answer, or None with ``problem``."""
    methods = sorted(known.get("methods") or ())
    method_text = ", ".join(methods[:MAX_METHODS]) + (
        f", … ({len(methods)} in all)" if len(methods) > MAX_METHODS else "")
    rows: list[tuple] = [("Class", known.get("class_name")),
                         ("Actor ID", known.get("actor_id"))]
    state = None
    if answer is not None:
        state = answer.get("state")
        name = answer.get("name")
        if name:
            rows.append(("Name", f"{name} (namespace {answer.get('namespace')})"
                         + (", detached" if answer.get("detached") else "")))
        runs_in = None
        if answer.get("pid"):
            runs_in = f"pid {answer['pid']} on node {answer.get('node')}"
            if answer.get("worker"):
                runs_in += f" (started by worker {str(answer['worker'])[:8]})"
        max_restarts = answer.get("max_restarts", 0)
        rows += [("Ran in" if state == "dead" else "Runs in", runs_in),
                 ("Restarts", f"{answer.get('restarts', 0)} of "
                              f"{'unlimited' if max_restarts == -1 else max_restarts}"),
                 ("Calls pending", answer.get("pending_calls"))]
        if state == "unknown" and problem is None:
            problem = "the scheduler does not know this actor (made by another cluster?)"
    rows.append(("Methods", method_text or None))
    return notebook_repr.render_card(f"Actor {known.get('class_name')}",
                                     state=state or "not connected", rows=rows,
                                     note=problem)
