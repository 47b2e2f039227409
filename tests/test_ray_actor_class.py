"""Issue 13, items 2.9 and 2.8: the decorated class behaves like the user's class, and
per-method options (``@graphstore.method``, ``handle.method.options``) with Ray's retry
rules: ``max_task_retries`` and ``retry_exceptions`` per method, ``sys.exit()`` in a
method ending the actor's process, counted against ``max_restarts``, the call retried.
Each try of a retried method counts itself in a ``Counter`` actor, so the tests see
exactly how often a method ran.
"""
from __future__ import annotations

import os
import sys

import pytest

import graphstore
from graphstore.exceptions import ActorDiedError
from helpers import process_alive, wait_for


class MyError(Exception):
    pass


class OtherError(Exception):
    pass


# -- the decorated class ------------------------------------------------------------------

class Grandparent:
    GRANDPARENT = 2

    @staticmethod
    def grandparent_static():
        return 1


class Parent(Grandparent):
    PARENT = 6

    @classmethod
    def parent_class(cls):
        return cls.__name__


@graphstore.remote
class Shop(Parent):
    CONSTANT = 3

    def __init__(self, stock=0):
        self.stock = stock
        self.count = "an instance attribute named like a method"

    @staticmethod
    def price(amount):
        return amount * Shop.CONSTANT

    @classmethod
    def describe(cls, suffix=""):
        return f"{cls.__name__}/{cls.CONSTANT}{suffix}"

    def count(self):
        return self.stock

    def uses_the_decorated_class(self):
        # Inside a method the class's name is the decorated class, as in the driver.
        return (Shop.CONSTANT, Shop.GRANDPARENT, Shop.PARENT, Shop.price(2),
                Shop.describe("!"), Shop.parent_class(), Shop.grandparent_static())

    def make_another(self, stock):
        other = Shop.remote(stock)
        return graphstore.get(other.count.remote())


def test_class_attributes_static_and_class_methods_through_the_decorated_class(cluster):
    assert Shop.CONSTANT == 3 and Shop.GRANDPARENT == 2 and Shop.PARENT == 6
    assert Shop.price(5) == 15
    assert Shop.describe("?") == "Shop/3?"
    assert Shop.parent_class() == "Shop" and Shop.grandparent_static() == 1
    with pytest.raises(AttributeError, match="MISSING"):
        Shop.MISSING
    shop = Shop.remote(4)
    assert graphstore.get(shop.uses_the_decorated_class.remote(), timeout=30) == (
        3, 2, 6, 6, "Shop/3!", "Shop", 1)
    # The class's metadata is complete inside its own methods (it is unpickled there).
    assert graphstore.get(shop.make_another.remote(9), timeout=30) == 9


def test_static_and_class_methods_are_actor_methods(cluster):
    shop = Shop.remote()
    assert graphstore.get([shop.price.remote(2), shop.describe.remote(),
                           shop.parent_class.remote(), shop.grandparent_static.remote()],
                          timeout=30) == [6, "Shop/3", "Shop", 1]


def test_a_call_runs_the_class_method_not_an_instance_attribute(cluster):
    shop = Shop.remote(7)
    assert graphstore.get(shop.count.remote(), timeout=30) == 7


def test_dir_lists_what_ray_lists():
    public = {name for name in dir(Shop) if not name.startswith("_")}
    assert {"remote", "options", "count", "price", "describe", "CONSTANT"} <= public
    handle = graphstore.actor.ActorHandle(b"x" * 16, None, "Shop", {"count": [1, None, None,
                                                                             []]}, 0)
    assert dir(handle) == ["count"]


# -- per-method options and retries ------------------------------------------------------

@graphstore.remote
class Counter:
    def __init__(self):
        self.counts = {}

    def increment(self, key="default"):
        count = self.counts.get(key, 0)
        self.counts[key] = count + 1
        return count

    def get_count(self, key="default"):
        return self.counts.get(key, 0)


def _act(counter, key, actions):
    """Count this try; then do what ``actions`` says for it: raise, exit, or return."""
    count = graphstore.get(counter.increment.remote(key))
    action = actions[count] if count < len(actions) else "return"
    if action == "raise":
        raise MyError(f"try {count}")
    if action == "other":
        raise OtherError(f"try {count}")
    if action == "exit":
        sys.exit(1)
    return count


@graphstore.remote(max_task_retries=3)
class TroubleMaker:
    def __init__(self, key="default"):
        self.key = key

    @graphstore.method(max_task_retries=5, retry_exceptions=[MyError])
    def raise_n_times(self, counter, n):
        return _act(counter, self.key, ["raise"] * n)

    @graphstore.method(retry_exceptions=[MyError])
    def raise_or_exit(self, counter, actions):
        """Inherits the actor's max_task_retries=3."""
        return _act(counter, self.key, actions)

    def plain(self, counter, actions):
        return _act(counter, self.key, actions)

    @graphstore.method(num_returns=2)
    def pair(self):
        return 1, 2

    def pid(self):
        return os.getpid()


@graphstore.remote(max_task_retries=3)
class AsyncTroubleMaker:
    def __init__(self, key="default"):
        self.key = key

    @graphstore.method(retry_exceptions=[MyError])
    async def raise_or_exit(self, counter, actions):
        count = await counter.increment.remote(self.key)
        action = actions[count] if count < len(actions) else "return"
        if action == "raise":
            raise MyError(f"try {count}")
        if action == "exit":
            sys.exit(1)
        return count


def test_method_retries_on_its_retry_exceptions_up_to_its_max_task_retries(cluster):
    counter = Counter.remote()
    actor = TroubleMaker.remote()
    assert graphstore.get(actor.raise_n_times.remote(counter, 5), timeout=60) == 5
    assert graphstore.get(counter.get_count.remote()) == 6

    counter = Counter.remote()
    with pytest.raises(MyError, match="try 5"):            # no seventh try
        graphstore.get(actor.raise_n_times.remote(counter, 6), timeout=60)
    assert graphstore.get(counter.get_count.remote()) == 6


def test_call_options_override_the_method_and_the_method_the_actor(cluster):
    actor = TroubleMaker.remote()
    counter = Counter.remote()
    with pytest.raises(MyError):
        graphstore.get(actor.raise_n_times.options(retry_exceptions=False)
                       .remote(counter, 5), timeout=60)
    assert graphstore.get(counter.get_count.remote()) == 1

    counter = Counter.remote()
    assert graphstore.get(actor.raise_n_times.options(max_task_retries=10)
                          .remote(counter, 10), timeout=60) == 10
    assert graphstore.get(counter.get_count.remote()) == 11

    # A method without options retries nothing; .options() can ask for it.
    counter = Counter.remote()
    with pytest.raises(MyError):
        graphstore.get(actor.plain.remote(counter, ["raise"]), timeout=60)
    assert graphstore.get(actor.plain.options(retry_exceptions=True)
                          .remote(counter, ["raise", "raise"]), timeout=60) == 2
    # Errors not listed are not retried.
    counter = Counter.remote()
    with pytest.raises(OtherError):
        graphstore.get(actor.raise_or_exit.remote(counter, ["other", "raise"]), timeout=60)
    assert graphstore.get(counter.get_count.remote()) == 1
    # num_returns from the decorator, and from options.
    assert graphstore.get(actor.pair.remote(), timeout=30) == [1, 2]
    assert graphstore.get(actor.pair.options(num_returns=1).remote()) == (1, 2)


def _trouble_makers(**options):
    return {"sync": TroubleMaker.options(**options).remote("sync"),
            "async": AsyncTroubleMaker.options(**options).remote("async"),
            "threaded": TroubleMaker.options(max_concurrency=2, **options).remote("threaded")}


@pytest.mark.parametrize("actions, error", [
    (["raise", "raise", "raise"], MyError),
    (["exit", "raise", "raise"], MyError),
    (["raise", "exit", "raise"], MyError),
    (["raise", "raise", "exit"], ActorDiedError),
    (["raise", "exit", "exit"], ActorDiedError),     # max_restarts=1 is used up
], ids=lambda v: ",".join(v) if isinstance(v, list) else "")
def test_raises_and_exits_share_max_task_retries(cluster, actions, error):
    """1 try + max_task_retries=2 retries, whichever way each try fails; sync, async and
    threaded actors alike."""
    counter = Counter.remote()
    actors = _trouble_makers(max_restarts=1)
    refs = [actor.raise_or_exit.options(max_task_retries=2).remote(counter, actions)
            for actor in actors.values()]
    for ref in refs:
        with pytest.raises(error):
            graphstore.get(ref, timeout=60)
    assert graphstore.get([counter.get_count.remote(key) for key in actors]) == [3, 3, 3]


@pytest.mark.parametrize("limit", [-1, 2])
def test_sys_exit_restarts_the_actor_and_retries_the_call(cluster, limit):
    counter = Counter.remote()
    actors = _trouble_makers(max_restarts=limit)
    refs = [actor.raise_or_exit.options(max_task_retries=limit)
            .remote(counter, ["exit", "raise"]) for actor in actors.values()]
    assert graphstore.get(refs, timeout=60) == [2, 2, 2]
    assert graphstore.get([counter.get_count.remote(key) for key in actors]) == [3, 3, 3]


def test_sys_exit_counts_against_max_restarts(cluster):
    counter = Counter.remote()
    actor = TroubleMaker.options(max_restarts=1, max_task_retries=0).remote()
    first = graphstore.get(actor.pid.remote(), timeout=30)
    with pytest.raises(ActorDiedError):      # the process ended; no retries left
        graphstore.get(actor.plain.remote(counter, ["exit"]), timeout=60)
    second = graphstore.get(actor.pid.remote(), timeout=60)   # restarted
    assert second != first
    with pytest.raises(ActorDiedError, match="max_restarts=1"):
        graphstore.get(actor.plain.remote(counter, ["return", "exit"]), timeout=60)
    with pytest.raises(ActorDiedError):
        graphstore.get(actor.pid.remote(), timeout=60)
    assert graphstore.get(counter.get_count.remote()) == 2
    assert wait_for(lambda: not process_alive(second), timeout=30)


# -- per-method options on generator methods (with the generator work) -----------------

@graphstore.remote
class Streamer:
    @graphstore.method(num_returns="streaming", max_task_retries=1,
                       retry_exceptions=[MyError])
    def values(self, n, *, start=0):
        for i in range(start, start + n):
            yield i

    def plain_generator(self):
        yield from (1, 2)


def test_generator_methods_take_method_options_and_check_their_arguments(cluster):
    actor = Streamer.remote()
    assert [graphstore.get(r) for r in actor.values.remote(3, start=2)] == [2, 3, 4]
    assert [graphstore.get(r) for r in actor.plain_generator.remote()] == [1, 2]
    with pytest.raises(TypeError, match="values"):      # checked at the call
        actor.values.remote(start=1)
    refs = actor.values.options(num_returns=2, max_task_retries=0).remote(2)
    assert graphstore.get(refs) == [0, 1]
    dynamic = graphstore.get(actor.values.options(num_returns="dynamic").remote(2))
    assert [graphstore.get(r) for r in dynamic] == [0, 1]
    with pytest.raises(ValueError, match="generator"):
        graphstore.method(num_returns="streaming")(lambda self: 1)
