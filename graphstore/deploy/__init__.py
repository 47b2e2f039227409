"""Clusters on machines you already have: ``SSHCluster`` starts a scheduler and workers
over SSH (``graphstore up``/``down`` do it from a hosts file).

Names are imported on first use, so ``import graphstore.deploy`` costs nothing.
"""
from __future__ import annotations

from typing import Any

__all__ = ["SSHCluster", "SSHError"]


def __getattr__(name: str) -> Any:
    if name in ("SSHCluster", "SSHError"):
        from graphstore.deploy import ssh
        return getattr(ssh, name)
    raise AttributeError(f"module 'graphstore.deploy' has no attribute {name!r}")
