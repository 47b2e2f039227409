"""Unit tests of the runtime's pure parts: the ordered ref channel, the waiter and the
table of streaming generators.

No processes, no sockets: ``RefChannel`` is fed ref events and messages and its ``drain``
checked; ``Waiter`` is woken by hand, from other threads where that is its contract.
"""
from __future__ import annotations

import concurrent.futures
import threading

import pytest

from graphstore.core import protocol as msg
from graphstore.core.object_ref import ObjectRef
from graphstore.core.serialization import dumps, error_payload
from graphstore.runtime.refcounts import AskAgain, RefChannel
from graphstore.runtime.streams import _END, StreamTable
from graphstore.runtime.waiting import Waiter


def oid(n: int) -> bytes:
    return n.to_bytes(16, "big")


A, B, C = oid(1), oid(2), oid(3)


class LocalItem:
    """Stands for an item the process acts on itself (an actor send)."""

    def __init__(self, n: int):
        self.n = n


@pytest.fixture
def released():
    return []


@pytest.fixture
def channel(released):
    return RefChannel(released.append, local_types=(LocalItem,))


def test_the_first_ref_is_announced_and_later_ones_are_counted(channel):
    for _ in range(3):
        channel.ref_created(A)
    out, local = channel.drain()
    assert out == [msg.IncRef([A])] and local == []
    assert channel.counts == {A: 3} and channel.held == {A}


def test_only_the_last_dropped_ref_releases(channel, released):
    channel.ref_created(A)
    channel.ref_created(A)
    channel.drain()
    channel.ref_deleted(A)
    assert channel.drain() == ([], []) and released == []
    channel.ref_deleted(A)
    assert channel.drain() == ([msg.DecRef([A])], [])
    assert released == [A] and channel.counts == {} and channel.held == set()


def test_consecutive_ids_are_batched_into_one_message(channel):
    for object_id in (A, B, C):
        channel.ref_created(object_id)
    assert channel.drain()[0] == [msg.IncRef([A, B, C])]
    for object_id in (A, B, C):
        channel.ref_deleted(object_id)
    assert channel.drain()[0] == [msg.DecRef([A, B, C])]


def test_order_is_kept_between_ref_events_and_messages(channel):
    """A put reaches the scheduler before the release of its id, and an IncRef queued
    before a message goes before it."""
    put = msg.PutObject(A, [b"x"], [], None)
    channel.ref_created(B)
    channel.append(put)
    channel.ref_created(A)          # the put's own ref: already held, no IncRef
    channel.ref_deleted(A)
    out, _ = channel.drain()
    assert out == [msg.IncRef([B]), put, msg.DecRef([A])]


def test_results_of_submitted_work_are_held_without_an_incref(channel):
    task = msg.SubmitTask(oid(10), b"f" * 16, "f", None, [], [], [A, B], 1.0, None, 0)
    actor = msg.CreateActor(oid(11), C, b"c" * 16, "C", None, [], [], {}, {})
    channel.append(task)
    channel.append(actor)
    for object_id in (A, B, C):
        channel.ref_created(object_id)
    out, _ = channel.drain()
    assert out == [task, actor]
    assert channel.held == {A, B, C}


def test_an_object_is_asked_for_once_until_it_arrives(channel):
    channel.append(msg.WantObjects([A, B]))
    channel.append(msg.WantObjects([B, C]))
    channel.append(msg.WantObjects([A]))
    out, _ = channel.drain()
    assert out == [msg.WantObjects([A, B]), msg.WantObjects([C])]
    channel.ask_again([A])          # arrived (or forgotten): a later want asks again
    channel.append(msg.WantObjects([A, B]))
    assert channel.drain()[0] == [msg.WantObjects([A])]


def test_actor_call_results_are_never_asked_of_the_scheduler(channel):
    submitted = msg.ActorCallSubmitted(oid(20), oid(21), "m", [], [], [A])
    channel.append(submitted)
    channel.append(msg.WantObjects([A, B]))
    out, _ = channel.drain()
    assert out == [submitted, msg.WantObjects([B])]
    assert A in channel.held


def test_asking_again_for_an_actor_result_wins_over_its_queued_submission(channel):
    """The actor's process died before the call's submission left the channel: the ask
    made then (queued after it) must still reach the scheduler, once."""
    submitted = msg.ActorCallSubmitted(oid(20), oid(21), "m", [], [], [A])
    channel.append(submitted)
    channel.append(AskAgain([A]))
    channel.append(msg.WantObjects([A]))
    out, _ = channel.drain()
    assert out == [submitted, msg.WantObjects([A])]


def test_local_items_come_back_apart_in_order_after_pending_ref_events(channel):
    channel.ref_created(A)
    channel.append(LocalItem(1))
    channel.ref_created(B)
    channel.append(LocalItem(2))
    out, local = channel.drain()
    assert out == [msg.IncRef([A]), msg.IncRef([B])]
    assert [item.n for item in local] == [1, 2]


def test_a_ref_made_again_after_its_release_is_announced_again(channel, released):
    channel.ref_created(A)
    channel.ref_deleted(A)
    channel.ref_created(A)
    out, _ = channel.drain()
    assert out == [msg.IncRef([A]), msg.DecRef([A]), msg.IncRef([A])]
    assert released == [A] and channel.counts == {A: 1}


def test_many_threads_append_while_the_owner_drains(channel, released):
    """Appending is safe from any thread; the counts come out exact."""
    threads_n, per_thread = 8, 5_000
    sent: list = []
    start = threading.Barrier(threads_n + 1)

    def churn(k: int):
        start.wait()
        object_id = oid(100 + k % 2)
        for _ in range(per_thread):
            channel.ref_created(object_id)
            channel.ref_deleted(object_id)

    threads = [threading.Thread(target=churn, args=(k,)) for k in range(threads_n)]
    for t in threads:
        t.start()
    start.wait()
    while any(t.is_alive() for t in threads):
        sent.extend(channel.drain()[0])
    sent.extend(channel.drain()[0])
    assert channel.counts == {} and channel.held == set()
    for object_id in (oid(100), oid(101)):
        incs = sum(m.ids.count(object_id) for m in sent if type(m) is msg.IncRef)
        decs = sum(m.ids.count(object_id) for m in sent if type(m) is msg.DecRef)
        assert incs == decs >= 1
        assert released.count(object_id) == decs


def test_a_thread_waiter_wakes_on_the_last_needed_arrival():
    waiter = Waiter(2)
    woke = threading.Event()

    def wait():
        if waiter.wait(10):
            woke.set()

    thread = threading.Thread(target=wait)
    thread.start()
    waiter.arrived(lambda object_id: None)
    assert not woke.wait(0.05)
    waiter.arrived(lambda object_id: None)
    thread.join(5)
    assert woke.is_set()


def test_a_waiter_times_out_when_nothing_arrives():
    assert Waiter(1).wait(0.01) is False


def test_a_future_waiter_gets_the_value_or_the_error():
    future = concurrent.futures.Future()
    Waiter(1, future=future, ref_id=A).arrived(lambda object_id: object_id.hex())
    assert future.result(0) == A.hex()

    failing = concurrent.futures.Future()

    def raises(object_id):
        raise KeyError(object_id)

    Waiter(1, future=failing, ref_id=B).arrived(raises)
    with pytest.raises(KeyError):
        failing.result(0)


def test_fail_wakes_a_thread_and_fails_a_future():
    waiter = Waiter(3)
    waiter.fail(ConnectionError("gone"))
    assert waiter.wait(0) is True
    waiter.fail(ConnectionError("twice is harmless"))

    future = concurrent.futures.Future()
    Waiter(1, future=future, ref_id=A).fail(ConnectionError("gone"))
    with pytest.raises(ConnectionError, match="gone"):
        future.result(0)


# -- streams ------------------------------------------------------------------------------

def test_a_stream_hands_out_refs_in_order_and_ends_at_the_count():
    table, gen = StreamTable(), ObjectRef._new(A)
    table.open(A)
    woken = []
    assert table.poll(A, gen, lambda: woken.append(1)) is None
    table.item_ready(A, 1, ObjectRef._new(C))         # out of order: kept for later
    table.item_ready(A, 0, ObjectRef._new(B))
    assert woken == [1]
    assert table.poll(A, gen, take=False) == ObjectRef._new(B)
    assert [table.poll(A, gen), table.poll(A, gen)] == [ObjectRef._new(B), ObjectRef._new(C)]
    assert table.poll(A, gen, lambda: woken.append(2)) is None
    table.completed(A, dumps(2)[0], None)
    assert woken == [1, 2] and table.poll(A, gen) is _END and table.finished(A)


def test_the_count_may_come_before_the_last_values():
    """An actor call's end comes straight from the actor, its values via the scheduler."""
    table, gen = StreamTable(), ObjectRef._new(A)
    table.open(A)
    table.completed(A, dumps(1)[0], None)
    assert table.poll(A, gen) is None and not table.finished(A)
    table.item_ready(A, 0, ObjectRef._new(B))
    assert table.poll(A, gen) == ObjectRef._new(B) and table.poll(A, gen) is _END


def test_a_failed_task_ends_with_its_generator_object_once():
    table, gen = StreamTable(), ObjectRef._new(A)
    table.open(A)
    table.item_ready(A, 0, ObjectRef._new(B))
    table.completed(A, None, error_payload(ConnectionError("worker died")))
    assert table.poll(A, gen) == ObjectRef._new(B)
    assert table.poll(A, gen) is gen                  # its get raises why
    assert table.poll(A, gen) is _END


def test_a_closed_stream_drops_what_comes_for_it():
    table, gen = StreamTable(), ObjectRef._new(A)
    table.open(A)
    table.item_ready(A, 0, ObjectRef._new(B))
    table.close(A)
    table.item_ready(A, 1, ObjectRef._new(C))
    assert table.by_id == {} and table.poll(A, gen) is _END
