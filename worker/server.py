"""The worker process: registers with the scheduler, runs tasks, holds an object store.

Tasks run in ``TaskExecutor`` threads; the event loop in the main thread moves messages
and serves peers. The worker's peer server lets drivers on this host allocate segments
for their puts and lets other hosts fetch objects, streamed from the segment. The worker
also hosts a ``Runtime`` so tasks can call ``put``/``get``/``remote`` themselves, over the
same scheduler connection. It exits when the scheduler goes away or, in a local cluster,
when the driver that started it does.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import socket
import threading
import time

from graphstore.core import logs, shm
from graphstore.core import protocol as msg
from graphstore.core.comm import (Comm, CommServer, RemoteCallError, ReplyThenRun, connect,
                             set_dead_peer_timeout)
from graphstore.core.config import Config, Limits
from graphstore.core.packages import cache_dir_from, needs_setup
from graphstore.core.serialization import error_payload
from graphstore.exceptions import (ObjectLostError, ObjectStoreFullError, ProtocolError,
                                   RuntimeEnvSetupError)
from graphstore.core.lifecycle import watch_parent_pipe
from graphstore.core.node import contact_host, default_node_id
from graphstore.core.object_ref import new_id
from graphstore.runtime import Runtime, WorkerRole
from graphstore.worker import output
from graphstore.worker.executor import TaskExecutor
from graphstore.core.spill import SpillTarget, default_spill_url
from graphstore.worker.actor_host import ActorProcesses
from graphstore.worker.process_load import ProcessLoad
from graphstore.worker.runtime_env import kill_setups, prepare as prepare_runtime_env
from graphstore.worker.task_host import TaskProcesses, environment_for
from graphstore.worker.spiller import Spiller
from graphstore.worker.store import SharedMemoryStore
from graphstore.core.tls import TLSConfig, exposure_warning

logger = logging.getLogger("graphstore.worker")

#: Reserves are made only once no object was given room for this long.
_RESERVE_AFTER_IDLE_SECONDS = 0.5


def cluster_id_for(scheduler_address: str) -> str:
    """Segments are named per cluster: the local cluster's session, else the address."""
    explicit = os.environ.get("GRAPHSTORE_CLUSTER_ID")
    if explicit:
        return explicit
    return hashlib.blake2b(scheduler_address.encode(), digest_size=4).hexdigest()


def check_shm_room(capacity: int) -> None:
    """Refuse to start with a store larger than what /dev/shm can hold."""
    free = shm.free_bytes()
    if capacity > free:
        raise ObjectStoreFullError(
            f"the object store needs {capacity:,} bytes of shared memory but "
            f"{shm.SHM_DIR} has only {free:,} bytes free: lower object_store_memory "
            f"(GRAPHSTORE_OBJECT_STORE_MEMORY / --object-store-memory), or enlarge "
            f"{shm.SHM_DIR} (e.g. `mount -o remount,size=8G /dev/shm`, or docker run "
            f"--shm-size=8g)")


class Worker:
    def __init__(self, config: Config, token: bytes, scheduler_address: str,
                 num_cpus: float, resources: dict, node_id: str, host: str,
                 store_capacity: int, port: int = 0, tls: TLSConfig | None = None,
                 labels: dict | None = None):
        self.config = config
        #: Names its deployment gave it (``--label``), told to the scheduler.
        self.labels = dict(labels or {})
        self.token = token
        self.tls = tls
        self.scheduler_address = scheduler_address
        self.num_cpus = num_cpus
        self.resources = resources
        self.node_id = node_id
        self.host = host
        #: Port of the peer server (0: any free one; fixed ones suit firewalls).
        self.port = port
        self.worker_id = new_id()
        check_shm_room(store_capacity)
        self.store = SharedMemoryStore(cluster_id_for(scheduler_address),
                                       self.worker_id.hex()[:12], store_capacity,
                                       config.store_arena_bytes)
        self.spill_target = SpillTarget(config.spill_to or default_spill_url(),
                                        config.spill_options, self.store.cluster_id)
        self.spiller: Spiller | None = None
        self.comm: Comm | None = None
        self.runtime: Runtime | None = None
        self.executor: TaskExecutor | None = None
        self.peer_server = CommServer(token, self._on_peer, tls=tls, limits=Limits(),
                                      split_bytes=config.frame_split_bytes,
                                      handshake_timeout=config.handshake_timeout)
        log_file = logs.current_log_file()
        self.actor_processes = ActorProcesses({
            "scheduler": scheduler_address, "token": token.hex(), "node_id": node_id,
            "host": host, "tls": tls.settings() if tls else None,
            # Each actor process logs to a file of its own beside this worker's.
            "log_dir": str(log_file.parent) if log_file is not None else None})
        self.task_processes = TaskProcesses(
            {"scheduler": scheduler_address, "token": token.hex(), "node_id": node_id,
             "tls": tls.settings() if tls else None, "worker_id": self.worker_id.hex()},
            self._task_process_exited)
        #: Pre-faulted segments kept ready for the next large puts: at most a quarter of
        #: the capacity in all.
        self.reserve_count = max(0, config.store_reserve_count)
        self.reserve_bytes = min(config.store_reserve_bytes,
                                 store_capacity // (4 * max(1, self.reserve_count)))
        self._reserve_filled = asyncio.Event()  # set (and replaced) after each fill
        #: CPU and memory of this process and the task and actor processes it started.
        self.load = ProcessLoad()
        self.address = ""
        self.stopped = asyncio.Event()
        #: Objects (and their bytes) this worker's peer server sent to other hosts.
        self.sent_objects = 0
        self.sent_bytes = 0

    # The runtime's hooks into this worker (its ``WorkerRole``): the spiller and the
    # executor are made after the runtime, which they use.
    def _restore_spilled(self, object_id: bytes, path: str, offset: int, size: int) -> str:
        return self.spiller.restore(object_id, path, offset, size)

    def _task_blocked(self):
        return self.executor.task_blocked()

    def _task_unblocked(self, task_id) -> None:
        self.executor.task_unblocked(task_id)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        # A worker pointed at an unusable spill target must not accept work.
        await loop.run_in_executor(None, self.spill_target.probe)
        try:
            self.peer_server.listen(self.port, address=self.host)
        except OSError as exc:
            raise OSError(exc.errno, f"cannot listen for peers on {self.host}:{self.port}: "
                                     f"{exc.strerror}") from None
        bound = self.peer_server.bound_address()
        # Peers on other hosts connect here: a wildcard bind advertises this host's
        # address on the route to the scheduler.
        self.address = f"tcp://{contact_host(bound[0], self.scheduler_address)}:{bound[1]}"
        warning = exposure_warning("the worker's peer server (and its actors' processes)",
                                   bound[0], bound[1], self.tls)
        if warning:
            logger.warning(warning)
        self.comm = await connect(self.scheduler_address, self.token, tls=self.tls,
                                  split_bytes=self.config.frame_split_bytes,
                                  timeout=self.config.handshake_timeout)
        role = WorkerRole(store=self.store, address=self.address,
                          restore_spilled=self._restore_spilled,
                          task_blocked=self._task_blocked,
                          task_unblocked=self._task_unblocked)
        self.runtime = Runtime(loop, self.comm, self.config, self.worker_id, role,
                               node_id=self.node_id, token=self.token, tls=self.tls)
        self.runtime.context["worker_id"] = self.worker_id
        self.runtime.install()
        # Lines logged here carry this worker's ids, and inside a task, the task's.
        logs.set_process_ids(worker_id=self.worker_id, node_id=self.node_id)
        logs.set_task_id_source(output.running_task_id)
        streams = output.install(self.runtime.send_from_any_thread)
        self.executor = TaskExecutor(max(1, int(self.num_cpus)), self.runtime,
                                     self.config.frame_split_bytes, streams)
        self.spiller = Spiller(self.store, self.spill_target, self.runtime,
                               self.store.worker_tag)
        self.store.on_pressure = self.spiller.request
        self.store.forget_mapping = self.runtime.mappings.forget
        self.store.revoke = self._revoke_leases
        self.store.spill_problem = self._spill_problem
        self.store.wait_timeout = self.config.spill_wait_timeout
        self.store.spill_threshold = self.config.spill_threshold
        self.comm.handler = self._on_message
        self.comm.on_close.append(self._on_scheduler_lost)
        asyncio.ensure_future(self.comm.read_loop())
        asyncio.ensure_future(self._housekeeping())
        await self.comm.request(msg.RegisterWorker(
            self.worker_id, os.getpid(), socket.gethostname(), self.node_id,
            float(self.num_cpus), self.resources, self.address, self.store.capacity,
            self.labels),
            timeout=self.config.startup_timeout)
        asyncio.ensure_future(self._heartbeats())

    def _spill_problem(self) -> str | None:
        error = self.spiller.stats["last_spill_error"] if self.spiller else None
        return f"spilling to {self.spill_target.url} fails: {error}" if error else None

    async def _housekeeping(self) -> None:
        """Periodic upkeep: return memory idle in the store's reuse pool, and keep a
        pre-faulted reserve segment ready for the next large put (made off the loop)."""
        await asyncio.sleep(0.5)
        while not self.stopped.is_set():
            self.store.trim_pool(self.config.store_pool_idle_seconds)
            await self._fill_reserve()
            await asyncio.sleep(1.0)

    async def _fill_reserve(self) -> None:
        """Make the missing reserve segments while the store idles (a fill during a
        burst of puts would compete with the puts for the CPU)."""
        store = self.store
        while (self.reserve_bytes and len(store.reserve_names) < self.reserve_count
               and time.monotonic() - store.last_allocation > _RESERVE_AFTER_IDLE_SECONDS
               and not self.stopped.is_set()):
            try:
                if not await self._in_thread(store.fill_reserve, self.reserve_bytes,
                                             shm.prefault, self.reserve_count):
                    break
            except OSError as exc:
                logger.warning("could not make a reserve segment: %s", exc)
                break
        self._reserve_filled.set()
        self._reserve_filled = asyncio.Event()

    async def _reserve_for_writer(self) -> list:
        """A writer on this host asks for the reserves, to map them before its next
        puts: [[segment, size], ...]. When some are missing, wait for housekeeping's
        next fill (up to a few seconds) rather than fill now: a fill right after a put
        would compete with the writer's next put for the CPU."""
        if len(self.store.reserves()) < self.reserve_count and self.reserve_bytes:
            try:
                await asyncio.wait_for(self._reserve_filled.wait(), 5.0)
            except asyncio.TimeoutError:
                pass
        return [list(r) for r in self.store.reserves()]

    async def _heartbeats(self) -> None:
        """Tell the scheduler this worker's own figures now and then (status page, and
        proof of life); leave when the scheduler has been silent for ``worker_timeout``
        seconds (its heartbeats stopped: it died, or the network between us is cut)."""
        interval = max(0.05, self.config.heartbeat_interval)
        loop = asyncio.get_running_loop()
        last = loop.time()
        while not self.stopped.is_set() and not self.comm.closed:
            self.comm.send(msg.WorkerHeartbeat(self.metrics(),
                                               self.runtime.spans.drain() or None))
            await asyncio.sleep(interval)
            now = loop.time()
            silent = now - self.comm.last_received
            if now - last < 2 * interval + 0.5 and silent > self.config.worker_timeout:
                logger.warning("heard nothing from the scheduler at %s for %.1f s "
                               "(worker_timeout %.1f s)", self.scheduler_address, silent,
                               self.config.worker_timeout)
                self.comm.abort()
            last = now

    def metrics(self) -> dict:
        """Store use, spilling and transfers between hosts, read without the store's
        lock (plain numbers), and the CPU and memory of this worker's processes since the
        last heartbeat."""
        store = self.store
        figures = {"store_used": store.used, "store_pooled": store.pooled,
                   "store_arena_bytes": store.arena_total,
                   "store_arena_allocated": store.arena_allocated(),
                   "store_capacity": store.capacity, "store_objects": len(store.objects),
                   "rss": _rss_bytes()}
        figures.update(self.load.sample([os.getpid(), *self.task_processes.pids(),
                                         *self.actor_processes.pids()]))
        if self.runtime is not None:
            received_objects, received_bytes = self.runtime.objects.fetched()
            figures.update(transfer_received_objects=received_objects,
                           transfer_received_bytes=received_bytes,
                           transfer_sent_objects=self.sent_objects,
                           transfer_sent_bytes=self.sent_bytes)
        log_file = logs.current_log_file()
        if log_file is not None:
            figures["log_file"] = str(log_file)
        if self.spiller is not None:
            stats = self.spiller.stats
            for key in ("spilled_bytes", "spilled_objects", "restored_bytes",
                        "restored_objects", "spill_errors", "last_spill_error"):
                figures[key] = stats.get(key)
        return figures

    # -- scheduler messages -----------------------------------------------------------
    def _on_message(self, comm, m):
        cls = type(m)
        if cls is msg.RunTask:
            self.executor.submit(m)
        elif cls is msg.FunctionCode:
            self.executor.add_function(m.function_hash, bytes(m.payload))
        elif cls is msg.FreeObjects:
            for object_id, reusable in m.entries:
                self.store.free(object_id, reusable)
        elif cls is msg.SealObjects:
            for object_id in m.ids:
                self.store.seal(object_id)
        elif cls is msg.GetStoreSummary:
            summary = self.store.summary()
            summary["in_use"] = self.store.in_use()
            if self.spiller is not None:
                summary.update(self.spiller.summary())
            return summary
        elif cls is msg.AllocateObject:
            return self._allocate_for(comm, m)
        elif cls is msg.RestoreObject:
            return self._in_thread(self.spiller.restore, m.object_id, m.path, m.offset,
                                   m.size)
        elif cls is msg.CancelRunning:
            self.executor.cancel(m.task_id, m.force)
        elif cls is msg.StartActor:
            if needs_setup((m.environment or {}).get("runtime_env")):
                self._in_setup_thread(self._start_actor, m.actor_id, m.incarnation,
                                      m.environment)
            else:
                self._in_thread(self._start_actor, m.actor_id, m.incarnation,
                                m.environment)
        elif cls is msg.StartTaskProcess:
            if needs_setup(m.environment.get("runtime_env")):
                self._in_setup_thread(self._start_task_process, m.process_id,
                                      m.environment, m.max_calls)
            else:
                self._in_thread(self.task_processes.start, m.process_id, m.environment,
                                m.max_calls)
        elif cls is msg.StopTaskProcess:
            self._in_thread(self.task_processes.stop, m.process_id)
        elif cls is msg.StopActor:
            self._in_thread(self.actor_processes.stop, m.actor_id, m.incarnation)
        elif cls is msg.AdoptSegments:
            self._in_thread(self._adopt, list(m.entries))
        elif cls is msg.ReplicateObjects:
            self._in_thread(self._replicate, list(m.entries))
        elif cls is msg.DeleteSpilled:
            self._in_thread(self.spill_target.delete, list(m.paths))
        elif cls is msg.SchedulerHeartbeat:
            pass          # its arrival is the point (``_heartbeats``)
        elif cls is msg.ReadLog:
            return self._in_thread(self._read_log, m.offset, m.tail, m.pid)
        elif not self.runtime.handle(m):
            raise ValueError(f"unexpected message {cls.__name__}")
        return None

    @staticmethod
    def _read_log(offset: int, tail: int, pid: int) -> dict:
        """Part of this worker's log file, or (``pid``) of the file of the actor process
        ``pid`` it started, for ``graphstore logs``."""
        path = logs.current_log_file()
        if path is None:
            raise FileNotFoundError("this worker writes no log file (it could not open "
                                    "one at start: see its stderr)")
        if pid:
            path = path.parent / logs.actor_log_name(pid)
        return logs.read_log(path, offset, tail)

    def _replicate(self, entries: list) -> None:
        """Copy objects whose only copies are on retiring workers into this store."""
        for object_id, locations in entries:
            try:
                self.runtime.objects.copy_to_store(object_id, locations)
            except Exception as exc:       # the scheduler asks again, or another worker
                logger.warning("could not copy object %s from a retiring worker: %s",
                               object_id.hex(), exc)

    def _adopt(self, entries: list) -> None:
        failed = self.store.adopt(entries)
        if failed:
            logger.warning("could not take over %d objects of a dead worker", len(failed))
            self.runtime.send_from_any_thread(msg.AdoptionFailed(failed))

    def _start_actor(self, actor_id: bytes, incarnation: int, environment) -> None:
        env, gpu_ids = environment_for(environment)
        runtime_env = (environment or {}).get("runtime_env")
        prepared = None
        if needs_setup(runtime_env):
            try:
                prepared = self._prepare(runtime_env)
            except RuntimeEnvSetupError as exc:
                logger.warning("actor %s: %s", actor_id.hex(), exc)
                self.runtime.send_from_any_thread(msg.ActorSetupFailed(
                    actor_id, incarnation, error_payload(exc)))
                return
        self.actor_processes.start(actor_id, incarnation, env, gpu_ids, prepared,
                                   runtime_env)
        self.actor_processes.prepare_spare()   # the next actor on this worker starts fast

    def _start_task_process(self, process_id: bytes, environment: dict,
                            max_calls: int) -> None:
        """Set up the process's runtime_env on this host, then start it; a set-up that
        fails fails the tasks waiting for it (``TaskProcessSetupFailed``)."""
        try:
            prepared = self._prepare(environment["runtime_env"])
        except RuntimeEnvSetupError as exc:
            logger.warning("task process %s: %s", process_id.hex(), exc)
            self.runtime.send_from_any_thread(msg.TaskProcessSetupFailed(
                process_id, error_payload(exc)))
            return
        self.task_processes.start(process_id, environment, max_calls, prepared)

    def _prepare(self, runtime_env: dict):
        """``runtime_env.prepare`` with this worker's runtime and cache; any error it
        did not expect becomes a ``RuntimeEnvSetupError`` too (the worker lives on)."""
        try:
            return prepare_runtime_env(runtime_env, self.runtime,
                                       cache_dir_from(self.config.runtime_env_cache_dir))
        except RuntimeEnvSetupError:
            raise
        except Exception as exc:
            logger.exception("runtime_env set-up failed")
            raise RuntimeEnvSetupError(f"could not set up the runtime_env on "
                                       f"{socket.gethostname()}: {exc!r}") from None

    @staticmethod
    def _in_setup_thread(fn, *args) -> None:
        """A runtime_env set-up (downloads, pip: seconds to minutes) on a thread of its
        own, so it holds none of the loop's executor threads that spill I/O needs."""
        threading.Thread(target=fn, args=args, daemon=True,
                         name="graphstore-runtime-env").start()

    async def _allocate_for(self, comm: Comm, m: msg.AllocateObject) -> str:
        """A segment for a writer in another process; a reused segment's tail is trimmed
        after the reply, off the writer's critical path."""
        lessee = comm if m.lease else None
        try:
            entry = self.store.try_allocate(m.object_id, m.size, writer=comm, lessee=lessee)
        except ObjectStoreFullError:     # wait for spilling to make room, off the loop
            entry = await self._in_thread(lambda: self.store.allocate(
                m.object_id, m.size, writer=comm, defer_shrink=True, lessee=lessee))
        if self.store.shrinks_pending:
            self._in_thread(self.store.apply_shrinks)
        return entry.name

    def _revoke_leases(self, holder: Comm, keys: list) -> None:
        """Any thread: ask a lease holder for leases of freed or spilled objects back
        (``store.revoke``); those it gives back now are released when it answers."""
        async def ask():
            try:
                released, viewed = await holder.request(msg.RevokeLeases(keys), timeout=60)
            except Exception as exc:   # gone: its leases ended with its connection
                logger.debug("lease holder did not answer a revocation: %r", exc)
                return
            self.store.release_leases(holder, released)
            self.store.still_viewed(viewed)
        if not holder.closed:
            self.runtime.loop.call_soon_threadsafe(lambda: asyncio.ensure_future(ask()))

    @staticmethod
    def _in_thread(fn, *args):
        """Blocking work (waiting for room, spill I/O) off the event loop."""
        return asyncio.get_running_loop().run_in_executor(None, fn, *args)

    # -- peers ------------------------------------------------------------------------
    def _on_peer(self, comm: Comm) -> None:
        comm.handler = self._on_peer_message
        comm.on_close.append(lambda c: self.store.abort_writes_of(c))
        comm.on_close.append(self.store.drop_holder)
        asyncio.ensure_future(comm.read_loop())

    def _on_peer_message(self, comm: Comm, m):
        cls = type(m)
        if cls is msg.LeaseObjects:
            granted = []
            for object_id in m.ids:
                entry = self.store.lease(object_id, comm)
                granted.append(None if entry is None else [entry.name, entry.size])
            return granted
        if cls is msg.ReleaseLeases:
            self.store.release_leases(comm, m.keys)
            return None
        if cls is msg.AllocateObject:
            if not isinstance(m.size, int) or m.size < 0:
                raise ValueError(f"invalid object size {m.size!r}")
            return self._allocate_for(comm, m)
        if cls is msg.ReserveSegment:
            return self._reserve_for_writer()
        if cls is msg.FetchObject:
            entry = self.store.pin(m.object_id)
            if entry is None:
                raise ObjectLostError(f"object {bytes(m.object_id).hex()} is not in the "
                                      f"store of worker {self.address}")
            frame = msg.Frame(self.runtime.mappings.region(entry.name, entry.size,
                                                           populate=True))
            self.sent_objects += 1
            self.sent_bytes += entry.size
            return ReplyThenRun([entry.size, frame], lambda: self.store.unpin(entry))
        raise ProtocolError(f"unexpected peer message {cls.__name__}")

    # -- shutdown ---------------------------------------------------------------------
    def _on_scheduler_lost(self, comm) -> None:
        logger.warning("lost the scheduler at %s; exiting", self.scheduler_address)
        if self.runtime is not None:
            self.runtime.connection_lost()
        self.stop()

    def stop(self) -> None:
        if self.executor is not None:
            self.executor.stop()
        if self.spiller is not None:
            self.spiller.stop()
        self.stopped.set()

    def _task_process_exited(self, process_id: bytes, code: int) -> None:
        """A task process ended (any thread): the scheduler must know if it never
        registered."""
        if self.runtime is not None and not self.runtime.closed:
            self.runtime.send_from_any_thread(msg.TaskProcessExited(process_id, code))

    def close(self) -> None:
        kill_setups()                 # pip and venv processes of runtime_env set-ups
        self.task_processes.close()
        self.actor_processes.close()
        self.peer_server.stop()
        self.store.close()


def _rss_bytes() -> int | None:
    """This process's resident memory (Linux), or None."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


async def serve(config: Config, token: bytes, scheduler_address: str, num_cpus: float,
                resources: dict, node_id: str | None, watch_stdin: bool,
                host: str = "127.0.0.1", store_capacity: int | None = None,
                port: int = 0, tls: TLSConfig | None = None,
                labels: dict | None = None) -> None:
    shm.sweep()  # segments of workers on this host that died without cleaning up
    set_dead_peer_timeout(config.worker_timeout)
    capacity = store_capacity or config.object_store_memory
    if not capacity:
        from graphstore.core.node import default_store_capacity
        capacity = default_store_capacity(max(1, (os.cpu_count() or 1) // max(1, int(num_cpus))))
    worker = Worker(config, token, scheduler_address, num_cpus, resources,
                    node_id or default_node_id(), host, capacity, port, tls, labels)
    try:
        if watch_stdin:
            watch_parent_pipe(worker.stop)
        await worker.start()
        # The line `graphstore up` and SSHCluster wait for, as the scheduler's
        # "listening at": registered, so the scheduler counts this worker.
        print(f"graphstore worker {worker.address} joined {scheduler_address}", flush=True)
        await worker.stopped.wait()
        if worker.comm is not None:
            await worker.comm.close()
    finally:
        worker.close()


__all__ = ["Worker", "serve", "RemoteCallError", "cluster_id_for"]
