"""Utilities at Ray's paths (``ray.util.*``): ``graphstore.util.scheduling_strategies``,
``graphstore.util.ActorPool`` (``actor_pool``) and ``graphstore.util.queue.Queue``."""
from graphstore.util.actor_pool import ActorPool

__all__ = ["ActorPool"]
