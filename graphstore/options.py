"""The options of ``@remote``, ``.options()`` and ``@method``: their names and checks.

Checked where they are given, so a mistake surfaces at the decorator or call site, not in
a worker. Remote functions and actor classes both use them.
"""
from __future__ import annotations

import math

from graphstore.core.packages import module_path, validate_runtime_env
from graphstore.exceptions import RemoteUsageError
from graphstore.util.scheduling_strategies import to_wire as strategy_to_wire

TASK_OPTIONS = ("num_returns", "num_cpus", "num_gpus", "resources", "max_retries",
                "retry_exceptions", "name", "max_calls", "scheduling_strategy",
                "runtime_env")
ACTOR_OPTIONS = ("num_cpus", "num_gpus", "resources", "max_restarts", "max_task_retries",
                 "max_concurrency", "name", "namespace", "lifetime", "get_if_exists",
                 "scheduling_strategy", "runtime_env")
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
        if n not in ("streaming", "dynamic") and (
                not isinstance(n, int) or isinstance(n, bool) or n < 1):
            raise ValueError(f"num_returns must be a positive integer, \"streaming\" or "
                             f"\"dynamic\" (generators), got {n!r}")
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
    if "num_gpus" in options and options["num_gpus"] is not None:
        check_gpus(options["num_gpus"])
    if "max_calls" in options:
        n = options["max_calls"]
        if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 0):
            raise ValueError(f"max_calls must be an integer >= 0 (0: no limit), got {n!r}")
    if options.get("scheduling_strategy") is not None:
        strategy_to_wire(options["scheduling_strategy"])
    if options.get("runtime_env") is not None:
        env_vars_of(options["runtime_env"])
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
        if "GPU" in resources:
            if options.get("num_gpus") is not None:
                raise ValueError("give GPUs as num_gpus or as resources={'GPU': n}, not "
                                 "both")
            check_gpus(resources["GPU"])
    return options


def check_gpus(n) -> None:
    """GPUs are whole devices above one, as in Ray (fractions of one share a device)."""
    if (not isinstance(n, (int, float)) or isinstance(n, bool) or not n >= 0
            or not math.isfinite(n)):
        raise ValueError(f"num_gpus must be a non-negative number, got {n!r}")
    if n > 1 and n != int(n):
        raise ValueError(f"num_gpus above 1 must be a whole number, got {n!r}")


def env_vars_of(runtime_env) -> dict:
    """The ``env_vars`` of a ``runtime_env`` dict, the whole dict checked
    (``core.packages.validate_runtime_env``: a Ray key graphstore does not implement,
    such as ``conda``, raises ``NotImplementedError`` naming it)."""
    return dict(validate_runtime_env(runtime_env).get("env_vars") or {})


def packages_of(runtime_env) -> dict | None:
    """What of a ``runtime_env`` must be set up on a host (``working_dir``,
    ``py_modules``, ``pip``, with the ``excludes`` that apply), as the user gave it:
    resolved (uploaded) when a call is submitted. None when there is none."""
    env = validate_runtime_env(runtime_env)
    out = {k: env[k] for k in ("working_dir", "py_modules", "pip", "excludes")
           if env.get(k) is not None}
    if "py_modules" in out:     # imported modules as their paths: options stay picklable
        out["py_modules"] = [module_path(m) for m in out["py_modules"]]
    return out if set(out) - {"excludes"} else None


def placement_options(options: dict) -> tuple[float | None, dict | None, object]:
    """``(num_cpus or None, resources with "GPU" folded in, wire strategy)``."""
    resources = options.get("resources")
    gpus = options.get("num_gpus")
    if gpus:
        resources = {**(resources or {}), "GPU": float(gpus)}
    elif resources is not None and "GPU" in resources and not resources["GPU"]:
        resources = {k: v for k, v in resources.items() if k != "GPU"}
    return (options.get("num_cpus"), resources or None,
            strategy_to_wire(options.get("scheduling_strategy")))


def actor_options_for_wire(options: dict, inherited_env: dict,
                           runtime_env: dict | None = None) -> dict:
    """An actor's options as ``CreateActor`` carries them: GPUs among its resources, its
    strategy and environment variables (the creator's merged with its own) in wire
    form, and ``runtime_env``, its packages resolved (URIs)."""
    out = {k: v for k, v in options.items()
           if k not in ("num_gpus", "scheduling_strategy", "runtime_env")}
    _, resources, strategy = placement_options(options)
    if resources is not None:
        out["resources"] = resources
    else:
        out.pop("resources", None)
    if strategy is not None:
        out["scheduling_strategy"] = strategy
    env = {**inherited_env, **env_vars_of(options.get("runtime_env"))}
    if env:
        out["env_vars"] = env
    if runtime_env:
        out["runtime_env"] = runtime_env
    return out


def validate_actor_options(options: dict) -> dict:
    task_like = {k: v for k, v in options.items()
                 if k in ("num_cpus", "num_gpus", "resources", "scheduling_strategy",
                          "runtime_env")}
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
