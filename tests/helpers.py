"""Helpers shared by several test modules (pytest puts this folder on sys.path)."""
from __future__ import annotations

import os
import time

import graphstore
from graphstore import shm


def shm_files(prefix: str) -> list[str]:
    """Names in the shared-memory directory that start with ``prefix``."""
    return sorted(n for n in os.listdir(shm.SHM_DIR) if n.startswith(prefix))


@graphstore.remote
def gated(path, value=None):
    """Return ``value`` once the file ``path`` exists (at most 60 s): holds a task
    pending without depending on timing."""
    deadline = time.time() + 60
    while not os.path.exists(path):
        if time.time() > deadline:
            raise TimeoutError(f"gate {path} never opened")
        time.sleep(0.005)
    return value


def wait_for(predicate, timeout: float = 20.0, interval: float = 0.05):
    """Poll ``predicate`` until it returns something true (returned) or ``timeout``
    seconds pass (then its last value is returned)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return predicate()
