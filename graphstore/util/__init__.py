"""Utilities at Ray's paths (``ray.util.*``): ``graphstore.util.scheduling_strategies``."""
