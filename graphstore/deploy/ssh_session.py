"""Running a script on a host through the system's OpenSSH client, and saying clearly why
it failed.

The ``ssh`` command (not a Python SSH library) is used on purpose: it honours the
user's ``~/.ssh/config`` (aliases, ``ProxyJump``, ``ControlMaster``), agent and known
hosts, as a user's own ``ssh`` would. ``BatchMode`` is always on: a password or
passphrase prompt would hang a cluster's start, so it fails at once instead.

A ``RemoteScript`` is one ``ssh`` process; several run at once (one per host) and are
read with deadlines, so a cluster's hosts start in parallel.
"""
from __future__ import annotations

import os
import selectors
import subprocess
import tempfile
import time

from graphstore.deploy.ssh_options import HostSpec
from graphstore.deploy.ssh_scripts import remote_command
from graphstore.exceptions import GraphstoreError

#: ``ssh`` exits with this when the connection itself failed (not the remote command).
SSH_FAILED = 255
#: Exit status of a shell whose command was not found.
NOT_FOUND = 127


class SSHError(GraphstoreError):
    """An SSH cluster could not be started or stopped: the message names the host and
    what to do, and quotes what ``ssh`` or the remote command printed.

    Attributes:
        host: the ssh destination concerned (``None`` for several).
        output: what ssh or the remote process printed (its standard error, or the
            tail of its log).
    """

    def __init__(self, message: str, host: str | None = None, output: str = ""):
        super().__init__(message)
        self.host = host
        self.output = output


#: Phrases of ssh's standard error, and what they mean for the user.
_SSH_HINTS = (
    ("Connection refused", "nothing accepts SSH connections there: is sshd running, and "
                           "is the port right (connect_options port)?"),
    ("Connection timed out", "the host did not answer (connect_options connect_timeout)"),
    ("timed out", "the host did not answer (connect_options connect_timeout)"),
    ("Could not resolve hostname", "the host name does not resolve"),
    ("No route to host", "no route to the host"),
    ("Network is unreachable", "the host's network is unreachable"),
    ("Permission denied", "authentication failed: check connect_options user and "
                          "identity_file (a key, no password: ssh runs in batch mode)"),
    ("Host key verification failed", "the host's key is not in the known hosts file, or "
                                     "it changed: ssh to it once by hand, or set "
                                     "connect_options host_key_checking: accept-new"),
    ("REMOTE HOST IDENTIFICATION HAS CHANGED", "the host's key changed since it was "
                                               "recorded in the known hosts file"),
)


def ssh_failure(destination: str, stderr: str) -> SSHError:
    """The error for an ``ssh`` that could not connect or log in (exit status 255)."""
    text = stderr.strip()
    hint = next((h for phrase, h in _SSH_HINTS if phrase in text), "ssh failed")
    return SSHError(f"ssh {destination}: {hint}\nssh said: {text or '(nothing)'}",
                    destination, text)


class RemoteScript:
    """``script`` running on ``host`` through ``ssh``, started at construction.

    ``stdin_text`` is written to the script's standard input; with ``keep_stdin`` the
    pipe then stays open (the remote process stops when it closes: ``close()``, or this
    process's exit, however it comes)."""

    def __init__(self, host: HostSpec, script: str, *, stdin_text: str = "",
                 keep_stdin: bool = False):
        self.host = host
        self._stderr = tempfile.TemporaryFile()
        argv = host.connect.ssh_argv(host.destination, remote_command(script))
        try:
            self.popen = subprocess.Popen(argv, stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE, stderr=self._stderr,
                                          start_new_session=True)
        except FileNotFoundError:
            self._stderr.close()
            raise SSHError("the OpenSSH client `ssh` is not installed on this machine "
                           "(Debian: apt-get install openssh-client)", host.destination) \
                from None
        self._buffer = b""
        self._lines: list[str] = []
        self._eof = False
        try:
            if stdin_text:
                self.popen.stdin.write(stdin_text.encode())
                self.popen.stdin.flush()
        except BrokenPipeError:
            pass                          # ssh already gave up; its stderr says why
        if not keep_stdin:
            self._close_stdin()
        os.set_blocking(self.popen.stdout.fileno(), False)

    def _close_stdin(self) -> None:
        try:
            self.popen.stdin.close()
        except BrokenPipeError:
            pass

    def read_until(self, last_line: str | None, deadline: float) -> tuple[list[str], bool]:
        """Lines printed until ``last_line`` (included; None: to the end of the output)
        or until ``deadline`` (``time.monotonic()``); whether ``last_line`` came."""
        with selectors.DefaultSelector() as selector:
            selector.register(self.popen.stdout, selectors.EVENT_READ)
            while (last_line is None or last_line not in self._lines) and not self._eof:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                if not selector.select(left):
                    continue
                chunk = os.read(self.popen.stdout.fileno(), 65536)
                if not chunk:
                    self._eof = True
                    chunk = b"\n" if self._buffer else b""
                self._buffer += chunk
                *complete, self._buffer = self._buffer.split(b"\n")
                self._lines += [c.decode(errors="replace") for c in complete]
        return list(self._lines), last_line is not None and last_line in self._lines

    def wait(self, deadline: float) -> int | None:
        """The exit status of ``ssh``, once it exits by ``deadline``; None if not."""
        self.read_until(None, deadline)
        try:
            return self.popen.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            return None

    @property
    def stderr(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")

    @property
    def running(self) -> bool:
        return self.popen.poll() is None

    def connection_error(self) -> SSHError | None:
        """The error if ssh exited because it could not connect or log in."""
        if self.popen.poll() == SSH_FAILED:
            return ssh_failure(self.host.destination, self.stderr)
        return None

    def close(self, timeout: float = 5.0) -> None:
        """Close its standard input and wait for ``ssh`` to end; kill it after
        ``timeout`` seconds."""
        if self.popen.stdin and not self.popen.stdin.closed:
            self._close_stdin()
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
        self.popen.stdout.close()
        self._stderr.close()


def run_scripts(jobs: list[tuple[HostSpec, str]], timeout: float
                ) -> list[tuple[int | None, str, str]]:
    """Run one script per host at once; each one's ``(exit status or None if it did
    not end within timeout, stdout, stderr)``, in order."""
    scripts = [RemoteScript(host, script) for host, script in jobs]
    deadline = time.monotonic() + timeout
    results = []
    for script in scripts:
        status = script.wait(deadline)
        lines, _ = script.read_until(None, time.monotonic())
        if status is None:
            script.popen.kill()
        results.append((status, "\n".join(lines), script.stderr))
        script.close()
    return results
