"""The scheduler process: accepts connections and drives ``SchedulerState`` with them.

All scheduling decisions live in ``state.py``; this module only moves messages between
sockets and the state machine, carries out the instructions it returns
(``instructions.py``), and ends the process when its owner goes away. Each event gets a
stimulus id (``"<message type>-<n>"``, ``"closed-<n>"``, ``"housekeeping-<n>"``) that the
state machine records with every transition it causes and names in its log lines.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import os
import posixpath
import socket
import time

from graphstore.core import protocol as msg
from graphstore.core.comm import Comm, CommServer, RemoteCallError, set_dead_peer_timeout
from graphstore.core.gc_policy import throttle_full_collections
from graphstore.exceptions import ObjectLostError, ProtocolError
from graphstore.core.config import Config, Limits
from graphstore.core.lifecycle import watch_parent_pipe
from graphstore.core import logs
from graphstore.scheduler import descriptions, listing, status
from graphstore.scheduler.job_processes import JobProcesses
from graphstore.scheduler.job_service import JobService
from graphstore.scheduler.jobs import JobTable
from graphstore.scheduler.snapshots import LiveScans
from graphstore.scheduler.instructions import Send
from graphstore.scheduler.state import SchedulerState
from graphstore.scheduler.transitions import StateInvariantError
from graphstore.core.tls import TLSConfig, exposure_warning

logger = logging.getLogger("graphstore.scheduler")
#: Seconds a ``GetActor`` waits for an actor the scheduler has not heard of yet.
_UNKNOWN_ACTOR_SECONDS = 30.0

#: The most nodes one task-graph request may ask for.
MAX_GRAPH_NODES = 100_000


class Scheduler:
    def __init__(self, config: Config, token: bytes, tls: TLSConfig | None = None):
        self.config = config
        self.token = token
        self.tls = tls
        self.state = SchedulerState(pipeline_seconds=config.worker_pipeline_seconds,
                                    max_queued_per_worker=config.max_tasks_queued_per_worker,
                                    history_size=config.task_history,
                                    bandwidth=config.transfer_bandwidth,
                                    max_lineage_bytes=config.max_lineage_bytes,
                                    task_stream_events=config.task_stream_events,
                                    task_stream_total_events=config.task_stream_total_events)
        self.comms: dict[bytes, Comm] = {}
        self.server = CommServer(token, self._on_comm, tls=tls, limits=Limits(),
                                 split_bytes=config.frame_split_bytes,
                                 handshake_timeout=config.handshake_timeout)
        self.address = ""
        self.stopped = asyncio.Event()
        #: Rate-limited scans of the live state for the status views.
        self.scans = LiveScans(self.state)
        #: The status page (``dashboard.py``), if it runs.
        self.dashboard = None
        self.dashboard_url: str | None = None
        self._handlers = {
            msg.SubmitTask: self._on_submit,
            msg.PutObject: self._on_put,
            msg.IncRef: lambda peer, m: self.state.incref(peer, m.ids),
            msg.DecRef: lambda peer, m: self.state.decref(peer, m.ids),
            msg.WantObjects: lambda peer, m: self.state.want(peer, m.ids),
            msg.RegisterFunction: lambda peer, m: self.state.register_function(m),
            msg.TaskDone: self._on_task_done,
            msg.TaskFailed: self._on_task_failed,
            msg.TaskOutput: lambda peer, m: self.state.task_output(m),
            msg.TaskBlocked: lambda peer, m: self.state.task_blocked(peer, m.task_id),
            msg.TaskUnblocked: lambda peer, m: self.state.task_unblocked(peer, m.task_id),
            msg.Ping: lambda peer, m: "pong",
            msg.GetStatus: lambda peer, m: self.state.summary(),
            msg.ObjectAdded: lambda peer, m: self.state.object_added(peer, m),
            msg.AdoptionFailed: lambda peer, m: self.state.adoption_failed(peer, m),
            msg.GetTaskRecords: lambda peer, m: self.state.task_records(m.limit),
            msg.GetMemorySummary: lambda peer, m: self._memory_summary(),
            msg.ObjectsSpilled: lambda peer, m: self.state.objects_spilled(peer, m),
            msg.LocateObject: lambda peer, m: self.state.locate(m.object_id),
            msg.RestoreOnNode: lambda peer, m: self._restore_on_node(m),
            msg.CreateActor: lambda peer, m: self.state.create_actor(peer, m),
            msg.ActorReady: lambda peer, m: self.state.actor_ready(peer, m),
            msg.ActorExiting: lambda peer, m: self.state.actor_exiting(peer, m),
            msg.GetActor: lambda peer, m: self._get_actor(m),
            msg.GetNamedActor: lambda peer, m: self.state.named_actor(m),
            msg.KillActor: lambda peer, m: self.state.kill_actor(m),
            msg.ActorCallSubmitted: lambda peer, m: self.state.actor_call_submitted(peer, m),
            msg.ActorCallDone: lambda peer, m: self.state.actor_call_done(peer, m),
            msg.CancelTask: lambda peer, m: self.state.cancel(m),
            msg.GeneratorItem: lambda peer, m: self.state.generator_item(peer, m),
            msg.WorkerHeartbeat: lambda peer, m: self.state.worker_heartbeat(peer, m.metrics,
                                                                             m.events),
            msg.GetTimeline: lambda peer, m: self.state.timeline(m.since),
            msg.GetCriticalPath: lambda peer, m: self._critical_path(m.object_id),
            msg.GetTaskGraph: lambda peer, m: self._task_graph(m),
            msg.GetClusterOverview: lambda peer, m: self._cluster_overview(),
            msg.GetNodes: lambda peer, m: self.state.node_records(),
            msg.GetTaskContext: lambda peer, m: self.state.task_context(m.task_id),
            msg.TaskProcessExited: lambda peer, m: self.state.task_process_exited(peer, m),
            msg.TaskProcessSetupFailed: lambda peer, m:
                self.state.task_process_setup_failed(peer, m),
            msg.ActorSetupFailed: lambda peer, m: self.state.actor_setup_failed(peer, m),
            msg.LookupPackage: lambda peer, m: self.state.lookup_package(m),
            msg.RegisterPackage: lambda peer, m: self.state.register_package(peer, m),
            msg.GetPackage: lambda peer, m: self.state.package_object(m),
            msg.DescribeCluster: lambda peer, m: descriptions.describe_cluster(
                self.state, address=self.address, dashboard_url=self.dashboard_url),
            msg.DescribeObject: lambda peer, m: descriptions.describe_object(self.state,
                                                                             m.object_id),
            msg.DescribeActor: lambda peer, m: descriptions.describe_actor(self.state,
                                                                           m.actor_id),
            msg.ListState: lambda peer, m: listing.list_state(self.state, m.kind, m.state,
                                                              m.name, m.limit),
            msg.FetchLog: lambda peer, m: self._fetch_log(m),
            msg.RetireWorkers: lambda peer, m: self.state.retire_workers(m.worker_ids),
            msg.SubmitJob: lambda peer, m: self._jobs().submit(m),
            msg.GetJob: lambda peer, m: self._jobs().get(m),
            msg.ListJobs: lambda peer, m: self._jobs().list(m),
            msg.StopJob: lambda peer, m: self._jobs().stop(m),
            msg.DeleteJob: lambda peer, m: self._jobs().delete(m),
            msg.ReadJobLog: lambda peer, m: self._jobs().read_log(peer, m),
        }
        #: Jobs submitted to this scheduler (``graphstore job``), made at the first
        #: job request.
        self.job_service: JobService | None = None
        #: GetActor requests waiting for an actor to start or die, by actor id.
        self._actor_watchers: dict[bytes, list[asyncio.Future]] = {}
        self.state.on_actor_update = self._actor_updated
        self._flush_scheduled = False
        #: Numbers the events, for their stimulus ids.
        self._events = itertools.count(1)
        self._validate = bool(config.validate_state)

    def _event(self, name: str) -> str:
        """Start an event: its stimulus id, which the state machine records."""
        stimulus_id = self.state.stimulus_id = f"{name}-{next(self._events)}"
        return stimulus_id

    def _validate_state(self) -> None:
        """With ``validate_state`` on: recount the state machine's bookkeeping after an
        event. A mismatch is logged with the event's stimulus id and raised into that
        event (a request's peer gets the error); the scheduler keeps serving."""
        try:
            self.state.validate_state()
        except StateInvariantError as exc:
            stimulus_id = self.state.stimulus_id
            logger.error("scheduler state invalid after event %s: %s", stimulus_id, exc,
                         extra={"stimulus_id": stimulus_id})
            raise

    # -- lifecycle --------------------------------------------------------------------
    def listen(self, host: str, port: int, sock: socket.socket | None = None) -> str:
        if sock is not None:
            self.server.add_sockets([sock])
        else:
            self.server.listen(port, address=host)
        bound = self.server.bound_address()
        self.address = f"tcp://{bound[0]}:{bound[1]}"
        warning = exposure_warning("the scheduler", bound[0], bound[1], self.tls)
        if warning:
            logger.warning(warning)
        return self.address

    def start_dashboard(self, host: str, port: int) -> str | None:
        """Serve the status page in this process and loop; returns its URL."""
        from graphstore.scheduler.dashboard import Dashboard
        self.dashboard = Dashboard(self)
        self.dashboard_url = self.dashboard.listen(host, port)
        return self.dashboard_url

    def _jobs(self) -> JobService:
        """The job service, made when first asked for: jobs run on this host with this
        scheduler's address, token and TLS files."""
        if self.job_service is None:
            host, _, port = self.address[len("tcp://"):].rpartition(":")
            if host in ("0.0.0.0", "::", "[::]", ""):
                host = "127.0.0.1"
            environment = {"GRAPHSTORE_ADDRESS": f"tcp://{host}:{port}",
                           "GRAPHSTORE_TOKEN": self.token.decode()}
            if self.tls is not None:
                environment.update(self.tls.environment())
            own = logs.current_log_file()
            log_dir = own.parent if own is not None else logs.default_log_dir(None)
            table = JobTable()
            self.job_service = JobService(table, JobProcesses(table, log_dir, environment),
                                          lambda peer_id: peer_id in self.comms)
        return self.job_service

    def stop_jobs(self) -> None:
        """Stop every job and wait for its processes: no job outlives the scheduler."""
        if self.job_service is not None:
            self.job_service.processes.shutdown()

    def stop(self) -> None:
        if self.dashboard is not None:
            self.dashboard.stop()
        self.server.stop()
        for comm in list(self.comms.values()):
            comm.abort()
        self.stopped.set()

    # -- connections ------------------------------------------------------------------
    def _on_comm(self, comm: Comm) -> None:
        comm.handler = self._on_first_message
        comm.on_close.append(self._on_close)
        asyncio.ensure_future(comm.read_loop())

    def _on_first_message(self, comm: Comm, m):
        """Until a peer registers, registration is the only message it may send."""
        self._event(type(m).__name__)
        result = self._register(comm, m)
        if self._validate:
            self._validate_state()
        return result

    def _register(self, comm: Comm, m):
        if isinstance(m, msg.RegisterClient):
            peer_id = m.client_id
            self._adopt(comm, peer_id, "driver", m.pid, m.hostname)
            self.state.add_driver(peer_id, m.namespace)
        elif isinstance(m, msg.RegisterWorker):
            try:
                self.state.validate_worker(m)
            except ValueError as exc:
                logger.warning("refused worker registration from %s: %s", comm.peer, exc)
                comm.abort()
                raise
            peer_id = m.worker_id
            self._adopt(comm, peer_id, "worker", m.pid, m.hostname)
            self.state.add_worker(m)
            logger.info("worker %s (pid %s, %s CPUs) joined from %s", peer_id.hex()[:8],
                        m.pid, m.num_cpus, comm.peer)
            self._broadcast_cluster_info()
        elif isinstance(m, msg.RegisterActorProcess):
            try:
                build = self.state.register_actor_process(m.process_id, m)
            except ValueError as exc:
                logger.info("refused actor process pid %s: %s", m.pid, exc)
                comm.abort()
                raise
            self._adopt(comm, m.process_id, "actor", m.pid, m.hostname)
            self._schedule_flush()
            return {**build, "address": self.address, "workers": self._worker_list(),
                    "num_workers": len(self.state.workers),
                    "resources": self.state.cluster_resources()}
        elif isinstance(m, msg.RegisterTaskProcess):
            try:
                self.state.register_task_process(m.process_id, m)
            except ValueError as exc:
                logger.info("refused task process pid %s: %s", m.pid, exc)
                comm.abort()
                raise
            self._adopt(comm, m.process_id, "task process", m.pid, m.hostname)
        else:
            logger.warning("peer %s sent %s before registering; closing", comm.peer,
                           type(m).__name__)
            comm.abort()
            return None
        self._schedule_flush()
        return {"address": self.address, "resources": self.state.cluster_resources(),
                "num_workers": len(self.state.workers), "workers": self._worker_list(),
                "inline_threshold": self.config.inline_threshold,
                "dashboard_url": self.dashboard_url}

    def _worker_list(self) -> list:
        return [[w.id, w.node.id, w.address] for w in self.state.workers.values()]

    def _adopt(self, comm: Comm, peer_id: bytes, kind: str, pid: int, hostname: str):
        if not isinstance(peer_id, bytes) or len(peer_id) != 16 or peer_id in self.comms:
            comm.abort()
            raise ValueError("invalid or duplicate peer id")
        comm.info.update(peer_id=peer_id, kind=kind, pid=pid, hostname=hostname)
        self.comms[peer_id] = comm
        comm.handler = self._on_message

    def _on_close(self, comm: Comm) -> None:
        peer_id = comm.info.get("peer_id")
        if peer_id is None or self.comms.get(peer_id) is not comm:
            return
        del self.comms[peer_id]
        self._event("closed")
        kind = comm.info.get("kind")
        if kind == "worker":
            logger.warning("worker %s (pid %s) left", peer_id.hex()[:8], comm.info.get("pid"))
        self.state.remove_peer(peer_id)
        if kind == "worker":
            self._broadcast_cluster_info()
        self._schedule_flush()
        if self._validate:
            self._validate_state()

    def _on_message(self, comm: Comm, m):
        handler = self._handlers.get(type(m))
        if handler is None:
            raise ProtocolError(f"unexpected message {type(m).__name__}")
        self.state.stimulus_id = f"{type(m).__name__}-{next(self._events)}"
        result = handler(comm.info["peer_id"], m)
        self._schedule_flush()
        if self._validate:
            self._validate_state()
        return result

    def _on_submit(self, peer_id: bytes, m: msg.SubmitTask) -> None:
        self.state.submit(peer_id, m)

    def _on_put(self, peer_id: bytes, m: msg.PutObject) -> None:
        self.state.put_object(peer_id, m)

    def _on_task_done(self, peer_id: bytes, m: msg.TaskDone) -> None:
        self.state.task_done(peer_id, m)

    def _on_task_failed(self, peer_id: bytes, m: msg.TaskFailed) -> None:
        self.state.task_failed(peer_id, m)

    async def _get_actor(self, m: msg.GetActor) -> list:
        """Answer once the actor is alive in an incarnation after ``m.after``, or dead.

        An actor not heard of yet is waited for a while: a handle reaches an actor's
        process straight from its caller, in a call's arguments, and may overtake the
        caller's ``CreateActor`` (the same race as ``parked_wants`` for objects)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _UNKNOWN_ACTOR_SECONDS
        seen = False
        while True:
            # A caller that saw an incarnation (``after``) saw the actor known.
            seen = seen or m.after > 0 or self.state.actor_known(m.actor_id)
            unknown = not seen and loop.time() < deadline
            if not unknown:
                status = self.state.actor_status(m.actor_id, m.after)
                if status is not None:
                    return status
            future = loop.create_future()
            watchers = self._actor_watchers.setdefault(m.actor_id, [])
            watchers.append(future)
            if not unknown:
                await future
                continue
            try:
                await asyncio.wait_for(asyncio.shield(future), deadline - loop.time())
            except asyncio.TimeoutError:
                if future in watchers:
                    watchers.remove(future)
                if not watchers:
                    self._actor_watchers.pop(m.actor_id, None)

    def _actor_updated(self, actor) -> None:
        for future in self._actor_watchers.pop(actor.id, ()):
            if not future.done():
                future.set_result(None)

    async def _housekeeping(self) -> None:
        """Every heartbeat interval: tell workers the scheduler is there, count silent
        workers as lost, answer wants of objects that never came to exist."""
        interval = max(0.05, self.config.heartbeat_interval)
        loop = asyncio.get_running_loop()
        last = loop.time()
        while not self.stopped.is_set():
            await asyncio.sleep(interval)
            now = loop.time()
            # After a stall of this loop, what arrived meanwhile is not read yet: judge
            # silence only when the loop kept time.
            if now - last < 2 * interval + 0.5:
                self._drop_silent_workers(now)
            last = now
            beat = msg.SchedulerHeartbeat()
            for worker_id in self.state.workers:
                comm = self.comms.get(worker_id)
                if comm is not None:
                    comm.send(beat)
            self._event("housekeeping")
            if self.state.parked_wants:
                self.state.expire_parked_wants(time.monotonic())
                self._schedule_flush()
            if self.state.early_results:
                self.state.expire_early_results(time.monotonic())
                self._schedule_flush()

    def _drop_silent_workers(self, now: float) -> None:
        """A worker silent for ``worker_timeout`` seconds is lost: its connection is
        closed, which retries its tasks and rebuilds its objects elsewhere."""
        timeout = self.config.worker_timeout
        heard = {worker_id: comm.last_received for worker_id in self.state.workers
                 if (comm := self.comms.get(worker_id)) is not None}
        for worker_id in self.state.silent_workers(heard, now, timeout):
            comm = self.comms[worker_id]
            logger.warning("worker %s (pid %s) sent nothing for %.1f s (worker_timeout "
                           "%.1f s); counting it as lost", worker_id.hex()[:8],
                           comm.info.get("pid"), now - comm.last_received, timeout)
            comm.abort()

    async def _ask_workers(self, workers: list, message, timeout: float):
        """Send ``message`` to each worker in turn until one answers; return
        ``(worker, reply)``, or raise the last worker's error."""
        error = RemoteCallError("no connected worker", "LookupError")
        for worker in workers:
            comm = self.comms.get(worker.id)
            if comm is None:
                continue
            try:
                return worker, await comm.request(message, timeout=timeout)
            except RemoteCallError as exc:
                error = exc
        raise error

    async def _restore_on_node(self, m: msg.RestoreOnNode) -> list:
        """Have a store (on the driver's node if it has one) read a spilled object back."""
        state = self.state
        plan = state.restore_plan(m.object_id, m.node_id)
        if type(plan) is list:     # a store of that node holds it (restored meanwhile)
            return plan
        (path, offset, size), candidates = plan
        try:
            worker, segment = await self._ask_workers(
                candidates, msg.RestoreObject(m.object_id, path, offset, size), timeout=300)
        except RemoteCallError as exc:
            raise ObjectLostError(f"no worker could restore object "
                                  f"{bytes(m.object_id).hex()}: {exc.type_name}: "
                                  f"{exc}") from None
        obj = state.objects.get(m.object_id)
        if obj is not None and worker.id in state.workers:
            self._event("ObjectRestored")
            state.add_location(obj, worker, segment)
        return [worker.id, worker.address, segment, worker.node.id]

    async def _memory_summary(self) -> dict:
        """Objects by size with where they are and who refers to them; store use."""
        state = self.state

        def describe_peer(peer_id: bytes) -> str:
            comm = self.comms.get(peer_id)
            if comm is None:
                return peer_id.hex()[:8]
            return f"{comm.info.get('kind')} pid={comm.info.get('pid')}"

        stores = []
        for worker in list(state.workers.values()):
            comm = self.comms.get(worker.id)
            summary = {}
            if comm is not None:
                try:
                    summary = await comm.request(msg.GetStoreSummary(), timeout=5)
                except Exception as exc:
                    summary = {"error": str(exc)}
            stores.append({"worker": worker.id.hex(), "pid": worker.pid,
                           "node": worker.node.id, "address": worker.address, **summary})
        in_use: dict[str, int] = {}     # object -> processes viewing or leasing it
        for store in stores:
            for object_hex, users in (store.pop("in_use", None) or {}).items():
                in_use[object_hex] = in_use.get(object_hex, 0) + users
        objects = []
        for obj in sorted(state.objects.values(), key=lambda o: -o.size)[:1000]:
            objects.append({
                "object_id": obj.id.hex(), "size": obj.size, "state": obj.state,
                "where": ("inline (scheduler)" if not obj.locations and obj.spill is None else
                          [f"worker pid={state.workers[w].pid} node={state.workers[w].node.id}"
                           for w in obj.locations if w in state.workers]
                          + ([f"spilled: {obj.spill[0]} @ {obj.spill[1]}"]
                             if obj.spill is not None else [])),
                "holders": sorted(describe_peer(p) for p in obj.holders),
                "pending_tasks": obj.task_refs, "contained_in": obj.container_refs,
                "pinned_by": in_use.get(obj.id.hex(), 0),
            })
        return {"objects": objects, "stores": stores,
                "total_objects": len(state.objects),
                "inline_bytes": sum(o.size for o in state.objects.values()
                                    if not o.locations and o.spill is None),
                "stored_bytes": sum(o.size for o in state.objects.values() if o.locations),
                "spilled_bytes": sum(o.size for o in state.objects.values()
                                     if o.spill is not None and not o.locations),
                "spilled_objects": sum(1 for o in state.objects.values()
                                       if o.spill is not None and not o.locations)}

    async def _fetch_log(self, m: msg.FetchLog) -> dict:
        """``graphstore logs``: the list of log files, or part of one process's log (the
        scheduler's own, or a worker's, asked of that worker)."""
        loop = asyncio.get_running_loop()
        if not m.target:
            own = logs.current_log_file()
            entries = [{"kind": "scheduler", "id": "scheduler", "pid": os.getpid(),
                        "hostname": socket.gethostname(), "node": None,
                        "log_file": str(own) if own else None}]
            for source in listing.log_sources(self.state):
                worker_log = source.worker.metrics.get("log_file")
                log_file = worker_log if source.kind == "worker" or not worker_log else \
                    posixpath.join(posixpath.dirname(worker_log),
                                   logs.actor_log_name(source.pid))
                entries.append({"kind": source.kind, "id": source.id.hex(),
                                "pid": source.pid, "hostname": source.worker.hostname,
                                "node": source.worker.node.id, "log_file": log_file})
            return {"logs": entries}
        if m.target.strip().lower() == "scheduler":
            path = logs.current_log_file()
            if path is None:
                return listing.error("the scheduler writes no log file (it could not "
                                     "open one at start: see its stderr)", ())
            try:
                part = await loop.run_in_executor(None, logs.read_log, path, m.offset,
                                                  m.tail)
            except OSError as exc:
                return listing.error(f"cannot read the scheduler's log: {exc}", ())
            return {**part, "source": {"kind": "scheduler", "pid": os.getpid(),
                                       "hostname": socket.gethostname()}}
        source = listing.find_log_source(self.state, m.target)
        if isinstance(source, dict):
            return source
        worker = source.worker
        comm = self.comms.get(worker.id)
        if comm is None:
            return listing.error(f"worker {worker.id.hex()[:12]} is not connected", ())
        try:
            part = await comm.request(msg.ReadLog(m.offset, m.tail,
                                                  source.pid if source.kind == "actor" else 0),
                                      timeout=30)
        except Exception as exc:      # gone meanwhile, timed out, or no file there
            return listing.error(f"{source.describe()}: cannot read its log: {exc}", ())
        return {**part, "source": {"kind": source.kind, "id": source.id.hex(),
                                   "pid": source.pid, "hostname": worker.hostname,
                                   "node": worker.node.id}}

    def _task_graph(self, m: msg.GetTaskGraph) -> dict:
        limit, roots = m.limit, m.roots
        if type(limit) is not int or not 1 <= limit <= MAX_GRAPH_NODES:
            raise ValueError(f"limit must be an integer from 1 to {MAX_GRAPH_NODES}, "
                             f"got {limit!r}")
        if roots is not None and (type(roots) is not list or len(roots) > MAX_GRAPH_NODES
                                  or not all(type(r) is bytes for r in roots)):
            raise ValueError("roots must be a list of object ids")
        return self.state.graph.snapshot(self.state.workers, limit, roots)

    def _critical_path(self, object_id: bytes) -> dict:
        """The reply to ``GetCriticalPath``: the path, or {"problem": why there is none}
        (a record the driver raises as ValueError, not an error text to parse)."""
        try:
            return self.state.critical_path(object_id)
        except ValueError as exc:
            return {"problem": str(exc)}

    async def _cluster_overview(self) -> dict:
        """The status page's overview and workers (``graphstore status``)."""
        scan = await self.scans.get()
        return {"overview": status.overview(self.state, scan, address=self.address,
                                            dashboard_url=self.dashboard_url),
                "workers": status.workers(self.state, 10_000)["workers"]}

    # -- output -----------------------------------------------------------------------
    def _schedule_flush(self) -> None:
        """Schedule once per loop iteration, after every message of a batch is handled."""
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_event_loop().call_soon(self._flush)

    def _flush(self) -> None:
        """Carry out the state machine's instructions (``instructions.py``), sends
        batched per peer, after a ``schedule()`` pass."""
        self._flush_scheduled = False
        state = self.state
        self._event("flush")
        state.schedule()
        if self._validate:
            self._validate_state()
        outbox, state.outbox = state.outbox, []
        comms = self.comms
        batches: dict[bytes, list] = {}
        for instruction in outbox:
            if type(instruction) is not Send:
                raise TypeError(f"unknown instruction {instruction!r}")
            peer_id, message = instruction
            batch = batches.get(peer_id)
            if batch is None:
                batch = batches[peer_id] = []
            batch.append(message)
        for peer_id, batch in batches.items():
            comm = comms.get(peer_id)
            if comm is not None:
                comm.send_many(batch)
        if state.departed_holds:     # the next share after the messages waiting now
            self._schedule_flush()

    def _broadcast_cluster_info(self) -> None:
        info = msg.ClusterInfo(len(self.state.workers), self.state.cluster_resources(),
                               self._worker_list())
        # Workers too: a process drops its connections to workers that left, so a fetch
        # from a silent one fails now instead of waiting on TCP timeouts.
        for peer_id in [*self.state.drivers, *self.state.workers]:
            comm = self.comms.get(peer_id)
            if comm is not None:
                comm.send(info)


async def serve(config: Config, token: bytes, host: str, port: int,
                sock: socket.socket | None, watch_stdin: bool,
                ready_fd: int | None = None, tls: TLSConfig | None = None) -> None:
    set_dead_peer_timeout(config.worker_timeout)
    throttle_full_collections()
    scheduler = Scheduler(config, token, tls)
    address = scheduler.listen(host, port, sock)
    asyncio.ensure_future(scheduler._housekeeping())
    logger.info("scheduler listening at %s%s", address, " (mutual TLS)" if tls else "")
    if config.dashboard_port:
        url = scheduler.start_dashboard(config.dashboard_host, config.dashboard_port)
        if url:
            logger.info("status page at %s", url)
    if watch_stdin:
        watch_parent_pipe(lambda: (logger.info("owner process gone; stopping"),
                                   scheduler.stop()))
    if ready_fd is not None:
        os.write(ready_fd, (address + "\n").encode())
        os.close(ready_fd)
    else:
        print(f"graphstore scheduler listening at {address}", flush=True)
        if scheduler.dashboard_url:
            print(f"graphstore status page at {scheduler.dashboard_url}", flush=True)
    try:
        await scheduler.stopped.wait()
    finally:
        scheduler.stop_jobs()
        if scheduler.dashboard is not None:
            scheduler.dashboard.stop()
