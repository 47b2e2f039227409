"""Actors: ``@graphstore.remote`` on a class, handles, method calls, and their controls.

``Actor.remote(...)`` returns an ``ActorHandle`` at once; ``handle.method.remote(...)``
returns ``ObjectRef``s at once. A handle carries a ref to the actor's creation object, so
passing handles to tasks and other actors keeps the actor alive exactly as long as some
handle exists (named and detached actors live on without handles).
"""
from __future__ import annotations

import inspect

from graphstore import session
from graphstore.core import protocol as msg
from graphstore.core.comm import RemoteCallError
from graphstore.core.object_ref import ObjectRef
from graphstore.exceptions import ActorExit
from graphstore.options import (METHOD_OPTIONS, actor_options_for_wire,
                                validate_actor_options, validate_options)
from graphstore.runtime import FunctionDescriptor



def exit_actor() -> None:
    """End the actor from inside one of its methods (no restart). The current call's
    result is an ``ActorDiedError``; later calls fail the same way."""
    raise ActorExit()


def method(*, num_returns: int = 1):
    """``@graphstore.method(num_returns=2)`` on an actor method sets its default."""
    validate_options({"num_returns": num_returns}, METHOD_OPTIONS)

    def mark(fn):
        fn.__graphstore_num_returns__ = num_returns
        return fn
    return mark


def _method_table(cls) -> dict[str, int]:
    """Public methods of ``cls`` (and its bases) -> default num_returns."""
    table = {}
    for name, member in inspect.getmembers(cls):
        if name.startswith("__") and name != "__call__":
            continue
        if inspect.isfunction(member) or inspect.ismethoddescriptor(member) \
                or inspect.iscoroutinefunction(member):
            table[name] = getattr(member, "__graphstore_num_returns__", 1)
    return table


class ActorClass:
    """A class whose instances live in processes of their own. Use ``.remote()``."""

    def __init__(self, cls, options: dict):
        self._cls = cls
        self._options = validate_actor_options(dict(options))
        self._descriptor: FunctionDescriptor | None = None
        self._methods = _method_table(cls)
        self.__name__ = cls.__name__
        self.__qualname__ = cls.__qualname__
        self.__doc__ = cls.__doc__

    def __call__(self, *args, **kwargs):
        raise TypeError(f"actor class {self._cls.__qualname__} cannot be instantiated "
                        f"directly; use {self._cls.__name__}.remote(...)")

    def options(self, **options) -> "_ActorClassOptions":
        merged = dict(self._options)
        merged.update(validate_actor_options(options))
        return _ActorClassOptions(self, merged)

    def remote(self, *args, **kwargs) -> "ActorHandle":
        return self._create(self._options, args, kwargs)

    def _create(self, options: dict, args: tuple, kwargs: dict) -> "ActorHandle":
        runtime = session.runtime_or_auto_init()
        if self._descriptor is None:
            self._descriptor = FunctionDescriptor(self._cls)
        if options.get("namespace") is None and options.get("name") is not None:
            options = {**options, "namespace": runtime.namespace()}
        options = actor_options_for_wire(options, runtime.inherited_env_vars)
        info = runtime.submitter.create_actor(self._descriptor, self._cls.__name__, args, kwargs,
                                    options, self._methods)
        return ActorHandle._from_info(info)

    def __reduce__(self):
        return (ActorClass, (self._cls, self._options))


class _ActorClassOptions:
    __slots__ = ("_actor_class", "_options")

    def __init__(self, actor_class: ActorClass, options: dict):
        self._actor_class = actor_class
        self._options = options

    def remote(self, *args, **kwargs) -> "ActorHandle":
        return self._actor_class._create(self._options, args, kwargs)


class ActorHandle:
    """A reference to an actor. Picklable: pass it to tasks and to other actors."""
    __slots__ = ("_actor_id", "_creation_ref", "_class_name", "_methods", "_retries",
                 "__weakref__")

    def __init__(self, actor_id: bytes, creation_ref, class_name: str, methods: dict,
                 retries: int):
        self._actor_id = actor_id
        self._creation_ref = creation_ref
        self._class_name = class_name
        self._methods = methods
        self._retries = retries

    @classmethod
    def _from_info(cls, info: list) -> "ActorHandle":
        actor_id, creation_id, class_name, methods, retries = info
        return cls(actor_id, ObjectRef._new(creation_id), class_name, methods, retries)

    def __getattr__(self, name: str) -> "ActorMethod":
        methods = object.__getattribute__(self, "_methods")
        if name in methods:
            return ActorMethod(self, name, {"num_returns": methods[name]})
        raise AttributeError(f"actor {self._class_name} has no method {name!r}")

    def __repr__(self) -> str:
        return f"ActorHandle({self._class_name}, {self._actor_id.hex()})"

    def __eq__(self, other) -> bool:
        return isinstance(other, ActorHandle) and other._actor_id == self._actor_id

    def __hash__(self) -> int:
        return hash(self._actor_id)

    def __reduce__(self):
        return (ActorHandle, (self._actor_id, self._creation_ref, self._class_name,
                              self._methods, self._retries))


class ActorMethod:
    __slots__ = ("_handle", "_name", "_options")

    def __init__(self, handle: ActorHandle, name: str, options: dict):
        self._handle = handle
        self._name = name
        self._options = options

    def __call__(self, *args, **kwargs):
        raise TypeError(f"actor method {self._name} cannot be called directly; use "
                        f"{self._name}.remote(...)")

    def options(self, **options) -> "ActorMethod":
        validate_options(options, METHOD_OPTIONS)
        return ActorMethod(self._handle, self._name, {**self._options, **options})

    def remote(self, *args, **kwargs):
        handle = self._handle
        runtime = session.runtime_or_auto_init()
        n = self._options.get("num_returns", 1)
        name = self._options.get("name") or f"{handle._class_name}.{self._name}"
        refs = runtime.submitter.call_actor(handle._actor_id, self._name, name, args, kwargs, n,
                                  handle._retries)
        return refs[0] if n == 1 else refs


def get_actor(name: str, namespace: str | None = None) -> ActorHandle:
    """A handle to the live actor named ``name``; ``ValueError`` if there is none."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"an actor name is a non-empty string, got {name!r}")
    runtime = session.runtime_or_auto_init()
    try:
        info = runtime.request(msg.GetNamedActor(name, namespace or runtime.namespace()))
    except RemoteCallError as exc:
        text = str(exc)
        if text.startswith("ValueError: "):
            raise ValueError(text[len("ValueError: "):]) from None
        raise
    return ActorHandle._from_info(info)


def kill(handle: ActorHandle, *, no_restart: bool = True) -> None:
    """Kill the actor's process now. Pending and later calls fail with
    ``ActorDiedError``, unless ``no_restart=False`` and it has restarts left."""
    if not isinstance(handle, ActorHandle):
        raise TypeError(f"kill() takes an ActorHandle, not {type(handle).__name__}")
    session.get_runtime().send_from_any_thread(msg.KillActor(handle._actor_id,
                                                            bool(no_restart)))
