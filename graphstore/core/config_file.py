"""Settings from YAML configuration files: where they are looked for, how several layer,
and how their keys and values are checked against the ``Config`` schema.

Files are found and read with donfig (Dask's own configuration library), so they behave
as Dask users know: a flat mapping of setting names, ``-`` and ``_`` alike, later files
overriding earlier ones key by key (a mapping value such as ``spill_options`` is merged).
``GRAPHSTORE_CONFIG`` names the files to read instead of the standard places, so a job, a
container or a test reads exactly the files it names.
"""
from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

from graphstore.exceptions import ConfigError

#: Environment variable naming the configuration file(s) to read, separated by
#: ``os.pathsep``; when set, the standard places are not searched.
CONFIG_ENV_VAR = "GRAPHSTORE_CONFIG"
#: The system-wide file, read first.
SYSTEM_FILE = Path("/etc/graphstore/graphstore.yaml")
#: The user's file (under ``$HOME``), read after the system-wide one.
USER_FILE = Path(".config") / "graphstore" / "graphstore.yaml"


class ConfigFile(NamedTuple):
    """A place a configuration file is read from."""

    path: Path
    #: Named by ``GRAPHSTORE_CONFIG``: missing is an error, not a file to skip.
    required: bool


class FileSettings(NamedTuple):
    """What the configuration files say: each setting's value and the file(s) it is from."""

    values: dict
    sources: dict


def config_files(environ: Mapping[str, str] | None = None) -> list[ConfigFile]:
    """The files to read, lowest precedence first."""
    environ = os.environ if environ is None else environ
    named = environ.get(CONFIG_ENV_VAR, "")
    if named:
        return [ConfigFile(Path(os.path.expanduser(p)), True)
                for p in named.split(os.pathsep) if p]
    home = environ.get("HOME") or os.path.expanduser("~")
    return [ConfigFile(SYSTEM_FILE, False), ConfigFile(Path(home) / USER_FILE, False)]


def read_settings_files(files: list[ConfigFile], types: Mapping[str, type]) -> FileSettings:
    """Read and check ``files`` in order (later ones win) against the setting ``types``."""
    from donfig.config_obj import update   # here: only a process that reads files pays
    values: dict = {}
    sources: dict = {}
    for file in files:
        settings = read_settings_file(file, types)
        update(values, settings)            # donfig: key by key, mappings merged
        for name in settings:
            merged = isinstance(settings[name], dict) and name in sources
            sources[name] = f"{sources[name]}, {file.path}" if merged else str(file.path)
    return FileSettings(values, sources)


def read_settings_file(file: ConfigFile, types: Mapping[str, type]) -> dict:
    """One file's settings, keys normalised to the ``Config`` field names and values
    checked; an empty file has none. Raises ``ConfigError`` naming the file."""
    path = file.path
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory; {CONFIG_ENV_VAR} names YAML files")
    if not path.exists():
        if file.required:
            raise ConfigError(f"{path}: no such configuration file (named by "
                              f"{CONFIG_ENV_VAR})")
        return {}
    if not os.access(path, os.R_OK):
        raise ConfigError(f"{path}: the configuration file cannot be read (permissions)")
    from donfig.config_obj import collect_yaml
    try:
        loaded = collect_yaml([str(path)])
    except ValueError as exc:
        raise ConfigError(_malformed_message(path, exc)) from None
    raw = loaded[0] if loaded else {}
    settings: dict = {}
    given_as: dict = {}
    for key, value in raw.items():
        name = str(key).replace("-", "_")
        if name not in types:
            raise ConfigError(unknown_key_message(path, key, value, types))
        if name in settings:
            raise ConfigError(f"{path}: setting {name!r} is given twice (as "
                              f"{given_as[name]!r} and {key!r}); keep one")
        settings[name] = check_value(path, key, value, types[name])
        given_as[name] = key
    return settings


def unknown_key_message(path: Path, key, value, types: Mapping[str, type]) -> str:
    """The error for a key that names no setting, with the closest setting names."""
    name = str(key).replace("-", "_")
    close = difflib.get_close_matches(name, list(types), n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    if not close and isinstance(value, Mapping):
        hint = ("; settings are top-level keys of the file (object_store_memory: ...), "
                "not nested under a section")
    return (f"{path}: unknown setting {key!r}{hint} (every setting is listed in "
            f"docs/configuration.md)")


_EXPECTED = {int: "an integer", float: "a number", bool: "true or false", str: "a string",
             dict: "a mapping (key: value lines indented below it)"}


def check_value(path: Path, key, value, expected: type):
    """``value`` as the setting's type, or a ``ConfigError`` naming file, key and type.

    YAML already typed the value; only what converts without loss is accepted: an
    integral number for an integer, a numeric string for a number (YAML 1.1 reads
    ``1e9`` as a string), any integer for a number."""
    if value is None:
        raise ConfigError(f"{path}: setting {key!r} has no value; give "
                          f"{_EXPECTED[expected]} or remove the line")
    is_bool = isinstance(value, bool)
    if expected is bool and is_bool:
        return value
    if expected is int and not is_bool:
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    if expected is float and not is_bool:
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    if expected is str and isinstance(value, str):
        return value
    if expected is dict and isinstance(value, Mapping):
        return dict(value)
    hint = " (quote it to make it a string)" if expected is str and not isinstance(
        value, (list, dict)) else ""
    raise ConfigError(f"{path}: setting {key!r} expects {_EXPECTED[expected]}, got "
                      f"{value!r} ({type(value).__name__}){hint}")


def _malformed_message(path: Path, exc: ValueError) -> str:
    """donfig's error for a file that is not YAML or not a mapping, said plainly: the
    file, and for bad YAML the line and column (from the YAML error it wraps)."""
    cause = exc.__context__
    mark = getattr(cause, "problem_mark", None)
    if mark is not None:
        problem = getattr(cause, "problem", None) or "syntax error"
        return (f"{path}, line {mark.line + 1}, column {mark.column + 1}: not valid YAML "
                f"({problem})")
    if "top level" in str(exc):
        return (f"{path}: a configuration file must be a mapping of settings "
                f"(name: value lines); {str(exc).rsplit(', ', 1)[-1]}")
    return f"{path}: {exc}"
