"""``init()`` with Ray's keywords, and ``get_runtime_context()`` (issue 13, item 14).

``ray.init(logging_level=logging.ERROR)`` and the other keywords of ``ray.init`` work and
do what Ray's docstring says; an unknown keyword is a ``TypeError`` naming it. The
runtime context says, in the driver, in tasks and in actors, which job, task, actor,
node and worker the code runs in, and what it holds. Logging is checked in driver
processes of their own (``run_driver``), whose logging nobody configured before.
"""
from __future__ import annotations

import logging
import os
import socket
from pathlib import Path

import pytest

import graphstore
from graphstore.exceptions import GraphstoreError


# == init()'s keywords =========================================================================

def test_logging_level_error_silences_the_info_lines(run_driver):
    run = run_driver("""
        import logging, graphstore
        ctx = graphstore.init(num_cpus=1, logging_level=logging.ERROR)
        print("LEVEL=%d" % logging.getLogger("graphstore").level)
        print("SESSION=" + ctx.session_dir)
        graphstore.shutdown()
    """)
    assert run.returncode == 0, run.stderr
    assert run.value("LEVEL") == str(logging.ERROR)
    assert "started a local cluster" not in run.stderr
    # The local cluster's processes log at that level too (INFO lines are left out).
    log = (Path(run.value("SESSION")) / "logs" / "scheduler.log").read_text()
    assert "listening at tcp://" in log and " INFO " not in log


def test_default_logging_prints_rays_format_and_logging_format_replaces_it(run_driver):
    run = run_driver("""
        import graphstore
        graphstore.init(num_cpus=1)
        graphstore.shutdown()
    """)
    assert run.returncode == 0, run.stderr
    line = next(line for line in run.stderr.splitlines()
                if "started a local cluster at tcp://" in line)
    assert "\tINFO session.py:" in line and " -- " in line
    run = run_driver("""
        import graphstore
        graphstore.init(num_cpus=1, logging_level="INFO",
                        logging_format="GSLOG %(levelname)s %(message)s")
        graphstore.shutdown()
    """)
    assert run.returncode == 0, run.stderr
    assert "GSLOG INFO started a local cluster at tcp://" in run.stderr


def test_configure_logging_false_leaves_logging_alone(run_driver):
    run = run_driver("""
        import logging, graphstore
        graphstore.init(num_cpus=1, configure_logging=False, logging_level=logging.DEBUG)
        logger = logging.getLogger("graphstore")
        print("LEVEL=%d" % logger.level)
        print("HANDLERS=%d" % len(logger.handlers))
        graphstore.shutdown()
    """)
    assert run.returncode == 0, run.stderr
    assert run.value("LEVEL") == "0" and run.value("HANDLERS") == "0"
    assert "started a local cluster" not in run.stderr


def test_a_program_that_configured_logging_gets_no_second_handler(run_driver):
    run = run_driver("""
        import logging, graphstore
        logging.basicConfig(format="USER %(name)s %(message)s", level=logging.INFO)
        graphstore.init(num_cpus=1)
        graphstore.shutdown()
    """)
    assert run.returncode == 0, run.stderr
    lines = [line for line in run.stderr.splitlines() if "started a local cluster" in line]
    assert len(lines) == 1 and lines[0].startswith("USER graphstore ")


@pytest.mark.parametrize("kwargs, error, words", [
    ({"no_such_option": 1}, TypeError, "'no_such_option'"),
    ({"local_mode_typo": True}, TypeError, "unexpected keyword argument"),
    ({"runtime_env": {"conda": "env"}}, NotImplementedError, "'conda'"),
    ({"runtime_env": {"env_vars": {"A": 1}}}, TypeError, "env_vars"),
    ({"num_cpus": -1}, ValueError, "num_cpus"),
    ({"num_gpus": -2}, ValueError, "num_gpus"),
    ({"num_gpus": 0.5}, ValueError, "whole number"),
    ({"namespace": 5}, TypeError, "namespace"),
    ({"logging_level": "LOUD"}, ValueError, "logging_level"),
    ({"dashboard_port": "8265"}, ValueError, "dashboard_port"),
    ({"address": "tcp://127.0.0.1:1", "num_gpus": 1}, ValueError, "num_gpus"),
    ({"address": "tcp://127.0.0.1:1", "object_store_memory": 2**20}, ValueError,
     "object_store_memory"),
])
def test_bad_init_arguments_are_refused_before_anything_starts(kwargs, error, words):
    graphstore.shutdown()
    with pytest.raises(error, match=words):
        graphstore.init(**kwargs)
    assert not graphstore.is_initialized()


def test_dashboard_keywords(fresh_cluster):
    ctx = fresh_cluster(num_cpus=1, include_dashboard=False)
    assert ctx.dashboard_url is None
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    ctx = fresh_cluster(num_cpus=1, include_dashboard=True, dashboard_host="127.0.0.1",
                        dashboard_port=port)
    assert ctx.dashboard_url == f"http://127.0.0.1:{port}"
    with pytest.raises(GraphstoreError, match="already called"):
        graphstore.init(num_cpus=1)
    assert graphstore.init(ignore_reinit_error=True).dashboard_url == ctx.dashboard_url


def test_object_store_memory_sizes_each_store(fresh_cluster):
    fresh_cluster(num_cpus=2, object_store_memory=64 * 1024 * 1024)
    stores = graphstore.memory_summary()["stores"]
    assert [s["capacity"] for s in stores] == [64 * 1024 * 1024] * 2


@graphstore.remote
def lookup(name):
    return graphstore.get_runtime_context().namespace, \
        graphstore.get(graphstore.get_actor(name).ping.remote())


@graphstore.remote
class Named:
    def ping(self):
        return "pong"

    def namespace(self):
        return graphstore.get_runtime_context().namespace


def test_namespace_holds_the_jobs_named_actors(fresh_cluster, run_driver, local):
    ctx = fresh_cluster(num_cpus=2, namespace="team-a")
    assert graphstore.get_runtime_context().namespace == "team-a"
    actor = Named.options(name="svc").remote()
    assert graphstore.get(graphstore.get_actor("svc").ping.remote(), timeout=60) == "pong"
    with pytest.raises(ValueError, match="svc"):
        graphstore.get_actor("svc", namespace="default")
    # Tasks and actors of the job are in its namespace: get_actor finds it there.
    assert graphstore.get(lookup.remote("svc"), timeout=60) == ("team-a", "pong")
    assert graphstore.get(actor.namespace.remote(), timeout=60) == "team-a"
    # Another driver sees it in the same namespace only.
    code = """
        import graphstore
        graphstore.init(address={address!r}, namespace={namespace!r})
        try:
            graphstore.get_actor("svc")
            print("FOUND=yes")
        except ValueError:
            print("FOUND=no")
        graphstore.shutdown()
    """
    env = {"GRAPHSTORE_TOKEN": local().token}
    same = run_driver(code.format(address=ctx.address, namespace="team-a"), env=env)
    other = run_driver(code.format(address=ctx.address, namespace="team-b"), env=env)
    assert same.value("FOUND") == "yes" and other.value("FOUND") == "no", \
        same.stderr + other.stderr


# == get_runtime_context() =====================================================================

@graphstore.remote
def task_context():
    c = graphstore.get_runtime_context()
    return {"job": c.get_job_id(), "task": c.get_task_id(), "actor": c.get_actor_id(),
            "node": c.get_node_id(), "worker": c.get_worker_id(), "namespace": c.namespace,
            "held": c.get_assigned_resources(), "name": c.get_task_name(), "pid": os.getpid()}


@graphstore.remote
def nested_context():
    return graphstore.get(task_context.remote())


@graphstore.remote
class Context:
    def __init__(self):
        self.pid = os.getpid()

    def context(self):
        c = graphstore.get_runtime_context()
        return {"job": c.get_job_id(), "task": c.get_task_id(), "actor": c.get_actor_id(),
                "node": c.get_node_id(), "worker": c.get_worker_id(),
                "held": c.get_assigned_resources(), "name": c.get_actor_name(),
                "restarted": c.was_current_actor_reconstructed}

    def die(self):
        os._exit(1)


def test_runtime_context_in_the_driver(cluster):
    c = graphstore.get_runtime_context()
    job = c.get_job_id()
    assert isinstance(job, str) and int(job, 16) >= 0
    assert c.get_task_id() is None and c.get_actor_id() is None
    assert c.get_node_id() in {n["NodeID"] for n in graphstore.nodes()}
    assert isinstance(c.get_worker_id(), str)
    assert c.namespace == "default"
    assert c.get_assigned_resources() == {}
    assert graphstore.get_gpu_ids() == []
    assert c.get() == {"job_id": job, "node_id": c.get_node_id(), "namespace": "default"}


def test_runtime_context_in_tasks(cluster):
    driver = graphstore.get_runtime_context()
    a, b = graphstore.get([task_context.remote(), task_context.remote()], timeout=30)
    for seen in (a, b):
        assert seen["job"] == driver.get_job_id()
        assert seen["actor"] is None and seen["name"] == "task_context"
        assert seen["node"] == driver.get_node_id()
        assert seen["namespace"] == "default"
        assert seen["held"] == {"CPU": 1.0}
        assert seen["worker"] != driver.get_worker_id()
    assert a["task"] != b["task"] and len(a["task"]) == 32
    # Tasks submitted by tasks belong to the same job.
    assert graphstore.get(nested_context.remote(), timeout=30)["job"] == driver.get_job_id()
    zero = graphstore.get(task_context.options(num_cpus=0).remote(), timeout=30)
    assert zero["held"] == {}
    named = graphstore.get(task_context.options(name="custom").remote(), timeout=30)
    assert named["name"] == "custom"


def test_runtime_context_in_actors(cluster):
    driver = graphstore.get_runtime_context()
    actor = Context.options(max_restarts=1, max_task_retries=0).remote()
    one, two = graphstore.get([actor.context.remote(), actor.context.remote()], timeout=60)
    assert one["actor"] == actor._actor_id.hex()
    assert one["job"] == driver.get_job_id() and one["node"] == driver.get_node_id()
    assert one["task"] != two["task"] and one["task"] is not None
    assert one["held"] == {} and one["name"] == ""      # no CPU held by default, as in Ray
    assert one["restarted"] is False
    held = Context.options(num_cpus=1, name="ctx-named").remote()
    seen = graphstore.get(held.context.remote(), timeout=60)
    assert seen["held"] == {"CPU": 1.0} and seen["name"] == "ctx-named"
    # After a restart the actor knows it was reconstructed.
    with pytest.raises(graphstore.exceptions.ActorDiedError):
        graphstore.get(actor.die.remote(), timeout=60)
    assert graphstore.get(actor.context.remote(), timeout=60)["restarted"] is True
    graphstore.kill(held)
    graphstore.kill(actor)


@graphstore.remote
def actor_job_from_a_task():
    actor = Context.remote()
    return graphstore.get(actor.context.remote())["job"]


def test_an_actor_created_in_a_task_belongs_to_the_tasks_job(cluster):
    assert graphstore.get(actor_job_from_a_task.remote(), timeout=60) == \
        graphstore.get_runtime_context().get_job_id()


def test_tasks_and_actors_made_by_tasks_keep_their_job_among_several_drivers():
    """In the state machine: with two drivers, work a task submits belongs to the job of
    that task (not to whichever driver comes first)."""
    from graphstore.core import protocol as msg
    from test_scheduler_state import DRIVER, DRIVER2, FN, Harness, oid
    h = Harness()
    h.s.add_driver(DRIVER2, "other-namespace")
    w = h.worker("w1", cpus=2)
    for job in (DRIVER, DRIVER2):
        parent, _ = h.submit(peer=job)
        h.s.schedule()
        child_id = oid()
        h.s.submit(w, msg.SubmitTask(child_id, FN, "child", None, [], [], [oid()], 1.0,
                                     None, 0, parent))
        assert h.s.task_context(child_id)["job_id"] == job
        actor_id = oid()
        h.s.create_actor(w, msg.CreateActor(actor_id, oid(), FN, "A", None, [], [],
                                            {"parent_task": parent}, {}))
        assert h.s.actors[actor_id].job == job
    assert h.s.task_context(child_id)["namespace"] == "other-namespace"
