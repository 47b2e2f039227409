"""Settings shared by every graphstore process.

``Config`` is the schema: one place holds each setting's default, type and meaning, so
the scheduler, the workers and the driver agree. A setting's value comes from, lowest
precedence first: its default, the YAML configuration files (``config_file``), an
environment variable ``GRAPHSTORE_<NAME>``, and arguments to ``graphstore.init()`` or
the CLI. A local cluster's processes take the driver's effective settings as a whole
(``inherited_settings_environment``), so they agree with it whatever files they see.
"""
from __future__ import annotations

import json
import os
import typing
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import NamedTuple

from graphstore.core.config_file import config_files, read_settings_files
from graphstore.exceptions import ConfigError

#: Version of the wire protocol; peers with a different one are refused at the handshake.
#: 2: typed messages (msgspec), errors as records in ``Reply``, runs' ``started`` field.
PROTOCOL_VERSION = 2


@dataclass(frozen=True)
class Limits:
    """Bounds on what a peer may send; a violation closes that connection only."""

    max_frame_bytes: int = 4 * 1024**3
    max_header_bytes: int = 256 * 1024**2
    max_frames: int = 100_000


@dataclass
class Config:
    #: Objects whose serialized size is at most this travel inline in messages.
    inline_threshold: int = 100 * 1024
    #: Buffers at least this large travel as their own frame instead of inside msgpack.
    frame_split_bytes: int = 64 * 1024
    #: Seconds a new connection has to complete the handshake.
    handshake_timeout: float = 10.0
    #: Mutual TLS (all three or none; see docs/security.md): this process's certificate
    #: (PEM), its unencrypted private key, and the cluster CA that signs every member's
    #: certificate. Every connection then requires and verifies certificates both ways.
    tls_cert: str = ""
    tls_key: str = ""
    tls_ca: str = ""
    #: With TLS: also require a server's certificate to name the host connected to.
    tls_check_hostname: bool = False
    #: Seconds ``init()`` waits for a local cluster to come up.
    startup_timeout: float = 60.0
    #: Default retries for a task whose worker died.
    max_retries: int = 3
    #: Forward print()/logging output of tasks to the driver.
    log_to_driver: bool = True
    #: Target seconds of queued work a worker keeps ahead of its CPUs (short tasks are
    #: pipelined so workers never idle waiting for the scheduler).
    worker_pipeline_seconds: float = 0.02
    #: Upper bound of tasks queued on one worker beyond its CPU slots.
    max_tasks_queued_per_worker: int = 256
    #: Bytes of shared memory each worker's object store may use; 0 picks 30% of the
    #: machine's memory divided among the local workers.
    object_store_memory: int = 0
    #: Bytes of each arena (the large files a store allocates objects in); 0 picks a 16th
    #: of the store's capacity, between 1 MiB and 1 GiB.
    store_arena_bytes: int = 0
    #: Bytes of one pre-faulted segment each store keeps ready (at most a quarter of its
    #: capacity), so a large put does not pay first-touch page faults; 0 disables.
    store_reserve_bytes: int = 256 * 1024 * 1024
    #: How many such segments each store keeps: a burst of large puts lands in them.
    store_reserve_count: int = 2
    #: Seconds a freed segment is kept for reuse before its memory goes back to the OS.
    store_pool_idle_seconds: float = 10.0
    #: Where stores spill when memory runs short: a directory, file:// or s3://bucket/prefix
    #: URL (empty: a directory under the system temp dir). Per cluster, under <url>/<id>/.
    spill_to: str = ""
    #: fsspec/s3fs storage options for spill_to (endpoint_url, key, secret, client_kwargs...).
    spill_options: dict = field(default_factory=dict)
    #: Fraction of a store's capacity above which least recently used objects spill.
    spill_threshold: float = 0.8
    #: Seconds a put waits for spilling to make room before ObjectStoreFullError.
    spill_wait_timeout: float = 30.0
    #: Keep the cluster's spill files at shutdown.
    keep_spilled: bool = False
    #: Bytes/s assumed between hosts when weighing where a task should run.
    transfer_bandwidth: float = 1e9
    #: Finished tasks the scheduler remembers (task records, graph export), and freed
    #: objects the task graph remembers.
    task_history: int = 10_000
    #: Namespace of named actors when none is given (``get_actor``, ``options(name=)``).
    namespace: str = "default"
    #: Port of the scheduler's status page (0 disables it). If the port is taken, a free
    #: one is used instead, with a warning.
    dashboard_port: int = 8265
    #: Interface the status page binds: loopback by default; "0.0.0.0" exposes it.
    dashboard_host: str = "127.0.0.1"
    #: Seconds between heartbeats: workers send their figures (store use, spilling) to
    #: the scheduler, and the scheduler tells each worker it is still there.
    heartbeat_interval: float = 1.0
    #: Seconds without a word from a worker after which the scheduler counts it lost
    #: (a cut network leaves the connection open); a worker that hears nothing from the
    #: scheduler for as long exits. A closed connection (a killed process) counts at
    #: once. Heartbeats come from the event loop, so a task that holds the GIL longer
    #: than this (some C extensions do) would get its worker counted lost: hence 10 s.
    worker_timeout: float = 10.0
    #: Bytes of task arguments the scheduler keeps so lost objects can be computed again
    #: (lineage); past this the oldest lineage is dropped and its objects, if lost, stay
    #: lost (ObjectLostError).
    max_lineage_bytes: int = 256 * 1024 * 1024
    #: Record when each task, argument fetch, transfer, spill, restore and actor call
    #: really starts and ends, for ``graphstore.timeline()``, the task stream and
    #: ``critical_path()`` (measured cost: docs/observability.md).
    record_timeline: bool = True
    #: Drivers collect their cyclic garbage as the scheduler does while connected: young
    #: generations every 100,000 allocations, full collections from the I/O thread at
    #: most 5% of the time (``graphstore.core.gc_policy``); the process's own thresholds
    #: come back at ``shutdown()``. False leaves the collector as the process set it.
    throttle_driver_gc: bool = True
    #: Profile events the scheduler keeps per worker (a ring: the oldest go first).
    task_stream_events: int = 10_000
    #: ... and in all: each worker's ring holds at most its share of this (with 10
    #: workers, 10,000 each; with 1,000, 200), so memory stays bounded however many
    #: workers join (about 40 MB at the default).
    task_stream_total_events: int = 200_000
    #: How processes write their logs (stderr and their log files): "text" lines, or
    #: "json", one object per line with time, level, logger, message and the task,
    #: actor, worker and node ids where known (see docs/observability.md).
    log_format: str = "text"
    #: Largest ``runtime_env`` package (a ``working_dir`` or ``py_modules`` entry), in
    #: bytes of its files after excludes; a larger one is refused at the driver with
    #: an error naming the directory and its size.
    max_package_bytes: int = 500 * 1024 * 1024
    #: Directory where each host keeps unpacked runtime_env packages and pip
    #: virtualenvs, content-addressed (empty: graphstore-runtime-env-<uid> under the
    #: system temp dir). Kept across clusters, so a second job sets up nothing again.
    runtime_env_cache_dir: str = ""
    #: Debugging: the scheduler recounts its bookkeeping after every event
    #: (``SchedulerState.validate_state``, O(cluster) each time) and logs a mismatch
    #: with the event's stimulus id (see docs/architecture.md). Slow: never in production.
    validate_state: bool = False


class Setting(NamedTuple):
    """A setting's effective value and where it came from."""

    value: object
    #: "default", "file", "env", "argument", or "driver" (a local cluster's process).
    kind: str
    #: Said for people: "default", the file's path, the environment variable's name,
    #: "argument", or "driver".
    source: str


#: Environment variable carrying a driver's effective settings (JSON) to the processes
#: of the local cluster it starts, which then read neither files nor GRAPHSTORE_<NAME>.
INHERITED_SETTINGS_VAR = "GRAPHSTORE_INTERNAL_SETTINGS"


def setting_types() -> dict[str, type]:
    """Each setting's type, from the ``Config`` annotations (int, float, bool, str, dict)."""
    hints = typing.get_type_hints(Config)
    return {f.name: hints[f.name] for f in fields(Config)}


def _coerce(value: str, default):
    if isinstance(default, dict):
        parsed = json.loads(value)
        if not isinstance(parsed, dict):
            raise ValueError("expected a JSON object")
        return parsed
    if isinstance(default, bool):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return type(default)(value)


def resolve_settings(overrides: Mapping | None = None,
                     environ: Mapping[str, str] | None = None) -> dict[str, Setting]:
    """Every setting's value and source: defaults < files < environment < ``overrides``
    (None values in ``overrides`` are not given). Raises ``ConfigError`` for a bad file
    or environment variable, ``TypeError`` for an override that names no setting."""
    environ = os.environ if environ is None else environ
    defaults = Config()
    settings = {f.name: Setting(getattr(defaults, f.name), "default", "default")
                for f in fields(Config)}
    inherited = environ.get(INHERITED_SETTINGS_VAR)
    if inherited is not None:
        for name, value in json.loads(inherited).items():
            if name in settings:
                settings[name] = Setting(value, "driver", "driver")
    else:
        from_files = read_settings_files(config_files(environ), setting_types())
        for name, value in from_files.values.items():
            settings[name] = Setting(value, "file", from_files.sources[name])
        for name, setting in settings.items():
            variable = "GRAPHSTORE_" + name.upper()
            env = environ.get(variable)
            if env is None:
                continue
            default = getattr(defaults, name)
            try:
                settings[name] = Setting(_coerce(env, default), "env", variable)
            except ValueError as exc:
                raise ConfigError(f"environment variable {variable}={env!r} is not a "
                                  f"valid {type(default).__name__}") from exc
    for name, value in (overrides or {}).items():
        if value is None:
            continue
        if name not in settings:
            raise TypeError(f"unknown graphstore setting {name!r}")
        settings[name] = Setting(value, "argument", "argument")
    return settings


def load_config(**overrides) -> Config:
    """The effective ``Config``: defaults < configuration files < ``GRAPHSTORE_*``
    environment variables < ``overrides`` (see ``resolve_settings``)."""
    settings = resolve_settings(overrides)
    config = Config(**{name: s.value for name, s in settings.items()})
    _validate(config, settings)
    return config


def _validate(config: Config, settings: dict[str, Setting]) -> None:
    """Settings with a fixed set of values: a clear error naming where the value came
    from, rather than a surprise later."""
    from graphstore.core.logs import LOG_FORMATS
    if config.log_format not in LOG_FORMATS:
        source = settings["log_format"].source
        where = {"default": "the default", "argument": "argument",
                 "driver": "the driver's settings"}.get(source, source)
        raise ConfigError(f"log_format must be one of {', '.join(LOG_FORMATS)}, got "
                          f"{config.log_format!r} (from {where})")


def inherited_settings_environment(config: Config) -> dict[str, str]:
    """Environment for the processes a driver starts, carrying its effective settings:
    they then agree with it even if they would see other files or variables."""
    return {INHERITED_SETTINGS_VAR: json.dumps(asdict(config))}
