"""Issue 13, items 2.2 and 2.15 (in part): arguments bind at the call, as in Ray, and the
decorators and actor options reject bad input where it is given.

``f.remote(...)``, ``Actor.remote(...)`` and ``handle.method.remote(...)`` with arguments
that do not fit the signature raise ``TypeError`` at the call, in the driver, inside tasks
and inside actors, also through handles from ``get_actor`` or passed to other processes.
"""
from __future__ import annotations

import pytest

import graphstore
from graphstore.exceptions import RemoteUsageError


@graphstore.remote
def add3(x, y, *, z=0):
    return x + y + z


@graphstore.remote
def flexible(a, /, b=2, *args, c, **kwargs):
    return a, b, args, c, kwargs


@graphstore.remote
def never_runs_with_bad_arguments(x):
    return x


@graphstore.remote
class Account:
    def __init__(self, owner, balance=0):
        self.owner = owner
        self.balance = balance

    def deposit(self, amount, *, note=""):
        self.balance += amount
        return self.balance

    @staticmethod
    def fee(amount):
        return amount // 10

    @classmethod
    def kind(cls, suffix):
        return cls.__name__ + suffix

    def deposit_into(self, other, amount):
        return graphstore.get(other.deposit.remote(amount))

    def call_other(self, other, *args, **kwargs):
        """Call ``other.deposit`` from inside this actor: the error it raises here, or
        "no error" once the call ran."""
        try:
            ref = other.deposit.remote(*args, **kwargs)
        except TypeError as exc:
            return f"TypeError: {exc}"
        graphstore.get(ref)
        return "no error"


@graphstore.remote
def call_from_task(handle, *args, **kwargs):
    try:
        ref = handle.deposit.remote(*args, **kwargs)
    except TypeError as exc:
        return f"TypeError: {exc}"
    graphstore.get(ref)
    return "no error"


@graphstore.remote
def submit_from_task(*args, **kwargs):
    try:
        ref = add3.remote(*args, **kwargs)
    except TypeError as exc:
        return f"TypeError: {exc}"
    graphstore.get(ref)
    return "no error"


def _task_names() -> list[str]:
    return [record["name"] for record in graphstore.list_tasks(limit=100_000)]


# -- remote functions ---------------------------------------------------------------------

def test_task_arguments_that_do_not_fit_raise_typeerror_at_the_call(cluster):
    with pytest.raises(TypeError, match=r"add3\(x, y, \*, z=\.\.\.\): missing a required "
                                        r"argument: 'y'"):
        add3.remote(1)
    with pytest.raises(TypeError, match="too many positional arguments"):
        add3.remote(1, 2, 3)
    with pytest.raises(TypeError, match="unexpected keyword argument 'w'"):
        add3.remote(1, 2, w=3)
    with pytest.raises(TypeError, match="multiple values for argument 'x'"):
        add3.remote(1, 2, x=3)
    with pytest.raises(TypeError, match="missing a required argument: 'c'"):
        flexible.remote(1)
    with pytest.raises(TypeError, match="positional only"):
        flexible.remote(a=1, c=3)
    # .options() binds too; a ref counts as the argument it stands for.
    with pytest.raises(TypeError, match="missing a required argument"):
        add3.options(num_returns=1).remote(graphstore.put(1))
    # What fits runs.
    assert graphstore.get(add3.remote(1, 2, z=3), timeout=30) == 6
    assert graphstore.get(add3.remote(graphstore.put(1), y=graphstore.put(2))) == 3
    assert graphstore.get(flexible.remote(1, c=3)) == (1, 2, (), 3, {})
    assert graphstore.get(flexible.remote(1, 5, 6, 7, c=3, d=4)) == (1, 5, (6, 7), 3,
                                                                     {"d": 4})


def test_a_call_that_does_not_fit_submits_nothing(cluster):
    for bad in [(), (1, 2), ]:
        with pytest.raises(TypeError):
            never_runs_with_bad_arguments.remote(*bad)
    with pytest.raises(TypeError):
        never_runs_with_bad_arguments.remote(y=1)
    assert "never_runs_with_bad_arguments" not in _task_names()
    assert graphstore.get(never_runs_with_bad_arguments.remote(7), timeout=30) == 7
    assert _task_names().count("never_runs_with_bad_arguments") == 1


def test_calls_made_inside_tasks_bind_there(cluster):
    assert graphstore.get(submit_from_task.remote(1), timeout=30) == (
        "TypeError: add3(x, y, *, z=...): missing a required argument: 'y'")
    assert graphstore.get(submit_from_task.remote(1, 2, z=1), timeout=30) == "no error"


# -- actors -------------------------------------------------------------------------------

def test_actor_constructor_arguments_bind_at_the_call(cluster):
    with pytest.raises(TypeError, match=r"Account\(owner, balance=\.\.\.\): missing a "
                                        r"required argument: 'owner'"):
        Account.remote()
    with pytest.raises(TypeError, match="too many positional arguments"):
        Account.remote("ann", 1, 2)
    with pytest.raises(TypeError, match="unexpected keyword argument 'colour'"):
        Account.options(max_restarts=1).remote("ann", colour="red")
    account = Account.remote("ann", balance=5)
    assert graphstore.get(account.deposit.remote(1), timeout=30) == 6


def test_method_arguments_bind_at_the_call_skipping_self(cluster):
    account = Account.remote("bob")
    with pytest.raises(TypeError, match=r"Account\.deposit\(amount, \*, note=\.\.\.\): "
                                        r"missing a required argument: 'amount'"):
        account.deposit.remote()
    with pytest.raises(TypeError, match="too many positional arguments"):
        account.deposit.remote(1, "note")
    with pytest.raises(TypeError, match="unexpected keyword argument 'memo'"):
        account.deposit.options(name="named call").remote(1, memo="x")
    # Static and class methods are checked without skipping a parameter.
    with pytest.raises(TypeError, match=r"Account\.fee\(amount\): missing"):
        account.fee.remote()
    with pytest.raises(TypeError, match=r"Account\.kind\(suffix\): too many"):
        account.kind.remote("a", "b")
    assert graphstore.get([account.deposit.remote(3, note="n"), account.fee.remote(50),
                           account.kind.remote("!")], timeout=30) == [3, 5, "Account!"]


def test_handles_from_get_actor_and_in_other_processes_bind(cluster):
    owner = Account.options(name="binding-account").remote("cy")
    found = graphstore.get_actor("binding-account")
    with pytest.raises(TypeError, match="missing a required argument: 'amount'"):
        found.deposit.remote()
    # Inside a task, with the handle passed as an argument.
    assert graphstore.get(call_from_task.remote(found), timeout=30) == (
        "TypeError: Account.deposit(amount, *, note=...): missing a required argument: "
        "'amount'")
    assert graphstore.get(call_from_task.remote(owner, 1, note="x")) == "no error"
    # Inside an actor, with the handle passed to one of its methods.
    other = Account.remote("dee")
    assert graphstore.get(other.call_other.remote(owner, 1, 2), timeout=30) == (
        "TypeError: Account.deposit(amount, *, note=...): too many positional arguments")
    assert graphstore.get(other.call_other.remote(owner, 4)) == "no error"
    assert graphstore.get(found.deposit.remote(0), timeout=30) == 5


# -- validation (2.15) --------------------------------------------------------------------

def test_remote_and_method_with_empty_parentheses_are_errors_as_in_ray():
    # Ray raises AssertionError; graphstore's error is also a TypeError.
    for make in (lambda: graphstore.remote(), lambda: graphstore.method(),
                 lambda: graphstore.remote(add3, num_cpus=1)):
        with pytest.raises(RemoteUsageError) as info:
            make()
        assert isinstance(info.value, AssertionError) and isinstance(info.value, TypeError)
        assert "keyword options" in str(info.value)
    with pytest.raises(ValueError, match="unknown option 'colour'"):
        graphstore.method(colour="red")


def test_remote_on_an_async_function_is_a_valueerror_at_decoration():
    async def fetch(x):
        return x

    async def stream(x):
        yield x

    for fn in (fetch, stream):
        with pytest.raises(ValueError, match=f"'async def' function .*{fn.__name__}"):
            graphstore.remote(fn)
        with pytest.raises(ValueError, match="async def"):
            graphstore.remote(num_cpus=1)(fn)


def test_actor_name_and_namespace_must_be_strings(cluster):
    for options in ({"name": 1}, {"namespace": b"ns"}, {"name": "ok", "namespace": 3}):
        with pytest.raises(TypeError, match="must be None or a string"):
            Account.options(**options)
        with pytest.raises(TypeError, match="must be None or a string"):
            graphstore.remote(**options)(type("Local", (), {}))
    with pytest.raises(ValueError, match="non-empty"):
        Account.options(name="")


def test_get_if_exists_needs_a_name(cluster):
    with pytest.raises(ValueError, match="get_if_exists=True needs the actor's name"):
        Account.options(get_if_exists=True).remote("eve")

    # Given in the decorator, the name may still come with .options(), as in Ray.
    @graphstore.remote(get_if_exists=True)
    class Box:
        def value(self):
            return 1

    with pytest.raises(ValueError, match="get_if_exists"):
        Box.remote()
    first = Box.options(name="binding-box").remote()
    again = Box.options(name="binding-box").remote()
    assert first == again
    assert graphstore.get(again.value.remote(), timeout=30) == 1


def test_a_handle_made_just_before_a_call_works_in_the_callee(cluster):
    """The call (straight to the actor) may reach it before the scheduler has read the
    caller's request to create the handle's actor: the actor waits for it to exist."""
    caller = Account.remote("fay")
    for i in range(5):
        fresh = Account.remote("gus")
        assert graphstore.get(caller.deposit_into.remote(fresh, i), timeout=60) == i
