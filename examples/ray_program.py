"""An ordinary Ray program, run on graphstore by changing its import line.

    python examples/ray_program.py

Everything below is written against Ray's documented core API; only the first import
differs from what a Ray user writes (`import ray`). See docs/migrating-from-ray.md.
"""
import logging

import graphstore as ray          # was: import ray
from graphstore.util.scheduling_strategies import NodeAffinitySchedulingStrategy

ray.init(logging_level=logging.ERROR, namespace="example")


# -- tasks, arguments bound at the call -----------------------------------------------------
@ray.remote
def square(x):
    return x * x


@ray.remote(num_returns=2)
def divmod_task(a, b):
    return divmod(a, b)


refs = [square.remote(i) for i in range(10)]
print("squares:", ray.get(refs))
quotient, remainder = divmod_task.remote(17, 5)
print("divmod(17, 5):", ray.get([quotient, remainder]))
try:
    square.remote(1, 2)           # does not fit square(x): refused at the call
except TypeError as exc:
    print("TypeError at the call:", exc)

# -- objects, wait -------------------------------------------------------------------------
data = ray.put(list(range(1_000)))


@ray.remote
def total(values):
    return sum(values)


ready, not_ready = ray.wait([total.remote(data), square.remote(3)], num_returns=2,
                            timeout=30)
print("wait:", len(ready), "ready,", len(not_ready), "not ready;", ray.get(ready))
print("wait([]):", ray.wait([]))


# -- errors keep their class, under Ray's names ---------------------------------------------
@ray.remote
def fail():
    return 1 / 0


@ray.remote
def calls_fail():
    return ray.get(fail.remote())


try:
    ray.get(calls_fail.remote())
except ZeroDivisionError:
    print("ZeroDivisionError caught two tasks up")
try:
    ray.get(fail.remote())
except ray.exceptions.RayTaskError as exc:
    print("RayTaskError:", type(exc).__name__)


# -- actors --------------------------------------------------------------------------------
@ray.remote
class Counter:
    STEP = 1

    def __init__(self, start=0):
        self.value = start

    def add(self, n=STEP):
        self.value += n
        return self.value

    @ray.method(num_returns=2)
    def both(self):
        return self.value, -self.value

    def make_refs(self, n):
        return [ray.put(i) for i in range(n)]   # the caller borrows them

    @classmethod
    def describe(cls):
        return f"{cls.__name__} steps by {cls.STEP}"


counter = Counter.options(name="counter").remote(10)
print("Counter.STEP through the decorated class:", Counter.STEP)
print("add:", ray.get([counter.add.remote() for _ in range(3)]))
print("both:", ray.get(counter.both.remote()))
print("refs from a method:", ray.get(ray.get(counter.make_refs.remote(3))))
print("classmethod as an actor method:", ray.get(counter.describe.remote()))
same = ray.get_actor("counter")
print("get_actor sees the same state:", ray.get(same.add.remote(0)))


# -- generators stream their values ---------------------------------------------------------
@ray.remote
def countdown(n):
    for i in range(n, 0, -1):
        yield i


print("streamed:", [ray.get(ref) for ref in countdown.remote(5)])


# -- cancelling, runtime context, resources --------------------------------------------------
@ray.remote
def waits_forever():
    ray.get(ray.put(None))
    import threading
    threading.Event().wait()


stuck = waits_forever.remote()
ray.cancel(stuck)
try:
    ray.get(stuck, timeout=30)
except ray.exceptions.TaskCancelledError:
    print("cancelled")


@ray.remote
def where():
    context = ray.get_runtime_context()
    return context.get_node_id(), context.get_assigned_resources()


node_id = ray.nodes()[0]["NodeID"]
pinned = where.options(
    scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False)).remote()
print("ran on the chosen node:", ray.get(pinned)[0] == node_id)
print("cluster CPUs:", ray.cluster_resources().get("CPU"))

ray.kill(counter)
ray.shutdown()
print("done")
