"""Actors: stateful remote classes.

1. The seed's pattern: put large objects into the object store, then transform them with
   a remote class that keeps state across calls (here, running statistics of every
   array it has seen). The arrays are read from shared memory without copying.
2. A parameter server: worker tasks pull the weights from an actor, compute gradients,
   and push them back; the actor applies them in the order they arrive.

Run: python examples/actors.py
"""
import numpy as np

import graphstore


@graphstore.remote
class RunningStats:
    """Keeps statistics of every array passed to it, across calls."""

    def __init__(self):
        self.count = 0
        self.total = 0.0
        self.largest = float("-inf")

    def observe(self, array):
        # ``array`` arrives from the object store: a read-only view of shared memory.
        self.count += array.size
        self.total += float(array.sum())
        self.largest = max(self.largest, float(array.max()))
        return self.count

    def normalise(self, array):
        return (array - self.mean()) / (self.largest or 1.0)

    def mean(self):
        return self.total / self.count if self.count else 0.0

    @graphstore.method(num_returns=2)
    def summary(self):
        return self.mean(), self.largest


@graphstore.remote
class ParameterServer:
    def __init__(self, dim):
        self.weights = np.zeros(dim)
        self.updates = 0

    def get_weights(self):
        return self.weights

    def apply(self, gradient, rate=0.1):
        self.weights = self.weights - rate * gradient
        self.updates += 1
        return self.updates


@graphstore.remote
def compute_gradient(server, seed):
    """A worker task: read the current weights, return a gradient towards a target."""
    weights = graphstore.get(server.get_weights.remote())
    target = np.random.default_rng(seed).normal(1.0, 0.1, weights.size)
    return weights - target


def main():
    graphstore.init()

    # 1. Transform put objects with a stateful remote class.
    stats = RunningStats.remote()
    chunks = [graphstore.put(np.random.default_rng(i).random(1_000_000)) for i in range(4)]
    seen = graphstore.get([stats.observe.remote(chunk) for chunk in chunks])
    mean_ref, largest_ref = stats.summary.remote()
    print(f"observed {seen[-1]:,} values; mean {graphstore.get(mean_ref):.4f}, "
          f"largest {graphstore.get(largest_ref):.4f}")
    normalised = graphstore.get(stats.normalise.remote(chunks[0]))
    print(f"first chunk normalised: mean {normalised.mean():+.4f}")

    # 2. A parameter server updated by worker tasks that hold its handle.
    server = ParameterServer.remote(8)
    for step in range(5):
        gradients = [compute_gradient.remote(server, 10 * step + k) for k in range(4)]
        graphstore.get([server.apply.remote(g) for g in gradients])
    weights = graphstore.get(server.get_weights.remote())
    print(f"after 20 updates the weights are near 1: {np.round(weights, 2)}")

    graphstore.shutdown()


if __name__ == "__main__":
    main()
