"""graphstore: distributed computing with a distributed object store.

Ray's core API on a Dask-style architecture. The whole public API is on this screen.
"""
from graphstore import actor, exceptions
from graphstore.actor import ActorHandle, get_actor, kill, method
from graphstore.session import init, is_initialized, shutdown
from graphstore.api import (as_completed, available_resources, cancel, cluster_resources,
                            cluster_status,
                            get, list_tasks, memory_summary, nodes, progress, put,
                            task_graph, visualize, wait)
from graphstore.core.generators import DynamicObjectRefGenerator
from graphstore.core.object_ref import ObjectRef
from graphstore.runtime import ObjectRefGenerator
from graphstore.remote_function import remote
from graphstore.runtime_context import get_gpu_ids, get_runtime_context
from graphstore.tracing import critical_path, timeline
from graphstore import util

__version__ = "0.1.0"

__all__ = [
    "ActorHandle",
    "DynamicObjectRefGenerator",
    "ObjectRef",
    "ObjectRefGenerator",
    "actor",
    "as_completed",
    "available_resources",
    "cancel",
    "get_actor",
    "kill",
    "method",
    "cluster_resources",
    "cluster_status",
    "critical_path",
    "exceptions",
    "get",
    "get_gpu_ids",
    "get_runtime_context",
    "init",
    "is_initialized",
    "list_tasks",
    "memory_summary",
    "nodes",
    "progress",
    "put",
    "remote",
    "shutdown",
    "task_graph",
    "timeline",
    "util",
    "visualize",
    "wait",
]
