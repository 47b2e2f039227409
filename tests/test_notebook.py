"""A real notebook: built with nbformat, executed by nbclient on an ipykernel kernel that
runs this interpreter, and judged by the ``text/html`` its cells display: the cluster
``init()`` started, a small and a big object, a task that fails, an actor, and all of
them again after ``shutdown()``. Afterwards no process or shared-memory segment of the
kernel's cluster may be left, even when the notebook failed.

The kernel is described by a kernelspec written for the test (``sys.executable -m
ipykernel_launcher``), so no kernelspec of the user or the system is involved.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import nbformat
import numpy as np
import psutil
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient

from graphstore.core.formatting import format_bytes
from helpers import shm_files, wait_for

KERNEL = "graphstore-test"
#: Elements of the big object (float64): well above the inline threshold.
BIG_ELEMENTS = 2_000_000

CELLS = [
    # 0: the cluster
    """import graphstore, numpy as np
ctx = graphstore.init(num_cpus=1, startup_timeout=10)
from graphstore import session
import os
print("KERNEL=" + str(os.getpid()))
print("SESSION=" + session.current_local_cluster().session_name)
print("CLUSTER=" + session.current_local_cluster().cluster_id)
print("ADDRESS=" + ctx.address)
print("DASHBOARD=" + ctx.dashboard_url)
ctx""",
    # 1: a small object (inline)
    """small = graphstore.put({"<key>": 1})
small""",
    # 2: a big object (in a worker's store)
    f"""big = graphstore.put(np.ones({BIG_ELEMENTS}))
print("BIG=" + big.hex())
big""",
    # 3: a task that fails, its error
    """@graphstore.remote
def fails(x):
    raise ValueError(f"bad <input> {x}")

failed = fails.remote(1)
try:
    graphstore.get(failed)
except ValueError as exc:
    error = exc
error""",
    # 4: the failed task's ref
    "failed",
    # 5: an actor
    """@graphstore.remote
class Counter:
    def incr(self):
        return 1

counter = Counter.options(name="counter").remote()
graphstore.get(counter.incr.remote())
counter""",
    # 6: the cluster is gone
    """graphstore.shutdown()
ctx""",
    # 7, 8: what is known of a ref and an actor without it
    "big",
    "counter",
]


@pytest.fixture
def kernel_manager(tmp_path):
    """A kernel manager whose only kernelspec runs this interpreter."""
    spec_dir = tmp_path / "kernels" / KERNEL
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "graphstore test kernel", "language": "python"}))
    specs = KernelSpecManager(kernel_dirs=[str(tmp_path / "kernels")],
                              ensure_native_kernel=False)
    return AsyncKernelManager(kernel_name=KERNEL, kernel_spec_manager=specs)


def _html(cell) -> str:
    """The ``text/html`` a cell displayed (its result)."""
    for output in cell.outputs:
        if "text/html" in output.get("data", {}):
            return output["data"]["text/html"]
    raise AssertionError(f"cell displayed no HTML: {cell.outputs}")


def _printed(cell, key: str) -> str:
    text = "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")
    found = re.search(rf"^{key}=(.*)$", text, re.M)
    assert found, f"no {key}= in {text!r}"
    return found.group(1)


def _words(page: str) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", page).split())


def _kill_kernel(procs, pid: int) -> None:
    """SIGKILL the kernel ``pid`` if it still runs (and is still that kernel)."""
    try:
        kernel = psutil.Process(pid)
        if "ipykernel_launcher" in " ".join(kernel.cmdline()):
            procs.kill_all([kernel])
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        pass


def _printed_or_none(notebook, key: str) -> str | None:
    try:
        return _printed(notebook.cells[0], key)
    except (AssertionError, IndexError):
        return None


def test_a_notebook_shows_cluster_objects_errors_and_actors(kernel_manager, tmp_path,
                                                            procs):
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(source) for source in CELLS]
    client = NotebookClient(notebook, km=kernel_manager, timeout=60,
                            resources={"metadata": {"path": str(tmp_path)}})
    try:
        client.execute(cleanup_kc=True)      # ends with the kernel shut down
    finally:
        # A kernel that failed or hung is killed; its cluster must then stop by itself,
        # as any driver's does (docs/architecture.md), and is killed if it does not.
        kernel = _printed_or_none(notebook, "KERNEL")
        if kernel is not None:
            _kill_kernel(procs, int(kernel))
        session = _printed_or_none(notebook, "SESSION")
        if session is not None:
            left = procs.wait_gone(procs.session_processes(session_name=session),
                                   timeout=10)
            procs.kill_all(left)
            assert not left, f"the kernel's cluster left processes: {[p.pid for p in left]}"
    cells = notebook.cells
    cluster_id = _printed(cells[0], "CLUSTER")
    address, dashboard = _printed(cells[0], "ADDRESS"), _printed(cells[0], "DASHBOARD")

    cluster = _html(cells[0])
    assert f'<a href="{dashboard}"' in cluster
    words = _words(cluster)
    assert f"Scheduler {address}" in words and "graphstore cluster connected" in words
    assert "Workers 1 on 1 node" in words and "CPUs 0 of 1 in use" in words

    small = _words(_html(cells[1]))
    assert "ready" in small and "inline" in small

    big = _words(_html(cells[2]))
    assert _printed(cells[2], "BIG") in big and "ready" in big
    assert f"Size {format_bytes(np.ones(BIG_ELEMENTS).nbytes)}" in big
    assert "store of worker" in big

    error_page = _html(cells[3])
    assert "<script" not in error_page and "<input>" not in error_page
    error = _words(error_page)
    assert "TaskError: ValueError in task fails" in error
    assert "bad &lt;input&gt; 1" in error and "Traceback (most recent call last)" in error
    assert "<details" in error_page

    failed = _words(_html(cells[4]))
    assert "error" in failed and "Made by fails (failed)" in failed

    actor = _words(_html(cells[5]))
    assert "Actor Counter" in actor and "alive" in actor and "Name counter" in actor

    for gone in cells[6:9]:
        assert "not connected" in _words(_html(gone))
    assert f"Scheduler {address}" in _words(_html(cells[6]))
    assert "Class Counter" in _words(_html(cells[8]))

    # Nothing of the kernel's cluster is left (its processes: checked above).
    assert wait_for(lambda: not shm_files(f"gs-{cluster_id}"), timeout=10), \
        shm_files(f"gs-{cluster_id}")


def test_the_notebook_example_runs(run_driver, tmp_path):
    from helpers import run_example
    page_path = tmp_path / "cards.html"
    run = run_example(run_driver, "notebook.py", str(page_path))
    assert f"wrote 8 cards to {page_path}" in run.stdout
    page = _words(page_path.read_text())
    big_size = format_bytes(np.ones(1_000_000).nbytes)      # the example's big object
    for part in ("graphstore cluster connected", "ObjectRef ready", f"Size {big_size}",
                 "TaskError: ZeroDivisionError in task divide", "Actor Counter alive",
                 "graphstore cluster not connected"):
        assert part in page, (part, page)


def test_cards_of_ids_the_cluster_does_not_know(cluster):
    """Ids that name nothing (or are not even ids) get an answer, not an error, and the
    scheduler keeps serving."""
    import graphstore
    from graphstore import session
    from graphstore.core import protocol as msg
    from graphstore.core.object_ref import ObjectRef
    runtime = session.get_runtime()
    assert runtime.request(msg.DescribeObject(b"abc")) == {"id": "616263",
                                                          "state": "unknown"}
    assert runtime.request(msg.DescribeActor(b"\0" * 16))["state"] == "unknown"
    text = _words(ObjectRef(b"\x02" * 16)._repr_html_())
    assert "the scheduler does not know this object" in text
    assert graphstore.get(graphstore.put("still serving")) == "still serving"
    assert "graphstore cluster connected" in _words(cluster._repr_html_())
