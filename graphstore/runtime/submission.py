"""Submitting work: tasks, actors and actor method calls, from any thread.

A remote function's code is pickled once (``FunctionDescriptor``) and registered with the
scheduler once per process; a call packs its arguments (refs as dependencies), names its
results, and queues its message in order with the process's ref events. An actor call
goes straight to the actor's process (``actor_client``), and the scheduler hears of it.
"""
from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from graphstore.core import protocol as msg
from graphstore.core.comm import RemoteCallError
from graphstore.core.generators import STREAMING
from graphstore.core.object_ref import ObjectRef, new_id
from graphstore.core.serialization import dumps_function
from graphstore.core.task_args import pack_args
from graphstore.runtime.actor_client import ActorSend
from graphstore.runtime.context import current_task

if TYPE_CHECKING:
    from graphstore.runtime.runtime import Runtime


class FunctionDescriptor:
    """A remote function's pickled code, made once and named by its hash."""
    __slots__ = ("payload", "hash", "name")

    def __init__(self, fn):
        self.payload = dumps_function(fn)
        self.hash = hashlib.blake2b(self.payload, digest_size=16).digest()
        self.name = getattr(fn, "__name__", "task")


class Submitter:
    """Turns calls into ``SubmitTask``, ``CreateActor`` and ``ActorCall`` messages.

    Thread-safe: any user thread may submit; the set of registered functions only grows
    (a race registers a function twice, which the scheduler accepts)."""

    def __init__(self, runtime: "Runtime"):
        self._runtime = runtime
        #: Queues a message in order with the process's ref events (any thread).
        self._send = runtime.send_from_any_thread
        self._registered_functions: set[bytes] = set()

    def submit(self, descriptor: FunctionDescriptor, args: tuple, kwargs: dict,
               num_returns: int, num_cpus: float, resources: dict | None,
               max_retries: int, name: str | None,
               retry_exceptions=None, mode: int = 0,
               extra: dict | None = None) -> list[ObjectRef]:
        """``mode``: how a generator returns (``SubmitTask.mode``); ``extra``: the rarely
        used options (``SubmitTask.extra``); the variables this process's tasks inherit
        are merged under the task's own."""
        self._runtime.check_connected()
        self._register(descriptor)
        task_name = name or descriptor.name
        payload, deps, nested = pack_args(task_name, args, kwargs, self._runtime.split_bytes)
        task_id = new_id()
        returns = [new_id() for _ in range(num_returns)]
        parent = getattr(current_task, "task", None)
        inherited = self._runtime.inherited_env_vars
        if inherited:
            own = extra.get("env_vars") if extra else None
            extra = {**(extra or {}), "env_vars": {**inherited, **own} if own else inherited}
        envs = self._runtime.runtime_envs
        if envs.inherited or (extra and "runtime_env" in extra):
            # Packages as the call gave them: uploaded (once), merged over inherited.
            packages = envs.for_call(extra.get("runtime_env") if extra else None)
            extra = {k: v for k, v in (extra or {}).items() if k != "runtime_env"}
            if packages:
                extra["runtime_env"] = packages
            extra = extra or None
        streaming = mode == STREAMING
        if streaming:
            self._runtime.streams.open(returns[0])
        self._send(msg.SubmitTask(task_id, descriptor.hash, task_name, payload, deps, nested,
                                  returns, num_cpus, resources, max_retries,
                                  parent[0] if parent else None, retry_exceptions, mode,
                                  extra))
        refs = [ObjectRef._new(object_id) for object_id in returns]
        if streaming:              # its end (how many values) ends the iteration
            self._send(msg.WantObjects(returns))
        return refs

    def create_actor(self, descriptor: FunctionDescriptor, class_name: str, args: tuple,
                     kwargs: dict, options: dict, methods: dict) -> list:
        """Ask for an actor; returns [actor id, creation id, class name, methods,
        max_task_retries, existing] (``existing``: an actor found by ``get_if_exists``,
        which this process did not create)."""
        self._runtime.check_connected()
        self._register(descriptor)
        payload, deps, nested = pack_args(f"{class_name}.__init__", args, kwargs,
                                          self._runtime.split_bytes)
        actor_id, creation_id = new_id(), new_id()
        parent = getattr(current_task, "task", None)
        if parent is not None:        # its job is that of the task creating it
            options = {**options, "parent_task": parent[0]}
        m = msg.CreateActor(actor_id, creation_id, descriptor.hash, class_name, payload,
                            deps, nested, options, methods)
        if options.get("name") is not None:   # the scheduler checks the name first
            try:
                info = self._runtime.request(m)
                return [*info[:5], info[0] != actor_id]
            except RemoteCallError as exc:
                text = str(exc)
                if text.startswith("ValueError: "):
                    raise ValueError(text[len("ValueError: "):]) from None
                raise
        self._send(m)
        return [actor_id, creation_id, class_name, methods,
                int(options.get("max_task_retries", 0)), False]

    def call_actor(self, actor_id: bytes, method: str, name: str, args: tuple,
                   kwargs: dict, num_returns: int, retries: int,
                   retry_exceptions=None, mode: int = 0) -> list[ObjectRef]:
        """``retries``: how often the call may run again (its actor's process died,
        or it raised one of ``retry_exceptions``, packed as for tasks); ``mode``: how a
        generator method returns (``ActorCall.mode``)."""
        payload, dep_ids, nested = pack_args(name, args, kwargs, self._runtime.split_bytes)
        deps = []
        if dep_ids:
            local = self._runtime.local_entries(dep_ids)
            for object_id, known in zip(dep_ids, local):
                deps.append([object_id] if known is None else [object_id, *known])
        call_id = new_id()
        returns = [new_id() for _ in range(num_returns)]
        if mode == STREAMING:
            self._runtime.streams.open(returns[0])
        self._runtime.expect_direct(returns)
        self._send(msg.ActorCallSubmitted(call_id, actor_id, name, dep_ids, nested, returns))
        call = msg.ActorCall(call_id, method, name, payload, deps, returns,
                             self._runtime.peer_id, mode,
                             [retries, retry_exceptions] if retry_exceptions is not None
                             and retries > 0 else None)
        if not self._runtime.actor_client.send_now(actor_id, call, retries):
            self._send(ActorSend(actor_id, call, retries))   # the loop sends it, in order
        return [ObjectRef._new(object_id) for object_id in returns]

    def cancel(self, ref: ObjectRef, force: bool, recursive: bool) -> None:
        ref = getattr(ref, "_generator_ref", ref)   # an ObjectRefGenerator: its task
        if not isinstance(ref, ObjectRef):
            raise TypeError(f"cancel() only supported for object refs (ObjectRef). For "
                            f"actors, try kill(). Got: {type(ref)}.")
        m = msg.CancelTask(ref._id, bool(force), bool(recursive))
        if not force:
            self._send(m)
            return
        # Only the scheduler knows whether an actor call produces the ref, which
        # force=True must refuse (as Ray does): ask it, and wait for its answer.
        try:
            self._runtime.request(m)
        except RemoteCallError as exc:
            text = str(exc)
            if text.startswith("ValueError: "):
                raise ValueError(text[len("ValueError: "):]) from None
            raise

    def _register(self, descriptor: FunctionDescriptor) -> None:
        if descriptor.hash not in self._registered_functions:
            self._registered_functions.add(descriptor.hash)
            self._send(msg.RegisterFunction(descriptor.hash, descriptor.payload))
