"""An actor's own process: builds the instance, then serves method calls from callers.

A worker starts it (see ``actor_host.py``) and hands it its assignment as one JSON line on
stdin; the pipe then ties the process's life to the worker's. Callers connect straight to
this process's server and send ``ActorCall``s; results go back to the caller on the same
connection and to the scheduler (``ActorCallDone``) for the object directory. Objects are
read and written through the host's shared-memory stores, like a driver does.

Two event loops: the main one talks to the scheduler and the stores (the runtime's), the
other serves the callers' connections. Calls of a plain actor run right on that second
loop's thread as they arrive, one at a time in arrival order: no hand-off between
threads on the call path, and a method may still block in ``graphstore.get`` since the
runtime's I/O happens on the main loop. A threaded actor runs calls on
``max_concurrency`` threads; an actor with ``async def`` methods runs them as coroutines
on the callers' loop (up to ``max_concurrency``, default 1000, at once).

``exit_actor()`` ends the actor the way Ray does: from the moment it is called no call
starts (calls that reach the actor later fail with ``ActorDiedError`` naming it); calls
already running on other threads may finish (for up to ``EXIT_GRACE_SECONDS``), then the
replies are flushed and the process exits. The scheduler does not restart it.

A call runs the method its class defines (an instance attribute of the same name does not
shadow it). A call that raises one of its ``retry_exceptions`` runs again in place while
it has retries left, after telling its caller, which counts retries after a crash from
the same budget. ``sys.exit()`` in a method ends the process as a crash would, so the
actor restarts within ``max_restarts`` and callers retry their calls, as in Ray.
"""
from __future__ import annotations

import asyncio
import atexit
import collections
import inspect
import json
import logging
import os
import pickle
import socket
import sys
import threading
import time
from types import GeneratorType

from graphstore.core import protocol as msg
from graphstore.core.comm import CommServer, connect
from graphstore.core.config import Limits, load_config
from graphstore.core.generators import STREAMING
from graphstore.exceptions import ActorDiedError, ActorExit, ProtocolError, TaskCancelledError
from graphstore.core import logs
from graphstore.core.lifecycle import new_event_loop, setup_logging, watch_parent_pipe
from graphstore.core.loop_thread import LoopThread
from graphstore.core.node import contact_host
from graphstore.core.object_ref import ObjectRef, new_id
from graphstore.worker.runtime_env import apply_placement
from graphstore.runtime import ActorRole, Runtime
from graphstore.core.serialization import dumps, error_payload, loads, restore_filename
from graphstore.core.task_args import unpack_args
from graphstore.core.tls import tls_from_spec
from graphstore.worker import output
from graphstore.worker.executor import (RetryRule, interrupt_thread, pack_task_error,
                                        split_returns)
from graphstore.worker.generators import YieldWriter, not_a_generator, store_yielded

logger = logging.getLogger("graphstore.actor")

#: Default concurrency of an actor with ``async def`` methods (as in Ray).
ASYNC_DEFAULT_CONCURRENCY = 1000
#: Seconds calls running on other threads get to finish after ``exit_actor()``.
EXIT_GRACE_SECONDS = 10.0


class ActorProcess:
    def __init__(self, spec: dict):
        self.spec = spec
        self.config = load_config()
        self.token = bytes.fromhex(spec["token"])
        #: The worker's TLS settings: callers and the scheduler connect over mutual TLS.
        self.tls = tls_from_spec(spec.get("tls"))
        self.actor_id = bytes.fromhex(spec["actor_id"])
        self.incarnation = int(spec["incarnation"])
        self.node_id = spec["node_id"]
        self.process_id = new_id()
        self.pid = os.getpid()
        self.loop = asyncio.get_event_loop()
        self.stopped = asyncio.Event()
        #: The loop serving callers (and running plain actors' calls).
        self.calls = LoopThread(name="graphstore-actor-calls")
        self.server = None
        self.address = ""
        self.comm = None
        self.runtime: Runtime | None = None
        self.instance = None
        self.class_name = "actor"
        self.dispatcher = None
        #: Set by ``exit_actor()`` (under the lock): no call starts any more.
        self._exiting = False
        self._exit_started = False
        self._exit_call = ""
        #: ``sys.exit()`` was called in a method: the process ends; no call starts.
        self._dying = False
        #: Method name -> the class's method bound to the instance (see ``_bind``).
        self._bound: dict[str, object] = {}
        self._retriable = RetryRule()
        #: Calls running on a thread -> the thread; calls cancelled before they started;
        #: calls started whose outcome is not sent yet.
        self._lock = threading.Lock()
        self._running: dict[bytes, int] = {}
        self._cancelled: set[bytes] = set()
        self._active: set[bytes] = set()
        #: Connections of callers, closed (their replies flushed) before exiting.
        self._callers: set = set()

    # -- start ------------------------------------------------------------------------
    async def _listen(self) -> str:
        """On the callers' loop: the server that callers connect to."""
        self.server = CommServer(self.token, self._on_caller, tls=self.tls, limits=Limits(),
                                 split_bytes=self.config.frame_split_bytes,
                                 handshake_timeout=self.config.handshake_timeout)
        self.server.listen(0, address=self.spec.get("host", "127.0.0.1"))
        bound = self.server.bound_address()
        return f"tcp://{contact_host(bound[0], self.spec['scheduler'])}:{bound[1]}"

    async def start(self) -> None:
        self.address = await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(
            self._listen(), self.calls.loop))
        self.comm = await connect(self.spec["scheduler"], self.token, tls=self.tls,
                                  split_bytes=self.config.frame_split_bytes,
                                  timeout=self.config.handshake_timeout)
        runtime = Runtime(self.loop, self.comm, self.config, self.process_id,
                          ActorRole(request_exit=self.request_exit),
                          node_id=self.node_id, token=self.token, tls=self.tls)
        self.runtime = runtime
        runtime.install()
        self.comm.handler = self._on_scheduler_message
        self.comm.on_close.append(lambda c: self._lost_scheduler())
        asyncio.ensure_future(self.comm.read_loop())
        build = await self.comm.request(msg.RegisterActorProcess(
            self.actor_id, self.incarnation, self.process_id, self.pid,
            socket.gethostname(), self.node_id, self.address),
            timeout=self.config.startup_timeout)
        runtime.cluster_info = {"num_workers": build["num_workers"],
                                "resources": build["resources"], "workers": build["workers"]}
        # What get_runtime_context() reports here; tasks it submits inherit its variables.
        runtime.context.update(
            actor_id=self.actor_id, worker_id=self.process_id, job_id=build.get("job_id"),
            namespace=build.get("namespace"), resources=build.get("resources_held", {}),
            gpu_ids=list(self.spec.get("gpu_ids") or []),
            restarts=build.get("restarts", self.incarnation - 1),
            actor_name=build.get("name"))
        runtime.inherited_env_vars = {k: v for k, v in (self.spec.get("env") or {}).items()
                                      if k != "CUDA_VISIBLE_DEVICES"
                                      and k not in self.spec.get("placement_env", ())}
        runtime.runtime_envs.inherited = dict(self.spec.get("runtime_env") or {})
        self.class_name = build["class_name"]
        with self._lock:
            self._cancelled.update(build.get("cancelled") or ())
        logs.set_process_ids(actor_id=self.actor_id, node_id=self.node_id)
        self.streams = output.install(runtime.send_from_any_thread)
        error = await self.loop.run_in_executor(None, self._build, build)
        self.comm.send(msg.ActorReady(self.actor_id, self.incarnation, error))
        if error is not None:
            await self.comm.close()
            self.stop()

    def _build(self, build: dict) -> list | None:
        """Make the instance (in a thread); the pickled ActorDiedError if ``__init__``
        (or loading its arguments) fails."""
        name = f"{build['class_name']}.__init__"
        output.current_task.task = (self.actor_id, name)
        try:
            cls, filename = pickle.loads(build["class_code"])
            restore_filename(cls, filename)
            dep_values = [self._dep_value(dep) for dep in build["deps"]]
            args, kwargs = unpack_args(build["args"], dep_values)
            self.instance = cls(*args, **kwargs)
            self.dispatcher = _make_dispatcher(self, cls, build.get("max_concurrency"))
            return None
        except BaseException as exc:
            error = loads(pack_task_error(name, exc, self.pid, __file__)[0])
            return error_payload(ActorDiedError(
                f"actor {build['class_name']} failed in __init__, so every call fails: "
                f"{error}"))
        finally:
            self._finish_output((self.actor_id, name))

    def _on_scheduler_message(self, comm, m):
        if type(m) is msg.CancelRunning:
            self.cancel(m.task_id)
        elif type(m) is msg.StopActor:   # killed after the worker that started it died
            if m.actor_id == self.actor_id:
                logger.info("stopped by the scheduler")
                self.stop()
        elif not self.runtime.handle(m):
            raise ValueError(f"unexpected message {type(m).__name__}")

    def cancel(self, call_id: bytes) -> None:
        """Interrupt a running call, or drop a queued one when its turn comes."""
        if isinstance(self.dispatcher, _Async):
            self.calls.loop.call_soon_threadsafe(self.dispatcher.cancel, call_id)
            return
        with self._lock:
            ident = self._running.get(call_id)
            if ident is None:
                self._cancelled.add(call_id)
            elif not self.runtime.cancel_wait(ident):   # blocked in get/wait: woken
                interrupt_thread(ident, TaskCancelledError)

    def _finish_output(self, task) -> None:
        for stream in self.streams:
            stream.finish_task(task)
        output.current_task.task = None

    def _lost_scheduler(self) -> None:
        if not self.stopped.is_set():
            logger.warning("lost the scheduler; the actor's process exits")
        self.stop()

    def stop(self) -> None:
        if self.server is not None:
            self.calls.loop.call_soon_threadsafe(self.server.stop)
        self.stopped.set()

    # -- calls ------------------------------------------------------------------------
    def _on_caller(self, comm) -> None:
        comm.handler = self._on_call
        self._callers.add(comm)
        comm.on_close.append(self._callers.discard)
        asyncio.ensure_future(comm.read_loop())

    def _on_call(self, comm, m):
        if type(m) is not msg.ActorCall:
            raise ProtocolError(f"unexpected message {type(m).__name__} for an actor")
        self.dispatcher.submit(m, comm)

    def _dep_value(self, dep: list):
        if len(dep) == 1:   # the caller did not know it: ask the scheduler
            return self.runtime.get(ObjectRef._new(dep[0]))
        object_id, payload, error, locations = dep
        if error is not None:
            raise loads(error)
        return self.runtime.objects.load_value(object_id, payload, locations)

    def prepare(self, call: msg.ActorCall):
        """The bound method and its arguments (dependencies loaded)."""
        method = self._bound.get(call.method)
        if method is None:
            method = self._bind(call.method)
        dep_values = [self._dep_value(dep) for dep in call.deps] if call.deps else ()
        args, kwargs = unpack_args(call.args, dep_values)
        return method, args, kwargs

    def _bind(self, name: str):
        """The method ``name`` as the class defines it, bound once: an attribute of the
        instance with the same name does not shadow it, and static and class methods
        are callable too (as in Ray)."""
        cls = type(self.instance)
        try:
            member = inspect.getattr_static(cls, name)
        except AttributeError:
            raise AttributeError(f"actor {self.class_name} has no method {name!r}") from None
        get = getattr(type(member), "__get__", None)
        bound = self._bound[name] = (get(member, self.instance, cls) if get is not None
                                     else member)
        return bound

    def should_retry(self, call: msg.ActorCall, retry: list | None, comm,
                     exc: BaseException) -> list | None:
        """After ``exc``: the call's retries left if it runs again in place (the caller
        is told first, so that both kinds of retry share the budget), else None."""
        if (retry is None or retry[0] <= 0 or isinstance(exc, TaskCancelledError)
                or not self._retriable(retry[1], exc)):
            return None
        self.tell_caller(comm, msg.ActorCallRetrying(call.call_id))
        return [retry[0] - 1, retry[1]]

    def run_method(self, call: msg.ActorCall, comm):
        """Run a (plain) method, again while it raises an error it retries on."""
        retry = call.retry
        while True:
            method, args, kwargs = self.prepare(call)
            try:
                return method(*args, **kwargs)
            except Exception as exc:
                retry = self.should_retry(call, retry, comm, exc)
                if retry is None:
                    raise

    def tell_caller(self, comm, message) -> None:
        """Hand ``message`` to the caller's socket before going on (from any thread): if
        the process dies next, the caller has it."""
        def send():
            if not comm.closed:
                comm.send_now([message])
        if threading.get_ident() == self.calls.thread.ident:
            send()
            return

        async def send_on_loop():
            send()
        try:
            asyncio.run_coroutine_threadsafe(send_on_loop(), self.calls.loop).result(
                timeout=10)
        except Exception as exc:        # the caller is gone or the loop stopped
            logger.debug("could not tell the caller of a retry: %s", exc)

    def system_exit(self, call: msg.ActorCall, exc: SystemExit) -> None:
        """``sys.exit()`` in a method ends the process as a crash would, as in Ray: the
        actor restarts within ``max_restarts`` and callers send their calls in flight
        again within ``max_task_retries``. No call starts any more; what earlier calls
        returned reaches the scheduler before the process goes."""
        with self._lock:
            if self._dying:
                return
            self._dying = True
        logger.warning("actor %s: %s called sys.exit(%s); the process ends", self.class_name,
                       call.name, exc.code)
        self.loop.call_soon_threadsafe(lambda: asyncio.ensure_future(self._die()))

    async def _die(self) -> None:
        await asyncio.sleep(0)          # outcomes queued by other threads go first
        self.runtime.flush()
        await self.comm.close()
        self.stop()

    def results(self, call: msg.ActorCall, result) -> list:
        """``ActorCallDone`` entries for a call's return value(s)."""
        values = split_returns(call.name, result, len(call.returns))
        return [self._pack(call, object_id, value)
                for object_id, value in zip(call.returns, values)]

    def _pack(self, call: msg.ActorCall, object_id: bytes, value) -> list:
        """One ``ActorCallDone`` entry: the value inline, or written into a store."""
        runtime = self.runtime
        buffers, contained = dumps(value, what=f"the return value of {call.name}")
        location = None
        if sum(memoryview(b).nbytes for b in buffers) > runtime.config.inline_threshold:
            location = runtime.objects.put_stored(object_id, buffers)
        if location is None:
            return [object_id, msg.wire_payload(buffers, runtime.split_bytes),
                    contained, 0, None, None]
        worker_id, address, segment, size = location
        return [object_id, None, contained, size, [worker_id, segment, size, address], None]

    def run_generator(self, call: msg.ActorCall, result, writer: YieldWriter | None,
                      partial: list | None):
        """Drain a generator method's values as they come (in the call's thread): into
        ``writer`` (streaming, dynamic; returns the call's one result) or, for
        num_returns=N, packed into ``partial`` (returns None)."""
        if writer is not None:
            if not inspect.isgenerator(result):
                raise not_a_generator(call.name, call.mode, result)
            for value in result:
                writer.add(value)
            return writer.result()
        store_yielded(result, len(call.returns),
                      lambda i, v: self._pack(call, call.returns[i], v), call.name, partial)
        return None

    def writer_for(self, call: msg.ActorCall) -> YieldWriter:
        return YieldWriter(self.runtime, call.returns[0], call.mode, call.name, call.caller)

    def after_error(self, call: msg.ActorCall, writer: YieldWriter | None,
                    partial: list | None, packed: list, text: str) -> tuple[list, str]:
        """The outcome of a call that raised: a streaming or dynamic generator's error
        is its last value; a generator with num_returns=N keeps what it yielded."""
        if writer is not None:
            writer.add_error(packed[0][5])
            return self.results(call, writer.result()), text
        if partial:
            packed[:len(partial)] = partial
        return packed, text

    def admit(self, call: msg.ActorCall, ident: int | None) -> tuple | None:
        """Start ``call`` (on thread ``ident``; None: a coroutine), or return the outcome
        of a call that may not start: it was cancelled, or ``exit_actor()`` was called;
        ``(None, None)`` (no outcome: its caller sends it again, or fails it) once
        ``sys.exit()`` was called. A call started is active until ``call_ended``."""
        with self._lock:
            if self._dying:
                return None, None
            if call.call_id in self._cancelled:
                self._cancelled.discard(call.call_id)
                return self._was_cancelled(call)
            if self._exiting:
                error = error_payload(ActorDiedError(
                    f"actor {self.class_name} exited: exit_actor() was called"
                    f"{' in ' + self._exit_call if self._exit_call else ''}, and "
                    f"{call.name} was queued behind it, so it did not run"))
                return [[r, None, [], 0, None, error] for r in call.returns], "exit_actor()"
            if ident is not None:
                self._running[call.call_id] = ident
            self._active.add(call.call_id)
            return None

    def run_call(self, call: msg.ActorCall, comm) -> None:
        """Run one call to the end in this thread and send its outcome."""
        start = time.perf_counter()
        task = (call.call_id, call.name)
        refused = self.admit(call, threading.get_ident())
        if refused is not None:
            if refused[0] is not None:
                self.send_outcome(call, comm, refused[0], 0.0, refused[1], ran=False)
            return
        spans = self.runtime.spans
        if spans.enabled:         # argument fetches are spans of the call
            spans.begin(call.call_id)
        output.current_task.task = task
        error_text = None
        writer = self.writer_for(call) if call.mode else None
        partial = None
        try:
            result = self.run_method(call, comm)
            if writer is not None or type(result) is GeneratorType:
                partial = []
                result = self.run_generator(call, result, writer, partial)
            with self._lock:           # inside the try: a late interrupt lands here too
                del self._running[call.call_id]
            packed = partial if writer is None and partial is not None else \
                self.results(call, result)
        except TaskCancelledError:
            packed, error_text = self.after_error(call, writer, partial,
                                                  *self._was_cancelled(call))
        except ActorExit:
            packed, error_text = self._exited(call)
        except SystemExit as exc:
            packed = None
            self.system_exit(call, exc)
        except BaseException as exc:
            packed, error_text = self.after_error(call, writer, partial,
                                                  *self._failed(call, exc))
        with self._lock:
            self._running.pop(call.call_id, None)
        self._finish_output(task)
        events = spans.end() if spans.enabled else None
        if packed is not None:
            self.send_outcome(call, comm, packed, time.perf_counter() - start, error_text,
                              events)
        self.call_ended(call.call_id)

    def _was_cancelled(self, call: msg.ActorCall) -> tuple[list, str]:
        error = error_payload(TaskCancelledError(f"{call.name} was cancelled"))
        return [[r, None, [], 0, None, error] for r in call.returns], "TaskCancelledError"

    def _failed(self, call: msg.ActorCall, exc: BaseException) -> tuple[list, str]:
        error, text = pack_task_error(call.name, exc, self.pid, __file__)
        return [[r, None, [], 0, None, error] for r in call.returns], text

    def _exited(self, call: msg.ActorCall) -> tuple[list, str]:
        self.request_exit()
        error = error_payload(ActorDiedError(f"actor {self.class_name} exited in {call.name} "
                                             f"(exit_actor() was called)"))
        return [[r, None, [], 0, None, error] for r in call.returns], "exit_actor()"

    # -- exit_actor() -----------------------------------------------------------------
    def request_exit(self) -> None:
        """Any thread (``exit_actor()``): from now on no call starts; the scheduler hears
        at once that this end is intended (no restart)."""
        task = getattr(output.current_task, "task", None)
        with self._lock:
            if self._exiting:
                return
            self._exiting = True
            self._exit_call = task[1] if task else ""
        self.runtime.send_from_any_thread(msg.ActorExiting(self.actor_id))
        self.loop.call_soon_threadsafe(self.loop.call_later, EXIT_GRACE_SECONDS,
                                       self._begin_exit)

    def call_ended(self, call_id: bytes) -> None:
        """Any thread, after a call's outcome was sent: exit once the last running call
        of an exiting actor ended."""
        with self._lock:
            self._running.pop(call_id, None)
            self._active.discard(call_id)
            idle = self._exiting and not self._active
        if idle:
            self.loop.call_soon_threadsafe(self._begin_exit)

    def _begin_exit(self) -> None:
        """Main loop: exit, once."""
        if not self._exit_started:
            self._exit_started = True
            asyncio.ensure_future(self._exit())

    def send_outcome(self, call: msg.ActorCall, comm, packed: list, duration: float,
                     error_text: str | None, events: list | None = None,
                     ran: bool = True) -> None:
        """Results to the caller (straight) and to the scheduler (the directory), with
        the call's span (``ran``: it started) and ``events``, the spans inside it."""
        # The call's own span is ``started`` and ``duration``: the scheduler knows the
        # rest (kind, name, call id, pid).
        started = time.time() - duration if ran and self.runtime.spans.enabled else None
        direct = []
        for object_id, payload, _, size, location, error in packed:
            where = None if location is None else [[self.node_id, location[3], location[1],
                                                    size]]
            direct.append(msg.ObjectReady(object_id, payload, error, where))
        for entry in packed:
            if entry[4] is not None:
                entry[4] = entry[4][:3]
        self.runtime.send_from_any_thread(msg.ActorCallDone(
            call.call_id, self.actor_id, packed, duration, error_text, events or None,
            started))
        if any(entry[2] for entry in packed):
            # The result holds refs. The caller borrows them only after reading it, and
            # this process drops its own refs right after this call: reply once the
            # scheduler has applied the result (which holds the refs), never before.
            asyncio.run_coroutine_threadsafe(self._reply_after_scheduler(comm, direct),
                                             self.loop)
        elif call.mode == STREAMING:
            # The values went to the scheduler, which hands them to the caller: the
            # caller learns how many there are only once they are on their way.
            self.loop.call_soon_threadsafe(self._send_after_flush, comm, direct)
        elif threading.get_ident() == self.calls.thread.ident:
            _send(comm, direct)
        else:
            self.calls.loop.call_soon_threadsafe(_send, comm, direct)

    async def _reply_after_scheduler(self, comm, direct: list) -> None:
        """Main loop: send what is queued for the scheduler (the ``ActorCallDone``
        first), wait until the scheduler has handled it (a ``Ping`` is answered in
        order), then reply to the caller."""
        self.runtime.flush()
        try:
            await self.comm.request(msg.Ping())
        except Exception:       # the scheduler is gone: the caller learns it there too
            return
        self.calls.loop.call_soon_threadsafe(_send, comm, direct)

    def _send_after_flush(self, comm, direct: list) -> None:
        """Main loop: send what this process queued for the scheduler, then ``direct``
        to the caller."""
        self.runtime.flush()
        self.calls.loop.call_soon_threadsafe(_send, comm, direct)

    async def _exit(self) -> None:
        """Main loop: flush the replies to callers and the bookkeeping to the scheduler,
        then stop. Calls still unread fail in their callers, who ask the scheduler."""
        await asyncio.sleep(0)          # let the outcome be queued first
        await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(
            self._close_callers(), self.calls.loop))
        self.runtime.flush()
        await self.comm.close()
        self.stop()

    async def _close_callers(self) -> None:
        """Callers' loop: take no more calls; send what is queued, then close."""
        self.server.stop()
        await asyncio.gather(*(comm.close(timeout=5.0) for comm in list(self._callers)),
                             return_exceptions=True)


def _send(comm, messages: list) -> None:
    if not comm.closed:
        comm.send_many(messages)


# -- dispatchers: all called on the callers' loop ---------------------------------------

class _Inline:
    """One call at a time, run on the callers' loop as it arrives, in each caller's order.

    A call whose ref arguments are not ready yet waits (with the later calls of the same
    caller) without blocking the actor: calls of other callers go on, so a call that
    waits for a task which itself calls this actor cannot deadlock it.
    """

    def __init__(self, process: ActorProcess):
        self._process = process
        #: Caller connection -> its calls waiting behind one whose arguments are pending.
        self._waiting: dict = {}

    def submit(self, call, comm) -> None:
        queue = self._waiting.get(comm)
        if queue is not None:
            queue.append(call)
            return
        pending = self._pending_deps(call)
        if not pending:
            self._process.run_call(call, comm)
        else:
            self._waiting[comm] = collections.deque([call])
            self._wait(comm, pending)

    def _pending_deps(self, call) -> list[bytes]:
        return self._process.runtime.missing_locally(
            [d[0] for d in call.deps if len(d) == 1])

    def _wait(self, comm, pending: list[bytes]) -> None:
        runtime = self._process.runtime
        refs = [ObjectRef._new(i) for i in pending]
        futures = [asyncio.wrap_future(runtime.future(ref)) for ref in refs]

        async def resume():
            await asyncio.gather(*futures, return_exceptions=True)
            self._run_waiting(comm)
            del refs[:]             # held until the calls ran, so the values stayed local
        asyncio.ensure_future(resume())

    def _run_waiting(self, comm) -> None:
        queue = self._waiting[comm]
        while queue:
            call = queue[0]
            pending = self._pending_deps(call)
            if pending:
                self._wait(comm, pending)
                return
            queue.popleft()
            self._process.run_call(call, comm)
        del self._waiting[comm]


class _Threaded:
    """Up to ``n`` calls at once on threads, started in arrival order."""

    def __init__(self, process: ActorProcess, n: int):
        from concurrent.futures import ThreadPoolExecutor
        self._pool = ThreadPoolExecutor(n, thread_name_prefix="graphstore-actor")
        self._process = process

    def submit(self, call, comm) -> None:
        self._pool.submit(self._process.run_call, call, comm)


class _Async:
    """Coroutines on the callers' loop, up to ``n`` at once."""

    def __init__(self, process: ActorProcess, n: int):
        self._process = process
        self._limit = asyncio.Semaphore(n)
        self._calls: dict[bytes, asyncio.Task] = {}

    def submit(self, call, comm) -> None:
        self._calls[call.call_id] = asyncio.ensure_future(self._run(call, comm))

    def cancel(self, call_id: bytes) -> None:
        task = self._calls.get(call_id)
        if task is not None:
            task.cancel()
        else:
            self._process._cancelled.add(call_id)

    async def _run(self, call, comm) -> None:
        process = self._process
        loop = asyncio.get_running_loop()
        start = time.perf_counter()
        packed = error_text = None
        admitted = False
        writer = process.writer_for(call) if call.mode else None
        partial = None
        try:
            async with self._limit:
                refused = process.admit(call, None)
                if refused is not None:
                    packed, error_text = refused
                    return
                admitted = True
                result = await self._run_method(call, comm)
                if writer is not None:
                    result = await self._drain(call, writer, result)
                elif inspect.isasyncgen(result):     # num_returns=N
                    result = [value async for value in result]
                if writer is None and inspect.isgenerator(result):
                    partial = []
                    await loop.run_in_executor(None, process.run_generator, call, result,
                                               None, partial)
                    packed = partial
                else:
                    packed = await loop.run_in_executor(None, process.results, call,
                                                        result)
        except asyncio.CancelledError:
            packed, error_text = await self._after_error(call, writer, partial,
                                                         *process._was_cancelled(call))
        except ActorExit:
            packed, error_text = process._exited(call)
        except SystemExit as exc:       # a crash: no outcome (see system_exit)
            packed = None
            process.system_exit(call, exc)
        except BaseException as exc:
            packed, error_text = await self._after_error(call, writer, partial,
                                                         *process._failed(call, exc))
        finally:
            self._calls.pop(call.call_id, None)
            if packed is not None:
                process.send_outcome(call, comm, packed, time.perf_counter() - start,
                                     error_text, ran=admitted)
            if admitted:
                process.call_ended(call.call_id)

    @staticmethod
    async def _drain(call, writer: YieldWriter, result):
        """Store what an async (or plain) generator method yields, as it yields it; a
        plain one runs in a thread, off the loop."""
        loop = asyncio.get_running_loop()
        if inspect.isasyncgen(result):
            async for value in result:
                await loop.run_in_executor(None, writer.add, value)
        elif inspect.isgenerator(result):
            done = object()
            while (value := await loop.run_in_executor(None, next, result, done)) \
                    is not done:
                await loop.run_in_executor(None, writer.add, value)
        else:
            raise not_a_generator(call.name, call.mode, result)
        return writer.result()

    async def _after_error(self, call, writer, partial, packed, text):
        return await asyncio.get_running_loop().run_in_executor(
            None, self._process.after_error, call, writer, partial, packed, text)

    async def _run_method(self, call, comm):
        """Run a method (a coroutine or not), again while it raises an error it
        retries on."""
        process = self._process
        retry = call.retry
        while True:
            if call.deps:   # loading ref arguments may block: off the loop
                method, args, kwargs = await asyncio.get_running_loop().run_in_executor(
                    None, process.prepare, call)
            else:           # no hop: coroutines start in arrival order
                method, args, kwargs = process.prepare(call)
            try:
                result = method(*args, **kwargs)
                if inspect.isawaitable(result):
                    result = await result
                return result
            except Exception as exc:
                retry = process.should_retry(call, retry, comm, exc)
                if retry is None:
                    raise


def _make_dispatcher(process: ActorProcess, cls, max_concurrency):
    is_async = any(inspect.iscoroutinefunction(member) or inspect.isasyncgenfunction(member)
                   for member in vars(cls).values())
    if is_async:
        return _Async(process, max_concurrency or ASYNC_DEFAULT_CONCURRENCY)
    if max_concurrency and max_concurrency > 1:
        return _Threaded(process, max_concurrency)
    return _Inline(process)


# -- main -------------------------------------------------------------------------------

def main() -> int:
    line = sys.stdin.readline()        # a pooled process waits here for its actor
    if not line:
        return 0
    spec = json.loads(line)
    # The actor's own variables, set before its class (and what it imports) is loaded.
    os.environ.update(spec.get("env") or {})
    apply_placement(spec)          # its working_dir and py_modules, if any
    log_dir = spec.get("log_dir")
    setup_logging(os.environ.get("GRAPHSTORE_LOG_LEVEL", "INFO"), None,
                  os.path.join(log_dir, logs.actor_log_name(os.getpid())) if log_dir
                  else None)
    loop = new_event_loop()
    asyncio.set_event_loop(loop)
    process = ActorProcess(spec)
    # From here the worker that started this process may die (a task's crash) without
    # taking the actor along: the process ends with its scheduler connection, or when
    # the scheduler or that worker stops it.
    watch_parent_pipe(lambda: logger.info("the worker that started this actor is gone; "
                                          "the actor goes on"))

    async def run():
        try:
            await process.start()
        except Exception as exc:
            logger.error("actor process failed to start: %s", exc)
            process.stop()
        await process.stopped.wait()
    try:
        loop.run_until_complete(run())
        if process._exit_started:      # exit_actor(): an intended exit runs atexit
            atexit._run_exitfuncs()     # handlers, as in Ray
    finally:
        # Threads may still run user code: leave without waiting for them.
        os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
