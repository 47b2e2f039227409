"""``@graphstore.remote``: functions become ``RemoteFunction``s here (``f.remote(...)``,
``f.options(...)``); classes become actors (``actor.ActorClass``)."""
from __future__ import annotations

import functools
import inspect
from typing import Any

from graphstore import session
from graphstore.actor import ActorClass
from graphstore.core.call_signature import CallSignature
from graphstore.options import (ACTOR_OPTIONS, TASK_OPTIONS, decorator_usage_error,
                                pack_retry_exceptions, validate_options)
from graphstore.runtime import FunctionDescriptor

class RemoteFunction:
    """A function that runs as tasks on the cluster. Call ``.remote()``, not the function."""

    def __init__(self, function, options: dict):
        self._function = function
        self._options = validate_options(dict(options))
        self._descriptor: FunctionDescriptor | None = None
        #: Made at the first call: a function being unpickled has no defaults yet.
        self._signature = None
        functools.update_wrapper(self, function)

    def __call__(self, *args, **kwargs):
        raise TypeError(
            f"remote function {self._function.__qualname__} cannot be called directly; "
            f"use {self._function.__name__}.remote(...) to run it as a task")

    def options(self, **options) -> "_BoundOptions":
        """Return this function with some options overridden for the next calls."""
        merged = dict(self._options)
        merged.update(validate_options(options))
        return _BoundOptions(self, merged)

    def remote(self, *args, **kwargs):
        return self._submit(self._options, args, kwargs)

    def _submit(self, options: dict, args: tuple, kwargs: dict):
        signature = self._signature
        if signature is None:
            signature = self._signature = CallSignature.of(
                self._function, getattr(self._function, "__qualname__", "task"))
        signature.check(args, kwargs)
        runtime = session.runtime_or_auto_init()
        if self._descriptor is None:
            self._descriptor = FunctionDescriptor(self._function)
        num_returns = options.get("num_returns", 1)
        max_retries = options.get("max_retries")
        if max_retries is None:
            max_retries = runtime.config.max_retries
        elif max_retries == -1:
            max_retries = 2**31 - 1
        refs = runtime.submitter.submit(self._descriptor, args, kwargs, num_returns,
                              float(options.get("num_cpus", 1)), options.get("resources"),
                              max_retries, options.get("name"),
                              pack_retry_exceptions(options.get("retry_exceptions")))
        return refs[0] if num_returns == 1 else refs

    def __reduce__(self):
        return (RemoteFunction, (self._function, self._options))


class _BoundOptions:
    __slots__ = ("_remote_function", "_options")

    def __init__(self, remote_function: RemoteFunction, options: dict):
        self._remote_function = remote_function
        self._options = options

    def remote(self, *args, **kwargs) -> Any:
        return self._remote_function._submit(self._options, args, kwargs)


def remote(*args, **options):
    """Make a function or a class (an actor) remote: ``@remote`` or
    ``@remote(num_cpus=2)``. Options are checked when the decorator is applied;
    ``@remote()`` with no options is an error, as in Ray."""
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


def _make_remote(target, options: dict):
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
