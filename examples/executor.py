"""concurrent.futures on graphstore: ``graphstore.util.Executor`` and ``as_completed``.

Code written for ``concurrent.futures`` (or asyncio's ``run_in_executor``) runs its calls
as graphstore tasks; ``graphstore.as_completed`` hands back refs as their tasks finish.

Run: python examples/executor.py
"""
import asyncio
import concurrent.futures
import time

import graphstore
from graphstore.util import Executor

graphstore.init()


def simulate(seed: int) -> float:
    """A stand-in for a costly computation."""
    import random
    rng = random.Random(seed)
    return sum(rng.random() for _ in range(200_000)) / 200_000


with Executor(max_workers=2) as pool:                 # at most 2 tasks in flight
    futures = {pool.submit(simulate, seed): seed for seed in range(6)}
    for future in concurrent.futures.as_completed(futures):
        print(f"seed {futures[future]}: mean {future.result():.4f}")
    print("map:", [round(x, 3) for x in pool.map(simulate, range(3))])


async def main():
    loop = asyncio.get_running_loop()
    with Executor() as pool:
        return await asyncio.gather(*(loop.run_in_executor(pool, pow, 2, n)
                                      for n in range(5)))
print("run_in_executor:", asyncio.run(main()))


@graphstore.remote
def sleep_then_return(seconds):
    time.sleep(seconds)
    return seconds


refs = [sleep_then_return.remote(s) for s in (0.6, 0.05, 0.3)]
print("finished in order:", [graphstore.get(ref) for ref in graphstore.as_completed(refs)])
graphstore.shutdown()
print("done")
