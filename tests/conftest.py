"""Fixtures shared by the test suite, registered here from ``fixtures/``, one module per
family (each module's docstring says what it holds):

* ``fixtures.processes``: finding this session's graphstore processes, killing them, the
  ``procs`` fixture and the session's leftover-process safety net;
* ``fixtures.clusters``: ``shared_cluster``/``cluster``, ``fresh_cluster``,
  ``init_cluster``, ``local``, ``cli_cluster``, ``spawn_cli`` and ``cluster_id``;
* ``fixtures.drivers``: ``run_driver`` (driver scripts in processes of their own);
* ``fixtures.s3``: real moto S3 servers (``moto_s3``, ``s3_spot``, ``flaky_s3``,
  ``moto_s3_with_auth``);
* ``fixtures.multihost``: network namespaces as hosts (``host_network``,
  ``multihost_cluster``);
* ``fixtures.ssh``: a real sshd in each of three namespace hosts (``ssh_network``,
  ``ssh_hosts``).

Integration tests run real clusters (a scheduler and worker subprocesses talking over
TCP); everything in these fixtures exists so that they never leave a process behind.
"""

import os

# No test reads the real ~/.config/graphstore or /etc/graphstore: a test that wants a
# configuration file names it (monkeypatch.setenv("GRAPHSTORE_CONFIG", ...)).
os.environ["GRAPHSTORE_CONFIG"] = os.devnull

pytest_plugins = [
    "fixtures.processes",
    "fixtures.clusters",
    "fixtures.drivers",
    "fixtures.s3",
    "fixtures.multihost",
    "fixtures.ssh",
]
