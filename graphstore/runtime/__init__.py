"""The per-process runtime behind ``put``/``get``/``wait`` and ``.remote()``, shared by
drivers, workers and actor processes. ``runtime.py`` composes the parts; each other
module holds one of them (see its docstring for its thread-safety contract)."""
from graphstore.runtime.context import current_task
from graphstore.runtime.roles import ActorRole, DriverRole, TaskProcessRole, WorkerRole
from graphstore.runtime.runtime import Runtime
from graphstore.runtime.streams import ObjectRefGenerator
from graphstore.runtime.submission import FunctionDescriptor

__all__ = ["ActorRole", "DriverRole", "FunctionDescriptor", "ObjectRefGenerator", "Runtime",
           "TaskProcessRole", "WorkerRole", "current_task"]
