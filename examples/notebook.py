"""Notebook cards: what ``init()`` returns, refs, actor handles and task errors, as HTML.

In Jupyter each of these draws itself as a small table when it is a cell's value: the
cluster (address, a link to the status page, workers, CPUs, store use), an ``ObjectRef``
(state, size, where the object lives), an actor handle (class, state, where it runs) and
a ``TaskError`` (the remote traceback, folded). This file is a notebook in "percent"
format (each ``# %%`` starts a cell: Jupyter with jupytext, VS Code and PyCharm open it
as one); run as a plain script, it writes the same cards into one HTML page to open in
a browser.

Run: python examples/notebook.py [cards.html]
"""
# %%
import sys

import numpy as np

import graphstore

ctx = graphstore.init(num_cpus=2)
ctx          # the cluster: address, status page link, workers, CPUs, store use

# %%
small = graphstore.put({"learning_rate": 0.1})     # small: inline, kept by the scheduler
big = graphstore.put(np.ones(1_000_000))           # 7.6 MiB: in a worker's store
big


# %%
@graphstore.remote
def divide(a, b):
    return a / b


failed = divide.remote(1, 0)
try:
    graphstore.get(failed)
except ZeroDivisionError as exc:     # also a graphstore.exceptions.TaskError
    error = exc
error        # the task, the error and its remote traceback


# %%
@graphstore.remote
class Counter:
    def __init__(self):
        self.n = 0

    def incr(self) -> int:
        self.n += 1
        return self.n


counter = Counter.options(name="counter").remote()
graphstore.get(counter.incr.remote())
counter      # class, state, name, the process it runs in

# %%
if __name__ == "__main__" and "ipykernel" not in sys.modules:
    # A plain script: the cards, live and then once the cluster is gone, in one page.
    cards = [ctx, small, big, failed, error, counter]
    live = [item._repr_html_() for item in cards]
    graphstore.shutdown()
    gone = [ctx._repr_html_(), big._repr_html_()]
    path = sys.argv[1] if len(sys.argv) > 1 else "graphstore-cards.html"
    with open(path, "w") as page:
        page.write("<!doctype html><meta charset='utf-8'><title>graphstore cards</title>"
                   + "<h2>Connected</h2>" + "".join(live)
                   + "<h2>After shutdown()</h2>" + "".join(gone))
    print(f"wrote {len(live) + len(gone)} cards to {path}")
