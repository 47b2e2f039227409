"""runtime_env on a real cluster: working_dir, py_modules and pip shipped through the
object store, set up by the workers, one process per environment.

One local cluster serves the module (its own cache directory and a 1 MiB package limit),
and one pip virtualenv, built from a wheel made here by hand (never the internet), serves
every pip test. Unit tests of packing and unpacking are in ``test_packages.py``.
"""
from __future__ import annotations

import base64
import hashlib
import os
import sys
import zipfile
from pathlib import Path

import pytest

import graphstore
from graphstore import session
from graphstore.core import packages
from graphstore.core import protocol as msg
from graphstore.exceptions import PackageError, RuntimeEnvSetupError
from graphstore.runtime.packages_client import ensure_local_package, upload_package

from fixtures.clusters import init_local_cluster
from fixtures.processes import kill_all, session_processes, wait_gone
from helpers import run_example


# == the state machine (no processes) ==========================================================

URI_A = "gspkg://" + "a" * 64 + ".zip"
URI_B = "gspkg://" + "b" * 64 + ".zip"


def test_the_scheduler_holds_packages_and_counts_uploads():
    from test_scheduler_state import DRIVER, Harness
    h = Harness()
    h.worker("w1")
    assert h.s.lookup_package(msg.LookupPackage(URI_A)) is False
    obj = h.put(payload=(b"zip bytes",))
    assert h.s.register_package(DRIVER, msg.RegisterPackage(URI_A, obj, 9)) is True
    assert h.s.lookup_package(msg.LookupPackage(URI_A)) is True
    assert h.s.package_object(msg.GetPackage(URI_A)) == obj
    # The uploader's ref goes: the scheduler still holds the package.
    h.s.decref(DRIVER, [obj])
    assert obj in h.s.objects
    again = h.put(payload=(b"zip bytes",))
    assert h.s.register_package(DRIVER, msg.RegisterPackage(URI_A, again, 9)) is False
    assert (h.s.counts["packages_uploaded"], h.s.counts["package_bytes_uploaded"]) == (1, 9)
    with pytest.raises(ValueError, match="not one the sender holds"):
        h.s.register_package(DRIVER, msg.RegisterPackage(URI_B, b"x" * 16, 1))
    with pytest.raises(PackageError, match="not a package URI"):
        h.s.register_package(DRIVER, msg.RegisterPackage("gspkg://../x.zip", again, 1))


def test_a_failed_set_up_fails_the_tasks_waiting_for_that_environment():
    from test_ray_resources import register, started, submit
    from test_scheduler_state import Harness
    from graphstore.core.serialization import error_payload
    h = Harness()
    w = h.worker("w1", cpus=3)
    env_a = {"working_dir": URI_A}
    t1, (r1,) = submit(h, runtime_env=env_a)
    t2, (r2,) = submit(h, runtime_env=env_a)
    t3, (r3,) = submit(h, runtime_env={"working_dir": URI_B})
    h.s.schedule()
    starts = started(h)
    keys = {m.environment["runtime_env"]["working_dir"] for _, m in starts}
    assert keys == {URI_A, URI_B}              # two environments: two processes
    failing = [m for _, m in starts if m.environment["runtime_env"] == env_a]
    error = error_payload(RuntimeEnvSetupError("pip said no"))
    for start in failing:
        h.s.task_process_setup_failed(w, msg.TaskProcessSetupFailed(start.process_id,
                                                                    error))
    for r in (r1, r2):
        assert isinstance(h.error_of(r), RuntimeEnvSetupError)
    assert h.s.tasks[t3].state == "assigned"   # the other environment is untouched
    other = next(m for _, m in starts if m.environment["runtime_env"] != env_a)
    proc = register(h, w, other)
    assert h.run_tasks(proc) == [t3]
    assert t1 not in h.s.tasks and t2 not in h.s.tasks


def make_wheel(directory: Path, name: str = "gs_tiny_wheel", version: str = "0.1",
               source: str = "MAGIC = 1234\n") -> Path:
    """A pure-Python wheel of one module, written with zipfile (no build tools)."""
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": source.encode(),
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
                            .encode(),
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: graphstore-tests\n"
                         b"Root-Is-Purelib: true\nTag: py3-none-any\n",
    }

    def digest(data: bytes) -> str:
        return "sha256=" + base64.urlsafe_b64encode(
            hashlib.sha256(data).digest()).rstrip(b"=").decode()
    record = "".join(f"{n},{digest(d)},{len(d)}\n" for n, d in files.items())
    files[f"{dist}/RECORD"] = (record + f"{dist}/RECORD,,\n").encode()
    path = directory / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for entry, data in files.items():
            zf.writestr(entry, data)
    return path


class Env:
    def __init__(self, root: Path, address: str, token: str):
        self.root = root
        self.cache = root / "cache"
        self.address = address
        self.token = token
        self.wd = root / "project"
        self.wd.mkdir()
        (self.wd / "only_in_wd.py").write_text("VALUE = 'from the working_dir'\n")
        (self.wd / "data").mkdir()
        (self.wd / "data" / "table.csv").write_text("a,b\n1,2\n")
        self.mods = root / "mods"
        (self.mods / "gs_shipped_pkg").mkdir(parents=True)
        (self.mods / "gs_shipped_pkg" / "__init__.py").write_text(
            "def hello():\n    return 'hello from a py_module'\n")
        (self.mods / "gs_single_module.py").write_text("ANSWER = 42\n")
        self.wheels = root / "wheels"
        self.wheels.mkdir()
        make_wheel(self.wheels)
        self.pip = ["--no-index", f"--find-links={self.wheels}", "gs_tiny_wheel"]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("runtime-env")
    graphstore.shutdown()
    init_local_cluster(num_cpus=2, include_dashboard=False, max_package_bytes=2**20,
                       runtime_env_cache_dir=str(root / "cache"))
    local = session.current_local_cluster()
    yield Env(root, local.address, local.token)
    graphstore.shutdown()
    left = wait_gone(session_processes(session_name=local.session_name), timeout=5.0)
    if left:
        kill_all(left)
        pytest.fail(f"the cluster left processes behind: {[p.pid for p in left]}")


def uploads() -> tuple[int, int]:
    counts = graphstore.cluster_status()["counts"]
    return counts["packages_uploaded"], counts["package_bytes_uploaded"]


@graphstore.remote
def where_am_i():
    import only_in_wd
    with open("data/table.csv") as f:
        table = f.read()
    return {"value": only_in_wd.VALUE, "table": table, "cwd": os.getcwd(),
            "path0": sys.path[0], "pid": os.getpid(), "python": sys.executable}


@graphstore.remote
def pid_and_env():
    return os.getpid(), os.environ.get("GS_RENV_VAR")


def test_working_dir_is_the_cwd_and_first_on_sys_path(env):
    before = uploads()
    seen = graphstore.get(where_am_i.options(
        runtime_env={"working_dir": str(env.wd)}).remote(), timeout=60)
    assert seen["value"] == "from the working_dir"
    assert seen["table"] == "a,b\n1,2\n"
    unpacked = env.cache / "packages"
    assert Path(seen["cwd"]).parent == unpacked and seen["path0"] == seen["cwd"]
    assert seen["python"] == sys.executable            # no pip: the worker's Python
    assert os.getcwd() != seen["cwd"]                  # the driver stays where it is
    assert uploads()[0] == before[0] + 1


def test_a_second_upload_of_the_same_directory_sends_nothing(env, run_driver):
    """Another job (a driver of its own) with the same directory: the scheduler knows
    its URI, so no package is uploaded, and its task runs with the files all the same."""
    first = upload_package(env.wd)
    before = uploads()
    assert upload_package(env.wd) == first and uploads() == before
    run = run_driver(f"""
        import graphstore
        graphstore.init(address={env.address!r},
                        runtime_env={{"working_dir": {str(env.wd)!r}}})
        @graphstore.remote
        def read():
            import only_in_wd
            return only_in_wd.VALUE + " / " + open("data/table.csv").read().split()[1]
        print("SEEN=" + graphstore.get(read.remote(), timeout=60))
        graphstore.shutdown()
    """, env={"GRAPHSTORE_TOKEN": env.token})
    assert run.returncode == 0, run.stderr
    assert run.value("SEEN") == "from the working_dir / 1,2"
    assert uploads() == before
    # A changed file is another package.
    (env.root / "other").mkdir()
    (env.root / "other" / "only_in_wd.py").write_text("VALUE = 'changed'\n")
    assert upload_package(env.root / "other") != first
    assert uploads()[0] == before[0] + 1


def test_ensure_local_package_fetches_through_the_object_store(env):
    uri = upload_package(env.mods / "gs_shipped_pkg", prefix="gs_shipped_pkg")
    target = env.cache / "packages" / packages.uri_digest(uri)
    assert not target.exists()

    @graphstore.remote
    def fetch(uri):
        return str(ensure_local_package(uri))
    assert graphstore.get(fetch.remote(uri), timeout=60) == str(target)
    assert (target / "gs_shipped_pkg" / "__init__.py").exists()
    with pytest.raises(PackageError, match="has no package"):
        ensure_local_package("gspkg://" + "f" * 64 + ".zip")


def test_py_modules_are_importable(env):
    @graphstore.remote(runtime_env={"py_modules": [str(env.mods / "gs_shipped_pkg"),
                                                   str(env.mods / "gs_single_module.py")]})
    def use_modules():
        import gs_shipped_pkg
        import gs_single_module
        return gs_shipped_pkg.hello(), gs_single_module.ANSWER
    assert graphstore.get(use_modules.remote(), timeout=60) == ("hello from a py_module", 42)


def test_job_and_task_environments_merge_as_in_ray(env, run_driver):
    """init(runtime_env=) is the job's; a task's own keys replace it key by key and its
    env_vars merge variable by variable."""
    run = run_driver(f"""
        import os, graphstore
        graphstore.init(address={env.address!r}, runtime_env={{
            "working_dir": {str(env.wd)!r},
            "env_vars": {{"GS_JOB": "job", "GS_BOTH": "job"}}}})
        @graphstore.remote
        def look():
            import only_in_wd
            try:
                import gs_shipped_pkg
                mod = gs_shipped_pkg.hello()
            except ImportError:
                mod = None
            return [only_in_wd.VALUE, mod, os.environ.get("GS_JOB"),
                    os.environ.get("GS_BOTH")]
        print("JOB=" + repr(graphstore.get(look.remote(), timeout=60)))
        own = look.options(runtime_env={{"py_modules": [{str(env.mods / 'gs_shipped_pkg')!r}],
                                         "env_vars": {{"GS_BOTH": "task"}}}})
        print("TASK=" + repr(graphstore.get(own.remote(), timeout=60)))
        @graphstore.remote
        def nested():
            return graphstore.get(look.remote(), timeout=60)
        print("NESTED=" + repr(graphstore.get(
            nested.options(runtime_env={{"env_vars": {{"GS_BOTH": "parent"}}}}).remote(),
            timeout=60)))
        graphstore.shutdown()
    """, env={"GRAPHSTORE_TOKEN": env.token})
    assert run.returncode == 0, run.stderr
    assert run.value("JOB") == repr(["from the working_dir", None, "job", "job"])
    assert run.value("TASK") == repr(["from the working_dir", "hello from a py_module",
                                      "job", "task"])
    # A task submitted by a task inherits its parent's environment.
    assert run.value("NESTED") == repr(["from the working_dir", None, "job", "parent"])


def test_two_environments_never_share_a_process(env):
    one = pid_and_env.options(runtime_env={"working_dir": str(env.wd),
                                           "env_vars": {"GS_RENV_VAR": "one"}})
    two = pid_and_env.options(runtime_env={"working_dir": str(env.wd),
                                           "env_vars": {"GS_RENV_VAR": "two"}})
    plain = pid_and_env.options(runtime_env={"env_vars": {"GS_RENV_VAR": "one"}})
    first = graphstore.get(one.remote(), timeout=60)
    assert graphstore.get(one.remote(), timeout=60) == first   # reused for its key
    results = graphstore.get([two.remote(), plain.remote()], timeout=60)
    assert len({first[0], results[0][0], results[1][0]}) == 3, results
    assert [r[1] for r in results] == ["two", "one"]


def test_pip_installs_a_local_wheel_into_a_venv_of_its_own(env):
    @graphstore.remote(runtime_env={"pip": env.pip})
    def use_wheel():
        import gs_tiny_wheel
        return gs_tiny_wheel.MAGIC, sys.executable, os.getpid()
    magic, python, pid = graphstore.get(use_wheel.remote(), timeout=120)
    assert magic == 1234
    assert Path(python).parent.parent.parent == env.cache / "venvs"
    # Once built, the venv and the process are reused.
    assert graphstore.get(use_wheel.remote(), timeout=60) == (magic, python, pid)
    assert len([p for p in (env.cache / "venvs").iterdir() if p.is_dir()]) == 1
    # The driver's own environment does not have it.
    with pytest.raises(ImportError):
        import gs_tiny_wheel  # noqa: F401


def test_a_bad_requirement_fails_the_task_with_pips_output(env):
    @graphstore.remote(runtime_env={"pip": ["--no-index", f"--find-links={env.wheels}",
                                            "gs_no_such_package==9.9"]})
    def never():
        return "ran"
    with pytest.raises(RuntimeEnvSetupError) as info:
        graphstore.get(never.remote(), timeout=120)
    text = str(info.value)
    assert "gs_no_such_package==9.9" in text and "No matching distribution" in text
    # The workers live on and serve tasks, plain ones and ones with an environment.
    status = graphstore.cluster_status()
    assert status["workers"] == 2
    assert graphstore.get(pid_and_env.remote(), timeout=30)[0] > 0
    assert graphstore.get(where_am_i.options(
        runtime_env={"working_dir": str(env.wd)}).remote(), timeout=60)["table"]


def test_bad_packages_are_refused_with_clear_errors(env, tmp_path):
    big = tmp_path / "too_big"
    big.mkdir()
    (big / "blob.bin").write_bytes(os.urandom(2 * 2**20))
    with pytest.raises(PackageError, match=r"too_big.* is 2\.0 MiB.*max_package_bytes"):
        where_am_i.options(runtime_env={"working_dir": str(big)}).remote()
    slip = tmp_path / "slip.zip"
    with zipfile.ZipFile(slip, "w") as zf:
        zf.writestr("../gs_escaped.py", "X = 1\n")
    with pytest.raises(PackageError, match=r"unsafe entry '\.\./gs_escaped\.py'"):
        where_am_i.options(runtime_env={"working_dir": str(slip)}).remote()
    with pytest.raises(PackageError, match="no such file"):
        where_am_i.options(runtime_env={"working_dir": str(tmp_path / "missing")}).remote()


def test_a_forged_package_fails_the_task_not_the_worker(env, tmp_path):
    """A zip-slip package that did not come through pack() (a forged upload) is refused
    by the worker that unpacks it: the task fails with RuntimeEnvSetupError, nothing
    lands outside the cache, the worker serves the next task."""
    zipped = tmp_path / "forged.zip"
    with zipfile.ZipFile(zipped, "w") as zf:
        zf.writestr("../../gs_forged_escape.py", "X = 1\n")
    data = zipped.read_bytes()
    uri = packages.package_uri(data)
    runtime = session.get_runtime()
    ref = graphstore.put(data)
    assert runtime.request(msg.RegisterPackage(uri, ref.id, len(data))) is True
    with pytest.raises(RuntimeEnvSetupError, match="unsafe entry"):
        graphstore.get(where_am_i.options(runtime_env={"working_dir": uri}).remote(),
                       timeout=60)
    assert not (env.cache / "gs_forged_escape.py").exists()
    assert not (env.cache.parent / "gs_forged_escape.py").exists()
    assert graphstore.cluster_status()["workers"] == 2
    assert graphstore.get(pid_and_env.remote(), timeout=30)[0] > 0


def test_actors_run_in_their_environment(env):
    @graphstore.remote
    class Reader:
        def read(self):
            import only_in_wd
            return only_in_wd.VALUE, open("data/table.csv").read(), os.getcwd()

        def wheel(self):
            import gs_tiny_wheel
            return gs_tiny_wheel.MAGIC, sys.executable

    reader = Reader.options(runtime_env={"working_dir": str(env.wd)}).remote()
    value, table, cwd = graphstore.get(reader.read.remote(), timeout=60)
    assert (value, table) == ("from the working_dir", "a,b\n1,2\n")
    assert Path(cwd).parent == env.cache / "packages"
    with_pip = Reader.options(runtime_env={"working_dir": str(env.wd),
                                           "pip": env.pip}).remote()
    magic, python = graphstore.get(with_pip.wheel.remote(), timeout=120)
    assert magic == 1234 and Path(python).parent.parent.parent == env.cache / "venvs"
    assert graphstore.get(with_pip.read.remote(), timeout=60)[0] == "from the working_dir"
    broken = Reader.options(runtime_env={"pip": ["--no-index", "gs_no_such_package"]}
                            ).remote()
    with pytest.raises(RuntimeEnvSetupError, match="gs_no_such_package"):
        graphstore.get(broken.read.remote(), timeout=120)
    graphstore.kill(reader)
    graphstore.kill(with_pip)


def test_the_example_runs(run_driver, monkeypatch, tmp_path):
    monkeypatch.setenv("GRAPHSTORE_RUNTIME_ENV_CACHE_DIR", str(tmp_path / "cache"))
    run = run_example(run_driver, "runtime_env.py")
    assert "total from the working_dir: (1.25, False)" in run.stdout
    assert "with pip (price, in a venv): (1.5, True)" in run.stdout
    assert "actor: EUR 1.25 (prices in euros)" in run.stdout
    assert "No matching distribution found for no_such_package_here" in run.stdout
    assert (tmp_path / "cache" / "venvs").is_dir()


def test_set_up_processes_die_with_their_worker(tmp_path):
    """A set-up command (pip, venv) is a child of the worker: killed when the worker
    closes (``kill_setups``) and, on Linux, when the worker dies of SIGKILL (nobody
    sweeps the process group of a worker started by hand). ``sleep`` stands for a pip
    stuck on an index: it writes nothing, so no broken pipe would end it."""
    import contextlib
    import signal
    import subprocess
    import textwrap

    import psutil
    from helpers import wait_for
    script = textwrap.dedent(f"""
        import sys, threading, time
        from pathlib import Path
        from graphstore.worker import runtime_env
        def run():
            try:
                runtime_env._run(["sleep", "60"], "a stuck install", Path({str(tmp_path)!r}))
            except Exception as exc:
                print("ENDED", type(exc).__name__, flush=True)
        thread = threading.Thread(target=run)
        thread.start()
        time.sleep(0.5)
        if sys.argv[1] == "close":
            runtime_env.kill_setups()
            thread.join(10)
        print("READY", flush=True)
        time.sleep(60)
    """)
    for mode in ("close", "sigkill"):
        stand_in = subprocess.Popen([sys.executable, "-c", script, mode],
                                    stdout=subprocess.PIPE, text=True)
        sleeps: list = []
        try:
            line = stand_in.stdout.readline()
            if mode == "close":
                assert line.strip() == "ENDED RuntimeEnvSetupError"
                assert not psutil.Process(stand_in.pid).children()
                continue
            sleeps = [c for c in psutil.Process(stand_in.pid).children()
                      if c.name() == "sleep"]
            assert len(sleeps) == 1
            stand_in.send_signal(signal.SIGKILL)
            stand_in.wait(10)
            assert wait_for(lambda: not sleeps[0].is_running()
                            or sleeps[0].status() == psutil.STATUS_ZOMBIE, timeout=10)
        finally:
            stand_in.kill()
            stand_in.wait(10)
            for sleep in sleeps:          # a test that fails leaves nothing behind
                with contextlib.suppress(psutil.Error):
                    sleep.kill()
