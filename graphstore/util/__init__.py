"""Utilities at Ray's paths (``ray.util.*``): ``graphstore.util.scheduling_strategies``,
``graphstore.util.ActorPool`` (``actor_pool``), ``graphstore.util.queue.Queue``,
``graphstore.util.multiprocessing.Pool``, ``graphstore.util.Executor`` (a
``concurrent.futures.Executor`` running tasks) and ``graphstore.util.joblib`` (a joblib
backend; it imports joblib, so it is not imported here)."""
from graphstore.util.actor_pool import ActorPool
from graphstore.util.executor import Executor

__all__ = ["ActorPool", "Executor"]
