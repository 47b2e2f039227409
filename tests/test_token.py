"""The cluster token: where schedulers, workers and drivers get it."""
from __future__ import annotations

import os

import pytest

from graphstore.core import token as tk


@pytest.fixture(autouse=True)
def no_token_env(monkeypatch):
    monkeypatch.delenv(tk.ENV_VAR, raising=False)
    monkeypatch.delenv(tk.FILE_ENV_VAR, raising=False)


def test_a_scheduler_makes_an_owner_only_token_file_then_keeps_it(tmp_path):
    file = tmp_path / "dir" / "token"
    token, path, made = tk.scheduler_token(file)
    assert made and path == file and len(token) == 64
    assert file.stat().st_mode & 0o777 == 0o600
    assert file.parent.stat().st_mode & 0o077 == 0
    # A restart reads it back, so workers holding the same file keep working.
    assert tk.scheduler_token(file) == (token, file, False)
    again, _, made = tk.scheduler_token(file, new=True)
    assert made and again != token and file.read_text().strip() == again


def test_a_scheduler_refuses_a_token_file_others_can_read(tmp_path):
    file = tmp_path / "token"
    file.write_text("a" * 64)
    os.chmod(file, 0o644)
    with pytest.raises(PermissionError, match="other users.*chmod 600"):
        tk.scheduler_token(file)


def test_the_environment_wins_for_a_scheduler(tmp_path, monkeypatch):
    monkeypatch.setenv(tk.ENV_VAR, "from-env")
    assert tk.scheduler_token(tmp_path / "token") == ("from-env", None, False)
    assert not (tmp_path / "token").exists()


def test_workers_read_an_explicit_file_before_the_environment(tmp_path, monkeypatch):
    file = tmp_path / "token"
    tk.write_token_file("from-file", file)
    monkeypatch.setenv(tk.ENV_VAR, "from-env")
    assert tk.load_token(path=file) == b"from-file"
    assert tk.load_token() == b"from-env"
    assert tk.load_token("explicit", file) == b"explicit"
    monkeypatch.delenv(tk.ENV_VAR)
    monkeypatch.setenv(tk.FILE_ENV_VAR, str(file))
    assert tk.load_token() == b"from-file"


def test_a_missing_or_empty_token_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no cluster token"):
        tk.load_token(path=tmp_path / "missing")
    empty = tmp_path / "empty"
    tk.write_token_file("", empty)
    with pytest.raises(ValueError, match="is empty"):
        tk.load_token(path=empty)
