"""Task bodies and the actor class that the workloads run on every backend.

Plain module-level functions (and one class); each adapter turns them into
remote functions with ``Backend.remote(fn)`` (or an actor with
``Backend.make_actor(cls)``). Every backend pickles this module by value
(``backends.pickle_tasks_by_value``), as it pickled these functions when they
were defined in the benchmark's ``__main__``: the figures stay comparable
with earlier runs, and workers never need to import this module.
"""


def noop():
    return None


def leaf(i):
    return i % 100


def add(a, b):
    return a + b


def array_sum(x):
    return float(x.sum())


def array_len(x):
    return len(x)


class BenchCounter:
    """The actor of the actors suite: a counter, so results show call order."""

    def __init__(self):
        self.n = 0

    def inc(self):
        self.n += 1
        return self.n
