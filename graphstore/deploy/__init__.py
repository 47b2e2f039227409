"""Clusters on machines that graphstore does not own: a batch system's jobs, or hosts
reached over SSH. Each deployment lives in a module of its own and is imported on first
use, so ``import graphstore.deploy`` costs nothing."""
from __future__ import annotations

from typing import Any

__all__ = ["SLURMCluster"]


def __getattr__(name: str) -> Any:
    if name == "SLURMCluster":
        from graphstore.deploy.slurm import SLURMCluster
        return SLURMCluster
    raise AttributeError(f"module 'graphstore.deploy' has no attribute {name!r}")
