"""multiprocessing.Pool code on graphstore: change one import.

``graphstore.util.multiprocessing.Pool`` has the standard library's interface; its
processes are actors, so ``initializer`` state lives in them as in real processes.
(Functions defined in a script travel by value, each with its own copy of the script's
globals: keep state an initializer sets up in a module, here ``random``'s generator,
or define the functions in an importable module.)

Run: python examples/pool.py
"""
import random

from graphstore.util.multiprocessing import Pool     # was: from multiprocessing import Pool


def seed_process(seed):
    """Runs once in each of the pool's processes."""
    random.seed(seed)


def draw(_):
    return random.randint(1, 6)


def collatz_steps(n):
    steps = 0
    while n != 1:
        n = n // 2 if n % 2 == 0 else 3 * n + 1
        steps += 1
    return steps


if __name__ == "__main__":
    with Pool(processes=2, initializer=seed_process, initargs=(7,)) as pool:
        rolls = pool.map(draw, range(6), chunksize=3)     # each process: seed 7, 3 draws
        print("dice:", rolls, "same in both processes:", rolls[:3] == rolls[3:])
        steps = pool.map(collatz_steps, range(1, 10_001), chunksize=500)
        print("longest Collatz run below 10,000:", max(steps), "steps, from",
              steps.index(max(steps)) + 1)
        print("imap:", list(pool.imap(collatz_steps, [6, 7, 27])))
        print("starmap:", pool.starmap(pow, [(2, 10), (3, 3)]))
        result = pool.apply_async(collatz_steps, (97,))
        print("apply_async:", result.get(timeout=60))
    print("done")
