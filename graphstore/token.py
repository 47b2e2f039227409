"""The cluster token: a shared secret every connection proves it knows.

Local clusters make one per cluster and hand it to their processes through the
environment. ``graphstore scheduler`` makes one and writes it to a file only its owner can
read; workers and drivers read ``GRAPHSTORE_TOKEN`` or that file.
"""
from __future__ import annotations

import os
import secrets
from pathlib import Path

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
    """The token from the argument, the environment, or the token file, in that order."""
    token = explicit or os.environ.get(ENV_VAR)
    if not token:
        file = Path(path or default_token_file())
        try:
            token = file.read_text().strip()
        except FileNotFoundError:
            raise FileNotFoundError(
                f"no cluster token: set {ENV_VAR}, or copy the token file the scheduler "
                f"wrote to {file}") from None
    return token.encode()
