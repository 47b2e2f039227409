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
from typing import Any, Callable, Generic, TypeVar

from graphstore import notebook_repr, session
from graphstore.core import protocol as msg
from graphstore.core.call_signature import CallSignature, Unchecked
from graphstore.core import notebook_views
from graphstore.core.comm import RemoteCallError
from graphstore.core.generators import STREAMING, check_generator_mode, returns_mode
from graphstore.core.object_ref import ObjectRef
from graphstore.core.serialization import restore_filename, source_filename
from graphstore.exceptions import ActorExit
from graphstore.options import (METHOD_OPTIONS, actor_options_for_wire,
                                decorator_usage_error, pack_retry_exceptions, packages_of,
                                validate_actor_options, validate_options)
from graphstore.runtime import FunctionDescriptor, ObjectRefGenerator
from graphstore.runtime.context import installed

#: The user's class behind an actor (``ActorClass[C]``, ``ActorHandle[C]``).
C = TypeVar("C")
_F = TypeVar("_F", bound=Callable[..., Any])

#: ``max_task_retries=-1``: retry for as long as the actor restarts.
_INFINITE_RETRIES = 2**31 - 1
#: What ``@graphstore.method`` takes (``name`` is per call, in ``.options()``).
_METHOD_DECORATOR_OPTIONS = tuple(k for k in METHOD_OPTIONS if k != "name")


def exit_actor() -> None:
    """End the actor from inside one of its methods, with no restart.

    From this moment no call of the actor starts; the current call's result and those of
    the calls queued behind it are ``ActorDiedError``s naming ``exit_actor``. Works in
    plain, threaded and async actors.

    Raises:
        ActorExit: always, inside an actor: it unwinds the calling method (Ray's
            ``AsyncioActorExit``); do not catch it.
        TypeError: called outside an actor (use ``graphstore.kill(handle)`` from outside).
    """
    runtime = installed()
    request_exit = getattr(getattr(runtime, "role", None), "request_exit", None)
    if request_exit is None:
        raise TypeError("exit_actor() ends the actor whose method calls it, and was called "
                        "outside an actor; use graphstore.kill(handle) to end an actor "
                        "from outside")
    request_exit()
    raise ActorExit()


def method(*args: Any, **options: Any) -> Callable[[_F], _F]:
    """Set an actor method's defaults: ``@graphstore.method(num_returns=2)`` above its
    ``def``.

    ``max_task_retries`` overrides the actor's; ``handle.method.options(...)`` overrides
    these for one call. See [methods and their options](../actors.md#methods-and-their-options).

    Args:
        *args: none: ``@method`` takes keywords only.
        **options: ``num_returns`` (an int, or ``"streaming"`` / ``"dynamic"`` on a
            generator method, which is ``"streaming"`` unless given),
            ``max_task_retries`` and ``retry_exceptions`` (``True`` or a list of exception
            classes).

    Returns:
        A decorator that marks the method with these options and returns it unchanged.

    Raises:
        RemoteUsageError: ``@method`` with no options or with positional arguments (a
            ``TypeError`` and an ``AssertionError``, as Ray raises).
        ValueError: an unknown option or a value of the wrong kind, or a generator mode
            on a method that does not ``yield``.
    """
    if args or not options:
        raise decorator_usage_error("@graphstore.method", _METHOD_DECORATOR_OPTIONS)
    validate_options(options, _METHOD_DECORATOR_OPTIONS)

    def mark(fn: _F) -> _F:
        target = fn.__func__ if isinstance(fn, (staticmethod, classmethod)) else fn
        if "num_returns" in options:
            check_generator_mode(options["num_returns"], _is_generator(target),
                                 getattr(target, "__qualname__", "the method"))
        setattr(target, "__graphstore_method_options__", dict(options))
        return fn
    return mark


def _is_generator(fn: Callable[..., Any]) -> bool:
    return inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn)


def _method_table(cls: type) -> dict[str, list[Any]]:
    """Public methods of ``cls`` (and its bases), also static and class methods, ->
    ``[num_returns, max_task_retries or None, packed retry_exceptions, parameters]``: what
    a handle needs, in any process, to make and check calls. Generators stream their
    values unless told otherwise, as in Ray."""
    table: dict[str, list[Any]] = {}
    for name in dir(cls):
        if name.startswith("__") and name != "__call__":
            continue
        try:
            member = inspect.getattr_static(cls, name)
        except AttributeError:
            continue
        if isinstance(member, staticmethod):
            fn, skip_first = member.__func__, False
        elif isinstance(member, classmethod):     # ``cls`` is bound: skip it
            fn, skip_first = member.__func__, True
        elif inspect.isfunction(member) or inspect.ismethoddescriptor(member):
            fn, skip_first = member, True
        else:
            continue
        options = getattr(fn, "__graphstore_method_options__", {})
        signature = CallSignature.of(fn, f"{cls.__name__}.{name}", skip_first)
        default = "streaming" if _is_generator(fn) else 1
        table[name] = [options.get("num_returns", default), options.get("max_task_retries"),
                       pack_retry_exceptions(options.get("retry_exceptions")),
                       signature.params]
    return table


class ActorClass(Generic[C]):
    """A class made remote with ``@graphstore.remote``: its instances live in processes of
    their own. Create one with ``.remote()``.

    Attributes of the user's class (constants, static and class methods) are reachable
    through it, as in Ray: ``Actor.CONSTANT``, ``Actor.factory()``. Calling it directly
    (``Actor()``) raises ``TypeError``. It is picklable, so tasks can create actors of it.
    """

    def __init__(self, cls: type[C], options: dict[str, Any]) -> None:
        self._cls = cls
        self._options = validate_actor_options(dict(options))
        self._descriptor: FunctionDescriptor | None = None
        #: (method table, constructor signature), made at the first use: a class being
        #: unpickled is still empty while its methods' globals, which may name this
        #: actor class, are rebuilt.
        self._metadata: tuple[dict[str, list[Any]], CallSignature | Unchecked] | None = None
        self.__name__ = cls.__name__
        self.__qualname__ = cls.__qualname__
        self.__doc__ = cls.__doc__

    def __getattr__(self, name: str) -> Any:
        try:
            cls = self.__dict__["_cls"]
        except KeyError:            # not built yet (unpickling)
            raise AttributeError(name) from None
        return getattr(cls, name)

    def __dir__(self) -> list[str]:
        return sorted(set(object.__dir__(self)) | set(dir(self._cls)))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(f"actor class {self._cls.__qualname__} cannot be instantiated "
                        f"directly; use {self._cls.__name__}.remote(...)")

    def options(self, **options: Any) -> "_ActorClassOptions[C]":
        """The actor class with options overriding the decorator's, for the next ``.remote()``.

        Args:
            **options: any of ``remote``'s actor options (``num_cpus``, ``num_gpus``,
                ``resources``, ``max_restarts``, ``max_task_retries``, ``max_concurrency``,
                ``name``, ``namespace``, ``lifetime``, ``scheduling_strategy``,
                ``runtime_env``), plus ``get_if_exists=True`` with ``name``: return the live
                actor of that name instead of starting another.

        Returns:
            An object whose ``.remote(*args, **kwargs)`` starts the actor and returns its
            ``ActorHandle``.

        Raises:
            ValueError: an unknown option or a value of the wrong kind.
        """
        merged = dict(self._options)
        merged.update(validate_actor_options(options))
        return _ActorClassOptions(self, merged)

    def remote(self, *args: Any, **kwargs: Any) -> "ActorHandle[C]":
        """Start an actor: a process of its own that runs ``__init__(*args, **kwargs)``, then its
        method calls.

        Returns at once; calls made on the handle meanwhile wait for the actor to start. Safe
        to call from several threads.

        Args:
            *args: ``__init__``'s positional arguments; top-level refs are resolved first.
            **kwargs: ``__init__``'s keyword arguments.

        Returns:
            A handle to the new actor. An anonymous actor stops once the last handle to it is
            gone; a named or ``lifetime="detached"`` one lives on.

        Raises:
            TypeError: the arguments do not fit ``__init__``'s signature.
            SerializationError: an argument cannot be pickled; names its type.
            ValueError: a named actor of that name already exists in the namespace.
        """
        return self._create(self._options, args, kwargs)

    def _methods_and_constructor(self) -> tuple[dict[str, list[Any]],
                                                CallSignature | Unchecked]:
        metadata = self._metadata
        if metadata is None:
            metadata = self._metadata = (_method_table(self._cls),
                                         CallSignature.of(self._cls, self._cls.__name__))
        return metadata

    def _create(self, options: dict[str, Any], args: tuple[Any, ...],
                kwargs: dict[str, Any]) -> "ActorHandle[C]":
        methods, constructor = self._methods_and_constructor()
        constructor.check(args, kwargs)
        if options.get("get_if_exists") and options.get("name") is None:
            raise ValueError(f"get_if_exists=True needs the actor's name: use "
                             f"{self.__name__}.options(name=..., get_if_exists=True)")
        runtime = session.runtime_or_auto_init()
        if self._descriptor is None:
            self._descriptor = FunctionDescriptor(self._cls)
        if options.get("namespace") is None and options.get("name") is not None:
            options = {**options, "namespace": runtime.namespace()}
        options = actor_options_for_wire(
            options, runtime.inherited_env_vars,
            runtime.runtime_envs.for_call(packages_of(options.get("runtime_env"))))
        info = runtime.submitter.create_actor(self._descriptor, self._cls.__name__, args, kwargs,
                                    options, methods)
        # ``info`` names an existing actor for ``get_if_exists``: like get_actor's, that
        # handle does not keep the actor alive.
        return ActorHandle._from_info(info, owned=not info[5])

    def __reduce__(self) -> tuple[Any, ...]:
        # As for remote functions: keep the methods' file name for tracebacks.
        return (_unpickle_actor_class, (self._cls, self._options, source_filename(self._cls)))


def _unpickle_actor_class(cls: type[C], options: dict[str, Any],
                          filename: str | None) -> ActorClass[C]:
    restore_filename(cls, filename)
    return ActorClass(cls, options)


class _ActorClassOptions(Generic[C]):
    """``Actor.options(...)``: the actor class with other options; ``.remote()`` makes
    an actor with them."""
    __slots__ = ("_actor_class", "_options")

    def __init__(self, actor_class: ActorClass[C], options: dict[str, Any]) -> None:
        self._actor_class = actor_class
        self._options = options

    def remote(self, *args: Any, **kwargs: Any) -> "ActorHandle[C]":
        return self._actor_class._create(self._options, args, kwargs)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_ActorClassOptions, (self._actor_class, self._options))


class _MethodSpec:
    """How to call one method: from the method table, made once per handle and name."""
    __slots__ = ("call_name", "num_returns", "max_task_retries", "retry_exceptions",
                 "signature")

    def __init__(self, class_name: str, name: str, entry: list[Any]) -> None:
        self.call_name = f"{class_name}.{name}"
        self.num_returns, self.max_task_retries, self.retry_exceptions, params = entry
        self.signature = CallSignature.from_wire(self.call_name, params)


class ActorHandle(Generic[C]):
    """A reference to an actor: ``handle.method.remote(...)`` calls one of its methods.

    Picklable: pass it to tasks and to other actors, also inside lambdas and closures. Two
    handles are equal when they name the same actor. A handle may be used from several
    threads at once; calls from one caller (process) run in the order they were made.
    """
    __slots__ = ("_actor_id", "_creation_ref", "_class_name", "_methods", "_retries",
                 "_specs", "__weakref__")

    def __init__(self, actor_id: bytes, creation_ref: ObjectRef[Any] | None,
                 class_name: str, methods: dict[str, list[Any]], retries: int) -> None:
        self._actor_id = actor_id
        self._creation_ref = creation_ref
        self._class_name = class_name
        #: Method name -> [num_returns, max_task_retries, retry_exceptions, parameters].
        self._methods = methods
        #: The actor's max_task_retries (a method's own overrides it).
        self._retries = retries
        #: Method name -> _MethodSpec, made at its first call (handles are unpickled
        #: often, and most callers call few methods).
        self._specs: dict[str, _MethodSpec] = {}

    @classmethod
    def _from_info(cls, info: list[Any], owned: bool = True) -> "ActorHandle[Any]":
        """``owned``: a handle of the actor's creator (holds a ref to the actor)."""
        actor_id, creation_id, class_name, methods, retries = info[:5]
        return cls(actor_id, ObjectRef._new(creation_id) if owned else None, class_name,
                   methods, retries)

    def __getattr__(self, name: str) -> "ActorMethod":
        methods = object.__getattribute__(self, "_methods")
        if name in methods:
            return ActorMethod(self, name, None)
        raise AttributeError(f"actor {self._class_name} has no method {name!r}")

    def __dir__(self) -> list[str]:
        return sorted(self._methods)

    def _spec(self, name: str) -> _MethodSpec:
        spec = self._specs.get(name)
        if spec is None:
            spec = self._specs[name] = _MethodSpec(self._class_name, name,
                                                   self._methods[name])
        return spec

    def __repr__(self) -> str:
        return f"ActorHandle({self._class_name}, {self._actor_id.hex()})"

    def _repr_html_(self) -> str:
        """A notebook's card: class, state, name and where the actor runs, from one
        ``DescribeActor`` request (``graphstore.core.notebook_views``)."""
        def draw() -> str:
            answer, problem = notebook_views.ask(installed(),
                                                 msg.DescribeActor(self._actor_id))
            known = {"class_name": self._class_name, "actor_id": self._actor_id.hex(),
                     "methods": list(self._methods)}
            return notebook_views.actor_html(known, answer, problem)
        return notebook_repr.never_raise(draw, self.__repr__)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ActorHandle) and other._actor_id == self._actor_id

    def __hash__(self) -> int:
        return hash(self._actor_id)

    def __reduce__(self) -> tuple[Any, ...]:
        return (ActorHandle, (self._actor_id, self._creation_ref, self._class_name,
                              self._methods, self._retries))


class ActorMethod:
    """``handle.method``: ``.remote(...)`` calls the method; ``.options(...)`` overrides its
    defaults for a call.

    Calling it directly (``handle.method()``) raises ``TypeError``. It is picklable, like its
    handle.
    """
    __slots__ = ("_handle", "_name", "_options")

    def __init__(self, handle: ActorHandle[Any], name: str,
                 options: dict[str, Any] | None) -> None:
        self._handle = handle
        self._name = name
        self._options = options

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(f"actor method {self._name} cannot be called directly; use "
                        f"{self._name}.remote(...)")

    def options(self, **options: Any) -> "ActorMethod":
        """The method with options overriding its defaults, for the calls made through the result.

        Args:
            **options: ``num_returns``, ``max_task_retries``, ``retry_exceptions`` or ``name``
                (the call's name in the task graph and the status page).

        Returns:
            A new ``ActorMethod``; this one is unchanged.

        Raises:
            ValueError: an unknown option or a value of the wrong kind.
        """
        validate_options(options, METHOD_OPTIONS)
        return ActorMethod(self._handle, self._name, {**(self._options or {}), **options})

    def __reduce__(self) -> tuple[Any, ...]:
        # The class itself is the module-level callable: cloudpickle pickles it by
        # reference, so a closure over a method pickles like one over its handle.
        return (ActorMethod, (self._handle, self._name, self._options))

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        """Call the method on the actor; returns at once.

        Calls from one caller run in the order they were made (several at once with
        ``max_concurrency`` or in an async actor). Safe to call from several threads.

        Args:
            *args: the method's positional arguments; top-level refs are resolved first.
            **kwargs: the method's keyword arguments.

        Returns:
            An ``ObjectRef`` to the result; a list of ``num_returns`` refs when it is more than
            one; an ``ObjectRefGenerator`` for a streaming generator method (one ref to a
            ``DynamicObjectRefGenerator`` for ``num_returns="dynamic"``). ``get`` of it raises
            ``ActorDiedError`` if the actor died, the method's own error if it raised.

        Raises:
            TypeError: the arguments do not fit the method's signature.
            AttributeError: raised earlier, by ``handle.method``, when the class has no such
                method.
        """
        handle = self._handle
        spec = handle._spec(self._name)
        spec.signature.check(args, kwargs)
        runtime = session.runtime_or_auto_init()
        options = self._options
        if options is None:
            n, name = spec.num_returns, spec.call_name
            retries, retry_exceptions = spec.max_task_retries, spec.retry_exceptions
        else:
            n = options.get("num_returns", spec.num_returns)
            name = options.get("name") or spec.call_name
            retries = options.get("max_task_retries", spec.max_task_retries)
            retry_exceptions = (pack_retry_exceptions(options["retry_exceptions"])
                                if "retry_exceptions" in options else spec.retry_exceptions)
        if retries is None:
            retries = handle._retries
        if retries < 0:
            retries = _INFINITE_RETRIES
        mode = 0
        if type(n) is not int:              # "streaming" or "dynamic": one ref back
            mode, n = returns_mode(n)
        refs = runtime.submitter.call_actor(handle._actor_id, self._name, name, args, kwargs,
                                            n, retries, retry_exceptions, mode)
        if n == 1:
            return ObjectRefGenerator(refs[0], runtime) if mode == STREAMING else refs[0]
        return refs


def get_actor(name: str, namespace: str | None = None) -> ActorHandle[Any]:
    """A handle to the live actor named ``name``, from any driver, task or actor.

    The handle does not keep the actor alive (as in Ray).

    Args:
        name: the name given with ``.options(name=...)``.
        namespace: where to look; default: this job's namespace (``init(namespace=)``).

    Returns:
        A handle to the actor.

    Raises:
        ValueError: ``name`` is not a non-empty string, or no live actor has that name
            in the namespace; names it.
    """
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


def kill(handle: ActorHandle[Any], *, no_restart: bool = True) -> None:
    """Kill the actor's process now, also while it is starting.

    Pending and later calls fail with ``ActorDiedError``, unless ``no_restart=False`` and
    it has restarts left: then its process is killed and restarted. Safe to call from any
    thread.

    Args:
        handle: the actor's handle.
        no_restart: ``False``: restart the actor if it has ``max_restarts`` left.

    Raises:
        ValueError: ``handle`` is not an ``ActorHandle`` (as in Ray).
        GraphstoreError: this process is not connected.
    """
    if not isinstance(handle, ActorHandle):
        raise ValueError(f"kill() only supported for actors (an ActorHandle). For tasks, "
                         f"try cancel(). Got: {type(handle)}.")
    session.get_runtime().send_from_any_thread(msg.KillActor(handle._actor_id,
                                                            bool(no_restart)))
