"""Log files and their lines, without a cluster: reading a log back (tail, offset,
rotation), the JSON format and its ids, the ``log_format`` setting, the log messages'
field checks, and the service records ``graphstore stop`` trusts."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import pytest

from graphstore.core import logs
from graphstore.core import protocol as msg
from graphstore.core import service_records
from graphstore.core.config import load_config
from helpers import process_alive
from test_protocol import roundtrip


# -- reading a log back ------------------------------------------------------------------

def test_tail_gives_the_last_lines(tmp_path):
    path = tmp_path / "a.log"
    path.write_text("".join(f"line {i}\n" for i in range(100)))
    part = logs.read_log(path, tail=3)
    assert part["data"] == "line 97\nline 98\nline 99\n"
    assert part["end"] == part["size"] == path.stat().st_size
    assert logs.read_log(path, tail=1000)["data"] == path.read_text()
    path.write_text("first\nlast without newline")
    assert logs.read_log(path, tail=1)["data"] == "last without newline"
    assert logs.read_log(path, tail=2)["data"] == "first\nlast without newline"


def test_reading_on_from_an_offset_follows_a_growing_file(tmp_path):
    path = tmp_path / "a.log"
    path.write_text("one\n")
    first = logs.read_log(path, tail=10)
    with open(path, "a") as f:
        f.write("two\nthree (half")
    later = logs.read_log(path, offset=first["end"])
    assert later["data"] == "two\n"              # a partial last line waits
    with open(path, "a") as f:
        f.write(" done)\n")
    assert logs.read_log(path, offset=later["end"])["data"] == "three (half done)\n"


def test_an_offset_past_the_end_after_rotation_starts_again(tmp_path):
    path = tmp_path / "a.log"
    path.write_text("x" * 100 + "\n")
    end = logs.read_log(path, tail=5)["end"]
    path.write_text("new file\n")                 # rotated: smaller than before
    part = logs.read_log(path, offset=end)
    assert part["start"] == 0 and part["data"] == "new file\n"


def test_reads_are_bounded_and_bad_arguments_are_refused(tmp_path):
    path = tmp_path / "a.log"
    path.write_bytes(b"y" * 100 + b"\n" + b"z" * 50 + b"\n")
    part = logs.read_log(path, offset=0, max_bytes=120)
    assert part["data"] == "y" * 100 + "\n" and part["end"] == 101
    with pytest.raises(ValueError, match="offset"):
        logs.read_log(path, offset=-1)
    with pytest.raises(ValueError, match="tail"):
        logs.read_log(path, tail=-5)
    with pytest.raises(FileNotFoundError):
        logs.read_log(tmp_path / "missing.log")


def test_log_requests_with_negative_numbers_are_refused_at_the_door():
    for bad in (msg.ReadLog(-1, 0), msg.FetchLog("scheduler", 0, -3),
                msg.ListState("tasks", None, None, -1), msg.ListState(7, None, None, 10)):
        with pytest.raises(ValueError, match="malformed message"):
            roundtrip([bad])


# -- lines --------------------------------------------------------------------------------

def _record(text: str, **extra) -> logging.LogRecord:
    record = logging.LogRecord("my.logger", logging.WARNING, __file__, 1, text, (), None)
    record.__dict__.update(extra)
    return record


def test_json_lines_carry_the_ids_this_process_and_thread_know():
    logs.set_process_ids(worker_id=b"\x01" * 16, node_id="node-7")
    logs.set_task_id_source(lambda: b"\xab" * 16)
    try:
        record = _record("hello %s")
        record.args = ("there",)
        assert logs.IdsFilter().filter(record)
        entry = json.loads(logs.JsonFormatter().format(record))
    finally:
        logs.set_process_ids(worker_id=None, node_id=None)
        logs.set_task_id_source(None)
    assert entry["message"] == "hello there"
    assert entry["level"] == "WARNING" and entry["logger"] == "my.logger"
    assert entry["task_id"] == "ab" * 16 and entry["worker_id"] == "01" * 16
    assert entry["node_id"] == "node-7" and "actor_id" not in entry
    assert entry["time"].endswith("+00:00")


def test_json_lines_keep_tracebacks_and_survive_a_broken_task_source():
    def broken():
        raise RuntimeError("no task here")
    logs.set_task_id_source(broken)
    try:
        try:
            1 / 0
        except ZeroDivisionError:
            record = _record("failed", exc_info=sys.exc_info())
        logs.IdsFilter().filter(record)
    finally:
        logs.set_task_id_source(None)
    entry = json.loads(logs.JsonFormatter().format(record))
    assert "ZeroDivisionError" in entry["exception"] and "task_id" not in entry


def test_log_format_is_validated_where_settings_are_loaded(monkeypatch, tmp_path):
    assert load_config().log_format == "text"
    assert load_config(log_format="json").log_format == "json"
    with pytest.raises(ValueError, match="log_format must be one of text, json, got 'xml'"):
        load_config(log_format="xml")
    monkeypatch.setenv("GRAPHSTORE_LOG_FORMAT", "yaml")
    with pytest.raises(ValueError, match=r"got 'yaml' \(from GRAPHSTORE_LOG_FORMAT\)"):
        load_config()
    monkeypatch.delenv("GRAPHSTORE_LOG_FORMAT")
    config_file = tmp_path / "graphstore.yaml"
    config_file.write_text("log_format: xml\n")
    monkeypatch.setenv("GRAPHSTORE_CONFIG", str(config_file))
    with pytest.raises(ValueError, match=f"got 'xml' \\(from {config_file}\\)"):
        load_config()


# -- service records ----------------------------------------------------------------------

@pytest.fixture
def own_records(tmp_path, monkeypatch):
    """Records under a temporary directory of this test only."""
    monkeypatch.setattr(service_records, "records_dir", lambda: tmp_path / "processes")
    return tmp_path / "processes"


def _record_for(popen: subprocess.Popen, directory, start_time=None) -> None:
    directory.mkdir(exist_ok=True)
    start = service_records.process_start_time(popen.pid) if start_time is None \
        else start_time
    (directory / f"worker-{popen.pid}.json").write_text(json.dumps(
        {"role": "worker", "pid": popen.pid, "start_time": start}))


def test_stop_ends_recorded_processes_and_nothing_else(own_records):
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    recorded = subprocess.Popen(sleeper)
    reused = subprocess.Popen(sleeper)       # its record names another start time
    unrecorded = subprocess.Popen(sleeper)
    try:
        _record_for(recorded, own_records)
        _record_for(reused, own_records, start_time=1)
        stopped = service_records.stop_services(grace=5)
        assert [r["pid"] for r in stopped] == [recorded.pid]
        assert stopped[0]["how"] == "terminated"
        assert recorded.wait(5) is not None
        assert process_alive(reused.pid) and process_alive(unrecorded.pid)
        assert list(own_records.iterdir()) == []     # both records are gone
        assert service_records.stop_services(grace=1) == []
    finally:
        for popen in (recorded, reused, unrecorded):
            popen.kill()
            popen.wait()


def test_stop_kills_what_ignores_sigterm_after_the_grace_period(own_records):
    stubborn = subprocess.Popen([sys.executable, "-c",
                                 "import signal, time, sys\n"
                                 "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                                 "print('ready', flush=True)\n"
                                 "time.sleep(60)"], stdout=subprocess.PIPE)
    try:
        assert stubborn.stdout.readline() == b"ready\n"
        _record_for(stubborn, own_records)
        (stopped,) = service_records.stop_services(grace=0.3)
        assert stopped["how"] == "killed"
        assert stubborn.wait(5) == -9
    finally:
        stubborn.kill()
        stubborn.wait()
        stubborn.stdout.close()


def test_a_record_is_written_and_removed_by_its_process(own_records):
    path = service_records.write_record("scheduler", port=1234)
    try:
        record = json.loads(path.read_text())
        assert record["pid"] == os.getpid() and record["port"] == 1234
        assert record["start_time"] == service_records.process_start_time(os.getpid())
        assert (path.stat().st_mode & 0o777) == 0o600
        assert [r["pid"] for r in service_records.live_records()] == [os.getpid()]
    finally:
        service_records.remove_record(path)
    assert not path.exists()
