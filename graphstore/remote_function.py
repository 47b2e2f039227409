"""``@graphstore.remote`` for functions: ``f.remote(...)`` and ``f.options(...)``."""
from __future__ import annotations

import functools
import math
from typing import Any

from graphstore import session
from graphstore.runtime import FunctionDescriptor

_TASK_OPTIONS = ("num_returns", "num_cpus", "resources", "max_retries", "retry_exceptions",
                 "name")
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


def validate_options(options: dict, allowed=_TASK_OPTIONS) -> dict:
    """Check option names and values now, so mistakes surface at the call site."""
    for key in options:
        if key not in allowed:
            raise ValueError(f"unknown option {key!r}; valid options are: "
                             f"{', '.join(allowed)}")
    if "num_returns" in options:
        n = options["num_returns"]
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"num_returns must be a positive integer, got {n!r}")
    if "num_cpus" in options:
        n = options["num_cpus"]
        if (not isinstance(n, (int, float)) or isinstance(n, bool) or not n >= 0
                or not math.isfinite(n)):
            raise ValueError(f"num_cpus must be a non-negative number, got {n!r}")
    if "max_retries" in options:
        n = options["max_retries"]
        if not isinstance(n, int) or isinstance(n, bool) or n < -1:
            raise ValueError(f"max_retries must be an integer >= 0 (or -1 for infinite), "
                             f"got {n!r}")
    if options.get("name") is not None and not isinstance(options["name"], str):
        raise ValueError(f"name must be a string, got {options['name']!r}")
    if "retry_exceptions" in options:
        value = options["retry_exceptions"]
        if not (isinstance(value, bool) or (
                isinstance(value, (list, tuple)) and value and all(
                    isinstance(t, type) and issubclass(t, BaseException) for t in value))):
            raise ValueError(f"retry_exceptions must be True, False, or a non-empty list of "
                             f"exception classes, got {value!r}")
    resources = options.get("resources")
    if resources is not None:
        if not isinstance(resources, dict):
            raise ValueError(f"resources must be a dict of name -> amount, got {resources!r}")
        for name, amount in resources.items():
            if not isinstance(name, str) or name == "CPU":
                raise ValueError(f"resource names must be strings other than 'CPU' (use "
                                 f"num_cpus); got {name!r}")
            if (not isinstance(amount, (int, float)) or isinstance(amount, bool)
                    or not amount >= 0 or not math.isfinite(amount)):
                raise ValueError(f"resource {name!r} needs a non-negative amount, got "
                                 f"{amount!r}")
    return options


class RemoteFunction:
    """A function that runs as tasks on the cluster. Call ``.remote()``, not the function."""

    def __init__(self, function, options: dict):
        self._function = function
        self._options = validate_options(dict(options))
        self._descriptor: FunctionDescriptor | None = None
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
    ``@remote(num_cpus=2)``. Options are checked when the decorator is applied."""
    if len(args) == 1 and not options and callable(args[0]):
        return _make_remote(args[0], {})
    if args:
        raise TypeError("@graphstore.remote takes keyword options only, e.g. "
                        "@graphstore.remote(num_cpus=2)")
    from graphstore.actor import _ACTOR_OPTIONS
    if all(key in _TASK_OPTIONS for key in options):     # mistakes surface right here
        validate_options(options)
    elif not all(key in _ACTOR_OPTIONS for key in options):
        unknown = [k for k in options if k not in _TASK_OPTIONS + _ACTOR_OPTIONS]
        if unknown:
            validate_options(options, _TASK_OPTIONS + _ACTOR_OPTIONS)
    return lambda target: _make_remote(target, options)


def _make_remote(target, options: dict):
    if isinstance(target, type):
        from graphstore.actor import ActorClass
        return ActorClass(target, options)
    if not callable(target):
        raise TypeError(f"@graphstore.remote needs a function or a class, got "
                        f"{type(target).__name__}")
    return RemoteFunction(target, options)
