"""Content-addressed packages: the files a ``runtime_env`` ships to every host.

A package is a zip of a directory (a ``working_dir``, a ``py_modules`` entry), of one
module file, or of a user's zip, made *deterministic* so that the same files always give
the same bytes: entries sorted, timestamps fixed, only the executable bit of modes kept,
stored uncompressed, ``__pycache__``, ``.git`` and the user's ``excludes`` globs left out.
Its name is the hash of its files (names, executable bits, contents),
``gspkg://<sha256>.zip``, computed from the files without zipping them, so a second
upload of the same files is known before anything is packed or moved, and a host that
has unpacked a URI once never unpacks it again.

Unpacking is where bytes from the network meet the disk, so it is strict: the hash is
checked, absolute names, ``..`` components and links are refused by name (zip-slip), the
unpacked size is bounded (zip bombs), and the result appears atomically (extracted into
a temporary directory of the cache, then renamed), so concurrent unpackers on one host
never see half a package and never race.

This module also holds the pure half of runtime environments: checking a user's
``runtime_env`` dict, Ray's merge of a job's environment with a task's, the wire-ready
form (local paths replaced by URIs through an ``upload`` callable), and the stable hash
of an environment that keys task processes and pip virtualenvs. No sockets here: the
upload and fetch through the object store live in ``graphstore/runtime/packages_client.py``.
"""
from __future__ import annotations

import fnmatch
import hashlib
import io
import json
import os
import re
import shutil
import stat
import sys
import tempfile
import zipfile
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable, NamedTuple

from graphstore.exceptions import PackageError

#: The scheme of package URIs.
SCHEME = "gspkg://"
#: Names never packed (matched against every path component, as globs).
DEFAULT_EXCLUDES = ("__pycache__", "*.pyc", ".git", ".hg", ".svn", ".DS_Store")
#: Default bound on a package's size (the ``max_package_bytes`` setting; Ray's 500 MiB).
DEFAULT_MAX_BYTES = 500 * 1024 * 1024

_URI_RE = re.compile(r"^gspkg://([0-9a-f]{64})\.zip$")
_FIXED_TIME = (1980, 1, 1, 0, 0, 0)

#: ``runtime_env`` keys graphstore implements (others raise ``NotImplementedError``).
RUNTIME_ENV_KEYS = ("env_vars", "working_dir", "py_modules", "pip", "excludes")


# -- packing ---------------------------------------------------------------------------

def _excluded(relative: PurePosixPath, excludes: Iterable[str]) -> bool:
    """``relative`` (a path inside the packed directory) matches an exclude: a glob
    matched against each component and against the whole relative path (``data/*.csv``,
    ``/build`` for the top level only)."""
    text = relative.as_posix()
    for pattern in excludes:
        if pattern.startswith("/"):
            if fnmatch.fnmatchcase(text, pattern[1:].rstrip("/")) or fnmatch.fnmatchcase(
                    relative.parts[0], pattern[1:].rstrip("/")):
                return True
            continue
        pattern = pattern.rstrip("/")
        if fnmatch.fnmatchcase(text, pattern):
            return True
        if "/" not in pattern and any(fnmatch.fnmatchcase(p, pattern)
                                      for p in relative.parts):
            return True
    return False


def _entry(name: str, mode: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=_FIXED_TIME)
    info.compress_type = zipfile.ZIP_STORED
    perm = 0o755 if mode & stat.S_IXUSR else 0o644
    info.external_attr = ((stat.S_IFDIR | 0o755) if name.endswith("/")
                          else (stat.S_IFREG | perm)) << 16
    info.create_system = 3          # unix, whatever the packing machine
    return info


def _files_of_directory(root: Path, excludes: tuple) -> list[tuple[str, Path]]:
    """(relative name, path) of every regular file under ``root``, sorted; symlinked
    directories are not followed, symlinked files are packed as files."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        rel_dir = PurePosixPath(here.relative_to(root).as_posix())
        dirnames[:] = sorted(d for d in dirnames
                             if not _excluded(rel_dir / d, excludes)
                             and not (here / d).is_symlink())
        for name in filenames:
            rel = rel_dir / name
            if _excluded(rel, excludes):
                continue
            path = here / name
            if path.is_file():       # follows a file symlink; skips broken ones, fifos
                out.append((rel.as_posix(), path))
    out.sort()
    return out


class PackageEntry(NamedTuple):
    """One file of a package: its name inside the package, whether it is executable,
    and where its bytes are (a file to read, or the bytes themselves)."""
    name: str
    executable: bool
    source: Path | bytes

    def data(self) -> bytes:
        return self.source if isinstance(self.source, bytes) else self.source.read_bytes()


def collect(path: str | os.PathLike, *, excludes: Iterable[str] = (),
            max_bytes: int = DEFAULT_MAX_BYTES, prefix: str = "") -> list[PackageEntry]:
    """The files a package of ``path`` holds, sorted by name (contents not read yet,
    but a ``.zip``'s).

    Args:
        path: a directory (its contents are the package's root), a file (packed alone at
            the root, e.g. one module ``util.py``), or a ``.zip`` (its entries, checked and
            packed again so that equal contents give equal packages).
        excludes: globs left out besides ``DEFAULT_EXCLUDES``: matched against every
            path component (``*.log``, ``data``) or the relative path (``data/*.csv``);
            a leading ``/`` anchors at the top (``/build``).
        max_bytes: bound on the files' total size.
        prefix: a directory name every entry goes under (``py_modules`` keeps a
            package's own name this way, so its parent goes on ``sys.path``).

    Returns:
        The entries, sorted by name.

    Raises:
        PackageError: the path does not exist, the files exceed ``max_bytes`` (the
            message names the path and its size), or a ``.zip`` is unreadable or holds
            an unsafe name.
    """
    source = Path(path).expanduser()
    excludes = tuple(DEFAULT_EXCLUDES) + tuple(excludes or ())
    if not source.exists():
        raise PackageError(f"cannot package {str(source)!r}: no such file or directory")
    if prefix:
        _check_name(prefix + "/", f"package prefix for {source}")
    found: list[tuple[str, int, int, Path | bytes]] = []
    if source.is_dir():
        for name, file in _files_of_directory(source, excludes):
            st = file.stat()
            found.append((name, st.st_mode, st.st_size, file))
    elif zipfile.is_zipfile(source):
        try:
            with zipfile.ZipFile(source) as zf:
                for info in zf.infolist():
                    _check_name(info.filename, str(source))
                infos = [i for i in zf.infolist() if not i.is_dir()
                         and not _excluded(PurePosixPath(i.filename), excludes)]
                size = sum(i.file_size for i in infos)
                if size > max_bytes:
                    raise PackageError(_too_large(source, size, max_bytes))
                for info in infos:
                    found.append((info.filename, info.external_attr >> 16,
                                  info.file_size, zf.read(info)))
        except (zipfile.BadZipFile, OSError) as exc:
            raise PackageError(f"cannot read zip {str(source)!r}: {exc}") from exc
    elif source.is_file():
        found.append((source.name, source.stat().st_mode, source.stat().st_size, source))
    else:
        raise PackageError(f"cannot package {str(source)!r}: not a directory, a file or "
                           f"a zip")
    total = sum(size for _, _, size, _ in found)
    if total > max_bytes:
        raise PackageError(_too_large(source, total, max_bytes))
    return sorted(PackageEntry((prefix + "/" + name) if prefix else name,
                               bool(mode & stat.S_IXUSR), where)
                  for name, mode, _, where in found)


def _digest(items) -> str:
    """The content hash of (name, executable, bytes) items in name order: what a
    package URI names, whatever the zip's compression or timestamps."""
    digest = hashlib.sha256()
    for name, executable, data in items:
        digest.update(f"{name}\0{'x' if executable else '-'}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()


def entries_uri(entries: list[PackageEntry]) -> str:
    """The URI of the package these entries make (``collect``), computed from the files
    without zipping them: an uploader asks the cluster about it before packing."""
    return f"{SCHEME}{_digest((e.name, e.executable, e.data()) for e in entries)}.zip"


def zip_entries(entries: list[PackageEntry]) -> bytes:
    """The package's zip: entries in name order, fixed timestamps, stored uncompressed
    (packing costs one read of the files; most large files are compressed already)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as zf:
        for entry in entries:
            zf.writestr(_entry(entry.name, stat.S_IXUSR if entry.executable else 0),
                        entry.data())
    return buffer.getvalue()


def pack(path: str | os.PathLike, *, excludes: Iterable[str] = (),
         max_bytes: int = DEFAULT_MAX_BYTES, prefix: str = "") -> bytes:
    """The deterministic zip of a directory, a single file, or a ``.zip``
    (``collect`` then ``zip_entries``).

    Args:
        path: what to pack (see ``collect``).
        excludes: globs left out (see ``collect``).
        max_bytes: bound on the files' total size.
        prefix: a directory name every entry goes under.

    Returns:
        The zip's bytes: equal files give equal bytes.

    Raises:
        PackageError: as ``collect``.
    """
    return zip_entries(collect(path, excludes=excludes, max_bytes=max_bytes, prefix=prefix))


def _size_of(source: Path, excludes: tuple) -> int:
    if source.is_dir():
        return sum(p.stat().st_size for _, p in _files_of_directory(source, excludes))
    return source.stat().st_size


def _too_large(source: Path, size: int, max_bytes: int) -> str:
    return (f"{str(source)!r} is {size / 2**20:.1f} MiB (after excludes), more than the "
            f"package limit of {max_bytes / 2**20:.1f} MiB (the max_package_bytes "
            f"setting): leave large files out with runtime_env['excludes'], or put them "
            f"in the object store or on shared storage")


def package_uri(data: bytes) -> str:
    """The URI of a package's zip bytes, ``gspkg://<sha256>.zip``: the hash of its
    files' names, executable bits and contents (``entries_uri`` of the same files).

    Raises:
        PackageError: ``data`` is not a zip.
    """
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            infos = sorted((i for i in zf.infolist() if not i.is_dir()),
                           key=lambda i: i.filename)
            items = ((i.filename, bool((i.external_attr >> 16) & stat.S_IXUSR), zf.read(i))
                     for i in infos)
            return f"{SCHEME}{_digest(items)}.zip"
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise PackageError(f"not a package zip: {exc}") from exc


def is_package_uri(value) -> bool:
    """``value`` is a well-formed package URI."""
    return isinstance(value, str) and _URI_RE.match(value) is not None


def uri_digest(uri: str) -> str:
    """The sha256 hex digest a package URI names.

    Raises:
        PackageError: ``uri`` is not of the form ``gspkg://<64 hex digits>.zip``.
    """
    match = _URI_RE.match(uri) if isinstance(uri, str) else None
    if match is None:
        raise PackageError(f"{uri!r} is not a package URI (gspkg://<sha256>.zip)")
    return match.group(1)


# -- unpacking -------------------------------------------------------------------------

def _check_name(name: str, where: str) -> None:
    """Refuse names that would land outside the directory they unpack into."""
    posix = name.replace("\\", "/")
    if (not posix or posix.startswith("/") or re.match(r"^[A-Za-z]:", posix)
            or ".." in PurePosixPath(posix).parts or "\0" in posix):
        raise PackageError(f"unsafe entry {name!r} in {where}: absolute paths and '..' "
                           f"are not allowed in a package")


def default_cache_dir() -> Path:
    """Where a host keeps unpacked packages and pip virtualenvs when the
    ``runtime_env_cache_dir`` setting is empty: a directory of this user's under the
    system temp dir (shared by every cluster of the host: content-addressed)."""
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return Path(tempfile.gettempdir()) / f"graphstore-runtime-env-{uid}"


def cache_dir_from(setting: str) -> Path:
    """The cache directory a ``runtime_env_cache_dir`` setting names ("" : default)."""
    return Path(setting).expanduser() if setting else default_cache_dir()


def cached_package(uri: str, cache_dir: str | os.PathLike) -> Path | None:
    """The directory ``uri`` was unpacked into on this host, or None.

    Raises:
        PackageError: ``uri`` is not a package URI.
    """
    target = Path(cache_dir) / "packages" / uri_digest(uri)
    return target if target.is_dir() else None


def unpack(data: bytes, uri: str, cache_dir: str | os.PathLike, *,
           max_bytes: int = DEFAULT_MAX_BYTES) -> Path:
    """Unpack a package's bytes into ``<cache_dir>/packages/<sha256>`` (atomically).

    Safe to call from several processes at once: each extracts into a temporary
    directory of its own beside the target and renames it into place; the first rename
    wins and the others drop their copy.

    Args:
        data: the zip's bytes, as ``pack`` made them.
        uri: the URI they were fetched under: their hash must match it.
        cache_dir: the host's runtime-env cache directory.
        max_bytes: bound on the unpacked size (against zip bombs).

    Returns:
        The unpacked directory.

    Raises:
        PackageError: the bytes do not hash to ``uri``, are not a zip, hold an absolute,
            ``..`` or link entry, or unpack to more than ``max_bytes``.
    """
    digest = uri_digest(uri)
    packages = Path(cache_dir) / "packages"
    target = packages / digest
    if target.is_dir():
        return target
    packages.mkdir(parents=True, exist_ok=True)
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise PackageError(f"{uri} is not a zip: {exc}") from exc
    with zf:
        infos = zf.infolist()
        total = 0
        for info in infos:
            _check_name(info.filename, uri)
            if stat.S_ISLNK(info.external_attr >> 16):
                raise PackageError(f"unsafe entry {info.filename!r} in {uri}: links are "
                                   f"not allowed in a package")
            total += info.file_size
        if total > max_bytes:
            raise PackageError(f"{uri} unpacks to {total / 2**20:.1f} MiB, more than the "
                               f"package limit of {max_bytes / 2**20:.1f} MiB")
        if package_uri(data) != uri:
            raise PackageError(f"the bytes fetched for {uri} do not match its hash "
                               f"(corrupt or forged package)")
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{digest[:12]}-", dir=packages))
        try:
            for info in infos:
                dest = tmp.joinpath(*PurePosixPath(info.filename.replace("\\", "/")).parts)
                if info.is_dir():
                    dest.mkdir(parents=True, exist_ok=True)
                    continue
                dest.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(dest, "wb") as out:
                    shutil.copyfileobj(src, out)
                if (info.external_attr >> 16) & stat.S_IXUSR:
                    dest.chmod(0o755)
            try:
                os.rename(tmp, target)
            except OSError:
                if not target.is_dir():
                    raise
                shutil.rmtree(tmp, ignore_errors=True)    # another unpacker won
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return target


# -- runtime environments (pure) -------------------------------------------------------

def _check_str_list(value, what: str) -> list[str]:
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise TypeError(f"{what} must be a list of strings, got {value!r}")
    return list(value)


def normalize_pip(value, base_dir: str | os.PathLike | None = None) -> dict | None:
    """``pip`` as Ray takes it (a list of requirements, a path to a requirements file,
    or ``{"packages": [...] or a path, "pip_check": bool}``) as
    ``{"packages": [...], "pip_check": bool}``; None for none.

    Raises:
        TypeError: a value of the wrong type.
        ValueError: an unknown key, or a requirements file that cannot be read.
    """
    if value is None:
        return None
    if isinstance(value, (str, os.PathLike)):
        value = {"packages": value}
    if isinstance(value, (list, tuple)):
        value = {"packages": list(value)}
    if not isinstance(value, dict):
        raise TypeError(f"runtime_env['pip'] must be a list of requirements, a path to a "
                        f"requirements file, or a dict with 'packages', got {value!r}")
    unknown = set(value) - {"packages", "pip_check", "pip_version"}
    if unknown:
        raise ValueError(f"runtime_env['pip'] has unknown key(s) {sorted(unknown)}; "
                         f"known: packages, pip_check, pip_version")
    if value.get("pip_version"):
        raise NotImplementedError("runtime_env['pip']['pip_version'] is not supported by "
                                  "graphstore: the host's pip is used")
    packages = value.get("packages", [])
    if isinstance(packages, (str, os.PathLike)):
        path = Path(packages)
        if base_dir is not None and not path.is_absolute():
            path = Path(base_dir) / path
        try:
            lines = path.read_text().splitlines()
        except OSError as exc:
            raise ValueError(f"cannot read the requirements file {str(path)!r} of "
                             f"runtime_env['pip']: {exc}") from exc
        packages = [ln.strip() for ln in lines
                    if ln.strip() and not ln.strip().startswith("#")]
    packages = _check_str_list(packages, "runtime_env['pip']['packages']")
    pip_check = value.get("pip_check", False)
    if not isinstance(pip_check, bool):
        raise TypeError(f"runtime_env['pip']['pip_check'] must be a bool, got {pip_check!r}")
    if not packages:
        return None
    return {"packages": packages, "pip_check": pip_check}


def validate_runtime_env(runtime_env) -> dict:
    """Check a user's ``runtime_env`` (types and keys; paths are not looked at yet).

    Returns:
        A plain dict copy of it (``{}`` for None).

    Raises:
        TypeError: a value of the wrong type.
        NotImplementedError: a Ray key graphstore does not implement (``conda``,
            ``container``, ...), named.
    """
    if runtime_env is None:
        return {}
    if not isinstance(runtime_env, dict):
        raise TypeError(f"runtime_env must be a dict such as {{'env_vars': {{...}}}}, got "
                        f"{type(runtime_env).__name__}")
    for key in runtime_env:
        if key not in RUNTIME_ENV_KEYS:
            raise NotImplementedError(
                f"runtime_env key {key!r} is not supported by graphstore (supported: "
                f"{', '.join(RUNTIME_ENV_KEYS)})")
    env = dict(runtime_env)
    env_vars = env.get("env_vars") or {}
    if not isinstance(env_vars, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in env_vars.items()):
        raise TypeError(f"runtime_env['env_vars'] must be a dict of str to str, got "
                        f"{env_vars!r}")
    wd = env.get("working_dir")
    if wd is not None and not isinstance(wd, (str, os.PathLike)):
        raise TypeError(f"runtime_env['working_dir'] must be a path or a gspkg:// URI, "
                        f"got {wd!r}")
    modules = env.get("py_modules")
    if modules is not None:
        if not isinstance(modules, (list, tuple)) or not all(
                isinstance(m, (str, os.PathLike)) or hasattr(m, "__file__")
                for m in modules):
            raise TypeError(f"runtime_env['py_modules'] must be a list of paths, URIs or "
                            f"imported modules, got {modules!r}")
    if env.get("excludes") is not None:
        _check_str_list(env["excludes"], "runtime_env['excludes']")
    pip = env.get("pip")
    if pip is not None and not isinstance(pip, (str, os.PathLike)):
        normalize_pip(pip)
    return env


def merge_runtime_envs(parent: dict | None, child: dict | None) -> dict:
    """Ray's rule for a job's (or a parent task's) environment and a task's or actor's
    own: the child's keys replace the parent's, except ``env_vars``, merged variable by
    variable (the child's win).

    Returns:
        The merged dict (neither argument is changed).
    """
    merged = dict(parent or {})
    for key, value in (child or {}).items():
        if key == "env_vars" and value is not None:
            merged["env_vars"] = {**(merged.get("env_vars") or {}), **value}
        else:
            merged[key] = value
    return {k: v for k, v in merged.items() if v is not None}


def module_path(entry) -> str:
    """A ``py_modules`` entry as a path: an imported module becomes its package
    directory (or its file); paths and URIs stay as they are."""
    if hasattr(entry, "__file__") and not isinstance(entry, (str, os.PathLike)):
        file = Path(entry.__file__)
        return str(file.parent if file.name == "__init__.py" else file)
    return os.fspath(entry)


def resolve_runtime_env(runtime_env: dict | None,
                        upload: Callable[..., str],
                        base_dir: str | os.PathLike | None = None) -> dict:
    """A checked ``runtime_env`` in its wire-ready form: local paths uploaded and
    replaced by their URIs.

    Args:
        runtime_env: the user's dict (``validate_runtime_env`` runs first).
        upload: ``upload(path, excludes=..., prefix=...) -> URI`` (the driver's
            ``upload_package``; a test may pass a pure one).
        base_dir: where relative paths start (the driver's working directory by
            default, as in Ray).

    Returns:
        ``{"env_vars": {...}, "working_dir": URI, "py_modules": [URI, ...],
        "pip": {"packages": [...], "pip_check": bool}}``, keys without a value left
        out. Already resolved values (URIs) pass through unchanged.

    Raises:
        TypeError, NotImplementedError: as ``validate_runtime_env``.
        PackageError: a path that cannot be packed (missing, too large, unsafe zip).
        ValueError: an unreadable requirements file.
    """
    env = validate_runtime_env(runtime_env)
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    excludes = tuple(env.get("excludes") or ())
    out: dict = {}
    if env.get("env_vars"):
        out["env_vars"] = dict(env["env_vars"])

    def local(path) -> Path:
        p = Path(path).expanduser()
        return p if p.is_absolute() else base / p

    wd = env.get("working_dir")
    if wd is not None:
        wd = os.fspath(wd)
        out["working_dir"] = wd if is_package_uri(wd) else upload(local(wd),
                                                                   excludes=excludes)
    if env.get("py_modules"):
        uris = []
        for entry in env["py_modules"]:
            entry = module_path(entry)
            if is_package_uri(entry):
                uris.append(entry)
                continue
            path = local(entry)
            if path.is_dir():             # a package: keep its name as the top level
                uris.append(upload(path, excludes=excludes, prefix=path.name))
            else:                         # a module file or a zip: at the root
                uris.append(upload(path, excludes=excludes))
        out["py_modules"] = uris
    pip = normalize_pip(env.get("pip"), base)
    if pip is not None:
        out["pip"] = pip
    return out


def needs_setup(resolved: dict | None) -> bool:
    """The resolved environment ships packages or installs requirements: a host must
    prepare it before a process of it starts."""
    return bool(resolved) and bool(resolved.get("working_dir") or resolved.get("py_modules")
                                   or resolved.get("pip"))


def environment_hash(resolved: dict | None) -> str:
    """A stable hash of a resolved environment (variables, URIs, pip list): equal for
    equal environments in any process, whatever the order of keys. Keys task
    processes, so different environments never share one."""
    canonical = json.dumps(resolved or {}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def pip_hash(pip: dict, python: str | None = None) -> str:
    """The key of the virtualenv a ``pip`` spec (normalized) is installed into on a
    host: the requirements, ``pip_check`` and the Python that makes the venv."""
    canonical = json.dumps({"pip": pip, "python": python or sys.version},
                           sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()
