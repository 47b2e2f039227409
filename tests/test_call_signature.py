"""Unit tests of ``graphstore.core.call_signature``: the fast checks agree with
``inspect.Signature.bind`` on every call shape, and the wire form round-trips."""
from __future__ import annotations

import inspect
import itertools

import pytest

from graphstore.core.call_signature import UNCHECKED, CallSignature, valid_params


def f0():
    pass


def f1(x):
    pass


def f2(x, y=1):
    pass


def f3(x, /, y, *, z):
    pass


def f4(*args, **kwargs):
    pass


def f5(x, *args, y=2, **kwargs):
    pass


def f6(a, b, c=3, *, d=4, e):
    pass


def f7(a, /, b=2, **kw):
    pass


FUNCTIONS = [f0, f1, f2, f3, f4, f5, f6, f7]
KEYWORDS = ["x", "y", "z", "a", "b", "c", "d", "e", "kw", "other"]


def _calls():
    for n in range(5):
        for k in range(3):
            for keys in itertools.combinations(KEYWORDS, k):
                yield tuple(range(n)), {key: key for key in keys}


@pytest.mark.parametrize("fn", FUNCTIONS, ids=lambda fn: fn.__name__)
def test_check_accepts_exactly_what_bind_accepts(fn):
    python = inspect.signature(fn)
    for wire in (False, True):
        signature = CallSignature.of(fn, fn.__name__)
        if wire:
            signature = CallSignature.from_wire(fn.__name__, signature.params)
        for _ in range(2):       # the second time, shapes come from the cache
            for args, kwargs in _calls():
                try:
                    python.bind(*args, **kwargs)
                    fits = True
                except TypeError:
                    fits = False
                if fits:
                    signature.check(args, kwargs)
                else:
                    with pytest.raises(TypeError, match=fn.__name__):
                        signature.check(args, kwargs)


def test_error_names_the_callee_its_parameters_and_the_problem():
    signature = CallSignature.of(f6, "Actor.method")
    with pytest.raises(TypeError) as info:
        signature.check((1,), {"e": 5})
    text = str(info.value)
    assert text.startswith("Actor.method(a, b, c=..., *, d=..., e)")
    assert "missing a required argument: 'b'" in text


def test_skip_first_drops_self_but_not_star_args():
    class K:
        def method(self, x):
            pass

        def star(*args):
            pass

    assert CallSignature.of(K.method, "m", skip_first=True).params == [["x", 1, False]]
    assert CallSignature.of(K.star, "s", skip_first=True).params == [["args", 2, False]]


def test_callables_without_a_signature_and_bad_wire_data_are_not_checked():
    assert CallSignature.of(type("E", (Exception,), {}), "E") is UNCHECKED
    UNCHECKED.check((1, 2, 3), {"anything": 1})
    for params in (None, "x", [["x", 9, False]], [["x", 1]], [[1, 1, False]],
                   [["x", 1, True], ["y", 1, False]],      # a default before a required
                   [["x", 1, False], ["x", 1, False]]):    # a duplicate name
        assert CallSignature.from_wire("f", params) is UNCHECKED
    assert not valid_params([["x", 1, 0]]) and valid_params([["x", 3, True]])
