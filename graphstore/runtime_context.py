"""``get_runtime_context()`` and ``get_gpu_ids()``: who and where the calling code is.

As in Ray: in the driver the job and node; inside a task also the task and what it
holds; inside an actor also the actor. Ids are hex strings. What only the scheduler knows
of a task (its job, its resources) is asked once per task, when first wanted.
"""
from __future__ import annotations

from typing import Any

from graphstore import session
from graphstore.runtime import Runtime, current_task


def _hex(value: Any) -> Any:
    """An id in hex: bytes become hex, a str or None is returned as it is."""
    return value.hex() if isinstance(value, bytes) else value


def _gpu_ids_of(runtime: Runtime) -> list[str]:
    gpus = runtime.context.get("gpu_ids")
    return list(gpus) if gpus else []


class RuntimeContext:
    """Who is calling: the driver, a task or an actor, on which node and worker, holding what.

    Get it with ``get_runtime_context()``. Its answers are about the calling thread's task
    (tasks run in threads of a worker), so it is safe to use from several threads; ids are
    hex strings.
    """

    def _runtime(self) -> Runtime:
        return session.get_runtime()

    def _task_info(self) -> dict[str, Any] | None:
        """The scheduler's word on the running task ({"job_id", "namespace",
        "resources", "gpus"}), or None outside a task."""
        info: dict[str, Any] | None = self._runtime().task_context()
        return info

    def get_job_id(self) -> str:
        """The id of the job (the driver) this code belongs to.

        Returns:
            The job id in hex.

        Raises:
            RuntimeError: this process runs no driver, task or actor.
            GraphstoreError: this process is not connected (call ``init()`` first).
        """
        runtime = self._runtime()
        job = runtime.context.get("job_id")
        if job is None:
            info = runtime.task_context()
            job = info["job_id"] if info is not None else None
        if job is None:
            raise RuntimeError("no job: this process runs no driver, task or actor")
        job_id: str = _hex(job)
        return job_id

    def get_node_id(self) -> str:
        """The node (host) this process runs on, as ``nodes()`` names it.

        Returns:
            The node id, a hex string.

            Raises:
                GraphstoreError: this process is not connected (call ``init()`` first).
        """
        node_id: str = self._runtime().node_id
        return node_id

    def get_worker_id(self) -> str:
        """This process's id: the worker's, the task or actor process's, or the driver's.

        Returns:
            The id in hex.

            Raises:
                GraphstoreError: this process is not connected (call ``init()`` first).
        """
        runtime = self._runtime()
        worker_id: str = _hex(runtime.context.get("worker_id", runtime.peer_id))
        return worker_id

    def get_task_id(self) -> str | None:
        """The running task's (or actor call's) id.

        Returns:
            The id in hex; None outside a task (in the driver).
        """
        task = getattr(current_task, "task", None)
        return task[0].hex() if task is not None else None

    def get_task_name(self) -> str | None:
        """The running task's (or actor call's) name: the function's, or the ``name`` option.

        Returns:
            The name; None outside a task (in the driver).
        """
        task = getattr(current_task, "task", None)
        return task[1] if task is not None else None

    def get_actor_id(self) -> str | None:
        """The id of the actor this code runs in.

        Returns:
            The id in hex; None outside actors.

            Raises:
                GraphstoreError: this process is not connected (call ``init()`` first).
        """
        actor_id: str | None = _hex(self._runtime().context.get("actor_id"))
        return actor_id

    def get_actor_name(self) -> str | None:
        """The name of the actor this code runs in.

        Returns:
            The actor's name, ``""`` for an unnamed actor; None outside actors.

            Raises:
                GraphstoreError: this process is not connected (call ``init()`` first).
        """
        runtime = self._runtime()
        if "actor_id" not in runtime.context:
            return None
        name: str = runtime.context.get("actor_name") or ""
        return name

    @property
    def namespace(self) -> str:
        """The namespace of this job's named actors."""
        namespace: str = self._runtime().namespace()
        return namespace

    def get_assigned_resources(self) -> dict[str, float]:
        """What the running task or actor holds.

        Returns:
            Resource name to amount, e.g. ``{"CPU": 1.0}`` for a default task and ``{}`` for a
            default actor (as in Ray); ``{}`` in the driver.

            Raises:
                GraphstoreError: this process is not connected (call ``init()`` first).
        """
        runtime = self._runtime()
        if "actor_id" in runtime.context:
            return dict(runtime.context.get("resources") or {})
        info = runtime.task_context()
        return dict(info["resources"]) if info is not None else {}

    def get_accelerator_ids(self) -> dict[str, list[str]]:
        """The GPUs this task or actor holds.

        Returns:
            ``{"GPU": [ids as strings]}``, as ``CUDA_VISIBLE_DEVICES`` names them.

            Raises:
                GraphstoreError: this process is not connected (call ``init()`` first).
        """
        return {"GPU": _gpu_ids_of(self._runtime())}

    @property
    def was_current_actor_reconstructed(self) -> bool:
        """Whether this actor's process is a restart (``max_restarts``)."""
        return bool(self._runtime().context.get("restarts"))

    def get(self) -> dict[str, str | None]:
        """The context as a dict (Ray's deprecated form).

        Returns:
            ``job_id``, ``node_id`` and ``namespace``, plus ``task_id`` in a task and
            ``actor_id`` in an actor.

            Raises:
                GraphstoreError: this process is not connected (call ``init()`` first).
        """
        out: dict[str, str | None] = {"job_id": self.get_job_id(),
                                      "node_id": self.get_node_id(),
                                      "namespace": self.namespace}
        if self.get_task_id() is not None:
            out["task_id"] = self.get_task_id()
        if self.get_actor_id() is not None:
            out["actor_id"] = self.get_actor_id()
        return out


_context = RuntimeContext()


def get_runtime_context() -> RuntimeContext:
    """The runtime context of the calling driver, task or actor.

    Returns:
        The context: ``get_job_id()``, ``get_task_id()``, ``get_actor_id()``,
        ``get_node_id()``, ``get_worker_id()``, ``namespace``,
        ``get_assigned_resources()``, ... Its methods raise ``GraphstoreError`` when the
        process is not connected.
    """
    return _context


def get_gpu_ids() -> list[int] | list[str]:
    """The GPUs the calling task or actor holds.

    Returns:
        Their ids as ``CUDA_VISIBLE_DEVICES`` names them (ints when numeric, as Ray returns
        them); ``[]`` in the driver and in code that asked for no GPU.

        Raises:
            GraphstoreError: this process is not connected (call ``init()`` first).
    """
    ids = _gpu_ids_of(session.get_runtime())
    return [int(i) for i in ids] if all(i.isdigit() for i in ids) else ids
