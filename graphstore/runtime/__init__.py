"""The per-process runtime behind ``put``/``get``/``wait`` and ``.remote()``, shared by
drivers, workers and actor processes."""
from graphstore.runtime.runtime import FunctionDescriptor, Runtime, current_task

__all__ = ["FunctionDescriptor", "Runtime", "current_task"]
