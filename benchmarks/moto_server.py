"""A real moto S3 server for the spill suite's S3 workload.

``python -m moto.server`` on a free loopback port, in the child's process
group (so the parent's timeout kills it too), with a bucket created through
s3fs.  One server per process: ``shared_moto`` starts it on first use and
``stop_moto`` (called by the child at the end) stops it.  (Not named
``moto.py``: ``benchmarks/`` is first on ``sys.path`` and would shadow moto.)
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time


class MotoServer:
    """A real moto S3 server (``python -m moto.server``) on a free loopback
    port, and ``bucket`` in it created through s3fs."""

    def __init__(self, bucket: str):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        # Same process group as this child: the parent's timeout kills it too.
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"moto server exited with {self.proc.returncode}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("moto server did not start within 60 s")
                time.sleep(0.2)
        self.options = {"key": "testing", "secret": "testing",
                        "client_kwargs": {"endpoint_url": self.url,
                                          "region_name": "us-east-1"}}
        try:
            import s3fs
            # The bucket is made without region_name: with one, s3fs sends a
            # LocationConstraint, which S3 refuses for us-east-1.
            s3fs.S3FileSystem(key="testing", secret="testing", skip_instance_cache=True,
                              client_kwargs={"endpoint_url": self.url}).mkdir(bucket)
            self.fs = s3fs.S3FileSystem(skip_instance_cache=True, **self.options)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


_moto: MotoServer | None = None


def shared_moto(bucket: str) -> MotoServer:
    """This process's moto server with ``bucket``, started on first use."""
    global _moto
    if _moto is None:
        _moto = MotoServer(bucket)
    return _moto


def stop_moto() -> None:
    global _moto
    if _moto is not None:
        _moto.stop()
        _moto = None
