"""Actors in the scheduler's state machine: placement, lifecycle, restarts, calls. No I/O.

An actor is a process of its own, started by a worker on the chosen host. Its *creation
object* is ready once ``__init__`` ran; the handles its creator made and passed on hold refs
to it, and so does every call not finished yet, so an actor lives exactly as long as the
ordinary reference counting keeps that object, as in Ray: calls already submitted complete
after the last handle is gone. Named actors follow the same rule (handles from
``get_actor`` hold no ref), detached ones are also held by the scheduler until killed, and
a peer that leaves takes the non-detached actors it created with it (Ray's owner rule).
Method calls go straight from callers to the actor's process; the scheduler hears of each
call (``ActorCallSubmitted``) and of its results (``ActorCallDone``) so that results are
ordinary objects in the directory, and so that a death can fail or keep the calls still
pending. The two messages come over different connections, so either may come first.

Mixed into ``SchedulerState`` (see ``state.py``), whose objects and outbox it shares.
"""
from __future__ import annotations

import logging
import time

from graphstore.core import protocol as msg
from graphstore.core.serialization import error_payload
from graphstore.exceptions import ActorDiedError, ActorUnschedulableError, ObjectLostError
from graphstore.scheduler.instructions import Send
from graphstore.scheduler.entities import (ALIVE, DEAD, DETACHED_HOLDER, DONE, ERROR, FAILED,
                                           PENDING, PENDING_PLACEMENT, READY, RESTARTING,
                                           STARTING, ActorCallState, ActorState, ObjectState,
                                           within)

#: Finished calls kept apart when their results came before their submission.
_EARLY_RESULTS_MAX = 100_000
logger = logging.getLogger("graphstore.scheduler")
#: Seconds an early result waits for its submission (the caller died in between).
_EARLY_RESULT_SECONDS = 60.0
#: Actors removed (no handle left) remembered, so ``GetActor`` answers "gone" at once.
_GONE_ACTORS_MAX = 100_000


class ActorsMixin:
    """Actor handlers of ``SchedulerState``."""

    def _init_actors(self) -> None:
        self.actors: dict[bytes, ActorState] = {}
        self.actor_names: dict[tuple[str, str], bytes] = {}
        self.actor_of_creation: dict[bytes, bytes] = {}
        #: Peer id of each actor process -> its actor id.
        self.actor_processes: dict[bytes, bytes] = {}
        self.actor_calls: dict[bytes, ActorCallState] = {}
        #: Actors waiting for a host, in creation order; actors per worker (spreading).
        self.actors_to_place: dict[bytes, ActorState] = {}
        self.actors_on_worker: dict[bytes, int] = {}
        #: call id -> (actor process peer, ActorCallDone, ids it holds, expiry) for
        #: results that came before their submission (see ``actor_call_done``).
        self.early_results: dict[bytes, tuple[bytes, msg.ActorCallDone, list[bytes],
                                              float]] = {}
        #: Ids of actors removed from ``actors`` (oldest first, at most
        #: ``_GONE_ACTORS_MAX``): told apart from actors not heard of yet.
        self.gone_actors: dict[bytes, None] = {}
        #: Called (by the server) whenever an actor becomes alive or dead.
        self.on_actor_update = lambda actor: None

    # -- creation ---------------------------------------------------------------------
    def create_actor(self, peer_id: bytes, m: msg.CreateActor) -> list:
        """Reply: [actor id, creation id, class name, methods] of the actor made (or of
        the existing one with that name, for ``get_if_exists``)."""
        options = m.options or {}
        name = options.get("name")
        if name is not None:
            key = (options.get("namespace") or "default", name)
            existing = self.actors.get(self.actor_names.get(key, b""))
            if existing is not None and existing.state != DEAD:
                if options.get("get_if_exists"):
                    return self._actor_info(existing)
                raise ValueError(f"an actor named {name!r} already exists in namespace "
                                 f"{key[0]!r}; pick another name, or pass "
                                 f"get_if_exists=True to get a handle to it")
        if m.actor_id in self.actors:
            raise ValueError("duplicate actor id")
        actor = ActorState(m, peer_id)
        actor.job = peer_id if peer_id in self.drivers else self._job_of(
            peer_id, options.get("parent_task") if type(options.get("parent_task")) is bytes
            else None)
        self.actors[actor.id] = actor
        self.actor_of_creation[actor.creation_id] = actor.id
        if name is not None:
            self.actor_names[(actor.namespace, name)] = actor.id
        creation = self._new_object(actor.creation_id)
        self._hold(peer_id, creation)
        if actor.detached:
            self._hold(DETACHED_HOLDER, creation)
        for object_id in actor.deps + actor.nested:   # kept for restarts, until death
            obj = self.objects.get(object_id)
            if obj is not None:
                obj.task_refs += 1
        failure = None
        if m.class_hash not in self.functions:
            failure = f"the code of class {m.class_name} never reached the scheduler"
        elif self.workers and not self._actor_feasible(actor):
            failure = ActorUnschedulableError(
                f"actor {m.class_name} asks for num_cpus={actor.num_cpus}"
                + (f" and resources={actor.resources}" if actor.resources else "")
                + f", but the largest worker offers {self._capacity_text()}")
        elif (actor.strategy is not None and actor.strategy != "SPREAD"
              and not actor.strategy[2]):
            node = self.nodes.get(actor.strategy[1])
            if node is None or not node.fits_ever(actor):
                failure = ActorUnschedulableError(
                    f"actor {m.class_name} must run on node {actor.strategy[1]!r} "
                    f"(NodeAffinitySchedulingStrategy, soft=False), which is not alive "
                    f"or too small")
        if failure is not None:
            self._actor_died(actor, failure if isinstance(failure, BaseException)
                             else ActorDiedError(failure))
        else:
            self.actors_to_place[actor.id] = actor
            self._place_actors()
        return self._actor_info(actor)

    def _actor_info(self, actor: ActorState) -> list:
        return [actor.id, actor.creation_id, actor.class_name, actor.methods,
                actor.max_task_retries]

    def _new_object(self, object_id: bytes):
        obj = self.objects.get(object_id)
        if obj is None:
            obj = self.objects[object_id] = ObjectState(object_id, PENDING)
            if self.parked_wants:
                self._unpark(obj)
        return obj

    def _actor_feasible(self, actor: ActorState) -> bool:
        if self.max_capacity["CPU"] == 0.0:      # a zero-CPU cluster: wait for CPUs
            return within(actor, float("inf"), self.max_capacity)
        return within(actor, self.max_capacity["CPU"], self.max_capacity)

    def _place_actors(self) -> None:
        """Start actors waiting for a host (their arguments ready, resources free).

        An actor that finds no worker stops the others of its shape (resources, node
        affinity) for this pass: they would find none either, and a thousand actors
        waiting for CPUs made every pass weigh every worker for each of them."""
        unplaceable = set()
        for actor in list(self.actors_to_place.values()):
            if actor.state == DEAD:
                del self.actors_to_place[actor.id]
                continue
            if any(self.objects.get(d) is not None and self.objects[d].state == PENDING
                   for d in actor.deps):
                continue
            shape = (actor.num_cpus, tuple(sorted(actor.resources.items()))
                     if actor.resources else (), actor.strategy, actor.needs_cpu_node)
            if shape in unplaceable:
                continue
            worker = self._pick_actor_worker(actor)
            if worker is None:
                unplaceable.add(shape)
                continue
            del self.actors_to_place[actor.id]
            actor.worker = worker
            self.actors_on_worker[worker.id] = self.actors_on_worker.get(worker.id, 0) + 1
            actor.incarnation += 1
            if actor.state == PENDING_PLACEMENT:
                self.transition(actor, STARTING)   # else it is restarting already
            if actor.num_cpus or actor.resources:
                worker.node.acquire(actor)
                actor.holds_resources = True
                if actor.resources and actor.resources.get("GPU"):
                    actor.gpus = worker.node.take_gpus(actor.resources["GPU"])
            environment = None
            if actor.env_vars or actor.gpus or actor.runtime_env:
                environment = {"env_vars": dict(actor.env_vars or {}),
                               "gpus": list(actor.gpus or [])}
                if actor.runtime_env:
                    environment["runtime_env"] = actor.runtime_env
            self.outbox.append(Send(worker.id, msg.StartActor(actor.id, actor.incarnation,
                                                          environment)))

    def _pick_actor_worker(self, actor: ActorState):
        """Spread actors: the fitting worker with the fewest actors, then most free CPUs."""
        best, best_key = None, None
        strategy = actor.strategy
        target = None
        if strategy is not None and strategy != "SPREAD":
            target = self.nodes.get(strategy[1])
            if target is None or not target.fits_ever(actor):
                if not strategy[2]:
                    return None          # hard affinity: only that node
                target = None            # soft: anywhere
        for worker in self.workers.values():
            if worker.retiring or not worker.node.fits_now(actor):
                continue
            if actor.needs_cpu_node and worker.node.num_cpus < 1.0:
                continue
            if target is not None and worker.node is not target:
                continue
            key = (self.actors_on_worker.get(worker.id, 0),
                   worker.node.cpus_used - worker.node.num_cpus)
            if best_key is None or key < best_key:
                best, best_key = worker, key
        return best

    # -- the actor's process ------------------------------------------------------------
    def register_actor_process(self, peer_id: bytes, m: msg.RegisterActorProcess) -> dict:
        actor = self.actors.get(m.actor_id)
        if actor is None or actor.incarnation != m.incarnation or actor.state not in (
                STARTING, RESTARTING) or actor.process_id is not None:
            raise ValueError("no actor is waiting for this process (killed meanwhile?)")
        actor.process_id = peer_id
        actor.address = m.address
        actor.pid = m.pid
        self.actor_processes[peer_id] = actor.id
        self.peer_holds.setdefault(peer_id, set())
        deps = []
        for object_id in actor.deps:
            obj = self.objects.get(object_id)
            if obj is None:
                deps.append([object_id, None, _lost_payload(object_id), None])
            else:
                deps.append([object_id, obj.payload, obj.error, self.locations_of(obj)])
        resources = {"CPU": actor.num_cpus} if actor.num_cpus else {}
        resources.update(actor.resources or {})
        return {"class_code": self.functions[actor.class_hash], "class_name": actor.class_name,
                "args": actor.args, "deps": deps, "max_concurrency": actor.max_concurrency,
                "incarnation": actor.incarnation, "job_id": actor.job,
                "namespace": self.namespaces.get(actor.job, actor.namespace),
                "resources_held": resources, "gpus": actor.gpus or [],
                "restarts": actor.restarts, "name": actor.name,
                # Calls cancelled before this process existed: they may still arrive.
                "cancelled": [c.id for c in actor.calls.values() if c.cancelled]}

    def actor_ready(self, peer_id: bytes, m: msg.ActorReady) -> None:
        actor = self.actors.get(m.actor_id)
        if actor is None or actor.process_id != peer_id or actor.state == DEAD:
            return
        if m.error is not None:
            actor.no_restart = True        # as in Ray: __init__ failing is final
            self._actor_died(actor, None, error=m.error)
            return
        self.transition(actor, ALIVE)
        creation = self.objects.get(actor.creation_id)
        if creation is not None and creation.state == PENDING:
            self.transition(creation, READY)
            creation.payload = []
            self._object_finished(creation)
        self.on_actor_update(actor)

    def actor_setup_failed(self, worker_id: bytes, m: msg.ActorSetupFailed) -> None:
        """The worker could not set up the actor's ``runtime_env``: as in Ray, the actor
        dies (no restart), its creation and calls failing with the error."""
        actor = self.actors.get(m.actor_id)
        if (actor is None or actor.incarnation != m.incarnation or actor.worker is None
                or actor.worker.id != worker_id or actor.process_id is not None):
            return
        actor.no_restart = True
        self._actor_died(actor, None, error=list(m.error))

    def actor_exiting(self, peer_id: bytes, m: msg.ActorExiting) -> None:
        actor = self.actors.get(m.actor_id)
        if actor is not None and actor.process_id == peer_id:
            actor.exiting = True

    def actor_process_lost(self, peer_id: bytes) -> None:
        """The actor's process disconnected (it died, was killed, or exited)."""
        actor = self.actors.get(self.actor_processes.pop(peer_id, b""))
        if actor is None or actor.process_id != peer_id:
            return
        self._actor_process_gone(actor, f"the actor's process (pid {actor.pid}) died")

    def _actor_process_gone(self, actor: ActorState, why: str) -> None:
        if actor.state == DEAD:
            return
        self._release_actor_host(actor)
        if actor.exiting:
            self._actor_died(actor, ActorDiedError(
                f"actor {actor.class_name} exited (exit_actor() was called)"))
        elif actor.no_restart:
            self._actor_died(actor, ActorDiedError(
                f"actor {actor.class_name} was killed"))
        elif actor.max_restarts != -1 and actor.restarts >= actor.max_restarts:
            self._actor_died(actor, ActorDiedError(
                f"actor {actor.class_name} died: {why}; it had restarted "
                f"{actor.restarts} of max_restarts={actor.max_restarts} time(s)"))
        else:
            # Pending calls stay pending: only their caller knows which reached the dead
            # process; it sends those again while they have retries, else reports them
            # failed (ActorCallDone), and sends the others to the new process.
            self.transition(actor, RESTARTING)
            self.on_actor_update(actor)
            self.actors_to_place[actor.id] = actor
            self._place_actors()

    def _release_actor_host(self, actor: ActorState) -> None:
        if actor.worker is not None:
            count = self.actors_on_worker.get(actor.worker.id, 1) - 1
            if count > 0:
                self.actors_on_worker[actor.worker.id] = count
            else:
                self.actors_on_worker.pop(actor.worker.id, None)
        if actor.holds_resources and actor.worker is not None:
            actor.worker.node.acquire(actor, -1.0)
            if actor.gpus is not None:
                actor.worker.node.give_gpus(actor.gpus, actor.resources["GPU"])
        actor.gpus = None
        actor.holds_resources = False
        actor.worker = None
        if actor.process_id is not None:   # its refs go when its connection closes
            self.actor_processes.pop(actor.process_id, None)
        actor.process_id = None
        actor.address = ""

    def workers_actors_lost(self, worker) -> None:
        """A worker died. Actors whose process runs live on (a task that crashed its
        worker must not take unrelated actors down; their process leaves with the
        scheduler connection or a ``StopActor`` sent to it directly); those still
        starting never register, so they are handled here."""
        for actor in list(self.actors.values()):
            if actor.worker is worker and actor.process_id is None and actor.state != DEAD:
                self._actor_process_gone(actor, f"its worker (pid {worker.pid}) died")

    def _stop_actor_process(self, actor: ActorState) -> None:
        """Ask the worker that started the actor's process to stop it, or the process
        itself when that worker is gone."""
        if actor.worker is None:
            return
        stop = msg.StopActor(actor.id, actor.incarnation)
        if actor.worker.id in self.workers:
            self.outbox.append(Send(actor.worker.id, stop))
        elif actor.process_id is not None:
            self.outbox.append(Send(actor.process_id, stop))

    def _actor_died(self, actor: ActorState, cause: BaseException | None,
                    error: list | None = None) -> None:
        if actor.state == DEAD:
            return
        self._stop_actor_process(actor)   # a process runs or is starting: stop it
        self._release_actor_host(actor)
        self.transition(actor, DEAD)
        actor.error = error if error is not None else error_payload(cause)
        if actor.name is not None and self.actor_names.get(
                (actor.namespace, actor.name)) == actor.id:
            del self.actor_names[(actor.namespace, actor.name)]
        for call in list(actor.calls.values()):
            self._fail_call(call, None, actor.error)
        creation = self.objects.get(actor.creation_id)
        if creation is not None and creation.state == PENDING:
            self.transition(creation, ERROR)
            creation.error = actor.error
            self._object_finished(creation)
        if creation is not None:   # dead: only handles keep its record (calls fail fast)
            creation.holders.discard(DETACHED_HOLDER)
            self._maybe_free(creation)
        held, actor.deps, actor.nested = actor.deps + actor.nested, [], []
        self._drop_task_refs(held)
        self.on_actor_update(actor)

    def kill_actor(self, m: msg.KillActor) -> None:
        """``kill()``: dead at once (its process, starting or not, is stopped, its
        resources freed); with ``no_restart=False`` its process is stopped and the actor
        restarts like after a crash, while ``max_restarts`` allows."""
        actor = self.actors.get(m.actor_id)
        if actor is None or actor.state == DEAD:
            return
        if m.no_restart:
            actor.no_restart = True
            self._actor_died(actor, ActorDiedError(f"actor {actor.class_name} was killed"))
        elif actor.worker is None:
            return                       # no process yet: nothing to kill or restart
        else:
            self._stop_actor_process(actor)
            if actor.process_id is None:  # never registered: no connection will close
                self._actor_process_gone(actor, "it was killed with no_restart=False")

    def actor_unreferenced(self, creation_id: bytes) -> None:
        """No handle and no unfinished call is left (and the actor is not detached): stop
        it."""
        actor = self.actors.get(self.actor_of_creation.pop(creation_id, b""))
        if actor is None:
            return
        if actor.state != DEAD:
            actor.no_restart = True
            self._actor_died(actor, ActorDiedError(
                f"actor {actor.class_name} was stopped: no handle to it was left"))
        self.actors.pop(actor.id, None)
        self.gone_actors[actor.id] = None
        if len(self.gone_actors) > _GONE_ACTORS_MAX:
            del self.gone_actors[next(iter(self.gone_actors))]

    def actor_known(self, actor_id: bytes) -> bool:
        """Whether the actor exists or existed (recently): not one whose ``CreateActor``
        has yet to come (a handle passed in a call's arguments may overtake it)."""
        return actor_id in self.actors or actor_id in self.gone_actors

    def actor_status(self, actor_id: bytes, after: int) -> list | None:
        """["alive", address, incarnation], ["dead", error], or None (not yet)."""
        actor = self.actors.get(actor_id)
        if actor is None:
            return ["dead", error_payload(ActorDiedError(
                f"actor {actor_id.hex()} is gone (no handle to it was left)"))]
        if actor.state == DEAD:
            return ["dead", actor.error]
        if actor.state == ALIVE and actor.incarnation > after:
            return ["alive", actor.address, actor.incarnation]
        return None

    def named_actor(self, m: msg.GetNamedActor) -> list:
        namespace = m.namespace or "default"
        actor = self.actors.get(self.actor_names.get((namespace, m.name), b""))
        if actor is None or actor.state == DEAD:
            raise ValueError(f"no actor named {m.name!r} in namespace {namespace!r}")
        return self._actor_info(actor)

    # -- calls --------------------------------------------------------------------------
    def actor_call_submitted(self, peer_id: bytes, m: msg.ActorCallSubmitted) -> None:
        actor = self.actors.get(m.actor_id)
        for object_id in m.returns:
            obj = self._new_object(object_id)
            self._hold(peer_id, obj)
        if actor is None:
            for object_id in m.returns:
                self._finish_call_object(object_id, None, error_payload(ActorDiedError(
                    f"the actor of call {m.name} is gone")))
            return
        call = ActorCallState(m, actor, peer_id)
        self.progress.add(call.name, call.state)
        actor.last_call = call.id
        for object_id in m.returns:
            obj = self.objects.get(object_id)
            if obj is not None and obj.producer is None:
                obj.producer = call
        for object_id in [*m.deps, *m.nested, actor.creation_id]:
            # The creation object too: a call not finished keeps its actor (as in Ray).
            obj = self.objects.get(object_id)
            if obj is not None:
                obj.task_refs += 1
                call.counted_refs.append(object_id)
        early = self.early_results.pop(m.call_id, None)
        self.counts["submitted"] += 1
        if early is not None:
            self._apply_call_done(call, early[0], early[1])
            self._release_early_holds(early[2])
            return
        if actor.state == DEAD:
            self._fail_call(call, None, actor.error)
            return
        actor.calls[call.id] = call
        self.actor_calls[call.id] = call

    def owner_gone(self, peer_id: bytes) -> None:
        """A peer left: the non-detached actors it created go with it, whoever still
        holds handles to them (Ray's owner rule)."""
        for actor in list(self.actors.values()):
            if actor.owner == peer_id and not actor.detached and actor.state != DEAD:
                actor.no_restart = True
                self._actor_died(actor, ActorDiedError(
                    f"actor {actor.class_name} died: the process that created it (its "
                    f"owner) left; create it with lifetime='detached' to outlive it"))

    def _cancel_call(self, call: ActorCallState) -> None:
        """Cancel a call not finished: interrupted if it runs, never started if it waits in
        the actor's process, in a process still to come (told when it registers), or in
        its caller (told while the actor is not alive: calls wait there meanwhile)."""
        call.cancelled = True
        actor = call.actor
        if actor.process_id is not None:
            self.outbox.append(Send(actor.process_id, msg.CancelRunning(call.id, False)))
        if actor.state != ALIVE:
            self.outbox.append(Send(call.caller, msg.CancelQueuedCall(call.id)))

    def caller_gone(self, peer_id: bytes) -> None:
        """Forget the pending calls of a caller that disconnected (nobody can send them
        again; their results were held by that caller only)."""
        for call in [c for c in self.actor_calls.values() if c.caller == peer_id]:
            self._fail_call(call, ActorDiedError(f"the caller of {call.name} disconnected"))

    def actor_call_done(self, peer_id: bytes, m: msg.ActorCallDone) -> None:
        call = self.actor_calls.pop(m.call_id, None)
        if call is None:
            # Early (its submission is on its way), unless it is a late report of a call
            # that finished already (failed when its actor was killed, say).
            if not self.graph.has_task(m.call_id):
                self._keep_early_result(peer_id, m)
            return
        call.actor.calls.pop(call.id, None)
        self._apply_call_done(call, peer_id, m)

    def _keep_early_result(self, peer_id: bytes, m: msg.ActorCallDone) -> None:
        """A result that overtook its submission (the caller tells the scheduler and the
        actor on two connections). The refs inside it are held now: the actor drops its
        own refs to them right after this message, on the same connection, and the
        caller borrows them only once it has read the result."""
        if len(self.early_results) >= _EARLY_RESULTS_MAX:
            logger.error("dropping the early result of actor call %s: %d results wait "
                         "for their submission", m.call_id.hex(), len(self.early_results))
            return
        held = []
        for entry in m.results:
            for inner_id in entry[2] or ():
                inner = self.objects.get(inner_id)
                if inner is not None:
                    inner.container_refs += 1
                    held.append(inner_id)
        self.early_results[m.call_id] = (peer_id, m, held,
                                         time.monotonic() + _EARLY_RESULT_SECONDS)

    def _release_early_holds(self, held: list[bytes]) -> None:
        for inner_id in held:
            inner = self.objects.get(inner_id)
            if inner is not None:
                inner.container_refs -= 1
                self._maybe_free(inner)

    def expire_early_results(self, now: float) -> None:
        """Forget results whose submission never came (its caller died before sending
        it), releasing the refs they held."""
        for call_id in [i for i, early in self.early_results.items() if early[3] < now]:
            self._release_early_holds(self.early_results.pop(call_id)[2])

    def _apply_call_done(self, call: ActorCallState, peer_id: bytes,
                         m: msg.ActorCallDone) -> None:
        call.error_text = m.error_text     # read by dependents failing on these results
        worker = call.actor.worker
        if worker is not None and (m.started is not None or m.events is not None):
            self.record_run(peer_id, worker.id, "actor-call", call, m, call.actor.pid)
        for object_id, payload, contained, size, location, error in m.results:
            obj = self.objects.get(object_id)
            if obj is None:
                continue
            if location is not None:
                worker_id, segment = location[0], location[1]
                worker = self.workers.get(worker_id)
                if worker is not None:
                    obj.size = size
                    self.add_location(obj, worker, segment)
                    self.outbox.append(Send(worker_id, msg.SealObjects([object_id])))
                else:
                    error = error_payload(ObjectLostError(
                        f"the result of {call.name} was written to a worker that died"))
            self._finish_call_object(object_id, payload, error, contained, size)
        self._release_call_refs(call)
        self._call_finished(call, FAILED if m.error_text else DONE, m.error_text)

    def _call_finished(self, call: ActorCallState, state: str, error_text: str | None) -> None:
        self.transition(call, state)
        call.error_text = error_text
        self.graph.task_finished(call)

    def _finish_call_object(self, object_id: bytes, payload, error, contained=(),
                            size=None) -> None:
        obj = self.objects.get(object_id)
        if obj is None or obj.state != PENDING:
            return
        if error is not None:
            self.transition(obj, ERROR)
            obj.error = error
        else:
            self.transition(obj, READY)
            if payload is not None:
                obj.payload = payload
                obj.size = sum(len(b) for b in payload)
            self._set_contains(obj, list(contained))
        self._object_finished(obj)

    def _fail_call(self, call: ActorCallState, cause: BaseException | None,
                   error: list | None = None) -> None:
        error = error if error is not None else error_payload(cause)
        call.actor.calls.pop(call.id, None)
        self.actor_calls.pop(call.id, None)
        for object_id in call.returns:
            self._finish_call_object(object_id, None, error)
        self._release_call_refs(call)
        self._call_finished(call, FAILED, str(cause) if cause is not None
                            else "the actor died")

    def _release_call_refs(self, call: ActorCallState) -> None:
        refs, call.counted_refs = call.counted_refs, []
        self._drop_task_refs(refs)

    # -- status -------------------------------------------------------------------------
    def actor_records(self) -> list[dict]:
        return [{"actor_id": a.id.hex(), "class_name": a.class_name, "name": a.name,
                 "namespace": a.namespace, "state": a.state,
                 "worker": a.worker.id.hex() if a.worker is not None else None,
                 "node": a.worker.node.id if a.worker is not None else None,
                 "pid": a.pid, "pending_calls": len(a.calls), "restarts": a.restarts,
                 "detached": a.detached}
                for a in self.actors.values()]


def _lost_payload(object_id: bytes) -> list:
    return error_payload(ObjectLostError(f"argument {object_id.hex()} was freed"))
