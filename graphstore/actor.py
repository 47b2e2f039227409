"""Actors: ``@graphstore.remote`` on a class, handles, method calls, and their controls.

``Actor.remote(...)`` returns an ``ActorHandle`` at once; ``handle.method.remote(...)``
returns ``ObjectRef``s at once. A handle made by ``.remote()`` carries a ref to the actor's
creation object, so it and its copies passed to tasks and other actors keep the actor
alive (and so do calls not finished yet), as in Ray. A handle from ``get_actor`` (or from
``get_if_exists=True`` finding an actor) carries none: it does not keep the actor alive.
Detached actors live on without handles until killed.
"""
from __future__ import annotations

import inspect

from graphstore import session
from graphstore.core import protocol as msg
from graphstore.core.comm import RemoteCallError
from graphstore.core.generators import STREAMING, check_generator_mode, returns_mode
from graphstore.core.object_ref import ObjectRef
from graphstore.core.serialization import restore_filename, source_filename
from graphstore.exceptions import ActorExit
from graphstore.options import (METHOD_OPTIONS, actor_options_for_wire,
                                validate_actor_options, validate_options)
from graphstore.runtime import FunctionDescriptor, ObjectRefGenerator
from graphstore.runtime.context import installed



def exit_actor() -> None:
    """End the actor from inside one of its methods (no restart). From this moment no
    call of the actor starts; the current call's result and those of the calls queued
    behind it are ``ActorDiedError``s naming ``exit_actor``."""
    runtime = installed()
    request_exit = getattr(getattr(runtime, "role", None), "request_exit", None)
    if request_exit is None:
        raise TypeError("exit_actor() ends the actor whose method calls it, and was called "
                        "outside an actor; use graphstore.kill(handle) to end an actor "
                        "from outside")
    request_exit()
    raise ActorExit()


def method(*, num_returns: int | str = 1):
    """``@graphstore.method(num_returns=2)`` on an actor method sets its default."""
    validate_options({"num_returns": num_returns}, METHOD_OPTIONS)

    def mark(fn):
        check_generator_mode(num_returns, _is_generator(fn),
                             getattr(fn, "__qualname__", "the method"))
        fn.__graphstore_num_returns__ = num_returns
        return fn
    return mark


def _is_generator(fn) -> bool:
    return inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn)


def _method_table(cls) -> dict[str, int | str]:
    """Public methods of ``cls`` (and its bases) -> default num_returns (generators
    stream their values unless told otherwise, as in Ray)."""
    table = {}
    for name, member in inspect.getmembers(cls):
        if name.startswith("__") and name != "__call__":
            continue
        if inspect.isfunction(member) or inspect.ismethoddescriptor(member) \
                or inspect.iscoroutinefunction(member):
            default = "streaming" if _is_generator(member) else 1
            table[name] = getattr(member, "__graphstore_num_returns__", default)
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
        # ``info`` names an existing actor for ``get_if_exists``: like get_actor's, that
        # handle does not keep the actor alive.
        return ActorHandle._from_info(info, owned=not info[5])

    def __reduce__(self):
        # As for remote functions: keep the methods' file name for tracebacks.
        return (_unpickle_actor_class, (self._cls, self._options, source_filename(self._cls)))


def _unpickle_actor_class(cls, options: dict, filename) -> ActorClass:
    restore_filename(cls, filename)
    return ActorClass(cls, options)


class _ActorClassOptions:
    __slots__ = ("_actor_class", "_options")

    def __init__(self, actor_class: ActorClass, options: dict):
        self._actor_class = actor_class
        self._options = options

    def remote(self, *args, **kwargs) -> "ActorHandle":
        return self._actor_class._create(self._options, args, kwargs)

    def __reduce__(self):
        return (_ActorClassOptions, (self._actor_class, self._options))


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
    def _from_info(cls, info: list, owned: bool = True) -> "ActorHandle":
        """``owned``: a handle of the actor's creator (holds a ref to the actor)."""
        actor_id, creation_id, class_name, methods, retries = info[:5]
        return cls(actor_id, ObjectRef._new(creation_id) if owned else None, class_name,
                   methods, retries)

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

    def __reduce__(self):
        # The class itself is the module-level callable: cloudpickle pickles it by
        # reference, so a closure over a method pickles like one over its handle.
        return (ActorMethod, (self._handle, self._name, self._options))

    def remote(self, *args, **kwargs):
        handle = self._handle
        runtime = session.runtime_or_auto_init()
        count = self._options.get("num_returns", 1)
        mode = 0
        if type(count) is not int:          # "streaming" or "dynamic": one ref back
            mode, count = returns_mode(count)
        name = self._options.get("name") or f"{handle._class_name}.{self._name}"
        refs = runtime.submitter.call_actor(handle._actor_id, self._name, name, args, kwargs,
                                            count, handle._retries, mode)
        if count == 1:
            return ObjectRefGenerator(refs[0], runtime) if mode == STREAMING else refs[0]
        return refs


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
    return ActorHandle._from_info(info, owned=False)


def kill(handle: ActorHandle, *, no_restart: bool = True) -> None:
    """Kill the actor's process now. Pending and later calls fail with
    ``ActorDiedError``, unless ``no_restart=False`` and it has restarts left."""
    if not isinstance(handle, ActorHandle):
        raise ValueError(f"kill() only supported for actors (an ActorHandle). For tasks, "
                         f"try cancel(). Got: {type(handle)}.")
    session.get_runtime().send_from_any_thread(msg.KillActor(handle._actor_id,
                                                            bool(no_restart)))
