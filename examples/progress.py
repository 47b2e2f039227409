"""Progress bars: ``graphstore.progress`` for the refs a driver waits on, and plain tqdm
bars inside tasks and actors, shown live on the driver.

In a terminal the tasks' bars are redrawn in place, one row each, with the driver's own
bar below them. Piped to a file (``python examples/progress.py 2> log``), each task bar
is one line, in its final state.

Run: python examples/progress.py
"""
import random
import time

from tqdm.auto import tqdm

import graphstore


@graphstore.remote
def simulate(seed: int, steps: int = 30) -> float:
    """A stand-in for a long computation, with its own progress bar."""
    rng = random.Random(seed)
    total = 0.0
    for _ in tqdm(range(steps), desc=f"simulate {seed}"):
        total += rng.random()
        time.sleep(0.02 + 0.02 * seed)
    return total / steps


@graphstore.remote
class Trainer:
    def fit(self, epochs: int) -> int:
        print("loading data...", end="", flush=True)    # shows now, completed below
        time.sleep(0.2)
        print(" done")
        for _ in tqdm(range(epochs), desc="epochs", unit="epoch"):
            time.sleep(0.05)
        return epochs


@graphstore.remote
def chunks(n: int):
    """A streaming generator: its refs come one by one."""
    for i in range(n):
        time.sleep(0.05)
        yield i * i


if __name__ == "__main__":
    graphstore.init()
    refs = [simulate.remote(seed) for seed in range(4)]
    # A bar that advances as the refs finish; it returns them, in order.
    means = graphstore.get(graphstore.progress(refs, desc="simulations"))
    print("means:", [round(m, 3) for m in means])

    trainer = Trainer.remote()
    print("epochs:", graphstore.get(graphstore.progress(trainer.fit.remote(8),
                                                        desc="training")))

    squares = graphstore.progress(chunks.remote(10), desc="chunks", total=10)
    print("squares:", graphstore.get(squares))
    graphstore.shutdown()
