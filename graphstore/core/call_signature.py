"""Checking a call's arguments against the callee's parameters where the call is made.

As in Ray (``inspect.signature(f).bind``), ``f.remote(...)``, ``Actor.remote(...)`` and
``handle.method.remote(...)`` with arguments that do not fit raise ``TypeError`` at the
call, not later from ``get()``. The parameters are plain lists (name, kind, has a
default), so they travel with an actor's method table and a handle in any process checks
its calls too. The check is on the path of every call: the usual shapes (positional
arguments, keywords naming parameters) are checked by counting, without ``bind``, which
costs microseconds; ``bind`` only runs to word the error. Pure; thread-safe.
"""
from __future__ import annotations

import inspect
import sys

_P = inspect.Parameter
#: Parameter kinds on the wire: the values of ``inspect.Parameter.kind`` (0..4).
_KINDS = (_P.POSITIONAL_ONLY, _P.POSITIONAL_OR_KEYWORD, _P.VAR_POSITIONAL, _P.KEYWORD_ONLY,
          _P.VAR_KEYWORD)


class _Default:
    """Stands for a default value that did not travel (only its existence did)."""

    def __repr__(self) -> str:
        return "..."


_DEFAULT = _Default()
#: Call shapes remembered per signature (a bound on memory, never reached in practice).
_MAX_SHAPES = 256


class CallSignature:
    """The parameters of a callable, as ``[[name, kind, has_default], ...]``."""
    __slots__ = ("label", "params", "_min", "_max", "_counts", "_keywords", "_required_kw",
                 "_var_keyword", "_fits", "_signature")

    def __init__(self, label: str, params: list):
        self.label = label
        self.params = params
        positional = [p for p in params if p[1] <= 1]
        #: Positional parameters without a default (defaults are trailing among them).
        self._min = sum(1 for p in positional if not p[2])
        self._max = sys.maxsize if any(p[1] == 2 for p in params) else len(positional)
        #: name -> (position, or maxsize for keyword-only; required)
        self._keywords = {p[0]: (i, not p[2]) for i, p in enumerate(positional)
                          if p[1] == 1}
        kw_only = {p[0]: (sys.maxsize, not p[2]) for p in params if p[1] == 3}
        self._keywords.update(kw_only)
        self._required_kw = sum(1 for _, required in kw_only.values() if required)
        #: Numbers of positional arguments that fit when no keyword is given.
        self._counts = range(0) if self._required_kw else range(self._min, self._max + 1)
        self._var_keyword = any(p[1] == 4 for p in params)
        #: Shapes of calls with keywords found to fit: (number of positional arguments,
        #: *keywords). Calls repeat their shapes; a lookup is cheaper than the check.
        self._fits: set[tuple] = set()
        self._signature = None

    @classmethod
    def of(cls, fn, label: str, skip_first: bool = False) -> "CallSignature | Unchecked":
        """The signature of ``fn`` (without its first parameter if ``skip_first``: the
        ``self`` of a method), or ``UNCHECKED`` when Python cannot tell it (builtins)."""
        try:
            parameters = list(inspect.signature(fn).parameters.values())
        except (TypeError, ValueError):
            return UNCHECKED
        if skip_first and parameters and parameters[0].kind in (_P.POSITIONAL_ONLY,
                                                                 _P.POSITIONAL_OR_KEYWORD):
            parameters = parameters[1:]
        return cls(label, [[p.name, int(p.kind), p.default is not _P.empty]
                           for p in parameters])

    @classmethod
    def from_wire(cls, label: str, params) -> "CallSignature | Unchecked":
        """From ``params`` received from another process; ``UNCHECKED`` if there are
        none or they make no sense (the callee still raises if the call does not fit)."""
        if params is None or not valid_params(params):
            return UNCHECKED
        try:
            signature = cls(label, params)
            signature._python_signature()   # names, order and kinds are consistent
        except (TypeError, ValueError):
            return UNCHECKED
        return signature

    def check(self, args: tuple, kwargs: dict) -> None:
        """Raise ``TypeError`` if ``args`` and ``kwargs`` do not fit the parameters."""
        if not kwargs:
            if len(args) in self._counts:
                return
        else:
            shape = (len(args), *kwargs)
            if shape in self._fits:
                return
            if shape[0] <= self._max and self._keywords_fit(shape[0], kwargs):
                if len(self._fits) < _MAX_SHAPES:
                    self._fits.add(shape)
                return
        self._raise(args, kwargs)

    def _keywords_fit(self, n: int, kwargs: dict) -> bool:
        missing = max(0, self._min - n) + self._required_kw
        keywords = self._keywords
        for key in kwargs:
            entry = keywords.get(key)
            if entry is None:
                if not self._var_keyword:
                    return False
            elif entry[0] < n:          # also given positionally
                return False
            elif entry[1]:
                missing -= 1
        return missing == 0

    def _python_signature(self) -> inspect.Signature:
        if self._signature is None:
            self._signature = inspect.Signature([
                _P(name, _KINDS[kind], default=_DEFAULT if has_default else _P.empty)
                for name, kind, has_default in self.params])
        return self._signature

    def _raise(self, args: tuple, kwargs: dict) -> None:
        signature = self._python_signature()
        try:
            signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"{self.label}{signature}: {exc}") from None


class Unchecked:
    """The signature of a callable Python cannot tell the parameters of: any call fits."""
    __slots__ = ()
    params = None

    def check(self, args: tuple, kwargs: dict) -> None:
        pass


UNCHECKED = Unchecked()


def valid_params(params) -> bool:
    """Whether ``params`` has the shape of ``CallSignature.params`` (wire check)."""
    return type(params) is list and all(
        type(p) is list and len(p) == 3 and type(p[0]) is str and type(p[1]) is int
        and 0 <= p[1] <= 4 and type(p[2]) is bool for p in params)
