"""Uploading runtime_env packages into the object store, and fetching them on a host.

A package (``graphstore/core/packages.py``) travels once through the object store: the
uploader puts its zip as an object and registers it with the scheduler under its URI;
the scheduler holds that object for the cluster's life and answers "is this URI known?"
before anyone uploads, so a second upload of the same files sends nothing but the
question. A host that needs a package asks the scheduler for the object behind the URI,
reads it like any object (from its own store, or streamed from the worker that has it),
checks its hash and unpacks it into its cache once.

Both functions need a connected runtime in this process (a driver after ``init()``, a
worker, an actor or task process). Thread-safety: callable from any thread but the
runtime's event loop (they block on requests to the scheduler).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from graphstore.core import packages
from graphstore.core import protocol as msg
from graphstore.core.object_ref import ObjectRef
from graphstore.exceptions import GraphstoreError, PackageError
from graphstore.runtime import context


def _runtime(runtime=None):
    runtime = runtime if runtime is not None else context.installed()
    if runtime is None:
        raise GraphstoreError("graphstore is not initialized; call graphstore.init() "
                              "before uploading or fetching packages")
    return runtime


def upload_package(path_or_zip: str | os.PathLike, *, excludes: Iterable[str] = (),
                   prefix: str = "", runtime=None) -> str:
    """Pack a directory, a module file or a zip, and store it in the cluster once.

    Args:
        path_or_zip: what to ship (see ``graphstore.core.packages.pack``).
        excludes: globs left out (besides ``__pycache__``, ``.git`` and the like).
        prefix: a directory name every entry goes under (how ``py_modules`` keeps a
            package's name); "" puts the contents at the root (a ``working_dir``).
        runtime: the runtime to use (default: this process's).

    Returns:
        The package's URI, ``gspkg://<sha256>.zip``. If the cluster already has it,
        nothing but the question crosses the network.

    Raises:
        PackageError: the path is missing, larger than the ``max_package_bytes``
            setting (the message names it and its size), or an unsafe zip.
        GraphstoreError: no connected runtime.
    """
    runtime = _runtime(runtime)
    entries = packages.collect(path_or_zip, excludes=excludes, prefix=prefix,
                               max_bytes=runtime.config.max_package_bytes)
    uri = packages.entries_uri(entries)       # one read of the files, nothing zipped
    if runtime.request(msg.LookupPackage(uri)):
        return uri
    data = packages.zip_entries(entries)
    uri = packages.package_uri(data)          # what was read now: files may have changed
    ref = runtime.put_value(data, f"the package {uri}")
    runtime.request(msg.RegisterPackage(uri, ref.id, len(data)))
    del ref       # the scheduler holds the object now
    return uri


def ensure_local_package(uri: str, *, cache_dir: str | os.PathLike | None = None,
                         runtime=None) -> Path:
    """The directory package ``uri`` is unpacked in on this host, fetched through the
    object store and unpacked (atomically, hash checked) if it is not there yet.

    Args:
        uri: a package URI, as ``upload_package`` returned it.
        cache_dir: the host's cache (default: the ``runtime_env_cache_dir`` setting).
        runtime: the runtime to use (default: this process's).

    Returns:
        The unpacked directory (``<cache>/packages/<sha256>``).

    Raises:
        PackageError: ``uri`` is malformed or unknown to the cluster, or its bytes are
            corrupt or unsafe.
        GraphstoreError: no connected runtime (only when it is not cached yet).
    """
    runtime_given = runtime
    if cache_dir is None:
        config = _runtime(runtime).config
        cache_dir = packages.cache_dir_from(config.runtime_env_cache_dir)
    found = packages.cached_package(uri, cache_dir)
    if found is not None:
        return found
    runtime = _runtime(runtime_given)
    object_id = runtime.request(msg.GetPackage(uri))
    if object_id is None:
        raise PackageError(f"the cluster has no package {uri} (upload it first with "
                           f"upload_package, from a process connected to this cluster)")
    ref = ObjectRef._new(object_id)
    data = runtime.get(ref)
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise PackageError(f"the object behind {uri} holds no package bytes")
    return packages.unpack(bytes(data), uri, cache_dir,
                           max_bytes=runtime.config.max_package_bytes)
