"""Unit tests of ``graphstore.core.packages``: deterministic packing, URIs, safe and
atomic unpacking, and the pure half of runtime environments (checks, Ray's merge,
resolution of paths to URIs, hashes). No cluster: the object-store side is in
``test_runtime_env.py``."""
from __future__ import annotations

import io
import os
import stat
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

from graphstore.core import packages
from graphstore.exceptions import PackageError


def make_tree(root: Path) -> Path:
    (root / "pkg").mkdir(parents=True)
    (root / "main.py").write_text("X = 1\n")
    (root / "pkg" / "__init__.py").write_text("")
    (root / "pkg" / "data.csv").write_text("a,b\n1,2\n")
    (root / "run.sh").write_text("#!/bin/sh\n")
    (root / "run.sh").chmod(0o755)
    (root / "__pycache__").mkdir()
    (root / "__pycache__" / "main.cpython-311.pyc").write_bytes(b"\0")
    (root / ".git").mkdir()
    (root / ".git" / "HEAD").write_text("ref: x\n")
    (root / "logs").mkdir()
    (root / "logs" / "a.log").write_text("noise\n")
    return root


def names(data: bytes) -> list[str]:
    return zipfile.ZipFile(io.BytesIO(data)).namelist()


def test_packing_is_deterministic_and_leaves_out_caches_and_vcs(tmp_path):
    tree = make_tree(tmp_path / "a")
    first = packages.pack(tree)
    assert packages.entries_uri(packages.collect(tree)) == packages.package_uri(first)
    os.utime(tree / "main.py", (1, 1))           # timestamps do not matter
    (tree / "__pycache__" / "other.pyc").write_bytes(b"\1")
    assert packages.pack(tree) == first
    assert names(first) == ["logs/a.log", "main.py", "pkg/__init__.py", "pkg/data.csv",
                            "run.sh"]
    # The same files elsewhere give the same URI; a changed byte another one.
    copy = make_tree(tmp_path / "b")
    assert packages.package_uri(packages.pack(copy)) == packages.package_uri(first)
    (copy / "main.py").write_text("X = 2\n")
    assert packages.package_uri(packages.pack(copy)) != packages.package_uri(first)
    assert packages.is_package_uri(packages.package_uri(first))


def test_excludes_are_globs_on_components_or_relative_paths(tmp_path):
    tree = make_tree(tmp_path / "a")
    assert names(packages.pack(tree, excludes=["*.log"])) == [
        "main.py", "pkg/__init__.py", "pkg/data.csv", "run.sh"]
    assert names(packages.pack(tree, excludes=["pkg/*.csv", "/run.sh", "logs/"])) == [
        "main.py", "pkg/__init__.py"]


def test_prefix_keeps_a_package_name_and_modes_survive(tmp_path):
    tree = make_tree(tmp_path / "a")
    data = packages.pack(tree / "pkg", prefix="pkg")
    assert names(data) == ["pkg/__init__.py", "pkg/data.csv"]
    out = packages.unpack(packages.pack(tree), packages.package_uri(packages.pack(tree)),
                          tmp_path / "cache")
    assert os.stat(out / "run.sh").st_mode & stat.S_IXUSR
    assert not os.stat(out / "main.py").st_mode & stat.S_IXUSR
    # One module file is packed alone at the root.
    assert names(packages.pack(tree / "main.py")) == ["main.py"]


def test_a_zip_is_repacked_by_content(tmp_path):
    tree = make_tree(tmp_path / "a")
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as zf:         # other order, other timestamps
        zf.writestr("pkg/__init__.py", "")
        zf.writestr("main.py", "X = 1\n")
    again = tmp_path / "b.zip"
    with zipfile.ZipFile(again, "w") as zf:
        zf.writestr(zipfile.ZipInfo("main.py", (2020, 5, 5, 5, 5, 5)), "X = 1\n")
        zf.writestr("pkg/__init__.py", "")
    assert packages.pack(archive) == packages.pack(again)
    assert names(packages.pack(archive)) == ["main.py", "pkg/__init__.py"]
    assert tree.exists()


def test_too_large_names_the_directory_and_its_size(tmp_path):
    tree = tmp_path / "big_dir"
    tree.mkdir()
    (tree / "blob.bin").write_bytes(b"x" * 3 * 2**20)
    with pytest.raises(PackageError, match=r"big_dir.* is 3\.0 MiB.*1\.0 MiB.*"
                                           r"max_package_bytes"):
        packages.pack(tree, max_bytes=2**20)
    # Excluding the blob makes it fit.
    assert names(packages.pack(tree, max_bytes=2**20, excludes=["*.bin"])) == []
    with pytest.raises(PackageError, match="no such file"):
        packages.pack(tmp_path / "missing")


def evil_zip(entry: str, body: bytes = b"pwned") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("ok.txt", "fine")
        zf.writestr(entry, body)
    return buffer.getvalue()


@pytest.mark.parametrize("entry", ["../escaped.txt", "a/../../escaped.txt",
                                   "/tmp/absolute.txt", "C:/windows.txt",
                                   "..\\escaped.txt"])
def test_unpack_refuses_zip_slip_by_name(tmp_path, entry):
    data = evil_zip(entry)
    cache = tmp_path / "cache"
    with pytest.raises(PackageError, match="unsafe entry"):
        packages.unpack(data, packages.package_uri(data), cache)
    assert not (tmp_path / "escaped.txt").exists()
    assert not any((cache / "packages").iterdir())       # no half-unpacked directory
    # Packing such a zip is refused as well, naming it.
    archive = tmp_path / "evil.zip"
    archive.write_bytes(data)
    with pytest.raises(PackageError, match=r"unsafe entry .*evil\.zip"):
        packages.pack(archive)


def test_unpack_checks_hash_links_and_size(tmp_path):
    data = packages.pack(make_tree(tmp_path / "a"))
    uri = packages.package_uri(data)
    other = packages.pack(tmp_path / "a" / "pkg")
    with pytest.raises(PackageError, match="do not match its hash"):
        packages.unpack(other, uri, tmp_path / "cache")         # another package's bytes
    with pytest.raises(PackageError, match="is not a zip|not a package zip"):
        packages.unpack(b"garbage", uri, tmp_path / "cache")
    # The URI names the files, not the zip's bytes: a zip with other timestamps and
    # compression of the same files is the same package.
    again = io.BytesIO()
    with zipfile.ZipFile(data and io.BytesIO(data)) as src, \
            zipfile.ZipFile(again, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            copy = zipfile.ZipInfo(info.filename, (2001, 2, 3, 4, 5, 6))
            copy.external_attr = info.external_attr
            dst.writestr(copy, src.read(info))
    assert again.getvalue() != data and packages.package_uri(again.getvalue()) == uri
    with pytest.raises(PackageError, match="is not a package URI"):
        packages.unpack(data, "gspkg://abc.zip", tmp_path / "cache")
    with pytest.raises(PackageError, match="more than the package limit"):
        packages.unpack(data, uri, tmp_path / "cache", max_bytes=10)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        info = zipfile.ZipInfo("link")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "/etc/passwd")
    link = buffer.getvalue()
    with pytest.raises(PackageError, match="links are not allowed"):
        packages.unpack(link, packages.package_uri(link), tmp_path / "cache")
    out = packages.unpack(data, uri, tmp_path / "cache")
    assert packages.cached_package(uri, tmp_path / "cache") == out
    assert (out / "pkg" / "data.csv").read_text() == "a,b\n1,2\n"


def test_concurrent_unpackers_on_one_host_do_not_race(tmp_path):
    """Eight processes unpack the same package at once: one directory, complete, no
    temporary directory left."""
    data = packages.pack(make_tree(tmp_path / "a"))
    (tmp_path / "pkg.zip").write_bytes(data)
    uri = packages.package_uri(data)
    script = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from graphstore.core import packages
        data = Path({str(tmp_path / 'pkg.zip')!r}).read_bytes()
        out = packages.unpack(data, {uri!r}, {str(tmp_path / 'cache')!r})
        print(sorted(p.name for p in out.rglob('*')))
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(8)]
    outputs = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    assert len({out for out, _ in outputs}) == 1
    assert [p.name for p in (tmp_path / "cache" / "packages").iterdir()] == [
        uri.split("//")[1].removesuffix(".zip")]


def test_merge_follows_ray(tmp_path):
    job = {"working_dir": "gspkg://job", "env_vars": {"A": "job", "B": "job"},
           "pip": {"packages": ["x"], "pip_check": False}}
    task = {"env_vars": {"B": "task"}, "py_modules": ["gspkg://mod"]}
    merged = packages.merge_runtime_envs(job, task)
    assert merged == {"working_dir": "gspkg://job", "env_vars": {"A": "job", "B": "task"},
                      "pip": {"packages": ["x"], "pip_check": False},
                      "py_modules": ["gspkg://mod"]}
    assert packages.merge_runtime_envs(job, {"working_dir": "gspkg://own"})[
        "working_dir"] == "gspkg://own"
    assert job["env_vars"] == {"A": "job", "B": "job"}       # inputs unchanged


def test_resolve_uploads_paths_relative_to_the_base_dir(tmp_path):
    tree = make_tree(tmp_path / "project")
    calls = []

    def upload(path, excludes=(), prefix=""):
        calls.append((Path(path), tuple(excludes), prefix))
        return packages.package_uri(packages.pack(path, excludes=excludes, prefix=prefix))
    resolved = packages.resolve_runtime_env(
        {"working_dir": ".", "py_modules": ["pkg", "main.py", "gspkg://" + "0" * 64 + ".zip"],
         "excludes": ["*.log"], "pip": ["six"], "env_vars": {"A": "1"}},
        upload, base_dir=tree)
    assert calls == [(tree / ".", ("*.log",), ""), (tree / "pkg", ("*.log",), "pkg"),
                     (tree / "main.py", ("*.log",), "")]
    assert resolved["py_modules"][2] == "gspkg://" + "0" * 64 + ".zip"
    assert resolved["pip"] == {"packages": ["six"], "pip_check": False}
    assert resolved["env_vars"] == {"A": "1"}
    assert all(packages.is_package_uri(u) for u in
               [resolved["working_dir"], *resolved["py_modules"]])
    # The hash keys processes: equal for equal environments, whatever the key order.
    same = dict(reversed(list(resolved.items())))
    assert packages.environment_hash(same) == packages.environment_hash(resolved)
    assert packages.environment_hash({**resolved, "env_vars": {"A": "2"}}) != \
        packages.environment_hash(resolved)


def test_pip_forms_and_runtime_env_checks(tmp_path):
    (tmp_path / "requirements.txt").write_text("# pinned\nsix==1.16\n\n--no-index\n")
    assert packages.normalize_pip("requirements.txt", tmp_path) == {
        "packages": ["six==1.16", "--no-index"], "pip_check": False}
    assert packages.normalize_pip({"packages": ["six"], "pip_check": True}) == {
        "packages": ["six"], "pip_check": True}
    assert packages.normalize_pip([]) is None
    with pytest.raises(ValueError, match="unknown key"):
        packages.normalize_pip({"packages": ["six"], "index": "x"})
    with pytest.raises(ValueError, match="cannot read the requirements file"):
        packages.normalize_pip("missing.txt", tmp_path)
    with pytest.raises(NotImplementedError, match="'conda'"):
        packages.validate_runtime_env({"conda": "env"})
    with pytest.raises(TypeError, match="working_dir"):
        packages.validate_runtime_env({"working_dir": 5})
    with pytest.raises(TypeError, match="excludes"):
        packages.validate_runtime_env({"excludes": "*.log"})
    assert packages.pip_hash({"packages": ["a"]}) != packages.pip_hash({"packages": ["b"]})
