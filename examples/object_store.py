"""Large objects: one copy on put, zero copies on same-host reads, locality-aware tasks.

Run with ``python examples/object_store.py``. Two local workers pretend to be two hosts
(``worker_node_ids``), so you can watch an object move between them and tasks follow
their data.
"""
import time

import numpy as np

import graphstore
from graphstore.cluster_report import format_memory_summary


@graphstore.remote
def column_means(matrix):
    # ``matrix`` is a read-only view of shared memory: no copy was made to pass it here.
    return matrix.mean(axis=0)


@graphstore.remote
def make_matrix(rows, cols, seed):
    return np.random.default_rng(seed).random((rows, cols))


def main() -> None:
    graphstore.init(num_cpus=2, worker_node_ids=["host-a", "host-b"], node_id="host-a")

    matrix = np.random.default_rng(0).random((5_000, 5_000))      # 200 MB
    start = time.perf_counter()
    ref = graphstore.put(matrix)                                   # one copy into /dev/shm
    print(f"put 200 MB in {1e3 * (time.perf_counter() - start):.1f} ms")

    start = time.perf_counter()
    view = graphstore.get(ref)                                     # zero copies
    print(f"get in {1e3 * (time.perf_counter() - start):.2f} ms; "
          f"read-only view: {not view.flags.writeable}")

    # A task on the other "host": the object streams over TCP into that host's store.
    on_b = column_means.options(resources={"node:host-b": 0.001})
    means = graphstore.get(on_b.remote(ref))
    print("means match:", np.allclose(means, matrix.mean(axis=0)))

    # A matrix produced on host-b: its consumer is placed on host-b, next to the bytes.
    produced = make_matrix.options(resources={"node:host-b": 0.001}).remote(2_000, 3_000, 1)
    graphstore.get(column_means.remote(produced))
    for record in graphstore.list_tasks()[-2:]:
        placement = record["placement"]
        print(f"{record['name']:>13} ran on {placement['node']}, fetched "
              f"{placement['missing_bytes']:,} bytes")

    print()
    print(format_memory_summary(graphstore.memory_summary()))
    graphstore.shutdown()


if __name__ == "__main__":
    main()
