"""scikit-learn on graphstore: the fits of a ``GridSearchCV`` run as graphstore tasks.

``graphstore.util.joblib.register()`` adds a ``"graphstore"`` backend to joblib, the
library scikit-learn parallelises with; under ``joblib.parallel_config`` every
``n_jobs`` goes to the cluster (``n_jobs=-1``: all its CPUs). The data, shared by every
fit, is put in the object store once.

Run: python examples/sklearn_joblib.py
"""
import os
import time

import joblib
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV
from sklearn.svm import SVC

import graphstore
from graphstore.util.joblib import register


def where(_):
    return os.getpid()


graphstore.init()
register()

X, y = load_digits(return_X_y=True)
grid = {"C": [1, 10], "gamma": [1e-3, 1e-4]}     # 4 candidates x 3 folds: 12 fits

with joblib.parallel_config(backend="graphstore"):
    start = time.perf_counter()
    search = GridSearchCV(SVC(), grid, cv=3, n_jobs=-1).fit(X, y)
    elapsed = time.perf_counter() - start
    pids = joblib.Parallel(n_jobs=-1)(joblib.delayed(where)(i) for i in range(8))

print(f"{len(search.cv_results_['params']) * 3} fits on "
      f"{int(graphstore.cluster_resources()['CPU'])} CPUs in {elapsed:.1f} s")
print(f"best parameters: {search.best_params_}, accuracy {search.best_score_:.3f}")
print(f"joblib calls ran in processes {sorted(set(pids))}, not in this one "
      f"({os.getpid()}): {os.getpid() not in pids}")

sequential = GridSearchCV(SVC(), grid, cv=3, n_jobs=1).fit(X, y)      # in this process
print("same best parameters as n_jobs=1:", sequential.best_params_ == search.best_params_)
graphstore.shutdown()
