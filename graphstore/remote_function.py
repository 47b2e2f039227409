"""``@graphstore.remote``: functions become ``RemoteFunction``s here (``f.remote(...)``,
``f.options(...)``); classes become actors (``actor.ActorClass``)."""
from __future__ import annotations

import functools
import inspect
from typing import Any

from graphstore import session
from graphstore.actor import ActorClass
from graphstore.core.generators import STREAMING, check_generator_mode, returns_mode
from graphstore.core.serialization import restore_filename, source_filename
from graphstore.options import ACTOR_OPTIONS, TASK_OPTIONS, validate_options
from graphstore.runtime import FunctionDescriptor, ObjectRefGenerator

#: Packed ``retry_exceptions`` lists, by the tuple of types (pickled once).
_packed_retry: dict[tuple, bytes] = {}


def pack_retry_exceptions(value):
    """``retry_exceptions`` as the task carries it: None, True, or the pickled tuple of
    exception types (the worker, which has the exception, decides)."""
    if not value:
        return None
    if value is True:
        return True
    types = tuple(value)
    packed = _packed_retry.get(types)
    if packed is None:
        import cloudpickle
        packed = _packed_retry[types] = cloudpickle.dumps(types)
    return packed


class RemoteFunction:
    """A function that runs as tasks on the cluster. Call ``.remote()``, not the function."""

    def __init__(self, function, options: dict):
        self._function = function
        self._options = validate_options(dict(options))
        self._descriptor: FunctionDescriptor | None = None
        #: As in Ray, a generator function streams its values unless told otherwise.
        self._is_generator = inspect.isgeneratorfunction(function)
        self._default_returns = "streaming" if self._is_generator else 1
        check_generator_mode(self._options.get("num_returns"), self._is_generator,
                             getattr(function, "__qualname__", repr(function)))
        functools.update_wrapper(self, function)

    def __call__(self, *args, **kwargs):
        raise TypeError(
            f"remote function {self._function.__qualname__} cannot be called directly; "
            f"use {self._function.__name__}.remote(...) to run it as a task")

    def options(self, **options) -> "_BoundOptions":
        """Return this function with some options overridden for the next calls."""
        merged = dict(self._options)
        merged.update(validate_options(options))
        check_generator_mode(merged.get("num_returns"), self._is_generator,
                             getattr(self._function, "__qualname__", repr(self._function)))
        return _BoundOptions(self, merged)

    def remote(self, *args, **kwargs):
        return self._submit(self._options, args, kwargs)

    def _submit(self, options: dict, args: tuple, kwargs: dict):
        runtime = session.runtime_or_auto_init()
        if self._descriptor is None:
            self._descriptor = FunctionDescriptor(self._function)
        count = options.get("num_returns", self._default_returns)
        mode = 0
        if type(count) is not int:          # "streaming" or "dynamic": one ref back
            mode, count = returns_mode(count)
        max_retries = options.get("max_retries")
        if max_retries is None:
            max_retries = runtime.config.max_retries
        elif max_retries == -1:
            max_retries = 2**31 - 1
        refs = runtime.submitter.submit(self._descriptor, args, kwargs, count,
                              float(options.get("num_cpus", 1)), options.get("resources"),
                              max_retries, options.get("name"),
                              pack_retry_exceptions(options.get("retry_exceptions")), mode)
        if count == 1:
            return ObjectRefGenerator(refs[0], runtime) if mode == STREAMING else refs[0]
        return refs

    def __reduce__(self):
        # Shipped inside other code (a closure, a global of a task): cloudpickle drops
        # the function's file name, which tracebacks from where it lands need.
        return (_unpickle_remote_function,
                (self._function, self._options, source_filename(self._function)))


def _unpickle_remote_function(function, options: dict, filename) -> RemoteFunction:
    restore_filename(function, filename)
    return RemoteFunction(function, options)


class _BoundOptions:
    __slots__ = ("_remote_function", "_options")

    def __init__(self, remote_function: RemoteFunction, options: dict):
        self._remote_function = remote_function
        self._options = options

    def remote(self, *args, **kwargs) -> Any:
        return self._remote_function._submit(self._options, args, kwargs)

    def __reduce__(self):
        return (_BoundOptions, (self._remote_function, self._options))


def remote(*args, **options):
    """Make a function or a class (an actor) remote: ``@remote`` or
    ``@remote(num_cpus=2)``. Options are checked when the decorator is applied."""
    if len(args) == 1 and not options and callable(args[0]):
        return _make_remote(args[0], {})
    if args:
        raise TypeError("@graphstore.remote takes keyword options only, e.g. "
                        "@graphstore.remote(num_cpus=2)")
    if all(key in TASK_OPTIONS for key in options):     # mistakes surface right here
        validate_options(options)
    elif not all(key in ACTOR_OPTIONS for key in options):
        unknown = [k for k in options if k not in TASK_OPTIONS + ACTOR_OPTIONS]
        if unknown:
            validate_options(options, TASK_OPTIONS + ACTOR_OPTIONS)
    return lambda target: _make_remote(target, options)


def _make_remote(target, options: dict):
    if isinstance(target, type):
        return ActorClass(target, options)
    if not callable(target):
        raise TypeError(f"@graphstore.remote needs a function or a class, got "
                        f"{type(target).__name__}")
    return RemoteFunction(target, options)
