"""Making a host ready for a runtime environment: packages unpacked, pip venvs built.

Before a worker starts the process of a task or an actor whose ``runtime_env`` ships
packages or pip requirements, ``prepare`` (run on a thread of its own: it can take
minutes) makes the host ready and says how to start that process:

- ``working_dir`` and ``py_modules`` URIs are fetched through the object store and
  unpacked into the host's cache once (``packages_client.ensure_local_package``); the
  working_dir becomes the process's current directory and the first entry of its
  ``sys.path``, each py_modules directory follows it.
- ``pip`` requirements are installed into a virtualenv of their own under
  ``<cache>/venvs/<hash of the requirements and the Python>``, made with
  ``--system-site-packages`` and a ``.pth`` file that adds the worker's own
  site-packages after the venv's (so graphstore and what the host has stay importable,
  the requirements winning). A file lock keeps two workers of a host from building the
  same venv; a marker file written last says it is complete, so a venv half-built by a
  killed worker is built again. The process then runs with the venv's ``python``.

Failures raise ``RuntimeEnvSetupError`` with what went wrong: the unpack error, or the
end of pip's output. The caller fails the task (or the actor) with it; the worker lives.

The venv and pip processes are the worker's children: ``kill_setups`` (the worker's
close) ends those still running, and on Linux they get SIGKILL when the thread that
started them dies with its worker, so no installer outlives the cluster.
"""
from __future__ import annotations

import ctypes
import fcntl
import os
import shutil
import signal
import site
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

from graphstore.core import packages
from graphstore.exceptions import PackageError, RuntimeEnvSetupError
from graphstore.runtime.packages_client import ensure_local_package

#: Seconds one ``pip install`` may take (Ray's default set-up timeout is 600 s too).
PIP_TIMEOUT = 600.0
#: Characters of pip's output an error carries (its end: where pip says what failed).
OUTPUT_TAIL = 4000
_READY = ".graphstore-ready"

_children: set[subprocess.Popen] = set()
_children_lock = threading.Lock()
_closed = False


try:                             # looked up here: a forked child only calls it
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # not Linux
    _prctl = None
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child, before exec: SIGKILL when the thread that forked it ends."""
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL))


def kill_setups() -> None:
    """End every set-up process still running and refuse new ones (the worker stops)."""
    global _closed
    with _children_lock:
        _closed = True
        children = list(_children)
    for child in children:
        try:
            child.kill()
        except OSError:
            pass


@dataclass
class PreparedEnv:
    """How to start a process of a prepared environment."""
    #: The Python to run (a pip venv's, else the worker's own).
    python: str = sys.executable
    #: Its current directory (the working_dir), or None to keep the worker's.
    cwd: str | None = None
    #: Directories put first on its ``sys.path`` (working_dir, then py_modules).
    sys_path: list[str] = field(default_factory=list)
    #: Variables to set besides the task's own (PYTHONPATH, a venv's PATH).
    env: dict[str, str] = field(default_factory=dict)

    def spec(self) -> dict:
        """What the started process applies to itself (cwd, sys.path), as JSON."""
        return {"cwd": self.cwd, "sys_path": list(self.sys_path)}


def prepare(runtime_env: dict, runtime, cache_dir: Path) -> PreparedEnv:
    """Make this host ready for ``runtime_env`` (resolved: URIs, a pip list).

    Raises:
        RuntimeEnvSetupError: a package could not be fetched or unpacked, or pip failed.
    """
    prepared = PreparedEnv()
    try:
        if runtime_env.get("working_dir"):
            wd = ensure_local_package(runtime_env["working_dir"], cache_dir=cache_dir,
                                      runtime=runtime)
            prepared.cwd = str(wd)
            prepared.sys_path.append(str(wd))
        for uri in runtime_env.get("py_modules") or ():
            prepared.sys_path.append(str(ensure_local_package(uri, cache_dir=cache_dir,
                                                              runtime=runtime)))
    except (PackageError, OSError) as exc:
        raise RuntimeEnvSetupError(f"could not set up the runtime_env's packages on "
                                   f"{socket.gethostname()}: {exc}") from None
    if runtime_env.get("pip"):
        venv = ensure_venv(runtime_env["pip"], cache_dir)
        prepared.python = str(venv / "bin" / "python")
        prepared.env["VIRTUAL_ENV"] = str(venv)
        prepared.env["PATH"] = str(venv / "bin") + os.pathsep + os.environ.get("PATH", "")
    if prepared.sys_path:
        prepared.env["PYTHONPATH"] = os.pathsep.join(
            prepared.sys_path + [p for p in [os.environ.get("PYTHONPATH")] if p])
    return prepared


def _parent_site_dirs() -> list[str]:
    """This worker's site-packages directories, which a venv sees after its own."""
    dirs = list(site.getsitepackages())
    if site.ENABLE_USER_SITE:
        dirs.append(site.getusersitepackages())
    return [d for d in dict.fromkeys(dirs) if os.path.isdir(d)]


def ensure_venv(pip: dict, cache_dir: Path) -> Path:
    """The venv with ``pip``'s requirements installed on this host, built if missing.

    Args:
        pip: ``{"packages": [...], "pip_check": bool}`` (``core.packages.normalize_pip``);
            entries are lines of a requirements file, so options such as
            ``--no-index`` and ``--find-links=DIR`` work.
        cache_dir: the host's runtime-env cache.

    Returns:
        The venv's directory.

    Raises:
        RuntimeEnvSetupError: the venv could not be made or pip failed (its output's
            end in the message).
    """
    venvs = Path(cache_dir) / "venvs"
    venvs.mkdir(parents=True, exist_ok=True)
    key = packages.pip_hash(pip, f"{sys.version} {sys.executable}")
    venv = venvs / key
    if (venv / _READY).exists():
        return venv
    with open(venvs / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)       # another worker of this host may build it
        if (venv / _READY).exists():
            return venv
        shutil.rmtree(venv, ignore_errors=True)    # a half-built one from a crash
        try:
            _build_venv(venv, pip)
        except BaseException:
            shutil.rmtree(venv, ignore_errors=True)
            raise
        (venv / _READY).write_text("\n".join(pip["packages"]) + "\n")
    return venv


def _run(command: list[str], what: str, cwd: Path) -> str:
    """Run a set-up command to its end; its output (stdout and stderr)."""
    try:
        with _children_lock:
            if _closed:
                raise RuntimeEnvSetupError(f"{what}: the worker is stopping")
            child = subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, cwd=cwd, preexec_fn=_die_with_parent,
                env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1",
                     "PIP_NO_INPUT": "1"})
            _children.add(child)
    except OSError as exc:
        raise RuntimeEnvSetupError(f"{what} could not run on {socket.gethostname()}: "
                                   f"{exc}") from None
    try:
        out, _ = child.communicate(timeout=PIP_TIMEOUT)
    except subprocess.TimeoutExpired:
        child.kill()
        out, _ = child.communicate()
        raise RuntimeEnvSetupError(f"{what} took more than {PIP_TIMEOUT:.0f} s on "
                                   f"{socket.gethostname()}; its output ended with:\n"
                                   f"{out.decode(errors='replace')[-OUTPUT_TAIL:]}"
                                   ) from None
    finally:
        with _children_lock:
            _children.discard(child)
    output = out.decode(errors="replace")
    if child.returncode != 0:
        raise RuntimeEnvSetupError(f"{what} failed (exit code {child.returncode}) on "
                                   f"{socket.gethostname()}; its output ended with:\n"
                                   f"{output[-OUTPUT_TAIL:]}")
    return output


def _build_venv(venv: Path, pip: dict) -> None:
    base = getattr(sys, "_base_executable", sys.executable)
    _run([base, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)],
         "creating the virtualenv for runtime_env['pip']", venv.parent)
    python = venv / "bin" / "python"
    purelib = _run([str(python), "-c", "import sysconfig; "
                    "print(sysconfig.get_paths()['purelib'])"],
                   "locating the virtualenv's site-packages", venv.parent).strip()
    # The worker's own packages (graphstore among them) after the venv's own.
    lines = [f"import site; site.addsitedir({d!r})" for d in _parent_site_dirs()]
    Path(purelib, "_graphstore_parent.pth").write_text("\n".join(lines) + "\n")
    try:                  # pip from the worker's site-packages, else the venv's own
        _run([str(python), "-m", "pip", "--version"], "pip --version", venv)
    except RuntimeEnvSetupError:
        _run([str(python), "-m", "ensurepip", "--default-pip"],
             "installing pip into the virtualenv (ensurepip)", venv)
    requirements = venv / "requirements.txt"
    requirements.write_text("\n".join(pip["packages"]) + "\n")
    _run([str(python), "-m", "pip", "install", "-r", str(requirements)],
         f"pip install {' '.join(pip['packages'])}", venv)
    if pip.get("pip_check"):
        _run([str(python), "-m", "pip", "check"], "pip check", venv)


def apply_placement(spec: dict) -> None:
    """In a task or actor process, first thing: move into the working_dir and put it
    and the py_modules first on ``sys.path`` (``PreparedEnv.spec``; a process started
    ahead of its actor did not have them at start)."""
    cwd = spec.get("cwd")
    if cwd:
        os.chdir(cwd)
    for path in reversed(spec.get("sys_path") or ()):
        while path in sys.path:
            sys.path.remove(path)
        sys.path.insert(0, path)
