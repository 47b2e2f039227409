"""The process-wide connection to a cluster: ``init``, ``shutdown`` and the runtime.

A driver has one ``Driver`` (event-loop thread, connection, runtime and, for the embedded
default, the local cluster it owns). A worker or actor process installs its own runtime
instead (``runtime.context``), so tasks can call the same API.
"""
from __future__ import annotations

import atexit
import json
import logging
import os
import socket
import threading
import time
from dataclasses import fields
from types import TracebackType
from typing import Any, cast

from graphstore import notebook_repr
from graphstore.core import notebook_views
from graphstore.core import protocol as msg
from graphstore.core.comm import connect, set_dead_peer_timeout
from graphstore.core.config import Config, inherited_settings_environment, load_config
from graphstore.exceptions import GraphstoreError
from graphstore.local_cluster import LocalCluster
from graphstore.core.gc_policy import ThrottledCollector
from graphstore.core.loop_thread import LoopThread
from graphstore.core.node import default_node_id, detect_gpus
from graphstore.core.object_ref import new_id
from graphstore.options import env_vars_of, packages_of
from graphstore.runtime import DriverRole, Runtime, context
from graphstore.core.spill import SpillTarget, default_spill_url, sweep_default_root
from graphstore.core.tls import tls_from_config
from graphstore.core.token import load_token

logger = logging.getLogger("graphstore")

_lock = threading.RLock()
_driver: "Driver | None" = None


class ClusterContext:
    """What ``init()`` returns: where the cluster is.

    Usable as a context manager: ``with graphstore.init(): ...`` calls ``shutdown()`` at
    the end of the block.

    Attributes:
        address: the scheduler's ``tcp://host:port``.
        session_dir: a local cluster's session directory (logs, spill files); None when
            joining a cluster.
        num_workers: how many workers the cluster had when this process connected.
        resources: the cluster's total resources then.
        dashboard_url: the scheduler's status page, or None if it has none
            (``dashboard_port=0``).
    """

    def __init__(self, address: str, session_dir: str | None, num_workers: int,
                 resources: dict[str, float], dashboard_url: str | None = None) -> None:
        self.address = address
        self.session_dir = session_dir
        self.num_workers = num_workers
        self.resources = resources
        #: The scheduler's status page, or None if it has none (``dashboard_port=0``).
        self.dashboard_url = dashboard_url

    @property
    def address_info(self) -> dict[str, str | None]:
        """``address``, ``session_dir`` and ``dashboard_url`` as a dict, as Ray's
        ``address_info``.
        """
        return {"address": self.address, "session_dir": self.session_dir,
                "dashboard_url": self.dashboard_url}

    def __repr__(self) -> str:
        return (f"ClusterContext(address={self.address!r}, num_workers={self.num_workers}, "
                f"dashboard_url={self.dashboard_url!r})")

    def _repr_html_(self) -> str:
        """A notebook's card: address, a link to the status page, workers, CPUs and
        store use, from one ``DescribeCluster`` request; what ``init()`` returned when
        this cluster is no longer the one connected."""
        def draw() -> str:
            driver = _driver
            runtime = (driver.runtime if driver is not None
                       and driver.address == self.address else None)
            answer, problem = notebook_views.ask(runtime, msg.DescribeCluster())
            known = {"address": self.address, "dashboard_url": self.dashboard_url,
                     "num_workers": self.num_workers, "resources": self.resources,
                     "session_dir": self.session_dir}
            return notebook_views.cluster_html(known, answer, problem)
        return notebook_repr.never_raise(draw, self.__repr__)

    def __enter__(self) -> ClusterContext:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        shutdown()


class Driver:
    def __init__(self, config: Config, address: str | None, num_cpus: int | None,
                 resources: dict[str, float] | None, token: str | None, env: dict[str, str],
                 node_id: str | None = None, worker_node_ids: list[str] | None = None,
                 num_gpus: float | None = None,
                 job_env_vars: dict[str, str] | None = None,
                 job_packages: dict[str, Any] | None = None) -> None:
        self.config = config
        set_dead_peer_timeout(config.worker_timeout)
        self.spill_target: SpillTarget | None = None
        self.node_id = node_id or default_node_id()
        self.cluster: LocalCluster | None = None
        self.loop_thread: LoopThread | None = None
        self.collector = ThrottledCollector()
        self.runtime: Runtime | None = None
        self.dashboard_url: str | None = None
        #: Mutual TLS for every connection (None: off); a local cluster's processes too.
        self.tls = tls_from_config(config)
        #: The job's runtime_env variables its tasks and actors inherit: a local cluster's
        #: processes have them from the start; on a cluster joined they are sent along.
        self.job_env_vars = dict(job_env_vars or {})
        if address is None:
            workers = num_cpus if num_cpus is not None else (os.cpu_count() or 1)
            if self.tls is not None:
                env = {**env, **self.tls.environment()}
            env = {**env, **self.job_env_vars}
            if num_gpus is None:
                num_gpus = detect_gpus()
            # num_cpus=0: one worker with no CPU holds objects and runs zero-CPU tasks;
            # CPU work waits for workers with CPUs, as on a Ray head node without CPUs.
            self.cluster = LocalCluster(max(1, int(workers)),
                                        cpus_per_worker=1.0 if workers else 0.0,
                                        resources=resources, env=env,
                                        node_ids=worker_node_ids,
                                        store_capacity=config.object_store_memory,
                                        tls=self.tls.settings() if self.tls else None,
                                        num_gpus=num_gpus)
            try:
                # Fail before any work is accepted if the spill target is unusable.
                self.spill_target = SpillTarget(config.spill_to or default_spill_url(),
                                                config.spill_options,
                                                self.cluster.cluster_id)
                self.spill_target.probe()
                if not config.spill_to:
                    sweep_default_root(self.cluster.cluster_id)
            except BaseException:
                self.cluster.shutdown()
                raise
            address = self.cluster.start()
            token_bytes = self.cluster.token.encode()
            expected_workers = max(1, int(workers))
        else:
            if num_cpus is not None or resources or worker_node_ids or num_gpus is not None:
                raise ValueError("num_cpus, num_gpus, resources and worker_node_ids describe "
                                 "a new local cluster; they cannot be used with address=")
            token_bytes = load_token(token)
            expected_workers = 0
        self.address = address
        try:
            self._connect(token_bytes, expected_workers)
            if job_packages:
                # As in Ray: the job's working_dir and py_modules are uploaded at init(),
                # relative paths read from here; every task and actor inherits them.
                envs = cast(Runtime, self.runtime).runtime_envs
                envs.inherited = envs.resolve(job_packages)
        except BaseException:
            self.close()
            raise

    def _connect(self, token: bytes, expected_workers: int) -> None:
        self.loop_thread = loop_thread = LoopThread()
        config = self.config
        if config.throttle_driver_gc:
            self.collector.start(loop_thread.loop)
        peer_id = new_id()

        async def open_connection() -> Runtime:
            comm = await connect(self.address, token, tls=self.tls,
                                 split_bytes=config.frame_split_bytes,
                                 timeout=config.startup_timeout)
            runtime = Runtime(loop_thread.loop, comm, config, peer_id, DriverRole(),
                              node_id=self.node_id, token=token, tls=self.tls)
            runtime.context.update(job_id=peer_id, worker_id=peer_id,
                                   namespace=config.namespace)
            if self.cluster is None:
                runtime.inherited_env_vars = dict(self.job_env_vars)
            comm.handler = lambda c, m: runtime.handle(m) or None
            comm.on_close.append(lambda c: runtime.connection_lost())
            import asyncio
            asyncio.ensure_future(comm.read_loop())
            reply = await comm.request(msg.RegisterClient(peer_id, os.getpid(),
                                                          socket.gethostname(),
                                                          config.namespace),
                                       timeout=config.startup_timeout)
            if not runtime.cluster_info:  # a ClusterInfo that came after is newer
                runtime.cluster_info = {"num_workers": reply["num_workers"],
                                        "resources": reply["resources"],
                                        "workers": reply["workers"]}
            self.dashboard_url = reply.get("dashboard_url")
            return runtime

        self.runtime = self.loop_thread.run(open_connection(),
                                            timeout=config.startup_timeout + 5)
        self.runtime.install()
        deadline = time.monotonic() + config.startup_timeout
        while self.runtime.cluster_info.get("num_workers", 0) < expected_workers:
            if self.cluster is not None:
                report = self.cluster.failed_process_report()
                if report:
                    raise GraphstoreError(f"the local cluster failed to start: {report}")
            if time.monotonic() > deadline:
                raise GraphstoreError(
                    f"only {self.runtime.cluster_info.get('num_workers', 0)} of "
                    f"{expected_workers} workers joined within {config.startup_timeout} s; "
                    f"see the logs in {self.cluster.log_dir if self.cluster else '?'}")
            time.sleep(0.002)
        self.runtime.objects.premap_reserves()

    def context(self) -> ClusterContext:
        info = cast(Runtime, self.runtime).cluster_info
        return ClusterContext(self.address,
                              str(self.cluster.session_dir) if self.cluster else None,
                              info.get("num_workers", 0), info.get("resources", {}),
                              self.dashboard_url)

    def close(self) -> None:
        if self.cluster is not None and self.config.keep_spilled:
            # Stop the processes before disconnecting: a disconnect releases this
            # driver's objects, and the workers would delete their spill files.
            self.cluster.shutdown()
        if self.runtime is not None:
            self.runtime.uninstall()
            comm = self.runtime.comm
            loop_thread = cast(LoopThread, self.loop_thread)
            try:
                loop_thread.run(self.runtime.close_peers(), timeout=5)
                loop_thread.run(comm.close(), timeout=5)
            except Exception:
                pass
        self.collector.stop()
        if self.loop_thread is not None:
            self.loop_thread.stop()
        if self.cluster is not None:
            self.cluster.shutdown()
            if self.spill_target is not None and not self.config.keep_spilled:
                try:
                    self.spill_target.remove_all()
                except Exception as exc:
                    logger.warning("could not remove spilled objects at %s: %s",
                                   self.spill_target.url, exc)


def init(address: str | None = None, *, num_cpus: int | None = None,
         num_gpus: float | None = None, resources: dict[str, float] | None = None,
         object_store_memory: int | None = None, ignore_reinit_error: bool = False,
         include_dashboard: bool | None = None, dashboard_host: str | None = None,
         dashboard_port: int | None = None, namespace: str | None = None,
         runtime_env: dict[str, Any] | None = None, log_to_driver: bool | None = None,
         logging_level: int | str | None = None, logging_format: str | None = None,
         configure_logging: bool = True, token: str | None = None,
         node_id: str | None = None, worker_node_ids: list[str] | None = None,
         spill_to: str | None = None, spill_options: dict[str, Any] | None = None,
         spill_threshold: float | None = None, **settings: Any) -> ClusterContext:
    """Start a local cluster (no ``address``) or join the one at ``tcp://host:port``.

    Ray's keywords mean what they mean in ``ray.init``. A local cluster's processes stop
    at ``shutdown()`` or when this process exits, leaving no process or shared memory
    behind. Takes a process-wide lock: safe to call from any thread.

    Args:
        address: ``None`` joins ``GRAPHSTORE_ADDRESS`` if it is set (as Ray reads
            ``RAY_ADDRESS``; a job's entrypoint has it), else starts a local cluster
            on this machine (loopback only);
            ``"tcp://host:port"`` joins a running one; ``"auto"`` reads
            ``GRAPHSTORE_ADDRESS``.
        num_cpus: the local cluster's workers (one per CPU; default: the CPU count). ``0``:
            one worker with no CPU, where work that needs a CPU waits for a worker with
            CPUs to join.
        num_gpus: the local node's GPUs (default: those ``CUDA_VISIBLE_DEVICES`` names,
            else those ``nvidia-smi -L`` lists).
        resources: the local node's custom resources, e.g. ``{"special": 2}``.
        object_store_memory: bytes of shared memory of each worker's store.
        ignore_reinit_error: a second ``init()`` returns the running cluster's context
            instead of raising.
        include_dashboard: ``False`` starts no [status page](../dashboard.md).
        dashboard_host: the status page's interface (``127.0.0.1``).
        dashboard_port: its port (8265, another free one if taken).
        namespace: the namespace of this job's named actors (``"default"``):
            ``get_actor(name)`` in this driver and in its tasks and actors looks there.
        runtime_env: the [runtime environment](../runtime-environments.md) of every
            task and actor of this job: ``env_vars``, ``working_dir``, ``py_modules``,
            ``pip``, ``excludes``. Paths are read (and uploaded) now; a task's or
            actor's own ``runtime_env`` replaces these key by key (``env_vars`` merge).
            Inside a job (``graphstore job submit``) the default is the job's
            runtime_env.
        log_to_driver: print what tasks and actors print here, their tqdm bars live
            (default ``True``).
        logging_level: the level of this process's ``graphstore`` logger, and of a local
            cluster's processes (``logging.INFO``).
        logging_format: the format of the stderr handler added to that logger (Ray's by
            default).
        configure_logging: ``False`` leaves logging alone. Otherwise the ``graphstore``
            logger gets the level and, unless the program configured logging itself, a
            stderr handler not passed on to the root logger.
        token: the cluster token (default: ``GRAPHSTORE_TOKEN``, else the token file).
        node_id: names this driver's host.
        worker_node_ids: gives each local worker its own host identity, to exercise
            multi-host behaviour on one machine (one per worker).
        spill_to: where full stores spill: a directory, a ``file://`` or
            ``s3://bucket/prefix`` URL.
        spill_options: fsspec/s3fs storage options of ``spill_to``.
        spill_threshold: the fraction of a store's capacity above which it spills, in
            ``(0, 1]``.
        **settings: override [settings](../configuration.md) for this cluster, e.g.
            ``tls_cert``, ``tls_key`` and ``tls_ca`` for mutual TLS (all three or none; a
            local cluster started with them uses them for every connection, see
            [security](../security.md)).

    Returns:
        The cluster's context: ``address``, ``session_dir``, ``num_workers``,
        ``resources``, ``dashboard_url``.

    Raises:
        GraphstoreError: ``init()`` was already called (and ``ignore_reinit_error`` is
            false), it is called inside a task, or a local cluster failed to start.
        ValueError: a keyword out of range (``num_cpus``, ``num_gpus``,
            ``object_store_memory``, ``spill_threshold``), ``address="auto"`` without
            ``GRAPHSTORE_ADDRESS``, or local-cluster keywords with ``address=``.
        TypeError: an unknown keyword; names it.
        ConfigError: a configuration file or ``GRAPHSTORE_<NAME>`` variable cannot be
            read; names it and the setting.
        TLSConfigError: TLS settings half given, or a file that cannot be used.
        TLSError: a certificate was refused.
        AuthenticationError: the cluster refused the token.
        ConnectionLostError: the scheduler at ``address`` cannot be reached.
        PackageError: a ``runtime_env`` path is missing, or larger than the
            ``max_package_bytes`` setting.
        NotImplementedError: a ``runtime_env`` key graphstore does not implement
            (``conda``, ``container``, ...).
    """
    global _driver
    with _lock:
        if _worker_runtime() is not None:
            raise GraphstoreError("init() cannot be called inside a task: the worker is "
                                  "already connected to its cluster")
        _check_settings(settings)
        if configure_logging:
            _configure_logging(logging_level, logging_format)
        if _driver is not None:
            if ignore_reinit_error:
                return _driver.context()
            raise GraphstoreError(
                "graphstore.init() was already called; call graphstore.shutdown() first, "
                "or pass ignore_reinit_error=True")
        if address == "auto":
            address = os.environ.get("GRAPHSTORE_ADDRESS")
            if not address:
                raise ValueError("address='auto' needs GRAPHSTORE_ADDRESS to be set")
        elif address is None:
            # As RAY_ADDRESS: a job's entrypoint (graphstore job submit) joins its cluster.
            address = os.environ.get("GRAPHSTORE_ADDRESS") or None
        if runtime_env is None:
            runtime_env = job_runtime_env()
        if num_cpus is not None and (not isinstance(num_cpus, int) or isinstance(num_cpus, bool)
                                     or num_cpus < 0):
            raise ValueError(f"num_cpus must be a non-negative integer, got {num_cpus!r}")
        if resources is not None and "GPU" in resources:
            if num_gpus is not None:
                raise ValueError("give GPUs as num_gpus or as resources={'GPU': n}, not both")
            resources = dict(resources)
            num_gpus = resources.pop("GPU")
        if num_gpus is not None and (not isinstance(num_gpus, (int, float))
                                     or isinstance(num_gpus, bool) or num_gpus < 0
                                     or num_gpus != int(num_gpus)):
            raise ValueError(f"num_gpus of a cluster must be a whole number of GPUs, got "
                             f"{num_gpus!r}")
        if object_store_memory is not None and (not isinstance(object_store_memory, int)
                                                or object_store_memory <= 0):
            raise ValueError(f"object_store_memory must be a positive number of bytes, got "
                             f"{object_store_memory!r}")
        if address is not None and object_store_memory is not None:
            raise ValueError("object_store_memory sizes the stores of a new local cluster; "
                             "it cannot be used with address=")
        if worker_node_ids is not None:
            if num_cpus is None:
                num_cpus = len(worker_node_ids)
            if len(worker_node_ids) != num_cpus:
                raise ValueError("worker_node_ids needs one node id per worker (num_cpus)")
        if spill_threshold is not None and not 0.0 < spill_threshold <= 1.0:
            raise ValueError(f"spill_threshold must be in (0, 1], got {spill_threshold!r}")
        if spill_options is not None and not isinstance(spill_options, dict):
            raise ValueError("spill_options must be a dict of fsspec storage options")
        if namespace is not None and (not isinstance(namespace, str) or not namespace):
            raise TypeError(f"namespace must be a non-empty string, got {namespace!r}")
        job_env_vars = env_vars_of(runtime_env)
        job_packages = packages_of(runtime_env)
        if include_dashboard is False:
            dashboard_port = 0
        if dashboard_port is not None and (not isinstance(dashboard_port, int)
                                           or isinstance(dashboard_port, bool)
                                           or not 0 <= dashboard_port < 65536):
            raise ValueError(f"dashboard_port must be a port number (0: no status page), "
                             f"got {dashboard_port!r}")
        for name, value in (("spill_to", spill_to), ("spill_options", spill_options),
                            ("spill_threshold", spill_threshold),
                            ("dashboard_host", dashboard_host),
                            ("dashboard_port", dashboard_port), ("namespace", namespace)):
            if value is not None:
                settings[name] = value
        config = load_config(log_to_driver=log_to_driver,
                             object_store_memory=object_store_memory, **settings)
        if configure_logging and _log_handler is not None and config.log_format == "json":
            from graphstore.core.logs import JsonFormatter
            _log_handler.setFormatter(JsonFormatter())
        # The local cluster's processes take these settings, not their own reading of
        # files and variables: driver and cluster agree (docs/configuration.md).
        env = inherited_settings_environment(config)
        if logging_level is not None:
            env["GRAPHSTORE_LOG_LEVEL"] = logging.getLevelName(_level(logging_level))
        _driver = Driver(config, address, num_cpus, resources, token, env, node_id,
                         worker_node_ids, num_gpus, job_env_vars, job_packages)
        if _driver.cluster is not None:
            logger.info("started a local cluster at %s%s", _driver.address,
                        f"; status page at {_driver.dashboard_url}"
                        if _driver.dashboard_url else "")
        return _driver.context()


def job_runtime_env() -> dict[str, Any] | None:
    """Inside a job (``graphstore job submit``): the job's runtime_env, which its
    supervisor puts in ``GRAPHSTORE_JOB_RUNTIME_ENV``; None elsewhere."""
    text = os.environ.get("GRAPHSTORE_JOB_RUNTIME_ENV")
    if not text:
        return None
    try:
        runtime_env = json.loads(text)
    except ValueError:
        raise ValueError(f"GRAPHSTORE_JOB_RUNTIME_ENV is not JSON: {text[:200]!r}") from None
    if not isinstance(runtime_env, dict):
        raise ValueError("GRAPHSTORE_JOB_RUNTIME_ENV must hold a JSON object")
    return runtime_env or None


#: Ray's default log format (time, level, file:line, message).
_LOG_FORMAT = "%(asctime)s\t%(levelname)s %(filename)s:%(lineno)s -- %(message)s"
_log_handler: logging.Handler | None = None


def _level(level: int | str | None) -> int:
    if level is None:
        return logging.INFO
    if isinstance(level, str):
        named = logging.getLevelName(level.upper())
        if not isinstance(named, int):
            raise ValueError(f"logging_level {level!r} is not a logging level name")
        return named
    if isinstance(level, int) and not isinstance(level, bool):
        return level
    raise TypeError(f"logging_level must be a logging level (logging.INFO, 'ERROR', ...), "
                    f"got {level!r}")


def _configure_logging(level: int | str | None, fmt: str | None) -> None:
    """As ``ray.init`` does for the "ray" logger: the "graphstore" logger gets
    ``level`` and, unless the program configured logging itself (the root logger has
    handlers), a stderr handler with ``fmt``, not passed on to the root logger."""
    global _log_handler
    graphstore_logger = logging.getLogger("graphstore")
    graphstore_logger.setLevel(_level(level))
    if _log_handler is None and not logging.getLogger().handlers:
        _log_handler = logging.StreamHandler()
        graphstore_logger.addHandler(_log_handler)
        graphstore_logger.propagate = False
    if _log_handler is not None:
        _log_handler.setFormatter(logging.Formatter(fmt or _LOG_FORMAT))


def _check_settings(settings: dict[str, Any]) -> None:
    """Keywords beyond init()'s own must name settings of ``Config``."""
    known = {f.name for f in fields(Config)}
    for name in settings:
        if name not in known:
            raise TypeError(
                f"init() got an unexpected keyword argument {name!r}: it is neither an "
                f"init() parameter nor a graphstore setting (see docs/configuration.md)")


def shutdown() -> None:
    """Disconnect; for a local cluster, stop every process it started.

    Refs held afterwards are dead. Does nothing if this process is not connected;
    registered at exit, so a program that never calls it still cleans up.
    """
    global _driver
    with _lock:
        driver, _driver = _driver, None
    if driver is not None:
        driver.close()


def is_initialized() -> bool:
    """Whether this process is connected to a cluster.

    Returns:
        ``True`` after ``init()`` (or in a task or actor), ``False`` before it and after
        ``shutdown()``.
    """
    return _driver is not None or _worker_runtime() is not None


def _worker_runtime() -> Runtime | None:
    """The runtime a worker or actor process installed, if this is one."""
    runtime = context.installed()
    if runtime is None or isinstance(runtime.role, DriverRole):
        return None
    return runtime


def runtime_or_auto_init() -> Runtime:
    """The runtime to use; starts a default local cluster if nothing is connected yet.

    On every API call's path: a driver's case is tested first, with no call (a worker
    or actor process never has a driver: ``init()`` refuses there)."""
    driver = _driver
    if driver is not None:     # a Driver in _driver is connected: it has its runtime
        return driver.runtime  # type: ignore[return-value]
    worker_runtime = _worker_runtime()
    if worker_runtime is not None:
        return worker_runtime
    with _lock:
        if _driver is None:
            init()
        driver = _driver
    return driver.runtime  # type: ignore[union-attr,return-value]


def get_runtime() -> Runtime:
    driver = _driver
    if driver is not None:
        return driver.runtime  # type: ignore[return-value]
    worker_runtime = _worker_runtime()
    if worker_runtime is None:
        raise GraphstoreError("graphstore is not initialized; call graphstore.init()")
    return worker_runtime


def current_local_cluster() -> LocalCluster | None:
    driver = _driver
    return driver.cluster if driver is not None else None


def connected_address() -> str | None:
    """The scheduler address this process's driver is connected to, if it is one."""
    driver = _driver
    return driver.address if driver is not None else None


atexit.register(shutdown)
