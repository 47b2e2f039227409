"""Where stores spill objects: a local directory or any fsspec URL (``s3://`` via s3fs).

One ``SpillTarget`` per process holds one long-lived fsspec filesystem (s3fs keeps its
connection pool and credentials). Everything a cluster spills goes under
``<url>/<cluster id>/``, so shutdown can remove exactly that prefix. Writes use
multi-megabyte buffers; reads land straight in the caller's buffer (``readinto``), so a
restore into shared memory is one copy.
"""
from __future__ import annotations

import concurrent.futures
import os
import tempfile
import threading
import uuid

from graphstore.exceptions import GraphstoreError

#: Buffer size for spill files: large enough for S3 multipart parts (5 MiB minimum).
BLOCK_SIZE = 16 * 1024 * 1024
#: Reads of at least twice this many bytes are split into ranges read concurrently.
PARALLEL_READ_BYTES = 8 * 1024 * 1024
READ_PARTS = 2


class SpillError(GraphstoreError):
    """The spill target cannot be written or read."""


def default_spill_url() -> str:
    return os.path.join(tempfile.gettempdir(), "graphstore-spill")


def _normalise(url: str) -> str:
    if "://" not in url:
        return "file://" + os.path.abspath(os.path.expanduser(url))
    return url


class SpillTarget:
    def __init__(self, url: str, options: dict | None, cluster_id: str):
        import fsspec
        self.url = _normalise(url)
        self.options = dict(options or {})
        try:
            self.fs, root = fsspec.core.url_to_fs(self.url, **self.options)
        except Exception as exc:
            raise SpillError(f"cannot use spill target {url!r}: {type(exc).__name__}: "
                             f"{exc}") from exc
        self.protocol = self.fs.protocol if isinstance(self.fs.protocol, str) \
            else self.fs.protocol[0]
        self.base = f"{root.rstrip('/')}/{cluster_id}"
        self.is_local = self.protocol in ("file", "local")
        self._reader_pool = None
        self._readers_lock = threading.Lock()

    def describe(self, path: str) -> str:
        return f"{self.protocol}://{path}" if not self.is_local else path

    def _ensure_dir(self) -> None:
        if self.is_local:
            os.makedirs(self.base, exist_ok=True)

    def probe(self) -> None:
        """Write, read back and delete a small file; a clear error names the cause."""
        path = f"{self.base}/probe-{uuid.uuid4().hex}"
        try:
            self._ensure_dir()
            with self.fs.open(path, "wb") as f:
                f.write(b"graphstore spill probe")
            with self.fs.open(path, "rb") as f:
                if f.read() != b"graphstore spill probe":
                    raise SpillError("read back different bytes")
            self.fs.rm(path)
        except Exception as exc:
            raise SpillError(
                f"cannot spill to {self.url}: {type(exc).__name__}: {exc} (check the "
                f"URL, that the bucket or directory exists, the credentials and "
                f"spill_options such as endpoint_url)") from exc

    def new_path(self, tag: str) -> str:
        return f"{self.base}/{tag}-{uuid.uuid4().hex[:12]}"

    def write(self, path: str, buffers) -> None:
        """Write the buffers one after another into one file."""
        self._ensure_dir()
        with self.fs.open(path, "wb", block_size=BLOCK_SIZE) as f:
            for buffer in buffers:
                f.write(buffer)

    def read_into(self, path: str, offset: int, destination: memoryview) -> None:
        """Fill ``destination`` with the bytes at ``offset`` of ``path``.

        A large read is split into ``READ_PARTS`` ranges read at once, each through its
        own file: the destination is usually fresh shared memory, whose page faults
        (about 1.5 GB/s on one core) cost as much as the read itself; several readers
        fault on several cores, and an S3 endpoint serves several ranged GETs at once.
        """
        view = memoryview(destination).cast("B")
        parts = min(READ_PARTS, max(1, view.nbytes // PARALLEL_READ_BYTES))
        if parts == 1:
            self._read_range(path, offset, view)
            return
        step = -(-view.nbytes // parts)
        ranges = [(start, view[start:start + step]) for start in range(0, view.nbytes, step)]
        futures = [self._readers().submit(self._read_range, path, offset + start, part)
                   for start, part in ranges[1:]]
        try:
            self._read_range(path, offset, ranges[0][1])   # this thread reads one part
        finally:
            # Every part ends before this returns or raises: the caller may free the view.
            concurrent.futures.wait(futures)
        for future in futures:
            future.result()

    def _read_range(self, path: str, offset: int, view: memoryview) -> None:
        with self.fs.open(path, "rb", block_size=BLOCK_SIZE) as f:
            f.seek(offset)
            done = 0
            while done < view.nbytes:
                n = f.readinto(view[done:])
                if not n:
                    raise SpillError(f"{self.describe(path)} ended {done} bytes into a "
                                     f"read of {view.nbytes} at offset {offset}")
                done += n

    def _readers(self):
        with self._readers_lock:
            if self._reader_pool is None:
                self._reader_pool = concurrent.futures.ThreadPoolExecutor(READ_PARTS,
                                                       thread_name_prefix="graphstore-read")
            return self._reader_pool

    def delete(self, paths: list[str]) -> None:
        for path in paths:
            try:
                self.fs.rm(path)
            except FileNotFoundError:
                pass

    def remove_all(self) -> None:
        """Remove everything this cluster spilled."""
        try:
            if self.fs.exists(self.base):
                self.fs.rm(self.base, recursive=True)
        except FileNotFoundError:
            pass


def sweep_default_root(own_cluster: str) -> int:
    """Remove what dead local clusters left in the default spill directory.

    A cluster is alive while any of its workers holds its lock file in shared memory
    (see ``graphstore.core.shm``); a driver killed with SIGKILL cannot clean up after itself,
    so the next local cluster does. Only the default directory is swept: a directory the
    user named may hold other data.
    """
    import shutil

    from graphstore.core import shm
    root = default_spill_url()
    try:
        names = os.listdir(root)
    except OSError:
        return 0
    alive = {n[len(shm.PREFIX):].rsplit("-", 1)[0] for n in os.listdir(shm.SHM_DIR)
             if n.startswith(shm.PREFIX) and n.endswith(".lock")}
    removed = 0
    for name in names:
        if name == own_cluster or name in alive:
            continue
        shutil.rmtree(os.path.join(root, name), ignore_errors=True)
        removed += 1
    return removed
