"""Dask collections on graphstore: arrays, dataframes, bags and delayed run as tasks.

    python examples/dask_on_graphstore.py

Needs Dask and pandas (``pip install 'graphstore[dask]'``).
"""
import dask
import dask.array as da
import dask.bag as db
import dask.dataframe as dd
import numpy as np
import pandas as pd

import graphstore
import graphstore.dask


def partition(index: int) -> pd.DataFrame:
    rng = np.random.default_rng(index)
    return pd.DataFrame({"key": rng.integers(0, 10, 100_000), "x": rng.random(100_000)})


def main() -> None:
    graphstore.init()

    # One call: any collection, any Dask function, this scheduler.
    x = da.random.random((4000, 4000), chunks=(1000, 1000))
    column_means = (x + x.T).mean(axis=0).compute(scheduler=graphstore.dask.get)
    print("array:", column_means.shape, round(float(column_means.mean()), 3))

    # Or for a whole block of code.
    with dask.config.set(scheduler=graphstore.dask.get):
        frame = dd.from_map(partition, range(8))
        print("dataframe groupby:")
        print(frame.groupby("key").x.agg(["mean", "count"]).compute().head(3))
        words = db.from_sequence(["a", "b", "a", "c", "a"], npartitions=2)
        print("bag frequencies:", sorted(words.frequencies().compute()))

        @dask.delayed
        def divide(a, b):
            return a / b

        try:
            divide(1, 0).compute()
        except ZeroDivisionError as error:      # the task's own exception type
            print("delayed failure is a ZeroDivisionError:", isinstance(error, ZeroDivisionError))

    # persist: the chunks stay in the object store; later computations read them there.
    (kept,) = graphstore.dask.persist(x)
    print("persisted chunks are refs:",
          all(isinstance(v, graphstore.ObjectRef) for v in dict(kept.__dask_graph__()).values()))
    print("sum of the persisted array:", round(float(kept.sum().compute(
        scheduler=graphstore.dask.get)), 1))
    graphstore.shutdown()


if __name__ == "__main__":
    main()
