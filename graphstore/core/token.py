"""The cluster token: a shared secret every connection proves it knows.

Local clusters make one per cluster and hand it to their processes through the
environment. ``graphstore scheduler`` makes one and writes it to a file only its owner can
read; workers and drivers read ``GRAPHSTORE_TOKEN`` or that file.
"""
from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

logger = logging.getLogger("graphstore.token")

ENV_VAR = "GRAPHSTORE_TOKEN"
FILE_ENV_VAR = "GRAPHSTORE_TOKEN_FILE"


def default_token_file() -> Path:
    return Path(os.environ.get(FILE_ENV_VAR) or Path.home() / ".graphstore" / "token")


def new_token() -> str:
    return secrets.token_hex(32)


def write_token_file(token: str, path: Path | None = None) -> Path:
    path = Path(path or default_token_file())
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    os.chmod(path, 0o600)
    return path


def load_token(explicit: str | None = None, path: Path | None = None) -> bytes:
    """The token from the argument, a token file named explicitly, the environment, or
    the default token file, in that order."""
    token = explicit
    if not token and path is None:
        token = os.environ.get(ENV_VAR)
    if not token:
        file = Path(path or default_token_file())
        try:
            token = file.read_text().strip()
        except FileNotFoundError:
            raise FileNotFoundError(
                f"no cluster token: set {ENV_VAR}, or copy the token file the scheduler "
                f"wrote to {file}") from None
        if not token:
            raise ValueError(f"the token file {file} is empty")
        if _others_can_read(file):
            logger.warning("token file %s can be read by other users; chmod 600 it", file)
    return token.encode()


def scheduler_token(path: Path | None = None, new: bool = False) -> tuple[str, Path | None,
                                                                            bool]:
    """The token a scheduler uses, as ``(token, file, made)``: ``GRAPHSTORE_TOKEN`` if
    set (no file); else the token file's, when it exists, so a restarted scheduler keeps
    its workers; else (or with ``new``) a new token written to the file, owner-only."""
    token = os.environ.get(ENV_VAR)
    if token:
        return token, None, False
    file = Path(path or default_token_file())
    if not new and file.exists():
        if _others_can_read(file):
            raise PermissionError(
                f"the token file {file} can be read by other users "
                f"(mode {file.stat().st_mode & 0o777:o}): the token may have leaked; "
                f"remove it (a new one is made) or chmod 600 it")
        token = file.read_text().strip()
        if len(token) >= 32:
            return token, file, False
    token = new_token()
    return token, write_token_file(token, file), True


def _others_can_read(file: Path) -> bool:
    try:
        return bool(file.stat().st_mode & 0o077)
    except OSError:
        return False
