"""Where a task or actor may run: ``scheduling_strategy=`` of ``@remote`` and
``.options()``, as in ``ray.util.scheduling_strategies``.

``"DEFAULT"`` (or None): the scheduler's choice, near the task's data. ``"SPREAD"``: the
least used node with room, so tasks and actors spread over the cluster.
``NodeAffinitySchedulingStrategy(node_id, soft)``: on that node (ids as
``get_runtime_context().get_node_id()`` and ``nodes()`` give them); ``soft=False`` fails
with ``TaskUnschedulableError`` if no such node is alive, ``soft=True`` runs elsewhere
when the node is gone or full.
"""
from __future__ import annotations

from typing import Any


class NodeAffinitySchedulingStrategy:
    """Run on the node ``node_id``: ``scheduling_strategy=`` of ``@remote``, ``.options()``
    and actor classes.

    Args:
        node_id: a node id, as ``nodes()`` and ``get_runtime_context().get_node_id()``
            give them.
        soft: ``False``: run only there, and fail with ``TaskUnschedulableError`` when the
            node is not alive (also if it leaves while the task waits); ``True``: run there
            if the node is alive and could fit the task, elsewhere otherwise.
        _spill_on_unavailable: accepted for Ray's signature.
        _fail_on_unavailable: accepted for Ray's signature.

    Raises:
        TypeError: ``node_id`` is not a non-empty string.
    """

    def __init__(self, node_id: str, soft: bool, _spill_on_unavailable: bool = False,
                 _fail_on_unavailable: bool = False) -> None:
        if not isinstance(node_id, str) or not node_id:
            raise TypeError(f"node_id must be a node id string (from nodes() or "
                            f"get_runtime_context().get_node_id()), got {node_id!r}")
        self.node_id = node_id
        self.soft = bool(soft)
        self._spill_on_unavailable = _spill_on_unavailable
        self._fail_on_unavailable = _fail_on_unavailable

    def __repr__(self) -> str:
        return f"NodeAffinitySchedulingStrategy(node_id={self.node_id!r}, soft={self.soft})"

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, NodeAffinitySchedulingStrategy)
                and (other.node_id, other.soft) == (self.node_id, self.soft))

    def __hash__(self) -> int:
        return hash((self.node_id, self.soft))


def to_wire(strategy: object) -> str | list[Any] | None:
    """The strategy as the scheduler reads it: None (default), ``"SPREAD"``, or
    ``["node", node id, soft]``; ``ValueError`` for anything else."""
    if strategy is None or strategy == "DEFAULT":
        return None
    if strategy == "SPREAD":
        return "SPREAD"
    if isinstance(strategy, NodeAffinitySchedulingStrategy):
        return ["node", strategy.node_id, strategy.soft]
    raise ValueError(
        f"scheduling_strategy must be \"DEFAULT\", \"SPREAD\" or a "
        f"NodeAffinitySchedulingStrategy, got {strategy!r} (placement groups and node "
        f"labels are not supported)")


__all__ = ["NodeAffinitySchedulingStrategy"]
