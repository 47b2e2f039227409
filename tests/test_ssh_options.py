"""What an SSH cluster is given, checked without any host (``graphstore/deploy/
ssh_options.py``, ``hosts_file.py``, ``ssh_scripts.py``): every mistake is a ValueError
naming its key, and the ssh and graphstore command lines are built as documented.
``test_ssh_cluster.py`` runs them against real sshd servers."""
from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import pytest

from graphstore.deploy.hosts_file import load_hosts_file
from graphstore.deploy.ssh_options import cluster_spec, host_part, worker_args
from graphstore.deploy.ssh_scripts import (END, parse_start, start_scheduler_script,
                                           start_worker_script, stop_script)

ROOT = Path(__file__).resolve().parent.parent
TWO = ["10.0.0.1", "10.0.0.2"]


@pytest.mark.parametrize("kwargs, message", [
    ({"hosts": "10.0.0.1"}, "hosts must be a list of hosts"),
    ({"hosts": ["10.0.0.1"]}, "hosts must list at least two hosts"),
    ({"hosts": ["10.0.0.1", "-oProxyCommand=x"]}, "hosts[1] must be an ssh destination"),
    ({"hosts": ["10.0.0.1", 10.5]}, "hosts[1] must be a non-empty string"),
    ({"hosts": TWO, "connect_options": {"port": 70000}},
     "connect_options.port must be a port number from 1 to 65535, got 70000"),
    ({"hosts": TWO, "connect_options": {"usr": "gs"}},
     "connect_options: unknown option 'usr' (did you mean 'user'?)"),
    ({"hosts": TWO, "connect_options": {"host_key_checking": "maybe"}},
     "connect_options.host_key_checking must be one of yes, accept-new, no"),
    ({"hosts": TWO, "connect_options": {"options": {"Proxy Jump": "x"}}},
     "connect_options.options name must be an ssh option name"),
    ({"hosts": TWO, "scheduler_options": {"port": "6380"}},
     "scheduler_options.port must be a port number from 0 to 65535, got '6380'"),
    ({"hosts": TWO, "worker_options": {"num_cpus": 0}},
     "worker_options.num_cpus must be a positive number, got 0"),
    ({"hosts": TWO, "worker_options": {"resources": {"gpu": -1}}},
     "worker_options.resources.gpu must be a number of at least 0"),
    ({"hosts": TWO, "worker_options": {"spill_threshold": 2}},
     "worker_options.spill_threshold must be a fraction in (0, 1]"),
    ({"hosts": TWO, "worker_options": {"log_level": "LOUD"}},
     "worker_options.log_level must be one of DEBUG"),
    ({"hosts": ["10.0.0.1", {"host": "10.0.0.2", "worker_option": {}}]},
     "hosts[1]: unknown option 'worker_option' (did you mean 'worker_options'?)"),
    ({"hosts": ["10.0.0.1", {"worker_options": {}}]}, "hosts[1] needs a 'host'"),
    ({"hosts": [{"host": "a", "worker_options": {"num_cpus": 1}}, "b"]},
     "hosts[0].worker_options: the first host runs the scheduler"),
    ({"hosts": TWO, "remote_python": "python '"}, "remote_python is not a valid command"),
    ({"hosts": TWO, "env": {"A B": "1"}}, "env name must be an environment variable name"),
    ({"hosts": TWO, "timeout": 0}, "timeout must be a positive number"),
    ({"hosts": TWO, "name": "a b"}, "name must be letters, digits"),
])
def test_mistakes_name_their_key(kwargs, message):
    kwargs.setdefault("name", "test")
    with pytest.raises(ValueError) as failed:
        cluster_spec(**kwargs)
    assert message in str(failed.value)


def test_the_ssh_command_line_honours_every_option():
    spec = cluster_spec(
        ["gs@head", {"host": "ssh://node2:2200", "connect_options": {"user": "other",
                                                                    "options": {"B": "2"}}}],
        name="demo", connect_options={
            "user": "gs", "port": 2222, "identity_file": "~/.ssh/gs",
            "known_hosts_file": "/etc/gs/known_hosts", "host_key_checking": True,
            "config_file": "/etc/gs/ssh_config", "connect_timeout": 3,
            "options": {"A": "1"}})
    head, node = spec.hosts
    argv = head.connect.ssh_argv(head.destination, "true")
    assert argv[:5] == ["ssh", "-T", "-o", "BatchMode=yes", "-o"]
    joined = " ".join(argv)
    for part in ("ConnectTimeout=3", "-F /etc/gs/ssh_config", "-l gs", "-p 2222",
                 f"-i {Path('~/.ssh/gs').expanduser()}",
                 "UserKnownHostsFile=/etc/gs/known_hosts", "StrictHostKeyChecking=yes",
                 "-o A=1"):
        assert part in joined
    assert argv[-3:] == ["--", "gs@head", "true"]         # no destination read as option
    node_argv = " ".join(node.connect.ssh_argv(node.destination, "true"))
    assert "-l other" in node_argv and "-o A=1 -o B=2" in node_argv
    # The processes listen on the hosts' names unless told otherwise.
    assert head.options == {"host": "head", "port": 6380}
    assert node.options == {"host": "node2"}
    assert [h.role for h in spec.hosts] == ["scheduler", "worker-1"]
    assert spec.remote_dir == ".graphstore/ssh/demo"


@pytest.mark.parametrize("destination, host", [
    ("node1", "node1"), ("gs@node1", "node1"), ("ssh://gs@node1:2200", "node1"),
    ("ssh://[fe80::1]:22", "fe80::1"), ("gs@[::1]", "::1"), ("10.0.0.5", "10.0.0.5")])
def test_host_part(destination, host):
    assert host_part(destination) == host


def test_worker_options_become_graphstore_worker_flags():
    args = worker_args({"num_cpus": 2.0, "resources": {"special": 2, "half": 0.5},
                        "spill_options": {"endpoint_url": "http://s3:9000"},
                        "labels": {"rack": "r1"},
                        "object_store_memory": 10**9, "node_id": "n1"})
    assert args == ["--num-cpus", "2", "--resource", "special=2", "--resource", "half=0.5",
                    "--spill-option", "endpoint_url=http://s3:9000", "--label", "rack=r1",
                    "--object-store-memory", "1000000000", "--node-id", "n1"]
    # The flags are the worker's own: its parser takes them.
    from graphstore.cli import build_parser
    parsed = build_parser().parse_args(["worker", "tcp://h:1", *args])
    assert parsed.num_cpus == 2 and parsed.resource == [("special", 2.0), ("half", 0.5)]
    assert parsed.label == [("rack", "r1")]


def test_scripts_are_valid_sh_and_carry_no_token():
    spec = cluster_spec(["head", "w1", "w1"], name="demo",
                        remote_python="conda run -n 'my env' python",
                        env={"GRAPHSTORE_LOG_FORMAT": "json; rm -rf /"})
    scripts = [start_scheduler_script(spec, attached=True),
               start_scheduler_script(spec, attached=False),
               *(start_worker_script(spec, h, "tcp://head:6380", a)
                 for h in spec.workers for a in (True, False)),
               *(stop_script(spec, h, 10) for h in spec.hosts)]
    for script in scripts:
        checked = subprocess.run(["sh", "-n", "-c", script], capture_output=True, text=True)
        assert checked.returncode == 0, checked.stderr + script
        assert "export GRAPHSTORE_LOG_FORMAT='json; rm -rf /'" in script
        assert "conda run -n 'my env' python -m graphstore.cli" in script
    # A host listed twice keeps two directories.
    assert ".graphstore/ssh/demo/worker-1" in scripts[2]
    assert ".graphstore/ssh/demo/worker-2" in scripts[4]
    # The worker reads the token from its standard input.
    assert "IFS= read -r token" in scripts[2]
    assert "--token-file .graphstore/ssh/demo/worker-1/token" in scripts[2]


def test_parse_start_reads_the_structured_lines_and_the_log():
    report = parse_start(["noise", "gs-ssh pid 42", "gs-ssh status ready",
                          "gs-ssh address tcp://h:1", "gs-ssh log", "a log line",
                          "gs-ssh pid 7", END, "after"])
    assert report.pid == 42 and report.status == "ready" and report.ended
    assert report.values == {"address": "tcp://h:1"}
    assert report.log == ["a log line", "gs-ssh pid 7"]
    assert not parse_start(["gs-ssh pid 42"]).ended


def test_the_hosts_file(tmp_path):
    hosts = tmp_path / "my cluster.yaml"
    hosts.write_text("hosts: [a, b]\nworker_options: {num_cpus: 2}\n")
    loaded = load_hosts_file(hosts)
    assert loaded.spec.name == "my-cluster"                      # from the file's name
    assert loaded.token_file == Path("~/.graphstore/ssh/my-cluster/token").expanduser()
    assert loaded.spec.workers[0].options == {"num_cpus": 2, "host": "b"}
    for text, message in [
            ("- a\n- b\n", "must be a mapping with at least 'hosts'"),
            ("host: [a, b]\n", "unknown key 'host' (did you mean 'hosts'?)"),
            ("cluster_name: demo\n", "no 'hosts'"),
            ("hosts: [a, b]\ncluster_name: 'x y'\n", "cluster_name must be letters"),
            ("hosts: [a, b]\ntoken_file: 3\n", "token_file must be a path"),
            ("hosts: [a, b]\nworker_options: {num_cpus: two}\n",
             "worker_options.num_cpus must be a positive number, got 'two'")]:
        hosts.write_text(text)
        with pytest.raises(ValueError) as failed:
            load_hosts_file(hosts)
        assert str(failed.value).startswith(f"{hosts}: "), failed.value
        assert message in str(failed.value)
    with pytest.raises(ValueError, match="cannot read the hosts file"):
        load_hosts_file(tmp_path / "missing.yaml")


def test_the_example_hosts_file_is_valid():
    loaded = load_hosts_file(ROOT / "examples" / "hosts.yaml")
    assert len(loaded.spec.hosts) >= 3
    assert shlex.split(" ".join(loaded.spec.scheduler.python))
