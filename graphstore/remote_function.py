"""``@graphstore.remote``: functions become ``RemoteFunction``s here (``f.remote(...)``,
``f.options(...)``); classes become actors (``actor.ActorClass``)."""
from __future__ import annotations

import functools
import inspect
from typing import (Any, Callable, Generic, Iterator, ParamSpec, Protocol, TypeVar,
                    overload)

from graphstore import session
from graphstore.actor import ActorClass
from graphstore.core.call_signature import CallSignature, Unchecked
from graphstore.core.generators import STREAMING, check_generator_mode, returns_mode
from graphstore.core.object_ref import ObjectRef
from graphstore.core.serialization import restore_filename, source_filename
from graphstore.options import (ACTOR_OPTIONS, TASK_OPTIONS, decorator_usage_error,
                                env_vars_of, pack_retry_exceptions, packages_of,
                                placement_options, validate_options)
from graphstore.runtime import FunctionDescriptor, ObjectRefGenerator

#: The parameters of a remote function, as ``.remote()`` takes them.
P = ParamSpec("P")
#: What a remote function returns; ``.remote()`` gives an ``ObjectRef[R]``.
R = TypeVar("R")
#: What a generator function yields; ``.remote()`` gives an ``ObjectRefGenerator[Y]``.
Y = TypeVar("Y")
Y_co = TypeVar("Y_co", covariant=True)
#: A class made an actor.
C = TypeVar("C")


def _resolve(options: dict[str, Any], default_returns: int | str = 1) -> tuple[Any, ...]:
    """What a call with ``options`` submits, worked out once per options dict:
    (num_returns, generator mode, num_cpus, resources, max_retries or None, name, packed
    retry_exceptions, extra or None)."""
    num_cpus, resources, strategy = placement_options(options)
    extra: dict[str, Any] = {}
    env_vars = env_vars_of(options.get("runtime_env"))
    if env_vars:
        extra["env_vars"] = env_vars
    packages = packages_of(options.get("runtime_env"))
    if packages:                # as given: uploaded at the first call (Submitter)
        extra["runtime_env"] = packages
    if options.get("max_calls"):
        extra["max_calls"] = options["max_calls"]
    if strategy is not None:
        extra["strategy"] = strategy
    count = options.get("num_returns", default_returns)
    mode = 0
    if type(count) is not int:          # "streaming" or "dynamic": one ref back
        mode, count = returns_mode(count)
    return (count, mode, float(1 if num_cpus is None else num_cpus),
            resources, options.get("max_retries"), options.get("name"),
            pack_retry_exceptions(options.get("retry_exceptions")), extra or None)


class RemoteCall(Protocol[P]):
    """A remote function whose results the type checker cannot know: one with
    ``num_returns`` set (a list of refs, or a generator of them). ``.remote()`` is
    ``Any``; its arguments are still checked."""

    def remote(self, *args: P.args, **kwargs: P.kwargs) -> Any: ...


class RemoteGeneratorFunction(Protocol[P, Y_co]):
    """What ``@remote`` makes of a generator function (``-> Iterator[Y]``), for the type
    checker: a ``RemoteFunction`` whose ``.remote()`` streams, giving an
    ``ObjectRefGenerator[Y]``."""

    def remote(self, *args: P.args, **kwargs: P.kwargs) -> ObjectRefGenerator[Y_co]: ...

    @overload
    def options(self, *, num_returns: int | str, **options: Any) -> RemoteCall[P]: ...

    @overload
    def options(self, **options: Any) -> "RemoteGeneratorFunction[P, Y_co]": ...


class RemoteFunction(Generic[P, R]):
    """A function that runs as tasks on the cluster: call ``.remote()``, not the function.

    Calling it directly raises ``TypeError``. It is picklable (tasks can submit tasks of
    it); the function is pickled once and sent to each worker once.
    """

    def __init__(self, function: Callable[P, R], options: dict[str, Any]) -> None:
        self._function = function
        options = validate_options(dict(options))
        gpus = options.get("num_gpus") or (options.get("resources") or {}).get("GPU")
        if gpus and options.get("max_calls") is None:
            # As in Ray: a GPU task's process is not reused by default, so whatever the
            # task left on its GPU goes with the process.
            options["max_calls"] = 1
        self._options = options
        self._descriptor: FunctionDescriptor | None = None
        #: As in Ray, a generator function streams its values unless told otherwise.
        self._is_generator = inspect.isgeneratorfunction(function)
        self._default_returns = "streaming" if self._is_generator else 1
        check_generator_mode(self._options.get("num_returns"), self._is_generator,
                             getattr(function, "__qualname__", repr(function)))
        self._resolved = _resolve(options, self._default_returns)
        #: Made at the first call: a function being unpickled has no defaults yet.
        self._signature: CallSignature | Unchecked | None = None
        functools.update_wrapper(self, function)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            f"remote function {self._function.__qualname__} cannot be called directly; "
            f"use {self._function.__name__}.remote(...) to run it as a task")

    @overload
    def options(self, *, num_returns: int | str, **options: Any) -> RemoteCall[P]: ...

    @overload
    def options(self, **options: Any) -> "_BoundOptions[P, R]": ...

    def options(self, **options: Any) -> "_BoundOptions[P, R] | RemoteCall[P]":
        """This function with some options overridden, for the calls made through the result.

        Args:
            **options: any of ``remote``'s task options; ``num_gpus`` given here replaces
                ``resources={"GPU": n}`` given to the decorator, and the other way round.

        Returns:
            An object whose ``.remote(*args, **kwargs)`` submits a task with these options (as
            ``RemoteFunction.remote`` does); this function is unchanged.

        Raises:
            ValueError: an unknown option, a value of the wrong kind, or ``num_returns``
                ``"streaming"``/``"dynamic"`` on a function that does not ``yield``.
            TypeError: ``name`` is not a string.
        """
        merged = dict(self._options)
        merged.update(validate_options(options))
        check_generator_mode(merged.get("num_returns"), self._is_generator,
                             getattr(self._function, "__qualname__", repr(self._function)))
        # GPUs given one way override those given the other way in the defaults.
        if "num_gpus" in options and "resources" not in options:
            merged["resources"] = {k: v for k, v in (merged.get("resources") or {}).items()
                                   if k != "GPU"} or None
        elif "GPU" in (options.get("resources") or {}) and "num_gpus" not in options:
            merged.pop("num_gpus", None)
        validate_options(merged)
        return _BoundOptions(self, merged, _resolve(merged, self._default_returns))

    def remote(self, *args: P.args, **kwargs: P.kwargs) -> ObjectRef[R]:
        """Submit a task running the function with these arguments; returns at once.

        The task is placed near the objects it reads, within its resource needs, and retried
        (``max_retries``) if its worker dies. Safe to call from several threads at once.

        Args:
            *args: the function's positional arguments. Top-level refs are resolved to their
                values before the task runs; refs nested inside other objects stay refs.
            **kwargs: the function's keyword arguments, resolved likewise.

        Returns:
            An ``ObjectRef`` to the result; a list of ``num_returns`` refs when it is more than
            one; an ``ObjectRefGenerator`` for a generator function (``num_returns="streaming"``,
            the default), or one ref to a ``DynamicObjectRefGenerator`` for
            ``num_returns="dynamic"``. ``get`` of the ref raises the task's error.

        Raises:
            TypeError: the arguments do not fit the function's signature, as in Ray.
            SerializationError: an argument cannot be pickled; names its type and the
                argument.
            TaskUnschedulableError: raised by ``get`` of the result when no node can ever
                satisfy the resource request.
        """
        return self._submit(self._resolved, args, kwargs)  # type: ignore[no-any-return]

    def _submit(self, resolved: tuple[Any, ...], args: tuple[Any, ...],
                kwargs: dict[str, Any]) -> Any:
        signature = self._signature
        if signature is None:
            signature = self._signature = CallSignature.of(
                self._function, getattr(self._function, "__qualname__", "task"))
        signature.check(args, kwargs)
        runtime = session.runtime_or_auto_init()
        if self._descriptor is None:
            self._descriptor = FunctionDescriptor(self._function)
        count, mode, num_cpus, resources, max_retries, name, retry, extra = resolved
        if max_retries is None:
            max_retries = runtime.config.max_retries
        elif max_retries == -1:
            max_retries = 2**31 - 1
        refs = runtime.submitter.submit(self._descriptor, args, kwargs, count, num_cpus,
                                        resources, max_retries, name, retry, mode, extra)
        if count == 1:
            return ObjectRefGenerator(refs[0], runtime) if mode == STREAMING else refs[0]
        return refs

    def __reduce__(self) -> tuple[Any, ...]:
        # Shipped inside other code (a closure, a global of a task): cloudpickle drops
        # the function's file name, which tracebacks from where it lands need.
        return (_unpickle_remote_function,
                (self._function, self._options, source_filename(self._function)))


def _unpickle_remote_function(function: Callable[..., Any], options: dict[str, Any],
                              filename: str | None) -> RemoteFunction[..., Any]:
    restore_filename(function, filename)
    return RemoteFunction(function, options)


class _BoundOptions(Generic[P, R]):
    """``f.options(...)``: ``f`` with other options; ``.remote()`` as ``f``'s."""
    __slots__ = ("_remote_function", "_options", "_resolved")

    def __init__(self, remote_function: RemoteFunction[P, R], options: dict[str, Any],
                 resolved: tuple[Any, ...]) -> None:
        self._remote_function = remote_function
        self._options = options
        self._resolved = resolved

    def remote(self, *args: P.args, **kwargs: P.kwargs) -> ObjectRef[R]:
        return self._remote_function._submit(  # type: ignore[no-any-return]
            self._resolved, args, kwargs)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_BoundOptions, (self._remote_function, self._options, self._resolved))


class _RemoteDecorator(Protocol):
    """What ``@remote(...)`` with options returns: the decorator proper."""

    @overload
    def __call__(  # type: ignore[overload-overlap]
            self, target: type[C]) -> ActorClass[C]: ...

    @overload
    def __call__(  # type: ignore[overload-overlap]
            self, target: Callable[P, Iterator[Y]]) -> RemoteGeneratorFunction[P, Y]: ...

    @overload
    def __call__(self, target: Callable[P, R]) -> RemoteFunction[P, R]: ...


@overload
def remote(target: type[C], /) -> ActorClass[C]: ...  # type: ignore[overload-overlap]


# A function whose return type is not annotated (Any) matches both of these: mypy then
# makes the result Any, rather than take the function for a generator.
@overload
def remote(  # type: ignore[overload-overlap]
        target: Callable[P, Iterator[Y]], /) -> RemoteGeneratorFunction[P, Y]: ...


@overload
def remote(target: Callable[P, R], /) -> RemoteFunction[P, R]: ...


@overload
def remote(*, num_returns: int | str, **options: Any) -> Callable[[Any], Any]: ...


@overload
def remote(**options: Any) -> _RemoteDecorator: ...


def remote(*args: Any, **options: Any) -> Any:
    """Make a function a task or a class an actor: ``@remote`` or ``@remote(num_cpus=2)``.

    Options are checked when the decorator is applied. A function that ``yield``s streams
    its values (see [generator tasks](../generators.md)). An ``async def`` function is
    refused: tasks run plain functions; async methods belong in actors. Options that need a
    process of their own (GPUs, ``runtime_env``, ``max_calls``) run the task in a *task
    process*: see [resources, GPUs, placement and
    environments](../guide.md#resources-gpus-placement-and-environments).

    Args:
        *args: the function or class, when used as ``@remote`` without parentheses.
        **options: for a function: ``num_returns`` (1; an int, ``"streaming"`` or
            ``"dynamic"``), ``num_cpus`` (1), ``num_gpus`` (0), ``resources`` (custom
            resources, e.g. ``{"special": 1}``), ``max_retries`` (3; re-runs when its worker
            dies or to compute a lost result again; -1: for ever), ``retry_exceptions``
            (``False``; ``True`` or a list of exception classes: also re-run when it
            raises), ``name``, ``max_calls`` (0: no limit; GPU functions default to 1),
            ``scheduling_strategy`` (``"DEFAULT"``, ``"SPREAD"`` or a
            ``NodeAffinitySchedulingStrategy``) and ``runtime_env`` (``{"env_vars": {...}}``).
            For a class: ``num_cpus`` (0), ``num_gpus``, ``resources``, ``max_restarts`` (0),
            ``max_task_retries`` (0), ``max_concurrency``, ``name``, ``namespace``,
            ``lifetime`` (``"detached"`` outlives its driver), ``scheduling_strategy`` and
            ``runtime_env``.

    Returns:
        A ``RemoteFunction`` for a function, an ``ActorClass`` for a class; with options
        and no target, a decorator that makes one.

    Raises:
        RemoteUsageError: ``@remote()`` with empty parentheses or with positional
            arguments (a ``TypeError`` and an ``AssertionError``, as Ray raises).
        ValueError: an unknown option or a value of the wrong kind; an ``async def``
            function.
        TypeError: the target is neither a function nor a class.
        NotImplementedError: a ``runtime_env`` key other than ``env_vars``.
    """
    if len(args) == 1 and not options and callable(args[0]):
        return _make_remote(args[0], {})
    if args or not options:
        raise decorator_usage_error("@graphstore.remote", _ALL_OPTIONS)
    if all(key in TASK_OPTIONS for key in options):     # mistakes surface right here
        validate_options(options)
    elif not all(key in ACTOR_OPTIONS for key in options):
        unknown = [k for k in options if k not in _ALL_OPTIONS]
        if unknown:
            validate_options(options, _ALL_OPTIONS)
    return lambda target: _make_remote(target, options)


_ALL_OPTIONS = TASK_OPTIONS + tuple(k for k in ACTOR_OPTIONS if k not in TASK_OPTIONS)


def _make_remote(target: Any, options: dict[str, Any]) -> Any:
    if isinstance(target, type):
        return ActorClass(target, options)
    if not callable(target):
        raise TypeError(f"@graphstore.remote needs a function or a class, got "
                        f"{type(target).__name__}")
    if inspect.iscoroutinefunction(target) or inspect.isasyncgenfunction(target):
        raise ValueError(
            f"@graphstore.remote cannot make a task of the 'async def' function "
            f"{target.__qualname__}: a task runs a plain function. Wrap it, e.g. "
            f"'def f(...): return asyncio.run(coroutine(...))', or use it in an actor "
            f"(async methods of actors run on the actor's event loop)")
    return RemoteFunction(target, options)
