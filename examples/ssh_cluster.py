"""A cluster on machines reached over SSH, for the length of one program: started from a
hosts file, work on every worker host, an object moved between hosts, then stopped.

    python examples/ssh_cluster.py examples/hosts.yaml

The hosts file is the one `graphstore up` takes (docs/deployment.md, "SSH"): the first
host runs the scheduler, every other one a worker. Here the cluster is tied to this
program: its processes stop when the program ends, however it ends (`graphstore up`
starts one that stays up until `graphstore down`).
"""
import sys
import time

import numpy as np

import graphstore
from graphstore.deploy import SSHCluster


@graphstore.remote
def node_and_load(seconds):
    """Where a task ran, after a little work there."""
    import time
    import graphstore
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        pass
    return graphstore.get_runtime_context().get_node_id()


@graphstore.remote
def make_data(n):
    import numpy as np
    return np.arange(n, dtype=np.float64)


@graphstore.remote
def total(array):
    import graphstore
    return graphstore.get_runtime_context().get_node_id(), float(array.sum())


def main(hosts_file: str) -> None:
    started = time.perf_counter()
    with SSHCluster.from_file(hosts_file) as cluster:
        print(f"cluster {cluster.name!r} up in {time.perf_counter() - started:.1f} s at "
              f"{cluster.address}")
        for process in cluster.processes:
            print(f"  {process.role} on {process.host}: pid {process.pid}")
        graphstore.init(address=cluster.address, token=cluster.token)
        nodes = sorted(n["NodeID"] for n in graphstore.nodes() if n["Alive"])
        print(f"worker hosts: {len(nodes)}")

        # Tasks pinned to each host through its node resource, then some unpinned.
        pinned = [node_and_load.options(resources={f"node:{node}": 0.01}).remote(0.05)
                  for node in nodes]
        assert graphstore.get(pinned) == nodes
        spread = graphstore.get([node_and_load.remote(0.05) for _ in range(20)])
        print(f"20 tasks ran on {len(set(spread))} hosts")

        # 16 MB made on the first worker host, summed on the last one.
        first, last = nodes[0], nodes[-1]
        data = make_data.options(resources={f"node:{first}": 0.01}).remote(2_000_000)
        where, value = graphstore.get(
            total.options(resources={f"node:{last}": 0.01}).remote(data))
        assert value == float(np.arange(2_000_000, dtype=np.float64).sum())
        print(f"an object made on {first[:12]} was summed on {where[:12]}: {value:.0f}")
        graphstore.shutdown()
    print("cluster stopped")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python examples/ssh_cluster.py HOSTS_FILE")
    main(sys.argv[1])
