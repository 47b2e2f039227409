"""ActorPool and Queue: Ray's ``ray.util.ActorPool`` and ``ray.util.queue.Queue``.

A pool of two actors scores items (results in order, then as they finish); tasks hand
work to each other through a bounded queue, a producer blocking while it is full.

Run: python examples/actor_pool_queue.py
"""
import time

import graphstore
from graphstore.util import ActorPool
from graphstore.util.queue import Empty, Queue

graphstore.init()


@graphstore.remote
class Scorer:
    def __init__(self, weight):
        self.weight = weight

    def score(self, item):
        time.sleep(0.01 * (item % 3))          # some items take longer
        return item * self.weight


pool = ActorPool([Scorer.remote(10), Scorer.remote(10)])
print("in order:     ", list(pool.map(lambda actor, item: actor.score.remote(item), range(8))))
print("as they finish:", sorted(pool.map_unordered(lambda a, v: a.score.remote(v), range(8))))

# Submit and collect by hand; calls beyond the idle actors wait in the pool.
for item in range(4):
    pool.submit(lambda actor, item: actor.score.remote(item), item)
while pool.has_next():
    print("next:", pool.get_next())


@graphstore.remote
def produce(queue, n):
    for i in range(n):
        queue.put(i)                           # blocks while the queue is full
    queue.put(None)                            # end of the stream
    return n


@graphstore.remote
def consume(queue):
    total = 0
    while (item := queue.get(timeout=60)) is not None:
        total += item
    return total


queue = Queue(maxsize=5)
produced, total = produce.remote(queue, 100), consume.remote(queue)
print("produced", graphstore.get(produced), "items; consumer summed", graphstore.get(total))
try:
    queue.get_nowait()
except Empty:
    print("queue drained")
queue.shutdown()
graphstore.shutdown()
print("done")
