"""Actors in the scheduler's state machine (``scheduler/actors.py``), driven with plain
method calls: lifetime (calls keep their actor, named actors, owners), ``kill`` of an actor
still starting, cancelling calls no process has seen, and late reports of dead processes.
The same behaviours on real clusters: ``test_ray_actor_lifetime.py``.
"""
from __future__ import annotations

import pickle

import pytest

from graphstore.core import protocol as msg
from graphstore.exceptions import ActorDiedError
from graphstore.scheduler import entities as st

from test_scheduler_state import DRIVER, DRIVER2, FN, Harness, oid

PROCESS = b"P" * 16
PROCESS2 = b"Q" * 16


class Actors(Harness):
    """The state-machine harness plus actor messages."""

    def create(self, peer=DRIVER, cpus=0.0, deps=(), **options) -> tuple[bytes, bytes]:
        actor_id, creation_id = oid(), oid()
        if cpus:
            options["num_cpus"] = cpus
        self.s.create_actor(peer, msg.CreateActor(actor_id, creation_id, FN, "Counter",
                                                  [b"args"], list(deps), [], options,
                                                  {"add": [1, None, None, None]}))
        return actor_id, creation_id

    def actor(self, actor_id) -> st.ActorState:
        return self.s.actors[actor_id]

    def register(self, actor_id, process=PROCESS, incarnation=None) -> dict:
        incarnation = incarnation or self.actor(actor_id).incarnation
        return self.s.register_actor_process(process, msg.RegisterActorProcess(
            actor_id, incarnation, process, 4242, "host", "node-a", "tcp://actor:1"))

    def ready(self, actor_id, process=PROCESS):
        self.s.actor_ready(process, msg.ActorReady(actor_id, self.actor(actor_id).incarnation,
                                                   None))

    def start(self, actor_id, process=PROCESS):
        self.register(actor_id, process)
        self.ready(actor_id, process)

    def call(self, actor_id, peer=DRIVER) -> tuple[bytes, bytes]:
        call_id, ret = oid(), oid()
        self.s.actor_call_submitted(peer, msg.ActorCallSubmitted(call_id, actor_id,
                                                                 "Counter.add", [], [], [ret]))
        return call_id, ret

    def call_done(self, call_id, ret, actor_id, process=PROCESS):
        self.s.actor_call_done(process, msg.ActorCallDone(
            call_id, actor_id, [[ret, [b"1"], [], 1, None, None]], 0.01, None))


@pytest.fixture
def h():
    harness = Actors()
    harness.worker("w1", cpus=2)
    return harness


def stops(h) -> list:
    return [(m.actor_id, m.incarnation) for _, m in h.take(msg.StopActor)]


# -- lifetime ---------------------------------------------------------------------------

def test_a_call_not_finished_keeps_its_actor_after_the_last_handle(h):
    actor_id, creation_id = h.create()
    call_id, ret = h.call(actor_id)
    h.s.decref(DRIVER, [creation_id])            # the handle is dropped at once
    h.start(actor_id)
    assert h.actor(actor_id).state == st.ALIVE
    h.take()
    h.call_done(call_id, ret, actor_id)
    assert h.obj(ret).state == st.READY
    assert stops(h) == [(actor_id, 1)]           # then collected
    assert actor_id not in h.s.actors


def test_an_actor_collected_stays_known_so_get_actor_answers_gone_at_once(h):
    """GetActor waits for actors not heard of yet (a handle may overtake its actor's
    CreateActor); one collected after its last handle is known, and dead."""
    actor_id, creation_id = h.create()
    h.start(actor_id)
    assert h.s.actor_known(actor_id) and not h.s.actor_known(oid())
    h.s.decref(DRIVER, [creation_id])
    assert actor_id not in h.s.actors
    assert h.s.actor_known(actor_id)
    assert h.s.actor_status(actor_id, 1)[0] == "dead"


def test_several_queued_calls_all_finish_before_the_actor_goes(h):
    actor_id, creation_id = h.create()
    h.start(actor_id)
    calls = [h.call(actor_id) for _ in range(3)]
    h.s.decref(DRIVER, [creation_id])
    h.take()
    for call_id, ret in calls[:2]:
        h.call_done(call_id, ret, actor_id)
    assert h.actor(actor_id).state == st.ALIVE and not stops(h)
    h.call_done(*calls[2], actor_id)
    assert stops(h) == [(actor_id, 1)]


def test_a_named_actor_goes_with_its_creators_handles_and_frees_its_name(h):
    actor_id, creation_id = h.create(name="keeper")
    h.start(actor_id)
    assert h.s.named_actor(msg.GetNamedActor("keeper", "default"))[0] == actor_id
    h.s.decref(DRIVER, [creation_id])
    assert actor_id not in h.s.actors
    with pytest.raises(ValueError, match="keeper"):
        h.s.named_actor(msg.GetNamedActor("keeper", "default"))
    again, _ = h.create(name="keeper")           # the name is free again
    assert h.s.named_actor(msg.GetNamedActor("keeper", "default"))[0] == again


def test_a_detached_actor_outlives_its_handles_and_its_creator(h):
    actor_id, creation_id = h.create(name="d", lifetime="detached")
    h.start(actor_id)
    h.s.decref(DRIVER, [creation_id])
    h.s.remove_peer(DRIVER)
    assert h.actor(actor_id).state == st.ALIVE
    h.take()
    h.s.kill_actor(msg.KillActor(actor_id, True))
    assert stops(h) == [(actor_id, 1)]
    assert actor_id not in h.s.actors            # dead, and no handle keeps its record


def test_actors_of_a_peer_that_leaves_die_though_others_hold_handles(h):
    h.s.add_driver(DRIVER2)
    named, named_creation = h.create(name="n")
    anonymous, creation = h.create()
    for actor_id, c in ((named, named_creation), (anonymous, creation)):
        h.s.incref(DRIVER2, [c])                 # a handle passed on
    h.s.remove_peer(DRIVER)
    for actor_id in (named, anonymous):
        assert h.actor(actor_id).state == st.DEAD
        assert "owner" in str(pickle.loads(h.actor(actor_id).error[0]))


# -- kill -------------------------------------------------------------------------------

def test_kill_of_an_actor_still_starting_is_final_at_once(h):
    actor_id, _ = h.create(cpus=2)
    node = h.s.workers[next(iter(h.s.workers))].node
    assert h.actor(actor_id).state == st.STARTING and node.cpus_used == 2
    call_id, ret = h.call(actor_id)
    h.take()
    h.s.kill_actor(msg.KillActor(actor_id, True))
    assert h.actor(actor_id).state == st.DEAD
    assert stops(h) == [(actor_id, 1)]
    assert node.cpus_used == 0                   # resources freed
    assert isinstance(h.error_of(ret), ActorDiedError)
    assert [r["state"] for r in h.s.actor_records()] == ["dead"]
    with pytest.raises(ValueError, match="killed meanwhile"):
        h.register(actor_id, incarnation=1)      # its process, late, is refused


def test_kill_with_restart_of_an_actor_still_starting_starts_it_again(h):
    actor_id, _ = h.create(max_restarts=1)
    h.take()
    h.s.kill_actor(msg.KillActor(actor_id, False))
    actor = h.actor(actor_id)
    out = h.take()
    assert [(type(m), m.incarnation) for _, m in out] == [(msg.StopActor, 1),
                                                          (msg.StartActor, 2)]
    assert actor.state == st.RESTARTING and actor.restarts == 1
    with pytest.raises(ValueError):
        h.register(actor_id, incarnation=1)      # the old process is not it any more
    h.start(actor_id, PROCESS2)
    assert actor.state == st.ALIVE
    h.take()
    h.s.kill_actor(msg.KillActor(actor_id, False))  # no restart left
    assert [type(m) for _, m in h.take()] == [msg.StopActor]
    h.s.remove_peer(PROCESS2)
    assert actor.state == st.DEAD


def test_kill_with_restart_of_an_actor_without_a_host_changes_nothing(h):
    _, (pending,) = h.submit(cpus=2)
    h.s.schedule()
    actor_id, _ = h.create(deps=[pending], max_restarts=1)   # waits for its argument
    h.s.kill_actor(msg.KillActor(actor_id, False))
    assert h.actor(actor_id).state == st.PENDING_PLACEMENT and not h.take(msg.StopActor)


def test_late_results_of_a_killed_process_are_dropped(h):
    actor_id, _ = h.create()
    h.start(actor_id)
    call_id, ret = h.call(actor_id)
    h.s.kill_actor(msg.KillActor(actor_id, True))
    assert isinstance(h.error_of(ret), ActorDiedError)
    h.call_done(call_id, ret, actor_id)          # it finished before the kill landed
    assert not h.s.early_results
    assert isinstance(h.error_of(ret), ActorDiedError)


def test_a_result_that_overtook_its_submission_counts_even_if_the_actor_died(h):
    actor_id, _ = h.create()
    h.start(actor_id)
    call_id, ret = oid(), oid()
    h.call_done(call_id, ret, actor_id)          # the caller's submission is on its way
    h.s.kill_actor(msg.KillActor(actor_id, True))
    h.s.actor_call_submitted(DRIVER, msg.ActorCallSubmitted(call_id, actor_id, "Counter.add",
                                                            [], [], [ret]))
    assert h.obj(ret).state == st.READY          # as its caller got it, straight


# -- cancelling calls -------------------------------------------------------------------

def test_cancelling_a_call_before_any_process_tells_its_caller_and_the_process(h):
    actor_id, _ = h.create()
    call_id, ret = h.call(actor_id)
    h.take()
    h.s.cancel(msg.CancelTask(ret, False, True))
    assert h.take() == [(DRIVER, msg.CancelQueuedCall(call_id))]
    build = h.register(actor_id)                 # it may still come: never start it
    assert build["cancelled"] == [call_id]


def test_cancelling_a_call_of_a_process_running_init_tells_the_process_and_the_caller(h):
    actor_id, _ = h.create()
    h.register(actor_id)                         # __init__ runs: calls wait in callers
    call_id, ret = h.call(actor_id)
    h.take()
    h.s.cancel(msg.CancelTask(ret, False, True))
    assert h.take() == [(PROCESS, msg.CancelRunning(call_id, False)),
                        (DRIVER, msg.CancelQueuedCall(call_id))]


def test_cancelling_a_call_of_a_live_actor_goes_to_its_process(h):
    actor_id, _ = h.create()
    h.start(actor_id)
    call_id, ret = h.call(actor_id)
    h.take()
    h.s.cancel(msg.CancelTask(ret, False, True))
    assert h.take() == [(PROCESS, msg.CancelRunning(call_id, False))]


def test_a_caller_reporting_a_cancelled_call_finishes_it(h):
    actor_id, creation_id = h.create()
    call_id, ret = h.call(actor_id)
    h.s.cancel(msg.CancelTask(ret, False, True))
    error = [b"cancelled"]
    h.s.actor_call_done(DRIVER, msg.ActorCallDone(call_id, b"", [[ret, None, [], 0, None,
                                                                 error]], 0.0, "cancelled"))
    assert h.obj(ret).state == st.ERROR and not h.actor(actor_id).calls
    h.s.decref(DRIVER, [creation_id])            # nothing keeps the actor now
    h.start(actor_id)
    assert actor_id not in h.s.actors


# -- placement --------------------------------------------------------------------------

def test_actors_waiting_for_cpus_cost_one_look_per_shape_per_pass(h, monkeypatch):
    """Two CPUs: two 1-CPU actors start, the other 48 wait. A scheduling pass weighs the
    workers for the first waiting actor of that shape only (the rest would find none
    either), and an actor of another shape (no CPU) is still placed in the same pass."""
    created = [h.create(cpus=1.0)[0] for _ in range(50)]
    started = [m.actor_id for _, m in h.take(msg.StartActor)]
    assert started == created[:2]
    looks = []
    original = type(h.s)._pick_actor_worker
    monkeypatch.setattr(type(h.s), "_pick_actor_worker",
                        lambda self, actor: looks.append(actor.id) or original(self, actor))
    light, _ = h.create()                     # no CPU: fits beside the others
    assert [m.actor_id for _, m in h.take(msg.StartActor)] == [light]
    looks.clear()
    h.s.schedule()
    assert looks == [created[2]]              # one look for the 48 that wait
