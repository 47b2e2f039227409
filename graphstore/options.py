"""The options of ``@remote``, ``.options()`` and ``@method``: their names and checks.

Checked where they are given, so a mistake surfaces at the decorator or call site, not in
a worker. Remote functions and actor classes both use them.
"""
from __future__ import annotations

import math

from graphstore.exceptions import RemoteUsageError

TASK_OPTIONS = ("num_returns", "num_cpus", "resources", "max_retries", "retry_exceptions",
                "name")
ACTOR_OPTIONS = ("num_cpus", "resources", "max_restarts", "max_task_retries",
                 "max_concurrency", "name", "namespace", "lifetime", "get_if_exists")
#: ``@graphstore.method(...)`` and ``handle.method.options(...)``: the first three also
#: for ``@method``, whose options override the actor's (``name`` is per call).
METHOD_OPTIONS = ("num_returns", "max_task_retries", "retry_exceptions", "name")

#: Packed ``retry_exceptions`` lists, by the tuple of types (pickled once).
_packed_retry: dict[tuple, bytes] = {}


def pack_retry_exceptions(value):
    """``retry_exceptions`` as a task or an actor call carries it: None, True, or the
    pickled tuple of exception types (the process that has the exception decides)."""
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


def decorator_usage_error(what: str, allowed) -> RemoteUsageError:
    """``@remote()`` / ``@method()`` without options, or with positional arguments."""
    return RemoteUsageError(
        f"{what} is applied either bare (@{what.lstrip('@')}) or with keyword options, "
        f"e.g. {what}(num_returns=2); valid options are: {', '.join(allowed)}")


def validate_options(options: dict, allowed=TASK_OPTIONS) -> dict:
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
    for key in ("max_retries", "max_task_retries"):
        n = options.get(key)
        if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < -1):
            raise ValueError(f"{key} must be an integer >= 0 (or -1 for infinite), "
                             f"got {n!r}")
    if options.get("name") is not None and not isinstance(options["name"], str):
        raise TypeError(f"name must be None or a string, got "     # TypeError, as in Ray
                        f"{type(options['name']).__name__} {options['name']!r}")
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


def validate_actor_options(options: dict) -> dict:
    task_like = {k: v for k, v in options.items() if k in ("num_cpus", "resources")}
    validate_options(task_like)
    for key in options:
        if key not in ACTOR_OPTIONS:
            raise ValueError(f"unknown actor option {key!r}; valid options are: "
                             f"{', '.join(ACTOR_OPTIONS)}")
    for key in ("max_restarts", "max_task_retries"):
        n = options.get(key)
        if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < -1):
            raise ValueError(f"{key} must be an integer >= 0 (or -1 for infinite), got {n!r}")
    n = options.get("max_concurrency")
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
        raise ValueError(f"max_concurrency must be a positive integer, got {n!r}")
    for key in ("name", "namespace"):       # as in Ray: a wrong type is a TypeError
        value = options.get(key)
        if value is not None and not isinstance(value, str):
            raise TypeError(f"actor {key} must be None or a string, got "
                            f"{type(value).__name__} {value!r}")
        if value == "":
            raise ValueError(f"actor {key} must be a non-empty string (or None), got ''")
    lifetime = options.get("lifetime")
    if lifetime not in (None, "detached", "non_detached"):
        raise ValueError(f"lifetime must be 'detached' or None, got {lifetime!r}")
    return options
