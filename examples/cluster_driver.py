"""A driver for a cluster that runs elsewhere: on Kubernetes (deploy/helm/graphstore),
under systemd, or started by hand.

It joins the scheduler named by GRAPHSTORE_ADDRESS with the token in GRAPHSTORE_TOKEN (and,
with TLS, the files named by GRAPHSTORE_TLS_CERT, _KEY and _CA), as a driver pod gets them
from the chart (docs/deployment.md, "Kubernetes"). It prints the cluster's nodes (on
Kubernetes, one per worker pod, named after it), runs a task on every node, puts an 8 MB
array that a task on a worker sums (the array travels to that worker's shared memory),
gets a 4 MB result back from a worker's store, and keeps a counter in an actor.

    GRAPHSTORE_ADDRESS=tcp://my-graphstore-scheduler.default.svc:6380 \\
    GRAPHSTORE_TOKEN=... python cluster_driver.py
"""
import os

import numpy as np

import graphstore


@graphstore.remote
def where() -> str:
    """The node this task ran on."""
    return graphstore.get_runtime_context().get_node_id()


@graphstore.remote
def total(array: np.ndarray) -> float:
    return float(array.sum())


@graphstore.remote
def ramp(n: int) -> np.ndarray:
    return np.arange(n, dtype=np.float64)


@graphstore.remote
class Counter:
    def __init__(self) -> None:
        self.count = 0

    def add(self, n: int) -> int:
        self.count += n
        return self.count


def main() -> None:
    if not os.environ.get("GRAPHSTORE_ADDRESS"):
        raise SystemExit("set GRAPHSTORE_ADDRESS=tcp://HOST:PORT (and GRAPHSTORE_TOKEN)")
    graphstore.init(address="auto")
    try:
        nodes = [n for n in graphstore.nodes() if n["Alive"]]
        print(f"nodes={len(nodes)}")
        for node in nodes:
            print(f"node {node['NodeID']} at {node['NodeManagerAddress']}: "
                  f"{node['Resources']}")
        # One task pinned to each node, through the node:<id> resource every node offers.
        ran_on = graphstore.get([where.options(resources={f"node:{n['NodeID']}": 0.01})
                                 .remote() for n in nodes])
        print(f"tasks_ran_on={','.join(sorted(ran_on))}")
        array = np.ones(1_000_000)                      # 8 MB: through the object store
        print(f"sum={graphstore.get(total.remote(graphstore.put(array))):.0f}")
        back = graphstore.get(ramp.remote(500_000))     # 4 MB, fetched from a worker
        print(f"ramp_last={back[-1]:.0f}")
        counter = Counter.remote()
        for n in range(1, 4):
            counter.add.remote(n)
        print(f"counter={graphstore.get(counter.add.remote(0))}")
    finally:
        graphstore.shutdown()


if __name__ == "__main__":
    main()
