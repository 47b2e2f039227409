"""A configuration file on real clusters: read by ``init()`` with no arguments (and
passed on to the local cluster's scheduler and workers), by ``graphstore scheduler`` and
``graphstore worker`` started by hand, and shown by ``graphstore config``; a bad file
stops each of them with a message naming the file and the key."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

import graphstore
from graphstore.exceptions import ConfigError

STORE_BYTES = 48 * 1024 * 1024


@pytest.fixture
def config_file(tmp_path):
    """A configuration file: a small store, no status page, a namespace of its own."""
    path = tmp_path / "graphstore.yaml"
    path.write_text(textwrap.dedent(f"""\
        object-store-memory: {STORE_BYTES}
        dashboard_port: 0
        namespace: from-the-file
    """))
    return path


def graphstore_cli(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "graphstore.cli", *args],
                          capture_output=True, text=True, timeout=60,
                          env={**_clean_environ(), **env})


def _clean_environ() -> dict:
    import os
    return {k: v for k, v in os.environ.items()
            if not k.startswith("GRAPHSTORE_") or k == "GRAPHSTORE_CONFIG"}


def test_init_with_no_arguments_uses_the_file_in_driver_scheduler_and_workers(
        run_driver, config_file):
    run = run_driver("""
        import graphstore
        ctx = graphstore.init()
        print("DASHBOARD=" + repr(ctx.dashboard_url))
        print("WORKERS=" + str(ctx.num_workers))
        print("CAPACITIES=" + repr(sorted({s["capacity"]
                                           for s in graphstore.memory_summary()["stores"]})))
        print("NAMESPACE=" + graphstore.get_runtime_context().namespace)
        graphstore.shutdown()
    """, env={"GRAPHSTORE_CONFIG": str(config_file)})
    assert run.returncode == 0, run.stderr
    assert int(run.value("WORKERS")) >= 1
    # Each worker's store has the file's size, the scheduler has no status page, and the
    # driver's named actors live in the file's namespace.
    assert run.value("CAPACITIES") == repr([STORE_BYTES])
    assert run.value("DASHBOARD") == "None"
    assert run.value("NAMESPACE") == "from-the-file"


def test_scheduler_and_worker_started_by_hand_read_the_file(cli_cluster, config_file):
    cli = cli_cluster(num_workers=1, env={"GRAPHSTORE_CONFIG": str(config_file)})
    graphstore.shutdown()
    try:
        # This driver reads no file (the suite's GRAPHSTORE_CONFIG is /dev/null).
        ctx = graphstore.init(address=cli.address, token=cli.token, log_to_driver=False)
        from helpers import wait_for
        assert wait_for(lambda: graphstore.memory_summary()["stores"], timeout=30)
        stores = graphstore.memory_summary()["stores"]
        assert [s["capacity"] for s in stores] == [STORE_BYTES]
        assert ctx.dashboard_url is None
    finally:
        graphstore.shutdown()


def test_graphstore_config_shows_the_file_as_the_source(config_file):
    env = {"GRAPHSTORE_CONFIG": str(config_file), "GRAPHSTORE_MAX_RETRIES": "5"}
    done = graphstore_cli("config", "--json", env=env)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    settings = report["settings"]
    assert settings["object_store_memory"] == {"value": STORE_BYTES, "kind": "file",
                                               "source": str(config_file)}
    assert settings["max_retries"]["source"] == "GRAPHSTORE_MAX_RETRIES"
    assert settings["inline_threshold"]["source"] == "default"
    assert report["files"] == [{"path": str(config_file), "exists": True}]
    text = graphstore_cli("config", env=env)
    assert text.returncode == 0, text.stderr
    row = next(line for line in text.stdout.splitlines()
               if line.startswith("object_store_memory "))
    assert row.split() == ["object_store_memory", str(STORE_BYTES), str(config_file)]


def test_a_bad_file_stops_init_the_cli_and_graphstore_config_naming_file_and_key(
        tmp_path, monkeypatch):
    bad = tmp_path / "graphstore.yaml"
    bad.write_text("max_retries: lots\n")
    env = {"GRAPHSTORE_CONFIG": str(bad)}
    expected = f"{bad}: setting 'max_retries' expects an integer, got 'lots'"
    token_file = tmp_path / "token"
    token_file.write_text("00" * 16)
    token_file.chmod(0o600)
    for command in (["config"], ["scheduler", "--port", "0", "--token-file", str(token_file)],
                    ["worker", "tcp://127.0.0.1:1", "--token-file", str(token_file)]):
        done = graphstore_cli(*command, env=env)
        assert done.returncode == 2, (command, done.stdout, done.stderr)
        assert expected in done.stderr, (command, done.stderr)
    monkeypatch.setenv("GRAPHSTORE_CONFIG", str(bad))
    graphstore.shutdown()
    with pytest.raises(ConfigError, match="max_retries"):
        graphstore.init(num_cpus=1)
    assert not graphstore.is_initialized()
