"""Backend adapters: graphstore, Ray and Dask distributed behind one small API.

Workloads are written once, against ``Backend`` (``init``, ``shutdown``,
``remote(fn)``, ``submit``, ``get``, ``put``, ``wait``; ``put_large`` for one
large object, ``init_two_hosts``/``submit_on`` for two hosts,
``init_spilling``/``spill_stats`` for spilling, ``make_actor``/``call`` for
actors), so that every backend runs the same work.  ``remote(fn)`` returns an
opaque handle that is passed back to ``submit``; refs returned by
``submit``/``put`` are opaque too and may be passed as arguments to
``submit`` (the system resolves them).  A backend's module is imported only
when its adapter is made, in the child process that runs it.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any, Callable

ALL_BACKENDS = ("graphstore", "ray", "dask")
# Module that must be importable for a backend to run at all.
BACKEND_MODULES = {"graphstore": "graphstore", "ray": "ray", "dask": "distributed"}
BACKEND_LABELS = {"graphstore": "graphstore", "ray": "Ray", "dask": "Dask"}
# Spilling starts above this fraction of the store's capacity (spill suite):
# graphstore's default, and Ray's.
SPILL_THRESHOLD = 0.8


def pickle_tasks_by_value(cloudpickle_module) -> None:
    """Ship the workloads' functions by value, as a user's script ships its own (they
    lived in the benchmark's ``__main__`` before ``tasks.py``): each system pays for
    sending code, and workers never import ``tasks``. Dask's pickler honours the
    registry too."""
    import tasks
    cloudpickle_module.register_pickle_by_value(tasks)


class Backend:
    name = "?"

    def version(self) -> str:
        raise NotImplementedError

    def init(self) -> None:
        raise NotImplementedError

    def shutdown(self) -> None:
        raise NotImplementedError

    def remote(self, fn: Callable) -> Any:
        raise NotImplementedError

    def submit(self, handle: Any, *args: Any) -> Any:
        raise NotImplementedError

    def get(self, ref_or_refs: Any) -> Any:
        """Like ``ray.get``: one ref -> value, list of refs -> list of values."""
        raise NotImplementedError

    def put(self, obj: Any) -> Any:
        raise NotImplementedError

    def wait(self, refs: list, num_returns: int = 1, timeout: float | None = None):
        """Like ``ray.wait``: returns ``(ready, not_ready)`` lists."""
        raise NotImplementedError

    def put_large(self, obj: Any) -> Any:
        """``put`` for one large object (a backend may pick a better call)."""
        return self.put(obj)

    def init_two_hosts(self, node_ids: tuple[str, str]) -> None:
        """Restart as a cluster of two hosts (one worker each) on this machine,
        the driver on the first.  Raises ``NotImplementedError`` if the backend
        has no such mode (its cross-host workloads are then N/A)."""
        raise NotImplementedError

    def submit_on(self, handle: Any, node_id: str, *args: Any) -> Any:
        """``submit``, forced onto a worker of host ``node_id``."""
        raise NotImplementedError

    def init_spilling(self, store_bytes: int, spill_url: str,
                      spill_options: dict | None = None) -> None:
        """Restart as one worker (``num_cpus=1``) whose object store holds
        ``store_bytes`` and spills to ``spill_url`` (a local directory, or for
        graphstore also ``s3://bucket/prefix`` with s3fs ``spill_options``) above
        80% of its capacity.  Raises ``NotImplementedError`` if the backend
        cannot spill there (its spill workloads are then N/A)."""
        raise NotImplementedError

    def spill_stats(self) -> dict[str, float] | None:
        """The stores' own spill counters summed over stores (spilled_bytes,
        spill_seconds, restored_bytes, restore_seconds), or None."""
        return None

    def make_actor(self, cls) -> Any:
        """An instance of ``cls`` living in the cluster (an actor)."""
        raise NotImplementedError

    def call(self, actor: Any, method: str, *args: Any) -> Any:
        """Call an actor method; returns a ref (or future) of its result."""
        return getattr(actor, method).remote(*args)

    def get_calls(self, refs: list) -> list:
        return self.get(refs)


class GraphstoreBackend(Backend):
    name = "graphstore"

    def __init__(self):
        import cloudpickle
        import graphstore
        pickle_tasks_by_value(cloudpickle)
        self.gs = graphstore

    def version(self):
        try:
            from importlib.metadata import version
            return version("graphstore")
        except Exception:
            return str(getattr(self.gs, "__version__", "dev"))

    def init(self):
        self.gs.init()

    def shutdown(self):
        self.gs.shutdown()

    def remote(self, fn):
        return self.gs.remote(fn)

    def submit(self, handle, *args):
        return handle.remote(*args)

    def get(self, ref_or_refs):
        return self.gs.get(ref_or_refs)

    def put(self, obj):
        return self.gs.put(obj)

    def wait(self, refs, num_returns=1, timeout=None):
        return self.gs.wait(refs, num_returns=num_returns, timeout=timeout)

    def init_two_hosts(self, node_ids):
        # Distinct node ids make graphstore treat the two workers as separate
        # hosts: objects move between them over TCP, not shared memory.
        self.gs.shutdown()
        self.gs.init(num_cpus=len(node_ids), worker_node_ids=list(node_ids),
                     node_id=node_ids[0])

    def submit_on(self, handle, node_id, *args):
        return handle.options(resources={f"node:{node_id}": 0.001}).remote(*args)

    def make_actor(self, cls):
        return self.gs.remote(cls).remote()

    def init_spilling(self, store_bytes, spill_url, spill_options=None):
        self.gs.shutdown()
        self.gs.init(num_cpus=1, object_store_memory=store_bytes, spill_to=spill_url,
                     spill_options=spill_options or None, spill_threshold=SPILL_THRESHOLD,
                     log_to_driver=False)

    def spill_stats(self):
        keys = ("spilled_bytes", "spill_seconds", "restored_bytes", "restore_seconds")
        totals = dict.fromkeys(keys, 0.0)
        errors = []
        for store in self.gs.memory_summary()["stores"]:
            for k in keys:
                totals[k] += store.get(k) or 0
            if store.get("last_spill_error"):
                errors.append(store["last_spill_error"])
        totals["last_spill_error"] = "; ".join(errors) or None
        return totals


class RayBackend(Backend):
    name = "ray"

    def __init__(self):
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        import ray
        from ray import cloudpickle
        pickle_tasks_by_value(cloudpickle)
        self.ray = ray

    def version(self):
        return self.ray.__version__

    def init(self):
        self.ray.init(
            num_cpus=os.cpu_count(),
            # Room for several 200 MB objects (objects suite).
            object_store_memory=2 * 1024**3,
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.ERROR,
        )

    def shutdown(self):
        self.ray.shutdown()

    def remote(self, fn):
        return self.ray.remote(fn)

    def submit(self, handle, *args):
        return handle.remote(*args)

    def get(self, ref_or_refs):
        return self.ray.get(ref_or_refs)

    def put(self, obj):
        return self.ray.put(obj)

    def wait(self, refs, num_returns=1, timeout=None):
        return self.ray.wait(refs, num_returns=num_returns, timeout=timeout)

    def make_actor(self, cls):
        return self.ray.remote(cls).remote()

    def init_spilling(self, store_bytes, spill_url, spill_options=None):
        if "://" in spill_url and not spill_url.startswith("file://"):
            raise NotImplementedError("Ray spilling is benchmarked to a local directory only")
        directory = spill_url[len("file://"):] if spill_url.startswith("file://") else spill_url
        self.ray.shutdown()
        self.ray.init(
            num_cpus=1,
            object_store_memory=store_bytes,
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.ERROR,
            # Ray's object_spilling_threshold defaults to 0.8, as graphstore's
            # spill_threshold here.
            _system_config={"object_spilling_config": json.dumps(
                {"type": "filesystem", "params": {"directory_path": directory}})},
        )


class DaskBackend(Backend):
    name = "dask"

    def __init__(self):
        import cloudpickle
        import distributed
        pickle_tasks_by_value(cloudpickle)
        self.distributed = distributed
        self.cluster = None
        self.client = None

    def version(self):
        return self.distributed.__version__

    def init(self):
        self.cluster = self.distributed.LocalCluster(
            n_workers=os.cpu_count(),
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.ERROR,
        )
        self.client = self.distributed.Client(self.cluster)

    def shutdown(self):
        if self.client is not None:
            self.client.close()
        if self.cluster is not None:
            self.cluster.close()
        self.client = self.cluster = None

    def remote(self, fn):
        return fn

    def submit(self, handle, *args):
        # pure=False: every call is a new task, as in Ray.  (With the default
        # pure=True identical calls would be deduplicated into one task.)
        return self.client.submit(handle, *args, pure=False)

    def get(self, ref_or_refs):
        if isinstance(ref_or_refs, list):
            return self.client.gather(ref_or_refs)
        return ref_or_refs.result()

    def put(self, obj):
        # One object per call, like ray.put: wrap it so that scatter does not
        # split a list/dict into many futures; hash=False so that equal
        # contents still make a new object (no dedup).
        return self.client.scatter([obj], hash=False)[0]

    def make_actor(self, cls):
        return self.client.submit(cls, actor=True).result()

    def call(self, actor, method, *args):
        return getattr(actor, method)(*args)      # an ActorFuture

    def get_calls(self, refs):
        return [f.result() for f in refs]

    def put_large(self, obj):
        # direct=True: the client sends the bytes straight to one worker, which
        # keeps them (as ray.put writes straight into the local store); the
        # default for a remote cluster routes the data through the scheduler.
        return self.client.scatter([obj], hash=False, direct=True)[0]

    def wait(self, refs, num_returns=1, timeout=None):
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            done = [r for r in refs if r.done()]
            if len(done) >= num_returns:
                break
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                break
            pending = [r for r in refs if not r.done()]
            try:
                self.distributed.wait(pending, timeout=remaining,
                                      return_when="FIRST_COMPLETED")
            except TimeoutError:
                break
        ready = [r for r in refs if r.done()][:num_returns]
        ready_ids = {id(r) for r in ready}
        return ready, [r for r in refs if id(r) not in ready_ids]


ADAPTERS: dict[str, Callable[[], Backend]] = {
    "graphstore": GraphstoreBackend,
    "ray": RayBackend,
    "dask": DaskBackend,
}
