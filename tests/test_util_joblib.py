"""``graphstore.util.joblib``: joblib's ``Parallel`` and scikit-learn's ``n_jobs`` on a
real cluster, through the ``"graphstore"`` backend."""
from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys

import joblib
import numpy as np
import pytest
from joblib import Parallel, delayed
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV

import graphstore
from graphstore.exceptions import TaskError
from graphstore.util.joblib import register
from helpers import wait_for

register()


class _PidRecordingClassifier(ClassifierMixin, BaseEstimator):
    """A logistic regression whose ``fit`` leaves a file named after its process in
    ``record_to``: where each fit ran."""

    def __init__(self, C=1.0, record_to=None):
        self.C = C
        self.record_to = record_to

    def fit(self, X, y):
        self.model_ = LogisticRegression(C=self.C, max_iter=500).fit(X, y)
        self.classes_ = self.model_.classes_
        if self.record_to is not None:
            with open(os.path.join(self.record_to, str(os.getpid())), "a") as f:
                f.write("fit\n")
        return self

    def predict(self, X):
        return self.model_.predict(X)


class _CustomError(Exception):
    def __init__(self, message, code):
        super().__init__(message)
        self.code = code

    def __reduce__(self):
        return (_CustomError, (self.args[0], self.code))


def _square(x):
    return x * x


def _pid(_=None):
    return os.getpid()


def _fail_on(x, bad):
    if x == bad:
        raise _CustomError(f"item {x}", code=x)
    return x


def _wait_for_file(path, value=None):
    if not wait_for(lambda: os.path.exists(path), timeout=60, interval=0.01):
        raise TimeoutError(f"gate {path} never opened")
    return value


def _nested_backend(_):
    return type(joblib.parallel.get_active_backend()[0]).__name__


def _describe(array, params):
    weights = params["sample_weight"]
    return float(array.sum()), array.flags.writeable, float(weights.sum()), os.getpid()


def _worker_pids():
    return set(Parallel(n_jobs=2, batch_size=1)(delayed(_pid)(i) for i in range(20)))


def _no_tasks_left():
    return not graphstore.cluster_status()["tasks"]


def test_grid_search_matches_n_jobs_1_and_fits_in_workers(cluster, tmp_path):
    X, y = load_iris(return_X_y=True)
    grid = {"C": [0.01, 0.1, 1.0, 10.0]}
    sequential = GridSearchCV(_PidRecordingClassifier(), grid, cv=5, n_jobs=1).fit(X, y)
    estimator = _PidRecordingClassifier(record_to=str(tmp_path))
    with joblib.parallel_config(backend="graphstore"):
        search = GridSearchCV(estimator, grid, cv=5, n_jobs=-1).fit(X, y)
        workers = _worker_pids()
    assert search.best_params_ == sequential.best_params_
    assert search.best_score_ == sequential.best_score_
    np.testing.assert_array_equal(search.cv_results_["mean_test_score"],
                                  sequential.cv_results_["mean_test_score"])
    fits = {int(name): len((tmp_path / name).read_text().split())
            for name in os.listdir(tmp_path)}
    driver = os.getpid()
    assert fits.pop(driver) == 1                 # refit=True: the best one, here
    assert sum(fits.values()) == 4 * 5           # the search's fits, in the workers
    assert set(fits) <= workers and driver not in workers


def test_parallel_results_in_order_with_progress_output(cluster, capsys):
    with joblib.parallel_config(backend="graphstore"):
        results = Parallel(n_jobs=-1, verbose=10)(delayed(_square)(i) for i in range(60))
        assert results == [i * i for i in range(60)]
        assert Parallel(n_jobs=2)(delayed(_nested_backend)(i) for i in range(2)) == \
            ["ThreadingBackend"] * 2            # nested Parallel calls: threads, as loky
    err = capsys.readouterr().err
    assert "Using backend GraphstoreBackend with 2 concurrent workers." in err
    assert "Done  60 out of  60" in err


def test_n_jobs_maps_to_the_cluster_cpus(cluster):
    with joblib.parallel_config(backend="graphstore"):
        assert joblib.effective_n_jobs(-1) == 2           # the cluster's CPUs
        assert joblib.effective_n_jobs(-2) == 1
        assert joblib.effective_n_jobs(5) == 5            # beyond the CPUs: they queue
        assert joblib.effective_n_jobs(None) == 2         # default: the whole cluster
        with pytest.raises(ValueError, match="n_jobs == 0"):
            joblib.effective_n_jobs(0)
        assert Parallel(n_jobs=1)(delayed(_pid)(i) for i in range(3)) == [os.getpid()] * 3
        assert os.getpid() not in Parallel(n_jobs=2)(delayed(_pid)(i) for i in range(3))
    with joblib.parallel_config(backend="graphstore", ray_remote_args={"num_cpus": 2}):
        assert joblib.effective_n_jobs(-1) == 1           # two CPUs per task
    with pytest.raises(ValueError):
        joblib.parallel_config(backend="graphstore", ray_remote_args={"num_cpus": -1})


def _blas_threads(_):
    from threadpoolctl import threadpool_info
    return {pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"}


def test_thread_pools_in_a_task_get_its_cpus(cluster):
    with joblib.parallel_config(backend="graphstore", inner_max_num_threads=2):
        assert Parallel(n_jobs=2)(delayed(_blas_threads)(i) for i in range(2)) == [{2}] * 2
    with joblib.parallel_config(backend="graphstore"):
        assert Parallel(n_jobs=2)(delayed(_blas_threads)(i) for i in range(2)) == [{1}] * 2
    # Other tasks in those workers find the pools as they were.
    plain = graphstore.remote(_blas_threads)
    assert graphstore.get([plain.remote(i) for i in range(4)]) == [_blas_threads(0)] * 4


def test_an_error_keeps_its_type_and_cancels_the_rest(cluster, tmp_path):
    gate = str(tmp_path / "gate")
    calls = [delayed(_fail_on)(0, bad=0)] + [delayed(_wait_for_file)(gate, i)
                                             for i in range(6)]
    try:
        with joblib.parallel_config(backend="graphstore"):
            with pytest.raises(_CustomError, match="item 0") as raised:
                Parallel(n_jobs=2, batch_size=1, pre_dispatch="all")(calls)
        assert type(raised.value) is _CustomError and raised.value.code == 0
        remote = raised.value.__cause__
        assert isinstance(remote, TaskError) and "_fail_on" in remote.traceback_str
        # The waiting calls were cancelled: none is left, though the gate stays shut.
        assert wait_for(_no_tasks_left, timeout=10), graphstore.cluster_status()
    finally:
        open(gate, "w").close()


def test_a_timeout_cancels_the_calls(cluster, tmp_path):
    gate = str(tmp_path / "gate")
    try:
        with joblib.parallel_config(backend="graphstore"):
            with pytest.raises(multiprocessing.TimeoutError):   # joblib's, as with loky
                Parallel(n_jobs=2, timeout=0.5)(delayed(_wait_for_file)(gate, i)
                                                for i in range(4))
        assert wait_for(_no_tasks_left, timeout=10), graphstore.cluster_status()
    finally:
        open(gate, "w").close()


def test_results_as_generators(cluster, tmp_path):
    with joblib.parallel_config(backend="graphstore"):
        ordered = Parallel(n_jobs=2, return_as="generator")(
            delayed(_square)(i) for i in range(30))
        assert not isinstance(ordered, list)
        assert list(ordered) == [i * i for i in range(30)]
        unordered = Parallel(n_jobs=2, return_as="generator_unordered")(
            delayed(_square)(i) for i in range(30))
        assert sorted(unordered) == [i * i for i in range(30)]

        gate = str(tmp_path / "gate")
        try:                               # a generator dropped early cancels the rest
            calls = [delayed(_square)(3)] + [delayed(_wait_for_file)(gate, i)
                                             for i in range(4)]
            partial = Parallel(n_jobs=2, batch_size=1, return_as="generator")(calls)
            assert next(partial) == 9
            with pytest.warns(UserWarning, match="cancelled"):
                partial.close()
            assert wait_for(_no_tasks_left, timeout=10), graphstore.cluster_status()
        finally:
            open(gate, "w").close()


def test_a_large_array_is_put_once_per_call(cluster, monkeypatch):
    big = np.arange(500_000, dtype=np.float64)          # 4 MB: above max_nbytes (1 MiB)
    weights = np.ones(200_000)                          # 1.6 MB, inside a dict
    puts = []
    real_put = graphstore.put
    monkeypatch.setattr(graphstore, "put", lambda value: puts.append(value) or
                        real_put(value))
    calls = [delayed(_describe)(big, {"sample_weight": weights}) for _ in range(12)]
    with joblib.parallel_config(backend="graphstore"):
        results = Parallel(n_jobs=2, batch_size=1)(calls)
        assert {r[:3] for r in results} == {(float(big.sum()), False, 200_000.0)}
        assert len({r[3] for r in results}) == 2        # both workers read them
        assert len(puts) == 2 and puts[0] is big and puts[1] is weights

        puts.clear()                                     # "c": writable private copies
        results = Parallel(n_jobs=2, mmap_mode="c")(calls[:2])
        assert [r[1] for r in results] == [True, True] and len(puts) == 2

        puts.clear()                                     # max_nbytes=None: by value
        results = Parallel(n_jobs=2, max_nbytes=None)(calls[:2])
        assert [r[1] for r in results] == [True, True] and puts == []
    # The call's puts are freed once it is over.
    assert wait_for(lambda: graphstore.cluster_status()["object_bytes"] < big.nbytes,
                    timeout=10), graphstore.memory_summary()["objects"]


def test_importing_graphstore_does_not_import_joblib():
    code = ("import sys, graphstore, graphstore.util; "
            "print('joblib' in sys.modules, 'sklearn' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.stdout.split() == ["False", "False"], done.stderr


def test_the_backend_starts_a_cluster_if_none_is_running(run_driver):
    run = run_driver("""
        import os, joblib, graphstore
        from graphstore import session
        from graphstore.util.joblib import register
        register()
        with joblib.parallel_config(backend="graphstore"):
            pids = joblib.Parallel(n_jobs=-1)(joblib.delayed(os.getpid)() for _ in range(8))
        print("SESSION=" + session.current_local_cluster().session_name, flush=True)
        print("INITIALIZED=" + str(graphstore.is_initialized()))
        print("IN_DRIVER=" + str(os.getpid() in pids))
        graphstore.shutdown()
    """)
    assert run.returncode == 0, run.stderr
    assert run.value("INITIALIZED") == "True"
    assert run.value("IN_DRIVER") == "False"


def test_the_sklearn_example_runs(run_driver):
    from helpers import run_example
    run = run_example(run_driver, "sklearn_joblib.py")
    assert "same best parameters as n_jobs=1: True" in run.stdout
