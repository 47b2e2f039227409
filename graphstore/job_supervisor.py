"""The process that runs one job on the scheduler's host, started by the scheduler
(``scheduler/job_processes.py``) in a session of its own, its stdout and stderr going to
the job's log file. The scheduler runs this file by its path, not as ``python -m
graphstore.job_supervisor`` (which works too), so that it imports only the standard
library until a job needs the cluster: graphstore is imported only to fetch a
working_dir or hold entrypoint CPUs.

It prepares the job (unpacks its ``working_dir`` package, holds its
``entrypoint_num_cpus`` on the cluster), runs the entrypoint with ``/bin/sh -c`` in its
own process group, and exits with the entrypoint's exit code. It tells the scheduler
what happens on the status pipe, one JSON line per event: ``{"event": "running"}``,
``{"event": "setup_failed", "message": ...}``, ``{"event": "exited", "code": ...}``.

It belongs to the cluster, not to whoever submitted the job: its standard input is a
pipe from the scheduler; when the scheduler goes away (even killed with SIGKILL) the
pipe closes and the supervisor ends the job's whole process group. A SIGTERM (``stop``)
reaches the entrypoint, which the supervisor waits for.

The entrypoint gets ``GRAPHSTORE_ADDRESS`` and ``GRAPHSTORE_TOKEN`` (so ``init()`` with
no address joins this cluster), ``GRAPHSTORE_JOB_SUBMISSION_ID``, the runtime_env's
``env_vars`` and ``GRAPHSTORE_JOB_RUNTIME_ENV``, the job's runtime_env as JSON, which
``init()`` takes as the default runtime_env of the job's tasks and actors.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

#: The job's spec, JSON, in the supervisor's environment (never the entrypoint's).
SPEC_ENV = "GRAPHSTORE_JOB_SPEC"
#: The job's runtime_env, JSON, in the entrypoint's environment.
RUNTIME_ENV_ENV = "GRAPHSTORE_JOB_RUNTIME_ENV"
SUBMISSION_ID_ENV = "GRAPHSTORE_JOB_SUBMISSION_ID"
#: Seconds between SIGTERM and SIGKILL when the scheduler has gone away.
ORPHAN_GRACE = 3.0


class Supervisor:
    def __init__(self, spec: dict[str, Any], status_fd: int):
        self.spec = spec
        self.status_fd = status_fd
        self.child: subprocess.Popen | None = None
        self._terminated = False
        self._holder: Any = None
        self._connected = False

    # -- status pipe ------------------------------------------------------------------
    def report(self, event: str, **fields: Any) -> None:
        line = json.dumps({"event": event, **fields}) + "\n"
        try:
            os.write(self.status_fd, line.encode())
        except OSError:
            pass           # the scheduler is gone; the lifeline watcher ends the job

    # -- signals and the lifeline -----------------------------------------------------
    def on_sigterm(self, signum, frame) -> None:
        """A stop: the entrypoint's group got the signal too; make sure the entrypoint
        did (a SIGTERM sent to this process alone), then wait for it to exit."""
        if self._terminated:
            return
        self._terminated = True
        child = self.child
        if child is None:
            raise SystemExit(128 + signal.SIGTERM)       # still preparing: just stop
        try:
            os.kill(child.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass

    def watch_lifeline(self) -> None:
        """Standard input is a pipe from the scheduler: EOF means it is gone."""
        try:
            while os.read(0, 4096):
                pass
        except OSError:
            pass
        sys.stderr.write("graphstore job: the scheduler went away; stopping the job\n")
        sys.stderr.flush()
        try:
            os.killpg(0, signal.SIGTERM)
        except OSError:
            pass
        time.sleep(ORPHAN_GRACE)
        os.killpg(0, signal.SIGKILL)

    # -- preparing --------------------------------------------------------------------
    def prepare(self) -> str:
        """Fetch what the job needs; returns its working directory. Raises
        ``SetupError`` saying what failed."""
        runtime_env = self.spec.get("runtime_env") or {}
        working_dir = runtime_env.get("working_dir")
        cpus = float(self.spec.get("entrypoint_num_cpus") or 0.0)
        cwd = os.getcwd()
        if working_dir:
            cached = self._cached_package(working_dir)
            if cached is None:
                self._connect()
            cwd = cached or str(self._ensure_package(working_dir))
        if cpus:
            if not self._connected:
                self._connect()
            self._reserve(cpus)
        return cwd

    @staticmethod
    def _cached_package(uri: str) -> str | None:
        """The package's directory if this host has unpacked it already: then the job
        needs no connection (and no graphstore import beyond packages and config)."""
        try:
            from graphstore.core.config import load_config
            from graphstore.core.packages import cache_dir_from, cached_package
            found = cached_package(uri, cache_dir_from(load_config().runtime_env_cache_dir))
        except Exception:        # a bad URI or setting: the full path says what is wrong
            return None
        return str(found) if found is not None else None

    def _connect(self) -> None:
        import graphstore
        try:
            graphstore.init(address=os.environ["GRAPHSTORE_ADDRESS"], log_to_driver=False,
                            logging_level="WARNING")
        except Exception as exc:
            raise SetupError(f"cannot join the cluster: {exc}") from None
        self._connected = True

    @staticmethod
    def _ensure_package(uri: str):
        try:
            from graphstore.runtime.packages_client import ensure_local_package
        except ImportError:
            raise SetupError(f"working_dir {uri!r}: this graphstore has no runtime_env "
                             f"packages") from None
        try:
            return ensure_local_package(uri)
        except Exception as exc:
            raise SetupError(f"working_dir {uri!r} could not be fetched and unpacked: "
                             f"{type(exc).__name__}: {exc}") from None

    def _reserve(self, cpus: float) -> None:
        """Hold ``cpus`` CPUs on the cluster while the entrypoint runs, as Ray's
        ``entrypoint_num_cpus``: an actor that asks for them and does nothing. The
        job stays PENDING until a node has them free."""
        import graphstore

        @graphstore.remote
        class EntrypointCPUs:
            def ready(self) -> bool:
                return True

        self._holder = EntrypointCPUs.options(num_cpus=cpus).remote()
        try:
            graphstore.get(self._holder.ready.remote())
        except Exception as exc:
            raise SetupError(f"cannot reserve entrypoint_num_cpus={cpus:g}: "
                             f"{type(exc).__name__}: {exc}") from None

    def release(self) -> None:
        if not self._connected:
            return
        import graphstore
        try:
            if self._holder is not None:
                graphstore.kill(self._holder)
        except Exception:
            pass
        graphstore.shutdown()

    # -- running ----------------------------------------------------------------------
    def entrypoint_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != SPEC_ENV}
        runtime_env = self.spec.get("runtime_env") or {}
        env.update(runtime_env.get("env_vars") or {})
        env[RUNTIME_ENV_ENV] = json.dumps(runtime_env)
        env[SUBMISSION_ID_ENV] = self.spec["submission_id"]
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self.on_sigterm)
        threading.Thread(target=self.watch_lifeline, name="graphstore-job-lifeline",
                         daemon=True).start()
        try:
            cwd = self.prepare()
        except SetupError as exc:
            sys.stderr.write(f"graphstore job: runtime_env setup failed: {exc}\n")
            self.report("setup_failed", message=str(exc))
            self.release()
            return 1
        try:
            self.child = subprocess.Popen(["/bin/sh", "-c", self.spec["entrypoint"]],
                                          stdin=subprocess.DEVNULL, cwd=cwd,
                                          env=self.entrypoint_env())
        except OSError as exc:
            sys.stderr.write(f"graphstore job: cannot start the entrypoint: {exc}\n")
            self.report("setup_failed", message=f"cannot start the entrypoint: {exc}")
            self.release()
            return 1
        self.report("running", pid=self.child.pid)
        code = self.child.wait()
        self.release()
        self.report("exited", code=code)
        return code if code >= 0 else 128 - code


class SetupError(Exception):
    """The job could not be prepared; the text says what and why."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m graphstore.job_supervisor")
    parser.add_argument("--status-fd", type=int, required=True)
    args = parser.parse_args(argv)
    try:
        spec = json.loads(os.environ[SPEC_ENV])
    except (KeyError, ValueError) as exc:
        sys.stderr.write(f"graphstore job: no valid {SPEC_ENV}: {exc}\n")
        return 2
    os.set_inheritable(args.status_fd, False)
    return Supervisor(spec, args.status_fd).run()


if __name__ == "__main__":
    sys.exit(main())
