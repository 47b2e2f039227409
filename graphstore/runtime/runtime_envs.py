"""Turning the ``runtime_env`` a call gives into the one its task or actor runs with.

A call's packages (``working_dir``, ``py_modules``, ``pip``) are given as local paths;
the first call that uses them packs and uploads them (``packages_client.upload_package``:
nothing moves when the cluster has them already) and the result, URIs, is kept for the
process's life, so later calls cost a dict lookup. Files changed after that first call
are not shipped again in this process (as in Ray, which uploads once per job).

Then Ray's merge: what the task or actor gives replaces, key by key, what it inherits
(the job's ``runtime_env`` from ``init()``, or the environment of the task or actor that
submits it); environment variables are merged separately (``Submitter``).

Thread-safety: ``RuntimeEnvResolver`` may be used from any user thread (not the loop:
an upload blocks on the scheduler).
"""
from __future__ import annotations

import json
import os
import threading
from pathlib import Path

from graphstore.core import packages
from graphstore.runtime.packages_client import upload_package


def _key(spec: dict) -> str:
    """A lookup key for a spec as the user gave it (paths, modules, lists)."""
    def plain(value):
        if hasattr(value, "__file__") and not isinstance(value, (str, os.PathLike)):
            return f"module:{value.__file__}"
        return os.fspath(value) if isinstance(value, os.PathLike) else repr(value)
    return json.dumps(spec, sort_keys=True, default=plain) + "\0" + os.getcwd()


class RuntimeEnvResolver:
    """One process's resolved environments, and what its calls inherit."""

    def __init__(self, runtime) -> None:
        self._runtime = runtime
        self._lock = threading.Lock()
        self._resolved: dict[str, dict] = {}
        #: The resolved packages every call of this process inherits: the job's
        #: ``runtime_env`` in a driver, the process's own in a task or actor process.
        self.inherited: dict = {}

    def resolve(self, spec: dict | None) -> dict:
        """``spec`` (``options.packages_of``: paths as the user gave them) with its
        paths uploaded: ``{"working_dir": URI, "py_modules": [...], "pip": {...}}``.

        Raises:
            PackageError: a path that cannot be packed (missing, too large, unsafe).
            ValueError: an unreadable requirements file.
        """
        if not spec:
            return {}
        key = _key(spec)
        with self._lock:
            done = self._resolved.get(key)
        if done is not None:
            return done

        def upload(path: Path, excludes=(), prefix: str = "") -> str:
            return upload_package(path, excludes=excludes, prefix=prefix,
                                  runtime=self._runtime)
        resolved = packages.resolve_runtime_env(spec, upload)
        resolved.pop("env_vars", None)
        with self._lock:
            self._resolved[key] = resolved
        return resolved

    def for_call(self, spec: dict | None) -> dict | None:
        """What a task or actor submitted from this process runs with: its own packages
        (resolved) over the inherited ones, per key. None: nothing to set up."""
        merged = packages.merge_runtime_envs(self.inherited, self.resolve(spec))
        return merged or None
