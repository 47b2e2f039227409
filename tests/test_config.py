"""Settings from defaults, YAML files, environment variables and arguments
(``core/config.py``, ``core/config_file.py``), and how ``graphstore config`` shows them
(``core/config_report.py``). Pure logic: every test names its files and environment, so
none reads the real ~/.config or /etc."""
from __future__ import annotations

import json
import re
import textwrap
from dataclasses import fields
from pathlib import Path

import pytest

from graphstore.core.config import (INHERITED_SETTINGS_VAR, Config, Setting,
                                    inherited_settings_environment, load_config,
                                    resolve_settings, setting_types)
from graphstore.core.config_file import (SYSTEM_FILE, USER_FILE, ConfigFile, config_files,
                                         read_settings_file, read_settings_files)
from graphstore.core.config_report import (MASK, format_settings, mask_secrets,
                                           settings_report)
from graphstore.exceptions import ConfigError

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "graphstore.yaml"


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def env_with(*files: Path, **variables: str) -> dict:
    return {"GRAPHSTORE_CONFIG": ":".join(str(f) for f in files), **variables}


# -- precedence ---------------------------------------------------------------------------

def test_file_beats_default_env_beats_file_argument_beats_env(tmp_path):
    path = write(tmp_path / "graphstore.yaml", """\
        max_retries: 5
        spill_threshold: 0.5
        namespace: from-file
    """)
    environ = env_with(path, GRAPHSTORE_SPILL_THRESHOLD="0.6",
                       GRAPHSTORE_NAMESPACE="from-env")
    settings = resolve_settings({"namespace": "from-argument", "max_lineage_bytes": None},
                                environ)
    assert settings["max_retries"] == Setting(5, "file", str(path))
    assert settings["spill_threshold"] == Setting(0.6, "env", "GRAPHSTORE_SPILL_THRESHOLD")
    assert settings["namespace"] == Setting("from-argument", "argument", "argument")
    # None is "not given": the default stays, and says so.
    assert settings["max_lineage_bytes"] == Setting(Config().max_lineage_bytes, "default",
                                                    "default")


def test_every_setting_is_reported_and_load_config_builds_the_same_values(tmp_path,
                                                                          monkeypatch):
    path = write(tmp_path / "graphstore.yaml", "task_history: 77\n")
    monkeypatch.setenv("GRAPHSTORE_CONFIG", str(path))
    monkeypatch.setenv("GRAPHSTORE_HEARTBEAT_INTERVAL", "0.5")
    settings = resolve_settings({"max_retries": 9})
    assert list(settings) == [f.name for f in fields(Config)]
    config = load_config(max_retries=9)
    assert (config.task_history, config.heartbeat_interval, config.max_retries) == (77, 0.5, 9)
    assert {name: s.value for name, s in settings.items()} == vars(config)


def test_dashes_and_underscores_name_the_same_setting(tmp_path):
    path = write(tmp_path / "graphstore.yaml", """\
        object-store-memory: 1234567
        spill_wait_timeout: 3
        keep-spilled: yes
    """)
    settings = resolve_settings(environ=env_with(path))
    assert settings["object_store_memory"].value == 1234567
    assert settings["spill_wait_timeout"].value == 3.0
    assert settings["keep_spilled"] == Setting(True, "file", str(path))


def test_later_files_win_key_by_key_and_mappings_merge(tmp_path):
    site = write(tmp_path / "site.yaml", """\
        max_retries: 1
        namespace: site
        spill_options:
          endpoint_url: http://127.0.0.1:9000
    """)
    job = write(tmp_path / "job.yaml", """\
        namespace: job
        spill_options:
          anon: false
    """)
    settings = resolve_settings(environ=env_with(site, job))
    assert settings["max_retries"] == Setting(1, "file", str(site))
    assert settings["namespace"] == Setting("job", "file", str(job))
    assert settings["spill_options"].value == {"endpoint_url": "http://127.0.0.1:9000",
                                               "anon": False}
    assert settings["spill_options"].source == f"{site}, {job}"


def test_standard_places_are_the_system_file_then_the_users(tmp_path):
    assert config_files({"HOME": str(tmp_path)}) == [
        ConfigFile(SYSTEM_FILE, False), ConfigFile(tmp_path / USER_FILE, False)]
    # GRAPHSTORE_CONFIG replaces the search; an empty value is as if unset.
    assert config_files({"HOME": str(tmp_path), "GRAPHSTORE_CONFIG": "/a.yaml:/b.yaml"}) == [
        ConfigFile(Path("/a.yaml"), True), ConfigFile(Path("/b.yaml"), True)]
    assert config_files({"HOME": str(tmp_path), "GRAPHSTORE_CONFIG": ""})[0].path == SYSTEM_FILE


def test_a_missing_standard_file_is_skipped_and_the_users_file_is_read(tmp_path):
    user_file = tmp_path / USER_FILE
    user_file.parent.mkdir(parents=True)
    write(user_file, "max_retries: 4\n")
    found = read_settings_files([ConfigFile(tmp_path / "etc" / "graphstore.yaml", False),
                                 ConfigFile(user_file, False)],
                                {"max_retries": int})
    assert found.values == {"max_retries": 4}
    assert found.sources == {"max_retries": str(user_file)}


def test_an_empty_file_or_dev_null_sets_nothing(tmp_path):
    empty = write(tmp_path / "empty.yaml", "# nothing set yet\n")
    settings = resolve_settings(environ=env_with(empty, Path("/dev/null")))
    assert {s.kind for s in settings.values()} == {"default"}


# -- errors -------------------------------------------------------------------------------

BAD_FILES = [
    ("object_store_memori: 5\n", ["'object_store_memori'", "did you mean",
                                  "'object_store_memory'"]),
    ("max_retries: lots\n", ["'max_retries'", "an integer", "'lots'"]),
    ("spill_threshold: [0.5, 0.6]\n", ["'spill_threshold'", "a number", "list"]),
    ("spill_options: s3\n", ["'spill_options'", "a mapping", "'s3'"]),
    ("keep_spilled: maybe\n", ["'keep_spilled'", "true or false"]),
    ("namespace: 12\n", ["'namespace'", "a string", "quote it"]),
    ("max_retries:\n", ["'max_retries'", "no value"]),
    ("max_retries: 2.5\n", ["'max_retries'", "an integer", "2.5"]),
    ("spill-to: /a\nspill_to: /b\n", ["'spill_to'", "given twice", "'spill-to'"]),
    ("graphstore:\n  max_retries: 2\n", ["'graphstore'", "top-level keys"]),
    ("max_retries: 2\n  namespace: x\n", ["line 2", "not valid YAML"]),
    ("spill_options: {endpoint_url: x\n", ["line 2", "not valid YAML"]),
    ("- max_retries\n- namespace\n", ["must be a mapping", "list"]),
    ("just words\n", ["must be a mapping", "str"]),
]


@pytest.mark.parametrize("text, expected", BAD_FILES,
                         ids=[re.sub(r"\W+", "_", t[0])[:30] for t in BAD_FILES])
def test_a_bad_file_is_an_error_naming_the_file_and_the_key(tmp_path, text, expected):
    path = write(tmp_path / "bad.yaml", text)
    with pytest.raises(ConfigError) as error:
        resolve_settings(environ=env_with(path))
    message = str(error.value)
    assert message.startswith(str(path)), message
    for fragment in expected:
        assert fragment in message, message
    assert isinstance(error.value, ValueError)   # the CLIs' `except ValueError` report it


def test_a_file_named_by_graphstore_config_must_exist(tmp_path):
    missing = tmp_path / "nowhere.yaml"
    with pytest.raises(ConfigError, match=re.escape(f"{missing}: no such configuration "
                                                    "file (named by GRAPHSTORE_CONFIG)")):
        resolve_settings(environ=env_with(missing))
    with pytest.raises(ConfigError, match="is a directory"):
        resolve_settings(environ=env_with(tmp_path))


def test_a_good_file_does_not_hide_a_bad_one_after_it(tmp_path):
    good = write(tmp_path / "good.yaml", "max_retries: 1\n")
    bad = write(tmp_path / "bad.yaml", "max_retrys: 1\n")
    with pytest.raises(ConfigError, match=re.escape(str(bad))):
        resolve_settings(environ=env_with(good, bad))


def test_environment_variables_keep_their_meaning_and_messages():
    settings = resolve_settings(environ={"GRAPHSTORE_CONFIG": "/dev/null",
                                         "GRAPHSTORE_KEEP_SPILLED": "yes",
                                         "GRAPHSTORE_SPILL_OPTIONS": '{"anon": true}',
                                         "GRAPHSTORE_TRANSFER_BANDWIDTH": "1e8"})
    assert settings["keep_spilled"].value is True
    assert settings["spill_options"].value == {"anon": True}
    assert settings["transfer_bandwidth"].value == 1e8
    with pytest.raises(ValueError, match=re.escape(
            "environment variable GRAPHSTORE_MAX_RETRIES='x' is not a valid int")):
        resolve_settings(environ={"GRAPHSTORE_CONFIG": "/dev/null",
                                  "GRAPHSTORE_MAX_RETRIES": "x"})


def test_an_argument_that_names_no_setting_is_a_type_error():
    with pytest.raises(TypeError, match="unknown graphstore setting 'max_retrys'"):
        load_config(max_retrys=2)


def test_yaml_numbers_convert_only_without_loss(tmp_path):
    path = write(tmp_path / "graphstore.yaml", """\
        transfer_bandwidth: 1e9
        object_store_memory: 1.5e+8
        handshake_timeout: 5
    """)
    settings = resolve_settings(environ=env_with(path))
    # YAML 1.1 reads 1e9 as a string: a number setting takes it as the number it spells.
    assert settings["transfer_bandwidth"].value == 1e9
    assert settings["object_store_memory"].value == 150_000_000
    assert isinstance(settings["object_store_memory"].value, int)
    assert settings["handshake_timeout"].value == 5.0


# -- a local cluster's processes take the driver's settings ------------------------------

def test_processes_of_a_local_cluster_take_the_drivers_settings_not_their_own(tmp_path):
    driver_config = Config(max_retries=7, spill_options={"anon": True}, namespace="n")
    bad = write(tmp_path / "bad.yaml", "not_a_setting: 1\n")
    environ = {**inherited_settings_environment(driver_config),
               "GRAPHSTORE_CONFIG": str(bad), "GRAPHSTORE_MAX_RETRIES": "1"}
    settings = resolve_settings({"spill_threshold": 0.3}, environ)
    config = Config(**{name: s.value for name, s in settings.items()})
    assert config == Config(max_retries=7, spill_options={"anon": True}, namespace="n",
                            spill_threshold=0.3)
    assert settings["max_retries"].kind == "driver"
    assert settings["spill_threshold"].kind == "argument"
    assert list(inherited_settings_environment(driver_config)) == [INHERITED_SETTINGS_VAR]


# -- what `graphstore config` shows -------------------------------------------------------

def test_secrets_are_masked_at_any_depth_and_other_options_are_shown():
    options = {"key": "AKIA123", "secret": "s3cr3t", "token": "", "endpoint_url": "http://e",
               "client_kwargs": {"aws_secret_access_key": "x", "region_name": "eu"},
               "password": "p", "anon": False}
    assert mask_secrets(options) == {
        "key": MASK, "secret": MASK, "token": "", "endpoint_url": "http://e",
        "client_kwargs": {"aws_secret_access_key": MASK, "region_name": "eu"},
        "password": MASK, "anon": False}


def test_the_report_shows_each_value_and_source_with_secrets_masked(tmp_path):
    path = write(tmp_path / "graphstore.yaml", """\
        object_store_memory: 50000000
        spill_options:
          key: AKIA123
          secret: s3cr3t
          endpoint_url: http://127.0.0.1:9000
    """)
    files = [ConfigFile(path, True), ConfigFile(tmp_path / "absent.yaml", False)]
    settings = resolve_settings(environ={"GRAPHSTORE_CONFIG": str(path),
                                         "GRAPHSTORE_MAX_RETRIES": "6"})
    report = settings_report(settings, files)
    assert report["settings"]["object_store_memory"] == {
        "value": 50_000_000, "kind": "file", "source": str(path)}
    assert report["settings"]["max_retries"]["source"] == "GRAPHSTORE_MAX_RETRIES"
    assert report["settings"]["spill_options"]["value"]["secret"] == MASK
    assert settings["spill_options"].value["secret"] == "s3cr3t"   # only the view masks
    json.dumps(report)
    text = format_settings(report)
    assert "s3cr3t" not in text and "AKIA123" not in text
    rows = {line.split()[0]: line.split() for line in text.splitlines() if line.strip()}
    assert rows["object_store_memory"][1:] == ["50000000", str(path)]
    assert rows["max_retries"][1:] == ["6", "GRAPHSTORE_MAX_RETRIES"]
    assert rows["inline_threshold"][1:] == [str(Config().inline_threshold), "default"]
    assert f"{tmp_path / 'absent.yaml'}  (not found)" in text


# -- the example file ---------------------------------------------------------------------

def test_the_example_file_is_valid_and_names_every_setting(tmp_path):
    """examples/graphstore.yaml has every setting commented out: uncommented, it must
    load, and name each setting once."""
    lines = EXAMPLE.read_text().splitlines()
    uncommented = [re.sub(r"^# ?(?=[a-z_-]+:|  )", "", line) for line in lines]
    path = write(tmp_path / "uncommented.yaml", "\n".join(uncommented) + "\n")
    settings = read_settings_file(ConfigFile(path, True), setting_types())
    assert sorted(settings) == sorted(f.name for f in fields(Config))
    # As shipped (all commented out) it changes nothing.
    as_shipped = resolve_settings(environ={"GRAPHSTORE_CONFIG": str(EXAMPLE)})
    assert {s.kind for s in as_shipped.values()} == {"default"}
