"""Quickstart: put arrays into the object store, transform them with remote functions.

Run it with ``python examples/quickstart.py``; ``graphstore.init()`` with no address starts
a local cluster (a scheduler and one worker per CPU) and stops it when the program ends.
"""
import numpy as np

import graphstore


@graphstore.remote
def scale(array, factor):
    """Top-level ObjectRef arguments arrive as their values."""
    return array * factor


@graphstore.remote
def describe(container):
    """Refs nested in a list or dict arrive as refs: the task decides what to fetch."""
    print(f"got a {type(container).__name__} holding {len(container)} refs")
    return [graphstore.get(ref).sum() for ref in container]


@graphstore.remote
def echo(x):
    print("current value of argument x:", x)
    return x


def main() -> None:
    context = graphstore.init()
    print(f"local cluster at {context.address} with {context.num_workers} workers")

    # Put 15 arrays into the object store: each put returns an ObjectRef at once.
    refs = [graphstore.put(np.arange(i, i + 5)) for i in range(15)]
    print("first ref:", refs[0])

    # Get one object, then all of them (in order).
    print("one:", graphstore.get(refs[0]))
    print("all sums:", [int(a.sum()) for a in graphstore.get(refs)])

    # Transform them remotely: refs passed directly are resolved before the task runs.
    scaled = [scale.remote(ref, 10) for ref in refs]
    print("scaled[1]:", graphstore.get(scaled[1]))

    # Pass refs nested inside a list: the task receives the refs themselves.
    print("sums via nested refs:", graphstore.get(describe.remote(scaled[:3])))

    # echo with a direct ref prints the value inside the worker; the line shows up here.
    graphstore.get(echo.remote(refs[0]))
    nested = graphstore.get(echo.remote({"obj": refs[0]}))
    print("echo of a dict returns the ref unresolved:", nested)

    # wait() returns the refs that are ready and those that are not, in input order.
    ready, not_ready = graphstore.wait(scaled, num_returns=5, timeout=10)
    print(f"{len(ready)} ready, {len(not_ready)} not yet (or not waited for)")

    graphstore.shutdown()


if __name__ == "__main__":
    main()
